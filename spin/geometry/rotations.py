"""Conversions between rotation representations, as thin wrappers over ``roma``.

Representations, named as everywhere in the package:

- ``rotvec``: axis-angle vector, ``(..., 3)``; its norm is the angle in radians.
- ``rotmat``: rotation matrix, ``(..., 3, 3)``, acting on column vectors.
- ``sixd``: the continuous 6D representation of Zhou et al. (CVPR 2019) as used by
  SPIN/HMR, ``(..., 6)``. The six numbers reshape (row-major) to ``(..., 3, 2)``:
  the first two *columns* of the rotation matrix. So for a rotation ``R``,
  ``sixd == R[..., :, :2].reshape(..., 6)``, i.e. ``[R00, R01, R10, R11, R20, R21]``.
  Arbitrary 6D vectors map to rotations by Gram-Schmidt on those two columns.

All functions accept any leading batch dimensions and follow the input's device
and dtype.
"""

from __future__ import annotations

import math

import roma
import torch

# Lower bound on the column norms during Gram-Schmidt: keeps degenerate 6D inputs
# (a zero or colinear column) finite instead of NaN. Far below any real norm.
GRAMSCHMIDT_EPS = 1e-12


def _check_trailing_shape(tensor: torch.Tensor, shape: tuple[int, ...], name: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"expected {name} to be a torch.Tensor, got {type(tensor).__name__}")
    if tuple(tensor.shape[-len(shape) :]) != shape or tensor.dim() < len(shape):
        expected = ", ".join(["..."] + [str(s) for s in shape])
        raise ValueError(f"expected {name} of shape ({expected}), got {tuple(tensor.shape)}")


def rotvec_to_rotmat(rotvec: torch.Tensor) -> torch.Tensor:
    """Convert axis-angle vectors to rotation matrices (Rodrigues' formula).

    Args:
        rotvec: ``(..., 3)`` axis-angle vectors, angle in radians.

    Returns:
        ``(..., 3, 3)`` rotation matrices.
    """
    _check_trailing_shape(rotvec, (3,), "rotvec")
    return roma.rotvec_to_rotmat(rotvec)


def rotmat_to_rotvec(rotmat: torch.Tensor) -> torch.Tensor:
    """Convert rotation matrices to axis-angle vectors with angle in ``[0, pi]``.

    Args:
        rotmat: ``(..., 3, 3)`` rotation matrices.

    Returns:
        ``(..., 3)`` axis-angle vectors.
    """
    _check_trailing_shape(rotmat, (3, 3), "rotmat")
    return roma.rotmat_to_rotvec(rotmat)


def sixd_to_rotmat(sixd: torch.Tensor) -> torch.Tensor:
    """Map 6D vectors to rotation matrices by Gram-Schmidt (Zhou et al., SPIN convention).

    The six numbers are read as the ``(3, 2)`` matrix of the first two columns
    ``[a1 | a2]``; the result is ``[b1 | b2 | b1 x b2]`` with ``b1 = a1 / |a1|`` and
    ``b2`` the normalised part of ``a2`` orthogonal to ``b1``. Any input whose two
    columns are not colinear gives a proper rotation (orthonormal, det +1).

    Args:
        sixd: ``(..., 6)`` 6D rotation representation.

    Returns:
        ``(..., 3, 3)`` rotation matrices.
    """
    _check_trailing_shape(sixd, (6,), "sixd")
    columns = sixd.reshape(*sixd.shape[:-1], 3, 2)
    return roma.special_gramschmidt(columns, epsilon=GRAMSCHMIDT_EPS)


def rotmat_to_sixd(rotmat: torch.Tensor) -> torch.Tensor:
    """Convert rotation matrices to the 6D representation (their first two columns).

    Inverse of :func:`sixd_to_rotmat` on rotation matrices.

    Args:
        rotmat: ``(..., 3, 3)`` rotation matrices.

    Returns:
        ``(..., 6)`` 6D representation ``R[..., :, :2]`` flattened row-major.
    """
    _check_trailing_shape(rotmat, (3, 3), "rotmat")
    return rotmat[..., :, :2].reshape(*rotmat.shape[:-2], 6)


def upright_facing_camera(yaw_deg: torch.Tensor) -> torch.Tensor:
    """Global orientation ``(..., 3)`` (axis-angle) that stands an SMPL body (y up, z front)
    upright in the camera frame (y down, z forward), facing the camera, turned by
    ``yaw_deg`` ``(...)`` degrees about the vertical: 180 degrees about x after the yaw."""
    yaw = torch.zeros(*yaw_deg.shape, 3, dtype=yaw_deg.dtype, device=yaw_deg.device)
    yaw[..., 1] = torch.deg2rad(yaw_deg)
    flip = yaw.new_tensor([math.pi, 0.0, 0.0])
    return rotmat_to_rotvec(rotvec_to_rotmat(flip) @ rotvec_to_rotmat(yaw))
