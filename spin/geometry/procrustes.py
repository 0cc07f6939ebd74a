"""Similarity Procrustes: the scale, rotation and translation best aligning two point sets.

Used by PA-MPJPE (per-sample alignment of predicted to ground-truth joints)
and anywhere a rigid or similarity registration of corresponding points is
needed. Functions accept any leading batch dimensions and follow the inputs'
device and dtype (float32 or float64).
"""

from __future__ import annotations

from dataclasses import dataclass

import roma
import torch


@dataclass(frozen=True)
class SimilarityTransform:
    """``x -> scale * rotation @ x + translation``, batched.

    Attributes:
        scale: ``(...,)`` non-negative scale (0 for a degenerate source).
        rotation: ``(..., 3, 3)`` proper rotation (det +1).
        translation: ``(..., 3)`` translation.
    """

    scale: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor

    def apply(self, points: torch.Tensor) -> torch.Tensor:
        """Transform points.

        Args:
            points: ``(..., N, 3)`` points; batch dims broadcast with the transform's.

        Returns:
            ``(..., N, 3)`` transformed points.
        """
        rotated = points @ self.rotation.transpose(-1, -2)
        return self.scale[..., None, None] * rotated + self.translation[..., None, :]


def _check_points(tensor: torch.Tensor, name: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"expected {name} to be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() < 2 or tensor.shape[-1] != 3:
        raise ValueError(f"expected {name} of shape (..., N, 3), got {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise TypeError(f"expected a floating-point {name}, got {tensor.dtype}")


def similarity_procrustes(
    source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
) -> SimilarityTransform:
    """Find ``s, R, t`` minimising ``sum_n w_n |target_n - (s R source_n + t)|^2`` (Umeyama).

    The rotation is the proper rotation nearest to the weighted cross-covariance
    of the centred point sets, i.e. the SVD solution with the reflection fix
    (the last singular vector's sign flipped when ``det(U V^T) < 0``), computed
    by :func:`roma.special_procrustes`. So even a mirrored target gives
    ``det(R) = +1``. The scale is ``trace(R^T Sigma) / var(source)``.

    Args:
        source: ``(..., N, 3)`` points to move.
        target: ``(..., N, 3)`` corresponding points to align to.
        weights: ``(..., N)`` non-negative per-point weights; uniform if None.

    Returns:
        :class:`SimilarityTransform` with ``scale (...,)``, ``rotation (..., 3, 3)``
        and ``translation (..., 3)``.
    """
    _check_points(source, "source")
    _check_points(target, "target")
    if source.shape != target.shape:
        raise ValueError(
            f"source {tuple(source.shape)} and target {tuple(target.shape)} must have the same "
            "shape (..., N, 3): Procrustes needs corresponding points"
        )
    tiny = torch.finfo(source.dtype).tiny
    if weights is None:
        weights = torch.ones_like(source[..., 0])
    elif weights.shape != source.shape[:-1]:
        raise ValueError(
            f"expected weights of shape {tuple(source.shape[:-1])} (..., N), "
            f"got {tuple(weights.shape)}"
        )
    weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(tiny)

    source_mean = torch.einsum("...n,...ni->...i", weights, source)
    target_mean = torch.einsum("...n,...ni->...i", weights, target)
    source_centred = source - source_mean[..., None, :]
    target_centred = target - target_mean[..., None, :]

    covariance = torch.einsum("...n,...ni,...nj->...ij", weights, target_centred, source_centred)
    rotation = roma.special_procrustes(covariance)
    source_variance = torch.einsum("...n,...ni,...ni->...", weights, source_centred, source_centred)
    aligned_covariance = (rotation * covariance).sum(dim=(-1, -2))  # trace(R^T Sigma)
    scale = aligned_covariance / source_variance.clamp_min(tiny)
    translation = target_mean - scale[..., None] * (rotation @ source_mean[..., None])[..., 0]
    return SimilarityTransform(scale=scale, rotation=rotation, translation=translation)


def procrustes_align(
    source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Move ``source`` onto ``target`` with the best similarity transform.

    Args:
        source: ``(..., N, 3)`` points to move.
        target: ``(..., N, 3)`` corresponding points to align to.
        weights: ``(..., N)`` non-negative per-point weights; uniform if None.

    Returns:
        ``(..., N, 3)`` aligned copy of ``source``.
    """
    return similarity_procrustes(source, target, weights).apply(source)
