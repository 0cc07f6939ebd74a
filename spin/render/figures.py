"""Compose rendered tiles into labelled figures and save them."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from spin.atomic import atomic_write_bytes

BACKGROUND_RGB = (255, 255, 255)
LABEL_RGB = (20, 20, 20)
# A label strip is this fraction of the tile height (with a floor) per line of text.
LABEL_LINE_FRACTION = 0.06
MIN_LABEL_LINE_PX = 12
# Font size as a fraction of the line height.
FONT_FRACTION = 0.8


def label_strip_height(tile_height: int, num_lines: int = 1) -> int:
    """Height in pixels of the strip that :func:`grid_image` adds under each tile row."""
    line = _line_height(tile_height)
    return line * num_lines + line // 3


def grid_image(
    images: Sequence[np.ndarray],
    ncols: int,
    labels: Sequence[str] | None = None,
    label_position: str = "below",
) -> np.ndarray:
    """Tile equally sized images row by row into one image, optionally labelled.

    Args:
        images: N images, each (H, W, 3) uint8, all of one size.
        ncols: tiles per row; the grid has ceil(N / ncols) rows, empty cells are white.
        labels: N strings (may hold newlines), each drawn centred in a strip of
            :func:`label_strip_height` (H, lines) pixels below (or above) its tile.
        label_position: "below" or "above".

    Returns:
        (rows * (H + strip), ncols * W, 3) uint8, with strip = 0 without labels.
    """
    if not images:
        raise ValueError("expected at least one image")
    if ncols < 1:
        raise ValueError(f"expected ncols >= 1, got {ncols}")
    if label_position not in ("below", "above"):
        raise ValueError(f'expected label_position "below" or "above", got {label_position!r}')
    tile_shape = np.asarray(images[0]).shape
    for index, image in enumerate(images):
        image = np.asarray(image)
        if image.shape != tile_shape or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"expected images all (H, W, 3) of one size {tile_shape}; "
                f"image {index} is {image.shape}"
            )
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"got {len(labels)} labels for {len(images)} images")

    tile_h, tile_w = tile_shape[:2]
    num_lines = max((label.count("\n") + 1 for label in labels), default=1) if labels else 0
    strip = label_strip_height(tile_h, num_lines) if labels else 0
    nrows = -(-len(images) // ncols)
    cell_h = tile_h + strip
    canvas = Image.new("RGB", (ncols * tile_w, nrows * cell_h), BACKGROUND_RGB)
    draw = ImageDraw.Draw(canvas)
    font = _font(round(FONT_FRACTION * _line_height(tile_h))) if labels else None
    for index, image in enumerate(images):
        row, col = divmod(index, ncols)
        left, top = col * tile_w, row * cell_h
        tile_top = top if label_position == "below" or not labels else top + strip
        canvas.paste(Image.fromarray(np.asarray(image, dtype=np.uint8)), (left, tile_top))
        if labels:
            strip_top = top + tile_h if label_position == "below" else top
            centre = (left + tile_w / 2, strip_top + strip / 2)
            draw.multiline_text(
                centre, labels[index], fill=LABEL_RGB, font=font, anchor="mm", align="center"
            )
    return np.asarray(canvas)


def draw_points(
    image: np.ndarray,
    points_2d: np.ndarray,
    color: Sequence[int] = (220, 40, 40),
    radius: float = 2.0,
) -> np.ndarray:
    """Draw filled dots at pixel positions (N, 2) on a copy of ``image`` (H, W, 3) uint8.

    Positions (u, v) are measured from the image's top-left corner (pixel centres at
    half-integers), as ``spin.geometry.perspective_projection`` returns them.
    """
    points_2d = np.asarray(points_2d, dtype=np.float64)
    if points_2d.ndim != 2 or points_2d.shape[1] != 2:
        raise ValueError(f"expected points_2d of shape (N, 2), got {points_2d.shape}")
    canvas = Image.fromarray(np.asarray(image, dtype=np.uint8))
    draw = ImageDraw.Draw(canvas)
    # PIL puts pixel centres at integers.
    for u, v in points_2d - 0.5:
        box = (u - radius, v - radius, u + radius, v + radius)
        draw.ellipse(box, fill=tuple(int(c) for c in color))
    return np.asarray(canvas)


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an (H, W, 3) or (H, W, 4) uint8 image as PNG, creating parent folders."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(
            f"expected an (H, W, 3) or (H, W, 4) uint8 image, got {image.shape} {image.dtype}"
        )
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())  # a full disk leaves no half PNG


def _line_height(tile_height: int) -> int:
    return max(MIN_LABEL_LINE_PX, round(LABEL_LINE_FRACTION * tile_height))


def _font(size_px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size_px)
    except (TypeError, ImportError, OSError):
        # Pillow < 10.1 or no FreeType: the fixed bitmap font.
        return ImageFont.load_default()
