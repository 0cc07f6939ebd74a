"""SPIN's preprocessed dataset format: one ``.npz`` of per-sample arrays next to an image folder.

Every array has the samples on its first axis (``N``). Image paths are relative to
the dataset's image root (the folder the dataset config points at). Pixel
coordinates are in the original image, origin at the top-left corner, ``x`` along
the width. 3D quantities are in metres in the camera frame of the image (OpenCV
axes: x right, y down, z forward).

Required keys (what every reader may rely on):

=============  ==============  ======  ================================================
key            shape           dtype   meaning
=============  ==============  ======  ================================================
``imgname``    ``(N,)``        str     image path relative to the image root
``center``     ``(N, 2)``      float   person box centre ``(x, y)`` in pixels
``scale``      ``(N,)``        float   box side / 200 (SPIN's unit), > 0
``part``       ``(N, 24, 3)``  float   SPIN's 24 ground-truth joints (the last 24 of
                                       ``spin49``: Right Ankle ... Right Ear) as
                                       ``x, y, visibility`` (0/1) in pixels; joints
                                       the dataset lacks are all zeros
``openpose``   ``(N, 25, 3)``  float   OpenPose BODY_25 detections ``x, y, confidence``;
                                       all zeros when there are none
=============  ==============  ======  ================================================

Optional keys:

==============  ==============  ======  ===============================================
key             shape           dtype   meaning
==============  ==============  ======  ===============================================
``S``           ``(N, 24, 4)``  float   3D joints in the ``part`` order, metres, camera
                                        frame, plus a 0/1 confidence
``pose``        ``(N, 72)``     float   SMPL axis-angle pose, global orientation (first
                                        3) in the camera frame
``shape``       ``(N, 10)``     float   SMPL betas
``has_smpl``    ``(N,)``        number  1 where ``pose``/``shape`` are ground truth
``gender``      ``(N,)``        str     ``'m'``, ``'f'`` or ``'n'`` (neutral/unknown)
``intrinsics``  ``(N, 3, 3)``   float   pinhole camera matrix of the image (no
                                        lens distortion)
``transl``      ``(N, 3)``      float   SMPL translation: posing ``pose``/``shape`` with
                                        it gives the camera-frame mesh (needs ``pose``)
``image_size``  ``(N, 2)``      int     image ``(width, height)`` in pixels
``S_h36m``      ``(N, 17, 4)``  float   H36M-17 joints (``h36m17`` order), metres,
                                        camera frame, plus confidence: the evaluation
                                        protocol's joints, some of which (pelvis,
                                        thorax) have no slot in ``S``
``subject``     ``(N,)``        str     subject id (e.g. ``'S9'``)
``action``      ``(N,)``        str     action name
``camera``      ``(N,)``        str     camera id
``sequence``    ``(N,)``        str     sequence name
``frame``       ``(N,)``        int     frame index within the sequence (0-based)
``actor``       ``(N,)``        int     person index within a multi-person sequence
==============  ==============  ======  ===============================================

Rules between keys: ``pose`` and ``shape`` come together; a sample with
``has_smpl == 1`` needs them; ``transl`` needs ``pose``. Readers treat a missing
``has_smpl`` as 1 where ``pose`` is present and 0 otherwise. SPIN's original files
sometimes lack ``openpose``; this package's writers always store it.

Strings are fixed-width unicode arrays, never object arrays, so files load with
``allow_pickle=False``. Other keys are allowed and left alone.

One validator, :func:`validate_spin_npz`, checks all of the above. Its :class:`FormatRules`
say what a reader may let pass because it deals with it itself: the defaults are the format
(what :func:`save_spin_npz` writes and :func:`load_spin_npz` reads);
:data:`spin.data.spin_dataset.DATASET_RULES` relaxes the three things
:class:`~spin.data.spin_dataset.SpinDataset` handles per sample or checks more strictly.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spin.atomic import atomic_write
from spin.npz import declared_arrays, read_npz

__all__ = [
    "BOX_SCALE_FACTOR",
    "BOX_UNIT",
    "FORMAT_RULES",
    "Conversion",
    "FormatRules",
    "GENDER_CODES",
    "KeySpec",
    "NUM_GT_JOINTS",
    "NUM_OPENPOSE_JOINTS",
    "OPTIONAL_KEYS",
    "REQUIRED_KEYS",
    "SpinNpzError",
    "box_from_points",
    "concatenate_samples",
    "load_spin_npz",
    "sample_axis_check",
    "save_spin_npz",
    "validate_spin_npz",
]

NUM_GT_JOINTS = 24
NUM_OPENPOSE_JOINTS = 25
BOX_UNIT = 200.0
"""SPIN's ``scale`` is the box side divided by this many pixels."""

