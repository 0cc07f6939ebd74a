"""SMPLify from a regressor's prediction, in SPIN's crop camera (training, evaluation, demos).

Coordinates: keypoints come in normalised crop coordinates ``[-1, 1]`` (what
:class:`~spin.data.spin_dataset.SpinDataset` gives and :mod:`spin.predict.inputs` makes);
the regressor's camera and SMPLify work in pixels of SPIN's crop (side ``crop_size``,
focal length ``focal_length``, 224 and 5000 px by default) whatever the image resolution the
network sees. :func:`crop_pixels` converts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from spin.fitting.smplify import SMPLify, SMPLifyResult
from spin.geometry import CROP_SIZE, FOCAL_LENGTH, crop_intrinsics
from spin.regressor.hmr import HMROutput

__all__ = ["Refinement", "crop_pixels", "refine_in_crop", "refine_with_smplify"]


def crop_pixels(keypoints: Tensor, crop_size: int = CROP_SIZE) -> Tensor:
    """``(B, J, 3)`` normalised crop keypoints -> pixels of SPIN's crop (confidence kept)."""
    pixels = (keypoints[..., :2] + 1.0) * (crop_size / 2.0)
    return torch.cat([pixels, keypoints[..., 2:]], dim=-1)


def refine_with_smplify(
    smplify: SMPLify, prediction: HMROutput, keypoints_px: Tensor, intrinsics: Tensor
) -> SMPLifyResult:
    """SMPLify initialised from the network's (detached) prediction.

    Args:
        smplify: the fitter.
        prediction: the regressor's output for B crops.
        keypoints_px: ``(B, 49, 3)`` SPIN-49 keypoints in crop pixels with confidences.
        intrinsics: ``(B, 3, 3)`` the crop camera.
    """
    pose_rotvecs = prediction.pose_rotvecs.detach().reshape(-1, 72)
    return smplify(
        keypoints_px,
        intrinsics,
        init_pose_rotvecs=pose_rotvecs,
        init_betas=prediction.betas.detach(),
        init_cam_t=prediction.cam_t.detach(),
    )


@dataclass(frozen=True, eq=False)
class Refinement:
    """A refined prediction: the fit where SMPLify could fit, the prediction elsewhere.

    Attributes:
        pose_rotvecs: ``(B, 72)``; betas: ``(B, NB)``; cam_t: ``(B, 3)`` in the crop camera.
        valid: ``(B,)`` bool: the sample had enough confident keypoints to be fitted
            (elsewhere the values are the prediction's).
        fit: SMPLify's own result.
    """

    pose_rotvecs: Tensor
    betas: Tensor
    cam_t: Tensor
    valid: Tensor
    fit: SMPLifyResult

    @property
    def num_fallbacks(self) -> int:
        """Samples that kept the prediction (too few confident keypoints)."""
        return int((~self.valid).sum())


def refine_in_crop(
    smplify: SMPLify,
    prediction: HMROutput,
    keypoints: Tensor,
    focal_length: float = FOCAL_LENGTH,
    crop_size: int = CROP_SIZE,
) -> Refinement:
    """SMPLify from ``prediction`` on ``keypoints`` in the crop camera the prediction's
    ``cam_t`` refers to.

    Args:
        smplify: the fitter (its body model is the one the prediction is posed with).
        prediction: the regressor's output for B crops.
        keypoints: ``(B, 49, 3)`` SPIN-49 keypoints in normalised crop coordinates with
            confidences.
        focal_length, crop_size: the regressor's crop camera (its ``HMRConfig``).
    """
    keypoints_px = crop_pixels(keypoints, crop_size)
    intrinsics = crop_intrinsics(
        keypoints_px.shape[:1], like=keypoints_px, focal_length=focal_length, crop_size=crop_size
    )
    result = refine_with_smplify(smplify, prediction, keypoints_px, intrinsics)
    predicted_pose = prediction.pose_rotvecs.reshape(keypoints.shape[0], -1)
    valid = result.valid[:, None]
    return Refinement(
        pose_rotvecs=torch.where(valid, result.pose_rotvecs, predicted_pose),
        betas=torch.where(valid, result.betas, prediction.betas),
        cam_t=torch.where(valid, result.cam_t, prediction.cam_t),
        valid=result.valid,
        fit=result,
    )
