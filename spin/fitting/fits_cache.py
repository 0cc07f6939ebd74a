"""The fits cache: one best SMPLify fit per dataset sample, kept across training and crashes.

SPIN keeps, for every training sample, the best fit found so far (REFERENCE.md, "The loop in
one paragraph"). This module holds those fits, decides when a new fit replaces the cached one,
and persists them.

Frame. Records are stored in the sample's **un-augmented** crop frame, the frame of
``spin-fit-dataset``'s static fits: a fit made on an augmented (rotated, then flipped) view is
un-augmented with :func:`~spin.data.augment.unaugment_pose_rotvecs` before it is written, and
a record is augmented with :func:`~spin.data.augment.augment_pose_rotvecs` for the view that
reads it. Betas do not depend on the view. No camera is stored: like SPIN, the trainer places
a cached body with a camera estimated from the current keypoints.

Records, per dataset name, as numpy arrays of ``N`` samples:

- ``pose`` ``(N, 72)`` float32 axis-angle, global orientation first (un-augmented frame);
- ``betas`` ``(N, NB)`` float32;
- ``loss`` ``(N,)`` float32 reprojection loss the fit achieved when it was stored (``+inf``:
  no fit; the pose and betas of such a row are zeros and mean nothing);
- ``valid`` ``(N,)`` bool, ``loss < valid_threshold``;
- ``updated_step`` ``(N,)`` int64 training step of the last update (``-1``: never updated in
  training, e.g. empty or a static fit).

The rule (SPIN's): a new fit replaces the cached one only if its reprojection loss is lower
than the cached fit's loss **measured on the same augmented keypoints** (the caller scores the
fetched fit with :meth:`~spin.fitting.smplify.SMPLify.reprojection_loss`; the loss stored with
a fit was measured on another view and is only for validity and logging). Updates go through
:meth:`FitsCache.apply_updates` as a list of :class:`Update`, so updates computed by several
processes can be gathered and applied identically everywhere.

Persistence (:meth:`FitsCache.save`) is atomic: the whole cache is written to ``PATH.tmp``,
flushed and fsynced, renamed over ``PATH`` and the folder fsynced, so ``PATH`` is always either
the previous complete cache or the new one. A failed save removes ``PATH.tmp``; a process
killed mid-save can leave it behind, and it is ignored by :meth:`FitsCache.load` (which reads
only ``PATH``) and overwritten by the next save.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
import torch
from torch import Tensor

from spin.atomic import atomic_write_hdf5
from spin.data.augment import augment_pose_rotvecs, unaugment_pose_rotvecs

__all__ = [
    "FITS_CACHE_FORMAT",
    "FITS_CACHE_FORMAT_VERSION",
    "CachedFits",
    "FitSupervision",
    "FitsCache",
    "FitsCacheConfig",
    "FitsCacheError",
    "Update",
    "supervision_from_cache",
]

FITS_CACHE_FORMAT = "spin-fits-cache"
"""The ``format`` attribute of a saved cache (a ``spin-fit-dataset`` output has none)."""
FITS_CACHE_FORMAT_VERSION = 2
"""Bumped whenever the file layout or the meaning of a field changes; :meth:`FitsCache.load`
refuses other versions. 2: ``loss`` is SPIN's per-joint mean reprojection loss (1: the sum)."""
POSE_DIM = 72  # 24 SMPL joints x axis-angle
RECORD_FIELDS = ("pose", "betas", "loss", "valid", "updated_step")
NEVER_UPDATED = -1


class FitsCacheError(ValueError):
    """A bad cache file, static-fits file or argument; the message says how to fix it."""


