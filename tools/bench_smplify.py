"""Benchmark SMPLify: SPIN's faithful schedule against the fast mode, in one run.

A fixed, seeded batch of bodies made with the open model (random shapes, poses from the pose
sampler, upright and facing a crop camera with f = 5000 px) has its 49 joints projected with
pixel noise and dropped joints. Each method fits the batch from two initialisations: the mean
pose (as SPIN's static fits start), and the truth plus noise (as a regressor would give). The
table reports wall time per batch, fits/s, the final reprojection loss, MPJPE and PA-MPJPE
against the truth (H36M-17 regressor, pelvis-centred, 14 LSP joints, mm) and speed ratios.

Methods (``SMPLifyConfig.mode``):
- ``faithful``: SPIN's schedule posing the whole mesh each step (SPIN's implementation);
- ``fast``: the same schedule evaluating only the joints (the same numbers, less compute);
- ``lm``: Levenberg-Marquardt with analytic Jacobians and per-sample early stopping.

Usage: ``python tools/bench_smplify.py [--batch 64] [--body-model open] [--seed 0]``
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import torch

from spin.body import load_body_model
from spin.body.joint_conventions import H36M_TO_LSP14
from spin.body.pose_sampler import sample_poses
from spin.eval.metrics import M_TO_MM, center_on, mpjpe, pa_mpjpe
from spin.fitting.priors import load_pose_prior
from spin.fitting.smplify import SMPLify, SMPLifyConfig
from spin.geometry import (
    CROP_SIZE,
    FOCAL_LENGTH,
    crop_intrinsics,
    perspective_projection,
    upright_facing_camera,
    weak_perspective_to_translation,
)

PIXEL_NOISE = 2.0  # px in the 224 crop
DROP_PROBABILITY = 0.1
CONFIDENCE_RANGE = (0.5, 1.0)
WEAK_SCALE_RANGE = (0.75, 1.0)  # weak-perspective scale: body fills 75-100% of the crop
YAW_RANGE_DEG = 60.0
INIT_POSE_NOISE = 0.15  # rad on body joints, as a regressor's error
INIT_ORIENT_NOISE = 0.1
INIT_BETAS_NOISE = 0.5
INIT_CAM_NOISE = (0.02, 0.02, 2.0)  # m


@dataclass(frozen=True)
class Problem:
    keypoints: torch.Tensor  # (B, 49, 3)
    intrinsics: torch.Tensor  # (B, 3, 3)
    pose: torch.Tensor  # (B, 72)
    betas: torch.Tensor  # (B, 10)
    cam_t: torch.Tensor  # (B, 3)


def make_problem(body, batch: int, seed: int) -> Problem:
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    pose = torch.as_tensor(sample_poses(batch, rng), dtype=torch.float32)
    yaw = torch.as_tensor(rng.uniform(-YAW_RANGE_DEG, YAW_RANGE_DEG, batch), dtype=torch.float32)
    pose[:, :3] = upright_facing_camera(yaw)
    betas = torch.randn(batch, body.num_betas, generator=generator)
    weak = torch.zeros(batch, 3)
    weak[:, 0] = torch.empty(batch).uniform_(*WEAK_SCALE_RANGE, generator=generator)
    weak[:, 1:] = 0.05 * torch.randn(batch, 2, generator=generator)
    cam_t = weak_perspective_to_translation(weak)
    intrinsics = crop_intrinsics((batch,), like=pose)
    with torch.no_grad():
        joints = body(pose_rotvecs=pose, betas=betas, transl=cam_t).joints_spin
    pixels = perspective_projection(joints, intrinsics)
    pixels = pixels + PIXEL_NOISE * torch.randn(pixels.shape, generator=generator)
    confidence = torch.empty(batch, 49).uniform_(*CONFIDENCE_RANGE, generator=generator)
    dropped = torch.rand(batch, 49, generator=generator) < DROP_PROBABILITY
    confidence = torch.where(dropped, torch.zeros_like(confidence), confidence)
    keypoints = torch.cat([pixels, confidence[..., None]], dim=-1)
    return Problem(keypoints, intrinsics, pose, betas, cam_t)


def initialisations(problem: Problem, seed: int) -> dict[str, dict[str, torch.Tensor | None]]:
    batch = problem.pose.shape[0]
    generator = torch.Generator().manual_seed(seed + 1)
    mean_pose = torch.zeros(batch, 72)
    mean_pose[:, :3] = upright_facing_camera(torch.zeros(batch))
    noisy_pose = problem.pose + INIT_POSE_NOISE * torch.randn(batch, 72, generator=generator)
    noisy_pose[:, :3] = problem.pose[:, :3] + INIT_ORIENT_NOISE * torch.randn(
        batch, 3, generator=generator
    )
    noisy_betas = problem.betas + INIT_BETAS_NOISE * torch.randn(
        problem.betas.shape, generator=generator
    )
    noisy_cam = problem.cam_t + torch.tensor(INIT_CAM_NOISE) * torch.randn(
        batch, 3, generator=generator
    )
    return {
        "mean pose": {"init_pose_rotvecs": mean_pose, "init_betas": None, "init_cam_t": None},
        "noisy truth": {
            "init_pose_rotvecs": noisy_pose,
            "init_betas": noisy_betas,
            "init_cam_t": noisy_cam,
        },
    }


def errors_mm(body, pose, betas, problem: Problem) -> tuple[float, float]:
    with torch.no_grad():
        fit = body(pose_rotvecs=pose, betas=betas).joints_h36m
        truth = body(pose_rotvecs=problem.pose, betas=problem.betas).joints_h36m
    fit = center_on(fit, 0)[:, list(H36M_TO_LSP14)]
    truth = center_on(truth, 0)[:, list(H36M_TO_LSP14)]
    return (
        float(mpjpe(fit, truth).mean() * M_TO_MM),
        float(pa_mpjpe(fit, truth).mean() * M_TO_MM),
    )


METHODS = {
    "faithful": SMPLifyConfig(mode="faithful"),
    "fast": SMPLifyConfig(mode="fast"),
    "lm": SMPLifyConfig(mode="lm"),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--body-model", default="open")
    parser.add_argument("--prior", default="open")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--methods", default=",".join(METHODS), help="comma-separated subset of the methods"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    body = load_body_model(args.body_model)
    prior = load_pose_prior(args.prior)
    problem = make_problem(body, args.batch, args.seed)
    inits = initialisations(problem, args.seed)
    methods = args.methods.split(",")
    print(
        f"SMPLify benchmark: {args.batch} bodies, body model {args.body_model!r} "
        f"({body.data.num_vertices} vertices), crop {CROP_SIZE} px, f = {FOCAL_LENGTH:g} px, "
        f"noise {PIXEL_NOISE} px, {DROP_PROBABILITY:.0%} joints dropped, "
        f"torch threads {torch.get_num_threads()}, device cpu"
    )
    rows = []
    for init_name, init in inits.items():
        init_betas = init["init_betas"]
        if init_betas is None:
            init_betas = torch.zeros_like(problem.betas)
        start_mpjpe, start_pa = errors_mm(body, init["init_pose_rotvecs"], init_betas, problem)
        nan = float("nan")
        rows.append((init_name, "initialisation", nan, nan, nan, start_mpjpe, start_pa))
        for method in methods:
            smplify = SMPLify(body, prior, METHODS[method])
            start = time.perf_counter()
            result = smplify(problem.keypoints, problem.intrinsics, **init)
            elapsed = time.perf_counter() - start
            fit_mpjpe, fit_pa = errors_mm(body, result.pose_rotvecs, result.betas, problem)
            rows.append(
                (
                    init_name,
                    method,
                    elapsed,
                    args.batch / elapsed,
                    float(result.reprojection_loss.mean()),
                    fit_mpjpe,
                    fit_pa,
                )
            )
    header = (
        f"{'init':<12} {'method':<15} {'s/batch':>8} {'fits/s':>8} {'reproj':>9} "
        f"{'MPJPE':>7} {'PA-MPJPE':>9}"
    )
    print(header)
    print("-" * len(header))
    for init_name, method, elapsed, rate, reproj, err, pa in rows:
        print(
            f"{init_name:<12} {method:<15} {elapsed:>8.2f} {rate:>8.1f} {reproj:>9.1f} "
            f"{err:>7.1f} {pa:>9.1f}"
        )
    print()
    for init_name in inits:
        times = {m: t for i, m, t, *_ in rows if i == init_name and m in methods}
        if "faithful" in times:
            for method in ("fast", "lm"):
                if method in times:
                    print(
                        f"{init_name}: {method} is {times['faithful'] / times[method]:.1f}x "
                        "faster than faithful"
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
