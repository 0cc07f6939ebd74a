"""What the network sees: the RGB crop, or an intermediate representation of the person.

Neural Body Fitting (Omran et al., 3DV 2018) regresses SMPL from a body-part segmentation
instead of the image; keypoint heatmaps are the other usual intermediate representation.
Either removes appearance (clothing, lighting, background) from the input, so that a
regressor trained on synthetic people can transfer to real images given a good enough
segmenter or keypoint detector. Three representations (``DataConfig.input_representation``):

``rgb`` (default)
    ``(3, S, S)`` ImageNet-normalised crop.
``part_segmentation``
    ``(25, S, S)`` one-hot part map: channel 0 the background, channel ``p + 1`` SMPL part
    ``p`` (:mod:`spin.render.part_maps`). One-hot (rather than a label image) because the
    labels are categories, not intensities; it is NBF's input with SMPL's 24 parts. The
    part map is cropped with the image's crop transform, nearest-neighbour (labels never
    blend), and a horizontal flip also swaps the left and right parts' labels, so a
    flipped crop shows a mirrored person with correct sides. Synthetic data has the
    renderer's exact part maps (``out_dir/parts``); real images need a segmentation
    folder (:func:`part_map_path` says where each map is looked up).
``keypoint_heatmaps``
    ``(25, S, S)`` Gaussian heatmaps of the OpenPose BODY_25 keypoints, drawn on the
    augmented keypoints, peak = keypoint confidence (clipped to [0, 1]), sigma
    ``heatmap_sigma`` times the crop side. In the wild these keypoints would come from a
    detector, so a sample's OpenPose block (detector-like) is used whenever it has a
    keypoint with confidence > 0; otherwise its ground-truth block, placed in the BODY_25
    channels of the points both conventions share (nose, eyes, ears, shoulders, elbows,
    wrists, knees, ankles). Keypoints with none of OpenPose's neck, mid-hip and hips
    (MediaPipe's, COCO's, a ground-truth block) get them made from the dataset hips and
    the shoulders (:func:`complete_openpose_torso`); the feet channels of a ground-truth
    block stay empty.
``keypoints``
    ``(75, 1, 1)``: the same 25 keypoints as a vector, ``(x, y, seen)`` each in normalised
    crop coordinates (clipped to ``[-3, 3]``; an unseen keypoint is ``(0, 0, 0)``), for a
    vector encoder (``hmr.backbone.name=mlp``). The cheapest input: no pixels at all.

The one-hot and heatmap inputs are floats like the image: at 224 px one item is 5 MB.
The backbone's first layer takes :func:`input_channels` channels (the trainer sets
``hmr.backbone.in_channels``; pretrained RGB filters are adapted by
:func:`spin.regressor.backbones.adapt_first_conv`).
"""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from spin.body.joint_conventions import OPENPOSE_25, SMPL_24, flip_permutation
from spin.data.augment import SPIN_GT_24, crop_normalized_to_pixels
from spin.render.part_maps import NUM_PARTS, part_map_to_rgb

__all__ = [
    "HEATMAP_SIGMA",
    "INPUT_REPRESENTATIONS",
    "InputRepresentation",
    "flip_part_labels",
    "complete_openpose_torso",
    "heatmap_keypoints",
    "input_channels",
    "input_to_rgb",
    "keypoint_heatmaps",
    "keypoint_vector",
    "part_map_one_hot",
    "part_map_path",
    "read_part_map",
    "warp_part_map",
]

InputRepresentation = Literal["rgb", "part_segmentation", "keypoint_heatmaps", "keypoints"]
INPUT_REPRESENTATIONS: tuple[str, ...] = (
    "rgb",
    "part_segmentation",
    "keypoint_heatmaps",
    "keypoints",
)

NUM_OPENPOSE = OPENPOSE_25.num_joints
NUM_LABELS = NUM_PARTS + 1
"""Part-map labels: the background and SMPL's 24 parts."""

HEATMAP_SIGMA = 0.025
"""Default heatmap Gaussian standard deviation as a fraction of the crop side (5.6 px at
224 px, 1.6 px at 64 px)."""

HEATMAP_FLOOR = 1e-4
"""Heatmap values below this are zero (the Gaussian is cut beyond ~4.3 standard deviations)."""

KEYPOINT_VALUES = 3
"""Numbers per keypoint in the ``keypoints`` vector: x, y and whether it is seen."""

KEYPOINT_RANGE = 3.0
"""``keypoints`` coordinates are clipped to [-3, 3] crop units (the crop spans [-1, 1])."""

_CHANNELS = {
    "rgb": 3,
    "part_segmentation": NUM_LABELS,
    "keypoint_heatmaps": NUM_OPENPOSE,
    "keypoints": KEYPOINT_VALUES * NUM_OPENPOSE,
}

