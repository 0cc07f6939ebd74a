"""Benchmark protocols: which samples, which joints and which ground truth an evaluation uses.

Evaluation protocols are where numbers in this field most often stop being comparable (14 vs
17 joints, neutral vs gendered ground truth, which frames). A :class:`Protocol` spells every
choice out, :func:`select_samples` applies its sample selection to a SPIN-format ``.npz``
(:mod:`spin.data.formats`), and its ``describe_*`` methods give the lines every report starts
with. The named presets (:data:`PRESETS`, :func:`get_protocol`) are the published protocols
(REFERENCE.md, "Evaluation protocols"):

- ``3dpw``: 3DPW test split, every frame with a valid camera pose; ``lsp14``; SMPL
  ground-truth meshes, gendered when the gendered SMPL files are available (neutral
  otherwise, stated); PVE.
- ``h36m-p1``: Human3.6M S9 and S11, every 5th frame, all cameras; ``lsp14``; ground truth
  the dataset's 3D joints (``S_h36m``); no PVE.
- ``h36m-p2``: as ``h36m-p1``, front camera 60457274 only.
- ``synthetic``: every sample of the synthetic test split; ``lsp14``; the file's parameters
  posed with the checkpoint's body model (the data's own, so the ground truth is exact); PVE.

Joint sets: ``lsp14`` is SPIN's (17 joints from the H36M joint regressor, pelvis-subtracted,
the 14 LSP-order ones kept with :data:`~spin.body.joint_conventions.H36M_TO_LSP14`: H36M's
thorax stands for the LSP neck and its head for the LSP head top); ``h36m17`` keeps all 17
pelvis-centred joints (the pelvis itself then contributes zero error, as in the
17-joint H36M protocol). PA-MPJPE always follows a per-sample similarity Procrustes
alignment (scale, rotation with the reflection fixed, translation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal

import numpy as np

from spin.body.joint_conventions import H36M_17, H36M_TO_LSP14
from spin.data.convert_h36m import FRONT_CAMERA

__all__ = [
    "H36M_PELVIS",
    "H36M_TEST_SUBJECTS",
    "PRESETS",
    "Protocol",
    "SampleSelection",
    "custom_protocol",
    "deviations",
    "get_protocol",
    "protocol_3dpw",
    "protocol_h36m_p1",
    "protocol_h36m_p2",
    "protocol_synthetic",
    "select_samples",
]

JointSet = Literal["lsp14", "h36m17"]
GroundTruthSource = Literal["smpl", "joints"]
GroundTruthBodyModel = Literal["official", "checkpoint"]
GenderChoice = Literal["auto", "neutral", "gendered"]

JOINT_SETS: tuple[str, ...] = ("lsp14", "h36m17")
GENDER_CHOICES: tuple[str, ...] = ("auto", "neutral", "gendered")

H36M_PELVIS = 0
"""Index of the pelvis in the ``h36m17`` joints: the root every joint set is centred on."""

H36M_TEST_SUBJECTS: tuple[str, ...] = ("S9", "S11")
"""Human3.6M's evaluation subjects (protocols 1 and 2)."""

H36M_EVERY = 5
"""Human3.6M protocols keep every 5th frame (of the 50 fps videos)."""

GENDERED_CODES = ("m", "f")
"""``gender`` values with a gendered model; anything else ('n', '') is neutral."""


