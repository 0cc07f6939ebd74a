"""Tests of spin.predict, and tiny checkpoints of each input representation that the eval and
demo tests share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spin.train.trainer import Trainer
from tests.train.tiny import tiny_config

#: configs/tiny.yaml overrides of a checkpoint per input representation.
REPRESENTATIONS = {
    "rgb": (),
    "part_segmentation": ("data.input_representation=part_segmentation",),
    "keypoint_heatmaps": ("data.input_representation=keypoint_heatmaps",),
    "keypoints": ("data.input_representation=keypoints", "hmr.backbone.name=mlp"),
}

FAST = ("mode=regression_only", "val_every=0", "checkpoint_every=0", "wandb.image_every=0")


@dataclass(frozen=True, eq=False)
class TinyRun:
    """A finished tiny run: its synthetic data folder (``test.npz``, images, ``parts/``),
    its checkpoint and the trainer that wrote it."""

    data_dir: Path
    checkpoint: Path
    trainer: Trainer


def train_checkpoint(data_dir: Path, run_dir: Path, representation: str) -> TinyRun:
    """configs/tiny.yaml trained for its 2 steps (regression only) on ``representation``
    inputs; the synthetic data is made in ``data_dir`` on first use."""
    overrides = (*FAST, "threads=1", *REPRESENTATIONS[representation])
    trainer = Trainer(tiny_config(data_dir, run_dir, *overrides), progress=False)
    trainer.run()
    return TinyRun(Path(data_dir), trainer.run_dir / "checkpoint.pt", trainer)
