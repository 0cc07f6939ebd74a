"""spin-eval: options, a run on a tiny synthetic set checked by hand, outputs, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spin.cli import eval as cli
from tests.cli.help_text import help_text_explaining_every_option
from tests.eval.test_evaluate import (
    TOLERANCE_MM,
    hand_synthetic_errors,
    make_checkpoint,
    make_synthetic_set,
)

NUM_SAMPLES = 3
FAST = ["--workers", "0", "--no-progress", "--batch-size", "2"]


@pytest.fixture(scope="module")
def synthetic_npz(tmp_path_factory) -> Path:
    return make_synthetic_set(tmp_path_factory.mktemp("synthetic"), num=NUM_SAMPLES)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, synthetic_npz) -> Path:
    # Its config names the synthetic set as its training data: the default of --dataset.
    return make_checkpoint(tmp_path_factory.mktemp("run"), synthetic_npz.parent)


def test_help_explains_every_option(capsys):
    text = help_text_explaining_every_option(cli.build_parser(), capsys)
    for words in ("3dpw", "h36m-p1", "h36m-p2", "synthetic", "lsp14", "h36m17", "gendered"):
        assert words in text, words
    assert "60457274" in text and "indicative" in text and "eval_<dataset>.json" in text


def test_synthetic_default_matches_a_hand_computation(checkpoint, synthetic_npz, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["--checkpoint", str(checkpoint), "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert (
        lines[0].startswith("dataset: synthetic test split")
        and f"[protocol synthetic, file {synthetic_npz}]" in lines[0]  # the file scored
    )
    assert lines[1].startswith("joints: lsp14") and lines[2].startswith("ground truth: neutral")
    assert lines[3].startswith("frames: every frame")
    assert f"{NUM_SAMPLES} of {NUM_SAMPLES} samples" in lines[3]
    assert lines[4].startswith("body model: open-lite")
    assert "MPJPE" in printed and "PA-MPJPE" in printed and "PVE" in printed

    data = json.loads((out / "eval_synthetic.json").read_text())
    assert data["dataset_file"] == str(synthetic_npz)  # the checkpoint's training data
    expected = hand_synthetic_errors(checkpoint, synthetic_npz)
    per_sample = data["regressor"]["per_sample_mm"]
    for key in ("mpjpe", "pa_mpjpe", "pve"):
        np.testing.assert_allclose(per_sample[key], expected[key], atol=TOLERANCE_MM)
    summary = data["regressor"]["summary_mm"]
    assert summary["mpjpe"] == pytest.approx(expected["mpjpe"].mean(), abs=TOLERANCE_MM)
    assert f"{summary['pa_mpjpe']:.1f}" in printed
    png = out / "eval_synthetic.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_any_npz_file_and_protocol_flags(checkpoint, synthetic_npz, tmp_path, capsys):
    argv = ["--checkpoint", str(checkpoint), "--dataset", str(synthetic_npz), *FAST]
    argv += ["--out", str(tmp_path), "--joints", "h36m17", "--every", "2"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(
        f"dataset: test.npz (SPIN-format file) [protocol test, file {synthetic_npz}]"
    )
    assert "joints: h36m17" in printed and "every 2nd frame" in printed
    data = json.loads((tmp_path / "eval_test.json").read_text())
    assert data["sample_index"] == [0, 2] and len(data["joints"]) == 17
    assert (tmp_path / "eval_test.png").is_file()


def test_a_mismatching_body_model_is_refused(checkpoint, tmp_path, capsys):
    argv = ["--checkpoint", str(checkpoint), "--body-model", "smpl", "--out", str(tmp_path)]
    assert cli.main([*argv, *FAST]) == cli.EXIT_FAILURE
    error = " ".join(capsys.readouterr().err.split())
    assert "trained with the body model 'open-lite'" in error
    assert "--body-model smpl" in error and "Drop --body-model" in error
    assert not list(tmp_path.iterdir())


def test_missing_benchmark_data_says_how_to_get_it(checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--checkpoint", str(checkpoint), "--dataset", "3dpw", *FAST]) == 1
    error = capsys.readouterr().err
    assert "data/spin/3dpw_test.npz" in error and "tools/convert_3dpw.py" in error


@pytest.mark.parametrize(
    "argv",
    [
        ["--batch-size", "0"],
        ["--every", "0"],
        ["--dataset", "mpii"],
        ["--joints", "coco"],
        ["--smplify-mode", "adam"],
    ],
)
def test_usage_errors_exit_with_2(checkpoint, argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--checkpoint", str(checkpoint), *argv])
    assert exit_info.value.code == 2


def test_a_keypoints_checkpoint_end_to_end(tiny_runs, tmp_path, capsys):
    run = tiny_runs("keypoints")
    argv = ["--checkpoint", str(run.checkpoint), "--dataset", "synthetic", "--refine"]
    argv += ["--data", str(run.data_dir / "test.npz"), "--out", str(tmp_path), *FAST]
    argv += ["--smplify-mode", "anchored"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "input: keypoints" in printed and "+SMPLify" in printed
    assert "(mode anchored, asked for;" in printed
    data = json.loads((tmp_path / "eval_synthetic.json").read_text())
    assert data["input_representation"] == "keypoints" and data["counts"]["evaluated"] == 4
