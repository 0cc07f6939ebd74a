"""Benchmark SMPLify: SPIN's faithful schedule against the fast modes, in one run.

A fixed, seeded batch of bodies made with the open model (betas ~ N(0, I), poses from the pose
sampler, any heading, the camera up to 20 degrees above or below, in a crop camera with
f = 5000 px) has its 49 joints projected with detector-like errors: Gaussian pixel noise, a
few gross outliers (a wrong limb, as detectors make), dropped joints and confidences in
[0.3, 1]. Each method fits the batch from three initialisations: the mean pose facing the
camera (as SPIN's static fits start), and the truth plus two levels of noise (as a regressor
would give: per-value noise on all 69 body-pose values, the orientation, betas and camera).
The table reports wall time per batch, fits/s, the final reprojection loss (SPIN's units: the
per-joint mean), MPJPE and PA-MPJPE against the truth (H36M-17 regressor, pelvis-centred,
14 LSP joints, mm), the shape error (mean vertex distance of the fitted and true bodies in the
rest pose, mm) and speed ratios.

Methods (``SMPLifyConfig.mode``):
- ``faithful``: SPIN's schedule posing the whole mesh each step (SPIN's implementation);
- ``fast``: the same schedule evaluating only the joints (the same numbers, less compute);
- ``lm``: SPIN's objective by Levenberg-Marquardt with analytic Jacobians and per-sample
  early stopping;
- ``anchored`` (the default of ``spin-fit-dataset``): ``lm`` plus
  terms that keep the fit near its start; from the mean pose it runs as
  ``spin-fit-dataset --init mean`` does (``mean_start_config``: four headings, no anchors).

Usage: ``python tools/bench_smplify.py [--batch 64] [--body-model open] [--seed 0]
[--device cuda] [--methods faithful,fast,lm]``
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from spin.body import load_body_model
from spin.body.joint_conventions import H36M_TO_LSP14
from spin.body.pose_sampler import sample_poses
from spin.eval.evaluate import compute_errors
from spin.eval.metrics import M_TO_MM
from spin.fitting.priors import load_pose_prior
from spin.fitting.smplify import SMPLify, SMPLifyConfig, mean_start_config
from spin.geometry import (
    CROP_SIZE,
    FOCAL_LENGTH,
    crop_intrinsics,
    perspective_projection,
    upright_facing_camera,
    weak_perspective_to_translation,
)
from spin.geometry.rotations import rotmat_to_rotvec, rotvec_to_rotmat

PIXEL_NOISE = 4.0  # px in the 224 crop
OUTLIER_PROBABILITY = 0.03  # per joint: displaced by OUTLIER_RANGE px in a random direction
OUTLIER_RANGE = (15.0, 40.0)
DROP_PROBABILITY = 0.2
CONFIDENCE_RANGE = (0.3, 1.0)
WEAK_SCALE_RANGE = (0.75, 1.0)  # weak-perspective scale: body fills 75-100% of the crop
YAW_RANGE_DEG = 180.0  # any heading
PITCH_RANGE_DEG = 20.0  # camera above / below the body
#: Regressor-like initialisations: noise on (all 69 body-pose values [rad], orientation [rad],
#: betas, camera translation [m]).
NOISY_INITS = {
    "noisy truth": (0.15, 0.1, 0.5, (0.02, 0.02, 2.0)),
    "noisier truth": (0.25, 0.2, 1.0, (0.04, 0.04, 4.0)),
}


@dataclass(frozen=True)
class Problem:
    keypoints: torch.Tensor  # (B, 49, 3)
    intrinsics: torch.Tensor  # (B, 3, 3)
    pose: torch.Tensor  # (B, 72)
    betas: torch.Tensor  # (B, 10)
    cam_t: torch.Tensor  # (B, 3)


def make_problem(body, batch: int, seed: int) -> Problem:
    """The seeded batch (on the CPU, float32; :func:`to_device` moves it)."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    pose = torch.as_tensor(sample_poses(batch, rng), dtype=torch.float32)
    yaw = torch.as_tensor(rng.uniform(-YAW_RANGE_DEG, YAW_RANGE_DEG, batch), dtype=torch.float32)
    pitch = torch.zeros(batch, 3)
    pitch[:, 0] = torch.deg2rad(
        torch.as_tensor(rng.uniform(-PITCH_RANGE_DEG, PITCH_RANGE_DEG, batch), dtype=torch.float32)
    )
    pose[:, :3] = rotmat_to_rotvec(
        rotvec_to_rotmat(pitch) @ rotvec_to_rotmat(upright_facing_camera(yaw))
    )
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
    outlier = torch.rand(batch, 49, 1, generator=generator) < OUTLIER_PROBABILITY
    direction = torch.nn.functional.normalize(
        torch.randn(batch, 49, 2, generator=generator), dim=-1
    )
    distance = torch.empty(batch, 49, 1).uniform_(*OUTLIER_RANGE, generator=generator)
    pixels = torch.where(outlier, pixels + distance * direction, pixels)
    confidence = torch.empty(batch, 49).uniform_(*CONFIDENCE_RANGE, generator=generator)
    dropped = torch.rand(batch, 49, generator=generator) < DROP_PROBABILITY
    confidence = torch.where(dropped, torch.zeros_like(confidence), confidence)
    keypoints = torch.cat([pixels, confidence[..., None]], dim=-1)
    return Problem(keypoints, intrinsics, pose, betas, cam_t)


