"""Crops and SPIN's data augmentation as pure functions.

Conventions (shared with :mod:`spin.geometry.cameras`):

- **Pixels** are continuous coordinates ``(x, y)`` with the origin at the top-left
  corner of the top-left pixel: pixel ``(row i, column j)`` covers
  ``[j, j + 1) x [i, i + 1)`` and its centre is ``(j + 0.5, i + 0.5)``. PIL's
  geometric transforms use the same convention.
- **Crop**: the square box of side ``BOX_SIZE_PER_SCALE * scale`` pixels centred on
  ``center`` is mapped onto an ``out_size x out_size`` crop (SPIN's box).
- **Rotation** by ``rotation_deg`` about the box centre; a positive angle turns the
  image content counter-clockwise as displayed (SPIN's convention). In the camera
  frame (x right, y down, z forward) the same motion is the rotation
  ``Rz(-rotation_deg)`` about the optical axis, :func:`inplane_rotation_matrix`;
  its top-left 2x2 block is exactly what the crop transform applies to pixel
  offsets, so rotated 3D joints project onto the rotated 2D keypoints.
- **Flip** mirrors the crop horizontally (crop ``x -> out_size - x``) *after* the
  rotation, and swaps left and right joints. Everything (image, 2D keypoints, 3D
  joints, SMPL pose) is rotated first, then flipped, as in SPIN.
- **Normalised crop coordinates**: ``pixels / (out_size / 2) - 1``, so ``[-1, 1]``
  spans the crop and a flip is ``x -> -x``.
- Keypoints that fall outside the crop keep their (out-of-range) coordinates and
  their confidence, as SPIN does: they still say where the limb is.
- Unlike SPIN, crop coordinates are not rounded to whole pixels (SPIN rounds and
  adds 1); keypoints stay exact, which is what lets the tests demand < 1 px.

Array functions accept numpy arrays or torch tensors (any leading batch dims) and
return the same type; affine matrices are numpy ``float64``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from spin.body.joint_conventions import SPIN_49, Convention, flip_permutation, get_convention
from spin.geometry.rotations import rotmat_to_rotvec, rotvec_to_rotmat

__all__ = [
    "BOX_SIZE_PER_SCALE",
    "SPIN_GT_24",
    "AugmentationConfig",
    "AugmentationParams",
    "augment_pose_rotvecs",
    "crop_camera_intrinsics",
    "crop_image",
    "crop_normalized_to_pixels",
    "crop_pixels_to_normalized",
    "crop_transform",
    "flip_joints_3d",
    "flip_keypoints",
    "flip_pose_rotvecs",
    "identity_params",
    "inplane_rotation_matrix",
    "invert_affine",
    "rotate_joints_3d",
    "rotate_pose_rotvecs",
    "sample_augmentation",
    "transform_points",
    "unaugment_pose_rotvecs",
    "uncrop_image",
    "uncrop_points",
    "warp_image",
]

BOX_SIZE_PER_SCALE = 200.0
"""SPIN's ``scale`` is the side of the person box in pixels divided by this."""

ANTIALIAS_MIN_FACTOR = 2
"""When a warp shrinks the image by at least this integer factor, the source region
is first box-filtered by the largest such factor (``Image.reduce``), so the bilinear
warp does not alias."""

SPIN_GT_24 = Convention("spin_gt24", SPIN_49.joint_names[25:], SPIN_49.points[25:])
"""SPIN's 24 "ground-truth" joints (the last 24 of ``spin49``): the order of the
``part`` and ``S`` arrays of the data format."""

_SHRINK_TOLERANCE = 1e-6  # so an exact 4x shrink computed as 3.9999999 still reduces by 4
_NUM_SMPL_JOINTS = 24
_POSE_FLIP_SIGNS = (1.0, -1.0, -1.0)  # mirroring x negates an axis-angle's y and z


# --- numpy / torch helpers --------------------------------------------------------------


