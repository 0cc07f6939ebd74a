import os
import sys

import numpy as np
import pytest
import torch
import trimesh

from spin.geometry import perspective_projection
from spin.render import backend
from spin.render.backend import RenderBackendError, select_backend
from spin.render.figures import grid_image, label_strip_height
from spin.render.mesh_renderer import (
    MeshRenderer,
    apply_transform,
    render_mesh,
    render_overlay,
    render_side_view,
    side_view_transform,
)

WIDTH, HEIGHT = 160, 120
# Principal point off the image centre, so a mix-up of cx/cy or of the pixel-centre
# convention moves the silhouette.
INTRINSICS = np.array([[150.0, 0.0, 70.0], [0.0, 150.0, 66.0], [0.0, 0.0, 1.0]])
RADIUS = 0.5


def _sphere(centre):
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=RADIUS)
    return sphere.vertices + np.asarray(centre), sphere.faces


def _project(point):
    points = torch.tensor([point], dtype=torch.float64)
    return perspective_projection(points, torch.from_numpy(INTRINSICS))[0].numpy()


def _centroid_uv(mask):
    rows, cols = np.nonzero(mask)
    # Pixel (i, j) has its centre at (i + 0.5, j + 0.5).
    return np.array([cols.mean() + 0.5, rows.mean() + 0.5])


@pytest.fixture(scope="module")
def renderer():
    with MeshRenderer((WIDTH, HEIGHT)) as renderer:
        yield renderer


def test_backend_is_exported_for_pyopengl():
    platform = select_backend()
    assert os.environ["PYOPENGL_PLATFORM"] == platform
    assert select_backend() == platform


@pytest.fixture
def fresh_backend(monkeypatch):
    """No platform chosen yet, no user choice, OpenGL not imported (restored after)."""
    monkeypatch.setattr(backend, "_selected", None)
    monkeypatch.delenv(backend.PLATFORM_ENV_VAR, raising=False)
    monkeypatch.delitem(sys.modules, "OpenGL", raising=False)
    return monkeypatch


def test_backend_falls_back_to_osmesa(fresh_backend):
    probed = []

    def probe(platform):
        probed.append(platform)
        return "EGL: no display" if platform == "egl" else None

    fresh_backend.setattr(backend, "probe_platform", probe)
    assert select_backend() == "osmesa"
    assert os.environ[backend.PLATFORM_ENV_VAR] == "osmesa"
    assert select_backend() == "osmesa" and probed == ["egl", "osmesa"]


def test_backend_error_says_what_was_tried_and_how_to_fix(fresh_backend):
    fresh_backend.setattr(backend, "probe_platform", lambda platform: f"{platform} broke")
    with pytest.raises(RenderBackendError) as error:
        select_backend()
    message = str(error.value)
    assert "egl: egl broke" in message and "osmesa: osmesa broke" in message
    assert "apt-get install -y libosmesa6" in message and "PYOPENGL_PLATFORM" in message


def test_backend_respects_user_choice(fresh_backend):
    fresh_backend.setenv(backend.PLATFORM_ENV_VAR, "osmesa")
    fresh_backend.setattr(backend, "probe_platform", lambda platform: pytest.fail("probed"))
    assert select_backend() == "osmesa"


@pytest.mark.parametrize("centre", [(0.0, 0.0, 3.0), (0.5, 0.3, 4.0), (-0.6, -0.4, 3.5)])
def test_silhouette_centred_on_projection(renderer, centre):
    vertices, faces = _sphere(centre)
    mask = renderer.render_silhouette(vertices, faces, INTRINSICS)
    assert mask.dtype == bool and mask.shape == (HEIGHT, WIDTH)
    assert mask.any()
    # Off the principal ray a sphere projects to an ellipse whose centre moves slightly
    # outwards; within 2 px here.
    np.testing.assert_allclose(_centroid_uv(mask), _project(centre), atol=2.0)


def test_silhouette_on_axis_is_the_projected_disc(renderer):
    distance = 3.0
    vertices, faces = _sphere((0.0, 0.0, distance))
    mask = renderer.render_silhouette(vertices, faces, INTRINSICS)
    np.testing.assert_allclose(_centroid_uv(mask), INTRINSICS[:2, 2], atol=0.1)
    # The silhouette cone of a sphere: image radius f * r / sqrt(d^2 - r^2).
    disc_radius = INTRINSICS[0, 0] * RADIUS / np.sqrt(distance**2 - RADIUS**2)
    assert mask.sum() == pytest.approx(np.pi * disc_radius**2, rel=0.05)