BOX_SCALE_FACTOR = 1.2
"""Converters make the box side this many times the longer side of the person's extent."""

GENDER_CODES = ("m", "f", "n")
# Tolerance on 0/1 flags and confidences stored as floats.
_FLAG_TOLERANCE = 1e-6


@dataclass(frozen=True)
class KeySpec:
    """Expected shape (``"N"`` for the sample axis) and dtype kind of one key.

    ``kind`` is ``"str"``, ``"float"``, ``"int"`` or ``"number"`` (int, float or bool).
    """

    shape: tuple[str | int, ...]
    kind: str
    description: str


REQUIRED_KEYS: dict[str, KeySpec] = {
    "imgname": KeySpec(("N",), "str", "image path relative to the image root"),
    "center": KeySpec(("N", 2), "float", "box centre (x, y) in pixels"),
    "scale": KeySpec(("N",), "float", "box side / 200"),
    "part": KeySpec(("N", 24, 3), "float", "24 GT joints: x, y, visibility in pixels"),
    "openpose": KeySpec(("N", 25, 3), "float", "OpenPose BODY_25: x, y, confidence"),
}

OPTIONAL_KEYS: dict[str, KeySpec] = {
    "S": KeySpec(("N", 24, 4), "float", "3D GT joints in metres, camera frame, + confidence"),
    "pose": KeySpec(("N", 72), "float", "SMPL axis-angle pose, camera-frame orientation"),
    "shape": KeySpec(("N", 10), "float", "SMPL betas"),
    "has_smpl": KeySpec(("N",), "number", "1 where pose/shape are ground truth"),
    "gender": KeySpec(("N",), "str", "'m', 'f' or 'n'"),
    "intrinsics": KeySpec(("N", 3, 3), "float", "pinhole camera matrix"),
    "transl": KeySpec(("N", 3), "float", "SMPL translation giving the camera-frame mesh"),
    "image_size": KeySpec(("N", 2), "int", "image (width, height) in pixels"),
    "S_h36m": KeySpec(("N", 17, 4), "float", "H36M-17 joints in metres + confidence"),
    "subject": KeySpec(("N",), "str", "subject id"),
    "action": KeySpec(("N",), "str", "action name"),
    "camera": KeySpec(("N",), "str", "camera id"),
    "sequence": KeySpec(("N",), "str", "sequence name"),
    "frame": KeySpec(("N",), "int", "0-based frame index in the sequence"),
    "actor": KeySpec(("N",), "int", "person index in a multi-person sequence"),
}

_KINDS = {
    "str": ("U",),
    "float": ("f",),
    "int": ("i", "u"),
    "number": ("f", "i", "u", "b"),
}


class SpinNpzError(ValueError):
    """Arrays that do not follow the SPIN ``.npz`` format (the message lists every problem)."""


@dataclass(frozen=True)
class FormatRules:
    """What :func:`validate_spin_npz` lets pass. The defaults are the format itself; a reader
    relaxes a rule only for what it handles itself (say which and why where it does).

    Attributes:
        keypoints_required: ``part`` and ``openpose`` must be present. SPIN's own files do
            without them (its 3DPW test file has no ``part``, many have no ``openpose``); a
            reader that reads a missing block as keypoints of zero confidence relaxes this.
        sample_values: every float is finite and every ``scale`` positive. These are
            problems of single samples: a reader that drops non-finite labels and skips
            unusable boxes per sample (counted and reported) relaxes this, so one bad sample
            does not refuse a whole file. Shapes, kinds, flags and relations still hold.
        relative_imgname: ``imgname`` entries are relative paths. A reader that checks
            every path against its image folder (``../`` too, with an explicit opt-out)
            relaxes this in favour of its own check.
    """

    keypoints_required: bool = True
    sample_values: bool = True
    relative_imgname: bool = True


