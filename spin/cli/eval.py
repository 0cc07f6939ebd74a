"""spin-eval: evaluate a checkpoint on 3DPW, Human3.6M, the synthetic test split or any file.

A thin command over :func:`spin.eval.evaluate.evaluate`; the protocols are in
:mod:`spin.eval.protocols`.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import torch

from spin.atomic import write_all_or_none
from spin.cli.errors import add_debug_option, reported
from spin.eval.protocols import GENDER_CHOICES, JOINT_SETS, PRESETS
from spin.fitting.smplify import SMPLIFY_MODES
from spin.predict.shipped import SHIPPED_NAME, resolve_checkpoint

HELP_WIDTH = 88
DEFAULT_BATCH_SIZE = 32
DEFAULT_WORKERS = 2
EXIT_FAILURE = 1
OUT_SUBFOLDER = "eval"

DESCRIPTION = (
    "Evaluate a spin-train checkpoint the way papers report it: MPJPE, PA-MPJPE (after a "
    "per-sample similarity Procrustes alignment) and, where the ground truth has meshes, PVE, "
    "all in millimetres; optionally also after SMPLify refinement of each prediction on the "
    "sample's 2D keypoints (--refine).",
    "Protocols (--dataset): 3dpw = 3DPW test split, every frame with a valid camera pose, 14 "
    "LSP joints from the H36M regressor (pelvis-centred), gendered SMPL ground-truth meshes "
    "when the gendered SMPL files are found (--smpl-dir or $SPIN_SMPL_DIR), neutral "
    "otherwise (stated), PVE; h36m-p1 = Human3.6M S9/S11, every 5th frame, all cameras, "
    "ground truth the dataset's 3D joints; h36m-p2 = the same, front camera 60457274 only; "
    "synthetic = the checkpoint's synthetic test split, exact ground truth, PVE. A path to "
    "any SPIN-format .npz evaluates that file (its SMPL parameters, posed with the "
    "checkpoint's body model, or its S_h36m joints).",
    "Any input representation the checkpoint was trained on: RGB crops; keypoints or "
    "keypoint_heatmaps made from the file's 2D keypoints exactly as in training (the "
    "OpenPose block where a sample has a confident point, else its ground-truth 2D joints; "
    "samples with neither are left out and counted); part_segmentation from the file's part "
    "maps (--part-maps). The header says which.",
    "Predictions are posed with the body model the checkpoint was trained with. A checkpoint "
    "of the open body model can be scored on 3DPW/H36M, but its joints are not SMPL's: the "
    "report marks such numbers as indicative. The first lines of every report state the "
    "protocol: dataset, joints, ground truth (neutral/gendered), frames and body model.",
)
EPILOG = (
    "Output: the table on the terminal, OUT/eval_<dataset>.json (header, protocol, counts, "
    "means, per-joint and per-sample errors) and OUT/eval_<dataset>.png (per-joint errors, "
    "error histogram and cumulative distribution).",
    "Exit status: 0 done, 1 error (missing files, body-model mismatch, impossible protocol), "
    "2 usage error.",
    "Example: spin-eval --checkpoint runs/spin/checkpoint.pt --dataset 3dpw "
    "--data data/spin/3dpw_test.npz --images data/3DPW --smpl-dir models/smpl",
)


def _paragraphs(paragraphs: Sequence[str]) -> str:
    return "\n\n".join(textwrap.fill(p, HELP_WIDTH) for p in paragraphs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spin-eval",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_paragraphs(DESCRIPTION),
        epilog=_paragraphs(EPILOG),
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help=f"checkpoint.pt written by spin-train, or '{SHIPPED_NAME}': the model shipped in "
        "the package (spin-demo's default)",
    )
    parser.add_argument(
        "--dataset",
        default="synthetic",
        metavar="{" + ",".join(PRESETS) + "} or FILE.npz",
        help="protocol preset, or the path of any SPIN-format .npz (default: %(default)s)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="the preset's dataset file (.npz from tools/convert_3dpw.py / convert_h36m.py); "
        "default: synthetic -> the test split of the checkpoint's training data "
        "(data.synthetic.out_dir/test.npz, else data/synthetic/test.npz), 3dpw -> "
        "data/spin/3dpw_test.npz, h36m-p1/p2 -> data/spin/h36m_p1.npz / h36m_p2.npz (a P1 "
        "file also serves P2: its front-camera samples are selected)",
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=None,
        help="folder the file's imgname entries are relative to (default: the default data's "
        "image folder, or the folder of --data / the .npz)",
    )
    parser.add_argument(
        "--joints",
        choices=JOINT_SETS,
        default=None,
        help="joint set: lsp14 = SPIN's 14 LSP-order joints of the H36M regressor, h36m17 = "
        "all 17; both pelvis-centred (default: the protocol's, lsp14)",
    )
    parser.add_argument(
        "--gt",
        choices=[c for c in GENDER_CHOICES if c != "auto"],
        default=None,
        help="SMPL ground truth from the neutral model, or from the male/female models by "
        "each sample's gender (an error when the files or genders are missing); default: "
        "gendered when possible, neutral otherwise, stated in the report",
    )
    parser.add_argument(
        "--every",
        type=int,
        default=None,
        help="keep samples whose frame index (row index without a 'frame' key) is a multiple "
        "of N (default: the protocol's: 5 for H36M, whose converter already keeps every 5th "
        "frame; 1 otherwise)",
    )
    parser.add_argument(
        "--keypoints",
        choices=("dataset", "detected"),
        default="dataset",
        help="2D keypoints for keypoint inputs and --refine: the file's (default) or "
        "MediaPipe's, run on every sample's image in its person box enlarged 1.5x (the "
        "protocol a photo gets; the detected copy is kept as "
        "OUT/<file>_mediapipe_vis0.2_box1.5.npz and reused)",
    )
    parser.add_argument(
        "--refine",
        action="store_true",
        help="also report the errors after SMPLify, initialised from each prediction, fits "
        "the sample's 2D keypoints (the checkpoint's SMPLify mode and pose prior)",
    )
    parser.add_argument(
        "--smplify-mode",
        choices=SMPLIFY_MODES,
        default=None,
        help="--refine with this SMPLify mode instead of the checkpoint's (e.g. anchored: "
        "kept near the prediction where the keypoints do not decide)",
    )
    parser.add_argument(
        "--baseline",
        choices=["mean-pose"],
        default=None,
        help="also score a reference on the same samples with the same protocol: mean-pose = "
        "the regressor's starting mean parameters for every image (an untrained regressor); "
        "a model that does not beat it has learnt nothing (a 'mean pose' column)",
    )
    parser.add_argument(
        "--smpl-dir",
        type=Path,
        default=None,
        help="folder with the official SMPL models (SMPL_NEUTRAL/MALE/FEMALE .pkl or .npz, "
        "J_regressor_h36m.npy) for gendered / SMPL ground truth (default: $SPIN_SMPL_DIR)",
    )
    parser.add_argument(
        "--body-model",
        default=None,
        help="pose predictions with this body model (name or path) instead of the "
        "checkpoint's, e.g. where its SMPL files are on this machine; another kind of model "
        "(open vs SMPL) is refused (default: the checkpoint's)",
    )
    parser.add_argument(
        "--part-maps",
        type=Path,
        default=None,
        metavar="FOLDER",
        help="the file's part maps (<imgname>.png or <stem>.png label images), for a checkpoint "
        "trained on part_segmentation inputs: there is no segmenter to make them from the "
        "images (synthetic data: its OUT_DIR/parts)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="samples per forward pass (default: %(default)s)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="evaluate only the first N selected samples, for a quick look (default: all)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help="data loader worker processes decoding images; 0 loads in this process "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for eval_<dataset>.json and .png (default: the checkpoint's folder/"
        f"{OUT_SUBFOLDER}; outputs/eval_shipped for the shipped model)",
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device, e.g. cpu or cuda (default: %(default)s)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_debug_option(parser)
    return parser


@reported("spin-eval")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("batch_size", "limit", "every"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.workers < 0:
        parser.error(f"--workers must be >= 0, got {args.workers}")
    try:
        device = torch.device(args.device)
    except RuntimeError as error:
        parser.error(f"--device {args.device}: {error}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available; use --device cpu")

    from spin.data.formats import load_spin_npz
    from spin.eval.evaluate import evaluate, format_table, save_figure, save_json
    from spin.eval.protocols import custom_protocol, get_protocol

    overrides = {"joints": args.joints, "gender": args.gt, "every": args.every}
    data = args.data
    try:
        if args.dataset in PRESETS:
            protocol = get_protocol(args.dataset, **overrides)
        elif args.dataset.endswith(".npz") or Path(args.dataset).is_file():
            if data is not None:
                parser.error("--data is for presets; give the file as --dataset FILE.npz")
            data = Path(args.dataset)
            if not data.is_file():
                raise FileNotFoundError(f"no dataset file {data}")
            protocol = custom_protocol(data, load_spin_npz(data, validate=False), **overrides)
        else:
            parser.error(
                f"--dataset {args.dataset!r}: choose one of {', '.join(PRESETS)} or give a "
                "SPIN-format .npz file"
            )
        checkpoint = resolve_checkpoint(args.checkpoint)
        if checkpoint is None:
            parser.error("--checkpoint: spin-eval evaluates a regressor; give a checkpoint")
        out = args.out
        if out is None:  # next to a run's checkpoint; never inside the installed package
            shipped = args.checkpoint == SHIPPED_NAME
            out = Path("outputs", "eval_shipped") if shipped else checkpoint.parent / OUT_SUBFOLDER
        report = evaluate(
            checkpoint,
            data,
            args.images,
            protocol,
            batch_size=args.batch_size,
            refine=args.refine,
            limit=args.limit,
            device=args.device,
            progress=not args.no_progress,
            body_model=args.body_model,
            smpl_dir=args.smpl_dir,
            num_workers=args.workers,
            mean_pose=args.baseline == "mean-pose",
            part_maps=args.part_maps,
            keypoints=args.keypoints,
            detected_dir=out,
            smplify_mode=args.smplify_mode,
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"spin-eval: {error}", file=sys.stderr)
        return EXIT_FAILURE
    print(format_table(report))
    json_path, png_path = write_all_or_none(  # both or neither (e.g. on a full disk)
        [
            lambda: save_json(report, out / f"eval_{protocol.name}.json"),
            lambda: save_figure(report, out / f"eval_{protocol.name}.png"),
        ]
    )
    print(f"\nwrote {json_path} and {png_path} ({report.elapsed_s:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
