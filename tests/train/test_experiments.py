"""The experiment scripts' helpers: finished runs are reused, tables are Markdown."""

from __future__ import annotations

import json

import pytest

import spin.train.trainer
from spin.train.experiments import RESULT_NAME, format_table, train_once
from tests.train.tiny import TINY


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