@dataclass(frozen=True)
class Protocol:
    """Everything that decides an evaluation's numbers.

    Attributes:
        name: the preset's name (``3dpw``, ``h36m-p1``, ...) or the dataset file's stem.
        dataset: what the samples are, in words (the first words of every report).
        joints: ``"lsp14"`` (SPIN's 14 LSP-order joints of the H36M regressor) or
            ``"h36m17"`` (all 17); both pelvis-centred.
        ground_truth: ``"smpl"`` (joints and mesh of the file's ``pose``/``shape`` through
            the same joint regressor; only samples with ``has_smpl``) or ``"joints"``
            (the file's 3D joints ``S_h36m``).
        gt_body_model: for ``"smpl"`` ground truth, which model the parameters belong to:
            ``"official"`` (the official SMPL model: real benchmarks) or ``"checkpoint"``
            (the checkpoint's body model: data made with it, e.g. the synthetic set).
        gender: ``"auto"`` (gendered meshes where the file has 'm'/'f' genders and the
            gendered SMPL files are available, neutral otherwise, stated in the report),
            ``"neutral"`` or ``"gendered"`` (an error when impossible).
        every: keep samples whose ``frame`` (the row index when the file has none) is a
            multiple of this.
        subjects: keep only these ``subject`` values (None: all).
        cameras: keep only these ``camera`` ids (None: all).
        pve: also report the per-vertex error (needs ``"smpl"`` ground truth).
        reference: where the protocol comes from.
        default_data, default_images: where the converted dataset is looked for when no
            path is given (relative to the working directory).
    """

    name: str
    dataset: str
    joints: JointSet = "lsp14"
    ground_truth: GroundTruthSource = "smpl"
    gt_body_model: GroundTruthBodyModel = "official"
    gender: GenderChoice = "auto"
    every: int = 1
    subjects: tuple[str, ...] | None = None
    cameras: tuple[str, ...] | None = None
    pve: bool = False
    reference: str = ""
    default_data: str | None = None
    default_images: str | None = None

    def __post_init__(self) -> None:
        if self.joints not in JOINT_SETS:
            raise ValueError(f"joints must be one of {JOINT_SETS}, got {self.joints!r}")
        if self.ground_truth not in ("smpl", "joints"):
            raise ValueError(f"ground_truth must be 'smpl' or 'joints', got {self.ground_truth!r}")
        if self.gt_body_model not in ("official", "checkpoint"):
            raise ValueError(
                f"gt_body_model must be 'official' or 'checkpoint', got {self.gt_body_model!r}"
            )
        if self.gender not in GENDER_CHOICES:
            raise ValueError(f"gender must be one of {GENDER_CHOICES}, got {self.gender!r}")
        if self.ground_truth == "joints" and self.gender != "auto":
            raise ValueError(
                f"protocol {self.name!r} compares with the dataset's 3D joints, which have no "
                f"gender; a neutral/gendered choice ({self.gender!r}) only applies to SMPL "
                "ground truth"
            )
        if self.ground_truth == "joints" and self.pve:
            raise ValueError(
                f"protocol {self.name!r}: PVE needs ground-truth meshes (ground_truth='smpl')"
            )
        if int(self.every) < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")

    # ------------------------------------------------------------------ joints

    @property
    def joint_indices(self) -> tuple[int, ...]:
        """Rows of the (pelvis-centred) ``h36m17`` joints that are compared."""
        return tuple(H36M_TO_LSP14) if self.joints == "lsp14" else tuple(range(17))

    @property
    def joint_names(self) -> tuple[str, ...]:
        """Names of the compared joints (H36M's: ``thorax``/``head`` stand for LSP's
        neck/head top in ``lsp14``)."""
        return tuple(H36M_17.joint_names[i] for i in self.joint_indices)

    # ------------------------------------------------------------------ words

    def describe_joints(self) -> str:
        if self.joints == "lsp14":
            what = (
                "lsp14: 14 LSP-order joints from the H36M joint regressor, pelvis-centred "
                "(H36M thorax/head as LSP neck/head top)"
            )
        else:
            what = "h36m17: all 17 H36M-regressor joints, pelvis-centred"
        return f"joints: {what}; PA-MPJPE after per-sample similarity Procrustes"

    def describe_frames(self) -> str:
        parts = []
        if self.subjects is not None:
            parts.append("subjects " + ", ".join(self.subjects))
        if self.cameras is not None:
            label = "camera" if len(self.cameras) == 1 else "cameras"
            parts.append(f"{label} " + ", ".join(self.cameras))
        else:
            parts.append("all cameras" if self.subjects is not None else "")
        if self.every == 1:
            parts.append("every frame")
        else:
            parts.append(f"every {_ordinal(self.every)} frame (frame % {self.every} == 0)")
        return "frames: " + ", ".join(p for p in parts if p)

    def describe_ground_truth_source(self) -> str:
        if self.ground_truth == "joints":
            return "ground truth: the dataset's 3D joints (S_h36m: H36M-17, metres, camera frame)"
        if self.gt_body_model == "checkpoint":
            return (
                "ground truth: the file's SMPL-format parameters posed with the checkpoint's "
                "body model"
            )
        return "ground truth: SMPL meshes of the file's SMPL parameters (pose, shape)"


