"""Checkpoints: model, optimiser, step, RNG state and the resolved config, written atomically.

The fits cache is saved next to the checkpoint (``fits_cache.h5``) at the same moments, so a
killed run resumes with the cache of its last checkpoint. Files are written to a temporary
name, flushed to disk and renamed, so a crash never leaves a half-written checkpoint.
Loading uses ``torch.load(weights_only=True)``: a checkpoint cannot run code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

__all__ = ["CHECKPOINT_NAME", "atomic_torch_save", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.json"


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` to ``path`` via a temporary file, fsync and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_directory(path.parent)


def save_checkpoint(
    run_dir: Path, model, optimizer, step: int, config: dict, extra: dict | None = None
) -> Path:
    """Write ``run_dir/checkpoint.pt`` (and ``config.json``) for ``step`` completed steps."""
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "config": json.dumps(config),
        "extra": json.dumps(extra or {}),
    }
    path = Path(run_dir) / CHECKPOINT_NAME
    atomic_torch_save(state, path)
    config_path = Path(run_dir) / CONFIG_NAME
    config_path.write_text(json.dumps(config, indent=2))
    return path


def load_checkpoint(path: Path, model=None, optimizer=None) -> dict:
    """Read a checkpoint safely; load the states into ``model``/``optimizer`` when given and
    restore the torch RNG. Returns ``{"step", "config", "extra"}``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling refused or a corrupt file
        raise ValueError(f"cannot load checkpoint {path}: {error}") from None
    if model is not None:
        model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return {
        "step": int(state["step"]),
        "config": json.loads(state["config"]),
        "extra": json.loads(state["extra"]),
    }