# Label permutation of a horizontal flip: label p + 1 <-> label flip(p) + 1, background 0.
_PART_LABEL_FLIP = np.array([0] + [p + 1 for p in flip_permutation(SMPL_24)], dtype=np.uint8)

# BODY_25 channel <- ground-truth joint, for the points both conventions denote.
_GT_POSITION = {point: i for i, point in enumerate(SPIN_GT_24.points)}
_HEATMAP_FROM_GT = [
    (channel, _GT_POSITION[point])
    for channel, point in enumerate(OPENPOSE_25.points)
    if point in _GT_POSITION
]

PART_MAP_SUFFIX = ".png"

# BODY_25 torso points that detectors of other conventions (MediaPipe, COCO) lack, and the
# SPIN-49 rows they are completed from (:func:`complete_openpose_torso`).
_OP = {point: i for i, point in enumerate(OPENPOSE_25.points)}
_OP_NECK, _OP_MID_HIP = _OP["op_neck"], _OP["op_mid_hip"]
_OP_HIPS = (_OP["op_right_hip"], _OP["op_left_hip"])
_OP_SHOULDERS = (_OP["right_shoulder"], _OP["left_shoulder"])
_DATASET_HIPS = (
    NUM_OPENPOSE + _GT_POSITION["dataset_right_hip"],
    NUM_OPENPOSE + _GT_POSITION["dataset_left_hip"],
)

NECK_ABOVE_SHOULDERS = 0.192
"""OpenPose's neck of the open body model sits this fraction of the torso (the image
vector from the hips' to the shoulders' midpoint) beyond the shoulders' midpoint: least
squares over 2,000 people of the synthetic body sampler (any heading, perspective
projection). The rest is 2.4% of the torso (median; 6% at p90), against 20% for the plain
midpoint. ``tests/data/test_representations.py`` recomputes it."""

MID_HIP_ABOVE_HIPS = 0.114
"""OpenPose's mid-hip sits this fraction of the torso above the hips' midpoint (same fit:
3.2% of the torso left, against 12.6% for the plain midpoint)."""


def input_channels(representation: str) -> int:
    """Channels of the network input for a representation (3, 25 or 25)."""
    try:
        return _CHANNELS[representation]
    except KeyError:
        raise ValueError(
            f"unknown input representation {representation!r}; expected one of "
            f"{list(INPUT_REPRESENTATIONS)}"
        ) from None


# --- part maps --------------------------------------------------------------------------------


def part_map_path(folder: str | Path, imgname: str) -> Path:
    """Where the part map of image ``imgname`` lives in a segmentation folder.

    Two layouts are accepted, tried in this order: the image folder's layout mirrored
    (``folder/<imgname with suffix .png>``, e.g. ``seg/courtyard/image_00000.png``), or
    flat by file stem (``folder/<stem>.png``: the synthetic generator's ``parts/``).
    Returns the first that exists, else the mirrored one (for the error message).
    """
    folder = Path(folder)
    mirrored = folder / Path(imgname).with_suffix(PART_MAP_SUFFIX)
    if mirrored.is_file():
        return mirrored
    flat = folder / (Path(imgname).stem + PART_MAP_SUFFIX)
    return flat if flat.is_file() else mirrored


def read_part_map(path: str | Path) -> np.ndarray:
    """A part-map image as ``(H, W)`` uint8 labels in [0, 24].

    Raises:
        ValueError: the file is not a single-channel label image with values in [0, 24]
            (e.g. a colour-coded visualisation).
        OSError: it cannot be read.
    """
    with Image.open(path) as image:
        labels = np.asarray(image)
    if labels.ndim != 2:
        raise ValueError(
            f"part map {path} has shape {labels.shape}; expected a single-channel image of "
            f"labels (0 background, 1..{NUM_PARTS} SMPL parts), not a colour rendering"
        )
    if labels.size and (labels.min() < 0 or labels.max() > NUM_PARTS):
        raise ValueError(
            f"part map {path} has labels up to {labels.max()}; expected 0..{NUM_PARTS}"
        )
    return labels.astype(np.uint8)


def flip_part_labels(part_map):
    """Swap left and right part labels (``(..., H, W)`` integer array or tensor); the
    pixels stay where they are (mirror the image separately)."""
    if isinstance(part_map, torch.Tensor):
        table = torch.as_tensor(_PART_LABEL_FLIP, device=part_map.device).long()
        return table[part_map.long()].to(part_map.dtype)
    return _PART_LABEL_FLIP[np.asarray(part_map)].astype(np.asarray(part_map).dtype)


