"""SMPL body-part segmentation: per-vertex and per-face part labels, exact part maps.

The 24 parts are those of SMPL's 24 joints (:data:`spin.body.joint_conventions.SMPL_24`
order): each vertex belongs to the joint that skins it most (the argmax of its
linear-blend-skinning weights), each face to the part most of its vertices belong to.
So "left_knee" is the shin (the knee joint moves it), "left_ankle" the foot and
"left_foot" the toes.

A part map is an (H, W) uint8 image: 0 off the body, ``part + 1`` (1..24) where part
``part`` is the visible surface. Labels are exact: every pixel holds the part of one
face covering its centre, never an antialiased mix (see
:meth:`spin.render.mesh_renderer.MeshRenderer.render_labels`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spin.render.mesh_renderer import MeshRenderer, _use_renderer

NUM_PARTS = 24
"""SMPL's parts, one per joint; part maps hold 0 (background) and 1..NUM_PARTS."""

BACKGROUND_LABEL = 0

# Visualisation palette: hues spread by the golden ratio so neighbouring labels differ.
_GOLDEN_RATIO_CONJUGATE = 0.618033988749895
_PALETTE_SATURATIONS = (0.75, 0.5)
_PALETTE_VALUES = (0.95, 0.75)
BACKGROUND_RGB = (0, 0, 0)


def vertex_part_labels(lbs_weights: np.ndarray) -> np.ndarray:
    """Part (0..23) of each vertex: the joint with the largest skinning weight.

    Args:
        lbs_weights: (V, 24) linear-blend-skinning weights (``BodyModel.data.lbs_weights``).

    Returns:
        (V,) int64 part indices in [0, 24).
    """
    lbs_weights = np.asarray(lbs_weights)
    if lbs_weights.ndim != 2 or lbs_weights.shape[1] != NUM_PARTS:
        raise ValueError(f"expected lbs_weights of shape (V, {NUM_PARTS}), got {lbs_weights.shape}")
    return np.argmax(lbs_weights, axis=1).astype(np.int64)


def face_part_labels(faces: np.ndarray, vertex_labels: np.ndarray) -> np.ndarray:
    """Part of each face: the label shared by at least two of its vertices, else the
    label of its first vertex.

    Args:
        faces: (F, 3) vertex indices.
        vertex_labels: (V,) integer labels, e.g. from :func:`vertex_part_labels`.

    Returns:
        (F,) labels of ``vertex_labels``' dtype.
    """
    faces = np.asarray(faces)
    vertex_labels = np.asarray(vertex_labels)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"expected faces of shape (F, 3), got {faces.shape}")
    if vertex_labels.ndim != 1:
        raise ValueError(f"expected vertex_labels of shape (V,), got {vertex_labels.shape}")
    corner = vertex_labels[faces]
    first, second, third = corner[:, 0], corner[:, 1], corner[:, 2]
    # If the second and third agree they are the majority; otherwise the first vertex
    # either agrees with one of them (majority) or all differ (first vertex).
    return np.where((second == third) & (first != second), second, first)


def render_part_map(
    vertices: np.ndarray,
    faces: np.ndarray,
    face_labels: np.ndarray,
    intrinsics: np.ndarray,
    image_size: Sequence[int],
    renderer: MeshRenderer | None = None,
) -> np.ndarray:
    """Render the exact part label of the visible surface at every pixel.

    Args:
        vertices: (V, 3) metres in the camera frame (x right, y down, z forward).
        faces: (F, 3) vertex indices.
        face_labels: (F,) part of each face in [0, 24) (:func:`face_part_labels`).
        intrinsics: (3, 3) pixels.
        image_size: (width, height) in pixels.
        renderer: a :class:`MeshRenderer` of ``image_size`` to reuse, else a temporary one.

    Returns:
        (H, W) uint8: 0 off the body, part + 1 (1..24) on it. Its nonzero pixels are
        exactly the silhouette (:meth:`MeshRenderer.render_silhouette`).
    """
    face_labels = np.asarray(face_labels)
    if face_labels.size and (face_labels.min() < 0 or face_labels.max() >= NUM_PARTS):
        raise ValueError(
            f"expected face_labels in [0, {NUM_PARTS}) (SMPL parts), got values in "
            f"[{face_labels.min()}, {face_labels.max()}]"
        )
    with _use_renderer(renderer, image_size) as active:
        rendered = active.render_labels(vertices, faces, face_labels + 1, intrinsics)
    return rendered.labels.astype(np.uint8)


def part_palette() -> np.ndarray:
    """(25, 3) uint8 colours: row 0 the background (black), row ``part + 1`` a part's."""
    import colorsys

    colors = [BACKGROUND_RGB]
    for part in range(NUM_PARTS):
        hue = (part * _GOLDEN_RATIO_CONJUGATE) % 1.0
        saturation = _PALETTE_SATURATIONS[part % 2]
        value = _PALETTE_VALUES[(part // 2) % 2]
        rgb = colorsys.hsv_to_rgb(hue, saturation, value)
        colors.append(tuple(round(255 * c) for c in rgb))
    return np.asarray(colors, dtype=np.uint8)


def part_map_to_rgb(part_map: np.ndarray) -> np.ndarray:
    """Colour a part map (H, W) with values in [0, 24] as an (H, W, 3) uint8 image."""
    part_map = np.asarray(part_map)
    if part_map.ndim != 2 or not np.issubdtype(part_map.dtype, np.integer):
        raise ValueError(
            f"expected an integer part map of shape (H, W), got {part_map.shape} {part_map.dtype}"
        )
    if part_map.size and (part_map.min() < 0 or part_map.max() > NUM_PARTS):
        raise ValueError(f"expected part map values in [0, {NUM_PARTS}]")
    return part_palette()[part_map]
