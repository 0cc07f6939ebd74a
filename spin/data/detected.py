"""Evaluation on detected keypoints: a dataset's 2D keypoints replaced by MediaPipe's.

A keypoint-input network is trained on the synthetic generator's detector-like keypoints;
on a photo it gets MediaPipe's. ``spin-eval --keypoints detected`` measures what that costs:
MediaPipe's legacy BlazePose model (as ``spin-demo`` runs it) is run on every sample's image,
inside the sample's square person box enlarged by :data:`DETECTION_BOX_ENLARGE` (the
dataset's ``center``/``scale``, clipped to the image), and its 33 landmarks, mapped to SPIN's
49 keypoints by the points they denote,
replace the file's ``openpose`` and ``part`` blocks (landmark visibility as confidence in the
first, landmarks at or below :data:`OPENPOSE_MIN_VISIBILITY` left out as ``spin-demo`` leaves
them out; a 0/1 flag in the second, as the format wants; 0 where MediaPipe found nobody).
A keypoint network's input then gets OpenPose's neck, mid-hip and hips, which MediaPipe
lacks, made from its hips and shoulders
(:func:`~spin.data.representations.complete_openpose_torso`).
Everything else (boxes, ground truth) is the file's. The network's input and SMPLify's
refinement then both use the detected keypoints only.

The detected copy is written once per dataset file and visibility threshold and reused while
it is newer than the file (:func:`detected_keypoints_file`). ``spin-eval --keypoints
detected`` uses it, and so does training from a dataset entry with ``keypoints: mediapipe``
(then only the samples where MediaPipe found someone).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from spin.body.joint_conventions import SPIN_49, convert
from spin.data.augment import BOX_SIZE_PER_SCALE
from spin.data.formats import load_spin_npz, save_spin_npz
from spin.data.representations import NUM_OPENPOSE

OPENPOSE_MIN_VISIBILITY = 0.2
"""Landmarks with visibility at or below this are left out of the OpenPose block, as
``spin-demo`` leaves them out (its ``MIN_CONFIDENCE``): MediaPipe places every one of its 33
landmarks, hidden or not, and a keypoint network takes any point with confidence > 0 as
seen."""

DETECTION_BOX_ENLARGE = 1.5
"""MediaPipe searches a square this many times the sample's person box (about the same
centre): with some context around the person it finds far more people. On 400 rendered
people (128 px, a seed no training uses): 256 found in the box itself, 303 in 1.5x, 304 in
2x, 316 in the whole image (which holds only that person)."""

PART_VISIBLE = 0.5
"""Landmarks MediaPipe maps to the ground-truth block (its hips, by SPIN's 49 points) are
kept, with flag 1, when its visibility is at least this; the OpenPose block keeps the
visibility as confidence (above :data:`OPENPOSE_MIN_VISIBILITY`)."""

__all__ = [
    "DETECTED_DESCRIPTION",
    "DETECTION_BOX_ENLARGE",
    "OPENPOSE_MIN_VISIBILITY",
    "detect_dataset_keypoints",
    "detected_keypoints_file",
]

DETECTED_DESCRIPTION = (
    "2D keypoints detected by MediaPipe (legacy BlazePose, model_complexity 1) in each "
    f"sample's person box enlarged {DETECTION_BOX_ENLARGE:g}x, not the file's; visibility <= "
    f"{OPENPOSE_MIN_VISIBILITY:g} left out"
)


def detect_dataset_keypoints(
    npz_path: str | os.PathLike,
    image_folder: str | os.PathLike,
    out_path: str | os.PathLike,
    progress: bool = True,
    min_visibility: float = OPENPOSE_MIN_VISIBILITY,
    box_enlarge: float = DETECTION_BOX_ENLARGE,
) -> Path:
    """Write a copy of a SPIN-format file whose 2D keypoints are MediaPipe's (module
    docstring; where MediaPipe finds nobody, all keypoints are zero; landmarks with
    visibility <= ``min_visibility`` are left out; MediaPipe searches the person box
    enlarged ``box_enlarge`` times). Returns its path.

    Raises:
        ImportError: MediaPipe is not installed (the message says how to install it).
        FileNotFoundError: an image is missing.
    """
    from spin.demo.keypoints import mediapipe_detector

    arrays = dict(load_spin_npz(npz_path, validate=False))
    image_folder = Path(image_folder)
    num = len(arrays["imgname"])
    spin49 = np.zeros((num, SPIN_49.num_joints, 3))
    names = tqdm(arrays["imgname"], desc="MediaPipe keypoints", disable=not progress)
    with mediapipe_detector() as detect:
        for row, name in enumerate(names):
            path = image_folder / str(name)
            if not path.is_file():
                raise FileNotFoundError(f"no image {path} (sample {row} of {npz_path})")
            image = np.asarray(Image.open(path).convert("RGB"))
            center = np.asarray(arrays["center"][row], dtype=np.float64)
            half = 0.5 * float(arrays["scale"][row]) * BOX_SIZE_PER_SCALE * box_enlarge
            box = (center[0] - half, center[1] - half, center[0] + half, center[1] + half)
            spin49[row] = convert(detect(image, box), "mediapipe33", SPIN_49)
    openpose = spin49[:, :NUM_OPENPOSE]
    openpose[openpose[..., 2] <= min_visibility] = 0.0
    arrays["openpose"] = openpose
    part = spin49[:, NUM_OPENPOSE:]
    # The format's ground-truth block holds 0/1 visibility flags, not scores.
    part[..., 2] = (part[..., 2] >= PART_VISIBLE).astype(np.float64)
    part[part[..., 2] == 0] = 0.0
    arrays["part"] = part
    return save_spin_npz(out_path, **arrays)


def _read_source(record: Path) -> dict | None:
    """What a detected copy was made from (None when unknown or unreadable)."""
    try:
        return json.loads(record.read_text())
    except (OSError, ValueError):
        return None


def detected_keypoints_file(
    npz_path: str | os.PathLike,
    image_folder: str | os.PathLike,
    cache_dir: str | os.PathLike,
    progress: bool = True,
    found_only: bool = False,
) -> Path:
    """The detected copy of ``npz_path`` in ``cache_dir``
    (``<stem>_mediapipe_vis<threshold>_box<enlarge>.npz``), made when missing, older than
    the file, or made from another file or image folder (two datasets named ``test.npz``
    share a cache folder: a ``.source.json`` beside the copy names what it was made from).

    With ``found_only``, the copy keeps only the samples where MediaPipe found someone
    (``<stem>_mediapipe_vis<threshold>_box<enlarge>_found.npz``, made from the full copy): a
    training set of detected keypoints, where a sample without any keypoint would teach
    nothing.

    Raises:
        ValueError: ``found_only`` and MediaPipe found nobody in any sample.
    """
    npz_path = Path(npz_path)
    settings = f"vis{OPENPOSE_MIN_VISIBILITY:g}_box{DETECTION_BOX_ENLARGE:g}"
    out = Path(cache_dir) / f"{npz_path.stem}_mediapipe_{settings}.npz"
    record = out.with_name(f"{out.stem}.source.json")
    source = {"npz": str(npz_path.resolve()), "images": str(Path(image_folder).resolve())}
    fresh = out.is_file() and out.stat().st_mtime >= npz_path.stat().st_mtime
    if not (fresh and _read_source(record) == source):
        out.parent.mkdir(parents=True, exist_ok=True)
        detect_dataset_keypoints(npz_path, image_folder, out, progress)
        record.write_text(json.dumps(source, indent=1) + "\n")
    if not found_only:
        return out
    found_path = out.with_name(f"{out.stem}_found.npz")
    if found_path.is_file() and found_path.stat().st_mtime >= out.stat().st_mtime:
        return found_path
    arrays = dict(load_spin_npz(out, validate=False))
    num = len(arrays["imgname"])
    found = (arrays["openpose"][..., 2].max(axis=1) > 0) | (arrays["part"][..., 2].max(axis=1) > 0)
    if not found.any():
        raise ValueError(f"MediaPipe found nobody in any of the {num} samples of {npz_path}")
    rows = {
        key: value[found]
        for key, value in arrays.items()
        if isinstance(value, np.ndarray) and value.ndim > 0 and len(value) == num
    }
    return save_spin_npz(found_path, **{**arrays, **rows})