def _as_float(x):
    """``x`` as a floating-point numpy array or tensor (ints become float64)."""
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.to(torch.float64)
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)


def _const(values, like):
    """``values`` as an array/tensor of ``like``'s type, dtype (and device)."""
    if isinstance(like, torch.Tensor):
        return torch.as_tensor(np.asarray(values), dtype=like.dtype, device=like.device)
    return np.asarray(values, dtype=like.dtype)


def _concat(parts, like):
    if isinstance(like, torch.Tensor):
        return torch.cat(parts, dim=-1)
    return np.concatenate(parts, axis=-1)


def _check_last_dims(x, joints: int | None, min_channels: int, name: str, hint: str) -> None:
    shape = tuple(x.shape)
    ok = len(shape) >= 2 and shape[-1] >= min_channels
    if ok and joints is not None:
        ok = shape[-2] == joints
    if not ok:
        j = "J" if joints is None else str(joints)
        raise ValueError(
            f"expected {name} of shape (..., {j}, >={min_channels}), got {shape}; {hint}"
        )


# --- crop geometry ------------------------------------------------------------------------


def inplane_rotation_matrix(rotation_deg: float) -> np.ndarray:
    """Camera-frame rotation matching an image rotation of ``rotation_deg``.

    A positive angle turns the image counter-clockwise as displayed. With the camera
    frame x right, y down, z forward this is ``Rz(-rotation_deg)``.

    Returns:
        ``(3, 3)`` float64 rotation matrix acting on column vectors.
    """
    angle = -math.radians(rotation_deg)
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def crop_transform(
    center,
    scale: float,
    out_size: int,
    rotation_deg: float = 0.0,
    flip: bool = False,
) -> np.ndarray:
    """Affine map from original-image pixels to crop pixels (see the module conventions).

    Args:
        center: ``(2,)`` box centre ``(x, y)`` in original pixels.
        scale: box side / ``BOX_SIZE_PER_SCALE`` (SPIN's ``scale``), > 0.
        out_size: side of the square crop in pixels.
        rotation_deg: in-plane rotation about the box centre, positive = counter-clockwise
            as displayed.
        flip: mirror the crop horizontally after the rotation.

    Returns:
        ``(2, 3)`` float64 affine ``A``: ``crop = A[:, :2] @ p + A[:, 2]``.
    """
    center = np.asarray(center, dtype=np.float64)
    if center.shape != (2,):
        raise ValueError(f"expected center of shape (2,), got {center.shape}")
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"expected a positive finite scale (box side / 200), got {scale}")
    zoom = out_size / (BOX_SIZE_PER_SCALE * float(scale))
    linear = zoom * inplane_rotation_matrix(rotation_deg)[:2, :2]
    half = out_size / 2.0
    affine = np.concatenate([linear, (half - linear @ center)[:, None]], axis=1)
    if flip:
        mirror = np.array([[-1.0, 0.0, float(out_size)], [0.0, 1.0, 0.0]])
        affine = _compose(mirror, affine)
    return affine


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The affine ``outer o inner`` (apply ``inner`` first), both ``(2, 3)``."""
    return np.concatenate(
        [outer[:, :2] @ inner[:, :2], (outer[:, :2] @ inner[:, 2] + outer[:, 2])[:, None]], axis=1
    )


def invert_affine(affine: np.ndarray) -> np.ndarray:
    """Inverse of a ``(2, 3)`` affine map."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (2, 3):
        raise ValueError(f"expected an affine of shape (2, 3), got {affine.shape}")
    linear = np.linalg.inv(affine[:, :2])
    return np.concatenate([linear, (-linear @ affine[:, 2])[:, None]], axis=1)


def transform_points(points, affine: np.ndarray):
    """Apply a ``(2, 3)`` affine to points.

    Args:
        points: ``(..., 2)`` pixel coordinates, numpy or torch.
        affine: ``(2, 3)`` affine, e.g. from :func:`crop_transform`.

    Returns:
        ``(..., 2)`` transformed points of the input's type.
    """
    points = _as_float(points)
    if points.shape[-1:] != (2,):
        raise ValueError(
            f"expected points of shape (..., 2), got {tuple(points.shape)}; "
            "split off confidences first"
        )
    affine = _const(affine, points)
    return points @ affine[:, :2].T + affine[:, 2]


