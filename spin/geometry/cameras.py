"""Pinhole cameras: intrinsics, perspective projection and the SPIN/CLIFF camera conventions.

Conventions:

- Camera frame: x right, y down, z forward (OpenCV); pixel ``(u, v)`` with ``u``
  along the image width and ``v`` along the height, origin at the top-left pixel
  corner as in SPIN.
- Intrinsics ``K`` are ``(..., 3, 3)`` upper-triangular with last row ``[0, 0, 1]``.
- The regressor predicts a weak-perspective crop camera ``[s, tx, ty]``: a body
  point ``X`` lands at normalised crop coordinates ``s * (X[:2] + [tx, ty])`` in
  ``[-1, 1]``. With the crop camera (focal ``FOCAL_LENGTH``, principal point at the
  centre of the ``CROP_SIZE`` crop) this is the translation
  ``[tx, ty, 2 * f / (crop_size * s)]``.

All functions accept any leading batch dimensions and follow the inputs' device
and dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

FOCAL_LENGTH = 5000.0
"""Focal length in pixels of SPIN's crop camera."""

CROP_SIZE = 224
"""Side in pixels of the square network input crop."""

DEPTH_EPS = 1e-6
"""Smallest absolute depth divided by in :func:`perspective_projection`."""

WEAK_PERSPECTIVE_EPS = 1e-9
"""Added to ``size * s`` before dividing, so a zero weak-perspective scale stays finite."""