FORMAT_RULES = FormatRules()
"""The format as documented: what writers must produce."""

_KEYPOINT_KEYS = ("part", "openpose")


def _kind_problem(key: str, array: np.ndarray, kind: str) -> str | None:
    if array.dtype.kind in _KINDS[kind]:
        return None
    if array.dtype.kind == "O":
        return (
            f"{key}: object array; store {kind} values as a plain numpy array "
            "(strings as np.asarray(list_of_str), which gives a fixed-width unicode dtype)"
        )
    return f"{key}: expected {kind} values, got dtype {array.dtype}"


def _shape_problem(key: str, array: np.ndarray, shape: tuple[str | int, ...], n: int) -> str | None:
    expected = tuple(n if s == "N" else s for s in shape)
    if array.shape == expected:
        return None
    wanted = "(" + ", ".join(str(s) for s in shape) + (",)" if len(shape) == 1 else ")")
    return f"{key}: expected shape {wanted} with N = {n}, got {array.shape}"


def _flag_problem(key: str, values: np.ndarray) -> str | None:
    """0/1 flags; non-finite values are left to the finiteness rule."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    off = np.minimum(np.abs(values), np.abs(values - 1.0)) > _FLAG_TOLERANCE
    if off.any():
        return f"{key}: expected 0/1 values, found {np.unique(values[off])[:5].tolist()}"
    return None


def _value_problems(arrays: Mapping[str, np.ndarray], rules: FormatRules) -> list[str]:
    problems = []
    if rules.sample_values:
        for key, array in arrays.items():
            if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                problems.append(f"{key}: has NaN or infinite values")
        if "scale" in arrays and np.any(arrays["scale"] <= 0):
            problems.append("scale: box scales must be positive")
    if "part" in arrays:
        problems.append(_flag_problem("part[..., 2] (visibility)", arrays["part"][..., 2]))
    if "openpose" in arrays and np.any(arrays["openpose"][..., 2] < 0):
        problems.append("openpose: confidences must be >= 0")
    if "S" in arrays:
        problems.append(_flag_problem("S[..., 3] (confidence)", arrays["S"][..., 3]))
    if "has_smpl" in arrays:
        problems.append(_flag_problem("has_smpl", arrays["has_smpl"]))
    if "gender" in arrays:
        bad = sorted(set(np.unique(arrays["gender"]).tolist()) - set(GENDER_CODES))
        if bad:
            problems.append(f"gender: expected values in {GENDER_CODES}, found {bad}")
    if "imgname" in arrays and rules.relative_imgname:
        absolute = [name for name in arrays["imgname"][:1000] if os.path.isabs(name)]
        if absolute:
            problems.append(
                f"imgname: paths must be relative to the image root, got {absolute[0]!r}"
            )
    if "intrinsics" in arrays:
        last_row = arrays["intrinsics"][:, 2, :]
        last_row = last_row[np.isfinite(last_row).all(axis=-1)]  # others: the finiteness rule
        if not np.allclose(last_row, [0.0, 0.0, 1.0]):
            problems.append("intrinsics: the last row of each matrix must be [0, 0, 1]")
    return [p for p in problems if p is not None]


def _relation_problems(arrays: Mapping[str, np.ndarray]) -> list[str]:
    problems = []
    if ("pose" in arrays) != ("shape" in arrays):
        have, lack = ("pose", "shape") if "pose" in arrays else ("shape", "pose")
        problems.append(f"{have} is present without {lack}; store both or neither")
    if "transl" in arrays and "pose" not in arrays:
        problems.append("transl is present without pose; it only means something with pose")
    if "has_smpl" in arrays and "pose" not in arrays:
        has_smpl = np.asarray(arrays["has_smpl"], dtype=np.float64)
        if np.any(has_smpl > 0.5):
            problems.append("has_smpl is 1 for some samples but there is no pose/shape")
    return problems


def validate_spin_npz(arrays: Mapping[str, object], rules: FormatRules = FORMAT_RULES) -> list[str]:
    """Every way ``arrays`` breaks the format of this module; empty when it is valid.

    Args:
        arrays: key -> array-like, e.g. ``dict(np.load(path))`` or a converter's output.
        rules: what may pass (:class:`FormatRules`); the default is the format itself.

    Returns:
        Human-readable problems, one per line, each naming its key.
    """
    arrays = {key: np.asarray(value) for key, value in arrays.items()}
    problems = [
        f"missing required key {key!r} ({spec.description}, shape {spec.shape})"
        for key, spec in REQUIRED_KEYS.items()
        if key not in arrays and (rules.keypoints_required or key not in _KEYPOINT_KEYS)
    ]
    if "imgname" in arrays and arrays["imgname"].ndim == 1:
        n = arrays["imgname"].shape[0]
    else:
        present = [arrays[k] for k in (*REQUIRED_KEYS, *OPTIONAL_KEYS) if k in arrays]
        n = present[0].shape[0] if present and present[0].ndim else 0
    well_formed = {}
    for key, spec in {**REQUIRED_KEYS, **OPTIONAL_KEYS}.items():
        if key not in arrays:
            continue
        found = [
            p
            for p in (
                _kind_problem(key, arrays[key], spec.kind),
                _shape_problem(key, arrays[key], spec.shape, n),
            )
            if p is not None
        ]
        problems.extend(found)
        if not found:
            well_formed[key] = arrays[key]
    problems.extend(_value_problems(well_formed, rules))
    problems.extend(_relation_problems(arrays))
    return problems


def _as_arrays(arrays: Mapping[str, object]) -> dict[str, np.ndarray]:
    return {key: np.asarray(value) for key, value in arrays.items()}


def save_spin_npz(path: str | os.PathLike, **arrays) -> Path:
    """Validate ``arrays`` and write them to ``path`` (uncompressed ``.npz``) atomically.

    The file is written to a temporary file in the same folder and moved into place
    with ``os.replace``, so ``path`` holds either its old content or the complete new
    file, never a partial one.

    Raises:
        SpinNpzError: the arrays break the format (nothing is written).

    Returns:
        The path written.
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"{path}: SPIN datasets are .npz files; give a path ending in .npz")
    arrays = _as_arrays(arrays)
    problems = validate_spin_npz(arrays)
    if problems:
        raise SpinNpzError(
            f"not writing {path}: the arrays break the SPIN .npz format:\n  - "
            + "\n  - ".join(problems)
        )
    return atomic_write(path, lambda handle: np.savez(handle, **arrays))


