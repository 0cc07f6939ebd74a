"""One training step of SPIN, as small named helpers.

regress -> fetch cached fits -> (in the loop) refine with SMPLify from the prediction ->
update the cache where the new fit is better -> select supervision (ground truth first, then
valid fits) -> compute the losses. The optimiser step itself is the trainer's.

Coordinates: the dataset gives 2D keypoints in normalised crop coordinates ``[-1, 1]``; the
regressor's camera and SMPLify work in SPIN's 224-pixel crop with f = 5000 whatever the image
resolution the network sees (``crop_pixels`` converts). ``crop_pixels`` and
``refine_with_smplify`` are :mod:`spin.predict.refine`'s (evaluation and demos refine the same
way); they are imported here so a step reads as one list of helpers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from spin.body.layer import BodyModel, BodyOutput
from spin.body.sparse import SparseJointModel, SparseJoints
from spin.fitting.fits_cache import CachedFits, FitsCache, supervision_from_cache
from spin.fitting.smplify import SMPLify
from spin.geometry import (
    CROP_SIZE,
    crop_intrinsics,
    estimate_translation,
    perspective_projection,
    rotvec_to_rotmat,
)
from spin.predict.refine import crop_pixels, refine_with_smplify
from spin.regressor.hmr import HMR, HMROutput, predict_body
from spin.train.config import LossConfig

__all__ = [
    "Supervision",
    "camera_scale_penalty",
    "compute_losses",
    "crop_pixels",
    "fetch_cached_fits",
    "refine_with_smplify",
    "regress",
    "select_supervision",
]

#: Indices of the hips in SPIN's 24 ground-truth joints (pelvis = their mean).
GT_RIGHT_HIP, GT_LEFT_HIP = 2, 3
NUM_OPENPOSE = 25


CAMERA_PENALTY_RATE = 20.0
"""SPIN's camera term is ``exp(-10 s)^2 = exp(-20 s)`` of the camera scale ``s``."""


def camera_scale_penalty(scale: Tensor) -> Tensor:
    """SPIN's camera term ``exp(-20 s)`` for ``s >= 0``, continued below 0 by its tangent
    ``1 - 20 s`` (same value and slope at 0).

    SPIN's exponential keeps ``s`` positive, but a step that takes ``s`` to -1.5 makes it
    ~6e12 (x60) and float32 overflows below s = -4.4: one such step ends a run with an
    infinite loss (measured on the learn test). The tangent keeps the pull back towards
    ``s > 0`` with a bounded gradient.

    Args:
        scale: ``(B,)`` weak-perspective scales.

    Returns:
        ``(B,)`` penalties.
    """
    rate = CAMERA_PENALTY_RATE
    return torch.where(scale >= 0.0, torch.exp(-rate * scale.clamp(min=0.0)), 1.0 - rate * scale)


def regress(
    model: HMR, images: Tensor, body_model: BodyModel | SparseJointModel
) -> tuple[HMROutput, BodyOutput | SparseJoints]:
    """Network prediction and the body it describes (in the crop camera frame): the posed
    mesh from a :class:`BodyModel`, the joints alone from a :class:`SparseJointModel` (all
    that :func:`compute_losses` needs, at a fraction of the cost)."""
    prediction = model(images)
    return prediction, predict_body(prediction, body_model)


def fetch_cached_fits(
    cache: FitsCache, batch: dict, smplify: SMPLify, keypoints_px: Tensor, intrinsics: Tensor
) -> tuple[CachedFits, Tensor, Tensor]:
    """Cached fits in this batch's augmented frame, a camera for each (SPIN's translation
    estimate from the fit's joints and the keypoints) and their reprojection loss on the
    batch's keypoints ``(B,)`` (+inf where there is no fit)."""
    cached = cache.fetch(
        list(batch["dataset_name"]),
        batch["sample_index"],
        batch["rot_angle"],
        batch["is_flipped"],
        like=keypoints_px,
    )
    with torch.no_grad():
        joints = smplify.joints(cached.pose_rotvecs, cached.betas)
        cam_t = estimate_translation(
            joints, keypoints_px[..., :2], keypoints_px[..., 2], intrinsics
        )
        loss = smplify.reprojection_loss(
            cached.pose_rotvecs, cached.betas, cam_t, keypoints_px, intrinsics
        )
    loss = torch.where(cached.has_fit, loss, torch.full_like(loss, float("inf")))
    return cached, cam_t, loss


