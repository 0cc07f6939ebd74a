"""Batch SMPLify over a SPIN-format dataset: sharded, resumable, written atomically to HDF5.

What is fitted, and in which frame (SPIN's static fits):

- Each sample's 49 SPIN keypoints (``concat(openpose, part)``, REFERENCE.md) are mapped from
  image pixels to the ``CROP_SIZE`` x ``CROP_SIZE`` crop of its box: the square of side
  ``200 * scale`` pixels centred on ``center`` is scaled onto the crop, without rotation or
  flip and without SPIN's rounding to whole pixels (:mod:`spin.data.augment`'s convention).
- The camera is SPIN's crop camera: focal length ``FOCAL_LENGTH`` px, principal point at the
  crop centre (:func:`spin.geometry.crop_intrinsics`).
- A fit is ``pose`` (72 axis-angle values, global orientation first, in that camera's frame:
  x right, y down, z forward), ``betas`` and ``cam_t``, the body's translation in that
  camera's frame. Posing the body with ``pose``, ``betas`` and ``transl=cam_t`` and projecting
  with the crop camera lands on the crop keypoints.

The work is split into shards of consecutive samples (:func:`shard_ranges`). Each finished
shard is written atomically (temporary file, fsync, rename, folder fsync) to
``OUT.shards/shard_XXXXX.npz`` with a hash of everything the fits depend on (settings and
input data); a restarted run skips finished shards and refuses shards of another
configuration. When every shard is done they are merged into the HDF5 file ``OUT`` (written
to ``OUT.tmp``, fsynced and moved into place), so a killed run never leaves a partial output.
A sample's fit depends only on its own data and its shard's batch composition, both fixed by
the configuration, so an interrupted and resumed run writes the same numbers as an
uninterrupted one, bit for bit. A different ``shard_size`` or ``batch_size`` changes the
batches, and with them the float32 round-off of the batched linear algebra (~1e-6), which
Levenberg-Marquardt's accept/reject steps can amplify (~1e-4 in the tests); those two sizes
are therefore part of the configuration hash.

Bad samples never stop the run: each sample gets a :class:`FitStatus`, and only ``OK``
samples are ``valid`` (a finite fit whose reprojection loss is below ``valid_threshold``).
Samples with a bad box, non-finite keypoints or fewer than ``MIN_CONFIDENT_KEYPOINTS``
confident keypoints are not fitted: they keep their initial pose and betas, ``cam_t`` and
``joint_losses`` are NaN and ``reprojection_loss`` is ``+inf`` (so any later fit beats it in
a fits cache).
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import hashlib
import importlib.metadata
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import h5py
import numpy as np
import torch

from spin.atomic import atomic_write_hdf5, fsync_directory
from spin.body import load_body_model
from spin.body.joint_conventions import SPIN_49
from spin.data.augment import BOX_SIZE_PER_SCALE
from spin.data.formats import NUM_GT_JOINTS, NUM_OPENPOSE_JOINTS, sample_axis_check
from spin.fitting.smplify import (
    IGNORED_JOINTS,
    SMPLIFY_MODES,
    SMPLify,
    SMPLifyConfig,
    StageConfig,
    mean_start_config,
)
from spin.geometry import CROP_SIZE, FOCAL_LENGTH, crop_intrinsics, estimate_translation
from spin.npz import NpzError, read_npz

__all__ = [
    "FitDatasetConfig",
    "FitDatasetError",
    "FitStatus",
    "FitSummary",
    "Fits",
    "Initialisation",
    "InitUnavailableError",
    "ShardMismatchError",
    "build_smplify",
    "config_hash",
    "dataset_inputs",
    "fit_batch",
    "fit_dataset",
    "fits_initialisation",
    "initial_cam_t",
    "input_status",
    "keypoints_to_crop",
    "load_fits",
    "load_initialisation",
    "mean_initialisation",
    "merge_shards",
    "parse_init",
    "run_shard",
    "shard_ranges",
]

NUM_KEYPOINTS = NUM_OPENPOSE_JOINTS + NUM_GT_JOINTS  # SPIN-49
MIN_CONFIDENT_KEYPOINTS = 2
"""A sample needs this many keypoints with positive confidence (ignored joints excluded)."""

VALID_THRESHOLD = 100.0
"""SPIN's: a fit supervises training iff its reprojection loss (the per-joint mean of
``conf^2 * GMoF`` over the 49 joints, as SPIN's trainer computes it) is below this."""

MEAN_GLOBAL_ORIENT = (math.pi, 0.0, 0.0)
"""Mean-pose global orientation: 180 degrees about x turns SMPL's y-up body upright in the
camera frame (y down), facing the camera."""

FRAME = f"crop {CROP_SIZE}, f={FOCAL_LENGTH:g}"
FRAME_DESCRIPTION = (
    f"SPIN's crop frame: keypoints mapped from image pixels to the {CROP_SIZE}x{CROP_SIZE} crop "
    f"of the box (side {BOX_SIZE_PER_SCALE:g}*scale px centred on center; no rotation, no "
    f"rounding); camera focal length {FOCAL_LENGTH:g} px, principal point at the crop centre; "
    "pose is axis-angle with the global orientation in that camera's frame (x right, y down, "
    "z forward); cam_t is the body's translation in that camera's frame."
)
OUTPUT_FORMAT_VERSION = 2
"""2: ``reprojection_loss`` is the mean over the 49 joints (SPIN's); 1 held their sum."""
SHARD_NAME = "shard_{:05d}.npz"
SHARD_GLOB = "shard_*.npz"
SHARD_PATTERN = re.compile(r"shard_(\d+)\.npz")
TEMP_PREFIX = ".tmp_"
PARALLEL_BACKEND = "loky"
"""joblib backend of ``workers > 1``: processes, each with its own body model and SMPLify."""


