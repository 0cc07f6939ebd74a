"""spin-make-synthetic: render a synthetic people dataset in SPIN's ``.npz`` format.

Writes ``OUT/images/``, ``OUT/parts/`` (part maps), ``OUT/<split>.npz``,
``OUT/<split>_config.json`` and, by default, ``OUT/contact_sheet_<split>.png``. See
:mod:`spin.data.synthetic` for what the samples hold.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from spin.cli.errors import add_debug_option, reported
from spin.data.synthetic import (
    SPLITS,
    TEST_SEED_OFFSET,
    SyntheticConfig,
    contact_sheet,
    generate_synthetic,
)
from spin.render.backend import RenderBackendError
from spin.render.figures import save_png

CONTACT_SHEET_TILES = 24
CONTACT_SHEET_COLUMNS = 6
_DEFAULTS = {f.name: f.default for f in fields(SyntheticConfig)}


def parse_size(text: str) -> tuple[int, int]:
    """``"256"`` -> (256, 256); ``"320x240"`` -> (320, 240) as (width, height)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 32:
        raise argparse.ArgumentTypeError(
            f"expected a size like 256 or 320x240 (width x height, each >= 32), got {text!r}"
        )
    return parts[0], parts[1]


def build_parser() -> argparse.ArgumentParser:
    default_size = "x".join(str(s) for s in _DEFAULTS["image_size"])
    parser = argparse.ArgumentParser(
        prog="spin-make-synthetic",
        description=(
            "Render synthetic people (the body model with sampled poses and shapes, random "
            "cameras, clothing colours, lights and backgrounds) and write images plus "
            "annotations in SPIN's .npz format: boxes, exact 2D joints (part), "
            "detector-like OpenPose keypoints, camera intrinsics and, for a fraction of "
            "the samples, 3D joints and SMPL parameters. Deterministic by seed."
        ),
    )
    parser.add_argument("--num", type=int, required=True, help="number of samples per split (>= 1)")
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder: images/, parts/, <split>.npz, <split>_config.json, "
        "contact_sheet_<split>.png",
    )
    parser.add_argument(
        "--split",
        choices=(*SPLITS, "both"),
        default="train",
        help="which split to make; 'both' makes --num of each (default: %(default)s)",
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=_DEFAULTS["image_size"],
        metavar="WxH",
        help=f"image size, e.g. 224 or 320x240 (default: {default_size})",
    )
    parser.add_argument(
        "--fraction-3d",
        type=float,
        default=_DEFAULTS["fraction_3d"],
        help="fraction of samples keeping 3D joints and SMPL parameters; the others are "
        "2D-only like in-the-wild data (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=_DEFAULTS["seed"],
        help=f"seed of the train split; the test split uses seed + {TEST_SEED_OFFSET} "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--background-dir",
        type=Path,
        default=None,
        help="folder of images (searched recursively) whose random crops serve as "
        f"backgrounds for {100 * _DEFAULTS['background_image_prob']:.0f}%% of the samples; the "
        "rest get procedural backgrounds (default: procedural only)",
    )
    parser.add_argument(
        "--body-model",
        default=_DEFAULTS["body_model"],
        help='body model: "open" (bundled), "open-lite" (bundled, low-poly, faster), '
        '"smpl" or a model path (default: %(default)s)',
    )
    parser.add_argument(
        "--beta-std",
        type=float,
        default=_DEFAULTS["beta_std"],
        help="standard deviation of the sampled betas; above 1 widens the shapes "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--part-maps",
        action=argparse.BooleanOptionalAction,
        default=_DEFAULTS["write_part_maps"],
        help="write part maps (0 background, 1..24 SMPL parts) as PNGs under OUT/parts/ "
        "(default: on)",
    )
    parser.add_argument(
        "--contact-sheet",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"write OUT/contact_sheet_<split>.png: the first {CONTACT_SHEET_TILES} images "
        "with their box and OpenPose keypoints coloured by confidence (default: on)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar (the summary is still printed)"
    )
    add_debug_option(parser)
    return parser


@reported("spin-make-synthetic")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error(f"--num must be at least 1, got {args.num}")
    try:
        config = SyntheticConfig(
            image_size=args.size,
            fraction_3d=args.fraction_3d,
            seed=args.seed,
            background_dir=str(args.background_dir) if args.background_dir else None,
            body_model=args.body_model,
            beta_std=args.beta_std,
            write_part_maps=args.part_maps,
        )
    except ValueError as error:
        parser.error(str(error))
    splits = SPLITS if args.split == "both" else (args.split,)
    for split in splits:
        start = time.perf_counter()
        try:
            path = generate_synthetic(
                config, args.num, args.out, split=split, progress=not args.quiet
            )
        except (FileNotFoundError, RenderBackendError, ValueError) as error:
            parser.exit(1, f"spin-make-synthetic: {error}\n")
        elapsed = time.perf_counter() - start
        print(
            f"{split}: wrote {args.num} samples to {path} in {elapsed:.1f} s "
            f"({args.num / elapsed:.2f} samples/s)"
        )
        if args.contact_sheet:
            sheet = contact_sheet(
                args.out, split, num=CONTACT_SHEET_TILES, ncols=CONTACT_SHEET_COLUMNS
            )
            sheet_path = save_png(Path(args.out) / f"contact_sheet_{split}.png", sheet)
            print(f"{split}: contact sheet {sheet_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
