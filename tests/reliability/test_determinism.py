"""Determinism: the same seed and configuration give the same loss curve on CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spin.train.trainer import Trainer
from tests.train.tiny import tiny_config

OVERRIDES = [
    "num_steps=3",
    "log_every=1",
    "val_every=0",
    "checkpoint_every=0",
    "wandb.image_every=0",
    "threads=1",
]
RTOL = 1e-6


def loss_curve(trainer: Trainer) -> np.ndarray:
    lines = (trainer.run_dir / "metrics.jsonl").read_text().splitlines()
    return np.array([json.loads(line)["loss/total"] for line in lines if "loss/total" in line])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic_tiny")


def run(data_dir, run_dir, *overrides) -> np.ndarray:
    trainer = Trainer(tiny_config(data_dir, run_dir, *OVERRIDES, *overrides), progress=False)
    trainer.run()
    return loss_curve(trainer)


def test_same_seed_same_loss_curve_other_seed_another(data_dir, tmp_path):
    first = run(data_dir, tmp_path / "first")
    second = run(data_dir, tmp_path / "second")
    other_seed = run(data_dir, tmp_path / "other", "seed=1")
    assert len(first) == 3
    np.testing.assert_allclose(second, first, rtol=RTOL, atol=0)
    assert not np.allclose(other_seed, first, rtol=1e-3)
    print(
        f"same seed: loss curves {first.tolist()} and {second.tolist()}; seed 1: "
        f"{other_seed.tolist()}"
    )
