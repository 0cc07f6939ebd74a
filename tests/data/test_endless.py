"""Endless synthetic keypoint samples: the ray cast against the renderer, the samples'
geometry against the body model, determinism, labels, and the mix's sequential order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spin.body import load_body_model
from spin.data.augment import crop_pixels_to_normalized
from spin.data.endless import EndlessKeypoints, has_3d_flag, surface_at_points
from spin.data.mixed_dataset import MixedDataset
from spin.data.representations import input_channels
from spin.data.synthetic import (
    NUM_OPENPOSE,
    SyntheticConfig,
    _project,
    body_template,
    occluded_by_surface,
)
from spin.render.mesh_renderer import MeshRenderer
from tests.data.test_synthetic import OP, _profile_scene

SIZE = 128
CONFIG = SyntheticConfig(image_size=(SIZE, SIZE), body_model="open-lite")
CROP = 64
KEYS = {
    "img", "keypoints", "keypoints_orig", "pose", "betas", "pose_3d", "has_smpl",
    "has_pose_3d", "center", "scale", "orig_shape", "is_flipped", "rot_angle",
    "scale_factor", "pixel_noise", "sample_index", "dataset_name", "imgname", "gender",
    "intrinsics", "crop_intrinsics", "transl", "requested_index",
}  # fmt: skip


@pytest.fixture(scope="module")
def model():
    return load_body_model("open-lite").double()


@pytest.fixture(scope="module")
def endless():
    return EndlessKeypoints(CONFIG, length=1000, img_size=CROP, chunk=8)


def test_ray_cast_finds_the_nearest_triangle():
    # Two overlapping triangles facing the camera, at 2 m (label 1) and 3 m (label 2).
    intrinsics = np.array([[100.0, 0.0, 50.0], [0.0, 100.0, 50.0], [0.0, 0.0, 1.0]])
    near = np.array([[-0.5, -0.5, 2.0], [0.5, -0.5, 2.0], [0.0, 0.5, 2.0]])
    far = np.array([[-1.0, -1.0, 3.0], [1.0, -1.0, 3.0], [0.0, 1.0, 3.0]])
    vertices = np.concatenate([far, near])
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    points = np.array([[50.0, 50.0], [50.0 + 100 * 0.8 / 3, 50.0 + 100 * -0.8 / 3], [0, 0]])
    label, depth = surface_at_points(points, vertices, faces, np.array([2, 1]), intrinsics)
    np.testing.assert_array_equal(label, [1, 2, 0])
    np.testing.assert_allclose(depth, [2.0, 3.0, 0.0])


def test_ray_cast_matches_the_renderer(model, endless):
    """Part label and depth at random pixels of a posed body agree with the rendered part
    map away from the silhouette's outline (where one pixel decides)."""
    template = body_template(model)
    rng = np.random.default_rng(0)
    agree = total = 0
    depth_errors = []
    with MeshRenderer((SIZE, SIZE)) as renderer:
        for index in range(0, 40, 8):
            item = endless[index]
            pose = item["pose"][None].double()
            betas = item["betas"][None].double()
            out = model(pose_rotvecs=pose, betas=betas)
            vertices = out.vertices[0].numpy() + item["transl"].double().numpy()
            intrinsics = item["intrinsics"].double().numpy()
            rendered = renderer.render_labels(
                vertices, template.faces, template.face_parts + 1, intrinsics
            )
            pixels = rng.integers(0, SIZE, (400, 2))
            label, depth = surface_at_points(
                pixels + 0.5, vertices, template.faces, template.face_parts + 1, intrinsics
            )
            reference = rendered.labels[pixels[:, 1], pixels[:, 0]]
            # Interior pixels: the 3x3 neighbourhood has one label in the rendering.
            padded = np.pad(rendered.labels, 1, mode="edge")
            window = np.stack(
                [
                    padded[pixels[:, 1] + dy, pixels[:, 0] + dx]
                    for dy in (0, 1, 2)
                    for dx in (0, 1, 2)
                ]
            )
            interior = (window == window[0]).all(axis=0)
            agree += (label[interior] == reference[interior]).sum()
            total += interior.sum()
            on_body = interior & (reference > 0)
            rendered_depth = rendered.depth[pixels[on_body, 1], pixels[on_body, 0]]
            depth_errors.append(np.abs(depth[on_body] - rendered_depth))
    assert total > 1000
    assert agree / total > 0.99, agree / total
    # The rasteriser's depth is quantised; 5 mm is far below the occlusion margin (5 cm).
    assert np.median(np.concatenate(depth_errors)) < 0.005


