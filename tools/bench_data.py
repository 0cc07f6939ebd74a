"""Benchmark synthetic training data: samples/s of rendered samples against endless ones.

Times, on one thread, (1) :func:`spin.data.synthetic.generate_synthetic` writing rendered
samples (image, part map, keypoints) to a scratch folder, and (2)
:class:`spin.data.endless.EndlessKeypoints` making keypoint samples on the fly, both for the
people of ``configs/synthetic_keypoints.yaml`` (open body model, 128 px frames), and prints
one table. The endless rows also give where the time goes (cProfile of the same run).

Usage: ``python tools/bench_data.py [--rendered 40] [--endless 1024] [--body-model open]``
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time

import torch

from spin.data.endless import EndlessKeypoints
from spin.data.synthetic import SyntheticConfig, generate_synthetic

PROFILED = {
    "surface_at_points": "ray cast (occlusion)",
    "_place_body": "placement",
    "occluded_by_surface": "occlusion rule",
    "sample_people": "pose/shape/camera draws",
    "forward": "body model forward",
    "keypoint_vector": "network input",
}


def time_rendered(config: SyntheticConfig, num: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        generate_synthetic(config, 2, folder, split="test", progress=False)  # warm-up
        start = time.perf_counter()
        generate_synthetic(config, num, folder, split="train", progress=False)
        return num / (time.perf_counter() - start)


def time_endless(config: SyntheticConfig, num: int, representation: str) -> tuple[float, dict]:
    data = EndlessKeypoints(config, 10**9, img_size=96, input_representation=representation)
    data[0]  # warm-up chunk
    first = data.chunk
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    for index in range(first, first + num):
        data[index]
    profile.disable()
    rate = num / (time.perf_counter() - start)
    stats = pstats.Stats(profile).stats
    parts = {}
    for (_, _, function), (_, _, _, cumulative, _) in stats.items():
        if function in PROFILED:
            parts[PROFILED[function]] = parts.get(PROFILED[function], 0.0) + cumulative
    return rate, {name: 1000 * seconds / num for name, seconds in parts.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rendered", type=int, default=40, help="rendered samples timed")
    parser.add_argument("--endless", type=int, default=1024, help="endless samples timed")
    parser.add_argument("--body-model", default="open")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = SyntheticConfig(image_size=(128, 128), body_model=args.body_model)
    rows = [("rendered (generate_synthetic)", time_rendered(config, args.rendered), {})]
    for representation in ("keypoints", "keypoint_heatmaps"):
        rate, parts = time_endless(config, args.endless, representation)
        rows.append((f"endless, {representation}", rate, parts))
    print(f"\nbody model {args.body_model!r}, 128 px frames, 96 px crops, 1 thread\n")
    print("| data | samples/s | ms/sample | of which (ms/sample, profiled) |")
    print("|---|---|---|---|")
    for name, rate, parts in rows:
        detail = ", ".join(f"{k} {v:.2f}" for k, v in sorted(parts.items(), key=lambda x: -x[1]))
        print(f"| {name} | {rate:.1f} | {1000 / rate:.1f} | {detail or '-'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