@dataclass(frozen=True)
class FitsCacheConfig:
    """Fits cache settings; the defaults are SPIN's.

    Attributes:
        valid_threshold: a fit is valid (may supervise the regressor) iff its reprojection
            loss, SPIN's per-joint mean of ``conf^2 * GMoF`` over the 49 joints, is below
            this (SPIN: 100).
        max_abs_beta: fits with any ``|beta| > max_abs_beta`` supervise with betas reset to
            zero. Applied when a fit is used, in :func:`supervision_from_cache`; the cache
            stores the betas SMPLify found.
        num_betas: shape coefficients per record (the body model's).
    """

    valid_threshold: float = 100.0
    max_abs_beta: float = 3.0
    num_betas: int = 10

    def __post_init__(self) -> None:
        if not self.valid_threshold > 0:
            raise FitsCacheError(f"valid_threshold must be > 0, got {self.valid_threshold}")
        if not self.max_abs_beta > 0:
            raise FitsCacheError(f"max_abs_beta must be > 0, got {self.max_abs_beta}")
        if self.num_betas < 1:
            raise FitsCacheError(f"num_betas must be >= 1, got {self.num_betas}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FitsCacheConfig:
        return cls(**json.loads(text))


@dataclass(frozen=True, eq=False)
class CachedFits:
    """The cached fits of a batch, in that batch's augmented frame.

    Attributes:
        pose_rotvecs: ``(B, 72)`` axis-angle, augmented like the batch's samples.
        betas: ``(B, NB)``.
        loss: ``(B,)`` reprojection loss stored with the fit (measured on the view that
            produced it; ``+inf`` where there is no fit).
        valid: ``(B,)`` bool, the stored loss is below the validity threshold.
        has_fit: ``(B,)`` bool, the sample has a fit (where False, pose and betas are
            placeholders).
    """

    pose_rotvecs: Tensor
    betas: Tensor
    loss: Tensor
    valid: Tensor
    has_fit: Tensor


class FitSupervision(NamedTuple):
    """What a cached fit contributes to the losses (see :func:`supervision_from_cache`).

    Attributes:
        pose_rotvecs: ``(B, 72)`` augmented frame.
        betas: ``(B, NB)``, zeroed for fits with an extreme beta.
        use_fit: ``(B,)`` bool, the fit may supervise this sample.
    """

    pose_rotvecs: Tensor
    betas: Tensor
    use_fit: Tensor


@dataclass(frozen=True, eq=False)
class Update:
    """One sample's new record, in the un-augmented frame (what ranks exchange).

    Attributes:
        dataset: dataset name.
        index: sample index in that dataset.
        pose_rotvecs: ``(72,)`` float32 axis-angle, un-augmented.
        betas: ``(NB,)`` float32.
        loss: reprojection loss of the new fit on the keypoints it was fitted to.
        step: training step that produced it.
    """

    dataset: str
    index: int
    pose_rotvecs: np.ndarray
    betas: np.ndarray
    loss: float
    step: int


def supervision_from_cache(
    cached: CachedFits, config: FitsCacheConfig, current_loss: Tensor | None = None
) -> FitSupervision:
    """Turn cached fits into supervision: validity and SPIN's extreme-betas rule.

    A fit supervises a sample iff it exists and is valid; fits with any
    ``|beta| > config.max_abs_beta`` keep their pose but supervise with zero betas. Ground
    truth SMPL overriding the fit (and counting as valid) is the trainer's job: it knows which
    samples have it.

    Args:
        cached: the batch's :class:`CachedFits` (after any update of this step).
        config: the cache's :class:`FitsCacheConfig`.
        current_loss: ``(B,)`` optional loss of each cached fit on the batch's own keypoints;
            when given, validity is ``current_loss < valid_threshold`` (SPIN's exact rule,
            which measures it on the current view) instead of the stored flag.

    Returns:
        :class:`FitSupervision` of tensors on ``cached``'s device.
    """
    if current_loss is None:
        valid = cached.valid
    else:
        if tuple(current_loss.shape) != tuple(cached.loss.shape):
            raise FitsCacheError(
                f"expected current_loss of shape {tuple(cached.loss.shape)}, got "
                f"{tuple(current_loss.shape)}"
            )
        valid = current_loss.to(cached.loss.device) < config.valid_threshold
    use_fit = cached.has_fit & valid
    extreme = (cached.betas.abs() > config.max_abs_beta).any(dim=-1)
    betas = torch.where(extreme[:, None], torch.zeros_like(cached.betas), cached.betas)
    return FitSupervision(cached.pose_rotvecs, betas, use_fit)


# --- helpers ----------------------------------------------------------------------------------


def _numpy(values, dtype, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        return np.asarray(values, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise FitsCacheError(f"{name}: cannot read as {np.dtype(dtype)} values ({error})") from None


def _check_shape(array: np.ndarray, shape: tuple[int, ...], name: str, what: str) -> None:
    if array.shape != shape:
        raise FitsCacheError(f"expected {name} of shape {what}, i.e. {shape}, got {array.shape}")


def _empty_records(num: int, num_betas: int) -> dict[str, np.ndarray]:
    return {
        "pose": np.zeros((num, POSE_DIM), dtype=np.float32),
        "betas": np.zeros((num, num_betas), dtype=np.float32),
        "loss": np.full(num, np.inf, dtype=np.float32),
        "valid": np.zeros(num, dtype=bool),
        "updated_step": np.full(num, NEVER_UPDATED, dtype=np.int64),
    }


def _record_dtypes(num_betas: int) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Per record field: dtype and trailing shape."""
    return {
        "pose": (np.dtype(np.float32), (POSE_DIM,)),
        "betas": (np.dtype(np.float32), (num_betas,)),
        "loss": (np.dtype(np.float32), ()),
        "valid": (np.dtype(bool), ()),
        "updated_step": (np.dtype(np.int64), ()),
    }


def _check_dataset_name(name: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise FitsCacheError(f"dataset names must be non-empty strings without '/', got {name!r}")


def _augmentation_groups(rotation_deg: np.ndarray, flipped: np.ndarray) -> dict:
    """Rows sharing an augmentation: ``{(rotation_deg, flip): row indices}``."""
    groups: dict[tuple[float, bool], list[int]] = {}
    for row, key in enumerate(zip(rotation_deg.tolist(), flipped.tolist(), strict=True)):
        groups.setdefault((float(key[0]), bool(key[1])), []).append(row)
    return {key: np.asarray(rows, dtype=np.int64) for key, rows in groups.items()}


# --- the cache --------------------------------------------------------------------------------


class FitsCache:
    """Best fit per sample, per dataset, in the un-augmented frame (see the module doc).

    Build with :meth:`empty`, :meth:`from_static_fits` or :meth:`load`. Arrays live in host
    memory as numpy; :meth:`fetch` and :meth:`update_if_better` take and return tensors on the
    caller's device.
    """

    def __init__(
        self,
        records: Mapping[str, Mapping[str, np.ndarray]],
        config: FitsCacheConfig | None = None,
        step: int = NEVER_UPDATED,
    ):
        """Wrap per-dataset record arrays (validated; the cache owns them afterwards).

        Args:
            records: ``{name: {"pose", "betas", "loss", "valid", "updated_step"}}`` with the
                shapes and dtypes of the module doc.
            config: :class:`FitsCacheConfig` (default: SPIN's).
            step: the latest training step whose updates the records contain.
        """
        self.config = config or FitsCacheConfig()
        self.step = int(step)
        self._records: dict[str, dict[str, np.ndarray]] = {}
        expected = _record_dtypes(self.config.num_betas)
        for name, fields in records.items():
            _check_dataset_name(name)
            missing = [key for key in RECORD_FIELDS if key not in fields]
            if missing:
                raise FitsCacheError(f"dataset {name!r}: missing record arrays {missing}")
            num = len(fields["loss"])
            arrays = {}
            for key, (dtype, trailing) in expected.items():
                array = np.asarray(fields[key])
                if array.shape != (num, *trailing) or array.dtype != dtype:
                    raise FitsCacheError(
                        f"dataset {name!r}: expected {key} of shape {(num, *trailing)} and "
                        f"dtype {dtype}, got {array.shape} {array.dtype}"
                    )
                arrays[key] = array
            self._records[name] = arrays
        self.updates_total = 0
        self.updates_since_save = 0
        self.skipped_nonfinite = 0

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def empty(cls, sizes: Mapping[str, int], config: FitsCacheConfig | None = None) -> FitsCache:
        """A cache with no fits: ``sizes`` is ``{dataset name: number of samples}``."""
        config = config or FitsCacheConfig()
        for name, num in sizes.items():
            if int(num) < 0:
                raise FitsCacheError(f"dataset {name!r}: number of samples must be >= 0, got {num}")
        return cls({n: _empty_records(int(k), config.num_betas) for n, k in sizes.items()}, config)

    @classmethod
    def from_static_fits(
        cls,
        paths: Mapping[str, str | os.PathLike],
        sizes: Mapping[str, int],
        config: FitsCacheConfig | None = None,
    ) -> FitsCache:
        """A cache initialised from ``spin-fit-dataset`` outputs (SPIN's static fits).

        Each file's ``sample_index`` column says which sample a row belongs to; samples
        without a row, rows with a non-finite pose, betas or loss (unfitted samples have
        ``+inf``) stay empty. A row is valid iff the file marks it valid and its loss is
        below ``config.valid_threshold``. ``updated_step`` stays ``-1``.

        Args:
            paths: ``{dataset name: fits .h5}``; datasets of ``sizes`` without one start empty.
            sizes: ``{dataset name: number of samples}``, every dataset of the cache.
            config: :class:`FitsCacheConfig`; ``num_betas`` must match the files.

        Raises:
            FitsCacheError: a missing or malformed file, a dataset not in ``sizes``, sample
                indices out of range or repeated, or another number of betas.
        """
        cache = cls.empty(sizes, config)
        for name, path in paths.items():
            if name not in sizes:
                raise FitsCacheError(
                    f"static fits given for dataset {name!r}, which is not among the cache's "
                    f"datasets {sorted(sizes)}; add its size to sizes"
                )
            cache._fill_from_static(name, Path(path))
        return cache

    def _fill_from_static(self, name: str, path: Path) -> None:
        fits = _read_static_fits(path)
        records = self._records[name]
        num, num_betas = len(records["loss"]), self.config.num_betas
        rows = len(fits["sample_index"])
        if fits["betas"].shape[1] != num_betas:
            raise FitsCacheError(
                f"{path} has {fits['betas'].shape[1]} betas per fit, the cache {num_betas}; "
                "set num_betas to the body model's, or refit with the same body model"
            )
        index = fits["sample_index"]
        if rows and (index.min() < 0 or index.max() >= num):
            raise FitsCacheError(
                f"{path}: sample_index out of range [0, {num}) for dataset {name!r} "
                f"(min {index.min()}, max {index.max()}); were these fits made on another "
                "dataset, or with --limit on a larger one?"
            )
        if len(np.unique(index)) != rows:
            raise FitsCacheError(f"{path}: sample_index repeats samples; the file is malformed")
        with np.errstate(invalid="ignore"):
            usable = (
                np.isfinite(fits["pose"]).all(axis=1)
                & np.isfinite(fits["betas"]).all(axis=1)
                & np.isfinite(fits["reprojection_loss"])
            )
            valid = (
                usable & fits["valid"] & (fits["reprojection_loss"] < self.config.valid_threshold)
            )
        take = index[usable]
        records["pose"][take] = fits["pose"][usable]
        records["betas"][take] = fits["betas"][usable]
        records["loss"][take] = fits["reprojection_loss"][usable]
        records["valid"][take] = valid[usable]

    # --- access ------------------------------------------------------------------------------

    @property
    def dataset_names(self) -> list[str]:
        return list(self._records)

    def num_samples(self, name: str) -> int:
        return len(self._dataset(name)["loss"])

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        """Copies of one dataset's record arrays (see the module doc)."""
        return {key: value.copy() for key, value in self._dataset(name).items()}

    def _dataset(self, name: str) -> dict[str, np.ndarray]:
        try:
            return self._records[name]
        except KeyError:
            raise FitsCacheError(
                f"unknown dataset {name!r}; the cache holds {self.dataset_names}"
            ) from None

    def _locate(self, dataset_names, sample_indices) -> tuple[list[str], np.ndarray]:
        """Per-row dataset names and sample indices, checked against the cache."""
        index = _numpy(sample_indices, np.int64, "sample_indices")
        if index.ndim != 1:
            raise FitsCacheError(f"expected sample_indices of shape (B,), got {index.shape}")
        names = [dataset_names] * len(index) if isinstance(dataset_names, str) else dataset_names
        names = [str(name) for name in names]
        if len(names) != len(index):
            raise FitsCacheError(
                f"got {len(names)} dataset names for {len(index)} sample indices; give one "
                "name per row (or a single name for the whole batch)"
            )
        for name, i in zip(names, index.tolist(), strict=True):
            num = self.num_samples(name)
            if not 0 <= i < num:
                raise FitsCacheError(
                    f"sample index {i} out of range for dataset {name!r} of {num} samples"
                )
        return names, index

    def _augmentation(self, rotation_deg, flipped, batch: int) -> tuple[np.ndarray, np.ndarray]:
        rotation = _numpy(rotation_deg, np.float64, "rotation_deg")
        flip = _numpy(flipped, np.float64, "flipped") != 0
        _check_shape(rotation, (batch,), "rotation_deg", "(B,)")
        _check_shape(flip, (batch,), "flipped", "(B,)")
        if not np.isfinite(rotation).all():
            raise FitsCacheError("rotation_deg must be finite")
        return rotation, flip

    def _gather(self, names: list[str], index: np.ndarray) -> dict[str, np.ndarray]:
        """Record rows of the batch, in batch order."""
        out = {
            key: np.empty((len(index), *value.shape[1:]), dtype=value.dtype)
            for key, value in _empty_records(0, self.config.num_betas).items()
        }
        by_name: dict[str, list[int]] = {}
        for row, name in enumerate(names):
            by_name.setdefault(name, []).append(row)
        for name, rows in by_name.items():
            records = self._records[name]
            for key in out:
                out[key][rows] = records[key][index[rows]]
        return out

    # --- fetch and update --------------------------------------------------------------------

    def fetch(
        self,
        dataset_names: Sequence[str] | str,
        sample_indices,
        rotation_deg,
        flipped,
        like: Tensor | None = None,
    ) -> CachedFits:
        """The cached fits of a batch, augmented for each sample's view.

        Args:
            dataset_names: ``(B,)`` dataset name per row (or one name for all rows).
            sample_indices: ``(B,)`` ints, tensor or array.
            rotation_deg: ``(B,)`` the batch's in-plane rotations (degrees).
            flipped: ``(B,)`` bool or 0/1, the batch's flips.
            like: float tensor whose device and dtype the outputs take (None: float32, CPU).

        Returns:
            :class:`CachedFits`; the pose of row ``i`` is
            ``augment_pose_rotvecs(stored pose, rotation_deg[i], flipped[i])`` (computed in
            float64, then cast).
        """
        names, index = self._locate(dataset_names, sample_indices)
        rotation, flip = self._augmentation(rotation_deg, flipped, len(index))
        rows = self._gather(names, index)
        pose = torch.from_numpy(rows["pose"].astype(np.float64))
        augmented = torch.empty_like(pose)
        for (angle, mirror), group in _augmentation_groups(rotation, flip).items():
            rows_t = torch.from_numpy(group)
            augmented[rows_t] = augment_pose_rotvecs(pose[rows_t], angle, mirror)
        dtype = like.dtype if like is not None else torch.float32
        device = like.device if like is not None else torch.device("cpu")

        def tensor(array, dtype=dtype):
            return torch.as_tensor(array).to(device=device, dtype=dtype)

        return CachedFits(
            pose_rotvecs=tensor(augmented),
            betas=tensor(rows["betas"]),
            loss=tensor(rows["loss"]),
            valid=tensor(rows["valid"], torch.bool),
            has_fit=tensor(np.isfinite(rows["loss"]), torch.bool),
        )

    def propose_updates(
        self,
        dataset_names: Sequence[str] | str,
        sample_indices,
        rotation_deg,
        flipped,
        new_pose_rotvecs,
        new_betas,
        new_loss,
        cached_loss_on_same_keypoints,
        step: int,
    ) -> tuple[list[Update], np.ndarray]:
        """The :class:`Update` of each row whose new fit beats the cached one (no change yet).

        A row qualifies iff its new loss, pose and betas are finite and
        ``new_loss < cached_loss_on_same_keypoints``. Where the cache has no fit, or the
        cached fit's loss is NaN (it cannot be scored on these keypoints), the cached loss
        counts as ``+inf`` whatever the caller passed. Several rows of one sample may
        qualify; :meth:`apply_updates` keeps the lowest loss.

        Args: as :meth:`update_if_better`.

        Returns:
            ``(updates, rows)``: the updates (pose un-augmented) and their ``(U,)`` batch rows.
        """
        names, index = self._locate(dataset_names, sample_indices)
        batch, num_betas = len(index), self.config.num_betas
        rotation, flip = self._augmentation(rotation_deg, flipped, batch)
        pose = _numpy(new_pose_rotvecs, np.float64, "new_pose_rotvecs")
        betas = _numpy(new_betas, np.float64, "new_betas")
        loss = _numpy(new_loss, np.float64, "new_loss")
        cached = _numpy(cached_loss_on_same_keypoints, np.float64, "cached_loss_on_same_keypoints")
        _check_shape(pose, (batch, POSE_DIM), "new_pose_rotvecs", "(B, 72)")
        _check_shape(betas, (batch, num_betas), "new_betas", "(B, NB)")
        _check_shape(loss, (batch,), "new_loss", "(B,)")
        _check_shape(cached, (batch,), "cached_loss_on_same_keypoints", "(B,)")
        has_fit = np.isfinite(self._gather(names, index)["loss"])
        cached = np.where(has_fit & ~np.isnan(cached), cached, np.inf)
        finite = np.isfinite(loss) & np.isfinite(pose).all(axis=1) & np.isfinite(betas).all(axis=1)
        self.skipped_nonfinite += int((~finite).sum())
        with np.errstate(invalid="ignore"):
            better = finite & (loss < cached)
        rows = np.flatnonzero(better)
        stored = np.empty_like(pose)
        for (angle, mirror), group in _augmentation_groups(rotation[rows], flip[rows]).items():
            members = rows[group]
            stored[members] = unaugment_pose_rotvecs(pose[members], angle, mirror)
        updates = [
            Update(
                dataset=names[r],
                index=int(index[r]),
                pose_rotvecs=stored[r].astype(np.float32),
                betas=betas[r].astype(np.float32),
                loss=float(loss[r]),
                step=int(step),
            )
            for r in rows.tolist()
        ]
        return updates, rows

    def apply_updates(self, updates: Sequence[Update]) -> np.ndarray:
        """Write updates into the cache; the same list gives the same cache on every process.

        Each update is trusted to have beaten the cached fit on its own keypoints (see
        :meth:`propose_updates`); it is not compared with the stored loss, which was measured
        on another view. Updates with a non-finite loss, pose or betas are skipped and counted.
        When several updates name one sample (duplicates in a batch, or the same sample on
        two ranks), the one with the lowest loss wins, the earliest in the list on ties.

        Args:
            updates: the :class:`Update` list, in the same order everywhere.

        Returns:
            ``(U,)`` bool, which updates were written.
        """
        applied = np.zeros(len(updates), dtype=bool)
        best: dict[tuple[str, int], int] = {}
        for k, update in enumerate(updates):
            self._check_update(update)
            usable = (
                math.isfinite(update.loss)
                and np.isfinite(update.pose_rotvecs).all()
                and np.isfinite(update.betas).all()
            )
            if not usable:
                self.skipped_nonfinite += 1
                continue
            key = (update.dataset, int(update.index))
            if key not in best or update.loss < updates[best[key]].loss:
                best[key] = k
        for (name, i), k in best.items():
            update, records = updates[k], self._records[name]
            records["pose"][i] = update.pose_rotvecs
            records["betas"][i] = update.betas
            records["loss"][i] = update.loss
            records["valid"][i] = update.loss < self.config.valid_threshold
            records["updated_step"][i] = update.step
            self.step = max(self.step, int(update.step))
            applied[k] = True
        self.updates_total += len(best)
        self.updates_since_save += len(best)
        return applied

    def _check_update(self, update: Update) -> None:
        num = self.num_samples(update.dataset)
        if not 0 <= int(update.index) < num:
            raise FitsCacheError(
                f"update for sample {update.index} out of range for dataset "
                f"{update.dataset!r} of {num} samples"
            )
        if np.shape(update.pose_rotvecs) != (POSE_DIM,):
            raise FitsCacheError(
                f"expected an update's pose_rotvecs of shape (72,), got "
                f"{np.shape(update.pose_rotvecs)}"
            )
        if np.shape(update.betas) != (self.config.num_betas,):
            raise FitsCacheError(
                f"expected an update's betas of shape ({self.config.num_betas},), got "
                f"{np.shape(update.betas)}"
            )

    def update_if_better(
        self,
        dataset_names: Sequence[str] | str,
        sample_indices,
        rotation_deg,
        flipped,
        new_pose_rotvecs,
        new_betas,
        new_loss,
        cached_loss_on_same_keypoints,
        step: int,
    ) -> Tensor:
        """Replace cached fits by new ones where the new fit is better (SPIN's rule).

        :meth:`propose_updates` then :meth:`apply_updates`: a row's fit is stored iff its loss
        is finite and lower than the cached fit's loss on the same augmented keypoints; the
        pose is un-augmented before it is stored; ``valid = new_loss < valid_threshold``.
        Duplicates of one sample in the batch: only the lowest-loss row is stored.

        Args:
            dataset_names: ``(B,)`` dataset name per row (or one name for all rows).
            sample_indices: ``(B,)`` ints.
            rotation_deg, flipped: ``(B,)`` the batch's augmentation.
            new_pose_rotvecs: ``(B, 72)`` new fits, in the batch's augmented frame.
            new_betas: ``(B, NB)``.
            new_loss: ``(B,)`` reprojection loss of the new fits on the batch's keypoints.
            cached_loss_on_same_keypoints: ``(B,)`` loss of the fetched cached fits on the
                same keypoints (``+inf`` where there is none; enforced).
            step: the training step, recorded in ``updated_step``.

        Returns:
            ``(B,)`` bool tensor, on ``new_loss``'s device if it is a tensor, of the rows
            written.
        """
        updates, rows = self.propose_updates(
            dataset_names,
            sample_indices,
            rotation_deg,
            flipped,
            new_pose_rotvecs,
            new_betas,
            new_loss,
            cached_loss_on_same_keypoints,
            step,
        )
        applied = self.apply_updates(updates)
        updated = np.zeros(len(_numpy(new_loss, np.float64, "new_loss")), dtype=bool)
        updated[rows[applied]] = True
        device = new_loss.device if isinstance(new_loss, torch.Tensor) else None
        return torch.as_tensor(updated, device=device)

    def statistics(self) -> dict[str, float]:
        """Scalars for logging, over all datasets' samples.

        Keys: ``fraction_with_fit``, ``fraction_valid``, ``mean_valid_loss`` (NaN when no
        fit is valid), ``updates_since_save``, ``updates_total``, ``skipped_nonfinite``.
        """
        loss = np.concatenate([r["loss"] for r in self._records.values()] or [np.zeros(0)])
        valid = np.concatenate(
            [r["valid"] for r in self._records.values()] or [np.zeros(0, dtype=bool)]
        )
        total = len(loss)
        return {
            "fraction_with_fit": float(np.isfinite(loss).mean()) if total else math.nan,
            "fraction_valid": float(valid.mean()) if total else math.nan,
            "mean_valid_loss": float(loss[valid].astype(np.float64).mean())
            if valid.any()
            else math.nan,
            "updates_since_save": float(self.updates_since_save),
            "updates_total": float(self.updates_total),
            "skipped_nonfinite": float(self.skipped_nonfinite),
        }

    # --- persistence -------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The cache as plain containers of CPU tensors and strings, for checkpoints.

        Tensors rather than numpy arrays so that ``torch.load(..., weights_only=True)`` reads
        a checkpoint holding it without allow-listing numpy.
        """
        return {
            "format": FITS_CACHE_FORMAT,
            "format_version": FITS_CACHE_FORMAT_VERSION,
            "config": self.config.to_json(),
            "step": self.step,
            "datasets": {
                name: {key: torch.from_numpy(value.copy()) for key, value in records.items()}
                for name, records in self._records.items()
            },
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Replace this cache's contents by a :meth:`state_dict` (validated)."""
        if state.get("format") != FITS_CACHE_FORMAT:
            raise FitsCacheError("not a fits cache state_dict (no 'format': 'spin-fits-cache')")
        _check_version(state.get("format_version"), "the state_dict")
        missing = [key for key in ("config", "step", "datasets") if key not in state]
        if missing:
            raise FitsCacheError(f"fits cache state_dict is missing {missing}")
        config = FitsCacheConfig.from_json(state["config"])
        records = {
            name: {key: torch.as_tensor(value).numpy().copy() for key, value in fields.items()}
            for name, fields in state["datasets"].items()
        }
        other = FitsCache(records, config, int(state["step"]))
        self.config, self.step, self._records = other.config, other.step, other._records
        self.updates_since_save = 0

    def save(self, path: str | os.PathLike, step: int | None = None) -> Path:
        """Write the cache atomically to an HDF5 file (see the module doc).

        Layout: one group per dataset with datasets ``pose``, ``betas``, ``loss``, ``valid``,
        ``updated_step``; root attributes ``format``, ``format_version``, ``config`` (JSON),
        ``step``, ``dataset_names`` (JSON list, the order).

        Args:
            path: the file to write (replaced atomically).
            step: training step to record (None: the latest update's step).

        Returns:
            ``path``.
        """
        step = self.step if step is None else int(step)

        def fill(f) -> None:
            f.attrs["format"] = FITS_CACHE_FORMAT
            f.attrs["format_version"] = FITS_CACHE_FORMAT_VERSION
            f.attrs["config"] = self.config.to_json()
            f.attrs["step"] = step
            f.attrs["dataset_names"] = json.dumps(self.dataset_names)
            for name, records in self._records.items():
                group = f.create_group(name)
                for key in RECORD_FIELDS:
                    group.create_dataset(key, data=records[key])

        path = atomic_write_hdf5(path, fill)  # built in memory: a full disk is an OSError
        self.step = step
        self.updates_since_save = 0
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> FitsCache:
        """Read a cache written by :meth:`save` (``PATH.tmp`` leftovers are ignored).

        Raises:
            FitsCacheError: the file is missing, unreadable, of another format or version, or
                its arrays have the wrong shapes; the message names the file.
        """
        path = Path(path)
        if not path.is_file():
            raise FitsCacheError(f"{path}: no such fits cache file")
        try:
            with h5py.File(path, "r") as f:
                attrs = dict(f.attrs)
                if attrs.get("format") != FITS_CACHE_FORMAT:
                    hint = (
                        " (it looks like spin-fit-dataset output: use FitsCache.from_static_fits)"
                        if "pose" in f
                        else ""
                    )
                    raise FitsCacheError(f"{path} is not a fits cache{hint}")
                _check_version(attrs.get("format_version"), str(path))
                config = FitsCacheConfig.from_json(str(attrs["config"]))
                names = json.loads(str(attrs["dataset_names"]))
                records = {}
                for name in names:
                    if name not in f:
                        raise FitsCacheError(f"dataset {name!r}: group missing")
                    group = f[name]
                    missing = [key for key in RECORD_FIELDS if key not in group]
                    if missing:
                        raise FitsCacheError(f"dataset {name!r}: missing record arrays {missing}")
                    records[name] = {key: group[key][()] for key in RECORD_FIELDS}
                return cls(records, config, int(attrs["step"]))
        except FitsCacheError as error:
            message = str(error)
            if not message.startswith(str(path)):
                message = f"{path}: {message}"
            raise FitsCacheError(message) from None
        except (OSError, KeyError, ValueError, TypeError) as error:
            raise FitsCacheError(
                f"{path} is not a readable fits cache ({type(error).__name__}: {error}); it may "
                "be truncated or corrupt: restore it from a checkpoint or start from static fits"
            ) from None


def _check_version(version, where: str) -> None:
    if version is None or int(version) != FITS_CACHE_FORMAT_VERSION:
        raise FitsCacheError(
            f"{where} has fits cache format version {version}, this code reads version "
            f"{FITS_CACHE_FORMAT_VERSION}; use the spin-hmr version that wrote it"
        )


def _read_static_fits(path: Path) -> dict[str, np.ndarray]:
    """The columns of a ``spin-fit-dataset`` output the cache needs, checked."""
    expected = {
        "pose": (np.float32, (POSE_DIM,)),
        "betas": (np.float32, None),
        "reprojection_loss": (np.float32, ()),
        "valid": (bool, ()),
        "sample_index": (np.int64, ()),
    }
    if not path.is_file():
        raise FitsCacheError(f"{path}: no such static fits file (an output of spin-fit-dataset)")
    try:
        with h5py.File(path, "r") as f:
            missing = [key for key in expected if key not in f]
            if missing:
                raise FitsCacheError(
                    f"{path} is not an output of spin-fit-dataset: missing {missing}"
                )
            arrays = {
                key: np.asarray(f[key][()], dtype=dtype) for key, (dtype, _) in expected.items()
            }
    except FitsCacheError:
        raise
    except (OSError, ValueError, TypeError) as error:
        raise FitsCacheError(
            f"{path} is not a readable static fits file ({type(error).__name__}: {error})"
        ) from None
    num = len(arrays["sample_index"])
    for key, (_, trailing) in expected.items():
        array = arrays[key]
        shape_ok = array.ndim == (2 if trailing is None else 1 + len(trailing))
        shape_ok = shape_ok and len(array) == num
        if trailing is not None:
            shape_ok = shape_ok and array.shape[1:] == trailing
        if not shape_ok:
            want = "(N, NB)" if trailing is None else str((num, *trailing))
            raise FitsCacheError(
                f"{path}: expected {key} of shape {want} with N = {num}, got {array.shape}"
            )
    return arrays
