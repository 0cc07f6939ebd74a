"""Reading a ``spin-train`` checkpoint safely, without loading anything into a model.

A checkpoint is a dict of tensors and plain containers: ``step``, ``model`` (the regressor's
state dict), ``optimizer``, ``torch_rng``, ``config`` (the resolved training config as
JSON: a checkpoint alone rebuilds its model), ``extra`` (JSON run state) and, optionally,
``modules`` (state dicts of further components). :func:`read_checkpoint` reads one with
``torch.load(weights_only=True)``, so a file holding anything else is refused without
running any code, and checks its entries. Loading the states into a model and an optimiser,
and restoring the RNG, are the caller's (:func:`spin.train.checkpoint.load_checkpoint` for
resuming a run, :func:`spin.predict.load_predictor` for predicting); reading never touches
the caller's torch RNG.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["CHECKPOINT_KEYS", "DAMAGED_HINT", "CheckpointContents", "read_checkpoint"]

CHECKPOINT_KEYS = ("step", "model", "optimizer", "torch_rng", "config", "extra")
"""The entries every checkpoint has."""

DAMAGED_HINT = (
    "checkpoints are written atomically, so the file was damaged afterwards (a full disk, a "
    "copy cut short, a bad sync): restore it from a backup or use another checkpoint (when "
    "resuming a run: start the run again without --resume)"
)


@dataclass(frozen=True, eq=False)
class CheckpointContents:
    """What a checkpoint holds.

    Attributes:
        path: the file.
        step: completed training steps.
        config: the resolved training config as plain data (nested dicts).
        extra: small JSON run state.
        model: the regressor's state dict.
        optimizer: the optimiser's state dict.
        torch_rng: the torch RNG state when it was written.
        modules: name -> state dict of further components (``{}`` when none).
    """

    path: Path
    step: int
    config: dict
    extra: dict
    model: dict
    optimizer: dict
    torch_rng: torch.Tensor
    modules: dict


def read_checkpoint(path: str | os.PathLike) -> CheckpointContents:
    """Read a checkpoint safely (see the module docstring); nothing is loaded anywhere.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is truncated or corrupt, holds objects other than tensors and
            plain containers (refused without running any code), or lacks a checkpoint's
            entries; the message names the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling refused or a corrupt file
        reason = " ".join(str(error).split())
        if "Weights only load failed" in reason and "GLOBAL" in reason:
            found = re.search(r"GLOBAL ([\w.]+)", reason)
            what = f"a {found.group(1)} object" if found else "an object"
            raise ValueError(
                f"refusing to load checkpoint {path}: it holds {what}, not only tensors and "
                "plain containers, and loading it could run code (nothing was run); a "
                "spin-train checkpoint never holds one, so the file was made or altered "
                "elsewhere"
            ) from None
        if "weights_only" in reason:  # torch's advice to unpickle unsafely is not for users
            reason = "not a readable torch checkpoint"
        raise ValueError(
            f"cannot load checkpoint {path} ({type(error).__name__}: {reason[:300]}); it is "
            f"truncated or corrupt: {DAMAGED_HINT}"
        ) from None
    missing = (
        [key for key in CHECKPOINT_KEYS if key not in state]
        if isinstance(state, dict)
        else list(CHECKPOINT_KEYS)
    )
    if missing:
        raise ValueError(
            f"{path} is not a spin-train checkpoint: it lacks {missing} (a checkpoint is a "
            f"dict with {list(CHECKPOINT_KEYS)})"
        )
    try:
        config, extra = json.loads(state["config"]), json.loads(state["extra"])
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{path}: its saved config is not the JSON spin-train writes ({error}); the file "
            "was altered or written by something else"
        ) from None
    return CheckpointContents(
        path=path,
        step=int(state["step"]),
        config=config,
        extra=extra,
        model=state["model"],
        optimizer=state["optimizer"],
        torch_rng=state["torch_rng"],
        modules=state.get("modules", {}),
    )
