"""Convert Human3.6M (the layout documented in spin.data.convert_h36m) to SPIN's .npz format.

    python tools/convert_h36m.py --root /data/h36m --protocol p2 --out data/h36m_valid_p2.npz

Protocols: train (S1, S5-S8), p1 (S9, S11, all cameras), p2 (S9, S11, front camera
60457274); every 5th frame by default. The logic is in ``spin.data.convert_h36m``.
"""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from spin.data.convert_h36m import PROTOCOLS, convert_h36m


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="root of the extracted layout")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="p1")
    parser.add_argument("--out", required=True, help="output .npz")
    parser.add_argument(
        "--every", type=int, default=None, help="keep every N-th frame (default: 5)"
    )
    parser.add_argument("--limit", type=int, default=None, help="stop after N samples")
    parser.add_argument(
        "--subjects", nargs="+", default=None, help="override the protocol's subjects"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    conversion = convert_h36m(
        args.root,
        args.protocol,
        every=args.every,
        limit=args.limit,
        subjects=args.subjects,
        progress=lambda items: tqdm(items, desc=f"H36M {args.protocol}", unit="sequence"),
    )
    return conversion.write(args.out)


if __name__ == "__main__":
    sys.exit(main())