def uncrop_points(
    points_crop,
    center,
    scale: float,
    out_size: int,
    rotation_deg: float = 0.0,
    flip: bool = False,
):
    """Map crop pixels back to original pixels: inverse of :func:`crop_transform`.

    Args:
        points_crop: ``(..., 2)`` crop pixel coordinates.
        center, scale, out_size, rotation_deg, flip: as for :func:`crop_transform`.

    Returns:
        ``(..., 2)`` original-image pixel coordinates.
    """
    affine = crop_transform(center, scale, out_size, rotation_deg, flip)
    return transform_points(points_crop, invert_affine(affine))


def _as_pil_rgb(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected an RGB image of shape (H, W, 3) and dtype uint8, got "
            f"{image.shape} {image.dtype}"
        )
    return Image.fromarray(image)


def warp_image(image, affine: np.ndarray, out_size: int | tuple[int, int]) -> np.ndarray:
    """Resample an image so that output pixel ``q`` shows input point ``affine^-1(q)``.

    Bilinear, zero (black) outside the input. When the warp shrinks by at least
    ``ANTIALIAS_MIN_FACTOR``, the source region is box-filtered first so the result
    does not alias.

    Args:
        image: ``(H, W, 3)`` uint8 array or a PIL image.
        affine: ``(2, 3)`` map from input to output pixels.
        out_size: output side, or ``(width, height)``.

    Returns:
        ``(height, width, 3)`` uint8 array.
    """
    pil = _as_pil_rgb(image)
    width, height = (out_size, out_size) if isinstance(out_size, int) else out_size
    inverse = invert_affine(affine)  # output pixels -> input pixels
    shrink = math.sqrt(abs(np.linalg.det(inverse[:, :2])))  # input pixels per output pixel
    factor = int(shrink + _SHRINK_TOLERANCE)
    if factor >= ANTIALIAS_MIN_FACTOR:
        corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], dtype=np.float64)
        source = transform_points(corners, inverse)
        x0, y0 = np.floor(source.min(axis=0)).astype(int) - factor
        x1, y1 = np.ceil(source.max(axis=0)).astype(int) + factor
        # crop() pads with zeros outside the image; reduce(k) averages k x k blocks, so
        # reduced pixel coordinates are (p - (x0, y0)) / k exactly.
        pil = pil.crop((int(x0), int(y0), int(x1), int(y1))).reduce(factor)
        inverse = np.concatenate([inverse[:, :2], inverse[:, 2:] - [[x0], [y0]]], axis=1) / factor
    warped = pil.transform(
        (int(width), int(height)),
        Image.Transform.AFFINE,
        data=tuple(inverse.ravel()),
        resample=Image.Resampling.BILINEAR,
        fillcolor=(0, 0, 0),
    )
    return np.asarray(warped)


def crop_image(
    image,
    center,
    scale: float,
    out_size: int,
    rotation_deg: float = 0.0,
    flip: bool = False,
) -> np.ndarray:
    """Crop, rotate and optionally mirror the person box (see :func:`crop_transform`).

    Args:
        image: ``(H, W, 3)`` uint8 array or a PIL image.
        center, scale, out_size, rotation_deg, flip: as for :func:`crop_transform`.

    Returns:
        ``(out_size, out_size, 3)`` uint8 crop; black where the box leaves the image.
    """
    affine = crop_transform(center, scale, out_size, rotation_deg, flip)
    return warp_image(image, affine, out_size)


