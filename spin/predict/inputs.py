"""The network's input for a person in a photo, made the way the dataset makes it.

A trained regressor sees one input representation (:mod:`spin.data.representations`), made
from a square person box: ``center`` (2,) and ``side`` in pixels (SPIN's box ``scale`` is
``side / 200``). :func:`make_input` makes it from what a caller has, with the functions
:class:`~spin.data.spin_dataset.SpinDataset` uses for an un-augmented sample, so a photo and
a dataset sample with the same box give the same input:

``rgb``
    the box cropped to ``img_size`` px (:func:`~spin.data.augment.crop_image`), ImageNet
    normalised (:func:`~spin.data.spin_dataset.normalize_image`).
``keypoints``, ``keypoint_heatmaps``
    2D keypoints of any joint convention (a detector's, e.g. MediaPipe's ``mediapipe33``,
    or a file's) placed in SPIN-49 (:func:`~spin.body.joint_conventions.convert`: points
    the convention lacks get confidence 0), moved into the box's normalised crop
    coordinates, then the dataset's rule: the OpenPose block if it has a confident point,
    else the ground-truth block's shared points
    (:func:`~spin.data.representations.heatmap_keypoints`), as a vector or heatmaps.
``part_segmentation``
    cannot be made from a photo: it needs a body-part segmenter, which spin-hmr does not
    have (:class:`InputUnavailableError`). Datasets with part maps give it
    (``SpinDataset(part_maps=...)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from spin.body.joint_conventions import SPIN_49, convert, get_convention
from spin.data.augment import (
    BOX_SIZE_PER_SCALE,
    crop_image,
    crop_pixels_to_normalized,
    crop_transform,
    transform_points,
)
from spin.data.representations import (
    HEATMAP_SIGMA,
    heatmap_keypoints,
    input_channels,
    keypoint_heatmaps,
    keypoint_vector,
)
from spin.data.spin_dataset import normalize_image
from spin.geometry import CROP_SIZE

__all__ = [
    "FROM_IMAGE",
    "FROM_KEYPOINTS",
    "InputConfig",
    "InputUnavailableError",
    "crop_box",
    "keypoints_in_crop",
    "make_input",
    "rgb_input",
]

FROM_IMAGE = ("rgb",)
"""Representations made from the photo's pixels alone."""

FROM_KEYPOINTS = ("keypoints", "keypoint_heatmaps")
"""Representations made from 2D keypoints alone."""


class InputUnavailableError(ValueError):
    """The network's input representation cannot be made from what was given (or at all
    from a photo); the message says what it needs."""


@dataclass(frozen=True)
class InputConfig:
    """How a regressor's input is made: its training run's ``data`` settings of the same
    names (``data.input_representation``, ``data.img_size``, ``data.heatmap_sigma``).

    Attributes:
        input_representation: what the network sees (:mod:`spin.data.representations`).
        img_size: side of the square crop in pixels.
        heatmap_sigma: heatmap Gaussian std as a fraction of ``img_size``.
    """

    input_representation: str = "rgb"
    img_size: int = CROP_SIZE
    heatmap_sigma: float = HEATMAP_SIGMA

    def __post_init__(self) -> None:
        input_channels(self.input_representation)  # refuses an unknown representation
        if self.img_size < 1:
            raise ValueError(f"img_size must be >= 1 pixel, got {self.img_size}")
        if not self.heatmap_sigma > 0:
            raise ValueError(f"heatmap_sigma must be > 0, got {self.heatmap_sigma}")

    @property
    def channels(self) -> int:
        """Channels of the network input."""
        return input_channels(self.input_representation)


def _check_box(center, side: float) -> tuple[np.ndarray, float]:
    center = np.asarray(center, dtype=np.float64)
    if center.shape != (2,) or not np.isfinite(center).all():
        raise ValueError(f"expected a finite box centre (x, y), got {center.tolist()}")
    if not (math.isfinite(side) and side > 0):
        raise ValueError(f"expected a box side > 0 pixels, got {side}")
    return center, float(side)