def sample_axis_check(path: str | os.PathLike):
    """For :func:`spin.npz.read_npz`: a check that each known key's declared shape is its
    spec's with ``N`` = the number of ``imgname`` entries, so no key declares more than its
    share."""
    declared = declared_arrays(path)
    if "imgname" not in declared:
        return None
    num = declared["imgname"][0][0] if declared["imgname"][0] else 0
    specs = {**REQUIRED_KEYS, **OPTIONAL_KEYS}

    def check(key, shape, dtype):
        expected = tuple(num if d == "N" else d for d in specs[key].shape)
        if shape != expected:
            return f"declares shape {shape}, expected {expected} ({num} samples in 'imgname')"
        return None

    return check


def _typed(key: str, array: np.ndarray) -> np.ndarray:
    """An unpickled object array as the typed array its key's spec calls for."""
    if array.dtype.kind != "O":
        return array
    kind = {**REQUIRED_KEYS, **OPTIONAL_KEYS}[key].kind
    try:
        return array.astype(str) if kind == "str" else array.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise SpinNpzError(
            f"key {key!r}: an object array that is not {kind} values ({error})"
        ) from None


def load_spin_npz(
    path: str | os.PathLike,
    validate: bool = True,
    rules: FormatRules = FORMAT_RULES,
    allow_pickle: bool = False,
) -> dict[str, np.ndarray]:
    """Read a SPIN ``.npz``'s known keys into a dict (no pickled objects are loaded; each
    key's declared shape is checked before it is read, see :mod:`spin.npz`).

    Args:
        path: the file.
        validate: check the arrays with :func:`validate_spin_npz`.
        rules: what the validation lets pass (:class:`FormatRules`).
        allow_pickle: for trusted files only: let numpy unpickle object arrays and turn
            them into the typed arrays the format calls for (strings, floats). Nothing is
            checked before it is read.

    Raises:
        SpinNpzError: ``validate`` is true and the file breaks the format.
        spin.npz.NpzError: a key's declared shape or size is not the format's
            (:class:`~spin.npz.NpzObjectArrayError`: an object array, without
            ``allow_pickle``).
    """
    keys = [*REQUIRED_KEYS, *OPTIONAL_KEYS]
    if allow_pickle:
        with np.load(path, allow_pickle=True) as npz:
            arrays = {key: _typed(key, npz[key]) for key in keys if key in npz.files}
    else:
        arrays = read_npz(path, keys, check=sample_axis_check(path))
    if validate:
        problems = validate_spin_npz(arrays, rules)
        if problems:
            raise SpinNpzError(
                f"{path} breaks the SPIN .npz format:\n  - " + "\n  - ".join(problems)
            )
    return arrays


