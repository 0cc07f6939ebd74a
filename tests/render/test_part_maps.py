from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

import spin.body
from spin.body import load_body_model
from spin.geometry import perspective_projection
from spin.render.mesh_renderer import MeshRenderer
from spin.render.part_maps import (
    NUM_PARTS,
    face_part_labels,
    part_map_to_rgb,
    part_palette,
    render_part_map,
    vertex_part_labels,
)

OPEN_LITE = Path(spin.body.__file__).parent / "assets" / "open_lite.npz"
SIZE = (128, 160)  # (width, height)
INTRINSICS = np.array([[190.0, 0.0, 62.0], [0.0, 190.0, 83.0], [0.0, 0.0, 1.0]])
HEAD, LEFT_WRIST, RIGHT_WRIST = 15, 20, 21
LEFT_ELBOW = 18


@pytest.fixture(scope="module")
def renderer():
    with MeshRenderer(SIZE) as renderer:
        yield renderer


@pytest.fixture(scope="module")
def posed_body():
    """open-lite facing the camera at 3 m, arms raised at different heights."""
    if not OPEN_LITE.exists():
        pytest.skip(f"{OPEN_LITE} not built yet (tools/build_open_body_model.py makes it)")
    model = load_body_model("open-lite")
    pose = torch.zeros(1, 24, 3)
    pose[0, 0, 0] = np.pi  # upright, facing a camera looking down +z
    pose[0, 16, 2] = -0.3  # left shoulder: arm a little down
    pose[0, 17, 2] = 0.9  # right shoulder: arm well down
    out = model(
        pose_rotvecs=pose.reshape(1, 72),
        betas=torch.zeros(1, model.num_betas),
        transl=torch.tensor([[0.0, 0.1, 3.0]]),
    )
    vertices = out.vertices[0].double().numpy()
    joints_2d = perspective_projection(out.joints_smpl[0].double(), torch.from_numpy(INTRINSICS))
    labels = face_part_labels(model.faces, vertex_part_labels(model.data.lbs_weights))
    return vertices, np.asarray(model.faces), labels, joints_2d.numpy()


def _centroid_uv(mask):
    rows, cols = np.nonzero(mask)
    return np.array([cols.mean() + 0.5, rows.mean() + 0.5])


def test_vertex_labels_are_the_dominant_joint():
    weights = np.zeros((3, NUM_PARTS))
    weights[0, [0, 3]] = [0.4, 0.6]
    weights[1, 15] = 1.0
    weights[2, [22, 20, 18]] = [0.5, 0.3, 0.2]
    np.testing.assert_array_equal(vertex_part_labels(weights), [3, 15, 22])
    with pytest.raises(ValueError, match=r"\(V, 24\)"):
        vertex_part_labels(np.zeros((3, 23)))


def test_face_labels_take_the_majority_else_the_first_vertex():
    vertex_labels = np.array([1, 1, 2, 3, 2])
    faces = np.array([[0, 1, 2], [2, 0, 1], [2, 4, 0], [0, 2, 3], [3, 2, 4]])
    np.testing.assert_array_equal(face_part_labels(faces, vertex_labels), [1, 1, 2, 1, 2])


def test_render_labels_are_exact_for_any_label(renderer):
    """Two overlapping spheres with labels needing more than one byte: no other value."""
    near = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    far = trimesh.creation.icosphere(subdivisions=3, radius=0.6)
    vertices = np.concatenate([near.vertices + [-0.2, 0.0, 2.5], far.vertices + [0.3, 0.1, 3.5]])
    faces = np.concatenate([near.faces, far.faces + len(near.vertices)])
    face_labels = np.repeat([70_000, 5], [len(near.faces), len(far.faces)])
    rendered = renderer.render_labels(vertices, faces, face_labels, INTRINSICS)
    assert set(np.unique(rendered.labels)) == {0, 5, 70_000}
    np.testing.assert_array_equal(
        rendered.labels > 0, renderer.render_silhouette(vertices, faces, INTRINSICS)
    )
    near_depth = rendered.depth[rendered.labels == 70_000]
    assert near_depth.min() == pytest.approx(2.1, abs=0.01) and (near_depth < 2.5).all()


def test_part_map_has_exact_labels_on_the_silhouette(renderer, posed_body):
    vertices, faces, labels, _ = posed_body
    part_map = render_part_map(vertices, faces, labels, INTRINSICS, SIZE, renderer=renderer)
    assert part_map.shape == (SIZE[1], SIZE[0]) and part_map.dtype == np.uint8
    values = set(np.unique(part_map).tolist())
    assert values <= set(range(NUM_PARTS + 1)), values
    assert len(values) > 15, "most parts should be visible from the front"
    silhouette = renderer.render_silhouette(vertices, faces, INTRINSICS)
    np.testing.assert_array_equal(part_map > 0, silhouette)


def test_parts_project_around_their_joints(renderer, posed_body):
    vertices, faces, labels, joints_2d = posed_body
    part_map = render_part_map(vertices, faces, labels, INTRINSICS, SIZE, renderer=renderer)
    head = part_map == HEAD + 1
    assert head.sum() > 20
    # The head part is the whole head, its joint sits at its base: centroid a little above.
    offset = _centroid_uv(head) - joints_2d[HEAD]
    assert abs(offset[0]) < 2.0 and -12.0 < offset[1] < 0.0, offset
    # The forearm (the elbow's part) lies between the elbow and the wrist, and the
    # subject's left arm is on the image's right.
    for elbow in (LEFT_ELBOW, LEFT_ELBOW + 1):
        forearm = _centroid_uv(part_map == elbow + 1)
        midpoint = 0.5 * (joints_2d[elbow] + joints_2d[elbow + 2])
        assert np.linalg.norm(forearm - midpoint) < 4.0
    assert joints_2d[LEFT_WRIST, 0] > SIZE[0] / 2 > joints_2d[RIGHT_WRIST, 0]


def test_part_map_checks_its_inputs(renderer, posed_body):
    # Not a second MeshRenderer: on EGL, closing one terminates the display all share.
    vertices, faces, labels, _ = posed_body
    with pytest.raises(ValueError, match="image's size"):
        render_part_map(vertices, faces, labels, INTRINSICS, (64, 64), renderer=renderer)
    with pytest.raises(ValueError, match=r"\[0, 24\)"):
        render_part_map(vertices, faces, labels + 1, INTRINSICS, SIZE)


def test_part_map_to_rgb_uses_distinct_colours():
    palette = part_palette()
    assert palette.shape == (NUM_PARTS + 1, 3) and palette.dtype == np.uint8
    assert len({tuple(row) for row in palette}) == NUM_PARTS + 1
    part_map = np.arange(NUM_PARTS + 1, dtype=np.uint8).reshape(5, 5)
    rgb = part_map_to_rgb(part_map)
    assert rgb.shape == (5, 5, 3)
    np.testing.assert_array_equal(rgb[0, 0], (0, 0, 0))
    np.testing.assert_array_equal(rgb.reshape(-1, 3), palette)
    with pytest.raises(ValueError, match=r"\[0, 24\]"):
        part_map_to_rgb(np.full((2, 2), 25))