def rgb_input(image: np.ndarray, center, side: float, img_size: int) -> torch.Tensor:
    """The ``rgb`` input: ``(3, S, S)`` float32, the square box of ``side`` px about
    ``center`` (2,) of the ``(H, W, 3)`` uint8 ``image``, cropped and normalised like a
    dataset sample (black outside the image)."""
    center, side = _check_box(center, side)
    return normalize_image(crop_image(image, center, side / BOX_SIZE_PER_SCALE, img_size))


def keypoints_in_crop(
    keypoints: np.ndarray, convention: str, center, side: float, img_size: int
) -> np.ndarray:
    """2D keypoints of a photo as a dataset sample's crop keypoints.

    Args:
        keypoints: ``(J, 3)`` ``(x, y, confidence)`` in image pixels, in ``convention``.
        convention: their joint convention (``"mediapipe33"``, ``"coco17"``, ...).
        center, side: the square person box in pixels.
        img_size: the crop side.

    Returns:
        ``(49, 3)`` SPIN-49 keypoints in normalised crop coordinates with confidences
        (0 for points the convention lacks).
    """
    center, side = _check_box(center, side)
    keypoints = np.asarray(keypoints, dtype=np.float64)
    get_convention(convention)  # an unknown name fails here, naming the known ones
    spin49 = convert(keypoints, convention, SPIN_49)
    affine = crop_transform(center, side / BOX_SIZE_PER_SCALE, img_size, 0.0, flip=False)
    pixels = np.concatenate([transform_points(spin49[:, :2], affine), spin49[:, 2:]], axis=1)
    return crop_pixels_to_normalized(pixels, img_size)


def make_input(
    config: InputConfig,
    center,
    side: float,
    image: np.ndarray | None = None,
    keypoints: np.ndarray | None = None,
    convention: str | None = None,
) -> torch.Tensor:
    """The network input ``(C, S, S)`` float32 for the person in the square box of ``side``
    px about ``center`` (2,), from the photo and/or its 2D keypoints (module docstring).

    Args:
        config: the regressor's :class:`InputConfig`.
        center, side: the person box in pixels.
        image: ``(H, W, 3)`` uint8 RGB photo (``rgb``).
        keypoints: ``(J, 3)`` pixels + confidence in ``convention`` (keypoint inputs).
        convention: the keypoints' joint convention.

    Raises:
        InputUnavailableError: the representation needs what was not given, or cannot be
            made from a photo at all.
    """
    representation = config.input_representation
    size = config.img_size
    if representation in FROM_IMAGE:
        if image is None:
            raise InputUnavailableError(
                f"the regressor takes {representation} crops of the photo; give the image"
            )
        return rgb_input(image, center, side, size)
    if representation in FROM_KEYPOINTS:
        if keypoints is None or convention is None:
            raise InputUnavailableError(
                f"the regressor takes {representation} made from the person's 2D keypoints; "
                "give the keypoints and their joint convention (a detector's, e.g. MediaPipe, "
                "or a keypoints file)"
            )
        selected = heatmap_keypoints(keypoints_in_crop(keypoints, convention, center, side, size))
        if representation == "keypoints":
            return keypoint_vector(selected)
        return keypoint_heatmaps(selected, size, config.heatmap_sigma)
    if representation == "part_segmentation":
        raise InputUnavailableError(
            "the regressor takes part_segmentation inputs (one-hot maps of the 24 body "
            "parts); they cannot be made from a photo yet: that needs a body-part segmenter, "
            "which spin-hmr does not have. Use a checkpoint trained on rgb, keypoints or "
            "keypoint_heatmaps inputs (spin-eval takes such a checkpoint on a dataset with "
            "part maps: --part-maps FOLDER)"
        )
    raise InputUnavailableError(
        f"the regressor takes {representation} inputs, which spin.predict cannot make from a "
        f"photo yet (it makes {', '.join(FROM_IMAGE + FROM_KEYPOINTS)})"
    )


def crop_box(box: Sequence[float]) -> tuple[np.ndarray, float]:
    """``(x0, y0, x1, y1)`` pixels -> the square crop about its centre: ``(2,)`` centre and
    the side, its longer side (SPIN's demo)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"expected a box (x0, y0, x1, y1) with x1 > x0 and y1 > y0, got {box}")
    return np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0]), max(x1 - x0, y1 - y0)
