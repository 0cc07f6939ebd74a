"""The regressor shipped in the package, and how it is made.

``spin/predict/assets/keypoints_model.pt`` is a keypoint regressor (2D keypoints in a 96-px
crop -> SMPL-format pose, shape and crop camera of the open body model) that ``spin-demo``
starts every fit from unless ``--checkpoint`` names another (or ``none``: the mean pose).
``make shipped-model`` remakes it: ``spin-train --config configs/shipped_model.yaml`` (the
embedded synthetic data, MediaPipe's keypoints on its renders and endless synthetic people;
seeded), then :func:`export_model` on the run's checkpoint. ``assets/NOTICE.md`` says what it
was trained on, with which command, and how well it does.

The exported file is a ``spin-train`` checkpoint without the optimiser's state, its floating
weights in float16 (half the size; predictions move by well under a millimetre, see the
tests), so everything that reads checkpoints reads it (:func:`spin.predict.load_predictor`;
``spin-eval --checkpoint shipped``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from spin.atomic import atomic_write
from spin.predict.checkpoint import read_checkpoint

__all__ = ["NO_CHECKPOINT", "SHIPPED_MODEL", "SHIPPED_NAME", "export_model", "resolve_checkpoint"]

SHIPPED_NAME = "shipped"
"""What ``--checkpoint`` takes to mean the shipped model."""

SHIPPED_MODEL = Path(__file__).parent / "assets" / "keypoints_model.pt"
"""The shipped model's file."""

NO_CHECKPOINT = "none"
"""What ``spin-demo --checkpoint`` takes to mean no regressor: the mean pose."""

KEEP_FLOAT32 = ("init_pose_6d", "init_betas", "init_cam")
"""Weights exported at full precision: the mean parameters every prediction starts from."""


def export_model(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write ``checkpoint``'s regressor as a shippable file at ``out``: no optimiser state,
    floating weights in float16 (except :data:`KEEP_FLOAT32`), the run's config and step
    kept, ``extra`` noting where it came from. Returns ``out``.

    Raises:
        FileNotFoundError / ValueError: as :func:`~spin.predict.checkpoint.read_checkpoint`.
    """
    contents = read_checkpoint(checkpoint)
    model = {
        key: (
            value.half()
            if value.is_floating_point() and key.split(".")[-1] not in KEEP_FLOAT32
            else value
        )
        for key, value in contents.model.items()
    }
    extra = {**contents.extra, "exported_from": str(Path(checkpoint)), "weights": "float16"}
    state = {
        "step": contents.step,
        "model": model,
        "optimizer": {},
        "torch_rng": contents.torch_rng,
        "config": json.dumps(contents.config, sort_keys=True),
        "extra": json.dumps(extra, sort_keys=True),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(out, lambda file: torch.save(state, file))


def resolve_checkpoint(text: str | os.PathLike | None) -> Path | None:
    """A ``--checkpoint`` value to a file: :data:`SHIPPED_NAME` is the shipped model,
    :data:`NO_CHECKPOINT` (and None) is no checkpoint, anything else a path.

    Raises:
        FileNotFoundError: the shipped model is asked for but missing (a checkout without
            it: ``make shipped-model`` makes it).
    """
    if text is None or str(text) == NO_CHECKPOINT:
        return None
    if str(text) == SHIPPED_NAME:
        if not SHIPPED_MODEL.is_file():
            raise FileNotFoundError(
                f"the shipped model {SHIPPED_MODEL} is missing from this installation; "
                "`make shipped-model` makes it, or pass --checkpoint with a spin-train "
                f"checkpoint (or --checkpoint {NO_CHECKPOINT} to start from the mean pose)"
            )
        return SHIPPED_MODEL
    return Path(text)
