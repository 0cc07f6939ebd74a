"""spin-demo: fit a 3D body to every person in a photo and save renders, meshes and parameters.

Writes into ``--out``: ``<stem>_overlay.png`` (every fitted body over the photo, each in its
own colour, fitted keypoints as red dots), ``<stem>_side.png`` (the bodies turned 90 degrees),
``<stem>.obj`` (one named object per person) and ``<stem>.json`` (how many people were found
and fitted; per person the detector's box, keypoints and mask size, then pose, betas, camera,
intrinsics, projected joints, reprojection errors and the IoU of the rendered body with
MediaPipe's mask, or why the person was skipped). With ``--keypoints FILE`` there is one person.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from spin.atomic import atomic_write_text, write_all_or_none
from spin.cli.errors import add_debug_option, reported
from spin.demo.keypoints import MAX_PEOPLE, read_keypoints_file
from spin.demo.pipeline import (
    DEFAULT_MODE,
    MEDIAPIPE_DETECTOR,
    MIN_CONFIDENCE,
    SMPLIFY_MODES,
    DemoConfig,
    DemoPerson,
    mask_iou,
    people_to_dict,
    render_people,
    run_demo,
    run_demo_people,
    write_people_obj,
)
from spin.predict.shipped import NO_CHECKPOINT, SHIPPED_NAME, resolve_checkpoint
from spin.render.backend import RenderBackendError
from spin.render.figures import save_png

MAX_PIXELS = 40_000_000
"""Largest image (pixels) spin-demo decodes unless --max-pixels says otherwise."""

BOX_IMAGE_RATIO = 10
"""A --bbox may be at most this many times the image's width and height."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spin-demo",
        description=(
            "Fit a 3D body (SMPL-format, the open model by default) to every person in IMAGE: "
            "2D keypoints (MediaPipe's offline pose model, run until it finds nobody more; or "
            "your own file, one person), for each person an initial body "
            "(the regressor shipped in the package, another checkpoint, or the mean pose), "
            "then SMPLify on the keypoints with a "
            "full-frame perspective camera, started from four headings of the initial body "
            "(the best fit wins). Writes OUT/<stem>_overlay.png, "
            "OUT/<stem>_side.png, OUT/<stem>.obj and OUT/<stem>.json and prints per person "
            "the mean reprojection error in pixels and the IoU of the fitted body with "
            "MediaPipe's mask of the person."
        ),
        epilog=(
            "MediaPipe is optional: `make demo-setup` installs it (or pass --keypoints). "
            "Example: spin-demo photo.jpg --out outputs/demo"
        ),
    )
    parser.add_argument("image", type=Path, help="the photo (any format Pillow reads)")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="the regressor that gives the initial body (its crop camera is moved to the "
        "full-frame camera): a spin-train checkpoint.pt trained on RGB crops, or on keypoints "
        "/ keypoint_heatmaps inputs, which are made from the detected (or given) keypoints "
        f"(part-map checkpoints are refused: no segmenter); '{NO_CHECKPOINT}' starts from "
        f"the mean pose. Default: '{SHIPPED_NAME}', the keypoint model shipped in the package "
        "(trained with the open body; with --body-model, the mean pose)",
    )
    parser.add_argument(
        "--bbox",
        default=None,
        metavar="x0,y0,x1,y1",
        help="where to look: with MediaPipe, only people inside this box are found and fitted; "
        "with --keypoints, the person's box (default: the keypoints' box enlarged 1.2 times)",
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
        help="SMPLify schedule: 'anchored' (Levenberg-Marquardt kept near the regressor's pose "
        "and shape where the keypoints do not decide; plain 'lm' from the mean pose), 'lm' "
        "(Levenberg-Marquardt on SPIN's objective alone: closer to the keypoints, worse in "
        "3D), 'fast' (SPIN's 100 + 100 Adam steps on the joints) or 'faithful' "
        "(the same, posing the whole mesh: same fit, slower) (default: %(default)s)",
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
        "--max-pixels",
        type=float,
        default=MAX_PIXELS,
        help="refuse images larger than this many pixels (default: %(default).0f; decoding "
        "and rendering take memory in proportion)",
    )
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=MIN_CONFIDENCE,
        help="ignore keypoints at or below this confidence (default: %(default)s)",
    )
    parser.add_argument(
        "--max-people",
        type=int,
        default=MAX_PEOPLE,
        help="with MediaPipe, fit at most this many people (default: %(default)s)",
    )
    add_debug_option(parser)
    return parser


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``"x0,y0,x1,y1"`` to four finite floats (x1 > x0, y1 > y0)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if (
        len(values) != 4
        or not all(math.isfinite(v) for v in values)
        or not (values[2] > values[0] and values[3] > values[1])
    ):
        raise ValueError(
            f"--bbox expects four finite numbers x0,y0,x1,y1 with x1 > x0 and y1 > y0, got {text!r}"
        )
    return values