class FitStatus(enum.IntEnum):
    """Per-sample outcome (the ``status`` dataset); only ``OK`` is valid."""

    OK = 0
    BAD_BOX = 1  # non-finite center/scale or scale <= 0: not fitted
    NONFINITE_KEYPOINTS = 2  # a NaN or inf among the 49 keypoints: not fitted
    TOO_FEW_KEYPOINTS = 3  # fewer than MIN_CONFIDENT_KEYPOINTS confident keypoints: not fitted
    FIT_NONFINITE = 4  # SMPLify returned NaN/inf
    ABOVE_THRESHOLD = 5  # reprojection loss >= valid_threshold


INPUT_PROBLEMS = (FitStatus.BAD_BOX, FitStatus.NONFINITE_KEYPOINTS, FitStatus.TOO_FEW_KEYPOINTS)
STATUS_CODES = {status.name.lower(): int(status) for status in FitStatus}


class FitDatasetError(ValueError):
    """A problem with the inputs or the output folder; the message says how to fix it."""


class ShardMismatchError(FitDatasetError):
    """A finished shard on disk was made by another configuration or from other data."""


class InitUnavailableError(FitDatasetError):
    """The requested initialisation is not available in this version."""


# --- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FitDatasetConfig:
    """Everything a dataset fit's numbers depend on (hashed into every shard).

    Attributes:
        mode: SMPLify mode (:class:`~spin.fitting.smplify.SMPLifyConfig`): ``"faithful"``
            (SPIN's schedule on the whole mesh), ``"fast"`` (the same schedule on the joints
            only: same fits, faster), ``"lm"`` or ``"anchored"`` (Levenberg-Marquardt; from
            the mean pose both try four headings).
        stages: explicit SMPLify stages; empty means ``mode``'s default schedule.
        body_model: ``load_body_model`` name or path.
        prior: ``load_pose_prior`` name or path.
        init: ``"mean"``, ``"fits:PATH"`` (an output of this command) or
            ``"checkpoint:PATH"`` (not available yet).
        shard_size: samples per shard (the unit of resuming and of worker tasks).
        batch_size: samples per SMPLify batch within a shard.
        valid_threshold: a fit is valid iff its reprojection loss is below this.
        limit: fit only the first ``limit`` samples (None: all).
        seed: torch seed of shard ``i`` is ``seed + i``.
        device: torch device of the fits; never defaults to CUDA.
    """

    mode: str = "anchored"
    stages: tuple[StageConfig, ...] = ()
    body_model: str = "open"
    prior: str = "open"
    init: str = "mean"
    shard_size: int = 256
    batch_size: int = 64
    valid_threshold: float = VALID_THRESHOLD
    limit: int | None = None
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.mode not in SMPLIFY_MODES:
            raise FitDatasetError(
                f"mode must be one of {', '.join(map(repr, SMPLIFY_MODES))}, got {self.mode!r}"
            )
        for name in ("shard_size", "batch_size"):
            if getattr(self, name) < 1:
                raise FitDatasetError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise FitDatasetError(f"limit must be >= 1, got {self.limit}")
        parse_init(self.init)

    def smplify_config(self) -> SMPLifyConfig:
        """SMPLify's settings; from the mean pose, those of
        :func:`~spin.fitting.smplify.mean_start_config` (several headings, no anchors)."""
        config = SMPLifyConfig(mode=self.mode, stages=tuple(self.stages))
        return mean_start_config(config) if parse_init(self.init)[0] == "mean" else config

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def parse_init(spec: str) -> tuple[str, Path | None]:
    """``"mean"`` -> ``("mean", None)``; ``"fits:PATH"`` / ``"checkpoint:PATH"`` -> kind, path.

    Raises:
        InitUnavailableError: for ``checkpoint:``, until regressor checkpoints exist.
        FitDatasetError: for anything else.
    """
    kind, _, path = spec.partition(":")
    if kind == "mean" and not path:
        return "mean", None
    if kind in ("fits", "checkpoint") and path:
        if kind == "checkpoint":
            raise InitUnavailableError(
                "--init checkpoint:PATH is not available yet: regressor checkpoints come with "
                "the training issue; use --init mean or --init fits:PATH"
            )
        return kind, Path(path)
    raise FitDatasetError(
        f"unknown initialisation {spec!r}; use 'mean', 'fits:PATH' or 'checkpoint:PATH'"
    )