def warp_part_map(
    part_map: np.ndarray, affine: np.ndarray, out_size: int, flip: bool
) -> np.ndarray:
    """Crop a part map like the image: nearest neighbour, background outside.

    Args:
        part_map: ``(H, W)`` uint8 labels.
        affine: ``(2, 3)`` map from original to crop pixels
            (:func:`~spin.data.augment.crop_transform`, with ``flip`` already in it).
        out_size: crop side in pixels.
        flip: whether ``affine`` mirrors; the left/right labels are then swapped too.

    Returns:
        ``(out_size, out_size)`` uint8 labels.
    """
    from spin.data.augment import invert_affine

    inverse = invert_affine(affine)  # crop pixels -> original pixels, as warp_image uses
    warped = Image.fromarray(np.ascontiguousarray(part_map, dtype=np.uint8), mode="L").transform(
        (int(out_size), int(out_size)),
        Image.Transform.AFFINE,
        data=tuple(inverse.ravel()),
        resample=Image.Resampling.NEAREST,
        fillcolor=0,
    )
    labels = np.asarray(warped)
    return flip_part_labels(labels) if flip else labels


def part_map_one_hot(labels: np.ndarray) -> torch.Tensor:
    """``(S, S)`` labels in [0, 24] -> ``(25, S, S)`` float32 one-hot."""
    labels = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
    return torch.nn.functional.one_hot(labels, NUM_LABELS).permute(2, 0, 1).float().contiguous()


# --- keypoint heatmaps ------------------------------------------------------------------------