def test_depth_is_distance_to_the_surface(renderer):
    vertices, faces = _sphere((0.0, 0.0, 3.0))
    depth = renderer.render_depth(vertices, faces, INTRINSICS)
    assert depth.dtype == np.float32
    assert depth[depth > 0].min() == pytest.approx(3.0 - RADIUS, abs=0.01)
    assert (depth[depth > 0] < 3.0).all()
    assert depth[0, 0] == 0.0


def test_render_mesh_rgba_alpha_matches_silhouette(renderer):
    vertices, faces = _sphere((0.2, -0.1, 3.0))
    rgba = render_mesh(vertices, faces, INTRINSICS, (WIDTH, HEIGHT), renderer=renderer)
    assert rgba.shape == (HEIGHT, WIDTH, 4) and rgba.dtype == np.uint8
    silhouette = renderer.render_silhouette(vertices, faces, INTRINSICS)
    opaque = rgba[..., 3] == 255
    # Antialiased edges (EGL) differ from the centre-sampled silhouette by a border only.
    assert (opaque & ~silhouette).sum() == 0
    assert (silhouette & (rgba[..., 3] == 0)).sum() == 0
    # Lit, coloured, and not flat: shading varies across the sphere.
    colours = rgba[opaque][:, :3].astype(float)
    assert colours.mean() > 60 and colours.std() > 5


def test_overlay_keeps_background_off_the_mesh(renderer):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    vertices, faces = _sphere((0.0, 0.2, 3.0))
    coverage = render_mesh(vertices, faces, INTRINSICS, (WIDTH, HEIGHT), renderer=renderer)[..., 3]
    out = render_overlay(image, vertices, faces, INTRINSICS, alpha=0.8, renderer=renderer)
    assert out.shape == image.shape and out.dtype == np.uint8
    off_mesh = coverage == 0
    assert off_mesh.any() and not off_mesh.all()
    np.testing.assert_array_equal(out[off_mesh], image[off_mesh])
    assert (out[coverage == 255] != image[coverage == 255]).any(axis=-1).mean() > 0.9


def test_renderer_size_must_match_image(renderer):
    vertices, faces = _sphere((0.0, 0.0, 3.0))
    with pytest.raises(ValueError, match="MeshRenderer of the image's size"):
        render_mesh(vertices, faces, INTRINSICS, (WIDTH + 1, HEIGHT), renderer=renderer)


def test_side_view_turns_and_frames_the_mesh(renderer):
    # A box long along x (camera right): seen from the side it is narrow and deep.
    box = trimesh.creation.box(extents=(1.0, 0.2, 0.2))
    vertices = box.vertices + np.array([0.3, 0.0, 5.0])
    transform = side_view_transform(vertices, INTRINSICS, (WIDTH, HEIGHT))
    turned = apply_transform(transform, vertices)
    extent = turned.max(axis=0) - turned.min(axis=0)
    np.testing.assert_allclose(extent, (0.2, 0.2, 1.0), atol=1e-9)
    background = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    image = render_side_view(
        vertices, box.faces, INTRINSICS, (WIDTH, HEIGHT), background=background, renderer=renderer
    )
    drawn = (image != 0).any(axis=-1)
    assert drawn.any()
    rows, cols = np.nonzero(drawn)
    # Framed: centred on the principal point, inside the central 90% of the image and
    # touching its border on one side.
    np.testing.assert_allclose(_centroid_uv(drawn), INTRINSICS[:2, 2], atol=3.0)
    margins = np.array(
        [cols.min(), WIDTH - 1 - cols.max(), rows.min(), HEIGHT - 1 - rows.max()], dtype=float
    )
    fill_margins = 0.05 * np.array([WIDTH, WIDTH, HEIGHT, HEIGHT])
    assert (margins >= fill_margins - 1).all()
    assert (margins - fill_margins).min() < 2


def test_grid_image_size_and_labels():
    tiles = [np.full((40, 60, 3), 10 * i, dtype=np.uint8) for i in range(5)]
    grid = grid_image(tiles, ncols=3, labels=[f"tile {i}\nline 2" for i in range(5)])
    strip = label_strip_height(40, num_lines=2)
    assert grid.shape == (2 * (40 + strip), 180, 3)
    np.testing.assert_array_equal(grid[40 + strip : 80 + strip, 60:120], tiles[4])
    label_area = grid[40 : 40 + strip, :60]
    assert (label_area < 128).any(), "label text missing"
    assert (grid[40 + strip : 80 + strip, 120:] == 255).all(), "empty cell should stay white"
