"""The regressor shipped in the package: exported from a checkpoint at half the size with the
same predictions, found by name, and much better than the mean pose on people it never saw."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spin.predict import load_predictor, read_checkpoint, shipped
from spin.predict.shipped import (
    NO_CHECKPOINT,
    SHIPPED_MODEL,
    SHIPPED_NAME,
    export_model,
    resolve_checkpoint,
)
from tests.train.tiny import REPO

FLOAT16_EPS = 2.0**-10
"""float16's relative spacing: a weight rounded to it moves by at most half of this."""


def test_an_exported_model_predicts_like_its_checkpoint(tiny_runs, tmp_path):
    run = tiny_runs("keypoints")
    out = export_model(run.checkpoint, tmp_path / "model.pt")
    assert out.stat().st_size < 0.6 * run.checkpoint.stat().st_size  # no optimiser, float16
    contents = read_checkpoint(out)
    original = read_checkpoint(run.checkpoint)
    assert contents.optimizer == {} and contents.config == original.config
    assert contents.extra["exported_from"] == str(run.checkpoint)
    halves = {k for k, v in contents.model.items() if v.dtype == torch.float16}
    assert halves and not any(k.split(".")[-1] in shipped.KEEP_FLOAT32 for k in halves)

    full, half = load_predictor(run.checkpoint), load_predictor(out)
    dataset = full.dataset(run.data_dir / "test.npz", run.data_dir)
    inputs = torch.stack([dataset[i]["img"] for i in range(len(dataset))])
    a, b = full.predict(inputs), half.predict(inputs)
    # Each weight moves by <= FLOAT16_EPS / 2 of itself; through a few layers and HMR's three
    # iterations the outputs (rotation entries, betas, camera: all of order 1) move by a few
    # times that, far below what a body could show.
    for name in ("pose_rotmats", "betas", "cam"):
        difference = (getattr(a, name) - getattr(b, name)).abs().max().item()
        assert difference < 20 * FLOAT16_EPS, (name, difference)


def test_checkpoint_names_resolve(monkeypatch, tmp_path):
    assert resolve_checkpoint(None) is None and resolve_checkpoint(NO_CHECKPOINT) is None
    assert resolve_checkpoint(SHIPPED_NAME) == SHIPPED_MODEL
    assert resolve_checkpoint(str(tmp_path / "x.pt")) == tmp_path / "x.pt"
    monkeypatch.setattr(shipped, "SHIPPED_MODEL", tmp_path / "gone.pt")
    with pytest.raises(FileNotFoundError, match="make shipped-model"):
        resolve_checkpoint(SHIPPED_NAME)


def test_the_shipped_model_is_the_documented_one():
    contents = read_checkpoint(SHIPPED_MODEL)
    assert SHIPPED_MODEL.stat().st_size < 10e6
    config = contents.config
    assert config["name"] == "shipped_model" and config["body_model"] == "open"
    assert config["data"]["input_representation"] == "keypoints"
    assert contents.step == config["num_steps"]
    notice = (SHIPPED_MODEL.parent / "NOTICE.md").read_text()
    assert "configs/shipped_model.yaml" in notice and "make shipped-model" in notice
    # The config it was trained with is the repository's (same settings, whatever the paths).
    from spin.config import config_to_dict, load_config
    from spin.train.config import TrainConfig, resolve_input_channels

    committed = load_config(TrainConfig, REPO / "configs" / "shipped_model.yaml")
    committed = config_to_dict(resolve_input_channels(committed))  # as the trainer saves it
    for key in ("num_steps", "batch_size", "lr", "seed", "hmr", "data"):
        assert json.dumps(config[key], sort_keys=True) == json.dumps(committed[key], sort_keys=True)


@pytest.mark.filterwarnings("ignore:label\\(\\) is deprecated:DeprecationWarning")
def test_the_shipped_model_beats_the_mean_pose_on_people_it_never_saw(tmp_path):
    """New synthetic people (a seed no training used), their generator keypoints as input:
    the shipped model must be far better than the mean pose (measured on the 200-person test
    split: 70-75 mm PA-MPJPE against 131.6)."""
    from spin.data.synthetic import SyntheticConfig, generate_synthetic
    from spin.eval.evaluate import evaluate
    from spin.eval.protocols import get_protocol

    config = SyntheticConfig(image_size=(128, 128), body_model="open", fraction_3d=1.0, seed=424242)
    generate_synthetic(config, 32, tmp_path, split="train", progress=False)
    report = evaluate(
        SHIPPED_MODEL,
        tmp_path / "train.npz",
        tmp_path,
        get_protocol("synthetic"),
        progress=False,
        mean_pose=True,
    )
    model, mean = report.errors.pa_mpjpe.mean(), report.mean_pose.pa_mpjpe.mean()
    print(f"shipped model PA-MPJPE {model:.1f} mm, mean pose {mean:.1f} mm (32 people)")
    assert np.isfinite(model) and model < 0.75 * mean, (model, mean)
