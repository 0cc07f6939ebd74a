"""Smoke tests of the trainer's options: HMR's adversarial prior and the intermediate input
representations (2 steps of the tiny config), and exact resume with the discriminator."""

from __future__ import annotations

import json

import pytest
import torch

from spin.train.config import resolve_input_channels
from spin.train.trainer import Trainer
from tests.train.tiny import tiny_config

ADVERSARIAL = ["adversarial.enabled=true", "adversarial.corpus_size=64"]


@pytest.mark.parametrize(
    ("mode", "options"),
    [
        ("in_loop", ADVERSARIAL),
        ("static_fits", ["data.input_representation=part_segmentation"]),
        ("in_loop", ["data.input_representation=keypoint_heatmaps", *ADVERSARIAL]),
        ("regression_only", ["data.input_representation=keypoint_heatmaps"]),
        ("in_loop", ["data.input_representation=keypoints", "hmr.backbone.name=mlp"]),
    ],
    ids=["adversarial", "part_segmentation", "heatmaps_adversarial", "heatmaps", "keypoints"],
)
def test_two_steps_with_each_option(data_dir, tmp_path, mode, options):  # noqa: F811
    config = tiny_config(data_dir, tmp_path, f"mode={mode}", *options)
    trainer = Trainer(config, progress=False)
    metrics = trainer.run()
    assert trainer.step == 2
    assert torch.isfinite(torch.tensor(metrics["loss/total"]))
    assert "val/pa_mpjpe_mm" in metrics
    representation = config.data.input_representation
    channels = {"rgb": 3, "keypoints": 75}.get(representation, 25)
    assert trainer.model.backbone.in_channels == channels
    assert trainer.train_sets[0][0]["img"].shape[0] == channels
    assert trainer.val_data[0]["img"].shape[0] == channels
    saved = json.loads((tmp_path / "tiny" / "config.json").read_text())
    assert saved["hmr"]["backbone"]["in_channels"] == channels  # a checkpoint rebuilds it
    panel = tmp_path / "tiny" / "panels" / "step_0000002.png"
    from PIL import Image

    with Image.open(panel) as image:  # tiles of at least 192 px, even from 64 px crops
        assert image.width >= 2 * 192
    if config.adversarial.enabled:
        assert metrics["loss/adversarial"] > 0 and metrics["loss/discriminator"] > 0
    else:
        assert "loss/adversarial" not in metrics


def test_explicit_mismatched_input_channels_are_refused(data_dir, tmp_path):  # noqa: F811
    config = tiny_config(data_dir, tmp_path, "data.input_representation=part_segmentation")
    assert resolve_input_channels(config).hmr.backbone.in_channels == 25
    wrong = tiny_config(
        data_dir,
        tmp_path,
        "data.input_representation=part_segmentation",
        "hmr.backbone.in_channels=7",
    )
    with pytest.raises(ValueError, match="in_channels=7"):
        resolve_input_channels(wrong)


def test_resume_restores_the_discriminator(data_dir, tmp_path):  # noqa: F811
    overrides = [
        "mode=regression_only",
        "num_steps=3",
        "checkpoint_every=1",
        "val_every=0",
        "wandb.image_every=0",
        *ADVERSARIAL,
    ]
    reference = Trainer(tiny_config(data_dir, tmp_path / "a", *overrides), progress=False)
    reference.run()
    interrupted = Trainer(tiny_config(data_dir, tmp_path / "b", *overrides), progress=False)
    interrupted.run(max_steps=2)
    resumed = Trainer(
        tiny_config(data_dir, tmp_path / "b", *overrides), resume=True, progress=False
    )
    assert resumed.step == 2
    saved = interrupted.adversarial.state_dict()
    restored = resumed.adversarial.state_dict()
    assert torch.equal(saved["corpus"]["generator"], restored["corpus"]["generator"])
    assert saved["optimizer"]["state"][0]["step"] == restored["optimizer"]["state"][0]["step"]
    resumed.run()
    pairs = {
        "model": (reference.model, resumed.model),
        "discriminator": (reference.adversarial.discriminator, resumed.adversarial.discriminator),
    }
    for module, (a, b) in pairs.items():
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y), (module, name)
