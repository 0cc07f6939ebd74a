"""Benchmark a training step: steps/s and where the time goes, regression-only vs in-loop.

Builds the trainer of a config (default ``configs/synthetic_spin.yaml``; the synthetic data is
generated if missing) for each mode, runs ``--warmup`` steps, then times ``--steps`` steps and
prints one table: seconds per step and its breakdown (data loading, network + body forward,
fits-cache fetch and scoring, SMPLify, cache update, losses + backward + optimiser step).

Usage: ``python tools/bench_train.py [--config configs/synthetic_spin.yaml] [--steps 10]
[key=value ...]``
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np

from spin.config import load_config
from spin.train.config import TrainConfig
from spin.train.trainer import Trainer

PARTS = (
    "time/data",
    "time/forward",
    "time/cache_fetch",
    "time/smplify",
    "time/cache_update",
    "time/backward",
)


def measure(config: TrainConfig, warmup: int, steps: int) -> dict:
    """Mean timings over the last ``steps`` of ``warmup + steps`` logged steps."""
    trainer = Trainer(config, progress=False, overwrite=True)  # benchmark runs are scratch
    trainer.run(max_steps=warmup + steps)
    lines = (trainer.run_dir / "metrics.jsonl").read_text().splitlines()
    timed = [m for m in map(json.loads, lines) if "time/forward" in m][-steps:]
    result = {part: float(np.mean([m.get(part, 0.0) for m in timed])) for part in PARTS}
    throughput = np.mean([m["throughput/samples_per_s"] for m in timed])
    result["step"] = float(config.batch_size / throughput)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/synthetic_spin.yaml")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--modes", default="regression_only,in_loop")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    rows = {}
    with tempfile.TemporaryDirectory() as run_dir:
        for mode in args.modes.split(","):
            overrides = [
                f"mode={mode}",
                f"run_dir={run_dir}",
                f"name=bench_{mode}",
                f"num_steps={args.warmup + args.steps + 1}",
                "log_every=1",
                "val_every=0",
                "checkpoint_every=0",
                "wandb.enabled=false",
                "wandb.image_every=0",
                *args.overrides,
            ]
            config = load_config(TrainConfig, args.config, overrides)
            rows[mode] = measure(config, args.warmup, args.steps)
    config = load_config(TrainConfig, args.config, args.overrides)
    print(
        f"training step benchmark: {args.config}, backbone {config.hmr.backbone.name}, "
        f"{config.data.img_size} px, batch {config.batch_size}, body model {config.body_model}, "
        f"SMPLify {config.smplify.mode}, {args.steps} timed steps after {args.warmup} warm-up"
    )
    header = f"{'mode':<16} {'s/step':>7} {'steps/s':>8} " + " ".join(
        f"{p.split('/')[1]:>12}" for p in PARTS
    )
    print(header)
    print("-" * len(header))
    for mode, row in rows.items():
        parts = " ".join(f"{row[p]:>12.3f}" for p in PARTS)
        print(f"{mode:<16} {row['step']:>7.3f} {1 / row['step']:>8.2f} {parts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