@dataclass(frozen=True, eq=False)
class Supervision:
    """Targets for the regressor's SMPL parameters.

    Attributes:
        pose_rotvecs: ``(B, 72)``; betas: ``(B, NB)``; valid: ``(B,)`` bool (supervise).
        from_ground_truth: ``(B,)`` bool.
    """

    pose_rotvecs: Tensor
    betas: Tensor
    valid: Tensor
    from_ground_truth: Tensor


def select_supervision(batch: dict, fits: CachedFits | None, cache_config) -> Supervision:
    """Ground truth where it exists, else the (valid) fit, else nothing."""
    has_smpl = batch["has_smpl"] > 0.5
    gt_pose, gt_betas = batch["pose"], batch["betas"]
    if fits is None:
        return Supervision(gt_pose, gt_betas, has_smpl, has_smpl)
    pose, betas, use_fit = supervision_from_cache(fits, cache_config)
    pose = torch.where(has_smpl[:, None], gt_pose, pose)
    betas = torch.where(has_smpl[:, None], gt_betas, betas)
    return Supervision(pose, betas, use_fit | has_smpl, has_smpl)


def compute_losses(
    prediction: HMROutput,
    body: BodyOutput | SparseJoints,
    batch: dict,
    supervision: Supervision,
    weights: LossConfig,
) -> dict[str, Tensor]:
    """SPIN's losses; ``total`` is what the optimiser minimises."""
    keypoints = batch["keypoints"]
    intrinsics = crop_intrinsics(keypoints.shape[:1], like=keypoints)
    projected = perspective_projection(body.joints_spin, intrinsics)
    projected = projected / (CROP_SIZE / 2.0) - 1.0
    confidence = keypoints[..., 2].clone()
    confidence[:, :NUM_OPENPOSE] *= weights.openpose_weight
    confidence[:, NUM_OPENPOSE:] *= weights.gt_weight
    keypoints_2d = (confidence[..., None] * (projected - keypoints[..., :2]) ** 2).mean()

    pose_3d = batch["pose_3d"]
    has_3d = batch["has_pose_3d"] > 0.5
    keypoints_3d = keypoints.new_zeros(())
    if has_3d.any():
        pred = body.joints_spin[has_3d, NUM_OPENPOSE:]
        gt = pose_3d[has_3d]
        pred = pred - 0.5 * (pred[:, GT_RIGHT_HIP] + pred[:, GT_LEFT_HIP])[:, None]
        gt_xyz = gt[..., :3] - 0.5 * (gt[:, GT_RIGHT_HIP, :3] + gt[:, GT_LEFT_HIP, :3])[:, None]
        keypoints_3d = (gt[..., 3:] * (pred - gt_xyz) ** 2).mean()

    valid = supervision.valid
    pose_loss = keypoints.new_zeros(())
    betas_loss = keypoints.new_zeros(())
    if valid.any():
        target_rotmats = rotvec_to_rotmat(supervision.pose_rotvecs[valid].reshape(-1, 24, 3))
        pose_loss = ((prediction.pose_rotmats[valid] - target_rotmats) ** 2).mean()
        betas_loss = ((prediction.betas[valid] - supervision.betas[valid]) ** 2).mean()
    camera = camera_scale_penalty(prediction.cam[:, 0]).mean()
    total = weights.scale * (
        weights.keypoints_2d * keypoints_2d
        + weights.keypoints_3d * keypoints_3d
        + weights.pose * pose_loss
        + weights.betas * betas_loss
        + weights.camera * camera
    )
    return {
        "total": total,
        "keypoints_2d": keypoints_2d.detach(),
        "keypoints_3d": keypoints_3d.detach(),
        "pose": pose_loss.detach(),
        "betas": betas_loss.detach(),
        "camera": camera.detach(),
    }
