"""Datasets: SPIN's ``.npz`` format with crops and augmentation, and dataset mixing.

- :mod:`spin.data.augment`: crop geometry and SPIN's augmentation as pure functions
  (flip, rotation, scale, pixel noise) for images, keypoints, 3D joints and poses.
- :mod:`spin.data.spin_dataset`: :class:`SpinDataset` over a SPIN-format ``.npz``
  plus an image folder.
- :mod:`spin.data.mixed_dataset`: :class:`MixedDataset`, several datasets drawn
  with fixed ratios.
"""

from spin.data.augment import (
    SPIN_GT_24,
    AugmentationConfig,
    AugmentationParams,
    augment_pose_rotvecs,
    crop_camera_intrinsics,
    crop_image,
    crop_transform,
    flip_joints_3d,
    flip_keypoints,
    flip_pose_rotvecs,
    identity_params,
    rotate_joints_3d,
    rotate_pose_rotvecs,
    sample_augmentation,
    transform_points,
    unaugment_pose_rotvecs,
    uncrop_image,
    uncrop_points,
)
from spin.data.mixed_dataset import MixedDataset
from spin.data.spin_dataset import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetFormatError,
    SpinDataset,
    denormalize_image,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SPIN_GT_24",
    "AugmentationConfig",
    "AugmentationParams",
    "DatasetFormatError",
    "MixedDataset",
    "SpinDataset",
    "augment_pose_rotvecs",
    "crop_camera_intrinsics",
    "crop_image",
    "crop_transform",
    "denormalize_image",
    "flip_joints_3d",
    "flip_keypoints",
    "flip_pose_rotvecs",
    "identity_params",
    "rotate_joints_3d",
    "rotate_pose_rotvecs",
    "sample_augmentation",
    "transform_points",
    "unaugment_pose_rotvecs",
    "uncrop_image",
    "uncrop_points",
]