def uncrop_image(
    crop,
    center,
    scale: float,
    image_size: tuple[int, int],
    rotation_deg: float = 0.0,
    flip: bool = False,
) -> np.ndarray:
    """Paste a crop (or a rendering over it) back into the original image frame.

    Args:
        crop: ``(S, S, 3)`` uint8 crop made with these parameters.
        center, scale, rotation_deg, flip: as for :func:`crop_transform`.
        image_size: original image ``(width, height)``.

    Returns:
        ``(height, width, 3)`` uint8 image, black outside the crop's box.
    """
    crop = np.asarray(crop)
    affine = crop_transform(center, scale, crop.shape[1], rotation_deg, flip)
    return warp_image(crop, invert_affine(affine), image_size)


def crop_camera_intrinsics(
    intrinsics, affine: np.ndarray, rotation_deg: float = 0.0, flip: bool = False
) -> np.ndarray:
    """Intrinsics that project *augmented* 3D joints onto *augmented* crop pixels.

    With ``H`` the crop affine (including the flip), ``R`` the in-plane rotation
    applied to the 3D joints and ``F = diag(-1, 1, 1)`` when flipped, the augmented
    joints are ``F R X`` and their crop pixels are ``H K X``, so the crop camera is
    ``H K R^T F``. For ``fx == fy`` it is a pinhole with focal ``zoom * f`` and the
    principal point at ``H`` applied to the original one.

    Args:
        intrinsics: ``(3, 3)`` full-image camera of the original image.
        affine: ``(2, 3)`` the crop transform used for the image (with the flip).
        rotation_deg, flip: the augmentation applied to the 3D joints.

    Returns:
        ``(3, 3)`` float64 intrinsics in crop pixels.
    """
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    if intrinsics.shape != (3, 3):
        raise ValueError(f"expected intrinsics of shape (3, 3), got {intrinsics.shape}")
    homogeneous = np.concatenate([np.asarray(affine, dtype=np.float64), [[0.0, 0.0, 1.0]]])
    mirror = np.diag([-1.0, 1.0, 1.0]) if flip else np.eye(3)
    return homogeneous @ intrinsics @ inplane_rotation_matrix(rotation_deg).T @ mirror


# --- keypoints ------------------------------------------------------------------------------


def crop_pixels_to_normalized(keypoints, out_size: int):
    """Crop pixels to normalised crop coordinates ``p / (out_size / 2) - 1``.

    Args:
        keypoints: ``(..., C)`` with ``C >= 2``; channels after x, y (confidences)
            are kept unchanged.
        out_size: side of the square crop in pixels.

    Returns:
        ``(..., C)`` of the input's type.
    """
    keypoints = _as_float(keypoints)
    half = out_size / 2.0
    return _concat([keypoints[..., :2] / half - 1.0, keypoints[..., 2:]], keypoints)


def crop_normalized_to_pixels(keypoints, out_size: int):
    """Inverse of :func:`crop_pixels_to_normalized`; extra channels are kept."""
    keypoints = _as_float(keypoints)
    half = out_size / 2.0
    return _concat([(keypoints[..., :2] + 1.0) * half, keypoints[..., 2:]], keypoints)


def flip_keypoints(keypoints, convention: str | Convention = "spin49"):
    """Mirror 2D keypoints in normalised crop coordinates and swap left and right.

    Args:
        keypoints: ``(..., J, C)``, ``C >= 2`` (x, y[, confidence]) in normalised crop
            coordinates; confidences move with their joints.
        convention: joint convention of the ``J`` joints (``"spin49"``,
            ``"openpose25"``, :data:`SPIN_GT_24`, ...).

    Returns:
        ``(..., J, C)``: ``x -> -x`` and joints permuted by ``flip_permutation``.
    """
    conv = get_convention(convention)
    keypoints = _as_float(keypoints)
    _check_last_dims(
        keypoints, conv.num_joints, 2, "keypoints", f"they must be in {conv.name!r} order"
    )
    signs = [-1.0] + [1.0] * (keypoints.shape[-1] - 1)
    return keypoints[..., flip_permutation(conv), :] * _const(signs, keypoints)


# --- 3D joints ------------------------------------------------------------------------------