def initialisations(problem: Problem, seed: int) -> dict[str, dict[str, torch.Tensor | None]]:
    batch = problem.pose.shape[0]
    mean_pose = torch.zeros(batch, 72)
    mean_pose[:, :3] = upright_facing_camera(torch.zeros(batch))
    inits = {"mean pose": {"init_pose_rotvecs": mean_pose, "init_betas": None, "init_cam_t": None}}
    for offset, (name, (pose_noise, orient_noise, betas_noise, cam_noise)) in enumerate(
        NOISY_INITS.items(), start=1
    ):
        generator = torch.Generator().manual_seed(seed + offset)
        noisy_pose = problem.pose + pose_noise * torch.randn(batch, 72, generator=generator)
        noisy_pose[:, :3] = problem.pose[:, :3] + orient_noise * torch.randn(
            batch, 3, generator=generator
        )
        noisy_betas = problem.betas + betas_noise * torch.randn(
            problem.betas.shape, generator=generator
        )
        noisy_cam = problem.cam_t + torch.tensor(cam_noise) * torch.randn(
            batch, 3, generator=generator
        )
        inits[name] = {
            "init_pose_rotvecs": noisy_pose,
            "init_betas": noisy_betas,
            "init_cam_t": noisy_cam,
        }
    return inits


def to_device(value, device: torch.device):
    """``value`` (a tensor, a dict of tensors / None, or a :class:`Problem`) on ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: None if v is None else v.to(device) for k, v in value.items()}
    return Problem(*(to_device(getattr(value, f), device) for f in Problem.__dataclass_fields__))


def errors_mm(body, pose, betas, problem: Problem) -> tuple[float, float, float]:
    """MPJPE, PA-MPJPE (14 LSP joints, pelvis-centred) and the shape error (mean vertex
    distance in the rest pose), in mm, averaged over the batch."""
    with torch.no_grad():
        fit = body(pose_rotvecs=pose, betas=betas).joints_h36m
        truth = body(pose_rotvecs=problem.pose, betas=problem.betas).joints_h36m
        rest = torch.zeros_like(pose)
        fit_rest = body(pose_rotvecs=rest, betas=betas).vertices
        truth_rest = body(pose_rotvecs=rest, betas=problem.betas).vertices
    errors = compute_errors(fit, truth, H36M_TO_LSP14)  # as spin-eval computes them
    shape = (fit_rest - truth_rest).norm(dim=-1).mean()
    return (
        float(errors["mpjpe"].mean()),
        float(errors["pa_mpjpe"].mean()),
        float(shape * M_TO_MM),
    )


def timed(fn, device: torch.device):
    """``(fn(), wall seconds, CPU seconds of this process)``, waiting for the device before
    reading the clocks. CPU seconds count every thread; on a busy machine they are the
    steadier measure of the work a method does."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - start, time.process_time() - start_cpu


