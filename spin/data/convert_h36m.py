"""Convert Human3.6M to SPIN's ``.npz`` format (see :mod:`spin.data.formats`).

Input layout (one layout, made from the official download in a few lines)::

    <root>/cameras.json
    <root>/<subject>/poses_3d/<action>.<camera_id>.npy
    <root>/<subject>/<action>.<camera_id>/<subject>_<action>.<camera_id>_<frame + 1:06d>.jpg

- ``poses_3d/<action>.<camera_id>.npy``: ``(F, 32, 3)`` float, the 32 joints of
  H36M's skeleton in **millimetres in that camera's frame**: the ``Pose`` variable
  of the official ``MyPoseFeatures/D3_Positions_mono/<action>.<camera_id>.cdf``
  (stored as ``(1, F, 96)``; ``(F, 96)`` and ``(1, F, 96)`` are accepted too).
- Images: the frames of ``Videos/<action>.<camera_id>.mp4``, numbered from 1 as
  ``ffmpeg -i <video> <subject>_<action>.<camera_id>_%06d.jpg`` writes them; row
  ``i`` of the poses is image number ``i + 1``.
- ``cameras.json``: intrinsics per camera id (H36M's intrinsics do not depend on
  the subject), optionally overridden per subject::

      {"54138969": {"fx": 1145.05, "fy": 1143.78, "cx": 512.54, "cy": 515.45,
                    "width": 1000, "height": 1002},
       ...,
       "S9": {"54138969": {...}}}

Action names are used verbatim (the official ones contain spaces, e.g.
``"Walking 1"``); they only need to agree between the three places. Converting
the official CDFs, e.g. with ``cdflib``::

    pose = cdflib.CDF(cdf_path).varget("Pose").reshape(-1, 32, 3)
    np.save(f"{root}/{subject}/poses_3d/{action}.{camera}.npy", pose)

Output (keys of :mod:`spin.data.formats`): the 17 evaluation joints (indices
:data:`H36M32_TO_17` of the 32) in metres go to ``S_h36m``; ``S`` holds those of
them that denote one of SPIN's 24 GT points (``convert(..., "h36m17", "spin49")``):
ankles, knees, hips, wrists, elbows, shoulders, ``Spine (H36M)``, ``Jaw (H36M)``
(H36M's neck/nose joint) and ``Head (H36M)``, with confidence 1; the other nine
slots (H36M's pelvis and thorax are not MPII's pelvis and thorax) have confidence
0. ``part`` is ``S`` projected with the intrinsics (lens distortion ignored),
visible inside the image. The box is the bounding box of the 17 projected joints
(H36M's head joint is the top of the head), side ``1.2 x`` its longer side.
``openpose`` is zeros; there is no SMPL ground truth (``has_smpl`` 0; MoSh fits
are not read). Also stored: ``intrinsics``, ``image_size``, ``subject``,
``action``, ``camera`` and ``frame`` (0-based pose row).

Protocols (:data:`PROTOCOLS`): ``train`` = S1, S5, S6, S7, S8, all cameras;
``p1`` = S9, S11, all cameras; ``p2`` = S9, S11, front camera 60457274 only; all
every 5th frame (row index multiple of 5) by default.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spin.body.joint_conventions import convert
from spin.data.formats import Conversion, box_from_points, concatenate_samples
from spin.geometry import intrinsics_matrix, perspective_projection

__all__ = [
    "CAMERA_IDS",
    "H36M32_TO_17",
    "PROTOCOLS",
    "H36MProtocol",
    "convert_h36m",
    "convert_sequence",
    "image_name",
    "list_sequences",
    "read_cameras",
    "read_poses",
]

#: Rows of H36M's 32-joint skeleton giving the ``h36m17`` joints, in that order.
H36M32_TO_17 = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)
NUM_H36M_JOINTS = 32
CAMERA_IDS = ("54138969", "55011271", "58860488", "60457274")
FRONT_CAMERA = "60457274"
MM_PER_M = 1000.0
#: Median joint depth (mm) below which the poses look like metres, not millimetres.
MIN_PLAUSIBLE_DEPTH_MM = 100.0
_GT_OFFSET = 25  # first GT-24 joint in SPIN's 49
_CAMERA_FIELDS = ("fx", "fy", "cx", "cy", "width", "height")


@dataclass(frozen=True)
class H36MProtocol:
    """Which subjects, cameras (None: all) and frames a split uses."""

    name: str
    subjects: tuple[str, ...]
    cameras: tuple[str, ...] | None
    every: int = 5


PROTOCOLS: dict[str, H36MProtocol] = {
    "train": H36MProtocol("train", ("S1", "S5", "S6", "S7", "S8"), None),
    "p1": H36MProtocol("p1", ("S9", "S11"), None),
    "p2": H36MProtocol("p2", ("S9", "S11"), (FRONT_CAMERA,)),
}


def image_name(subject: str, action: str, camera: str, frame: int) -> str:
    """Image of pose row ``frame`` (0-based), relative to the root; files count from 1."""
    sequence = f"{action}.{camera}"
    return f"{subject}/{sequence}/{subject}_{sequence}_{frame + 1:06d}.jpg"


def read_cameras(root: str | os.PathLike) -> dict:
    """``cameras.json`` of the layout (see the module docstring)."""
    path = Path(root) / "cameras.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no {path}; write the camera intrinsics there as "
            '{"<camera_id>": {"fx": ..., "fy": ..., "cx": ..., "cy": ..., "width": ..., '
            '"height": ...}} (see spin.data.convert_h36m)'
        )
    with open(path) as f:
        return json.load(f)


def camera_parameters(cameras: Mapping, subject: str, camera: str) -> tuple[np.ndarray, tuple]:
    """``(3, 3)`` intrinsics and ``(width, height)`` of a camera for a subject."""
    entry = cameras.get(subject, {}).get(camera) or cameras.get(camera)
    if entry is None:
        raise KeyError(f"cameras.json has no entry for camera {camera!r} (subject {subject})")
    missing = [key for key in _CAMERA_FIELDS if key not in entry]
    if missing:
        raise KeyError(f"cameras.json entry of camera {camera!r} lacks {missing}")
    focal = torch.tensor([entry["fx"], entry["fy"]], dtype=torch.float64)
    centre = torch.tensor([entry["cx"], entry["cy"]], dtype=torch.float64)
    intrinsics = intrinsics_matrix(focal, centre).numpy()
    return intrinsics, (int(entry["width"]), int(entry["height"]))


def list_sequences(
    root: str | os.PathLike, subject: str, cameras: Iterable[str] | None = None
) -> list[tuple[str, str, Path]]:
    """``(action, camera_id, poses file)`` of a subject, sorted, optionally some cameras only."""
    folder = Path(root) / subject / "poses_3d"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no {folder}; the layout needs <root>/<subject>/poses_3d/<action>.<camera_id>.npy "
            "(see spin.data.convert_h36m)"
        )
    wanted = None if cameras is None else set(cameras)
    found = []
    for path in sorted(folder.glob("*.npy")):
        action, dot, camera = path.stem.rpartition(".")
        if not dot or not action:
            raise ValueError(f"{path}: expected a file name <action>.<camera_id>.npy")
        if wanted is None or camera in wanted:
            found.append((action, camera, path))
    return found


def read_poses(path: str | os.PathLike) -> np.ndarray:
    """``(F, 32, 3)`` camera-frame joints in millimetres, checked for units and frame."""
    poses = np.load(path, allow_pickle=False)
    if poses.ndim in (2, 3) and poses.shape[-1] == NUM_H36M_JOINTS * 3:
        poses = poses.reshape(-1, NUM_H36M_JOINTS, 3)
    if poses.ndim != 3 or poses.shape[1:] != (NUM_H36M_JOINTS, 3):
        raise ValueError(
            f"{path}: expected H36M poses of shape (F, 32, 3) (or (1, F, 96) as in the "
            f"CDF files), got {poses.shape}"
        )
    depth = poses[..., 2]
    if len(poses) and np.median(np.abs(depth)) < MIN_PLAUSIBLE_DEPTH_MM:
        raise ValueError(
            f"{path}: joint depths have a median of {np.median(np.abs(depth)):.3g}; the "
            "layout stores millimetres (D3_Positions_mono), these look like metres"
        )
    if np.any(depth <= 0):
        raise ValueError(
            f"{path}: some joints are not in front of the camera (z <= 0); the layout "
            "stores camera-frame joints (D3_Positions_mono), not world ones (D3_Positions)"
        )
    return poses.astype(np.float64)


def convert_sequence(
    poses_mm: np.ndarray,
    frames: np.ndarray,
    intrinsics: np.ndarray,
    image_size: tuple[int, int],
    subject: str,
    action: str,
    camera: str,
) -> dict[str, np.ndarray]:
    """Samples of one sequence at the given pose rows.

    Args:
        poses_mm: ``(F, 32, 3)`` camera-frame joints in millimetres.
        frames: ``(n,)`` rows to convert.
        intrinsics: ``(3, 3)`` camera matrix.
        image_size: ``(width, height)`` in pixels.
        subject, action, camera: names stored with each sample.
    """
    n = len(frames)
    joints = poses_mm[frames][:, list(H36M32_TO_17)] / MM_PER_M
    s_h36m = np.concatenate([joints, np.ones_like(joints[..., :1])], axis=-1)
    s_gt = convert(s_h36m, "h36m17", "spin49")[:, _GT_OFFSET:]
    k = torch.from_numpy(np.asarray(intrinsics, dtype=np.float64))
    joints_2d = perspective_projection(torch.from_numpy(joints), k).numpy()
    gt_2d = perspective_projection(torch.from_numpy(s_gt[..., :3].copy()), k).numpy()
    width, height = image_size
    inside = (gt_2d[..., 0] >= 0) & (gt_2d[..., 0] < width)
    inside &= (gt_2d[..., 1] >= 0) & (gt_2d[..., 1] < height)
    visible = inside & (s_gt[..., 3] > 0) & (s_gt[..., 2] > 0)
    part = np.concatenate([gt_2d, visible[..., None].astype(np.float64)], axis=-1)
    part[~visible] = 0.0
    center, scale = box_from_points(joints_2d)
    return {
        "imgname": np.asarray([image_name(subject, action, camera, int(f)) for f in frames]),
        "center": center,
        "scale": scale,
        "part": part,
        "openpose": np.zeros((n, 25, 3)),
        "S": s_gt,
        "S_h36m": s_h36m,
        "has_smpl": np.zeros(n),
        "intrinsics": np.tile(np.asarray(intrinsics, dtype=np.float64), (n, 1, 1)),
        "image_size": np.tile(np.asarray(image_size, dtype=np.int64), (n, 1)),
        "subject": np.full(n, subject),
        "action": np.full(n, action),
        "camera": np.full(n, camera),
        "frame": np.asarray(frames, dtype=np.int64),
    }


def convert_h36m(
    root: str | os.PathLike,
    protocol: str = "p1",
    every: int | None = None,
    limit: int | None = None,
    subjects: Iterable[str] | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> Conversion:
    """Convert Human3.6M in the layout above for a protocol.

    Args:
        root: the layout's root folder.
        protocol: ``"train"``, ``"p1"`` or ``"p2"`` (:data:`PROTOCOLS`).
        every: keep pose rows that are multiples of this; default the protocol's 5
            (other values for ``p1``/``p2`` are not the standard benchmark).
        limit: stop after this many samples.
        subjects: override the protocol's subjects.
        progress: wraps the list of sequences (e.g. ``tqdm``).

    Returns:
        A :class:`~spin.data.formats.Conversion`; frames with no image file are
        counted in its ``skipped``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown H36M protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}")
    spec = PROTOCOLS[protocol]
    every = spec.every if every is None else every
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if protocol != "train" and every != spec.every:
        warnings.warn(
            f"H36M {protocol} uses every {spec.every}th frame; every={every} is not the "
            "standard benchmark",
            stacklevel=2,
        )
    root = Path(root)
    cameras = read_cameras(root)
    subjects = spec.subjects if subjects is None else tuple(subjects)
    sequences = [
        (subject, *found)
        for subject in subjects
        for found in list_sequences(root, subject, spec.cameras)
    ]
    conversion = Conversion({})
    blocks = []
    remaining = limit
    for subject, action, camera, path in progress(sequences) if progress else sequences:
        intrinsics, image_size = camera_parameters(cameras, subject, camera)
        poses = read_poses(path)
        frames = np.arange(0, len(poses), every)
        folder = root / subject / f"{action}.{camera}"
        names = {p.name for p in folder.glob("*.jpg")} if folder.is_dir() else set()
        has_image = np.asarray(
            [Path(image_name(subject, action, camera, int(f))).name in names for f in frames],
            dtype=bool,
        )
        if not names and len(frames):
            conversion.notes.append(f"no images in {folder}; its frames are skipped")
        conversion.skip("image file missing", int(np.sum(~has_image)))
        frames = frames[has_image]
        if remaining is not None:
            frames = frames[:remaining]
            remaining -= len(frames)
        if len(frames):
            blocks.append(
                convert_sequence(poses, frames, intrinsics, image_size, subject, action, camera)
            )
        if remaining == 0:
            break
    conversion.arrays = concatenate_samples(blocks)
    return conversion
