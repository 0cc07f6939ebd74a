import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from spin.body.joint_conventions import SPIN_49, flip_permutation
from spin.data.augment import (
    SPIN_GT_24,
    AugmentationConfig,
    AugmentationParams,
    augment_pose_rotvecs,
    crop_camera_intrinsics,
    crop_image,
    crop_normalized_to_pixels,
    crop_pixels_to_normalized,
    crop_transform,
    flip_joints_3d,
    flip_keypoints,
    flip_pose_rotvecs,
    identity_params,
    inplane_rotation_matrix,
    invert_affine,
    rotate_joints_3d,
    rotate_pose_rotvecs,
    sample_augmentation,
    transform_points,
    unaugment_pose_rotvecs,
    uncrop_image,
    uncrop_points,
    warp_image,
)
from spin.geometry import perspective_projection, pixels_to_normalized

CENTER = np.array([150.0, 110.0])
SCALE = 0.9  # box side 180 px
OUT = 64


# --- crop geometry ------------------------------------------------------------------------


def test_crop_transform_maps_the_box_onto_the_crop():
    affine = crop_transform(CENTER, SCALE, OUT)
    half = 200 * SCALE / 2
    corners = CENTER + np.array([[-half, -half], [half, half], [half, -half]])
    np.testing.assert_allclose(transform_points(CENTER, affine), [OUT / 2, OUT / 2])
    np.testing.assert_allclose(
        transform_points(corners, affine), [[0, 0], [OUT, OUT], [OUT, 0]], atol=1e-9
    )


def test_positive_rotation_turns_content_counter_clockwise_on_screen():
    # A point right of the centre moves up (smaller y, y points down) for +90 degrees.
    affine = crop_transform(CENTER, SCALE, OUT, rotation_deg=90.0)
    right = CENTER + [50.0, 0.0]
    moved = transform_points(right, affine) - OUT / 2
    assert moved[0] == pytest.approx(0.0, abs=1e-9)
    assert moved[1] < 0


def test_flip_mirrors_crop_x():
    plain = crop_transform(CENTER, SCALE, OUT, rotation_deg=20.0)
    flipped = crop_transform(CENTER, SCALE, OUT, rotation_deg=20.0, flip=True)
    points = np.random.default_rng(0).uniform(0, 300, size=(10, 2))
    a, b = transform_points(points, plain), transform_points(points, flipped)
    np.testing.assert_allclose(b[:, 0], OUT - a[:, 0])
    np.testing.assert_allclose(b[:, 1], a[:, 1])


@pytest.mark.parametrize("rotation, flip", [(0.0, False), (37.0, False), (-52.0, True)])
def test_crop_then_uncrop_points_round_trip(rotation, flip):
    points = np.random.default_rng(1).uniform(-50, 400, size=(5, 7, 2))
    crop = transform_points(points, crop_transform(CENTER, SCALE, OUT, rotation, flip))
    back = uncrop_points(crop, CENTER, SCALE, OUT, rotation, flip)
    assert np.abs(back - points).max() < 1e-6


def test_transform_points_numpy_and_torch_agree():
    affine = crop_transform(CENTER, SCALE, OUT, 33.0, True)
    points = np.random.default_rng(2).uniform(0, 300, size=(3, 2))
    from_torch = transform_points(torch.from_numpy(points), affine)
    assert isinstance(from_torch, torch.Tensor) and from_torch.dtype == torch.float64
    np.testing.assert_allclose(from_torch.numpy(), transform_points(points, affine))
    np.testing.assert_allclose(invert_affine(invert_affine(affine)), affine, atol=1e-12)


def test_normalized_coordinates_match_geometry_and_keep_confidence():
    keypoints = np.random.default_rng(3).uniform(-10, 80, size=(49, 3))
    normalized = crop_pixels_to_normalized(keypoints, OUT)
    expected = pixels_to_normalized(torch.from_numpy(keypoints[:, :2]), OUT).numpy()
    np.testing.assert_allclose(normalized[:, :2], expected)
    np.testing.assert_array_equal(normalized[:, 2], keypoints[:, 2])
    np.testing.assert_allclose(crop_normalized_to_pixels(normalized, OUT), keypoints)


