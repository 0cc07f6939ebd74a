"""Does the loop help? Train the modes with one budget over seeds and fractions of 3D labels.

By default runs ``configs/synthetic_regression_only.yaml``, ``configs/synthetic_static_fits.yaml``
and ``configs/synthetic_spin.yaml`` (the same data, network, steps and seed; only the mode
differs). With ``--config``, every mode trains that one config with ``mode=<mode>``: e.g. the
keypoint regressor of ``make train`` on a pool of endless people (``static_fits`` needs fits
made beforehand over a dataset on disk, so it is left out for endless data).

``--seeds`` repeats each run with other training seeds (network initialisation, sample order;
the data stay the same) and ``--fractions`` sets the fraction of training samples that keep
their 3D labels (``data.endless.fraction_3d`` for endless data, else
``data.synthetic.fraction_3d``). Prints held-out PA-MPJPE (mm, 14 LSP joints from the H36M
regressor) as mean +- standard deviation over the seeds, the in-loop run's difference to
regression only (paired by seed), and writes ``loop_experiment.json`` / ``.md`` / ``.png``
(PA-MPJPE against the fraction, error bars over the seeds) in ``--run-dir``.

SPIN's claim, in spirit: with mostly 2D-only training data, the in-loop run beats
regression-only on held-out PA-MPJPE.

Finished runs are reused and an interrupted one resumes, so the script can be stopped and
started again with the same arguments.

Usage: ``python tools/experiment_loop.py [--steps 600] [--config CONFIG] [--seeds 0,1,2]
[--fractions 0.1] [--modes regression_only,in_loop] [--run-dir runs/experiment]
[key=value ...]`` (overrides apply to every run).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from spin.config import load_config
from spin.train.config import TrainConfig
from spin.train.experiments import (
    budget_overrides,
    format_table,
    mean_pose_baseline,
    plot_by_fraction,
    train_once,
)

CONFIGS = {
    "regression_only": "configs/synthetic_regression_only.yaml",
    "static_fits": "configs/synthetic_static_fits.yaml",
    "in_loop": "configs/synthetic_spin.yaml",
}
PA_MPJPE = "val/pa_mpjpe_mm"
VALID = "cache/fraction_valid"


def _fraction_key(config_path: str, overrides: list[str]) -> tuple[str, bool]:
    """The override that sets the fraction of 3D labels, and whether the data are endless."""
    config = load_config(TrainConfig, config_path, overrides)
    if config.data.endless is not None:
        return "data.endless.fraction_3d", True
    return "data.synthetic.fraction_3d", False


def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return math.nan, math.nan
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def _cell(values: list[float]) -> str:
    mean, std = _mean_std(values)
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.1f} +- {std:.1f}" if len(values) > 1 else f"{mean:.1f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--run-dir", default="runs/experiment")
    parser.add_argument(
        "--config", help="one config for every mode (default: the three synthetic configs)"
    )
    parser.add_argument("--modes", help="comma-separated modes (default: all that apply)")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument(
        "--fractions",
        help="comma-separated fractions of samples with 3D labels (default: the config's)",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    base = args.config or CONFIGS["regression_only"]
    fraction_key, endless = _fraction_key(base, args.overrides)
    modes = args.modes.split(",") if args.modes else list(CONFIGS)
    if endless and "static_fits" in modes:
        if args.modes:
            parser.error(
                "static_fits reads fits made beforehand over a dataset on disk; endless data "
                "have none (use --modes regression_only,in_loop)"
            )
        modes.remove("static_fits")
        print("static_fits left out: endless data have no fits made beforehand")
    unknown = set(modes) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; use {', '.join(CONFIGS)}")
    fractions = [float(f) for f in args.fractions.split(",")] if args.fractions else [None]

    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    baseline = mean_pose_baseline(base, args.overrides, args.run_dir)
    runs: dict = {}
    summary: dict[str, dict[str, list[float]]] = {}
    for fraction in fractions:
        label = "config" if fraction is None else f"{fraction * 100:g}%"
        tag = "config" if fraction is None else f"{round(fraction * 1000):04d}"
        for mode in modes:
            for seed in seeds:
                overrides = [*budget_overrides(args.steps), f"seed={seed}", *args.overrides]
                if fraction is not None:
                    overrides.append(f"{fraction_key}={fraction}")
                config = args.config or CONFIGS[mode]
                if args.config:
                    overrides.insert(0, f"mode={mode}")
                name = f"{Path(config).stem}_{mode}_f{tag}_s{seed}"
                metrics = train_once(config, overrides, name=name, run_dir=args.run_dir)
                runs[name] = {"mode": mode, "fraction": label, "seed": seed, "metrics": metrics}
                summary.setdefault(mode, {}).setdefault(label, []).append(
                    metrics.get(PA_MPJPE, math.nan)
                )
                print(name, json.dumps({k: metrics.get(k) for k in (PA_MPJPE, VALID, "minutes")}))

    labels = list(dict.fromkeys(label for per_mode in summary.values() for label in per_mode))
    rows = [[mode, *(_cell(summary[mode].get(label, [])) for label in labels)] for mode in modes]
    if "in_loop" in summary and "regression_only" in summary:
        cells = []
        for label in labels:  # paired by seed: same data and initialisation
            loop, plain = summary["in_loop"].get(label, []), summary["regression_only"].get(label)
            if not loop or not plain:
                cells.append("n/a")
                continue
            relative = [100.0 * (b - a) / b for a, b in zip(loop, plain, strict=True)]
            mean, std = _mean_std(relative)
            cells.append(f"{mean:.1f}% +- {std:.1f}")
        rows.append(["in_loop lower than regression_only by", *cells])
    table = format_table(["mode \\ fraction 3D", *labels], rows)
    header = (
        f"same budget: {args.steps} steps; seeds {seeds}; config {args.config or 'per mode'}; "
        f"overrides {args.overrides or 'none'}; held-out PA-MPJPE (mm), mean +- std over seeds; "
        f"mean pose (untrained) {baseline.get(PA_MPJPE, math.nan):.1f}"
    )
    print("\n" + header + "\n" + table)
    plot_path = run_dir / "loop_experiment.png"
    if all(label != "config" for label in labels):
        curves = {
            mode: {float(label.rstrip("%")) / 100: values for label, values in series.items()}
            for mode, series in summary.items()
        }
        plot_by_fraction(curves, baseline.get(PA_MPJPE, math.nan), plot_path)
        print(f"plot: {plot_path}")
    results = {"baseline": baseline, "runs": runs, "summary": summary, "steps": args.steps}
    (run_dir / "loop_experiment.json").write_text(json.dumps(results, indent=2))
    (run_dir / "loop_experiment.md").write_text(header + "\n\n" + table + "\n")
    print(f"results: {run_dir / 'loop_experiment.json'}, {run_dir / 'loop_experiment.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