@pytest.mark.parametrize("yaw", [0.0, 90.0])
def test_ray_cast_hides_the_joints_behind_the_body(model, yaw):
    """The renderer-based rule's profile test (tests/data/test_synthetic.py), cast instead."""
    template = body_template(model)
    intrinsics = np.array([[160.0, 0.0, 64.0], [0.0, 160.0, 64.0], [0.0, 0.0, 1.0]])
    vertices, joints = _profile_scene(model.float(), yaw)
    label, depth = surface_at_points(
        _project(joints, intrinsics), vertices, template.faces, template.face_parts + 1, intrinsics
    )
    occluded = occluded_by_surface(
        joints, label, depth, vertices, template.vertex_parts, CONFIG.occlusion_margin_m
    )
    hidden = {name for name, index in OP.items() if occluded[index]}
    if yaw == 0:
        assert not hidden
    else:
        assert not hidden & {"RShoulder", "RElbow", "RWrist", "RKnee", "RAnkle", "REar"}
        assert len(hidden & {"LShoulder", "LElbow", "LWrist", "LKnee", "LAnkle", "LEar"}) >= 5


def test_items_have_the_spin_dataset_keys_and_shapes(endless):
    item = endless[3]
    assert set(item) == KEYS
    assert item["img"].shape == (input_channels("keypoints"), 1, 1)
    assert item["keypoints"].shape == (49, 3) and item["pose_3d"].shape == (24, 4)
    assert item["pose"].shape == (72,) and item["betas"].shape == (10,)
    assert item["imgname"] == "endless_000000003" and item["sample_index"] == 3
    heatmaps = EndlessKeypoints(CONFIG, 10, img_size=CROP, input_representation="keypoint_heatmaps")
    assert heatmaps[0]["img"].shape == (input_channels("keypoint_heatmaps"), CROP, CROP)


def test_samples_are_the_posed_body_seen_by_their_camera(model, endless):
    """3D joints are the body model's for (pose, betas) + transl; the ground-truth 2D
    keypoints are their projection, cropped; the OpenPose keypoints are near theirs."""
    from spin.body.sparse import SparseJointModel

    joint_model = SparseJointModel(load_body_model("open-lite").double())
    for index in (0, 9, 17, 500):
        item = endless[index]
        joints = (
            joint_model(
                pose_rotvecs=item["pose"][None].double(), betas=item["betas"][None].double()
            )
            .joints_spin[0]
            .numpy()
            + item["transl"].double().numpy()
        )
        np.testing.assert_allclose(item["pose_3d"][:, :3].numpy(), joints[NUM_OPENPOSE:], atol=1e-5)
        crop = _project(joints, item["crop_intrinsics"].double().numpy())
        visible = item["keypoints"][NUM_OPENPOSE:, 2].numpy() > 0
        expected = crop_pixels_to_normalized(crop[NUM_OPENPOSE:][visible], CROP)
        got = item["keypoints"][NUM_OPENPOSE:][visible, :2].numpy()
        np.testing.assert_allclose(got, expected, atol=1e-4)
        seen = item["keypoints"][:NUM_OPENPOSE, 2].numpy() > 0
        detector = item["keypoints"][:NUM_OPENPOSE][seen, :2].numpy()
        true = crop_pixels_to_normalized(crop[:NUM_OPENPOSE][seen], CROP)
        # Detector noise is a few % of the box; gross outliers are rare.
        assert np.median(np.linalg.norm(detector - true, axis=1)) < 0.1