# --- images ---------------------------------------------------------------------------------


def _smooth_image(width=320, height=240, seed=0):
    """Low-frequency colour pattern, so bilinear resampling loses almost nothing."""
    y, x = np.mgrid[0:height, 0:width] + 0.5
    rng = np.random.default_rng(seed)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.01, 0.04), rng.uniform(0.01, 0.04), rng.uniform(0, 6)
        channels.append(127.5 + 100 * np.sin(fx * x + phase) * np.cos(fy * y))
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def _dot_image(point, width=320, height=240):
    image = Image.new("RGB", (width, height))
    x, y = point
    ImageDraw.Draw(image).ellipse([x - 4, y - 4, x + 4, y + 4], fill=(255, 255, 255))
    return np.asarray(image)


def _bright_centroid(image):
    weight = image.astype(np.float64).sum(axis=-1)
    weight = np.where(weight > 0.5 * weight.max(), weight, 0)
    rows, cols = np.mgrid[0 : image.shape[0], 0 : image.shape[1]] + 0.5
    return np.array([(cols * weight).sum(), (rows * weight).sum()]) / weight.sum()


@pytest.mark.parametrize(
    "scale, rotation, flip",
    [
        (0.9, 0.0, False),
        (0.9, 40.0, False),
        (1.3, -25.0, True),
        (0.3, 60.0, True),
        (2.5, 10, False),
    ],
)
def test_image_content_lands_where_the_points_go(scale, rotation, flip):
    # covers upscaling (scale 0.3), mild and strong (2.5: 500 px box onto 64 px) shrinking
    image = _dot_image([162.0, 100.0])  # well inside even the smallest box
    dot = _bright_centroid(image)
    crop = crop_image(image, CENTER, scale, OUT, rotation, flip)
    expected = transform_points(dot, crop_transform(CENTER, scale, OUT, rotation, flip))
    assert np.linalg.norm(_bright_centroid(crop) - expected) < 0.5


def test_crop_flip_twice_is_identity_and_flip_mirrors_the_crop():
    image = _smooth_image()
    plain = crop_image(image, CENTER, SCALE, OUT, rotation_deg=15.0)
    flipped = crop_image(image, CENTER, SCALE, OUT, rotation_deg=15.0, flip=True)
    diff = np.abs(flipped.astype(int) - plain[:, ::-1].astype(int))
    assert diff.max() <= 1  # same source points, bilinear weights rounded differently
    # Flipping the crop again (a pure mirror about its centre) restores it exactly.
    twice = crop_image(flipped, [OUT / 2, OUT / 2], OUT / 200, OUT, flip=True)
    np.testing.assert_array_equal(twice, plain[:, ::-1][:, ::-1])
    np.testing.assert_array_equal(twice, plain)


def test_crop_then_uncrop_image_round_trip():
    image = _smooth_image()
    center, scale, rotation = np.array([170.0, 120.0]), 0.5, 25.0  # 100 px box -> 128 px
    crop = crop_image(image, center, scale, 128, rotation)
    back = uncrop_image(crop, center, scale, (320, 240), rotation)
    # compare inside the rotated box, away from its borders
    rows, cols = np.mgrid[0:240, 0:320] + 0.5
    in_crop = transform_points(
        np.stack([cols, rows], -1), crop_transform(center, scale, 128, rotation)
    )
    inside = ((in_crop > 4) & (in_crop < 124)).all(axis=-1)
    assert inside.sum() > 5000
    diff = np.abs(back.astype(int) - image.astype(int))[inside]
    assert diff.mean() < 1.5 and diff.max() <= 6
    outside = ((in_crop < -2) | (in_crop > 130)).any(axis=-1)
    assert outside.sum() > 5000 and (back[outside] == 0).all()