def heatmap_keypoints(keypoints: np.ndarray) -> np.ndarray:
    """The BODY_25 keypoints a sample's heatmaps show (module docstring).

    Args:
        keypoints: ``(49, 3)`` SPIN-49 keypoints (any coordinates) + confidence.

    Returns:
        ``(25, 3)``: the OpenPose block if any of its confidences is > 0, else the
        ground-truth block's shared points in BODY_25 order (zeros elsewhere); then the
        torso points completed where all are missing (:func:`complete_openpose_torso`).
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.shape != (NUM_OPENPOSE + SPIN_GT_24.num_joints, 3):
        raise ValueError(f"expected SPIN-49 keypoints of shape (49, 3), got {keypoints.shape}")
    openpose = keypoints[:NUM_OPENPOSE]
    if (openpose[:, 2] > 0).any():
        selected = openpose.copy()
    else:
        selected = np.zeros((NUM_OPENPOSE, 3))
        for channel, gt in _HEATMAP_FROM_GT:
            selected[channel] = keypoints[NUM_OPENPOSE + gt]
    return complete_openpose_torso(selected, keypoints[list(_DATASET_HIPS)])


def complete_openpose_torso(openpose: np.ndarray, dataset_hips: np.ndarray) -> np.ndarray:
    """BODY_25 keypoints with the torso points a detector of another convention lacks.

    MediaPipe and COCO-style detectors give hips (the datasets' hip points) but no neck and
    no mid-hip, so a keypoint network trained on OpenPose-like keypoints would see its
    pelvis and neck missing on every photo, which training never shows it. When a sample
    has none of OpenPose's neck, mid-hip and hips, they are made: the hips are the
    dataset hips (for the open body model the two hip points agree to 0.3% of the box on
    the synthetic data), the mid-hip and neck from the hips' and shoulders' midpoints
    moved along the torso (:data:`MID_HIP_ABOVE_HIPS`, :data:`NECK_ABOVE_SHOULDERS`);
    each gets the smallest confidence of the points it is made from. A sample with any of
    the four is returned unchanged, so OpenPose-style keypoints are never altered.

    Args:
        openpose: ``(25, 3)`` BODY_25 keypoints, any coordinates, with confidence.
        dataset_hips: ``(2, 3)`` the right and left dataset hips, same coordinates.

    Returns:
        ``(25, 3)`` new array.
    """
    out = np.array(openpose, dtype=np.float64)
    torso = [_OP_NECK, _OP_MID_HIP, *_OP_HIPS]
    if (out[torso, 2] > 0).any():
        return out
    hips = np.asarray(dataset_hips, dtype=np.float64)
    for channel, hip in zip(_OP_HIPS, hips, strict=True):
        if hip[2] > 0:
            out[channel] = hip
    shoulders = out[list(_OP_SHOULDERS)]
    if (hips[:, 2] > 0).all() and (shoulders[:, 2] > 0).all():
        mid_hips, mid_shoulders = hips[:, :2].mean(axis=0), shoulders[:, :2].mean(axis=0)
        up = mid_shoulders - mid_hips
        confidence = min(hips[:, 2].min(), shoulders[:, 2].min())
        out[_OP_MID_HIP] = [*(mid_hips + MID_HIP_ABOVE_HIPS * up), confidence]
        out[_OP_NECK] = [*(mid_shoulders + NECK_ABOVE_SHOULDERS * up), confidence]
    return out


def keypoint_heatmaps(
    keypoints: np.ndarray, out_size: int, sigma: float = HEATMAP_SIGMA
) -> torch.Tensor:
    """Gaussian heatmaps of keypoints in normalised crop coordinates.

    Args:
        keypoints: ``(K, 3)`` x, y in ``[-1, 1]`` crop coordinates + confidence.
        out_size: crop side S in pixels.
        sigma: Gaussian standard deviation as a fraction of S.

    Returns:
        ``(K, S, S)`` float32; channel k peaks at keypoint k with value
        ``clip(confidence_k, 0, 1)`` (zero where the confidence is zero); values below
        :data:`HEATMAP_FLOOR` are set to zero.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.ndim != 2 or keypoints.shape[1] != 3:
        raise ValueError(f"expected keypoints of shape (K, 3), got {keypoints.shape}")
    if sigma <= 0:
        raise ValueError(f"heatmap sigma must be > 0 (a fraction of the crop), got {sigma}")
    pixels = crop_normalized_to_pixels(keypoints, out_size)
    centres = np.arange(out_size) + 0.5  # pixel i covers [i, i + 1)
    std = sigma * out_size
    gx = np.exp(-((centres[None, :] - pixels[:, :1]) ** 2) / (2 * std**2))  # (K, S)
    gy = np.exp(-((centres[None, :] - pixels[:, 1:2]) ** 2) / (2 * std**2))
    peak = np.clip(keypoints[:, 2], 0.0, 1.0)
    heatmaps = peak[:, None, None] * gy[:, :, None] * gx[:, None, :]
    # Cut the tails (beyond ~4.3 std): float32 denormals there make CPU convolutions
    # ~10x slower.
    heatmaps[heatmaps < HEATMAP_FLOOR] = 0.0
    return torch.from_numpy(heatmaps.astype(np.float32))


def keypoint_vector(keypoints: np.ndarray) -> torch.Tensor:
    """``(3K, 1, 1)`` float32 ``(x, y, seen)`` of keypoints ``(K, 3)`` in normalised crop
    coordinates (the ``keypoints`` representation)."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    seen = keypoints[:, 2:3] > 0
    coords = np.where(seen, np.clip(keypoints[:, :2], -KEYPOINT_RANGE, KEYPOINT_RANGE), 0.0)
    vector = np.concatenate([coords, seen.astype(np.float64)], axis=1).reshape(-1, 1, 1)
    return torch.from_numpy(vector.astype(np.float32))


# --- visualisation ----------------------------------------------------------------------------


def _heatmap_palette(num: int) -> np.ndarray:
    hues = (np.arange(num) * 0.618033988749895) % 1.0
    return np.array([colorsys.hsv_to_rgb(h, 0.8, 1.0) for h in hues])


KEYPOINT_PICTURE_SIZE = 192
"""Side of the picture :func:`input_to_rgb` draws a ``keypoints`` vector in."""


def _draw_keypoint_vector(vector: np.ndarray, size: int) -> np.ndarray:
    """The seen keypoints of a ``keypoints`` vector as coloured dots on black."""
    from PIL import ImageDraw

    points = vector.reshape(-1, KEYPOINT_VALUES)
    canvas = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(canvas)
    colours = (_heatmap_palette(len(points)) * 255).astype(int)
    radius = max(2, size // 64)
    for (x, y, seen), colour in zip(points, colours, strict=True):
        if seen > 0:
            u, v = (x + 1.0) * size / 2.0, (y + 1.0) * size / 2.0
            draw.ellipse([u - radius, v - radius, u + radius, v + radius], fill=tuple(colour))
    return np.asarray(canvas)


def input_to_rgb(img, representation: str) -> np.ndarray:
    """A network input as an ``(S, S, 3)`` uint8 picture: the crop itself, the coloured
    part map (:func:`spin.render.part_maps.part_map_to_rgb`), or each pixel's strongest
    heatmap in that keypoint's colour."""
    from spin.data.spin_dataset import denormalize_image

    if isinstance(img, torch.Tensor):
        img = img.detach().cpu().numpy()
    img = np.asarray(img, dtype=np.float32)
    channels = input_channels(representation)
    if representation == "keypoints":
        return _draw_keypoint_vector(img.reshape(-1), KEYPOINT_PICTURE_SIZE)
    if img.ndim != 3 or img.shape[0] != channels:
        raise ValueError(
            f"expected a {representation} input of shape ({channels}, S, S), got {img.shape}"
        )
    if representation == "rgb":
        return denormalize_image(img)
    if representation == "part_segmentation":
        return part_map_to_rgb(img.argmax(axis=0).astype(np.uint8))
    strongest = img.argmax(axis=0)
    value = np.clip(img.max(axis=0), 0.0, 1.0)
    rgb = _heatmap_palette(channels)[strongest] * value[..., None]
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
