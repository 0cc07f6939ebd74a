"""Data-parallel training over several processes: torch.distributed, launched by torchrun.

One process per device ("rank"). ``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` (and the rendezvous address) in each process's environment;
:func:`init_distributed` reads them and joins the process group (NCCL on CUDA, gloo on CPU).
Without them, or with ``WORLD_SIZE=1``, nothing is initialised and training is exactly the
single-process loop.

The division of work:

- ``batch_size`` is the **global** batch. Step ``k`` uses items ``[k*B, (k+1)*B)`` of the
  training mix whatever the number of processes; rank ``r`` of ``W`` takes the contiguous
  slice ``[k*B + r*B/W, k*B + (r+1)*B/W)`` (:class:`RankBatches`), so ``B`` must be a multiple
  of ``W``.
- Each rank regresses and runs SMPLify on its own slice. The model is wrapped in
  ``DistributedDataParallel``, which averages the gradients over ranks. Each rank's loss is a
  mean over its slice, so the averaged gradient is the single-process one for the terms that
  average over every sample (2D keypoints, camera); the terms that average over a subset
  (samples with 3D labels, with a valid fit) weight ranks equally, not samples.
- Fits-cache updates: every rank proposes its updates (:meth:`FitsCache.propose_updates`),
  they are all-gathered and every rank applies the same list in rank order
  (:func:`update_cache_everywhere`). The list is the one a single process would apply to the
  whole batch, so all ranks hold the same cache, equal to a single process's given the same
  SMPLify results.
- BatchNorm layers normalise with each rank's own slice (DDP's default): predictions, and
  so the fits SMPLify starts from, depend on the per-rank batch, not only on the sample.
- Rank 0 alone writes files (checkpoint, fits cache, metrics, wandb, panels) and validates;
  the others wait at a barrier after each save. Logged scalars are averaged over ranks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Sampler

from spin.fitting.fits_cache import FitsCache

__all__ = [
    "DistributedContext",
    "RankBatches",
    "cleanup_distributed",
    "init_distributed",
    "local_batch_size",
    "main_first",
    "mean_over_ranks",
    "update_cache_everywhere",
    "wrap_model",
]

PROCESS_GROUP_TIMEOUT = timedelta(minutes=30)
"""How long a rank waits in a collective before the run fails, NCCL and gloo alike. The long
waits are at setup: rank 0 alone generates missing synthetic data or static fits."""


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands among the ranks of a run.

    Attributes:
        rank: this process, ``0 <= rank < world_size``.
        world_size: number of processes.
        local_rank: this process on its machine (its GPU index).
        device: the device this process trains on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """The rank that writes files and logs."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Several processes: collectives are needed."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(device: str) -> DistributedContext:
    """This process's :class:`DistributedContext`, joining the process group if needed.

    Reads torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. With ``WORLD_SIZE > 1`` it
    calls ``torch.distributed.init_process_group`` (``env://``: ``MASTER_ADDR`` and
    ``MASTER_PORT`` must be set, as torchrun does) with the NCCL backend on CUDA and gloo
    otherwise, unless a process group already exists, which is then used as is. On CUDA
    with several processes each rank uses ``cuda:LOCAL_RANK`` whatever index ``device``
    names.

    Args:
        device: the configured device, e.g. ``"cpu"``, ``"cuda"``.
    """
    target = torch.device(device)
    if dist.is_available() and dist.is_initialized():
        world_size, rank = dist.get_world_size(), dist.get_rank()
    else:
        world_size, rank = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"RANK={rank} and WORLD_SIZE={world_size} are inconsistent; launch with torchrun, "
            "which sets them"
        )
    if world_size == 1:
        return DistributedContext(device=target)
    if target.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local_rank} but this machine has {torch.cuda.device_count()} "
                "CUDA devices; start at most that many processes per node (--nproc_per_node)"
            )
        target = torch.device("cuda", local_rank)
        torch.cuda.set_device(target)
    if not dist.is_initialized():
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        backend = "nccl" if target.type == "cuda" else "gloo"
        device_id = target if target.type == "cuda" else None
        dist.init_process_group(backend, timeout=PROCESS_GROUP_TIMEOUT, device_id=device_id)
    return DistributedContext(rank, world_size, local_rank, target)