METHODS = {
    "faithful": SMPLifyConfig(mode="faithful"),
    "fast": SMPLifyConfig(mode="fast"),
    "lm": SMPLifyConfig(mode="lm"),
    "anchored": SMPLifyConfig(mode="anchored"),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--body-model", default="open")
    parser.add_argument("--prior", default="open")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed runs of each method first (default: 1 on CUDA, 0 on the CPU)",
    )
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated subset of {list(METHODS)}"
    )
    parser.add_argument(
        "--inits", default=None, help="comma-separated subset of the initialisations"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    warmup = args.warmup if args.warmup is not None else int(device.type == "cuda")
    body = load_body_model(args.body_model).to(device)
    prior = load_pose_prior(args.prior).to(device)
    problem = make_problem(load_body_model(args.body_model), args.batch, args.seed)
    inits = initialisations(problem, args.seed)
    if args.inits:
        inits = {name: inits[name] for name in args.inits.split(",")}
    problem = to_device(problem, device)
    methods = args.methods.split(",")
    print(
        f"SMPLify benchmark: {args.batch} bodies, body model {args.body_model!r} "
        f"({body.data.num_vertices} vertices), crop {CROP_SIZE} px, f = {FOCAL_LENGTH:g} px, "
        f"noise {PIXEL_NOISE} px, {OUTLIER_PROBABILITY:.0%} outliers, "
        f"{DROP_PROBABILITY:.0%} joints dropped, headings +-{YAW_RANGE_DEG:g} deg, "
        f"device {device}, torch threads {torch.get_num_threads()}, warm-up runs {warmup}"
    )
    rows = []
    for init_name, init in inits.items():
        init = to_device(init, device)
        init_betas = init["init_betas"]
        if init_betas is None:
            init_betas = torch.zeros_like(problem.betas)
        start_errors = errors_mm(body, init["init_pose_rotvecs"], init_betas, problem)
        nan = float("nan")
        rows.append((init_name, "initialisation", nan, nan, nan, nan, *start_errors))
        for method in methods:
            config = METHODS[method]
            if method == "anchored" and init_name == "mean pose":
                config = mean_start_config(config)
            smplify = SMPLify(body, prior, config)
            for _ in range(warmup):
                smplify(problem.keypoints, problem.intrinsics, **init)
            result, elapsed, cpu = timed(
                partial(smplify, problem.keypoints, problem.intrinsics, **init), device
            )
            fit_errors = errors_mm(body, result.pose_rotvecs, result.betas, problem)
            reprojection = float(result.reprojection_loss.mean())
            rows.append(
                (init_name, method, elapsed, cpu, args.batch / elapsed, reprojection, *fit_errors)
            )
    header = (
        f"{'init':<14} {'method':<15} {'s/batch':>8} {'CPU s':>7} {'fits/s':>8} {'reproj':>9} "
        f"{'MPJPE':>7} {'PA-MPJPE':>9} {'shape':>7}"
    )
    print(header)
    print("-" * len(header))
    for init_name, method, elapsed, cpu, rate, reproj, err, pa, shape in rows:
        print(
            f"{init_name:<14} {method:<15} {elapsed:>8.2f} {cpu:>7.2f} {rate:>8.1f} {reproj:>9.2f} "
            f"{err:>7.1f} {pa:>9.1f} {shape:>7.1f}"
        )
    print()
    for init_name in inits:
        times = {m: (t, c) for i, m, t, c, *_ in rows if i == init_name and m in methods}
        if "faithful" in times:
            wall, cpu = times["faithful"]
            for method in methods:
                if method != "faithful":
                    print(
                        f"{init_name}: {method} is {wall / times[method][0]:.1f}x faster than "
                        f"faithful ({cpu / times[method][1]:.1f}x in CPU seconds)"
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