def test_crop_outside_the_image_is_black():
    image = np.full((240, 320, 3), 200, np.uint8)
    crop = crop_image(image, [0.0, 0.0], 1.0, OUT)  # box centred on the top-left corner
    assert (crop[: OUT // 2 - 1, :] == 0).all() and (crop[:, : OUT // 2 - 1] == 0).all()
    assert (crop[OUT // 2 + 1 :, OUT // 2 + 1 :] == 200).all()


def test_warp_image_rejects_non_rgb():
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        warp_image(np.zeros((10, 10), np.uint8), np.eye(2, 3), 8)


# --- keypoints, joints and poses: flips -----------------------------------------------------


def test_gt24_flip_permutation_is_the_tail_of_spin49():
    tail = [i - 25 for i in flip_permutation("spin49")[25:]]
    assert flip_permutation(SPIN_GT_24) == tail
    assert SPIN_GT_24.joint_names == SPIN_49.joint_names[25:]


@pytest.mark.parametrize("as_torch", [False, True])
def test_flips_twice_are_identity(as_torch):
    rng = np.random.default_rng(4)
    keypoints = rng.normal(size=(2, 49, 3))
    joints = rng.normal(size=(2, 24, 4))
    pose = rng.normal(size=(2, 72))
    if as_torch:
        keypoints, joints, pose = map(torch.from_numpy, (keypoints, joints, pose))
    for flip, x in (
        (flip_keypoints, keypoints),
        (flip_joints_3d, joints),
        (flip_pose_rotvecs, pose),
    ):
        once = flip(x)
        assert type(once) is type(x)
        assert not np.allclose(np.asarray(once), np.asarray(x))
        np.testing.assert_allclose(np.asarray(flip(once)), np.asarray(x))


def test_flip_keypoints_swaps_sides_and_mirrors_x():
    keypoints = np.zeros((49, 3))
    right_wrist, left_wrist = SPIN_49.index("Right Wrist"), SPIN_49.index("Left Wrist")
    keypoints[right_wrist] = [0.3, 0.2, 0.7]
    flipped = flip_keypoints(keypoints)
    np.testing.assert_allclose(flipped[left_wrist], [-0.3, 0.2, 0.7])
    np.testing.assert_allclose(flipped[right_wrist], 0.0)
    with pytest.raises(ValueError, match="spin49"):
        flip_keypoints(np.zeros((24, 3)))


def _mirror_joints(joints, convention):
    return joints[..., flip_permutation(convention), :] * torch.tensor([-1.0, 1.0, 1.0])


def test_flipped_pose_poses_the_mirrored_body(body_model):
    torch.manual_seed(0)
    pose = torch.randn(4, 72, dtype=torch.float64) * 0.4
    betas = torch.randn(4, 10, dtype=torch.float64)
    out = body_model(pose_rotvecs=pose, betas=betas)
    flipped = body_model(pose_rotvecs=flip_pose_rotvecs(pose), betas=betas)
    mirrored = _mirror_joints(out.joints_spin, "spin49")
    error = (flipped.joints_spin - mirrored).norm(dim=-1).max()
    # The open model is left/right symmetric to about a centimetre.
    assert error < 0.03
    # Negating other axis-angle components is far off: the check has teeth.
    wrong = pose.reshape(4, 24, 3)[:, flip_permutation("smpl24")] * torch.tensor([-1.0, 1, -1])
    wrong_out = body_model(pose_rotvecs=wrong.reshape(4, 72), betas=betas)
    assert (wrong_out.joints_spin - mirrored).norm(dim=-1).max() > 10 * error


# --- rotations ----------------------------------------------------------------------------


def test_rotated_pose_poses_the_rotated_body(body_model):
    torch.manual_seed(1)
    pose = torch.randn(3, 72, dtype=torch.float64) * 0.4
    betas = torch.randn(3, 10, dtype=torch.float64)
    rotation = 35.0
    out = body_model(pose_rotvecs=pose, betas=betas)
    rotated = body_model(pose_rotvecs=rotate_pose_rotvecs(pose, rotation), betas=betas)

    def root_relative(joints):
        return joints - joints[:, :1]

    expected = rotate_joints_3d(root_relative(out.joints_smpl), rotation)
    torch.testing.assert_close(root_relative(rotated.joints_smpl), expected)


def test_rotated_joints_project_onto_rotated_keypoints():
    rng = np.random.default_rng(5)
    joints = np.concatenate(
        [rng.uniform(-0.8, 0.8, (24, 2)), rng.uniform(4.0, 5.0, (24, 1)), np.ones((24, 1))], -1
    )
    intrinsics = np.array([[500.0, 0, 150.0], [0, 500.0, 118.0], [0, 0, 1]])
    pixels = perspective_projection(torch.from_numpy(joints[:, :3]), torch.from_numpy(intrinsics))
    for rotation, flip in ((30.0, False), (-45.0, True)):
        affine = crop_transform(CENTER, SCALE, OUT, rotation, flip)
        expected = transform_points(pixels.numpy(), affine)
        augmented = rotate_joints_3d(joints, rotation)
        if flip:
            augmented = flip_joints_3d(augmented)
            expected = expected[flip_permutation(SPIN_GT_24)]
        camera = crop_camera_intrinsics(intrinsics, affine, rotation, flip)
        assert abs(camera[0, 1]) < 1e-9 and abs(camera[1, 0]) < 1e-9
        assert camera[0, 0] == pytest.approx(camera[1, 1])
        projected = perspective_projection(
            torch.from_numpy(augmented[:, :3]), torch.from_numpy(camera)
        ).numpy()
        np.testing.assert_allclose(projected, expected, atol=1e-9)
        np.testing.assert_array_equal(augmented[:, 3], joints[:, 3])


def test_inplane_rotation_is_a_rotation_about_z():
    matrix = inplane_rotation_matrix(30.0)
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(matrix) == pytest.approx(1.0)
    np.testing.assert_allclose(matrix[2], [0, 0, 1])
    np.testing.assert_allclose(matrix @ inplane_rotation_matrix(-30.0), np.eye(3), atol=1e-12)


@pytest.mark.parametrize("as_torch", [False, True])
def test_unaugment_pose_undoes_augment_pose(as_torch):
    pose = np.random.default_rng(6).normal(scale=0.5, size=(5, 72))
    if as_torch:
        pose = torch.from_numpy(pose)
    augmented = augment_pose_rotvecs(pose, 41.0, True)
    back = unaugment_pose_rotvecs(augmented, 41.0, True)
    assert type(back) is type(pose)
    np.testing.assert_allclose(np.asarray(back), np.asarray(pose), atol=1e-9)
    with pytest.raises(ValueError, match=r"\(\.\.\., 72\)"):
        flip_pose_rotvecs(np.zeros((5, 69)))


# --- random augmentation ------------------------------------------------------------------


def test_sampled_augmentation_follows_spin_ranges():
    config = AugmentationConfig()
    rng = np.random.default_rng(7)
    params = [sample_augmentation(config, rng) for _ in range(4000)]
    rotations = np.array([p.rotation_deg for p in params])
    scales = np.array([p.scale_factor for p in params])
    noise = np.array([p.pixel_noise for p in params])
    flips = np.array([p.flip for p in params])
    assert np.abs(rotations).max() <= 60.0 and np.abs(rotations).max() > 50.0
    assert abs((rotations == 0).mean() - 0.6) < 0.03
    assert abs(np.std(rotations[rotations != 0]) - 30.0) < 3.0
    assert scales.min() >= 0.75 and scales.max() <= 1.25
    assert (scales == 0.75).mean() > 0.1  # clipped at one standard deviation
    assert noise.min() >= 0.6 and noise.max() <= 1.4
    assert abs(flips.mean() - 0.5) < 0.03


def test_disabled_augmentation_is_identity():
    params = sample_augmentation(AugmentationConfig(enabled=False), np.random.default_rng(0))
    assert params == identity_params()
    assert params == AugmentationParams(False, 0.0, 1.0, (1.0, 1.0, 1.0))


@pytest.mark.parametrize(
    "field, value", [("flip_prob", 1.5), ("noise_factor", 1.0), ("rot_factor", -1.0)]
)
def test_invalid_config_is_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        AugmentationConfig(**{field: value})


def test_crop_transform_validates_inputs():
    with pytest.raises(ValueError, match="scale"):
        crop_transform(CENTER, 0.0, OUT)
    with pytest.raises(ValueError, match="center"):
        crop_transform([1.0, 2.0, 3.0], 1.0, OUT)
    assert math.isfinite(crop_transform(CENTER, 1e-3, OUT).sum())
