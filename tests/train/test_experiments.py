"""The experiment scripts' helpers: finished runs are reused, tables are Markdown."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

import spin.train.trainer
from spin.train.experiments import RESULT_NAME, format_table, plot_by_fraction, train_once
from tests.train.tiny import REPO, TINY


def test_format_table():
    table = format_table(["mode", "PA-MPJPE"], [["loop", 101.26], ["mean", float("nan")]])
    assert table.splitlines() == [
        "| mode | PA-MPJPE |",
        "|---|---|",
        "| loop | 101.3 |",
        "| mean | n/a |",
    ]


def test_a_finished_run_is_reused_and_a_changed_one_trained(data_dir, tmp_path, monkeypatch):
    overrides = [f"data.synthetic.out_dir={data_dir}", "mode=regression_only"]
    metrics = train_once(str(TINY), overrides, name="run", run_dir=str(tmp_path), progress=False)
    assert "val/pa_mpjpe_mm" in metrics and metrics["minutes"] > 0
    saved = json.loads((tmp_path / "run" / RESULT_NAME).read_text())
    assert saved["metrics"] == metrics

    class NoTraining:
        def __init__(self, *args, **kwargs):
            raise AssertionError("trained again")

    monkeypatch.setattr(spin.train.trainer, "Trainer", NoTraining)
    again = train_once(str(TINY), overrides, name="run", run_dir=str(tmp_path), progress=False)
    assert again == metrics
    with pytest.raises(AssertionError, match="trained again"):
        train_once(str(TINY), [*overrides, "lr=0.001"], name="run", run_dir=str(tmp_path))


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plot_by_fraction_writes_a_figure(tmp_path):
    curves = {"in_loop": {0.1: [100.0, 104.0, 98.0], 1.0: [80.0, 82.0, 81.0]}, "x": {0.1: [120]}}
    plot_by_fraction(curves, 131.6, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_experiment_loop_reports_seeds_mean_and_spread(data_dir, tmp_path):
    experiment_loop = _tool("experiment_loop")
    argv = ["--config", str(TINY), "--modes", "regression_only,in_loop", "--seeds", "0,1"]
    argv += ["--fractions", "0.5", "--steps", "2", "--run-dir", str(tmp_path)]
    assert experiment_loop.main([*argv, f"data.synthetic.out_dir={data_dir}"]) == 0
    results = json.loads((tmp_path / "loop_experiment.json").read_text())
    names = {f"tiny_{m}_f0500_s{s}" for m in ("regression_only", "in_loop") for s in (0, 1)}
    assert set(results["runs"]) == names
    for name, run in results["runs"].items():  # each run trained with its own seed
        saved = json.loads((tmp_path / name / RESULT_NAME).read_text())
        assert f"seed={run['seed']}" in saved["overrides"]
        assert "data.synthetic.fraction_3d=0.5" in saved["overrides"]
        assert f"mode={run['mode']}" in saved["overrides"]
    values = results["summary"]["in_loop"]["50%"]
    assert len(values) == 2
    table = (tmp_path / "loop_experiment.md").read_text()
    mean, std = np.mean(values), np.std(values, ddof=1)
    assert f"| in_loop | {mean:.1f} +- {std:.1f} |" in table
    assert "in_loop lower than regression_only by" in table
    assert (tmp_path / "loop_experiment.png").is_file()