def rotate_joints_3d(joints, rotation_deg: float):
    """Rotate camera-frame 3D joints about the optical axis to match an image rotation.

    Args:
        joints: ``(..., J, C)``, ``C >= 3``: x, y, z (camera frame) and optionally a
            confidence, which is kept.
        rotation_deg: the image rotation (positive = counter-clockwise as displayed).

    Returns:
        ``(..., J, C)`` with ``xyz -> inplane_rotation_matrix(rotation_deg) @ xyz``.
    """
    joints = _as_float(joints)
    _check_last_dims(joints, None, 3, "joints", "give x, y, z (and optionally a confidence)")
    rotation = _const(inplane_rotation_matrix(rotation_deg), joints)
    return _concat([joints[..., :3] @ rotation.T, joints[..., 3:]], joints)


def flip_joints_3d(joints, convention: str | Convention = SPIN_GT_24):
    """Mirror camera-frame 3D joints (``x -> -x``) and swap left and right.

    Args:
        joints: ``(..., J, C)``, ``C >= 3`` (x, y, z[, confidence]).
        convention: joint convention of the ``J`` joints; the data format's ``S`` is
            :data:`SPIN_GT_24`.

    Returns:
        ``(..., J, C)`` flipped joints.
    """
    conv = get_convention(convention)
    joints = _as_float(joints)
    _check_last_dims(joints, conv.num_joints, 3, "joints", f"they must be in {conv.name!r} order")
    signs = [-1.0] + [1.0] * (joints.shape[-1] - 1)
    return joints[..., flip_permutation(conv), :] * _const(signs, joints)


# --- SMPL pose ------------------------------------------------------------------------------


def _check_pose(pose) -> None:
    if tuple(pose.shape[-1:]) != (_NUM_SMPL_JOINTS * 3,):
        raise ValueError(
            f"expected pose_rotvecs of shape (..., 72) (24 SMPL joints, axis-angle, global "
            f"orientation first), got {tuple(pose.shape)}"
        )


def flip_pose_rotvecs(pose_rotvecs):
    """Mirror an SMPL pose: swap left/right joints and negate the y and z of each rotvec.

    Posing a left/right-symmetric body with the result gives the mirror image
    (``x -> -x``) of the original posed body, global orientation included.

    Args:
        pose_rotvecs: ``(..., 72)`` axis-angle SMPL pose, global orientation first.

    Returns:
        ``(..., 72)`` mirrored pose.
    """
    pose = _as_float(pose_rotvecs)
    _check_pose(pose)
    per_joint = pose.reshape(*pose.shape[:-1], _NUM_SMPL_JOINTS, 3)
    flipped = per_joint[..., flip_permutation("smpl24"), :] * _const(_POSE_FLIP_SIGNS, pose)
    return flipped.reshape(pose.shape)


def rotate_pose_rotvecs(pose_rotvecs, rotation_deg: float):
    """Turn an SMPL pose (camera-frame global orientation) with an image rotation.

    The global orientation is left-multiplied by ``inplane_rotation_matrix``, the
    rotation :func:`rotate_joints_3d` applies; the body pose is unchanged.

    Args:
        pose_rotvecs: ``(..., 72)`` axis-angle SMPL pose, global orientation first.
        rotation_deg: the image rotation (positive = counter-clockwise as displayed).

    Returns:
        ``(..., 72)`` rotated pose.
    """
    pose = _as_float(pose_rotvecs)
    _check_pose(pose)
    if rotation_deg == 0:
        return pose
    as_torch = pose if isinstance(pose, torch.Tensor) else torch.from_numpy(pose)
    rotation = torch.as_tensor(
        inplane_rotation_matrix(rotation_deg), dtype=as_torch.dtype, device=as_torch.device
    )
    global_orient = rotmat_to_rotvec(rotation @ rotvec_to_rotmat(as_torch[..., :3]))
    rotated = torch.cat([global_orient, as_torch[..., 3:]], dim=-1)
    return rotated if isinstance(pose, torch.Tensor) else rotated.numpy()


