"""Several datasets mixed with fixed per-dataset sampling ratios (SPIN's training mix).

Item ``i`` of epoch ``e`` comes from dataset ``d`` with probability ``ratios[d]``
(normalised) and from a uniformly chosen sample within it; both draws are seeded by
``(seed, e, i)``, so an epoch is reproducible. A dataset with ``sequential = True``
(:class:`~spin.data.endless.EndlessKeypoints`, whose samples are random draws already)
gives item ``i`` of epoch ``e`` its sample ``(e * length + i) mod len``, so consecutive
items share the chunks it makes them in and no sample repeats before all were used. One
epoch is, by default, as long as the largest dataset (SPIN's definition).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch.utils.data import Dataset

__all__ = ["MixedDataset"]


class MixedDataset(Dataset):
    """Draw each item from one of several datasets with the given ratios.

    Args:
        datasets: the datasets (anything with ``len`` and integer indexing; a
            :class:`~spin.data.spin_dataset.SpinDataset` also gets an independent
            augmentation for every draw).
        ratios: non-negative sampling weights, one per dataset, not all zero;
            normalised to sum to one.
        length: items per epoch; defaults to the largest dataset's length.
        seed: non-negative seed of the dataset and sample choice.
    """

    def __init__(
        self,
        datasets: Sequence,
        ratios: Sequence[float],
        length: int | None = None,
        seed: int = 0,
    ) -> None:
        datasets = list(datasets)
        ratios = np.asarray(ratios, dtype=np.float64)
        if not datasets:
            raise ValueError("MixedDataset needs at least one dataset")
        if ratios.shape != (len(datasets),):
            raise ValueError(
                f"got {len(datasets)} datasets but ratios of shape {ratios.shape}; "
                "give one ratio per dataset"
            )
        if not np.isfinite(ratios).all() or (ratios < 0).any():
            raise ValueError(f"ratios must be finite and non-negative, got {ratios.tolist()}")
        if ratios.sum() <= 0:
            raise ValueError(f"ratios must not all be zero, got {ratios.tolist()}")
        for position, (dataset, ratio) in enumerate(zip(datasets, ratios, strict=True)):
            if ratio > 0 and len(dataset) == 0:
                raise ValueError(
                    f"dataset {position} ({_name(dataset, position)}) is empty but has "
                    f"ratio {ratio}; remove it or set its ratio to 0"
                )
        if length is not None and length <= 0:
            raise ValueError(f"length must be positive, got {length}")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.datasets = datasets
        self.probabilities = ratios / ratios.sum()
        self.length = int(length) if length is not None else max(len(d) for d in datasets)
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; passed on to datasets that have ``set_epoch``."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch}")
        self.epoch = int(epoch)
        for dataset in self.datasets:
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)

    def source(self, index: int) -> tuple[int, int]:
        """Which ``(dataset position, sample index)`` item ``index`` comes from this epoch."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a MixedDataset of {self.length}")
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        position = int(rng.choice(len(self.datasets), p=self.probabilities))
        dataset = self.datasets[position]
        if getattr(dataset, "sequential", False):  # endless data: item k is sample k
            return position, (self.epoch * self.length + int(index)) % len(dataset)
        return position, int(rng.integers(len(dataset)))

    def __getitem__(self, index: int):
        position, sample = self.source(index)
        dataset = self.datasets[position]
        if hasattr(dataset, "get"):
            return dataset.get(sample, draw=index)
        return dataset[sample]

    @property
    def skipped(self) -> int:
        """Unreadable-image skips summed over the datasets that count them."""
        return sum(getattr(d, "skipped", 0) for d in self.datasets)

    def summary(self) -> str:
        """One line per dataset on skipped samples (datasets with ``summary()``)."""
        lines = [f"mixed dataset: {self.length} items per epoch, {self.skipped} skipped"]
        lines += [d.summary() for d in self.datasets if hasattr(d, "summary")]
        return "\n".join(lines)


def _name(dataset, position: int) -> str:
    return str(getattr(dataset, "name", f"#{position}"))
