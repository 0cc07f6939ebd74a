"""Camera translation from 3D joints and their 2D keypoints by linear least squares.

This is SPIN's "estimate translation" step that initialises stored fits: given a
posed body (joints in the camera orientation) and 2D keypoints, find the
translation ``t`` for which the perspective projection of ``joints + t`` matches
the keypoints.
"""

from __future__ import annotations

import torch

MIN_CONFIDENT_JOINTS = 2
"""Fewer joints with positive confidence than this leave the translation undetermined."""

FALLBACK_DEPTH = 10.0
"""Depth (same unit as the joints, usually metres) used when a sample has too few
confident joints and no ``initial_depth``: the body's centroid is placed on the
optical axis this far in front of the camera. Any positive value is as good as
another: such a sample carries no 2D evidence about its depth."""

RIDGE_IN_MACHINE_EPS = 10.0
"""Ridge added to the unit-diagonal (Jacobi-scaled) normal matrix, in units of the
dtype's machine epsilon: invisible on well-posed problems, keeps degenerate ones
(all confident joints on one camera ray) finite."""


def _check_shape(tensor: torch.Tensor, trailing: tuple[int | None, ...], name: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"expected {name} to be a torch.Tensor, got {type(tensor).__name__}")
    shape = tuple(tensor.shape)
    ok = len(shape) >= len(trailing) and all(
        want is None or have == want
        for have, want in zip(shape[len(shape) - len(trailing) :], trailing, strict=True)
    )
    if not ok:
        expected = ", ".join(["..."] + ["J" if s is None else str(s) for s in trailing])
        raise ValueError(f"expected {name} of shape ({expected}), got {shape}")