def check_bbox(bbox, width: int, height: int) -> None:
    """The box must overlap the image and be at most BOX_IMAGE_RATIO times its size."""
    x0, y0, x1, y1 = bbox
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise ValueError(f"--bbox {bbox} lies outside the {width}x{height} image")
    if x1 - x0 > BOX_IMAGE_RATIO * width or y1 - y0 > BOX_IMAGE_RATIO * height:
        raise ValueError(
            f"--bbox {bbox} is more than {BOX_IMAGE_RATIO} times the {width}x{height} image"
        )


def read_image(path: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB, turned upright by its EXIF orientation. Refuses what is not
    a regular file (a FIFO would block forever) and images of more than ``max_pixels``
    (decided from the header, before decoding). 16-bit and float greyscale images are
    scaled to 8 bits by their own range."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} is not a regular file")
    with Image.open(path) as image:
        width, height = image.size
        if width * height > max_pixels:
            raise ValueError(
                f"{path} is {width}x{height} = {width * height / 1e6:.0f} megapixels, more "
                f"than --max-pixels {max_pixels / 1e6:.0f} M; resize it or raise the cap"
            )
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            values = np.asarray(image, dtype=np.float64)
            low, high = float(values.min()), float(values.max())
            grey = ((values - low) / max(high - low, 1e-12) * 255.0 + 0.5).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=-1)
        return np.asarray(image.convert("RGB"))


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
        if args.max_people < 1:
            raise ValueError(f"--max-people must be >= 1, got {args.max_people}")
        checkpoint = args.checkpoint
        if checkpoint is None:
            checkpoint = SHIPPED_NAME if args.body_model is None else NO_CHECKPOINT
        checkpoint = resolve_checkpoint(checkpoint)
        image = read_image(args.image, int(args.max_pixels))
        if bbox is not None:
            check_bbox(bbox, image.shape[1], image.shape[0])
        if args.keypoints is not None:
            keypoints, convention = read_keypoints_file(args.keypoints)
            result = run_demo(image, checkpoint, bbox, keypoints, convention, config)
            detector = f"keypoints file {args.keypoints}"
            people = [DemoPerson(keypoints, convention, result.box, None, result)]
        else:
            detector = MEDIAPIPE_DETECTOR
            people = run_demo_people(image, checkpoint, bbox, config, args.max_people)
        fitted = [p for p in people if p.result is not None]
        if not fitted:
            reasons = "; ".join(f"person {k}: {p.skipped}" for k, p in enumerate(people))
            raise ValueError(f"{detector} found {len(people)}, none could be fitted: {reasons}")
        overlay, side, silhouettes = render_people(image, [p.result for p in fitted])
        silhouette_of = {id(p): mask for p, mask in zip(fitted, silhouettes, strict=True)}
        people = [
            replace(p, mask_iou=mask_iou(silhouette_of[id(p)], p.detector_mask))
            if p.result is not None and p.detector_mask is not None
            else p
            for p in people
        ]
    except (OSError, ValueError, KeyError, ImportError, RenderBackendError) as error:
        parser.exit(1, f"spin-demo: {error}\n")

    stem = args.image.stem
    record = json.dumps(people_to_dict(people, detector), indent=1, allow_nan=False)
    paths = write_all_or_none(  # every output or none (e.g. on a full disk)
        [
            lambda: save_png(args.out / f"{stem}_overlay.png", overlay),
            lambda: save_png(args.out / f"{stem}_side.png", side),
            lambda: write_people_obj(args.out / f"{stem}.obj", [p.result for p in fitted]),
            lambda: atomic_write_text(args.out / f"{stem}.json", record),
        ]
    )

    first = fitted[0].result
    print(f"keypoints: {detector}; {len(people)} found, {len(fitted)} fitted")
    print(f"SMPLify mode: {first.mode}; body model: {first.body_model}")
    print(f"focal length: {first.intrinsics[0, 0]:.1f} px; start: {first.initial}")
    for index, person in enumerate(people):
        print(describe_person(index, person))
    for path in paths:
        print(f"wrote {path}")
    print(f"took {time.perf_counter() - start:.1f} s")
    return 0


def describe_person(index: int, person: DemoPerson) -> str:
    """One console line for a person: why skipped, or box, heading, keypoints fitted,
    mean reprojection error and mask IoU."""
    if person.result is None:
        return f"person {index}: skipped: {person.skipped}"
    result = person.result
    x0, y0, x1, y1 = result.box
    iou = "" if person.mask_iou is None else f", mask IoU {person.mask_iou:.2f}"
    return (
        f"person {index}: box ({x0:.0f}, {y0:.0f}) - ({x1:.0f}, {y1:.0f}) px, turned "
        f"{result.initial_yaw_deg:g} deg, {result.num_fitted} keypoints, mean reprojection "
        f"error {result.mean_error:.2f} px{iou}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