def augment_pose_rotvecs(pose_rotvecs, rotation_deg: float, flip: bool):
    """Apply an augmentation to an SMPL pose: rotate, then flip (SPIN's order)."""
    pose = rotate_pose_rotvecs(pose_rotvecs, rotation_deg)
    return flip_pose_rotvecs(pose) if flip else pose


def unaugment_pose_rotvecs(pose_rotvecs, rotation_deg: float, flip: bool):
    """Undo :func:`augment_pose_rotvecs`, e.g. to store a fit in the original frame."""
    pose = flip_pose_rotvecs(pose_rotvecs) if flip else _as_float(pose_rotvecs)
    return rotate_pose_rotvecs(pose, -rotation_deg)


# --- random augmentation --------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentationConfig:
    """SPIN's training augmentation; the defaults are the paper's.

    Attributes:
        enabled: sample augmentations at all (False: every sample is un-augmented).
        flip_prob: probability of a horizontal flip.
        noise_factor: each colour channel is multiplied by ``U[1 - f, 1 + f]``.
        rot_factor: standard deviation of the rotation in degrees.
        rot_clip_stds: the rotation is clipped to ``+-rot_clip_stds * rot_factor``.
        rot_zero_prob: probability that the rotation is set to zero.
        scale_factor: the box scale is multiplied by ``N(1, f)`` clipped to
            ``[1 - f, 1 + f]``.
    """

    enabled: bool = True
    flip_prob: float = 0.5
    noise_factor: float = 0.4
    rot_factor: float = 30.0
    rot_clip_stds: float = 2.0
    rot_zero_prob: float = 0.6
    scale_factor: float = 0.25

    def __post_init__(self) -> None:
        for name in ("flip_prob", "rot_zero_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentationConfig.{name} is a probability, got {value}")
        for name in ("noise_factor", "scale_factor"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(
                    f"AugmentationConfig.{name} must be in [0, 1) so the factor stays "
                    f"positive, got {value}"
                )
        for name in ("rot_factor", "rot_clip_stds"):
            value = getattr(self, name)
            if not value >= 0.0:
                raise ValueError(f"AugmentationConfig.{name} must be >= 0, got {value}")


@dataclass(frozen=True)
class AugmentationParams:
    """One sample's augmentation.

    Attributes:
        flip: mirror horizontally (after rotating).
        rotation_deg: in-plane rotation, positive = counter-clockwise as displayed.
        scale_factor: the box scale is multiplied by this (> 1 zooms out).
        pixel_noise: per-channel (R, G, B) multipliers of the pixel values.
    """

    flip: bool
    rotation_deg: float
    scale_factor: float
    pixel_noise: tuple[float, float, float]


def identity_params() -> AugmentationParams:
    """The augmentation that changes nothing."""
    return AugmentationParams(
        flip=False, rotation_deg=0.0, scale_factor=1.0, pixel_noise=(1.0, 1.0, 1.0)
    )


def sample_augmentation(config: AugmentationConfig, rng: np.random.Generator) -> AugmentationParams:
    """Draw one sample's augmentation as SPIN does (identity when disabled)."""
    if not config.enabled:
        return identity_params()
    flip = bool(rng.uniform() < config.flip_prob)
    noise = rng.uniform(1.0 - config.noise_factor, 1.0 + config.noise_factor, size=3)
    limit = config.rot_clip_stds * config.rot_factor
    rotation = float(np.clip(rng.normal() * config.rot_factor, -limit, limit))
    if rng.uniform() < config.rot_zero_prob:
        rotation = 0.0
    scale = float(
        np.clip(
            1.0 + rng.normal() * config.scale_factor,
            1.0 - config.scale_factor,
            1.0 + config.scale_factor,
        )
    )
    return AugmentationParams(
        flip=flip,
        rotation_deg=rotation,
        scale_factor=scale,
        pixel_noise=(float(noise[0]), float(noise[1]), float(noise[2])),
    )