def estimate_translation(
    joints_3d: torch.Tensor,
    keypoints_2d: torch.Tensor,
    confidences: torch.Tensor,
    intrinsics: torch.Tensor,
    rotation: torch.Tensor | None = None,
    *,
    initial_depth: float | torch.Tensor | None = None,
    depth_weight: float = 0.0,
    fallback_depth: float | torch.Tensor = FALLBACK_DEPTH,
) -> torch.Tensor:
    """Estimate the camera translation that best aligns projected joints with keypoints.

    With ``P = rotation @ X`` a joint in the camera orientation and ``K`` the
    intrinsics (``fx = K00``, skew ``k = K01``, ``cx = K02``, ``fy = K11``,
    ``cy = K12``), the projection ``u = (fx (Px + tx) + k (Py + ty)) / (Pz + tz) + cx``,
    ``v = fy (Py + ty) / (Pz + tz) + cy`` gives two equations linear in ``t``
    per joint::

        fx tx + k ty - (u - cx) tz = (u - cx) Pz - fx Px - k Py
                fy ty - (v - cy) tz = (v - cy) Pz - fy Py

    Each joint's equations are weighted by ``sqrt(confidence)``, so the solution
    minimises ``sum_j conf_j * r_j^2`` where ``r_j`` is the pixel error times the
    joint's depth (the algebraic error; exact for noise-free keypoints). With
    ``depth_weight > 0`` the term ``depth_weight * (tz - initial_depth)^2`` is
    added, a simple form of SPIN's depth regulariser (residuals are in pixels
    times depth, so the weight is in those units squared).

    The 3x3 normal equations are Jacobi-scaled and given a tiny ridge, then
    solved in closed form: batched and differentiable. Samples with fewer than
    ``MIN_CONFIDENT_JOINTS`` joints of positive confidence get a fallback
    instead of NaN: the joints' centroid is put on the optical axis at depth
    ``initial_depth`` if given, else ``fallback_depth``.

    Args:
        joints_3d: ``(..., J, 3)`` joints in the body frame (without translation).
        keypoints_2d: ``(..., J, 2)`` keypoints in pixels.
        confidences: ``(..., J)`` non-negative keypoint confidences; 0 ignores a joint.
        intrinsics: ``(..., 3, 3)`` camera intrinsics.
        rotation: ``(..., 3, 3)`` body-to-camera rotation applied to the joints
            first; identity if None.
        initial_depth: ``(...,)`` or float, the depth the prior pulls ``tz`` to.
            Required when ``depth_weight > 0``.
        depth_weight: weight of the depth prior; 0 disables it.
        fallback_depth: ``(...,)`` or float, depth used for under-determined
            samples when ``initial_depth`` is None.

    Returns:
        ``(..., 3)`` camera translation ``cam_t``.
    """
    _check_shape(joints_3d, (None, 3), "joints_3d")
    _check_shape(keypoints_2d, (None, 2), "keypoints_2d")
    _check_shape(confidences, (None,), "confidences")
    _check_shape(intrinsics, (3, 3), "intrinsics")
    num_joints = joints_3d.shape[-2]
    if keypoints_2d.shape[-2] != num_joints or confidences.shape[-1] != num_joints:
        raise ValueError(
            f"joints_3d {tuple(joints_3d.shape)}, keypoints_2d {tuple(keypoints_2d.shape)} and "
            f"confidences {tuple(confidences.shape)} must have the same number of joints J"
        )
    if depth_weight < 0:
        raise ValueError(f"depth_weight must be >= 0, got {depth_weight}")
    if depth_weight > 0 and initial_depth is None:
        raise ValueError("depth_weight > 0 needs initial_depth, the depth the prior pulls to")

    points = joints_3d if rotation is None else joints_3d @ rotation.transpose(-1, -2)
    px, py, pz = points.unbind(-1)  # (..., J)
    k = intrinsics[..., None, :, :]  # broadcast over joints
    fx, skew, cx = k[..., 0, 0], k[..., 0, 1], k[..., 0, 2]
    fy, cy = k[..., 1, 1], k[..., 1, 2]
    du = keypoints_2d[..., 0] - cx
    dv = keypoints_2d[..., 1] - cy
    zero = torch.zeros_like(du)

    # (..., J, 2, 3) coefficients and (..., J, 2) right-hand sides, one pair per joint.
    coeff_u = torch.stack(torch.broadcast_tensors(fx, skew, -du), dim=-1)
    coeff_v = torch.stack(torch.broadcast_tensors(zero, fy, -dv), dim=-1)
    coeffs = torch.stack([coeff_u, coeff_v], dim=-2)
    rhs = torch.stack([du * pz - fx * px - skew * py, dv * pz - fy * py], dim=-1)

    weights = confidences.clamp_min(0.0)[..., None]  # sqrt(conf)^2 for both rows
    normal = torch.einsum("...jr,...jra,...jrb->...ab", weights, coeffs, coeffs)
    normal_rhs = torch.einsum("...jr,...jra,...jr->...a", weights, coeffs, rhs)

    if depth_weight > 0:
        prior = torch.as_tensor(initial_depth, dtype=normal.dtype, device=normal.device)
        depth_row = torch.zeros(3, dtype=normal.dtype, device=normal.device)
        depth_row[2] = depth_weight
        normal = normal + torch.diag_embed(depth_row)
        normal_rhs = normal_rhs + depth_row * prior[..., None]

    # Jacobi scaling: the tx/ty columns scale with f (~1e3 px), tz with pixel offsets.
    finfo = torch.finfo(normal.dtype)
    diag = normal.diagonal(dim1=-2, dim2=-1).clamp_min(finfo.tiny)
    inv_sqrt = diag.rsqrt()
    eye = torch.eye(3, dtype=normal.dtype, device=normal.device)
    scaled = normal * inv_sqrt[..., :, None] * inv_sqrt[..., None, :]
    scaled = scaled + RIDGE_IN_MACHINE_EPS * finfo.eps * eye
    scaled_rhs = normal_rhs * inv_sqrt

    valid = ((confidences > 0).sum(-1) >= MIN_CONFIDENT_JOINTS)[..., None]  # (..., 1)
    scaled = torch.where(valid[..., None], scaled, eye)
    scaled_rhs = torch.where(valid, scaled_rhs, torch.zeros_like(scaled_rhs))
    solution = torch.linalg.solve(scaled, scaled_rhs.unsqueeze(-1)).squeeze(-1) * inv_sqrt

    depth = fallback_depth if initial_depth is None else initial_depth
    depth = torch.as_tensor(depth, dtype=points.dtype, device=points.device)
    on_axis = torch.stack(torch.broadcast_tensors(zero[..., 0], zero[..., 0], depth), dim=-1)
    fallback = on_axis - points.mean(dim=-2)
    return torch.where(valid, solution, fallback)
