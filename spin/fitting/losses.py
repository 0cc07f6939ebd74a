"""SMPLify's objective as pure functions over tensors.

Every function returns per-sample (or per-joint) values, never a batch sum, so that the
fitter can report the loss of each sample (the fits cache compares them) and optimise their
sum. Each also has a *residual* form ``r`` with ``sum(r ** 2) == loss`` used by the
Gauss-Newton / Levenberg-Marquardt optimiser of the fast mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "ANGLE_PRIOR_JOINTS",
    "angle_prior",
    "angle_prior_residuals",
    "camera_depth_loss",
    "gmof",
    "gmof_residuals",
    "pick",
    "reprojection_loss",
    "reprojection_residuals",
    "shape_prior",
    "torso_camera_loss",
    "torso_camera_residuals",
    "torso_camera_weights",
]

#: (index into the 69 body-pose values, sign) of the elbow and knee bend angles: positive
#: ``exp(sign * theta)`` grows when the joint bends the wrong way (left elbow y, right elbow y,
#: left knee x, right knee x in SMPL's axes).
ANGLE_PRIOR_JOINTS: tuple[tuple[int, float], ...] = ((52, 1.0), (55, -1.0), (9, -1.0), (12, -1.0))


def pick(values: Tensor, indices: Sequence[int], dim: int) -> Tensor:
    """``values`` at Python ``indices`` along ``dim`` (like ``values[..., indices, ...]``).

    Stacks views instead of indexing with a list, which would copy the list to the device on
    every call: a host-to-device transfer that waits for the device and that CUDA graph
    capture forbids.
    """
    return torch.stack([values.select(dim, i) for i in indices], dim=dim)


def gmof(residuals: Tensor, sigma: float) -> Tensor:
    """Geman-McClure robust penalty ``sigma^2 r^2 / (sigma^2 + r^2)``, elementwise.

    Args:
        residuals: any shape, same unit as ``sigma`` (pixels for reprojection).
        sigma: scale of the robustifier; residuals much larger than it cost ~``sigma^2``.
    """
    squared = residuals**2
    return sigma**2 * squared / (sigma**2 + squared)


def gmof_residuals(residuals: Tensor, sigma: float) -> Tensor:
    """``r'`` with ``r'^2 == gmof(r, sigma)`` and the sign of ``r`` (smooth at 0)."""
    return sigma * residuals / torch.sqrt(sigma**2 + residuals**2)


def reprojection_loss(
    projected: Tensor, keypoints: Tensor, confidences: Tensor, sigma: float
) -> Tensor:
    """SMPLify's robust reprojection term per joint: ``conf^2 * sum_xy gmof(projected - kp)``.

    Args:
        projected: ``(B, J, 2)`` model joints projected to pixels.
        keypoints: ``(B, J, 2)`` observed 2D keypoints in pixels.
        confidences: ``(B, J)`` keypoint confidences (0 ignores a joint).
        sigma: GMoF scale in pixels.

    Returns:
        ``(B, J)`` per-joint losses; their sum over joints is the sample's reprojection loss.
    """
    return confidences**2 * gmof(projected - keypoints, sigma).sum(dim=-1)


def reprojection_residuals(
    projected: Tensor, keypoints: Tensor, confidences: Tensor, sigma: float
) -> Tensor:
    """``(B, 2J)`` residuals whose squares sum to :func:`reprojection_loss` over joints."""
    robust = gmof_residuals(projected - keypoints, sigma) * confidences[..., None]
    return robust.flatten(start_dim=-2)


def angle_prior(body_pose_rotvecs: Tensor) -> Tensor:
    """Penalty on elbows and knees bending the wrong way: ``sum exp(sign * theta)^2``.

    Args:
        body_pose_rotvecs: ``(B, 69)`` axis-angle of the 23 body joints (no global orientation).

    Returns:
        ``(B,)`` unweighted prior (SPIN weighs it by 15.2^2).
    """
    return (angle_prior_residuals(body_pose_rotvecs) ** 2).sum(dim=-1)


def angle_prior_residuals(body_pose_rotvecs: Tensor) -> Tensor:
    """``(B, 4)`` residuals ``exp(sign * theta)`` of :func:`angle_prior`."""
    signed = [sign * body_pose_rotvecs[..., i] for i, sign in ANGLE_PRIOR_JOINTS]
    return torch.exp(torch.stack(signed, dim=-1))


def shape_prior(betas: Tensor) -> Tensor:
    """``(B,)`` squared norm of ``betas`` ``(B, NB)`` (SPIN weighs it by 5^2)."""
    return (betas**2).sum(dim=-1)


def camera_depth_loss(cam_t: Tensor, initial_cam_t: Tensor) -> Tensor:
    """``(B,)`` squared change of the camera depth ``(tz - tz_init)^2`` (weighted by 100^2).

    Args:
        cam_t: ``(B, 3)`` current camera translation; initial_cam_t: ``(B, 3)`` its start.
    """
    return (cam_t[..., 2] - initial_cam_t[..., 2]) ** 2


def torso_camera_weights(
    confidences: Tensor, openpose_torso: list[int], gt_torso: list[int], rule: str = "spin"
) -> Tensor:
    """``(B, 2T)`` 0/1 weights of the torso joints ``openpose_torso + gt_torso`` in the
    camera stage.

    ``rule="spin"`` is SPIN's (``smplify/losses.py``, ``camera_fitting_loss``): the T OpenPose
    torso joints if all of them have confidence > 0, otherwise the T ground-truth torso joints
    whatever their confidence (even 0). ``rule="visible"`` uses every one of the 2T joints with
    confidence > 0 (not SPIN's; never uses an unseen joint).

    Args:
        confidences: ``(B, J)``.
        openpose_torso, gt_torso: joint indices, the same number T each.
    """
    openpose = pick(confidences, openpose_torso, -1) > 0
    gt = pick(confidences, gt_torso, -1) > 0
    if rule == "visible":
        return torch.cat([openpose, gt], dim=-1).to(confidences.dtype)
    if rule != "spin":
        raise ValueError(f"unknown torso rule {rule!r}; expected 'spin' or 'visible'")
    use_openpose = openpose.all(dim=-1, keepdim=True)
    weights = torch.cat([use_openpose.expand_as(openpose), (~use_openpose).expand_as(gt)], dim=-1)
    return weights.to(confidences.dtype)


def torso_camera_loss(
    projected: Tensor, keypoints: Tensor, weights: Tensor, torso_joints: list[int]
) -> Tensor:
    """``(B,)`` plain squared reprojection error of the torso joints (camera stage).

    Args:
        projected, keypoints: ``(B, J, 2)`` pixels.
        weights: ``(B, T)`` 0/1 weight of each torso joint (:func:`torso_camera_weights`).
        torso_joints: the T indices of the shoulders and hips used to place the camera.
    """
    return (torso_camera_residuals(projected, keypoints, weights, torso_joints) ** 2).sum(-1)


def torso_camera_residuals(
    projected: Tensor, keypoints: Tensor, weights: Tensor, torso_joints: list[int]
) -> Tensor:
    """``(B, 2T)`` residuals of :func:`torso_camera_loss`."""
    diff = pick(projected, torso_joints, -2) - pick(keypoints, torso_joints, -2)
    return (diff * weights[..., None]).flatten(start_dim=-2)
