"""Synthetic people: rendered bodies with exact ground truth, written in SPIN's ``.npz`` format.

Each sample is one person of the body model (betas ~ N(0, beta_std^2 I), a pose from
:func:`spin.body.pose_sampler.sample_poses`, a random orientation) seen by a full-frame
pinhole camera with a realistic focal length, at a distance where the person fills
40-95% of the image (some partly outside it), in flat "clothing" colours under jittered
lights, over a procedural or user-supplied background. What gets written
(``generate_synthetic(config, num, out_dir, split)``)::

    out_dir/images/<split>_<index:06d>.jpg   the images (JPEG)
    out_dir/parts/<split>_<index:06d>.png    part maps (0 background, 1..24 SMPL parts;
                                             see spin.render.part_maps), if asked for
    out_dir/<split>.npz                      the annotations (spin.data.formats)
    out_dir/<split>_config.json              the config and seed that made them, the
                                             rate, and any redrawn placements or
                                             unreadable background images

Annotations per sample (N samples; the format of :mod:`spin.data.formats`):

- ``imgname`` relative to ``out_dir``; ``image_size`` (width, height).
- ``center``, ``scale``: the box around the visible body (its rendered pixels),
  enlarged ``box_enlarge`` times and jittered; ``scale`` = box side / 200.
- ``part`` (24, 3): exact projections of SPIN's 24 ground-truth joints
  (``joints_spin[:, 25:]``), visibility 1 where inside the image. Coordinates are kept
  for joints outside the image.
- ``openpose`` (25, 3): detector-like BODY_25 keypoints: Gaussian noise proportional
  to the person's size, confidences in [0, 1], random drops, joints hidden behind the
  body given low confidence or dropped, joints outside the image dropped. A dropped
  joint is (0, 0, 0).
- ``intrinsics`` (3, 3) for every sample.
- 3D samples (a ``fraction_3d`` of them): ``S`` (24, 4) camera-frame joints in metres
  with confidence 1; ``pose`` (72) with the global orientation in the camera frame,
  ``shape`` (10), ``transl`` (3) such that
  ``model(pose_rotvecs=pose, betas=shape, transl=transl)`` is the rendered body;
  ``has_smpl`` 1. The other samples are 2D-only, like in-the-wild data: those arrays
  are zeros and ``has_smpl`` is 0. Which samples keep 3D does not change anything
  else, so the same seed with ``fraction_3d=1`` recovers every sample's ground truth.

Determinism: sample ``i`` of a split draws everything from its own generator seeded
by ``(split seed, i)``, with split seed ``seed`` for "train" and ``seed +
TEST_SEED_OFFSET`` for "test"; the same config gives identical arrays and image
bytes on the same machine.
"""

from __future__ import annotations

import colorsys
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from spin.body import BodyModel, load_body_model
from spin.body.joint_conventions import flip_permutation
from spin.body.pose_sampler import sample_poses
from spin.data.formats import BOX_UNIT, load_spin_npz, save_spin_npz
from spin.render.figures import grid_image
from spin.render.mesh_renderer import LIGHTS, MeshRenderer
from spin.render.part_maps import face_part_labels, vertex_part_labels

