"""spin-demo: fit a 3D body to the person in a photo and save renders, mesh and parameters.

Writes into ``--out``: ``<stem>_overlay.png`` (the mesh over the photo, fitted keypoints as red
dots), ``<stem>_side.png`` (the body turned 90 degrees), ``<stem>.obj`` (the mesh) and
``<stem>.json`` (pose, betas, camera, intrinsics, keypoints and reprojection errors).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from spin.cli.errors import add_debug_option, reported
from spin.demo.keypoints import read_keypoints_file
from spin.demo.pipeline import (
    DEFAULT_MODE,
    MIN_CONFIDENCE,
    SMPLIFY_MODES,
    DemoConfig,
    render_result,
    result_to_dict,
    run_demo,
    write_obj,
)
from spin.render.backend import RenderBackendError
from spin.render.figures import save_png


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spin-demo",
        description=(
            "Fit a 3D body (SMPL-format, the open model by default) to the person in IMAGE: "
            "2D keypoints (MediaPipe's offline pose model, or your own file), an initial body "
            "(a trained regressor, or the mean pose), then SMPLify on the keypoints with a "
            "full-frame perspective camera, started from four headings of the initial body "
            "(the best fit wins). Writes OUT/<stem>_overlay.png, "
            "OUT/<stem>_side.png, OUT/<stem>.obj and OUT/<stem>.json and prints the mean "
            "reprojection error in pixels."
        ),
        epilog=(
            "MediaPipe is optional: `make demo-setup` installs it (or pass --keypoints). "
            "Example: spin-demo photo.jpg --out outputs/demo"
        ),
    )
    parser.add_argument("image", type=Path, help="the photo (any format Pillow reads)")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="a spin-train checkpoint.pt whose regressor gives the initial body (its crop "
        "camera is moved to the full-frame camera); default: start from the mean pose",
    )
    parser.add_argument(
        "--bbox",
        default=None,
        metavar="x0,y0,x1,y1",
        help="the person's box in pixels; default: the keypoints' box enlarged 1.2 times. "
        "With MediaPipe the box also limits where it looks (pick one of several people)",
    )
    parser.add_argument(
        "--keypoints",
        type=Path,
        default=None,
        metavar="FILE",
        help="2D keypoints instead of MediaPipe: an OpenPose JSON file (BODY_25, first "
        "person) or a COCO-style JSON file ({'keypoints': [17 x (x, y, v)]}, a list of "
        "them, or {'annotations': [...]})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("outputs/demo"),
        help="output folder (default: %(default)s)",
    )
    parser.add_argument(
        "--mode",
        choices=SMPLIFY_MODES,
        default=DEFAULT_MODE,
        help="SMPLify schedule: 'lm' (Levenberg-Marquardt, converges from the mean pose), "
        "'fast' (SPIN's 100 + 100 Adam steps on the joints) or 'faithful' (the same, posing "
        "the whole mesh: same fit, slower) (default: %(default)s)",
    )
    parser.add_argument(
        "--focal-length",
        type=float,
        default=None,
        metavar="PX",
        help="the camera's focal length in pixels; default: the image diagonal",
    )
    parser.add_argument(
        "--body-model",
        default=None,
        help='body model without a checkpoint: "open" (default), "open-lite", "smpl" or a '
        "model file; with a checkpoint, the one it was trained with",
    )
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=MIN_CONFIDENCE,
        help="ignore keypoints at or below this confidence (default: %(default)s)",
    )
    add_debug_option(parser)
    return parser


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``"x0,y0,x1,y1"`` to four floats (x1 > x0, y1 > y0)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not (values[2] > values[0] and values[3] > values[1]):
        raise ValueError(f"--bbox expects x0,y0,x1,y1 with x1 > x0 and y1 > y0, got {text!r}")
    return values


def read_image(path: Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB, turned upright by its EXIF orientation."""
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


@reported("spin-demo")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        bbox = parse_bbox(args.bbox) if args.bbox else None
        config = DemoConfig(
            mode=args.mode,
            focal_length=args.focal_length,
            body_model=args.body_model,
            min_confidence=args.min_confidence,
        )
        image = read_image(args.image)
        keypoints = convention = None
        if args.keypoints is not None:
            keypoints, convention = read_keypoints_file(args.keypoints)
        result = run_demo(image, args.checkpoint, bbox, keypoints, convention, config)
        overlay, side = render_result(image, result)
    except (OSError, ValueError, KeyError, ImportError, RenderBackendError) as error:
        parser.exit(1, f"spin-demo: {error}\n")

    stem = args.image.stem
    paths = [
        save_png(args.out / f"{stem}_overlay.png", overlay),
        save_png(args.out / f"{stem}_side.png", side),
        write_obj(args.out / f"{stem}.obj", result.vertices, result.faces),
    ]
    json_path = args.out / f"{stem}.json"
    json_path.write_text(json.dumps(result_to_dict(result), indent=1))
    paths.append(json_path)

    source = args.keypoints or "MediaPipe"
    x0, y0, x1, y1 = result.box
    print(f"keypoints: {source} ({result.convention}, {result.num_fitted} fitted)")
    print(f"person box: ({x0:.0f}, {y0:.0f}) - ({x1:.0f}, {y1:.0f}) px")
    print(f"start: {result.initial}, turned {result.initial_yaw_deg:g} deg about the vertical")
    print(f"SMPLify mode: {result.mode}; body model: {result.body_model}")
    print(f"focal length: {result.intrinsics[0, 0]:.1f} px")
    print(f"mean reprojection error: {result.mean_error:.2f} px")
    for path in paths:
        print(f"wrote {path}")
    print(f"took {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
