"""Benchmark spin-demo's fit in 3D: which start and SMPLify mode give the best body from
MediaPipe's keypoints?

spin-demo cannot be scored on photos (there is no 3D truth), so this runs its per-person
pipeline (:class:`spin.demo.pipeline.DemoFitter`: the regressor's start or the mean pose,
turned to four headings, SMPLify with a full-frame camera) on rendered synthetic people it
never trained on, with MediaPipe's keypoints detected on the whole image as the demo does,
and compares the fitted bodies with the true ones: MPJPE and PA-MPJPE of the 14 LSP joints
(H36M-17 regressor, pelvis-centred, mm), the mean 2D error of the fitted keypoints (image
pixels) and seconds per person. People MediaPipe does not find are left out and counted.
"regressor only" is the start itself, before SMPLify.

The people are made on first use with ``spin-make-synthetic``'s generator (a seed no
training config uses, 128 px like the training renders) under ``--out``; ``--data`` scores
an existing synthetic ``.npz`` (with SMPL parameters) instead.

Usage: ``python tools/bench_demo.py [--num 100] [--seed 31337] [--checkpoint shipped]
[--modes lm,anchored] [--starts regressor] [--threads 2]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from spin.body.joint_conventions import H36M_TO_LSP14
from spin.demo.keypoints import mediapipe_detector
from spin.demo.pipeline import (
    SMPLIFY_MODES,
    DemoConfig,
    DemoFitter,
    clean_keypoints,
    person_box,
    regress,
)
from spin.eval.evaluate import compute_errors
from spin.predict.shipped import SHIPPED_NAME, resolve_checkpoint

DEFAULT_SEED = 31337
"""Seed of the benchmark's people: no config in ``configs/`` trains on it."""

MEAN_POSE = "mean pose"


def make_people(folder: Path, num: int, seed: int, size: int) -> Path:
    """``folder/train.npz`` with ``num`` rendered people (all with SMPL parameters), made
    once and reused."""
    from spin.data.synthetic import SyntheticConfig, generate_synthetic

    npz = folder / "train.npz"
    if not npz.is_file() or len(np.load(npz)["imgname"]) != num:
        config = SyntheticConfig(
            image_size=(size, size), body_model="open", fraction_3d=1.0, seed=seed
        )
        generate_synthetic(config, num, folder, split="train")
    return npz


def joint_errors_mm(body, pose, betas, true_pose, true_betas) -> tuple[np.ndarray, np.ndarray]:
    """Per-person MPJPE and PA-MPJPE (mm) of the 14 LSP joints, pelvis-centred, as
    ``spin-eval`` computes them (:func:`spin.eval.evaluate.compute_errors`)."""
    as_tensor = lambda a: torch.as_tensor(np.asarray(a), dtype=body.v_template.dtype)  # noqa: E731
    with torch.no_grad():
        fit = body(pose_rotvecs=as_tensor(pose), betas=as_tensor(betas)).joints_h36m
        truth = body(pose_rotvecs=as_tensor(true_pose), betas=as_tensor(true_betas)).joints_h36m
    errors = compute_errors(fit, truth, H36M_TO_LSP14)
    return errors["mpjpe"].numpy(), errors["pa_mpjpe"].numpy()


def detect_all(npz: Path, images: Path) -> dict[int, np.ndarray]:
    """MediaPipe on every whole image: the rows where it found someone, in order, with
    their keypoints (``mediapipe33``, image pixels)."""
    names = np.load(npz)["imgname"]
    found: dict[int, np.ndarray] = {}
    with mediapipe_detector() as detect:
        for row, name in enumerate(tqdm(names, desc="MediaPipe", unit="image")):
            keypoints = detect(np.asarray(Image.open(images / str(name)).convert("RGB")))
            if (keypoints[:, 2] > 0).any():
                found[row] = keypoints
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num", type=int, default=100, help="people to make (default 100)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--size", type=int, default=128, help="image side in px (default 128)")
    parser.add_argument("--data", type=Path, default=None, help="a synthetic .npz instead")
    parser.add_argument(
        "--checkpoint",
        default=SHIPPED_NAME,
        help=f"the regressor whose start is scored (default: '{SHIPPED_NAME}')",
    )
    parser.add_argument(
        "--modes", default="lm,anchored", help=f"comma-separated subset of {SMPLIFY_MODES}"
    )
    parser.add_argument(
        "--starts",
        default=f"regressor,{MEAN_POSE}",
        help="comma-separated subset of the starts: regressor, mean pose",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_demo"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    npz = args.data or make_people(args.out / f"people_seed{args.seed}", args.num, args.seed,
                                   args.size)  # fmt: skip
    images = npz.parent
    arrays = np.load(npz)
    keypoints = detect_all(npz, images)
    rows = list(keypoints)
    if not rows:
        raise SystemExit("MediaPipe found nobody in these images")
    true_pose, true_betas = arrays["pose"][rows], arrays["shape"][rows]
    modes = args.modes.split(",")
    checkpoint = resolve_checkpoint(args.checkpoint)
    print(
        f"spin-demo's fit on {len(arrays['imgname'])} synthetic people ({npz}), MediaPipe on "
        f"the whole image found {len(rows)}; regressor {checkpoint}; torch threads "
        f"{torch.get_num_threads()}"
    )
    table = []
    for start in args.starts.split(","):
        for mode in modes:
            config = DemoConfig(mode=mode)
            first = np.asarray(Image.open(images / str(arrays["imgname"][rows[0]])).convert("RGB"))
            fitter = DemoFitter.create(first, checkpoint if start == "regressor" else None, config)
            poses, betas, errors_px, seconds = [], [], [], 0.0
            starts_pose, starts_betas = [], []
            for row in tqdm(rows, desc=f"{start}, {mode}", unit="person"):
                image = np.asarray(Image.open(images / str(arrays["imgname"][row])).convert("RGB"))
                began = time.perf_counter()
                result = fitter.fit(image, keypoints[row], "mediapipe33", None)
                seconds += time.perf_counter() - began
                poses.append(result.pose_rotvecs)
                betas.append(result.betas)
                errors_px.append(result.mean_error)
                if start == "regressor" and mode == modes[0]:
                    cleaned = clean_keypoints(
                        keypoints[row], image.shape[1::-1], config.min_confidence
                    )
                    center, side = person_box(cleaned, None, config.box_enlarge)
                    initial = regress(
                        fitter.predictor, image, center, side, fitter.intrinsics, cleaned,
                        "mediapipe33",
                    )  # fmt: skip
                    starts_pose.append(initial.pose_rotvecs)
                    starts_betas.append(initial.betas)
            if starts_pose:
                error, pa = joint_errors_mm(
                    fitter.body_model, starts_pose, starts_betas, true_pose, true_betas
                )
                table.append(("regressor only", "-", error, pa, float("nan"), float("nan")))
            error, pa = joint_errors_mm(fitter.body_model, poses, betas, true_pose, true_betas)
            table.append((start, mode, error, pa, float(np.mean(errors_px)), seconds / len(rows)))
    header = (
        f"{'start':<15} {'SMPLify':<9} {'MPJPE':>7} {'PA-MPJPE':>9} {'PA median':>10} "
        f"{'2D px':>7} {'s/person':>9}"
    )
    print(header)
    print("-" * len(header))
    for start, mode, error, pa, px, seconds in table:
        print(
            f"{start:<15} {mode:<9} {error.mean():7.1f} {pa.mean():9.1f} "
            f"{np.median(pa):10.1f} {px:7.2f} {seconds:9.2f}"
        )


if __name__ == "__main__":
    main()