def _ordinal(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return f"{n}th"
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th') }"


# --- Presets ------------------------------------------------------------------------------


def protocol_3dpw() -> Protocol:
    """3DPW test split (von Marcard et al., ECCV 2018), as in SPIN (Kolotouros et al., ICCV
    2019, Sec. 5) and its successors.

    Every frame of the test split whose camera pose is valid (~35k; the converter drops the
    others), 14 LSP joints from the H36M regressor, pelvis-centred; ground truth from the
    official **gendered** SMPL models (3DPW was fitted with them) when they are available,
    neutral otherwise (stated); PVE on pelvis-centred meshes. Convert with
    ``tools/convert_3dpw.py ROOT --split test --smpl-dir SMPL``.
    """
    return Protocol(
        name="3dpw",
        dataset="3DPW test split (frames with a valid camera pose)",
        ground_truth="smpl",
        gt_body_model="official",
        gender="auto",
        every=1,
        pve=True,
        reference="3DPW (von Marcard et al., ECCV 2018); protocol of SPIN (Kolotouros et "
        "al., ICCV 2019): 14 joints from the H36M regressor, gendered GT meshes",
        default_data="data/spin/3dpw_test.npz",
        default_images="data/spin/3dpw",
    )


def protocol_h36m_p1() -> Protocol:
    """Human3.6M protocol 1 (Ionescu et al., TPAMI 2014; as in HMR, Kanazawa et al., CVPR
    2018, and SPIN): subjects S9 and S11, every 5th frame, all four cameras.

    Ground truth: the dataset's own 3D joints (``S_h36m``, the 17 evaluation joints of the
    converter, metres, camera frame), pelvis-centred, the 14 LSP-order joints; no PVE (no
    mesh ground truth). ``tools/convert_h36m.py --protocol p1`` already keeps every 5th
    frame; selecting ``frame % 5 == 0`` again changes nothing for its files.
    """
    return Protocol(
        name="h36m-p1",
        dataset="Human3.6M protocol 1",
        ground_truth="joints",
        every=H36M_EVERY,
        subjects=H36M_TEST_SUBJECTS,
        cameras=None,
        pve=False,
        reference="Human3.6M (Ionescu et al., TPAMI 2014); protocol 1 of HMR (Kanazawa et "
        "al., CVPR 2018) and SPIN: S9/S11, every 5th frame, all cameras",
        default_data="data/spin/h36m_p1.npz",
        default_images="data/spin/h36m",
    )


def protocol_h36m_p2() -> Protocol:
    """Human3.6M protocol 2 (as in HMR and SPIN): as protocol 1 but the front camera
    (60457274) only; SPIN's table reports its MPJPE and PA-MPJPE.

    A protocol-1 file works too: the camera selection keeps its front-camera samples.
    """
    return replace(
        protocol_h36m_p1(),
        name="h36m-p2",
        dataset="Human3.6M protocol 2",
        cameras=(FRONT_CAMERA,),
        reference="Human3.6M (Ionescu et al., TPAMI 2014); protocol 2 of HMR (Kanazawa et "
        "al., CVPR 2018) and SPIN: S9/S11, every 5th frame, front camera 60457274",
        default_data="data/spin/h36m_p2.npz",
    )


def protocol_synthetic() -> Protocol:
    """The synthetic test split (:mod:`spin.data.synthetic`): every sample, SPIN's 14 joints,
    PVE; the ground truth is exact: the file's parameters posed with the body model the
    checkpoint was trained with (the one the synthetic people are made of by default)."""
    return Protocol(
        name="synthetic",
        dataset="synthetic test split (spin-make-synthetic)",
        ground_truth="smpl",
        gt_body_model="checkpoint",
        gender="neutral",
        every=1,
        pve=True,
        reference="spin.data.synthetic; metrics as SPIN's (14 joints, H36M regressor)",
        default_data="data/synthetic/test.npz",
        default_images="data/synthetic",
    )


PRESETS: dict[str, Callable[[], Protocol]] = {
    "3dpw": protocol_3dpw,
    "h36m-p1": protocol_h36m_p1,
    "h36m-p2": protocol_h36m_p2,
    "synthetic": protocol_synthetic,
}


def get_protocol(name: str, **overrides) -> Protocol:
    """A preset (:data:`PRESETS`) with some fields replaced (``joints``, ``gender``,
    ``every``, ...); None values leave a field as the preset has it."""
    if name not in PRESETS:
        raise ValueError(
            f"unknown protocol {name!r}; choose one of {sorted(PRESETS)} or evaluate a "
            "SPIN-format .npz file"
        )
    return _with(PRESETS[name](), overrides)


def custom_protocol(
    npz_path: str | Path, arrays: Mapping[str, np.ndarray], **overrides
) -> Protocol:
    """A protocol for any SPIN-format file: SMPL ground truth (posed with the checkpoint's
    body model, PVE on) when it has ``pose``/``shape``, else its ``S_h36m`` joints."""
    path = Path(npz_path)
    if "pose" in arrays and "shape" in arrays:
        protocol = Protocol(
            name=path.stem,
            dataset=f"{path.name} (SPIN-format file)",
            ground_truth="smpl",
            gt_body_model="checkpoint",
            pve=True,
            reference="custom file; metrics as SPIN's",
        )
    elif "S_h36m" in arrays:
        protocol = Protocol(
            name=path.stem,
            dataset=f"{path.name} (SPIN-format file)",
            ground_truth="joints",
            reference="custom file; metrics as SPIN's",
        )
    else:
        raise ValueError(
            f"{path} has no 3D ground truth to evaluate against: it needs SMPL parameters "
            "('pose', 'shape', 'has_smpl') or H36M-17 joints ('S_h36m'); see "
            "spin/data/formats.py"
        )
    return _with(protocol, overrides)


def _with(protocol: Protocol, overrides: Mapping[str, object]) -> Protocol:
    known = {f.name for f in fields(Protocol)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown protocol field(s) {unknown}; fields: {sorted(known)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(protocol, **changes) if changes else protocol


def deviations(protocol: Protocol) -> list[str]:
    """How ``protocol`` differs from the preset of the same name (empty for a custom one
    or the preset itself): numbers made with a deviation are not the published protocol's."""
    if protocol.name not in PRESETS:
        return []
    preset = PRESETS[protocol.name]()
    out = []
    for key in ("joints", "ground_truth", "gender", "every", "subjects", "cameras", "pve"):
        mine, theirs = getattr(protocol, key), getattr(preset, key)
        if mine != theirs:
            out.append(f"{key}={_show(mine)} (the {preset.name} protocol: {_show(theirs)})")
    return out


def _show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


# --- Sample selection ---------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SampleSelection:
    """The rows of a dataset file a protocol evaluates.

    Attributes:
        indices: ``(M,)`` int64 row indices into the file, ascending.
        num_in_file: N, the file's sample count.
        excluded: reason -> how many rows it removed (each row counted once, under the
            first reason that removed it).
    """

    indices: np.ndarray
    num_in_file: int
    excluded: dict[str, int]


def _require_key(arrays: Mapping[str, np.ndarray], key: str, protocol: Protocol, why: str):
    if key not in arrays:
        raise ValueError(
            f"protocol {protocol.name!r} {why}, but the file has no {key!r} key; convert the "
            "dataset with this package's converter (tools/convert_*.py), which stores it"
        )
    return np.asarray(arrays[key])


def select_samples(arrays: Mapping[str, np.ndarray], protocol: Protocol) -> SampleSelection:
    """Apply the protocol's subject, camera, frame and ground-truth selection to a file.

    Args:
        arrays: a SPIN-format ``.npz`` as a dict (:func:`spin.data.formats.load_spin_npz`).
        protocol: the protocol.

    Returns:
        The selected rows and, per reason, how many were left out.

    Raises:
        ValueError: the file lacks a key the protocol needs (``subject``, ``camera``,
            ``pose``/``shape``, ``S_h36m``), or nothing is left.
    """
    num = len(arrays["imgname"])
    keep = np.ones(num, dtype=bool)
    excluded: dict[str, int] = {}

    def drop(mask: np.ndarray, reason: str) -> None:
        removed = keep & ~mask
        if removed.any():
            excluded[reason] = excluded.get(reason, 0) + int(removed.sum())
        keep[:] = keep & mask

    if protocol.subjects is not None:
        subject = _require_key(arrays, "subject", protocol, "selects subjects")
        drop(np.isin(subject, protocol.subjects), f"subject not in {', '.join(protocol.subjects)}")
    if protocol.cameras is not None:
        camera = _require_key(arrays, "camera", protocol, "selects cameras")
        drop(np.isin(camera, protocol.cameras), f"camera not in {', '.join(protocol.cameras)}")
    if protocol.every > 1:
        if "frame" in arrays:
            frame, what = np.asarray(arrays["frame"]), "frame"
        else:
            frame, what = np.arange(num), "row index (no 'frame' key)"
        drop(frame % protocol.every == 0, f"{what} not a multiple of {protocol.every}")
    if protocol.ground_truth == "smpl":
        if "pose" not in arrays or "shape" not in arrays:
            raise ValueError(
                f"protocol {protocol.name!r} compares with SMPL ground truth, but the file has "
                "no 'pose'/'shape'; convert it with SMPL parameters or evaluate its 3D joints "
                "(a file with 'S_h36m')"
            )
        has_smpl = np.asarray(arrays.get("has_smpl", np.ones(num)), dtype=np.float64)
        drop(has_smpl > 0.5, "no SMPL ground truth (has_smpl = 0)")
    else:
        joints = _require_key(arrays, "S_h36m", protocol, "compares with H36M-17 3D joints")
        needed = [H36M_PELVIS, *protocol.joint_indices]
        drop(
            np.all(np.asarray(joints)[:, needed, 3] > 0, axis=1),
            "3D joints with zero confidence",
        )
    indices = np.flatnonzero(keep).astype(np.int64)
    if indices.size == 0:
        reasons = "; ".join(f"{reason}: {count}" for reason, count in excluded.items())
        raise ValueError(
            f"protocol {protocol.name!r} keeps none of the {num} samples of the file "
            f"({reasons or 'empty file'}); is it the right dataset?"
        )
    return SampleSelection(indices=indices, num_in_file=num, excluded=excluded)
