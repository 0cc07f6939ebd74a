"""What the experiment scripts under ``tools/`` share: train a configuration with overrides
(reusing a finished run, resuming an interrupted one), and print result tables.

A run's result is ``run_dir/name/experiment_result.json``: the config file, the overrides, the
final metrics and the minutes it took. It is written only when the run has finished, so an
experiment script that dies loses at most the run in progress, which resumes from its last
checkpoint when the script is started again with the same arguments.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

from spin.config import load_config
from spin.train.config import TrainConfig

__all__ = [
    "RESULT_NAME",
    "budget_overrides",
    "format_table",
    "mean_pose_baseline",
    "plot_by_fraction",
    "train_once",
]

RESULT_NAME = "experiment_result.json"


def budget_overrides(steps: int) -> list[str]:
    """The budget every run of an experiment shares: ``steps`` steps, validation at the end,
    checkpoints every 250 steps (or at the end), so an interrupted run resumes."""
    return [f"num_steps={steps}", f"val_every={steps}", f"checkpoint_every={min(steps, 250)}"]


def train_once(
    config_path: str,
    overrides: Sequence[str],
    *,
    name: str,
    run_dir: str,
    progress: bool = True,
) -> dict:
    """Train ``config_path`` with ``overrides`` as run ``run_dir/name``; returns its final
    metrics plus ``minutes``. A finished run with the same config and overrides is not
    trained again; an unfinished one resumes from its checkpoint."""
    from spin.train.trainer import Trainer

    overrides = [*overrides, f"name={name}", f"run_dir={run_dir}"]
    result_path = Path(run_dir) / name / RESULT_NAME
    if result_path.exists():
        result = json.loads(result_path.read_text())
        if result.get("config") == config_path and result.get("overrides") == overrides:
            return result["metrics"]
    config = load_config(TrainConfig, config_path, overrides)
    start = time.perf_counter()
    metrics = Trainer(config, resume=True, progress=progress).run()
    metrics["minutes"] = (time.perf_counter() - start) / 60
    result = {"config": config_path, "overrides": overrides, "metrics": metrics}
    result_path.write_text(json.dumps(result, indent=2))
    return metrics


def mean_pose_baseline(config_path: str, overrides: Sequence[str], run_dir: str) -> dict:
    """Validation metrics of the untrained regressor, which predicts the mean parameters
    (its residual heads start near zero): the score that learning has to beat."""
    from spin.train.trainer import Trainer

    overrides = [*overrides, "name=mean_pose", f"run_dir={run_dir}", "wandb.enabled=false"]
    config = load_config(TrainConfig, config_path, overrides)
    return Trainer(config, progress=False, overwrite=True).validate()  # a scratch folder


def _cell(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.1f}"
    return str(value)


def format_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A Markdown table (floats with one decimal, NaN as ``n/a``)."""
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_by_fraction(
    curves: dict[str, dict[float, Sequence[float]]], baseline: float, path: str | Path
) -> None:
    """Held-out PA-MPJPE against the fraction of training samples with 3D labels: one line per
    curve (``label -> {fraction: values over seeds}``), error bars (standard deviation) where
    a point has several seeds, and the untrained mean pose as a dashed line."""
    import numpy as np
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.2), dpi=120)
    axes = figure.subplots()
    fractions = sorted({f for series in curves.values() for f in series})
    several = any(len(v) > 1 for series in curves.values() for v in series.values())
    for label, series in curves.items():  # fractions evenly spaced: 0 has no logarithm
        points = sorted(series)
        values = [np.asarray(series[f], dtype=np.float64) for f in points]
        axes.errorbar(
            [fractions.index(f) for f in points],
            [v.mean() for v in values],
            yerr=[v.std(ddof=1) if v.size > 1 else 0.0 for v in values],
            marker="o",
            capsize=4 if several else 0,
            label=label,
        )
    axes.axhline(baseline, color="grey", linestyle="--", label="mean pose (untrained)")
    axes.set_xticks(range(len(fractions)), [f"{f:.0%}" for f in fractions])
    axes.set_xlabel("training samples with 3D labels")
    ylabel = "held-out PA-MPJPE (mm)" + (", mean +- std over seeds" if several else "")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
