"""Endless synthetic keypoints: training samples drawn on the fly, never rendered or stored.

The keypoint representations (``keypoints``, ``keypoint_heatmaps``) need no image, so a
training sample can be made from a sampled body without the renderer: about 10 ms on one
core instead of the ~130 ms a rendered one costs (:mod:`spin.data.synthetic`;
``tools/bench_data.py`` measures both). Sample ``i`` is drawn as a rendered synthetic person
is (:func:`spin.data.synthetic._sample_person`: pose sampler, betas, orientation, camera,
placement with truncation, box with jitter, detector-like keypoint noise and drops,
occlusion by the body), with three differences:

- which body part the camera sees at each joint, and at what depth, comes from a ray cast
  against the light mesh (``open-lite`` for the open model; :func:`surface_at_points`), not
  from the renderer's part map of the full mesh; the box spans the projected light mesh
  clipped to the image. The occlusion flags agree with the renderer's on about 96% of the
  joints (``tests/data/test_endless.py`` measures it);
- no image, background, colours or lights are drawn;
- the random streams differ from the rendered splits', so no endless sample is a person of
  the synthetic train or test split.

Samples are a function of ``(seed, index)`` alone: a run is deterministic and resumable,
and ``length`` distinct people are available (item ``k`` of an epoch of the mix is sample
``k mod length``, see :attr:`EndlessKeypoints.sequential`). Bodies are posed a chunk at a
time (one batched forward pass of the joint model); the items of the last chunk are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from spin.body import load_body_model
from spin.body.pose_sampler import sample_poses
from spin.body.sparse import SparseJointModel
from spin.data.augment import (
    crop_camera_intrinsics,
    crop_pixels_to_normalized,
    crop_transform,
    transform_points,
)
from spin.data.representations import (
    HEATMAP_SIGMA,
    heatmap_keypoints,
    keypoint_heatmaps,
    keypoint_vector,
)
from spin.data.synthetic import (
    MAX_PLACEMENT_TRIES,
    MIN_BODY_PIXELS,
    NUM_BETAS,
    NUM_GT_JOINTS,
    NUM_OPENPOSE,
    SENSOR_WIDTH_MM,
    SMPL_TO_CAMERA,
    SyntheticConfig,
    _intrinsics,
    _place_body,
    _project,
    body_template,
    box_around,
    detector_keypoints,
    ground_truth_keypoints,
    in_image,
    occluded_by_surface,
)

__all__ = ["ENDLESS_REPRESENTATIONS", "EndlessKeypoints", "sample_people", "surface_at_points"]

ENDLESS_REPRESENTATIONS = ("keypoints", "keypoint_heatmaps")
"""Input representations an endless sample can feed (they need no image)."""

ENDLESS_STREAM = 0x656E646C
"""Extra seed word of the endless samples' random streams (ASCII "endl"): keeps them apart
from the rendered splits' streams, which use the seed alone."""

LIGHT_MODELS = {"open": "open-lite"}
"""The light mesh used for placement and occlusion, by body model; others use their own."""

MIN_BOX_AREA_PX = 2 * MIN_BODY_PIXELS
"""A placement is redrawn when the body's box inside the image is smaller than this (about
:data:`~spin.data.synthetic.MIN_BODY_PIXELS` of body: a body fills about half its box)."""


