"""spin-train: train the regressor with SMPLify in the loop (or a baseline mode)."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from spin.cli.errors import EXIT_USAGE, USER_ERRORS, add_debug_option, one_line, reported
from spin.config import ConfigError, load_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spin-train",
        description=(
            "Train the HMR regressor with SPIN's SMPLify-in-the-loop (mode=in_loop), from "
            "static fits (mode=static_fits) or from 2D/3D ground truth only "
            "(mode=regression_only). Runs go to RUN_DIR/NAME with config.json, checkpoint.pt, "
            "fits_cache.h5, metrics.jsonl, panels/ and an offline wandb run."
        ),
        epilog=(
            "Example: spin-train --config configs/synthetic_spin.yaml num_steps=200. "
            "Several processes (one per GPU): torchrun --nproc_per_node=N -m spin.cli.train "
            "--config X.yaml; batch_size is then the global batch, split evenly over the "
            "processes, and rank 0 writes every file."
        ),
    )
    parser.add_argument("--config", help="YAML config (see configs/); defaults if omitted")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue RUN_DIR/NAME from its checkpoint and fits cache (exactly); a new run "
        "starts, with a notice, when it has no checkpoint yet. The model and data settings "
        "must be the checkpoint's",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete an existing run in RUN_DIR/NAME and start again (without --resume or "
        "--overwrite, an existing run is never touched)",
    )
    add_debug_option(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override config fields, e.g. mode=regression_only hmr.backbone.name=resnet18",
    )
    return parser


def _remove_failed_start(run_dir: Path, existed: bool) -> None:
    """A run folder this command created and that holds no checkpoint is only a failed start:
    remove it so that the next attempt does not meet a half-made run."""
    from spin.train.checkpoint import CHECKPOINT_NAME

    if existed or not run_dir.is_dir() or (run_dir / CHECKPOINT_NAME).exists():
        return
    shutil.rmtree(run_dir, ignore_errors=True)


def held_out_summary(metrics: dict, run_dir: Path, detected: bool = False) -> str:
    """The run's result in words: the validation set's errors against the mean pose's, and
    how to refine them (``detected``: validated on MediaPipe's keypoints, and so refined)."""
    from spin.train.checkpoint import CHECKPOINT_NAME

    error, reference = metrics["val/pa_mpjpe_mm"], metrics["val/mean_pose_pa_mpjpe_mm"]
    change = 100.0 * (error - reference) / reference
    verdict = "better" if change < 0 else "WORSE"
    keypoints = " --keypoints detected" if detected else ""
    on = ", MediaPipe's keypoints" if detected else ""
    return (
        f"validation (held-out people{on}): PA-MPJPE {error:.1f} mm, "
        f"MPJPE {metrics['val/mpjpe_mm']:.1f} mm; "
        f"the mean pose scores {reference:.1f} mm PA-MPJPE ({abs(change):.0f}% {verdict}).\n"
        f"with SMPLify refinement: spin-eval --checkpoint {run_dir / CHECKPOINT_NAME} "
        f"--refine{keypoints}"
    )


@reported("spin-train")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from spin.train.config import TrainConfig

    try:
        config = load_config(TrainConfig, args.config, args.overrides)
    except ConfigError as error:
        print(f"spin-train: {one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    from spin.train.distributed import cleanup_distributed
    from spin.train.trainer import Trainer

    run_dir = Path(config.run_dir) / config.name
    existed = run_dir.exists()
    try:
        trainer = Trainer(
            config, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite
        )
        metrics = trainer.run()
    except USER_ERRORS:  # reported by @reported, after the clean-up
        _remove_failed_start(run_dir, existed)
        raise
    finally:
        cleanup_distributed()
    if trainer.distributed.is_main:
        summary = {
            k: round(v, 4) for k, v in metrics.items() if k.startswith(("val/", "loss/total"))
        }
        print(f"done: {trainer.run_dir} at step {trainer.step} {summary}")
        if "val/pa_mpjpe_mm" in metrics:
            val = config.data.val
            detected = val is not None and val.keypoints == "mediapipe"
            print(held_out_summary(metrics, trainer.run_dir, detected))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
