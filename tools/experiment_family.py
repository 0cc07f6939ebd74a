"""HMR, NBF and SPIN as options of one trainer: two tables and a plot on the synthetic data.

Table 1, supervision type (regression only, every training sample labelled, RGB input):
2D keypoints only, 2D + HMR's adversarial prior, 3D joints only, SMPL parameters only,
everything combined. Reports held-out MPJPE / PA-MPJPE (mm), the mean angle of the 23
body-joint rotations (degrees) and the 2D error of the 24 keypoints (pixels of the 224 crop).

Table 2, how much 3D supervision is needed: the fraction of training samples that keep their
3D labels (the others are 2D-only) against held-out PA-MPJPE, for each input representation
(RGB, NBF's part segmentation, ...) without and with SMPLify in the loop. The plot of table 2
is written next to the results.

Every run trains ``--config`` with the same budget and seed; only the overrides of its row
differ. Finished runs are reused and an interrupted one resumes, so the script can be stopped
and started again. The training split must carry 3D labels on every sample (the synthetic
data made by ``spin-train`` does; ``spin-make-synthetic --fraction-3d 1``).

Usage: ``python tools/experiment_family.py [--steps 400] [--tables 1,2]
[--fractions 0,0.05,0.1,0.2,0.5,1] [--inputs rgb,part_segmentation]
[--modes regression_only,in_loop] [--run-dir runs/family] [key=value ...]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from spin.train.experiments import (
    budget_overrides,
    format_table,
    mean_pose_baseline,
    plot_by_fraction,
    train_once,
)

CONFIG = "configs/synthetic_spin.yaml"
# Loss weights left on for each supervision type (the others are set to 0).
NO_LABEL_LOSSES = ["loss.keypoints_3d=0", "loss.pose=0", "loss.betas=0"]
SUPERVISION = {
    "2D keypoints": NO_LABEL_LOSSES,
    "2D + adversarial prior": [*NO_LABEL_LOSSES, "adversarial.enabled=true"],
    "3D joints": ["loss.keypoints_2d=0", "loss.pose=0", "loss.betas=0"],
    "SMPL parameters": ["loss.keypoints_2d=0", "loss.keypoints_3d=0"],
    "all combined": [],
}
METRICS = {
    "MPJPE": "val/mpjpe_mm",
    "PA-MPJPE": "val/pa_mpjpe_mm",
    "rotation (deg)": "val/rotation_deg",
    "2D (px)": "val/keypoints_2d_px",
}


def _metrics_row(metrics: dict) -> list:
    return [metrics.get(key, float("nan")) for key in METRICS.values()]


def supervision_table(args, common: list[str]) -> tuple[str, dict]:
    results = {}
    for label, overrides in SUPERVISION.items():
        name = "supervision_" + label.replace(" ", "_").replace("+", "and").lower()
        results[label] = train_once(
            CONFIG,
            [*common, "mode=regression_only", "data.synthetic.fraction_3d=1.0", *overrides],
            name=name,
            run_dir=args.run_dir,
        )
    rows = [[label, *_metrics_row(metrics)] for label, metrics in results.items()]
    return format_table(["supervision", *METRICS], rows), results


def fraction_table(args, common: list[str]) -> tuple[str, dict]:
    fractions = [float(f) for f in args.fractions.split(",")]
    results: dict[str, dict[float, dict]] = {}
    for representation in args.inputs.split(","):
        for mode in args.modes.split(","):
            series = results.setdefault(f"{representation}, {mode}", {})
            for fraction in fractions:
                series[fraction] = train_once(
                    CONFIG,
                    [
                        *common,
                        f"mode={mode}",
                        f"data.input_representation={representation}",
                        f"data.synthetic.fraction_3d={fraction}",
                    ],
                    name=f"fraction_{representation}_{mode}_{round(fraction * 1000):04d}",
                    run_dir=args.run_dir,
                )
    header = ["input, mode", *(f"{f:.0%}" for f in fractions)]
    rows = [
        [label, *(series[f].get("val/pa_mpjpe_mm", float("nan")) for f in fractions)]
        for label, series in results.items()
    ]
    return format_table(header, rows), results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--tables", default="1,2")
    parser.add_argument("--fractions", default="0,0.05,0.1,0.2,0.5,1")
    parser.add_argument("--inputs", default="rgb,part_segmentation")
    parser.add_argument("--modes", default="regression_only,in_loop")
    parser.add_argument("--run-dir", default="runs/family")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    common = [
        *budget_overrides(args.steps),
        "wandb.image_every=0",
        *args.overrides,
    ]
    out = Path(args.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    baseline = mean_pose_baseline(CONFIG, args.overrides, args.run_dir)
    report = [
        f"budget: {args.steps} steps per run; overrides: {args.overrides or 'none'}",
        f"mean pose (untrained): PA-MPJPE {baseline.get('val/pa_mpjpe_mm', float('nan')):.1f} mm",
    ]
    results: dict = {"mean_pose": baseline}
    tables = args.tables.split(",")
    if "1" in tables:
        table, results["supervision"] = supervision_table(args, common)
        report += ["", "Table 1: supervision type (every sample labelled, RGB)", table]
    if "2" in tables:
        table, fractions = fraction_table(args, common)
        results["fractions"] = {k: {str(f): m for f, m in v.items()} for k, v in fractions.items()}
        plot = out / "fraction_3d.png"
        curves = {
            label: {f: [m.get("val/pa_mpjpe_mm", float("nan"))] for f, m in series.items()}
            for label, series in fractions.items()
        }
        plot_by_fraction(curves, baseline.get("val/pa_mpjpe_mm", float("nan")), plot)
        report += ["", "Table 2: held-out PA-MPJPE (mm) by fraction of 3D labels", table]
        report.append(f"plot: {plot}")
    (out / "family.json").write_text(json.dumps(results, indent=2))
    (out / "family.md").write_text("\n".join(report) + "\n")
    print("\n".join(report))
    print(f"results: {out / 'family.json'}, {out / 'family.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