def surface_at_points(
    points_2d: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    face_labels: np.ndarray,
    intrinsics: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """What the camera sees of a mesh at given image points: the label and depth of the
    nearest triangle covering each point (a ray cast, exact for the mesh; no renderer).

    Args:
        points_2d: ``(J, 2)`` image points, pixels.
        vertices: ``(V, 3)`` camera-frame vertices, metres (z forward, all z > 0).
        faces: ``(F, 3)`` vertex indices; face_labels: ``(F,)`` labels (> 0).
        intrinsics: ``(3, 3)`` pinhole camera.

    Returns:
        label ``(J,)`` int64 (0 where no triangle covers the point) and depth ``(J,)``
        float64 (perspective-correct, metres; 0 where uncovered).
    """
    corners = _project(vertices, intrinsics)[faces]  # (F, 3, 2)
    # Only the (point, triangle) pairs whose bounding box holds the point are tested.
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    low = np.minimum(np.minimum(a, b), c).T  # (2, F); numpy's min over a short axis is slow
    high = np.maximum(np.maximum(a, b), c).T
    x, y = points_2d[:, :1], points_2d[:, 1:]
    inside_box = (x >= low[0]) & (x <= high[0]) & (y >= low[1]) & (y <= high[1])
    point, face = np.nonzero(inside_box)
    origin = corners[face, 0]
    edge1, edge2 = corners[face, 1] - origin, corners[face, 2] - origin
    area = edge1[:, 0] * edge2[:, 1] - edge1[:, 1] * edge2[:, 0]  # twice the signed area
    usable = np.abs(area) > 1e-12
    area = np.where(usable, area, 1.0)
    offset = points_2d[point] - origin
    w1 = (offset[:, 0] * edge2[:, 1] - offset[:, 1] * edge2[:, 0]) / area
    w2 = (edge1[:, 0] * offset[:, 1] - edge1[:, 1] * offset[:, 0]) / area
    w0 = 1.0 - w1 - w2
    covered = usable & (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
    inverse_depth = 1.0 / vertices[faces[face], 2]  # (P, 3)
    inverse = w0 * inverse_depth[:, 0] + w1 * inverse_depth[:, 1] + w2 * inverse_depth[:, 2]
    point, face, inverse = point[covered], face[covered], inverse[covered]
    # The nearest surface has the largest 1 / z: per point, the last of an ascending sort.
    order = np.lexsort((inverse, point))
    point, face, inverse = point[order], face[order], inverse[order]
    last = np.flatnonzero(np.append(point[1:] != point[:-1], True)) if point.size else point
    label = np.zeros(len(points_2d), dtype=np.int64)
    depth = np.zeros(len(points_2d))
    label[point[last]] = face_labels[face[last]]
    depth[point[last]] = 1.0 / inverse[last]
    return label.astype(np.int64), depth


@dataclass(frozen=True)
class _People:
    """A chunk's sampled people: ``pose`` ``(C, 72)`` (camera-frame orientation), ``betas``
    ``(C, 10)`` and ``intrinsics`` ``(C, 3, 3)``."""

    pose: np.ndarray
    betas: np.ndarray
    intrinsics: np.ndarray


def sample_people(rng: np.random.Generator, config: SyntheticConfig, num: int) -> _People:
    """``num`` people and cameras drawn as :func:`spin.data.synthetic._sample_person` draws
    one (same distributions, one batched draw of each)."""
    betas = config.beta_std * rng.standard_normal((num, NUM_BETAS))
    if config.pose_source == "rest":
        pose = np.zeros((num, 72))
    else:
        pose = sample_poses(num, rng)
    yaw = rng.uniform(-config.yaw_range_deg, config.yaw_range_deg, num)
    pitch = np.clip(
        rng.normal(0.0, config.pitch_std_deg, num), -config.pitch_max_deg, config.pitch_max_deg
    )
    roll = np.clip(
        rng.normal(0.0, config.roll_std_deg, num), -config.roll_max_deg, config.roll_max_deg
    )
    orientation = (
        Rotation.from_euler("zx", np.stack([roll, pitch], axis=1), degrees=True)
        * Rotation.from_matrix(SMPL_TO_CAMERA)
        * Rotation.from_euler("y", yaw[:, None], degrees=True)
        * Rotation.from_rotvec(pose[:, :3])
    )
    pose[:, :3] = orientation.as_rotvec()
    focal_mm = np.exp(rng.uniform(*np.log(config.focal_length_mm), num))
    focal_px = focal_mm / SENSOR_WIDTH_MM * config.image_size[0]
    intrinsics = np.stack([_intrinsics(f, config.image_size) for f in focal_px])
    return _People(pose, betas, intrinsics)


def has_3d_flag(index: int, fraction: float, offset: float) -> bool:
    """Whether sample ``index`` keeps its 3D labels: the rule of
    :func:`spin.data.synthetic.has_3d_flags` for one index (any ``n`` consecutive samples
    hold ``n * fraction`` labelled ones, up to one)."""
    return bool(np.floor((index + 1) * fraction + offset) > np.floor(index * fraction + offset))


class EndlessKeypoints(torch.utils.data.Dataset):
    """Synthetic keypoint samples made on demand (module docstring).

    Args:
        synthetic: how people and cameras are sampled (the rendered split's settings;
            its ``seed`` and ``fraction_3d`` are not used).
        length: distinct samples (indices ``0 .. length-1``).
        fraction_3d: fraction of samples that keep 3D joints and SMPL parameters.
        img_size: crop side in pixels (the keypoints are in normalised crop coordinates,
            heatmaps are drawn at this size).
        input_representation: ``keypoints`` or ``keypoint_heatmaps``.
        heatmap_sigma: heatmap standard deviation, fraction of the crop side.
        seed: the endless seed (``synthetic.seed`` is not used: the rendered splits' own).
        name: the dataset's name in batches and the fits cache.
        chunk: bodies posed per forward pass (with ``seed``, it fixes the samples).

    Items have the keys and meaning of :meth:`spin.data.spin_dataset.SpinDataset.get`
    (no augmentation: ``rot_angle`` 0, not flipped), ``imgname`` ``endless_<index>``.
    """

    sequential = True
    """Item ``k`` of a :class:`~spin.data.mixed_dataset.MixedDataset` epoch is sample ``k mod
    length`` (samples are independent draws already; consecutive items share a chunk)."""

    def __init__(
        self,
        synthetic: SyntheticConfig,
        length: int,
        fraction_3d: float = 1.0,
        img_size: int = 224,
        input_representation: str = "keypoints",
        heatmap_sigma: float = HEATMAP_SIGMA,
        seed: int = 1,
        name: str = "endless",
        chunk: int = 32,
    ) -> None:
        if input_representation not in ENDLESS_REPRESENTATIONS:
            raise ValueError(
                f"endless samples have no image: input_representation must be one of "
                f"{ENDLESS_REPRESENTATIONS}, got {input_representation!r}"
            )
        if length < 1 or chunk < 1:
            raise ValueError(f"length and chunk must be >= 1, got {length} and {chunk}")
        if not 0.0 <= fraction_3d <= 1.0:
            raise ValueError(f"fraction_3d must be in [0, 1], got {fraction_3d}")
        self.synthetic = synthetic
        self.seed = int(seed)
        self.length = int(length)
        self.fraction_3d = float(fraction_3d)
        self.img_size = int(img_size)
        self.input_representation = input_representation
        self.heatmap_sigma = heatmap_sigma
        self.name = name
        self.chunk = int(chunk)
        model = load_body_model(synthetic.body_model)
        if not model.has_joints_spin:
            raise ValueError(f"body model {synthetic.body_model!r} has no SPIN-49 joints")
        self.joint_model = SparseJointModel(model.double())
        light = LIGHT_MODELS.get(synthetic.body_model)
        self.light_model = load_body_model(light).double() if light else model.double()
        self.template = body_template(self.light_model)
        self.offset = float(np.random.default_rng([self.seed, ENDLESS_STREAM, 1]).random())
        self._chunk_id: int | None = None
        self._items: list[dict] = []
        self.redrawn_placements = 0

    def __len__(self) -> int:
        return self.length

    @property
    def skipped(self) -> int:
        """Samples replaced (none: nothing is read)."""
        return 0

    def summary(self) -> str:
        return (
            f"dataset {self.name!r}: {self.length} endless samples, "
            f"{self.redrawn_placements} placements redrawn"
        )

    def _rng(self, chunk_id: int) -> np.random.Generator:
        sequence = np.random.SeedSequence([self.seed, ENDLESS_STREAM], spawn_key=(chunk_id,))
        return np.random.default_rng(sequence)

    def __getitem__(self, index: int) -> dict:
        return self.get(index)

    def get(self, index: int, draw: int | None = None) -> dict:
        """Sample ``index`` (``draw`` is accepted for the mix's interface and ignored:
        endless samples are not augmented)."""
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.name!r} of {self.length}")
        index = int(index) % self.length
        chunk_id = index // self.chunk
        if chunk_id != self._chunk_id:
            self._items = self._make_chunk(chunk_id)
            self._chunk_id = chunk_id
        item = dict(self._items[index - chunk_id * self.chunk])
        item["requested_index"] = index
        return item

    def hidden_parameters(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every sample's true ``pose`` ``(N, 72)`` and ``betas`` ``(N, NB)`` and whether it
        keeps its 3D labels ``(N,)`` bool, without making the samples (the first draws of
        each chunk's stream are its people: :meth:`_make_chunk`)."""
        poses, betas = [], []
        for chunk_id in range(-(-self.length // self.chunk)):
            count = min(self.chunk, self.length - chunk_id * self.chunk)
            people = sample_people(self._rng(chunk_id), self.synthetic, count)
            poses.append(people.pose)
            betas.append(people.betas)
        labelled = np.array(
            [has_3d_flag(i, self.fraction_3d, self.offset) for i in range(self.length)]
        )
        return np.concatenate(poses), np.concatenate(betas), labelled

    @torch.no_grad()
    def _make_chunk(self, chunk_id: int) -> list[dict]:
        first = chunk_id * self.chunk
        indices = range(first, min(first + self.chunk, self.length))
        rng = self._rng(chunk_id)
        people = sample_people(rng, self.synthetic, len(indices))
        poses = torch.from_numpy(people.pose)
        betas = torch.from_numpy(people.betas)
        joints = self.joint_model(pose_rotvecs=poses, betas=betas).joints_spin.numpy()
        vertices = self.light_model(pose_rotvecs=poses, betas=betas).vertices.numpy()
        return [
            self._make_item(
                rng,
                index,
                people.pose[row],
                people.betas[row],
                people.intrinsics[row],
                joints[row],
                vertices[row],
            )
            for row, index in enumerate(indices)
        ]

    def _make_item(
        self,
        rng: np.random.Generator,
        index: int,
        pose: np.ndarray,
        betas: np.ndarray,
        intrinsics: np.ndarray,
        joints: np.ndarray,
        vertices: np.ndarray,
    ) -> dict:
        """One sample from its posed joints ``(49, 3)`` and light mesh ``(V, 3)`` (at the
        origin): placed, boxed, its keypoints made detector-like and cropped."""
        config, template = self.synthetic, self.template
        width, height = config.image_size
        for tries in range(MAX_PLACEMENT_TRIES):
            last = tries == MAX_PLACEMENT_TRIES - 1
            placement = replace(config, truncation_prob=0.0) if last else config
            transl = _place_body(rng, vertices, intrinsics, placement)
            cam_vertices = vertices + transl
            uv = _project(cam_vertices, intrinsics)
            low = np.maximum(uv.min(axis=0), 0.0)
            high = np.minimum(uv.max(axis=0), [width, height])
            if np.prod(np.maximum(high - low, 0.0)) >= MIN_BOX_AREA_PX:
                break
            self.redrawn_placements += 1
        cam_joints = joints + transl
        joints_2d = _project(cam_joints, intrinsics)
        # The box of the visible body: the projected mesh clipped to the image (what the
        # renderer's part map spans, to within a pixel).
        center, scale, body_side = box_around(rng, low, high, config)
        openpose_3d, openpose_2d = cam_joints[:NUM_OPENPOSE], joints_2d[:NUM_OPENPOSE]
        label, depth = surface_at_points(
            openpose_2d, cam_vertices, template.faces, template.face_parts + 1, intrinsics
        )
        label = np.where(in_image(openpose_2d, config.image_size), label, 0)
        occluded = occluded_by_surface(
            openpose_3d,
            label,
            depth,
            cam_vertices,
            template.vertex_parts,
            config.occlusion_margin_m,
        )
        openpose = detector_keypoints(
            rng, joints_2d[:NUM_OPENPOSE], occluded, body_side, config.image_size, config
        )
        gt_3d = cam_joints[NUM_OPENPOSE:]
        part = ground_truth_keypoints(joints_2d[NUM_OPENPOSE:], gt_3d, config.image_size)
        keypoints_orig = np.concatenate([openpose, part])

        size = self.img_size
        affine = crop_transform(center, scale, size, 0.0, False)
        keypoints = np.concatenate(
            [transform_points(keypoints_orig[:, :2], affine), keypoints_orig[:, 2:]], axis=1
        )
        keypoints = crop_pixels_to_normalized(keypoints, size)
        selected = heatmap_keypoints(keypoints)
        if self.input_representation == "keypoints":
            img = keypoint_vector(selected)
        else:
            img = keypoint_heatmaps(selected, size, self.heatmap_sigma)

        labelled = has_3d_flag(index, self.fraction_3d, self.offset)
        pose_3d = np.concatenate([gt_3d, np.ones((NUM_GT_JOINTS, 1))], axis=1)
        if not labelled:
            pose_3d, pose, betas = np.zeros((NUM_GT_JOINTS, 4)), np.zeros(72), np.zeros(NUM_BETAS)

        def f32(x) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x, dtype=np.float32))

        return {
            "img": img,
            "keypoints": f32(keypoints),
            "keypoints_orig": f32(keypoints_orig),
            "pose": f32(pose),
            "betas": f32(betas),
            "pose_3d": f32(pose_3d),
            "has_smpl": f32(float(labelled)),
            "has_pose_3d": f32(float(labelled)),
            "center": f32(center),
            "scale": f32(scale),
            "orig_shape": torch.tensor([height, width], dtype=torch.int64),
            "is_flipped": torch.tensor(False),
            "rot_angle": f32(0.0),
            "scale_factor": f32(1.0),
            "pixel_noise": f32(np.ones(3)),
            "sample_index": index,
            "dataset_name": self.name,
            "imgname": f"endless_{index:09d}",
            "gender": "n",
            "intrinsics": f32(intrinsics),
            "crop_intrinsics": f32(crop_camera_intrinsics(intrinsics, affine, 0.0, False)),
            "transl": f32(transl if labelled else np.zeros(3)),
        }
