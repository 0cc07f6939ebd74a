"""Convert the official 3DPW dataset to SPIN's .npz format.

    python tools/convert_3dpw.py --root /data/3DPW --split test --out data/3dpw_test.npz

Needs the official gendered SMPL models (--smpl-dir or $SPIN_SMPL_DIR); ``--body-model open``
uses the bundled neutral open-lite model for smoke tests (the 3D ground truth is then not
3DPW's). Keeps frames with a valid camera pose; the logic is in ``spin.data.convert_3dpw``.
"""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from spin.data.convert_3dpw import SPLITS, convert_3dpw, load_3dpw_body_models


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="3DPW root (sequenceFiles/, imageFiles/)")
    parser.add_argument("--split", choices=SPLITS, default="test")
    parser.add_argument("--out", required=True, help="output .npz")
    parser.add_argument(
        "--smpl-dir", default=None, help="folder with the official SMPL models ($SPIN_SMPL_DIR)"
    )
    parser.add_argument(
        "--body-model",
        choices=("smpl", "open"),
        default="smpl",
        help="'smpl': official gendered models; 'open': bundled open-lite (testing only)",
    )
    parser.add_argument("--every", type=int, default=1, help="keep every N-th frame")
    parser.add_argument("--limit", type=int, default=None, help="stop after N samples")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    models = load_3dpw_body_models(args.body_model, args.smpl_dir)
    conversion = convert_3dpw(
        args.root,
        args.split,
        models,
        every=args.every,
        limit=args.limit,
        progress=lambda items: tqdm(items, desc=f"3DPW {args.split}", unit="sequence"),
    )
    return conversion.write(args.out)


if __name__ == "__main__":
    sys.exit(main())
