"""Checkpoints: model, optimiser, step, RNG state and the resolved config, written atomically.

Every file is written to a temporary name, flushed and fsynced, then renamed over the real
name (and the folder fsynced), so a crash or ``kill -9`` leaves either the previous complete
file or the new one, never a half-written one.

The fits cache of a run is saved at the same moments, and the pair is committed as one:
:func:`save_checkpoint` writes the cache to ``fits_cache.pending.h5`` first, then the
checkpoint (the commit point), then renames the pending cache to ``fits_cache.h5``.
:func:`settle_fits_cache`, called on resume, finishes a commit a kill interrupted (the
pending cache has the checkpoint's step: rename it) or drops an uncommitted one (any other
step), so a resumed run always gets the cache of its checkpoint's step.

Reading is :func:`spin.predict.checkpoint.read_checkpoint` (``torch.load(weights_only=True)``):
a checkpoint cannot run code, and one holding anything but tensors and plain containers is
refused with an error naming the file. :func:`load_checkpoint` adds what resuming needs:
the states loaded into the model and optimiser, the RNG restored.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import torch

from spin.atomic import atomic_write_bytes, atomic_write_text, fsync_directory
from spin.predict.checkpoint import read_checkpoint

__all__ = [
    "CACHE_NAME",
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "PENDING_CACHE_NAME",
    "atomic_torch_save",
    "atomic_write_text",
    "load_checkpoint",
    "save_checkpoint",
    "settle_fits_cache",
]

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.json"
CACHE_NAME = "fits_cache.h5"
PENDING_CACHE_NAME = "fits_cache.pending.h5"


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` to ``path`` atomically. The bytes are made in memory first: torch's
    writer turns a full disk into an opaque "enforce fail ... unexpected pos" error, a
    plain write into ``OSError: No space left on device``."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def save_checkpoint(
    run_dir: Path,
    model,
    optimizer,
    step: int,
    config: dict,
    extra: dict | None = None,
    cache=None,
    modules: dict[str, dict] | None = None,
) -> Path:
    """Write ``run_dir/checkpoint.pt`` (and ``config.json``) for ``step`` completed steps.

    Args:
        run_dir: the run's folder.
        model, optimizer: whose ``state_dict`` to save.
        step: completed training steps.
        config: the resolved configuration (JSON-able dict).
        extra: small JSON-able run state.
        cache: a :class:`~spin.fitting.fits_cache.FitsCache` to commit with the checkpoint
            as ``run_dir/fits_cache.h5`` (see the module doc), or None.
        modules: name -> state dict of further components (tensors, numbers, plain
            containers: e.g. a discriminator, its optimiser and an RNG state).

    Returns:
        The checkpoint's path.
    """
    run_dir = Path(run_dir)
    pending = run_dir / PENDING_CACHE_NAME
    if cache is not None:
        cache.save(pending, step=step)
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "config": json.dumps(config),
        "extra": json.dumps(extra or {}),
    }
    if modules:
        state["modules"] = modules
    path = run_dir / CHECKPOINT_NAME
    atomic_torch_save(state, path)
    if cache is not None:
        os.replace(pending, run_dir / CACHE_NAME)
        fsync_directory(run_dir)
    atomic_write_text(run_dir / CONFIG_NAME, json.dumps(config, indent=2))
    return path


def settle_fits_cache(run_dir: Path, step: int) -> Path | None:
    """Finish or drop a cache commit that a kill interrupted (see the module doc).

    Args:
        run_dir: the run's folder.
        step: the step of the checkpoint being resumed.

    Returns:
        ``run_dir/fits_cache.h5`` if it exists afterwards, else None.
    """
    from spin.fitting.fits_cache import FitsCache, FitsCacheError

    run_dir = Path(run_dir)
    pending, path = run_dir / PENDING_CACHE_NAME, run_dir / CACHE_NAME
    if pending.exists():
        try:
            pending_step = FitsCache.load(pending).step
        except FitsCacheError as error:
            warnings.warn(f"ignoring an unreadable pending fits cache: {error}", stacklevel=2)
            pending_step = None
        if pending_step == step:  # the checkpoint landed, the rename did not
            os.replace(pending, path)
        else:  # killed before the checkpoint: the pending cache is ahead of it
            pending.unlink()
        fsync_directory(run_dir)
    return path if path.exists() else None


def load_checkpoint(path: Path, model=None, optimizer=None, check_config=None) -> dict:
    """Read a checkpoint safely (:func:`spin.predict.checkpoint.read_checkpoint`); load the
    states into ``model``/``optimizer`` when given and restore the torch RNG. Returns
    ``{"step", "config", "extra", "modules"}`` (``modules``: the state dicts given to
    :func:`save_checkpoint`, ``{}`` when none were). ``check_config(config_dict)`` is called
    before any state is loaded (it raises to refuse the checkpoint).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is truncated or corrupt, holds objects other than tensors and
            plain containers (refused without running any code), or lacks a checkpoint's
            entries; the message names the file.
    """
    contents = read_checkpoint(path)
    if check_config is not None:
        check_config(contents.config)
    if model is not None:
        model.load_state_dict(contents.model)
    if optimizer is not None:
        optimizer.load_state_dict(contents.optimizer)
    torch.set_rng_state(contents.torch_rng)
    return {
        "step": contents.step,
        "config": contents.config,
        "extra": contents.extra,
        "modules": contents.modules,
    }
