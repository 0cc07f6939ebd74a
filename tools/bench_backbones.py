"""Benchmark the encoders: seconds per forward + backward of a batch, on a fixed thread count.

For each backbone, builds it with random weights (the weights do not change the cost), runs
``--warmup`` untimed steps, then times ``--repeats`` steps of ``loss = features.square().mean();
loss.backward()`` on a ``(batch, 3, size, size)`` input in train mode, and prints one table:
median and best seconds per step, parameters and feature size.

Usage: ``python tools/bench_backbones.py [--backbones mobilenet_v2,resnet18] [--batch 16]
[--size 128] [--threads 1] [--repeats 5] [--frozen-stages N]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from spin.regressor.backbones import BackboneConfig, build_backbone


def time_step(
    name: str, batch: int, size: int, warmup: int, repeats: int, frozen_stages: int = 0
) -> dict[str, float]:
    """Seconds of ``repeats`` forward + backward steps of backbone ``name`` (after ``warmup``),
    its first ``frozen_stages`` stages frozen."""
    torch.manual_seed(0)
    config = BackboneConfig(name=name, frozen_stages=frozen_stages)
    model, feature_dim = build_backbone(config)
    model.train()
    images = torch.randn(batch, 3, size, size)
    times = []
    for index in range(warmup + repeats):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        model(images).square().mean().backward()
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return {
        "median_s": statistics.median(times),
        "best_s": min(times),
        "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "features": feature_dim,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default="mobilenet_v2,resnet18")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--frozen-stages", type=int, default=0, help="freeze the first N stages (-1: all)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the trainer does
    print(
        f"forward + backward, batch {args.batch}, {args.size} px, {args.threads} thread(s), "
        f"median (best) of {args.repeats}, frozen_stages={args.frozen_stages}"
    )
    print(f"{'backbone':<14} {'s/step':>8} {'best':>8} {'params (M)':>11} {'features':>9}")
    for name in args.backbones.split(","):
        row = time_step(name, args.batch, args.size, args.warmup, args.repeats, args.frozen_stages)
        print(
            f"{name:<14} {row['median_s']:>8.3f} {row['best_s']:>8.3f} "
            f"{row['parameters_m']:>11.2f} {row['features']:>9d}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
