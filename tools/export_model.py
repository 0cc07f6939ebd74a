"""Export a spin-train checkpoint as a shippable regressor (no optimiser state, float16
weights): what `make shipped-model` does to make spin/predict/assets/keypoints_model.pt.

    python tools/export_model.py runs/shipped_model/checkpoint.pt \
        spin/predict/assets/keypoints_model.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

from spin.predict.shipped import export_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="checkpoint.pt written by spin-train")
    parser.add_argument("out", type=Path, help="the exported file")
    args = parser.parse_args()
    out = export_model(args.checkpoint, args.out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) from {args.checkpoint}")


if __name__ == "__main__":
    main()
