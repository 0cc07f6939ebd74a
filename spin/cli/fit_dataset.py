"""spin-fit-dataset: batch SMPLify over a SPIN-format dataset into an HDF5 file of fits.

A thin command over :func:`spin.fitting.fit_dataset.fit_dataset`; the module docstring there
describes the frame of the fits, the shards, resuming and the output file.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import torch

from spin.cli.errors import add_debug_option, reported
from spin.fitting.fit_dataset import (
    VALID_THRESHOLD,
    FitDatasetConfig,
    FitDatasetError,
    fit_dataset,
    parse_init,
)
from spin.fitting.smplify import SMPLIFY_MODES

DEFAULTS = FitDatasetConfig()
HELP_WIDTH = 88
DESCRIPTION = (
    "Fit the body model to every sample's 2D keypoints with SMPLify (SPIN's objective) and "
    "write the fits to an HDF5 file.",
    "Fits are made in SPIN's crop frame, like SPIN's static fits: each sample's 49 keypoints "
    "(openpose + part) are mapped to the 224x224 crop of its box (center, scale), the camera "
    "has f=5000 px and its principal point at the crop centre; pose (72 axis-angle, global "
    "orientation in the camera frame), betas and cam_t (the body's translation in that camera) "
    "are stored per sample.",
    "The work is split into shards written to OUT.shards/ as they finish; rerunning the same "
    "command after a crash or kill resumes: finished shards are skipped. When all are done "
    "they are merged into OUT (written atomically) and the folder is removed. Samples with "
    "NaN/inf keypoints, a bad box or fewer than 2 confident keypoints are marked invalid and "
    "counted, never fatal.",
)
EPILOG = (
    "Output datasets: pose (N,72), betas (N,10), cam_t (N,3), reprojection_loss (N,), "
    "joint_losses (N,49), valid (N,), status (N,), sample_index (N,), imgname (N,); "
    "attributes record the configuration, frame, source and version.",
    "Exit status: 0 done (or stopped by --max-shards), 1 error (bad input, existing OUT, "
    "shards of another configuration), 2 usage error.",
    "Example: spin-fit-dataset lsp_train.npz -o lsp_train_fits.h5 --mode lm --workers 2",
)
EXIT_FAILURE = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spin-fit-dataset",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_paragraphs(DESCRIPTION),
        epilog=_paragraphs(EPILOG),
    )
    parser.add_argument("dataset", type=Path, help="SPIN-format .npz to fit")
    parser.add_argument("-o", "--out", type=Path, required=True, help="HDF5 file to write (.h5)")
    parser.add_argument(
        "--init",
        default=DEFAULTS.init,
        help="starting point: 'mean' (zero body pose, upright facing the camera, zero betas, "
        "camera estimated from the keypoints), 'fits:PATH' (an earlier output of this "
        "command on the same dataset) or 'checkpoint:PATH' (a regressor checkpoint: not "
        "available yet) (default: %(default)s)",
    )
    parser.add_argument(
        "--mode",
        choices=SMPLIFY_MODES,
        default=DEFAULTS.mode,
        help="SMPLify mode: 'faithful' is SPIN's schedule (100 + 100 Adam steps) posing the "
        "whole mesh, 'fast' the same schedule on the joints only (same fits, much faster), "
        "'lm' the same objective by Levenberg-Marquardt, 'anchored' Levenberg-Marquardt with "
        "terms that keep the fit near a regressor's start; from the mean pose 'lm' and "
        "'anchored' try four headings (default: %(default)s)",
    )
    parser.add_argument(
        "--body-model",
        default=DEFAULTS.body_model,
        help="'open', 'open-lite', 'smpl' or the path to an SMPL model file or folder "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--prior",
        default=DEFAULTS.prior,
        help="pose prior: 'open' (bundled), 'smpl' (SMPLify's gmm_08.pkl next to the SMPL "
        "model) or a .pkl/.npz GMM file (default: %(default)s)",
    )
    parser.add_argument(
        "--device",
        default=DEFAULTS.device,
        help="torch device, e.g. 'cpu' or 'cuda' (default: %(default)s)",
    )
    parser.add_argument(
        "--shard-size",
        type=int,
        default=DEFAULTS.shard_size,
        help="samples per shard, the unit of resuming and of worker tasks (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULTS.batch_size,
        help="samples per SMPLify batch within a shard (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (joblib/loky), each with cores/workers torch threads "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="fit only the first N samples (default: all)"
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULTS.seed, help="random seed (default: %(default)s)"
    )
    parser.add_argument(
        "--valid-threshold",
        type=float,
        default=VALID_THRESHOLD,
        help="a fit is valid iff its reprojection loss (the mean over the 49 keypoints of "
        "conf^2 * GMoF in crop pixels^2, as SPIN's trainer computes it) is below this (SPIN's; "
        "default: %(default)s)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing OUT and delete its shards (a configuration change needs this)",
    )
    parser.add_argument(
        "--keep-shards",
        action="store_true",
        help="keep OUT.shards/ after merging (default: delete it)",
    )
    parser.add_argument(
        "--max-shards",
        type=int,
        default=None,
        help="fit at most N shards in this run, then stop without writing OUT; rerun to "
        "continue (default: all)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_debug_option(parser)
    return parser


def _paragraphs(paragraphs: Sequence[str]) -> str:
    return "\n\n".join(textwrap.fill(p, HELP_WIDTH) for p in paragraphs)


@reported("spin-fit-dataset")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("shard_size", "batch_size", "workers", "limit", "max_shards"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    try:
        parse_init(args.init)
        device = torch.device(args.device)
    except (FitDatasetError, RuntimeError) as error:
        parser.error(str(error))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available; use --device cpu")
    config = FitDatasetConfig(
        mode=args.mode,
        body_model=args.body_model,
        prior=args.prior,
        init=args.init,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        valid_threshold=args.valid_threshold,
        limit=args.limit,
        seed=args.seed,
        device=args.device,
    )
    try:
        summary = fit_dataset(
            args.dataset,
            args.out,
            config,
            workers=args.workers,
            overwrite=args.overwrite,
            keep_shards=args.keep_shards,
            max_shards=args.max_shards,
            progress=not args.no_progress,
        )
    except (FitDatasetError, FileNotFoundError) as error:
        print(f"spin-fit-dataset: {error}", file=sys.stderr)
        return EXIT_FAILURE
    print(summary.format())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