def test_samples_depend_on_seed_and_index_alone(endless):
    again = EndlessKeypoints(CONFIG, length=1000, img_size=CROP, chunk=8)
    order = [17, 3, 17, 900, 3]
    for index in order:  # any access order, chunks made again or not
        a, b = endless[index], again[index]
        for key in ("keypoints", "pose", "betas", "transl", "center"):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    other = EndlessKeypoints(CONFIG, length=1000, img_size=CROP, chunk=8, seed=2)
    assert not torch.equal(endless[3]["pose"], other[3]["pose"])
    assert not torch.equal(endless[3]["pose"], endless[4]["pose"])


def test_fraction_of_3d_labels_is_exact_and_unlabelled_samples_carry_none():
    data = EndlessKeypoints(CONFIG, length=100, img_size=CROP, fraction_3d=0.1, chunk=50)
    items = [data[i] for i in range(100)]
    labelled = [bool(item["has_smpl"]) for item in items]
    assert sum(labelled) == 10
    for item, has in zip(items, labelled, strict=True):
        assert bool(item["has_pose_3d"]) == has
        if not has:
            assert not item["pose"].any() and not item["pose_3d"].any()
            assert not item["transl"].any()
    flags = [has_3d_flag(i, 0.25, 0.3) for i in range(40)]
    assert all(sum(flags[k : k + 4]) == 1 for k in range(0, 40, 4))


def test_bodies_are_in_view_and_boxes_hold_them(endless):
    for index in range(0, 64, 4):
        item = endless[index]
        seen = item["keypoints"][:, 2] > 0
        assert seen.sum() >= 6, index  # a person is in the crop
        inside = item["keypoints"][seen, :2].abs().max()
        assert inside < 1.5, (index, inside)  # normalised crop coordinates: [-1, 1] is the box


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="input_representation"):
        EndlessKeypoints(CONFIG, 10, input_representation="rgb")
    with pytest.raises(ValueError, match="length"):
        EndlessKeypoints(CONFIG, 0)
    with pytest.raises(ValueError, match="fraction_3d"):
        EndlessKeypoints(CONFIG, 10, fraction_3d=1.5)
    with pytest.raises(IndexError):
        EndlessKeypoints(CONFIG, 10)[10]


class _Sequential:
    sequential = True

    def __init__(self, size):
        self.size = size

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        return ("endless", index)


def test_the_mix_walks_a_sequential_dataset_in_order():
    mixed = MixedDataset([_Sequential(25)], [1.0], length=10, seed=0)
    assert [mixed[i][1] for i in range(10)] == list(range(10))
    mixed.set_epoch(2)
    assert [mixed[i][1] for i in range(10)] == [(20 + i) % 25 for i in range(10)]


def test_hidden_parameters_are_the_samples_true_bodies():
    """What tools/cache_quality.py scores the fits against: each sample's true pose and betas
    (shown only on labelled samples) and its label flag, without making the samples."""
    dataset = EndlessKeypoints(CONFIG, length=21, fraction_3d=0.5, img_size=CROP, chunk=8)
    pose, betas, labelled = dataset.hidden_parameters()
    assert pose.shape == (21, 72) and betas.shape[0] == 21 and labelled.dtype == bool
    assert 0 < labelled.sum() < 21
    for index in range(21):
        item = dataset[index]
        assert bool(item["has_smpl"]) == labelled[index]
        if labelled[index]:
            np.testing.assert_allclose(item["pose"].numpy(), pose[index], atol=1e-6)
            np.testing.assert_allclose(item["betas"].numpy(), betas[index], atol=1e-6)