def config_hash(config: FitDatasetConfig, fingerprint: str) -> str:
    """Hash of the settings that change the numbers plus the inputs' ``fingerprint``.

    The init file's path is replaced by its kind: its content is in ``fingerprint``.
    """
    settings = {**asdict(config), "init": parse_init(config.init)[0]}
    text = json.dumps(
        {"format": OUTPUT_FORMAT_VERSION, "settings": settings, "inputs": fingerprint},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_smplify(config: FitDatasetConfig) -> SMPLify:
    """The SMPLify of a configuration: body model and pose prior loaded on ``config.device``."""
    from spin.fitting.priors import load_pose_prior  # imported where a fit runs, not before

    body_model = load_body_model(config.body_model).to(config.device)
    prior = load_pose_prior(config.prior)
    if isinstance(prior, torch.nn.Module):
        prior = prior.to(config.device)
    return SMPLify(body_model, prior, config.smplify_config())


# --- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DatasetInputs:
    """What the fit reads from a SPIN ``.npz``, in the crop frame.

    Attributes:
        keypoints: ``(N, 49, 3)`` float32 SPIN-49 crop pixels and confidences.
        imgname: ``(N,)`` str.
        sample_index: ``(N,)`` int64 row of each sample in the source file.
        status: ``(N,)`` int8 :class:`FitStatus`: ``OK`` or an input problem.
    """

    keypoints: np.ndarray
    imgname: np.ndarray
    sample_index: np.ndarray
    status: np.ndarray

    def __len__(self) -> int:
        return len(self.sample_index)


def keypoints_to_crop(
    keypoints: np.ndarray, center: np.ndarray, scale: np.ndarray, crop_size: int = CROP_SIZE
) -> np.ndarray:
    """Map image-pixel keypoints to the crop of each sample's box (no rotation, no flip).

    Args:
        keypoints: ``(N, J, C)``, pixels ``x, y`` then ``C - 2`` channels kept as they are.
        center: ``(N, 2)`` box centres in pixels.
        scale: ``(N,)`` box side / 200.
        crop_size: side of the square crop in pixels.

    Returns:
        ``(N, J, C)`` float64; NaN for samples whose box is not finite and positive.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    center = np.asarray(center, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        zoom = np.where(scale > 0, crop_size / (BOX_SIZE_PER_SCALE * scale), np.nan)
        xy = (keypoints[..., :2] - center[:, None]) * zoom[:, None, None] + crop_size / 2.0
    return np.concatenate([xy, keypoints[..., 2:]], axis=-1)


def input_status(
    keypoints: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    ignored_joints: Sequence[str] = IGNORED_JOINTS,
) -> np.ndarray:
    """``(N,)`` int8 :class:`FitStatus` of each sample's inputs (first problem found).

    Args:
        keypoints: ``(N, 49, 3)`` SPIN-49 keypoints with confidences.
        center: ``(N, 2)``; scale: ``(N,)``.
        ignored_joints: SPIN-49 names that do not count as evidence (SMPLify ignores them).
    """
    used = np.ones(keypoints.shape[1], dtype=bool)
    used[[SPIN_49.index(name) for name in ignored_joints]] = False
    with np.errstate(invalid="ignore"):
        confident = ((keypoints[..., 2] > 0) & used).sum(axis=1)
        bad_box = ~np.isfinite(center).all(axis=1) | ~np.isfinite(scale) | ~(scale > 0)
    status = np.full(len(keypoints), FitStatus.OK, dtype=np.int8)
    status[confident < MIN_CONFIDENT_KEYPOINTS] = FitStatus.TOO_FEW_KEYPOINTS
    status[~np.isfinite(keypoints).all(axis=(1, 2))] = FitStatus.NONFINITE_KEYPOINTS
    status[bad_box] = FitStatus.BAD_BOX
    return status


def dataset_inputs(
    path: str | os.PathLike,
    limit: int | None = None,
    ignored_joints: Sequence[str] = IGNORED_JOINTS,
) -> DatasetInputs:
    """Read a SPIN ``.npz`` (first ``limit`` samples) into crop-frame keypoints.

    Only the layout is validated here; bad values make bad samples, not errors.
    """
    path = Path(path)
    if not path.is_file():
        raise FitDatasetError(f"{path}: no such dataset file (a SPIN-format .npz)")
    expected = {
        "imgname": (),
        "center": (2,),
        "scale": (),
        "part": (NUM_GT_JOINTS, 3),
        "openpose": (NUM_OPENPOSE_JOINTS, 3),
    }
    try:  # only these keys, each member's declared shape checked before it is read
        arrays = read_npz(path, expected, check=sample_axis_check(path))
    except NpzError as error:
        raise FitDatasetError(str(error)) from None
    missing = [key for key in expected if key not in arrays]
    if missing:
        raise FitDatasetError(
            f"{path}: missing {missing}; spin-fit-dataset needs a SPIN-format .npz "
            "(see spin.data.formats) with imgname, center, scale, part and openpose"
        )
    arrays = {key: value[:limit] for key, value in arrays.items()}
    num = len(arrays["imgname"])
    if num == 0:
        raise FitDatasetError(f"{path} holds no samples")
    for key, trailing in expected.items():
        if arrays[key].shape != (num, *trailing):
            raise FitDatasetError(
                f"{path}: expected {key} of shape (N, {', '.join(map(str, trailing))}) "
                f"with N = {num}, got {arrays[key].shape}".replace(", )", ")")
            )
    keypoints = np.concatenate([arrays["openpose"], arrays["part"]], axis=1)
    center, scale = arrays["center"].astype(np.float64), arrays["scale"].astype(np.float64)
    return DatasetInputs(
        keypoints=keypoints_to_crop(keypoints, center, scale).astype(np.float32),
        imgname=arrays["imgname"].astype(str),
        sample_index=np.arange(num, dtype=np.int64),
        status=input_status(keypoints, center, scale, ignored_joints),
    )


# --- initialisation ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Initialisation:
    """Starting point of each sample's fit.

    Attributes:
        pose_rotvecs: ``(N, 72)`` float32 axis-angle.
        betas: ``(N, NB)`` float32.
        cam_t: ``(N, 3)`` float32; NaN rows are estimated from the keypoints.
    """

    pose_rotvecs: np.ndarray
    betas: np.ndarray
    cam_t: np.ndarray

    def select(self, rows: np.ndarray | slice) -> Initialisation:
        return Initialisation(self.pose_rotvecs[rows], self.betas[rows], self.cam_t[rows])

    def fingerprint_arrays(self) -> tuple[np.ndarray, ...]:
        return (self.pose_rotvecs, self.betas, self.cam_t)


def mean_initialisation(num: int, num_betas: int) -> Initialisation:
    """The mean pose (zero body pose, upright and facing the camera), zero betas, camera
    translation estimated by SMPLify."""
    pose = np.zeros((num, 72), dtype=np.float32)
    pose[:, :3] = MEAN_GLOBAL_ORIENT
    return Initialisation(
        pose_rotvecs=pose,
        betas=np.zeros((num, num_betas), dtype=np.float32),
        cam_t=np.full((num, 3), np.nan, dtype=np.float32),
    )


def fits_initialisation(
    path: str | os.PathLike, sample_index: np.ndarray, imgname: np.ndarray, num_betas: int
) -> Initialisation:
    """Start from an existing output of :func:`fit_dataset` on the same dataset.

    Samples whose stored pose or betas are not finite start from the mean pose; those
    without a finite ``cam_t`` get theirs estimated.
    """
    fits, _ = load_fits(path)
    rows = {int(s): i for i, s in enumerate(fits["sample_index"])}
    missing = [int(s) for s in sample_index if int(s) not in rows]
    if missing:
        raise FitDatasetError(
            f"{path} has no fits for {len(missing)} of the samples (first: {missing[0]}); "
            "--init fits:PATH needs an output of spin-fit-dataset on the same dataset"
        )
    take = np.array([rows[int(s)] for s in sample_index], dtype=np.int64)
    if not np.array_equal(fits["imgname"][take].astype(str), np.asarray(imgname).astype(str)):
        raise FitDatasetError(
            f"{path} was made from another dataset (image names differ); "
            "--init fits:PATH needs an output of spin-fit-dataset on the same dataset"
        )
    if fits["betas"].shape[1] != num_betas:
        raise FitDatasetError(
            f"{path} has {fits['betas'].shape[1]} betas, the body model {num_betas}; "
            "use fits made with the same body model"
        )
    init = Initialisation(
        pose_rotvecs=fits["pose"][take].astype(np.float32),
        betas=fits["betas"][take].astype(np.float32),
        cam_t=fits["cam_t"][take].astype(np.float32),
    )
    unusable = ~(np.isfinite(init.pose_rotvecs).all(1) & np.isfinite(init.betas).all(1))
    if unusable.any():
        mean = mean_initialisation(int(unusable.sum()), num_betas)
        init.pose_rotvecs[unusable] = mean.pose_rotvecs
        init.betas[unusable] = mean.betas
        init.cam_t[unusable] = mean.cam_t
    return init


def load_initialisation(spec: str, inputs: DatasetInputs, num_betas: int) -> Initialisation:
    """The :class:`Initialisation` named by ``spec`` (see :func:`parse_init`)."""
    kind, path = parse_init(spec)
    if kind == "fits":
        return fits_initialisation(path, inputs.sample_index, inputs.imgname, num_betas)
    return mean_initialisation(len(inputs), num_betas)


# --- fitting ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Fits:
    """Per-sample results, one row per sample (the output file's datasets).

    Attributes:
        pose_rotvecs: ``(N, 72)`` axis-angle, global orientation in the crop camera frame.
        betas: ``(N, NB)``.
        cam_t: ``(N, 3)`` translation in the crop camera frame.
        reprojection_loss: ``(N,)`` SPIN's reprojection loss (mean of ``joint_losses``).
        joint_losses: ``(N, 49)`` per-keypoint terms ``conf^2 * GMoF`` in crop pixels^2.
        status: ``(N,)`` int8 :class:`FitStatus`.
        sample_index: ``(N,)`` int64 row in the source ``.npz``.
    """

    pose_rotvecs: np.ndarray
    betas: np.ndarray
    cam_t: np.ndarray
    reprojection_loss: np.ndarray
    joint_losses: np.ndarray
    status: np.ndarray
    sample_index: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        return self.status == FitStatus.OK

    def __len__(self) -> int:
        return len(self.sample_index)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The output file's datasets (``pose`` is SPIN's name for ``pose_rotvecs``)."""
        return {
            "pose": self.pose_rotvecs.astype(np.float32),
            "betas": self.betas.astype(np.float32),
            "cam_t": self.cam_t.astype(np.float32),
            "reprojection_loss": self.reprojection_loss.astype(np.float32),
            "joint_losses": self.joint_losses.astype(np.float32),
            "valid": self.valid,
            "status": self.status.astype(np.int8),
            "sample_index": self.sample_index.astype(np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays) -> Fits:
        return cls(
            pose_rotvecs=np.asarray(arrays["pose"]),
            betas=np.asarray(arrays["betas"]),
            cam_t=np.asarray(arrays["cam_t"]),
            reprojection_loss=np.asarray(arrays["reprojection_loss"]),
            joint_losses=np.asarray(arrays["joint_losses"]),
            status=np.asarray(arrays["status"]),
            sample_index=np.asarray(arrays["sample_index"]),
        )

    @classmethod
    def concatenate(cls, parts: Sequence[Fits]) -> Fits:
        arrays = [part.to_arrays() for part in parts]
        return cls.from_arrays({key: np.concatenate([a[key] for a in arrays]) for key in arrays[0]})


DATASET_DESCRIPTIONS = {
    "pose": "(N, 72) float32 axis-angle, global orientation first, crop camera frame",
    "betas": "(N, NB) float32 shape coefficients",
    "cam_t": "(N, 3) float32 body translation in the crop camera frame (metres); NaN if unfitted",
    "reprojection_loss": "(N,) float32 mean over the 49 keypoints of conf^2 * GMoF (crop px^2, "
    "SPIN's); +inf if not fitted",
    "joint_losses": "(N, 49) float32 per-keypoint terms of reprojection_loss; NaN if not fitted",
    "valid": "(N,) bool: status == ok (finite fit, reprojection_loss < valid_threshold)",
    "status": "(N,) int8 FitStatus, codes in the file attribute status_codes",
    "sample_index": "(N,) int64 row of the sample in the source .npz",
    "imgname": "(N,) str image path from the source .npz",
}


def initial_cam_t(
    smplify: SMPLify, keypoints: torch.Tensor, intrinsics: torch.Tensor, pose_rotvecs, betas
) -> torch.Tensor:
    """``(B, 3)`` camera translation aligning the initial body's joints with the keypoints
    (SMPLify's own estimate: all keypoints, confidences before ignoring joints).

    Args:
        keypoints: ``(B, 49, 3)``; intrinsics: ``(B, 3, 3)``; pose_rotvecs: ``(B, 72)``;
        betas: ``(B, NB)``.
    """
    with torch.no_grad():
        joints = smplify.body_model(pose_rotvecs=pose_rotvecs, betas=betas).joints_spin
    conf = torch.nan_to_num(keypoints[..., 2], nan=0.0, posinf=0.0, neginf=0.0).clamp(min=0.0)
    return estimate_translation(joints, torch.nan_to_num(keypoints[..., :2]), conf, intrinsics)


def fit_batch(smplify: SMPLify, keypoints: np.ndarray, init: Initialisation) -> Fits:
    """Fit one SMPLify batch in the crop frame.

    Args:
        keypoints: ``(B, 49, 3)`` crop pixels and confidences.
        init: the batch's :class:`Initialisation`; NaN ``cam_t`` rows are estimated.

    Returns:
        :class:`Fits` with ``status`` ``OK``, ``TOO_FEW_KEYPOINTS`` (SMPLify found no
        evidence) or ``FIT_NONFINITE``; ``sample_index`` is ``0 .. B-1``.
    """
    ref = smplify.body_model.v_template

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array), dtype=ref.dtype, device=ref.device)

    batch = len(keypoints)
    kp, pose, betas = tensor(keypoints), tensor(init.pose_rotvecs), tensor(init.betas)
    intrinsics = crop_intrinsics((batch,), kp)
    cam_t = tensor(init.cam_t)
    unknown = ~torch.isfinite(cam_t).all(dim=1)
    if unknown.all():
        cam_t = None  # SMPLify estimates it
    elif unknown.any():
        estimated = initial_cam_t(smplify, kp, intrinsics, pose, betas)
        cam_t = torch.where(unknown[:, None], estimated, cam_t)
    result = smplify(kp, intrinsics, init_pose_rotvecs=pose, init_betas=betas, init_cam_t=cam_t)
    fits = Fits(
        pose_rotvecs=result.pose_rotvecs.cpu().numpy().astype(np.float32),
        betas=result.betas.cpu().numpy().astype(np.float32),
        cam_t=result.cam_t.cpu().numpy().astype(np.float32),
        reprojection_loss=result.reprojection_loss.cpu().numpy().astype(np.float32),
        joint_losses=result.joint_losses.cpu().numpy().astype(np.float32),
        status=np.full(batch, FitStatus.OK, dtype=np.int8),
        sample_index=np.arange(batch, dtype=np.int64),
    )
    finite = np.ones(batch, dtype=bool)
    for values in (fits.pose_rotvecs, fits.betas, fits.cam_t, fits.joint_losses):
        finite &= np.isfinite(values.reshape(batch, -1)).all(axis=1)
    fits.status[~finite] = FitStatus.FIT_NONFINITE
    fits.status[~result.valid.cpu().numpy()] = FitStatus.TOO_FEW_KEYPOINTS
    return fits


def unfitted(init: Initialisation, status: np.ndarray, sample_index: np.ndarray) -> Fits:
    """Rows for samples that are not fitted: the initial pose and betas, NaN ``cam_t`` and
    ``joint_losses``, ``+inf`` reprojection loss."""
    num = len(status)
    return Fits(
        pose_rotvecs=init.pose_rotvecs.astype(np.float32, copy=True),
        betas=init.betas.astype(np.float32, copy=True),
        cam_t=np.full((num, 3), np.nan, dtype=np.float32),
        reprojection_loss=np.full(num, np.inf, dtype=np.float32),
        joint_losses=np.full((num, NUM_KEYPOINTS), np.nan, dtype=np.float32),
        status=status.astype(np.int8, copy=True),
        sample_index=sample_index.astype(np.int64, copy=True),
    )


# --- shards -----------------------------------------------------------------------------------


def shard_ranges(num_samples: int, shard_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` consecutive sample ranges of ``shard_size`` (the last shorter)."""
    return [(s, min(s + shard_size, num_samples)) for s in range(0, num_samples, shard_size)]


@dataclass(frozen=True, eq=False)
class ShardTask:
    """One shard's work, self-contained so a worker process can run it.

    Attributes:
        index, start, stop: shard number and its sample range.
        path: the shard file to write.
        config, config_hash: the run's configuration and its hash.
        keypoints: ``(n, 49, 3)`` crop keypoints; status: ``(n,)`` input status;
        sample_index: ``(n,)``; init: the shard's :class:`Initialisation`.
        threads: torch threads to use in a worker process (None: leave as is).
    """

    index: int
    start: int
    stop: int
    path: Path
    config: FitDatasetConfig
    config_hash: str
    keypoints: np.ndarray
    status: np.ndarray
    sample_index: np.ndarray
    init: Initialisation
    threads: int | None = None


@dataclass(frozen=True)
class ShardReport:
    index: int
    num_samples: int
    num_fitted: int
    seconds: float


def run_shard(
    task: ShardTask,
    make_smplify: Callable[[FitDatasetConfig], SMPLify] = build_smplify,
    on_progress: Callable[[int], None] | None = None,
) -> ShardReport:
    """Fit a shard in batches and write it atomically to ``task.path``.

    Args:
        make_smplify: builds the SMPLify (body model, prior) from the configuration.
        on_progress: called with the number of samples finished after each batch.
    """
    start_time = time.perf_counter()
    if task.threads is not None:
        torch.set_num_threads(task.threads)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(task.config.seed + task.index)
        fits, num_fitted = _fit_shard(task, make_smplify, on_progress)
    write_shard(task.path, fits, task.config_hash, task.start, task.stop)
    if on_progress is not None:
        on_progress(len(fits) - num_fitted)
    return ShardReport(task.index, len(fits), num_fitted, time.perf_counter() - start_time)


def _fit_shard(task: ShardTask, make_smplify, on_progress) -> tuple[Fits, int]:
    cfg = task.config
    fits = unfitted(task.init, task.status, task.sample_index)
    todo = np.flatnonzero(task.status == FitStatus.OK)
    if len(todo):
        smplify = make_smplify(cfg)
    for begin in range(0, len(todo), cfg.batch_size):
        rows = todo[begin : begin + cfg.batch_size]
        batch = fit_batch(smplify, task.keypoints[rows], task.init.select(rows))
        for name in ("pose_rotvecs", "betas", "cam_t", "reprojection_loss", "joint_losses"):
            getattr(fits, name)[rows] = getattr(batch, name)
        fits.status[rows] = batch.status
        if on_progress is not None:
            on_progress(len(rows))
    with np.errstate(invalid="ignore"):
        above = (fits.status == FitStatus.OK) & ~(fits.reprojection_loss < cfg.valid_threshold)
    fits.status[above] = FitStatus.ABOVE_THRESHOLD
    return fits, len(todo)


def write_shard(path: Path, fits: Fits, config_hash: str, start: int, stop: int) -> None:
    """Write a shard's fits atomically (temporary file in the same folder, then rename)."""
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                **fits.to_arrays(),
                config_hash=np.array(config_hash),
                start=np.array(start),
                stop=np.array(stop),
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def read_shard(path: Path, config_hash: str, start: int, stop: int) -> Fits:
    """Read a finished shard, checking it belongs to this configuration and range.

    Raises:
        ShardMismatchError: it was written by another configuration, data or shard size.
    """
    folder = path.parent
    hint = (
        f"delete {folder} to start over, or run with --overwrite "
        "(or rerun with the configuration that made it)"
    )
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as error:
        raise ShardMismatchError(f"{path} is unreadable ({error}); delete it to refit it") from None
    if str(arrays.get("config_hash")) != config_hash:
        raise ShardMismatchError(
            f"{path} was written by a different configuration or from different data "
            f"(hash {arrays.get('config_hash')}, this run {config_hash}); {hint}"
        )
    if (int(arrays["start"]), int(arrays["stop"])) != (start, stop):
        raise ShardMismatchError(
            f"{path} covers samples {int(arrays['start'])}..{int(arrays['stop'])}, this run "
            f"expects {start}..{stop}; {hint}"
        )
    return Fits.from_arrays(arrays)


def finished_shards(
    folder: Path, ranges: Sequence[tuple[int, int]], config_hash: str
) -> dict[int, Path]:
    """Shards already on disk (checked), by index; stale temporary files are removed."""
    for stale in folder.glob(TEMP_PREFIX + "*"):
        stale.unlink(missing_ok=True)
    done = {}
    for path in sorted(folder.glob(SHARD_GLOB)):
        match = SHARD_PATTERN.fullmatch(path.name)
        if match is None:
            continue
        index = int(match.group(1))
        if index >= len(ranges):
            raise ShardMismatchError(
                f"{path} is beyond this run's {len(ranges)} shards (another --limit or "
                f"--shard-size?); delete {folder} or run with --overwrite"
            )
        read_shard(path, config_hash, *ranges[index])
        done[index] = path
    return done


# --- output -----------------------------------------------------------------------------------


def _version() -> str:
    try:
        return importlib.metadata.version("spin-hmr")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def merge_shards(
    paths: Sequence[Path],
    ranges: Sequence[tuple[int, int]],
    config_hash: str,
    out: Path,
    imgname: np.ndarray,
    attrs: dict[str, object],
) -> Fits:
    """Concatenate the shards (in order) and write the HDF5 output atomically
    (``OUT.tmp``, then rename)."""
    fits = Fits.concatenate(
        [read_shard(p, config_hash, *r) for p, r in zip(paths, ranges, strict=True)]
    )
    if len(fits) != len(imgname):
        raise FitDatasetError(f"shards hold {len(fits)} samples, expected {len(imgname)}")

    def fill(f) -> None:
        for name, values in fits.to_arrays().items():
            f.create_dataset(name, data=values).attrs["description"] = DATASET_DESCRIPTIONS[name]
        f.create_dataset("imgname", data=imgname.astype(object), dtype=h5py.string_dtype()).attrs[
            "description"
        ] = DATASET_DESCRIPTIONS["imgname"]
        for key, value in attrs.items():
            f.attrs[key] = value

    atomic_write_hdf5(out, fill)  # built in memory: a full disk is an OSError, not a crash
    return fits


def load_fits(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """An output file's datasets (``imgname`` as str) and attributes."""
    path = Path(path)
    if not path.is_file():
        raise FitDatasetError(f"{path}: no such fits file (an output of spin-fit-dataset)")
    with h5py.File(path, "r") as f:
        if "pose" not in f or "sample_index" not in f:
            raise FitDatasetError(f"{path} is not an output of spin-fit-dataset (no pose)")
        arrays = {key: f[key][()] for key in f if key != "imgname"}
        if "imgname" in f:
            arrays["imgname"] = np.asarray(f["imgname"].asstr()[()], dtype=str)
        attrs = dict(f.attrs)
    version = attrs.get("format_version")
    if version is None or int(version) != OUTPUT_FORMAT_VERSION:
        raise FitDatasetError(
            f"{path} has format version {version}, this code reads version "
            f"{OUTPUT_FORMAT_VERSION} (version 2 stores SPIN's per-joint mean reprojection loss, "
            "version 1 the sum); fit the dataset again with spin-fit-dataset"
        )
    return arrays, attrs


# --- summary ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitSummary:
    """What a run did.

    Attributes:
        out: the output file (written only when ``complete``).
        complete: every shard is done and merged.
        num_samples: samples in the run; shards_total / shards_resumed / shards_fitted.
        fitted_now: samples fitted in this run; fit_seconds: time spent fitting them.
        seconds: wall time of the whole run.
        counts: samples per :class:`FitStatus` name (complete runs only).
        loss_quantiles: 5/50/95 % of the finite reprojection losses (complete runs only).
    """

    out: Path
    complete: bool
    num_samples: int
    shards_total: int
    shards_resumed: int
    shards_fitted: int
    fitted_now: int
    fit_seconds: float
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)
    loss_quantiles: dict[str, float] = field(default_factory=dict)

    @property
    def fits_per_second(self) -> float:
        return self.fitted_now / self.fit_seconds if self.fit_seconds > 0 else float("nan")

    @property
    def valid_fraction(self) -> float:
        total = sum(self.counts.values())
        return self.counts.get("ok", 0) / total if total else float("nan")

    def format(self) -> str:
        lines = [
            f"samples: {self.num_samples} in {self.shards_total} shards "
            f"({self.shards_resumed} resumed, {self.shards_fitted} fitted now)",
            f"fitted now: {self.fitted_now} in {self.fit_seconds:.1f} s "
            f"({self.fits_per_second:.2f} fits/s)",
        ]
        if self.complete:
            lines.append(f"valid: {self.counts.get('ok', 0)} ({100 * self.valid_fraction:.1f}%)")
            for name, count in self.counts.items():
                if name != "ok" and count:
                    lines.append(f"invalid, {name.replace('_', ' ')}: {count}")
            if self.loss_quantiles:
                q = ", ".join(f"{k} {v:.3g}" for k, v in self.loss_quantiles.items())
                lines.append(f"reprojection loss quantiles: {q}")
            lines.append(f"wrote {self.out}")
        else:
            done = self.shards_resumed + self.shards_fitted
            lines.append(
                f"stopped with {done}/{self.shards_total} shards done; rerun the same command "
                f"to continue (no {self.out} yet)"
            )
        lines.append(f"took {self.seconds:.1f} s")
        return "\n".join(lines)


def status_counts(status: np.ndarray) -> dict[str, int]:
    return {s.name.lower(): int((status == s).sum()) for s in FitStatus}


def loss_quantiles(loss: np.ndarray, quantiles: Iterable[float] = (5, 50, 95)) -> dict[str, float]:
    finite = loss[np.isfinite(loss)]
    if not len(finite):
        return {}
    return {f"{q:g}%": float(np.percentile(finite, q)) for q in quantiles}


# --- the whole run ----------------------------------------------------------------------------


def shard_folder(out: Path) -> Path:
    return out.with_name(out.name + ".shards")


def _available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _fingerprint(inputs: DatasetInputs, init: Initialisation) -> str:
    digest = hashlib.sha256()
    for array in (inputs.keypoints, inputs.status, *init.fingerprint_arrays()):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _run_tasks(
    tasks: Sequence[ShardTask],
    make_smplify: Callable[[FitDatasetConfig], SMPLify],
    workers: int,
    bar,
) -> list[ShardReport]:
    if workers == 1:
        return [run_shard(task, make_smplify, bar.update) for task in tasks]
    from joblib import Parallel, delayed

    reports = []
    parallel = Parallel(n_jobs=workers, backend=PARALLEL_BACKEND, return_as="generator_unordered")
    for report in parallel(delayed(run_shard)(task, make_smplify) for task in tasks):
        bar.update(report.num_samples)
        reports.append(report)
    return reports


def fit_dataset(
    source: str | os.PathLike,
    out: str | os.PathLike,
    config: FitDatasetConfig,
    *,
    workers: int = 1,
    overwrite: bool = False,
    keep_shards: bool = False,
    max_shards: int | None = None,
    progress: bool = True,
    make_smplify: Callable[[FitDatasetConfig], SMPLify] | None = None,
) -> FitSummary:
    """Fit every sample of a SPIN ``.npz`` and write the HDF5 ``out`` (see the module doc).

    Args:
        source: the dataset ``.npz``.
        out: the ``.h5`` to write; shards go to ``out.shards/``.
        config: :class:`FitDatasetConfig`.
        workers: joblib (loky) worker processes; 1 fits in this process. Each worker uses
            ``cores // workers`` torch threads.
        overwrite: delete an existing ``out`` and its shards first.
        keep_shards: keep ``out.shards/`` after merging.
        max_shards: fit at most this many shards, then stop without merging (a later run
            continues); None: all.
        progress: show a tqdm bar over samples (stderr).
        make_smplify: builds the SMPLify from the configuration, in each worker (must be
            picklable); None: :func:`build_smplify`.

    Raises:
        FitDatasetError: bad inputs, an existing output, or shards of another configuration.
    """
    start_time = time.perf_counter()
    make_smplify = make_smplify or build_smplify
    source, out = Path(source), Path(out)
    if out.suffix not in (".h5", ".hdf5"):
        raise FitDatasetError(f"{out}: the output is an HDF5 file; give a path ending in .h5")
    if workers < 1:
        raise FitDatasetError(f"workers must be >= 1, got {workers}")
    folder = shard_folder(out)
    if overwrite:
        out.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
    elif out.exists():
        raise FitDatasetError(f"{out} exists; pass --overwrite to replace it")

    inputs = dataset_inputs(source, config.limit, config.smplify_config().ignored_joints)
    num_betas = make_smplify(config).body_model.num_betas  # also fails early on bad names
    init = load_initialisation(config.init, inputs, num_betas)
    digest = config_hash(config, _fingerprint(inputs, init))
    ranges = shard_ranges(len(inputs), config.shard_size)
    folder.mkdir(parents=True, exist_ok=True)
    done = finished_shards(folder, ranges, digest)
    threads = max(1, _available_cores() // workers) if workers > 1 else None
    tasks = [
        ShardTask(
            index=i,
            start=start,
            stop=stop,
            path=folder / SHARD_NAME.format(i),
            config=config,
            config_hash=digest,
            keypoints=inputs.keypoints[start:stop],
            status=inputs.status[start:stop],
            sample_index=inputs.sample_index[start:stop],
            init=init.select(slice(start, stop)),
            threads=threads,
        )
        for i, (start, stop) in enumerate(ranges)
        if i not in done
    ][:max_shards]

    from tqdm import tqdm

    resumed = sum(stop - start for i, (start, stop) in enumerate(ranges) if i in done)
    fit_start = time.perf_counter()
    with tqdm(
        total=len(inputs), initial=resumed, unit="sample", disable=not progress, smoothing=0.1
    ) as bar:
        reports = _run_tasks(tasks, make_smplify, workers, bar)
    fit_seconds = time.perf_counter() - fit_start

    summary = FitSummary(
        out=out,
        complete=False,
        num_samples=len(inputs),
        shards_total=len(ranges),
        shards_resumed=len(done),
        shards_fitted=len(reports),
        fitted_now=sum(r.num_fitted for r in reports),
        fit_seconds=fit_seconds,
        seconds=0.0,
    )
    if len(done) + len(reports) < len(ranges):
        return replace(summary, seconds=time.perf_counter() - start_time)

    attrs = {
        "config": config.to_json(),
        "config_hash": digest,
        "mode": config.mode,
        "body_model": config.body_model,
        "prior": config.prior,
        "init": config.init,
        "source": str(source.resolve()),
        "frame": FRAME,
        "frame_description": FRAME_DESCRIPTION,
        "crop_size": CROP_SIZE,
        "focal_length": FOCAL_LENGTH,
        "valid_threshold": config.valid_threshold,
        "status_codes": json.dumps(STATUS_CODES),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "spin_hmr_version": _version(),
        "format_version": OUTPUT_FORMAT_VERSION,
    }
    paths = [folder / SHARD_NAME.format(i) for i in range(len(ranges))]
    fits = merge_shards(paths, ranges, digest, out, inputs.imgname, attrs)
    if not keep_shards:
        with contextlib.suppress(OSError):
            shutil.rmtree(folder)
    return replace(
        summary,
        complete=True,
        counts=status_counts(fits.status),
        loss_quantiles=loss_quantiles(fits.reprojection_loss),
        seconds=time.perf_counter() - start_time,
    )