def cleanup_distributed() -> None:
    """Leave the process group, if this process is in one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_batch_size(batch_size: int, world_size: int) -> int:
    """Samples per rank and step: ``batch_size`` (global) split evenly over the ranks."""
    if batch_size % world_size:
        raise ValueError(
            f"batch_size={batch_size} is the global batch and must be a multiple of the "
            f"{world_size} processes; set batch_size to a multiple of {world_size} or "
            "change --nproc_per_node"
        )
    return batch_size // world_size


class RankBatches(Sampler[list[int]]):
    """Item indices of one rank's batches, steps ``first_step`` to ``end_step - 1``.

    Step ``k`` covers items ``[k*B, (k+1)*B)`` of the training mix (``B = batch_size``, the
    global batch); rank ``r`` of ``W`` gets the contiguous slice of ``B/W`` of them starting
    at ``k*B + r*B/W``.
    """

    def __init__(
        self, first_step: int, end_step: int, batch_size: int, rank: int = 0, world_size: int = 1
    ):
        self.first_step, self.end_step = int(first_step), int(end_step)
        self.batch_size = int(batch_size)
        self.local = local_batch_size(self.batch_size, world_size)
        self.offset = rank * self.local

    def __len__(self) -> int:
        return max(0, self.end_step - self.first_step)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.first_step, self.end_step):
            start = step * self.batch_size + self.offset
            yield list(range(start, start + self.local))


def wrap_model(model: nn.Module, context: DistributedContext) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` with several processes, else ``model``.

    The wrapper shares the model's parameters: keep using ``model`` itself for saving,
    loading and evaluation (its state_dict has no ``module.`` prefix, so checkpoints do not
    depend on the number of processes).
    """
    if not context.enabled:
        return model
    device_ids = [context.device] if context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def barrier(context: DistributedContext) -> None:
    """Wait for every rank (no-op for one process)."""
    if not context.enabled:
        return
    if context.device.type == "cuda":
        dist.barrier(device_ids=[context.device.index])
    else:
        dist.barrier()


@contextmanager
def main_first(context: DistributedContext):
    """Run the body on rank 0 first, then on the others: for one-off files (data, static fits)
    that rank 0 creates and every rank then reads. If rank 0 fails, the others are not
    released: the exception ends rank 0 and torchrun stops them."""
    if not context.is_main:
        barrier(context)
    yield
    if context.is_main:
        barrier(context)


def mean_over_ranks(context: DistributedContext, scalars: dict[str, float]) -> dict[str, float]:
    """Each scalar averaged over the ranks (keys missing on some rank are dropped).

    A collective: every rank must call it at the same step.
    """
    if not context.enabled:
        return scalars
    gathered: list[dict | None] = [None] * context.world_size
    dist.all_gather_object(gathered, dict(scalars))
    keys = [key for key in scalars if all(key in other for other in gathered)]
    return {key: float(np.mean([other[key] for other in gathered])) for key in keys}


def update_cache_everywhere(
    context: DistributedContext,
    cache: FitsCache,
    dataset_names: Sequence[str],
    sample_indices,
    rotation_deg,
    flipped,
    new_pose_rotvecs: Tensor,
    new_betas: Tensor,
    new_loss: Tensor,
    cached_loss_on_same_keypoints: Tensor,
    step: int,
) -> Tensor:
    """:meth:`FitsCache.update_if_better` for this rank's slice of a global batch.

    With one process it is exactly ``update_if_better``. With several, each rank proposes
    its updates, they are all-gathered, and every rank applies the concatenation in rank
    order: the order of the rows of the global batch, so duplicates (one sample in several
    slices) resolve as in one process and every rank ends with the same cache. A collective.

    Args: as :meth:`FitsCache.update_if_better`, for this rank's ``(B/W)`` rows.

    Returns:
        ``(B/W,)`` bool tensor on ``new_loss``'s device: this rank's rows that were written.
    """
    arguments = (
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
    if not context.enabled:
        return cache.update_if_better(*arguments)
    updates, rows = cache.propose_updates(*arguments)
    gathered: list[list | None] = [None] * context.world_size
    dist.all_gather_object(gathered, updates)
    applied = cache.apply_updates([update for part in gathered for update in part])
    start = sum(len(part) for part in gathered[: context.rank])
    mine = applied[start : start + len(updates)]
    updated = np.zeros(len(new_loss), dtype=bool)
    updated[rows[mine]] = True
    return torch.as_tensor(updated, device=new_loss.device)