# --- Helpers for converters ---------------------------------------------------------------


def box_from_points(
    points: np.ndarray, mask: np.ndarray | None = None, factor: float = BOX_SCALE_FACTOR
) -> tuple[np.ndarray, np.ndarray]:
    """SPIN's box of a set of 2D points: centre of their bounding box and
    ``scale = factor * longer side / 200``.

    Args:
        points: ``(N, P, 2)`` pixel coordinates.
        mask: ``(N, P)`` bool, the points to use (all if None); each sample needs one.
        factor: box side over the longer side of the bounding box.

    Returns:
        ``center`` ``(N, 2)`` and ``scale`` ``(N,)``.
    """
    points = np.asarray(points, dtype=np.float64)
    if mask is None:
        mask = np.ones(points.shape[:2], dtype=bool)
    if not mask.any(axis=1).all():
        raise ValueError("box_from_points: every sample needs at least one point in its mask")
    low = np.where(mask[..., None], points, np.inf).min(axis=1)
    high = np.where(mask[..., None], points, -np.inf).max(axis=1)
    center = (low + high) / 2.0
    scale = factor * (high - low).max(axis=1) / BOX_UNIT
    return center, scale


def concatenate_samples(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-sequence sample dicts (same keys) along the sample axis."""
    if not parts:
        return {}
    keys = list(parts[0])
    for i, part in enumerate(parts):
        if list(part) != keys:
            raise ValueError(f"sample block {i} has keys {sorted(part)}, expected {sorted(keys)}")
    return {key: np.concatenate([np.asarray(part[key]) for part in parts]) for key in keys}


@dataclass
class Conversion:
    """A converter's result: the sample arrays and what was skipped, by reason."""

    arrays: dict[str, np.ndarray]
    skipped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def num_samples(self) -> int:
        return len(self.arrays["imgname"]) if "imgname" in self.arrays else 0

    def skip(self, reason: str, count: int = 1) -> None:
        if count:
            self.skipped[reason] = self.skipped.get(reason, 0) + count

    def summary(self) -> str:
        lines = [f"{self.num_samples} samples"]
        lines += [f"skipped {count}: {reason}" for reason, count in sorted(self.skipped.items())]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def write(self, path: str | os.PathLike) -> int:
        """Validate and write the arrays (atomically), report, and return a process exit code:
        1 (and nothing written) when no sample was converted, else 0."""
        if self.num_samples == 0:
            print(self.summary(), file=sys.stderr)
            print("no samples converted; nothing written", file=sys.stderr)
            return 1
        written = save_spin_npz(path, **self.arrays)
        print(self.summary())
        print(f"wrote {self.num_samples} samples to {written}")
        return 0
