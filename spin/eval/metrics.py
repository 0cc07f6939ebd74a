"""3D pose and shape metrics: MPJPE, PA-MPJPE and PVE, per sample.

All metrics return one value per sample in the unit of the inputs (usually
metres); multiply by :data:`M_TO_MM` to report millimetres. Root alignment is
always explicit: pass the index (or indices, averaged) of the root joint in the
joint order you evaluate, or align beforehand with :func:`center_on`. Datasets'
protocols live elsewhere; for example SPIN's H36M/3DPW protocol regresses the 17
H36M joints, centres them on the H36M pelvis (index 0 of that order) with
``center_on(joints_17, 0)``, then keeps the 14 LSP-order joints.

Functions accept any leading batch dimensions ``(...)``, written ``(B,)`` below.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from spin.geometry.procrustes import procrustes_align

M_TO_MM = 1000.0
"""Metres to millimetres, the unit benchmark numbers are reported in."""


def _check_pair(pred: torch.Tensor, target: torch.Tensor, what: str, dims: int = 3) -> None:
    for name, tensor in (("pred", pred), ("target", target)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"expected {name} to be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dim() < 2 or tensor.shape[-1] != dims:
            raise ValueError(
                f"expected {name} {what} of shape (B, {what[0].upper()}, {dims}), "
                f"got {tuple(tensor.shape)}"
            )
    if pred.shape != target.shape:
        raise ValueError(
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape; "
            f"select the same {what} in the same order first"
        )


def center_on(points: torch.Tensor, root: int | Sequence[int]) -> torch.Tensor:
    """Subtract a root joint (or the mean of several, e.g. both hips) from every point.

    Args:
        points: ``(B, J, 3)`` joints (or any points with joints among them).
        root: index of the root joint, or a sequence of indices whose mean is the root.

    Returns:
        ``(B, J, 3)`` points relative to the root.
    """
    if points.dim() < 2 or points.shape[-1] != 3:
        raise ValueError(f"expected points of shape (B, J, 3), got {tuple(points.shape)}")
    indices = [root] if isinstance(root, int) else list(root)
    if not indices:
        raise ValueError("root must be a joint index or a non-empty sequence of indices")
    num_joints = points.shape[-2]
    if any(not -num_joints <= i < num_joints for i in indices):
        raise ValueError(f"root indices {indices} out of range for {num_joints} joints")
    origin = points[..., indices, :].mean(dim=-2, keepdim=True)
    return points - origin


def per_joint_errors(
    pred: torch.Tensor, target: torch.Tensor, root: int | Sequence[int] | None = None
) -> torch.Tensor:
    """Euclidean distance per joint, after centring both sets on their root if given.

    Args:
        pred: ``(B, J, 3)`` predicted joints.
        target: ``(B, J, 3)`` ground-truth joints, same order.
        root: root joint index or indices (see :func:`center_on`); None compares
            the joints as given.

    Returns:
        ``(B, J)`` distances in the input unit.
    """
    _check_pair(pred, target, "joints")
    if root is not None:
        pred = center_on(pred, root)
        target = center_on(target, root)
    return torch.linalg.vector_norm(pred - target, dim=-1)


def mpjpe(
    pred: torch.Tensor, target: torch.Tensor, root: int | Sequence[int] | None = None
) -> torch.Tensor:
    """Mean per-joint position error, per sample.

    Args:
        pred: ``(B, J, 3)`` predicted joints.
        target: ``(B, J, 3)`` ground-truth joints, same order.
        root: root joint index or indices both sets are centred on first; None
            when they are already aligned.

    Returns:
        ``(B,)`` mean joint distance in the input unit.
    """
    return per_joint_errors(pred, target, root).mean(dim=-1)


def pa_mpjpe(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Procrustes-aligned MPJPE: MPJPE after the best per-sample similarity transform.

    ``pred`` is moved onto ``target`` by scale, proper rotation (reflection fixed)
    and translation, so no root alignment is needed.

    Args:
        pred: ``(B, J, 3)`` predicted joints.
        target: ``(B, J, 3)`` ground-truth joints, same order.

    Returns:
        ``(B,)`` mean joint distance after alignment, in the input unit.
    """
    _check_pair(pred, target, "joints")
    return per_joint_errors(procrustes_align(pred, target), target).mean(dim=-1)


def pve(
    pred_vertices: torch.Tensor,
    target_vertices: torch.Tensor,
    pred_origin: torch.Tensor | None = None,
    target_origin: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-vertex error: mean vertex distance per sample.

    Protocols align the meshes by their pelvis joints, so the origins are
    passed explicitly (e.g. each mesh's regressed pelvis).

    Args:
        pred_vertices: ``(B, V, 3)`` predicted mesh vertices.
        target_vertices: ``(B, V, 3)`` ground-truth vertices, same topology.
        pred_origin: ``(B, 3)`` point subtracted from ``pred_vertices``; None for none.
        target_origin: ``(B, 3)`` point subtracted from ``target_vertices``; None for none.

    Returns:
        ``(B,)`` mean vertex distance in the input unit.
    """
    _check_pair(pred_vertices, target_vertices, "vertices")
    if pred_origin is not None:
        pred_vertices = pred_vertices - pred_origin[..., None, :]
    if target_origin is not None:
        target_vertices = target_vertices - target_origin[..., None, :]
    return torch.linalg.vector_norm(pred_vertices - target_vertices, dim=-1).mean(dim=-1)


def rotation_error_deg(pred_rotmats: torch.Tensor, target_rotmats: torch.Tensor) -> torch.Tensor:
    """Mean geodesic angle between corresponding rotations, per sample, in degrees.

    Args:
        pred_rotmats, target_rotmats: ``(B, J, 3, 3)`` rotation matrices (e.g. the 23
            body-joint rotations, global orientation excluded).

    Returns:
        ``(B,)`` mean angle of ``pred^T target`` over the ``J`` rotations.
    """
    _check_pair(pred_rotmats, target_rotmats, "rotations")
    relative = pred_rotmats.transpose(-1, -2) @ target_rotmats
    cosine = (relative.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0
    return torch.rad2deg(torch.arccos(cosine.clamp(-1.0, 1.0))).mean(dim=-1)


def keypoint_error(
    pred: torch.Tensor, target: torch.Tensor, confidence: torch.Tensor
) -> torch.Tensor:
    """Mean 2D distance over the keypoints with positive confidence, per sample.

    Args:
        pred, target: ``(B, K, 2)`` keypoints in one unit (e.g. crop pixels).
        confidence: ``(B, K)``; keypoints with confidence <= 0 are ignored.

    Returns:
        ``(B,)`` mean distance (NaN for a sample with no visible keypoint).
    """
    _check_pair(pred, target, "keypoints", dims=2)
    visible = (confidence > 0).to(pred.dtype)
    distances = torch.linalg.vector_norm(pred - target, dim=-1)
    return (distances * visible).sum(-1) / visible.sum(-1)