def _check_trailing_shape(tensor: torch.Tensor, shape: tuple[int, ...], name: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"expected {name} to be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() < len(shape) or tuple(tensor.shape[-len(shape) :]) != shape:
        expected = ", ".join(["..."] + [str(s) for s in shape])
        raise ValueError(f"expected {name} of shape ({expected}), got {tuple(tensor.shape)}")


def _as_tensor(value: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A float or tensor as a tensor on ``like``'s device and dtype."""
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def intrinsics_matrix(
    focal_length: float | torch.Tensor, principal_point: torch.Tensor
) -> torch.Tensor:
    """Build pinhole intrinsics ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``.

    Args:
        focal_length: focal length in pixels, either one value per camera,
            ``(...,)`` or a float, or ``(fx, fy)`` as ``(..., 2)``. It is read as
            ``(fx, fy)`` exactly when it has as many dimensions as
            ``principal_point`` (and a last dimension of 2).
        principal_point: ``(..., 2)`` principal point ``(cx, cy)`` in pixels.

    Returns:
        ``(..., 3, 3)`` intrinsics; batch dims are broadcast between the two inputs.
    """
    _check_trailing_shape(principal_point, (2,), "principal_point")
    focal = _as_tensor(focal_length, principal_point)
    if focal.dim() == principal_point.dim():
        if focal.shape[-1] != 2:
            raise ValueError(
                "expected focal_length of shape (...,) or (..., 2) = (fx, fy), got "
                f"{tuple(focal.shape)} with principal_point {tuple(principal_point.shape)}"
            )
        fx, fy = focal.unbind(-1)
    else:
        fx = fy = focal
    cx, cy = principal_point.unbind(-1)
    fx, fy, cx, cy = torch.broadcast_tensors(fx, fy, cx, cy)
    zero = torch.zeros_like(fx)
    one = torch.ones_like(fx)
    rows = [fx, zero, cx, zero, fy, cy, zero, zero, one]
    return torch.stack(rows, dim=-1).reshape(*fx.shape, 3, 3)


def crop_intrinsics(
    batch_shape: Sequence[int],
    like: torch.Tensor,
    focal_length: float | torch.Tensor = FOCAL_LENGTH,
    crop_size: int = CROP_SIZE,
) -> torch.Tensor:
    """Intrinsics of SPIN's crop camera: principal point at the crop centre.

    Args:
        batch_shape: leading shape ``(...)`` of the result, e.g. ``(B,)``.
        like: any tensor; the result takes its device and dtype.
        focal_length: focal length in pixels, a float or ``(...,)``.
        crop_size: side of the square crop in pixels.

    Returns:
        ``(..., 3, 3)`` intrinsics.
    """
    centre = torch.full((*batch_shape, 2), crop_size / 2.0, dtype=like.dtype, device=like.device)
    focal = _as_tensor(focal_length, like).expand(tuple(batch_shape))
    return intrinsics_matrix(focal, centre)


def full_frame_intrinsics(
    image_size: torch.Tensor, focal_length: float | torch.Tensor | None = None
) -> torch.Tensor:
    """Intrinsics of a full-image camera, principal point at the image centre.

    Args:
        image_size: ``(..., 2)`` image ``(width, height)`` in pixels.
        focal_length: focal length in pixels, a float or ``(...,)``. Defaults to
            the image diagonal ``sqrt(w^2 + h^2)`` (CLIFF's estimate when the
            real intrinsics are unknown).

    Returns:
        ``(..., 3, 3)`` intrinsics.
    """
    _check_trailing_shape(image_size, (2,), "image_size")
    if not image_size.is_floating_point():
        raise TypeError(f"expected a floating-point image_size, got {image_size.dtype}")
    if focal_length is None:
        focal_length = torch.linalg.vector_norm(image_size, dim=-1)
    return intrinsics_matrix(focal_length, image_size / 2.0)


def _safe_depth(depth: torch.Tensor) -> torch.Tensor:
    """Push depths with ``|z| < DEPTH_EPS`` to ``+-DEPTH_EPS``, keeping their sign."""
    floor = torch.full_like(depth, DEPTH_EPS).copysign(depth)
    return torch.where(depth.abs() < DEPTH_EPS, floor, depth)


def perspective_projection(
    points: torch.Tensor,
    intrinsics: torch.Tensor,
    rotation: torch.Tensor | None = None,
    translation: torch.Tensor | None = None,
) -> torch.Tensor:
    """Project 3D points to pixels with a pinhole camera: ``K (R X + t)`` then divide by depth.

    Depths closer to zero than ``DEPTH_EPS`` are pushed to ``+-DEPTH_EPS`` (sign
    kept) so the result stays finite; points behind the camera (negative depth)
    are projected through the centre as in the ideal pinhole model.

    Args:
        points: ``(..., N, 3)`` points in the body/world frame.
        intrinsics: ``(..., 3, 3)`` camera intrinsics.
        rotation: ``(..., 3, 3)`` world-to-camera rotation; identity if None.
        translation: ``(..., 3)`` world-to-camera translation (e.g. ``cam_t``);
            zero if None.

    Returns:
        ``(..., N, 2)`` pixel coordinates ``(u, v)``.
    """
    _check_trailing_shape(points, (3,), "points")
    if points.dim() < 2:
        raise ValueError(f"expected points of shape (..., N, 3), got {tuple(points.shape)}")
    _check_trailing_shape(intrinsics, (3, 3), "intrinsics")
    if rotation is not None:
        _check_trailing_shape(rotation, (3, 3), "rotation")
        points = points @ rotation.transpose(-1, -2)
    if translation is not None:
        _check_trailing_shape(translation, (3,), "translation")
        points = points + translation.unsqueeze(-2)
    normalised = points[..., :2] / _safe_depth(points[..., 2:])
    homogeneous = torch.cat([normalised, torch.ones_like(normalised[..., :1])], dim=-1)
    return homogeneous @ intrinsics[..., :2, :].transpose(-1, -2)


def weak_perspective_to_translation(
    cam: torch.Tensor,
    focal_length: float | torch.Tensor = FOCAL_LENGTH,
    crop_size: float = CROP_SIZE,
) -> torch.Tensor:
    """Convert SPIN's weak-perspective crop camera ``[s, tx, ty]`` to a translation.

    ``t = [tx, ty, 2 * f / (crop_size * s + WEAK_PERSPECTIVE_EPS)]``: at that depth
    the perspective crop camera scales the body like ``s`` does.

    Args:
        cam: ``(..., 3)`` weak-perspective camera ``[s, tx, ty]``.
        focal_length: crop camera focal length in pixels, a float or ``(...,)``.
        crop_size: side of the square crop in pixels.

    Returns:
        ``(..., 3)`` camera translation ``cam_t``.
    """
    _check_trailing_shape(cam, (3,), "cam")
    scale, tx, ty = cam.unbind(-1)
    tz = 2.0 * focal_length / (crop_size * scale + WEAK_PERSPECTIVE_EPS)
    return torch.stack(torch.broadcast_tensors(tx, ty, tz), dim=-1)


def translation_to_weak_perspective(
    translation: torch.Tensor,
    focal_length: float | torch.Tensor = FOCAL_LENGTH,
    crop_size: float = CROP_SIZE,
) -> torch.Tensor:
    """Inverse of :func:`weak_perspective_to_translation`.

    Args:
        translation: ``(..., 3)`` camera translation ``[tx, ty, tz]``, ``tz > 0``.
        focal_length: crop camera focal length in pixels, a float or ``(...,)``.
        crop_size: side of the square crop in pixels.

    Returns:
        ``(..., 3)`` weak-perspective camera ``[s, tx, ty]``.
    """
    _check_trailing_shape(translation, (3,), "translation")
    tx, ty, tz = translation.unbind(-1)
    scale = (2.0 * focal_length / tz - WEAK_PERSPECTIVE_EPS) / crop_size
    return torch.stack(torch.broadcast_tensors(scale, tx, ty), dim=-1)


def crop_translation_to_full_frame(
    cam: torch.Tensor,
    box_center: torch.Tensor,
    box_size: torch.Tensor,
    image_size: torch.Tensor,
    focal_length: float | torch.Tensor,
) -> torch.Tensor:
    """Turn a weak-perspective crop camera into a full-frame camera translation (CLIFF).

    The crop camera says a body point ``X`` appears at crop-normalised
    ``s * (X[:2] + [tx, ty])``, i.e. at image pixel
    ``box_center + s * box_size / 2 * (X[:2] + [tx, ty])``. The full-frame camera
    has focal ``focal_length`` and its principal point at the image centre
    ``(w / 2, h / 2)``. Choosing

    - ``tz = 2 f / (s * box_size)``,
    - ``tx_full = tx + 2 (cx - w / 2) / (s * box_size)``,
    - ``ty_full = ty + 2 (cy - h / 2) / (s * box_size)``

    makes the full-frame projection of every point with body-frame depth ``Z = 0``
    land exactly where the crop camera put it; other points differ by the
    perspective effect of the off-centre box, which is what the full-frame
    camera models and the crop camera ignores. ``WEAK_PERSPECTIVE_EPS`` is added
    to ``s * box_size`` to keep ``s = 0`` finite.

    Args:
        cam: ``(..., 3)`` weak-perspective crop camera ``[s, tx, ty]``.
        box_center: ``(..., 2)`` box centre ``(cx, cy)`` in image pixels.
        box_size: ``(...,)`` side of the square box in image pixels (SPIN's
            ``scale * 200``).
        image_size: ``(..., 2)`` image ``(width, height)`` in pixels.
        focal_length: full-frame focal length in pixels, a float or ``(...,)``.

    Returns:
        ``(..., 3)`` translation for the full-frame camera.
    """
    _check_trailing_shape(cam, (3,), "cam")
    _check_trailing_shape(box_center, (2,), "box_center")
    _check_trailing_shape(image_size, (2,), "image_size")
    scale, tx, ty = cam.unbind(-1)
    box_scale = scale * box_size + WEAK_PERSPECTIVE_EPS
    offset = 2.0 * (box_center - image_size / 2.0) / box_scale.unsqueeze(-1)
    tz = 2.0 * focal_length / box_scale
    tx_full = tx + offset[..., 0]
    ty_full = ty + offset[..., 1]
    return torch.stack(torch.broadcast_tensors(tx_full, ty_full, tz), dim=-1)


def pixels_to_normalized(keypoints_px: torch.Tensor, crop_size: float = CROP_SIZE) -> torch.Tensor:
    """Map crop pixels to normalised crop coordinates: ``(p - size / 2) / (size / 2)``.

    Args:
        keypoints_px: ``(..., 2)`` crop pixel coordinates; extra trailing
            channels are not accepted (split off confidences first).
        crop_size: side of the square crop in pixels.

    Returns:
        ``(..., 2)`` coordinates, ``[-1, 1]`` across the crop.
    """
    _check_trailing_shape(keypoints_px, (2,), "keypoints_px")
    half = crop_size / 2.0
    return (keypoints_px - half) / half


def normalized_to_pixels(keypoints: torch.Tensor, crop_size: float = CROP_SIZE) -> torch.Tensor:
    """Inverse of :func:`pixels_to_normalized`.

    Args:
        keypoints: ``(..., 2)`` normalised crop coordinates.
        crop_size: side of the square crop in pixels.

    Returns:
        ``(..., 2)`` crop pixel coordinates.
    """
    _check_trailing_shape(keypoints, (2,), "keypoints")
    half = crop_size / 2.0
    return keypoints * half + half