__all__ = [
    "BACKGROUND_KINDS",
    "SPLITS",
    "TEST_SEED_OFFSET",
    "BodyTemplate",
    "SyntheticConfig",
    "body_template",
    "contact_sheet",
    "detector_keypoints",
    "generate_synthetic",
    "has_3d_flags",
    "hidden_parameters",
    "image_background",
    "joint_occlusion",
    "list_background_images",
    "procedural_background",
    "split_seed",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
TEST_SEED_OFFSET = 1_000_003
"""The test split's seed is the config's seed plus this (a prime), so the splits differ."""
# Stream of the generator that places the 3D samples (independent of the samples' own).
_HAS_3D_STREAM = 3

NUM_BETAS = 10
NUM_OPENPOSE = 25
NUM_GT_JOINTS = 24
SENSOR_WIDTH_MM = 36.0
"""Focal lengths are 35 mm-equivalent: ``f_px = f_mm / SENSOR_WIDTH_MM * width``."""
# SMPL's frame (y up, z front) to the camera's (y down, z forward): upright, facing it.
SMPL_TO_CAMERA = np.diag([1.0, -1.0, -1.0])
# Placement: refinement steps of the distance / image position, and the nearest
# distance (metres) any vertex may have from the camera.
PLACEMENT_ITERATIONS = 3
MIN_VERTEX_DEPTH_M = 0.3
# Borders a truncated person sticks out of, with their probabilities (legs cut off
# at the bottom is the most common case in photos).
TRUNCATION_SIDES = ("bottom", "left", "right", "top")
TRUNCATION_SIDE_PROBS = (0.5, 0.2, 0.2, 0.1)
# A sample whose body covers fewer pixels than this is redrawn (counted).
MIN_BODY_PIXELS = 50
MAX_PLACEMENT_TRIES = 5
# Occlusion test: keypoints closer than this to the surface are surface points (eyes,
# ears, toes, heels): any surface in front of them hides them. Interior joints are not
# hidden by the parts within this distance of their nearest surface (their own limb).
SURFACE_KEYPOINT_M = 0.015
OWN_PARTS_RADIUS_M = 0.04

BACKGROUND_KINDS = ("gradient", "clouds", "stripes", "checker", "rectangles", "room")
# Texture parameters (ranges sampled uniformly). Periods are fractions of the image's
# longer side, the horizon of a "room" a fraction of its height from the top; value
# noise starts from a grid of NOISE_CELLS cells and doubles it per octave.
STRIPE_PERIOD = (0.03, 0.3)
CHECKER_PERIOD = (0.04, 0.25)
ROOM_HORIZON = (0.3, 0.8)
NOISE_CELLS = (2, 7)
NOISE_OCTAVES = (3, 6)
NUM_SHAPES = (4, 30)
ELLIPSE_PROB = 0.3
BACKGROUND_VALUE = (0.1, 1.0)

# SMPL parts (joint indices) by what they are covered with in "clothing" colouring.
# Each part is named by the joint that moves it: the knee's part is the shin, the
# ankle's the foot, the foot's the toes, the elbow's the forearm, the wrist's the hand.
_TORSO = (3, 6, 9, 13, 14)
_UPPER_ARMS = (16, 17)
_FOREARMS = (18, 19)
_HIPS = (0, 1, 2)
_SHINS = (4, 5)
_FEET = (7, 8, 10, 11)
_NECK_HEAD_HANDS = (12, 15, 20, 21, 22, 23)
_HEAD = 15
_OP_EYES = (15, 16)  # REye, LEye in OpenPose BODY_25
# Hair: head vertices (rest pose, SMPL frame) this far above the eyes, or this far
# behind them and above the given height below them.
HAIR_ABOVE_EYES_M = 0.03
HAIR_BEHIND_EYES_M = 0.07
HAIR_BACK_BELOW_EYES_M = 0.07
EYE_RADIUS_M = 0.011

# Vertex groups of a BodyTemplate.
SKIN, SHIRT, SLEEVE, PANTS, PANT_LEG, SHOES, HAIR, EYES = range(8)

SKIN_TONES = (
    (0.96, 0.80, 0.69),
    (0.93, 0.74, 0.62),
    (0.87, 0.67, 0.52),
    (0.78, 0.57, 0.42),
    (0.66, 0.46, 0.32),
    (0.52, 0.35, 0.24),
    (0.38, 0.25, 0.17),
)
HAIR_COLORS = (
    (0.08, 0.06, 0.05),
    (0.20, 0.13, 0.08),
    (0.38, 0.25, 0.14),
    (0.72, 0.58, 0.36),
    (0.55, 0.22, 0.10),
    (0.60, 0.60, 0.60),
)
EYE_COLOR = (0.08, 0.07, 0.07)
SKIN_JITTER = 0.03
HAIR_PROB = 0.85
LONG_SLEEVE_PROB = 0.5
LONG_PANTS_PROB = 0.7
# Clothing colours: HSV ranges.
CLOTH_SATURATION = (0.05, 0.8)
CLOTH_VALUE = (0.12, 0.95)
SHOE_VALUE = (0.05, 0.5)

# Detector-like confidences.
VISIBLE_CONFIDENCE = (0.6, 1.0)
OCCLUDED_CONFIDENCE = (0.1, 0.5)

# Contact sheet drawing.
SHEET_BOX_RGB = (255, 220, 0)
SHEET_POINT_FRACTION = 0.012


@dataclass(frozen=True)
class SyntheticConfig:
    """How synthetic people are made. Every range is (low, high), sampled uniformly
    unless said otherwise.

    Attributes:
        image_size: (width, height) of the full-frame images in pixels.
        body_model: name or path for :func:`spin.body.load_body_model` ("open",
            "open-lite", "smpl", a file or folder); it needs SPIN's 49 joints.
        beta_std: standard deviation of the betas (N(0, beta_std^2) each); > 1 widens
            the range of shapes.
        pose_source: "sampler" (:func:`spin.body.pose_sampler.sample_poses`) or "rest"
            (the rest pose, for debugging).
        yaw_range_deg: the body turns about its vertical axis by U(-yaw, +yaw)
            degrees (180: every direction; 0 faces the camera).
        pitch_std_deg, pitch_max_deg: camera elevation, N(0, std) clipped to +-max.
        roll_std_deg, roll_max_deg: camera roll, N(0, std) clipped to +-max.
        focal_length_mm: 35 mm-equivalent focal lengths, log-uniform;
            ``f_px = f_mm / 36 * width``; the principal point is the image centre.
        person_size: the person's projected bounding box, as its longer side over the
            image's (its width over the width or height over the height); the camera
            distance follows from it.
        truncation_prob: fraction of samples placed partly outside the frame.
        truncation_fraction: for those, fraction of the person's box outside it.
        box_enlarge: stored box side over the longer side of the visible body's box.
        box_scale_jitter: relative standard deviation of the stored box side.
        box_center_jitter: standard deviation of the stored box centre, as a fraction
            of the box side.
        per_part_color_prob: fraction of people coloured with one random colour per
            part instead of clothing (skin, hair, shirt, trousers, shoes).
        vertex_color_noise: relative per-vertex colour noise (texture).
        light_intensity_scale: factor on every light's intensity.
        light_direction_jitter_deg: largest rotation of the lights' directions.
        background_dir: optional folder of images (searched recursively); random crops
            of them are used as backgrounds for ``background_image_prob`` of the samples.
        background_image_prob: see ``background_dir``; ignored without it.
        background_blur_max_px: backgrounds are blurred by a radius in [0, this].
        image_noise_std_max: per-pixel Gaussian noise, std in [0, this] grey levels.
        fraction_3d: fraction of samples keeping 3D/SMPL ground truth (``S`` conf 1,
            ``has_smpl`` 1); the rest are 2D-only. Spread evenly over the indices.
        keypoint_noise: std of the OpenPose keypoints' noise as a fraction of the
            visible body's box side (0.02: 2 px for a 100 px person).
        keypoint_drop_prob: probability that a visible keypoint is missed.
        occluded_drop_prob: probability that a keypoint hidden behind the body is
            missed; the others get low confidence and ``occluded_noise_scale`` times
            the noise.
        occluded_noise_scale: see ``occluded_drop_prob``.
        keypoint_outlier_prob: probability that a kept keypoint is a gross error, moved by
            :data:`OUTLIER_DISTANCE` times the body's box side in a random direction
            (MediaPipe on the synthetic renders: 3.3% of points off by more than 20% of the
            box). 0 by default: the rendered splits do not draw it.
        keypoint_swap_prob: probability that a left/right pair (shoulders, elbows, ...)
            is swapped, as detectors do (MediaPipe on the renders: 5.7% of limb pairs).
        occlusion_margin_m: a surface must be this far in front of a joint (beyond the
            joint's own depth under its skin) to hide it.
        jpeg_quality: JPEG quality of the images.
        write_part_maps: also write the part maps as PNGs under ``out_dir/parts/``.
        batch_size: bodies per body-model forward pass (does not change the output).
        seed: seed of the train split; the test split uses ``seed + TEST_SEED_OFFSET``.
    """

    image_size: tuple[int, int] = (256, 256)
    body_model: str = "open"
    beta_std: float = 1.0
    pose_source: str = "sampler"
    yaw_range_deg: float = 180.0
    pitch_std_deg: float = 10.0
    pitch_max_deg: float = 25.0
    roll_std_deg: float = 4.0
    roll_max_deg: float = 12.0
    focal_length_mm: tuple[float, float] = (24.0, 85.0)
    person_size: tuple[float, float] = (0.4, 0.95)
    truncation_prob: float = 0.15
    truncation_fraction: tuple[float, float] = (0.1, 0.4)
    box_enlarge: float = 1.2
    box_scale_jitter: float = 0.05
    box_center_jitter: float = 0.03
    per_part_color_prob: float = 0.1
    vertex_color_noise: float = 0.04
    light_intensity_scale: tuple[float, float] = (0.6, 1.4)
    light_direction_jitter_deg: float = 35.0
    background_dir: str | None = None
    background_image_prob: float = 0.5
    background_blur_max_px: float = 1.5
    image_noise_std_max: float = 3.0
    fraction_3d: float = 0.5
    keypoint_noise: float = 0.02
    keypoint_drop_prob: float = 0.05
    occluded_drop_prob: float = 0.5
    occluded_noise_scale: float = 2.0
    keypoint_outlier_prob: float = 0.0
    keypoint_swap_prob: float = 0.0
    occlusion_margin_m: float = 0.05
    jpeg_quality: int = 90
    write_part_maps: bool = True
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        width, height = self.image_size
        if min(width, height) < 32:
            problems.append(f"image_size must be at least 32 x 32, got {self.image_size}")
        for name in ("focal_length_mm", "person_size", "truncation_fraction"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                problems.append(f"{name} must be a range 0 < low <= high, got {(low, high)}")
        low, high = self.light_intensity_scale
        if not 0 <= low <= high:
            problems.append(f"light_intensity_scale must be 0 <= low <= high, got {(low, high)}")
        if self.person_size[1] > 1.0:
            problems.append(f"person_size must be at most 1 (whole frame), got {self.person_size}")
        for name in (
            "truncation_prob",
            "per_part_color_prob",
            "background_image_prob",
            "fraction_3d",
            "keypoint_drop_prob",
            "occluded_drop_prob",
            "keypoint_outlier_prob",
            "keypoint_swap_prob",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                problems.append(f"{name} must be a probability in [0, 1], got {value}")
        if self.truncation_fraction[1] >= 0.9:
            problems.append("truncation_fraction must stay below 0.9 (the person must show)")
        if self.beta_std < 0 or self.keypoint_noise < 0 or self.box_enlarge < 1:
            problems.append("beta_std and keypoint_noise must be >= 0 and box_enlarge >= 1")
        if self.pose_source not in ("sampler", "rest"):
            problems.append(f'pose_source must be "sampler" or "rest", got {self.pose_source!r}')
        if not 1 <= self.jpeg_quality <= 100 or self.batch_size < 1:
            problems.append("jpeg_quality must be in [1, 100] and batch_size >= 1")
        if problems:
            raise ValueError("invalid SyntheticConfig: " + "; ".join(problems))


def split_seed(seed: int, split: str) -> int:
    """Seed of a split: ``seed`` for "train", ``seed + TEST_SEED_OFFSET`` for "test"."""
    if split not in SPLITS:
        raise ValueError(f"expected split in {SPLITS}, got {split!r}")
    return seed if split == "train" else seed + TEST_SEED_OFFSET


def has_3d_flags(fraction: float, count: int, offset: float) -> np.ndarray:
    """Which of samples 0..count-1 keep 3D ground truth, spread evenly.

    Sample ``i`` does iff ``floor((i + 1) f + offset) > floor(i f + offset)``, so any
    ``n`` consecutive samples hold ``n f`` 3D samples up to one, and a sample's flag
    does not depend on ``count``.

    Args:
        fraction: f in [0, 1].
        count: number of samples.
        offset: phase in [0, 1) (random per split).

    Returns:
        (count,) bool.
    """
    index = np.arange(count, dtype=np.float64)
    return np.floor((index + 1) * fraction + offset) > np.floor(index * fraction + offset)


@dataclass(frozen=True)
class BodyTemplate:
    """What a body model's topology fixes for rendering synthetic people.

    Attributes:
        faces: (F, 3) vertex indices.
        vertex_parts: (V,) SMPL part (0..23) of each vertex.
        face_parts: (F,) SMPL part of each face.
        vertex_groups: (V,) clothing group (SKIN, SHIRT, ... EYES) of each vertex.
    """

    faces: np.ndarray
    vertex_parts: np.ndarray
    face_parts: np.ndarray
    vertex_groups: np.ndarray


def body_template(model: BodyModel) -> BodyTemplate:
    """Part labels and clothing groups of ``model``'s vertices (from its rest shape)."""
    vertex_parts = vertex_part_labels(model.data.lbs_weights)
    groups = np.full(len(vertex_parts), SKIN, dtype=np.int64)
    for parts, group in (
        (_TORSO, SHIRT),
        (_UPPER_ARMS, SHIRT),
        (_FOREARMS, SLEEVE),
        (_HIPS, PANTS),
        (_SHINS, PANT_LEG),
        (_FEET, SHOES),
    ):
        groups[np.isin(vertex_parts, parts)] = group

    with torch.no_grad():
        rest = model(pose_rotvecs=torch.zeros(1, 72, dtype=model.v_template.dtype))
    rest_vertices = rest.vertices[0].double().numpy()
    eyes = rest.require_joints_spin()[0, list(_OP_EYES)].double().numpy()
    eye_y, eye_z = eyes[:, 1].mean(), eyes[:, 2].mean()
    y, z = rest_vertices[:, 1], rest_vertices[:, 2]
    hair = (vertex_parts == _HEAD) & (
        (y > eye_y + HAIR_ABOVE_EYES_M)
        | ((z < eye_z - HAIR_BEHIND_EYES_M) & (y > eye_y - HAIR_BACK_BELOW_EYES_M))
    )
    groups[hair] = HAIR
    for eye in eyes:
        groups[np.linalg.norm(rest_vertices - eye, axis=1) < EYE_RADIUS_M] = EYES
    faces = np.asarray(model.faces)
    return BodyTemplate(
        faces=faces,
        vertex_parts=vertex_parts,
        face_parts=face_part_labels(faces, vertex_parts),
        vertex_groups=groups,
    )


# --- Sampling a person and a camera ------------------------------------------------------


def _sample_global_orientation(rng: np.random.Generator, config: SyntheticConfig) -> Rotation:
    """Camera-frame orientation: a turn about the body's vertical axis, then upright
    facing the camera, then camera elevation (about x) and roll (about z)."""
    yaw = rng.uniform(-config.yaw_range_deg, config.yaw_range_deg)
    pitch = np.clip(
        rng.normal(0.0, config.pitch_std_deg), -config.pitch_max_deg, config.pitch_max_deg
    )
    roll = np.clip(rng.normal(0.0, config.roll_std_deg), -config.roll_max_deg, config.roll_max_deg)
    camera_tilt = Rotation.from_euler("zx", [roll, pitch], degrees=True)
    return (
        camera_tilt
        * Rotation.from_matrix(SMPL_TO_CAMERA)
        * Rotation.from_euler("y", yaw, degrees=True)
    )


def _sample_pose(rng: np.random.Generator, config: SyntheticConfig) -> np.ndarray:
    """(72,) SMPL pose: the sampler's body pose under a random camera-frame orientation."""
    if config.pose_source == "rest":
        pose = np.zeros(72)
    else:
        pose = np.asarray(sample_poses(1, rng), dtype=np.float64).reshape(72)
    orientation = _sample_global_orientation(rng, config) * Rotation.from_rotvec(pose[:3])
    pose[:3] = orientation.as_rotvec()
    return pose


def _intrinsics(focal_px: float, image_size: tuple[int, int]) -> np.ndarray:
    width, height = image_size
    return np.array([[focal_px, 0.0, width / 2.0], [0.0, focal_px, height / 2.0], [0.0, 0.0, 1.0]])


def _project(points: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """(N, 2) pixels of camera-frame points (N, 3) (as spin.geometry.perspective_projection)."""
    normalised = points[:, :2] / points[:, 2:]
    return normalised * np.diag(intrinsics)[:2] + intrinsics[:2, 2]


def _place_body(
    rng: np.random.Generator,
    vertices: np.ndarray,
    intrinsics: np.ndarray,
    config: SyntheticConfig,
) -> np.ndarray:
    """Translation (3,) that puts the body (V, 3), oriented in the camera frame, in view:
    its projected box a ``person_size`` fraction of the image, at a random position,
    partly outside the frame for a ``truncation_prob`` fraction of samples."""
    width, height = config.image_size
    focal = intrinsics[0, 0]
    size_fraction = rng.uniform(*config.person_size)
    truncated = rng.random() < config.truncation_prob
    side = rng.choice(len(TRUNCATION_SIDES), p=TRUNCATION_SIDE_PROBS)
    outside = rng.uniform(*config.truncation_fraction)
    position = rng.random(2)

    low, high = vertices.min(axis=0), vertices.max(axis=0)
    centre = 0.5 * (low + high)
    extent = high - low
    depth = focal * max(extent[0] / width, extent[1] / height) / size_fraction
    transl = np.array([0.0, 0.0, depth]) - centre
    for _ in range(PLACEMENT_ITERATIONS):
        transl[2] = max(transl[2], MIN_VERTEX_DEPTH_M - low[2])
        uv = _project(vertices + transl, intrinsics)
        box_size = uv.max(axis=0) - uv.min(axis=0)
        fraction = max(box_size[0] / width, box_size[1] / height)
        # The box shrinks about in proportion to the distance of the body's centre.
        transl[2] = (centre[2] + transl[2]) * fraction / size_fraction - centre[2]
    transl[2] = max(transl[2], MIN_VERTEX_DEPTH_M - low[2])

    uv = _project(vertices + transl, intrinsics)
    box_size = uv.max(axis=0) - uv.min(axis=0)
    image = np.array([width, height], dtype=np.float64)
    # Box centre with the box inside the frame (centred where it does not fit).
    room = image - box_size
    target = np.where(room >= 0, box_size / 2.0 + position * room, image / 2.0)
    if truncated:
        axis = 1 if TRUNCATION_SIDES[side] in ("top", "bottom") else 0
        if TRUNCATION_SIDES[side] in ("left", "top"):
            target[axis] = box_size[axis] / 2.0 - outside * box_size[axis]
        else:
            target[axis] = image[axis] - box_size[axis] / 2.0 + outside * box_size[axis]
    for _ in range(PLACEMENT_ITERATIONS):
        uv = _project(vertices + transl, intrinsics)
        current = 0.5 * (uv.min(axis=0) + uv.max(axis=0))
        transl[:2] += (target - current) * (centre[2] + transl[2]) / focal
    return transl


def _random_color(rng: np.random.Generator, value_range=CLOTH_VALUE) -> np.ndarray:
    hue = rng.random()
    saturation = rng.uniform(*CLOTH_SATURATION)
    value = rng.uniform(*value_range)
    return np.array(colorsys.hsv_to_rgb(hue, saturation, value))


def _sample_vertex_colors(
    rng: np.random.Generator, template: BodyTemplate, config: SyntheticConfig
) -> np.ndarray:
    """(V, 3) colours in [0, 1]: clothing (skin, hair, shirt, trousers, shoes) or, for a
    ``per_part_color_prob`` fraction, one random colour per part; plus texture noise."""
    num_vertices = len(template.vertex_groups)
    if rng.random() < config.per_part_color_prob:
        part_colors = np.stack([_random_color(rng) for _ in range(24)])
        colors = part_colors[template.vertex_parts]
    else:
        skin = np.asarray(SKIN_TONES[rng.integers(len(SKIN_TONES))])
        skin = skin + rng.uniform(-SKIN_JITTER, SKIN_JITTER, 3)
        shirt = _random_color(rng)
        pants = _random_color(rng)
        group_colors = np.empty((8, 3))
        group_colors[SKIN] = skin
        group_colors[SHIRT] = shirt
        group_colors[SLEEVE] = shirt if rng.random() < LONG_SLEEVE_PROB else skin
        group_colors[PANTS] = pants
        group_colors[PANT_LEG] = pants if rng.random() < LONG_PANTS_PROB else skin
        group_colors[SHOES] = _random_color(rng, SHOE_VALUE)
        has_hair = rng.random() < HAIR_PROB
        group_colors[HAIR] = HAIR_COLORS[rng.integers(len(HAIR_COLORS))] if has_hair else skin
        group_colors[EYES] = EYE_COLOR
        colors = group_colors[template.vertex_groups]
    noise = 1.0 + config.vertex_color_noise * rng.standard_normal((num_vertices, 1))
    return np.clip(colors * noise, 0.0, 1.0)


def _sample_lights(rng: np.random.Generator, config: SyntheticConfig) -> list:
    """The renderer's default lights, turned together by a random rotation of at most
    ``light_direction_jitter_deg``, mirrored left-right half of the time, each scaled."""
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(0.0, config.light_direction_jitter_deg))
    turn = Rotation.from_rotvec(angle * axis).as_matrix()
    mirror = np.diag([-1.0 if rng.random() < 0.5 else 1.0, 1.0, 1.0])
    lights = []
    for direction, intensity in LIGHTS:
        scale = rng.uniform(*config.light_intensity_scale)
        lights.append((turn @ mirror @ np.asarray(direction), intensity * scale))
    return lights


# --- Backgrounds -----------------------------------------------------------------------------


def procedural_background(rng: np.random.Generator, image_size: Sequence[int]) -> np.ndarray:
    """A random textured background (H, W, 3) uint8 of one of :data:`BACKGROUND_KINDS`:
    smooth gradients, value-noise clouds, stripes, checkerboards, random rectangles and
    ellipses, or a "room" (a wall over a floor, each one of the others)."""
    width, height = int(image_size[0]), int(image_size[1])
    kind = BACKGROUND_KINDS[rng.integers(len(BACKGROUND_KINDS))]
    if kind == "room":
        horizon = int(rng.uniform(*ROOM_HORIZON) * height)
        wall = _texture(rng, rng.choice(["gradient", "clouds", "stripes"]), width, height)
        floor = _texture(rng, rng.choice(["clouds", "checker", "gradient"]), width, height)
        image = np.concatenate([wall[:horizon], floor[horizon:]], axis=0)
    else:
        image = _texture(rng, kind, width, height)
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _texture(rng: np.random.Generator, kind: str, width: int, height: int) -> np.ndarray:
    """(H, W, 3) float image in [0, 1]."""
    if kind == "rectangles":
        return _rectangles(rng, width, height)
    colors = np.stack([_random_color(rng, BACKGROUND_VALUE) for _ in range(3)])
    if kind == "gradient":
        t = _ramp(rng, width, height)
        t = (t - t.min()) / max(np.ptp(t), 1e-9)
        mid = rng.uniform(0.3, 0.7)
        first = np.clip(t / mid, 0, 1)[..., None]
        second = np.clip((t - mid) / (1 - mid), 0, 1)[..., None]
        image = colors[0] * (1 - first) + colors[1] * first
        return image * (1 - second) + colors[2] * second
    if kind == "clouds":
        t = _value_noise(rng, width, height)
        return colors[0] * (1 - t[..., None]) + colors[1] * t[..., None]
    if kind == "stripes":
        period = rng.uniform(*STRIPE_PERIOD) * max(width, height)
        phase = 2 * np.pi * _ramp(rng, width, height) / period
        wave = 0.5 + 0.5 * np.sin(phase)
        if rng.random() < 0.5:
            wave = (wave > 0.5).astype(np.float64)
        return colors[0] * (1 - wave[..., None]) + colors[1] * wave[..., None]
    if kind == "checker":
        period = rng.uniform(*CHECKER_PERIOD) * max(width, height)
        angle = rng.uniform(0, np.pi)
        rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
        u = cols * np.cos(angle) + rows * np.sin(angle)
        v = -cols * np.sin(angle) + rows * np.cos(angle)
        cells = (np.floor(u / period) + np.floor(v / period)) % 2
        return colors[0] * (1 - cells[..., None]) + colors[1] * cells[..., None]
    raise ValueError(f"unknown texture kind {kind!r}")


def _ramp(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """(H, W) pixel coordinate along a random direction."""
    angle = rng.uniform(0, 2 * np.pi)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    return cols * np.cos(angle) + rows * np.sin(angle)


def _value_noise(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """(H, W) fractal value noise in [0, 1]: octaves of bilinearly upsampled random grids."""
    cells = int(rng.integers(*NOISE_CELLS))
    octaves = int(rng.integers(*NOISE_OCTAVES))
    total = np.zeros((height, width))
    amplitude = 1.0
    for _ in range(octaves):
        grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
        layer = Image.fromarray(grid).resize((width, height), Image.BILINEAR)
        total += amplitude * np.asarray(layer, dtype=np.float64)
        amplitude *= 0.5
        cells *= 2
    return (total - total.min()) / max(np.ptp(total), 1e-9)


def _rectangles(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Random overlapping rectangles and ellipses over a plain colour (an indoor clutter)."""
    base = tuple(int(255 * c) for c in _random_color(rng, BACKGROUND_VALUE))
    canvas = Image.new("RGB", (width, height), base)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(*NUM_SHAPES))):
        x0, x1 = np.sort(rng.uniform(-0.2, 1.2, 2)) * width
        y0, y1 = np.sort(rng.uniform(-0.2, 1.2, 2)) * height
        color = tuple(int(255 * c) for c in _random_color(rng, BACKGROUND_VALUE))
        shape = draw.ellipse if rng.random() < ELLIPSE_PROB else draw.rectangle
        shape((x0, y0, x1, y1), fill=color)
    return np.asarray(canvas, dtype=np.float64) / 255.0


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Background crops: side as a fraction of the source image's largest crop of the
# output's aspect ratio.
CROP_FRACTION = (0.4, 1.0)


def list_background_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted; error if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"background_dir {folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(
            f"background_dir {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})"
        )
    return files


def image_background(
    rng: np.random.Generator, path: str | Path, image_size: Sequence[int]
) -> np.ndarray:
    """A random crop of the image at ``path`` with the output's aspect ratio, resized to
    ``image_size`` (width, height) and flipped left-right half of the time; (H, W, 3) uint8."""
    width, height = int(image_size[0]), int(image_size[1])
    with Image.open(path) as source:
        source = source.convert("RGB")
    src_w, src_h = source.size
    full = min(src_w / width, src_h / height)  # largest crop scale that fits
    crop_scale = full * rng.uniform(*CROP_FRACTION)
    crop_w, crop_h = width * crop_scale, height * crop_scale
    left = rng.uniform(0, src_w - crop_w)
    top = rng.uniform(0, src_h - crop_h)
    box = (left, top, left + crop_w, top + crop_h)
    crop = source.resize((width, height), Image.BILINEAR, box=box)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(crop, dtype=np.uint8)


def _sample_background(
    rng: np.random.Generator,
    config: SyntheticConfig,
    background_files: Sequence[Path],
    unreadable: set[Path],
) -> np.ndarray:
    """A user image crop or a procedural texture, slightly blurred. A user image that
    can't be read is reported once, added to ``unreadable`` and replaced by a texture."""
    background = None
    if background_files and rng.random() < config.background_image_prob:
        path = background_files[rng.integers(len(background_files))]
        if path not in unreadable:
            try:
                background = image_background(rng, path, config.image_size)
            except (OSError, ValueError) as error:
                log.warning("skipping unreadable background %s: %s", path, error)
                unreadable.add(path)
    if background is None:
        background = procedural_background(rng, config.image_size)
    radius = rng.uniform(0.0, config.background_blur_max_px)
    if radius > 0.25:
        blurred = Image.fromarray(background).filter(ImageFilter.GaussianBlur(radius))
        background = np.asarray(blurred)
    return background


# --- Annotations ---------------------------------------------------------------------------


def _person_box(
    rng: np.random.Generator, part_map: np.ndarray, config: SyntheticConfig
) -> tuple[np.ndarray, float, float]:
    """Box around the rendered body: centre (2,), SPIN scale (side / 200) with
    enlargement and jitter, and the visible body's longer side in pixels."""
    rows, cols = np.nonzero(part_map)
    low = np.array([cols.min(), rows.min()], dtype=np.float64)
    high = np.array([cols.max(), rows.max()], dtype=np.float64) + 1.0  # pixel edges
    return box_around(rng, low, high, config)


def box_around(
    rng: np.random.Generator, low: np.ndarray, high: np.ndarray, config: SyntheticConfig
) -> tuple[np.ndarray, float, float]:
    """The stored box of a visible body spanning ``low`` to ``high`` (pixels, (2,) each):
    centre (2,), SPIN scale (side / 200) with enlargement and jitter, and the body's
    longer side in pixels."""
    body_side = float((high - low).max())
    side = config.box_enlarge * body_side
    side *= float(np.clip(1.0 + config.box_scale_jitter * rng.standard_normal(), 0.8, 1.2))
    center = 0.5 * (low + high) + config.box_center_jitter * side * rng.standard_normal(2)
    return center, side / BOX_UNIT, body_side


def _own_parts(
    joints: np.ndarray, vertices: np.ndarray, vertex_parts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each joint (J, 3): distance to the nearest vertex (J,), and (J, 24) bool, the
    parts with vertices within ``OWN_PARTS_RADIUS_M`` of that distance (its own limb)."""
    distances = np.sqrt(((vertices[None] - joints[:, None]) ** 2).sum(axis=-1))  # (J, V)
    nearest = distances.min(axis=1)
    # Nearest vertex of each part (infinitely far for parts without vertices).
    to_part = np.full((len(joints), 24), np.inf)
    order = np.argsort(vertex_parts, kind="stable")
    parts, starts = np.unique(vertex_parts[order], return_index=True)
    to_part[:, parts] = np.minimum.reduceat(distances[:, order], starts, axis=1)
    return nearest, to_part < (nearest + OWN_PARTS_RADIUS_M)[:, None]


def joint_occlusion(
    joints: np.ndarray,
    joints_2d: np.ndarray,
    vertices: np.ndarray,
    vertex_parts: np.ndarray,
    part_map: np.ndarray,
    depth: np.ndarray,
    margin_m: float,
) -> np.ndarray:
    """Which joints the body hides from the camera.

    A joint is hidden when the surface rendered at its pixel is in front of it by more
    than its own depth under the skin (the distance to its nearest vertex) plus
    ``margin_m``, and, for interior joints, belongs to another part than the joint's own
    limb. Joints outside the image or over the background are not hidden.

    Args:
        joints: (J, 3) camera-frame positions, metres.
        joints_2d: (J, 2) their projections, pixels.
        vertices: (V, 3) camera-frame mesh; vertex_parts: (V,) its SMPL parts.
        part_map: (H, W) rendered part labels (0 background, part + 1).
        depth: (H, W) rendered depth, metres (0 off the body).
        margin_m: see above.

    Returns:
        (J,) bool.
    """
    height, width = part_map.shape
    pixel = np.floor(joints_2d).astype(np.int64)
    inside = (
        (pixel[:, 0] >= 0) & (pixel[:, 0] < width) & (pixel[:, 1] >= 0) & (pixel[:, 1] < height)
    )
    cols = np.clip(pixel[:, 0], 0, width - 1)
    rows = np.clip(pixel[:, 1], 0, height - 1)
    label = np.where(inside, part_map[rows, cols].astype(np.int64), 0)
    surface_depth = depth[rows, cols].astype(np.float64)
    return occluded_by_surface(joints, label, surface_depth, vertices, vertex_parts, margin_m)


def occluded_by_surface(
    joints: np.ndarray,
    label: np.ndarray,
    surface_depth: np.ndarray,
    vertices: np.ndarray,
    vertex_parts: np.ndarray,
    margin_m: float,
) -> np.ndarray:
    """:func:`joint_occlusion`'s rule given the surface the camera sees at each joint:
    ``label`` (J,) its part + 1 (0: none, or outside the image) and ``surface_depth`` (J,),
    metres. Returns (J,) bool."""
    # Only joints with a surface more than the margin in front can be hidden.
    occluded = (joints[:, 2] > 0) & (label > 0) & (surface_depth < joints[:, 2] - margin_m)
    candidates = np.flatnonzero(occluded)
    if candidates.size:
        under_skin, own = _own_parts(joints[candidates], vertices, vertex_parts)
        in_front = surface_depth[candidates] < joints[candidates, 2] - under_skin - margin_m
        own_limb = own[np.arange(candidates.size), label[candidates] - 1]
        own_limb &= under_skin >= SURFACE_KEYPOINT_M
        occluded[candidates] = in_front & ~own_limb
    return occluded


def in_image(points_2d: np.ndarray, image_size: Sequence[int]) -> np.ndarray:
    """(N,) bool: which (N, 2) pixel positions fall inside a ``(width, height)`` image."""
    width, height = image_size
    x, y = points_2d[:, 0], points_2d[:, 1]
    return (x >= 0) & (x < width) & (y >= 0) & (y < height)


def ground_truth_keypoints(
    joints_2d: np.ndarray, joints_3d: np.ndarray, image_size: Sequence[int]
) -> np.ndarray:
    """SPIN's ground-truth 2D block (J, 3): the projected joints, flagged 1 where they are in
    the image and in front of the camera."""
    visible = in_image(joints_2d, image_size) & (joints_3d[:, 2] > 0)
    return np.concatenate([joints_2d, visible[:, None].astype(np.float64)], axis=1)


OUTLIER_DISTANCE = (0.2, 0.5)
"""A gross keypoint error moves the point by this fraction of the body's box side."""

_OPENPOSE_FLIP = np.array(flip_permutation("openpose25"))


def detector_keypoints(
    rng: np.random.Generator,
    joints_2d: np.ndarray,
    occluded: np.ndarray,
    body_side_px: float,
    image_size: Sequence[int],
    config: SyntheticConfig,
) -> np.ndarray:
    """Detector-like keypoints (J, 3) from exact projections (J, 2).

    Visible joints get noise with std ``keypoint_noise * body_side_px`` and a
    confidence in :data:`VISIBLE_CONFIDENCE`; occluded ones are dropped with
    ``occluded_drop_prob``, else get ``occluded_noise_scale`` times the noise and a
    confidence in :data:`OCCLUDED_CONFIDENCE`; any is missed with
    ``keypoint_drop_prob``. Dropped joints and those outside the image are (0, 0, 0).
    Optionally (probabilities 0 by default, and then nothing is drawn, so the random
    stream is unchanged), gross outliers (``keypoint_outlier_prob``) and left/right swaps
    (``keypoint_swap_prob``, BODY_25 pairs) as real detectors make them.
    """
    num = len(joints_2d)
    width, height = image_size
    noise_std = config.keypoint_noise * body_side_px
    scale = np.where(occluded, config.occluded_noise_scale, 1.0)
    points = joints_2d + noise_std * scale[:, None] * rng.standard_normal((num, 2))
    if config.keypoint_outlier_prob > 0:
        outlier = rng.random(num) < config.keypoint_outlier_prob
        angle = rng.uniform(0.0, 2.0 * np.pi, num)
        distance = rng.uniform(*OUTLIER_DISTANCE, num) * body_side_px
        shift = distance[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        points = np.where(outlier[:, None], points + shift, points)
    if config.keypoint_swap_prob > 0 and num == len(_OPENPOSE_FLIP):
        swapped = rng.random(num) < config.keypoint_swap_prob
        swapped &= _OPENPOSE_FLIP != np.arange(num)  # midline points have no partner
        first = swapped & (np.arange(num) < _OPENPOSE_FLIP)  # decide once per pair
        swap = first | first[_OPENPOSE_FLIP]
        points = np.where(swap[:, None], points[_OPENPOSE_FLIP], points)
    confidence = np.where(
        occluded, rng.uniform(*OCCLUDED_CONFIDENCE, num), rng.uniform(*VISIBLE_CONFIDENCE, num)
    )
    dropped = rng.random(num) < config.keypoint_drop_prob
    dropped |= occluded & (rng.random(num) < config.occluded_drop_prob)
    inside = (
        (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
    )
    inside &= (joints_2d[:, 0] >= 0) & (joints_2d[:, 0] < width)
    inside &= (joints_2d[:, 1] >= 0) & (joints_2d[:, 1] < height)
    keep = inside & ~dropped
    out = np.zeros((num, 3))
    out[keep, :2] = points[keep]
    out[keep, 2] = confidence[keep]
    return out


# --- Generation ------------------------------------------------------------------------------


@dataclass
class _Sample:
    """One sample while it is being made."""

    rng: np.random.Generator
    betas: np.ndarray
    pose: np.ndarray
    intrinsics: np.ndarray


def _sample_person(rng: np.random.Generator, config: SyntheticConfig) -> _Sample:
    betas = config.beta_std * rng.standard_normal(NUM_BETAS)
    pose = _sample_pose(rng, config)
    focal_mm = np.exp(rng.uniform(*np.log(config.focal_length_mm)))
    focal_px = focal_mm / SENSOR_WIDTH_MM * config.image_size[0]
    return _Sample(rng, betas, pose, _intrinsics(focal_px, config.image_size))


def _sample_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def hidden_parameters(out_dir: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The SMPL pose ``(N, 72)`` (camera-frame orientation) and betas ``(N, 10)`` of every
    sample of a generated split, 2D-only samples included: the ground truth that the
    dataset hides, for measuring what a method recovers of it (e.g. the fits that
    supervise training). Re-drawn from the split's seed and config (``<split>_config.json``),
    without rendering; a sample's pose and betas are its generator's first draws.
    """
    info_path = Path(out_dir) / f"{split}_config.json"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{info_path}: not a synthetic split's config ({error})") from None
    fields = {f.name for f in dataclasses.fields(SyntheticConfig)}
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in info["config"].items()}
    config = SyntheticConfig(**{k: v for k, v in settings.items() if k in fields})
    samples = [
        _sample_person(_sample_rng(int(info["split_seed"]), i), config) for i in range(info["num"])
    ]
    return np.stack([s.pose for s in samples]), np.stack([s.betas for s in samples])


@dataclass
class _Run:
    """What every sample of one generate_synthetic call shares."""

    config: SyntheticConfig
    template: BodyTemplate
    renderer: MeshRenderer
    out_dir: Path
    background_files: Sequence[Path]
    unreadable_backgrounds: set[Path] = field(default_factory=set)
    redrawn_placements: int = 0


# Per-sample arrays of the .npz, in the order they are written (plus gender).
_RECORD_KEYS = (
    "imgname",
    "image_size",
    "center",
    "scale",
    "part",
    "openpose",
    "S",
    "pose",
    "shape",
    "transl",
    "has_smpl",
    "intrinsics",
)


def generate_synthetic(
    config: SyntheticConfig,
    num: int,
    out_dir: str | Path,
    split: str = "train",
    progress: bool = True,
) -> Path:
    """Render ``num`` synthetic people and write them in SPIN's format (see the module
    docstring for the layout and keys).

    Args:
        config: how to make them.
        num: number of samples (>= 1).
        out_dir: dataset folder (created); images and part maps go in subfolders and
            ``imgname`` is relative to it.
        split: "train" or "test" (different seeds; files are prefixed with it).
        progress: show a tqdm progress bar.

    Returns:
        The path of the written ``<split>.npz``.
    """
    if num < 1:
        raise ValueError(f"expected num >= 1, got {num}")
    seed = split_seed(config.seed, split)
    out_dir = Path(out_dir)
    # Everything that can refuse the request comes before the first folder is made, so a
    # refusal leaves nothing behind.
    background_files = (
        list_background_images(config.background_dir) if config.background_dir else []
    )
    model = load_body_model(config.body_model)
    if not model.has_joints_spin:
        raise ValueError(
            f"body model {config.body_model!r} has no SPIN-49 joints, which the annotations "
            "need; use the bundled 'open' model or add SPIN's J_regressor_extra.npy next "
            "to the SMPL file"
        )
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    if config.write_part_maps:
        (out_dir / "parts").mkdir(parents=True, exist_ok=True)
    template = body_template(model)
    offset = np.random.default_rng([seed, _HAS_3D_STREAM]).random()
    has_3d = has_3d_flags(config.fraction_3d, num, offset)
    dtype = model.v_template.dtype

    records: dict[str, list] = {key: [] for key in _RECORD_KEYS}
    start = time.perf_counter()
    with (
        MeshRenderer(config.image_size) as renderer,
        tqdm(total=num, desc=f"synthetic {split}", unit="sample", disable=not progress) as bar,
    ):
        run = _Run(config, template, renderer, out_dir, background_files)
        for first in range(0, num, config.batch_size):
            indices = range(first, min(first + config.batch_size, num))
            samples = [_sample_person(_sample_rng(seed, i), config) for i in indices]
            # Always a full batch (zero-padded), so the arithmetic, and each sample's
            # result to the last bit, does not depend on how many samples are made.
            poses = np.zeros((config.batch_size, 72))
            betas = np.zeros((config.batch_size, NUM_BETAS))
            poses[: len(samples)] = [s.pose for s in samples]
            betas[: len(samples)] = [s.betas for s in samples]
            with torch.no_grad():
                out = model(
                    pose_rotvecs=torch.tensor(poses, dtype=dtype),
                    betas=torch.tensor(betas, dtype=dtype),
                )
            vertices = out.vertices.double().numpy()
            joints = out.require_joints_spin().double().numpy()
            for row, index in enumerate(indices):
                name = f"{split}_{index:06d}"
                record = _make_sample(
                    run, samples[row], vertices[row], joints[row], name, bool(has_3d[index])
                )
                for key, value in record.items():
                    records[key].append(value)
                bar.update(1)
    elapsed = time.perf_counter() - start
    if run.redrawn_placements:
        log.warning("%d placements were redrawn (body hardly visible)", run.redrawn_placements)

    arrays = {key: np.stack(values) for key, values in records.items()}
    arrays["gender"] = np.full(num, "n")
    path = save_spin_npz(out_dir / f"{split}.npz", **arrays)
    info = {
        "split": split,
        "num": num,
        "split_seed": seed,
        "seconds": round(elapsed, 3),
        "samples_per_second": round(num / max(elapsed, 1e-9), 3),
        "redrawn_placements": run.redrawn_placements,
        "unreadable_backgrounds": sorted(str(path) for path in run.unreadable_backgrounds),
        "config": asdict(config),
    }
    (out_dir / f"{split}_config.json").write_text(json.dumps(info, indent=2) + "\n")
    return path


def _make_sample(
    run: _Run,
    sample: _Sample,
    vertices: np.ndarray,
    joints: np.ndarray,
    name: str,
    has_3d: bool,
) -> dict:
    """Place, render, annotate and save one body (vertices (V, 3), SPIN-49 joints
    (49, 3), posed at zero translation); returns its record."""
    config, template, renderer = run.config, run.template, run.renderer
    rng, intrinsics = sample.rng, sample.intrinsics
    for tries in range(MAX_PLACEMENT_TRIES):
        # The last try keeps the whole person in the frame.
        last = tries == MAX_PLACEMENT_TRIES - 1
        placement = replace(config, truncation_prob=0.0) if last else config
        transl = _place_body(rng, vertices, intrinsics, placement)
        cam_vertices = vertices + transl
        rendered = renderer.render_labels(
            cam_vertices, template.faces, template.face_parts + 1, intrinsics
        )
        if np.count_nonzero(rendered.labels) >= MIN_BODY_PIXELS:
            break
        run.redrawn_placements += 1
    part_map = rendered.labels.astype(np.uint8)
    cam_joints = joints + transl
    joints_2d = _project(cam_joints, intrinsics)

    colors = _sample_vertex_colors(rng, template, config)
    lights = _sample_lights(rng, config)
    background = _sample_background(rng, config, run.background_files, run.unreadable_backgrounds)
    image = renderer.render(
        cam_vertices,
        template.faces,
        intrinsics,
        background=background,
        vertex_colors=colors,
        lights=lights,
    )
    noise_std = rng.uniform(0.0, config.image_noise_std_max)
    noisy = image + noise_std * rng.standard_normal(image.shape)
    image = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)

    center, scale, body_side = _person_box(rng, part_map, config)
    openpose_3d, gt_3d = cam_joints[:NUM_OPENPOSE], cam_joints[NUM_OPENPOSE:]
    openpose_2d, gt_2d = joints_2d[:NUM_OPENPOSE], joints_2d[NUM_OPENPOSE:]
    occluded = joint_occlusion(
        openpose_3d,
        openpose_2d,
        cam_vertices,
        template.vertex_parts,
        part_map,
        rendered.depth,
        config.occlusion_margin_m,
    )
    openpose = detector_keypoints(rng, openpose_2d, occluded, body_side, config.image_size, config)
    part = ground_truth_keypoints(gt_2d, gt_3d, config.image_size)

    image_name = f"images/{name}.jpg"
    Image.fromarray(image).save(
        run.out_dir / image_name, format="JPEG", quality=config.jpeg_quality
    )
    if config.write_part_maps:
        Image.fromarray(part_map).save(run.out_dir / "parts" / f"{name}.png", format="PNG")

    joints_3d = np.concatenate([gt_3d, np.ones((NUM_GT_JOINTS, 1))], axis=1)
    ground_truth = {"S": joints_3d, "pose": sample.pose, "shape": sample.betas, "transl": transl}
    if not has_3d:  # 2D-only, like in-the-wild data
        ground_truth = {key: np.zeros_like(value) for key, value in ground_truth.items()}
    record = {
        "imgname": image_name,
        "image_size": np.array(config.image_size, dtype=np.int64),
        "center": center,
        "scale": scale,
        "part": part,
        "openpose": openpose,
        **ground_truth,
        "has_smpl": 1.0 if has_3d else 0.0,
        "intrinsics": intrinsics,
    }
    return record


# --- Contact sheet ----------------------------------------------------------------------------


def contact_sheet(
    dataset_dir: str | Path, split: str = "train", num: int = 24, ncols: int = 6
) -> np.ndarray:
    """A grid of the first ``num`` images of a generated split with their annotations.

    Each tile shows the image, the person box (``center``, ``scale``) in yellow and the
    OpenPose keypoints coloured by confidence (red 0 to green 1; dropped ones are not
    drawn), labelled with the index and "3D" or "2D" (``has_smpl``).

    Returns:
        (rows * (H + label strip), ncols * W, 3) uint8.
    """
    dataset_dir = Path(dataset_dir)
    arrays = load_spin_npz(dataset_dir / f"{split}.npz")
    count = min(num, len(arrays["imgname"]))
    tiles, labels = [], []
    for index in range(count):
        with Image.open(dataset_dir / str(arrays["imgname"][index])) as image:
            tile = image.convert("RGB")
        draw = ImageDraw.Draw(tile)
        half = BOX_UNIT / 2.0 * float(arrays["scale"][index])
        cx, cy = arrays["center"][index]
        draw.rectangle((cx - half, cy - half, cx + half, cy + half), outline=SHEET_BOX_RGB)
        radius = max(1.5, SHEET_POINT_FRACTION * max(tile.size))
        for u, v, confidence in arrays["openpose"][index]:
            if confidence <= 0:
                continue
            color = (int(255 * (1 - confidence)), int(255 * confidence), 40)
            u, v = u - 0.5, v - 0.5  # PIL puts pixel centres at integers
            draw.ellipse((u - radius, v - radius, u + radius, v + radius), fill=color)
        tiles.append(np.asarray(tile))
        has_smpl = "has_smpl" in arrays and arrays["has_smpl"][index] > 0
        labels.append(f"{index} {'3D' if has_smpl else '2D'}")
    return grid_image(tiles, ncols, labels=labels)
