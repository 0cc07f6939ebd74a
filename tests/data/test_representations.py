"""Intermediate input representations: part maps cropped like the image (flips swap sides),
keypoint heatmaps peaking at the augmented keypoints."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import spin.body
from spin.body.joint_conventions import SMPL_24, flip_permutation
from spin.data.augment import (
    SPIN_GT_24,
    AugmentationParams,
    crop_normalized_to_pixels,
    crop_transform,
    identity_params,
    warp_image,
)
from spin.data.representations import (
    MID_HIP_ABOVE_HIPS,
    NECK_ABOVE_SHOULDERS,
    complete_openpose_torso,
    flip_part_labels,
    heatmap_keypoints,
    input_channels,
    input_to_rgb,
    read_part_map,
)
from spin.data.spin_dataset import DatasetFormatError, SpinDataset

OPEN_LITE = Path(spin.body.__file__).parent / "assets" / "open_lite.npz"
SIZE = 96
BACKGROUND = (255, 0, 255)  # a colour no person is dressed in
PERSON_COLOUR_DISTANCE = 100  # pixels this far from the background colour show the person
FLIPPED_AND_ROTATED = AugmentationParams(
    flip=True, rotation_deg=35.0, scale_factor=0.8, pixel_noise=(1, 1, 1)
)
AUGMENTATIONS = [
    identity_params(),
    FLIPPED_AND_ROTATED,
    AugmentationParams(flip=False, rotation_deg=-50.0, scale_factor=1.2, pixel_noise=(1, 1, 1)),
]


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    """Three synthetic people over a flat magenta background, with their part maps."""
    if not OPEN_LITE.exists():
        pytest.skip(f"{OPEN_LITE} not built yet (tools/build_open_body_model.py)")
    from spin.data.synthetic import SyntheticConfig, generate_synthetic

    out = tmp_path_factory.mktemp("synthetic_parts")
    backgrounds = out / "backgrounds"
    backgrounds.mkdir()
    Image.fromarray(np.full((32, 32, 3), BACKGROUND, np.uint8)).save(backgrounds / "flat.png")
    config = SyntheticConfig(
        image_size=(SIZE, SIZE),
        body_model="open-lite",
        truncation_prob=0.0,
        background_dir=str(backgrounds),
        background_image_prob=1.0,
        background_blur_max_px=0.0,
        image_noise_std_max=0.0,
        fraction_3d=1.0,
        seed=1,
    )
    generate_synthetic(config, 3, out, split="train", progress=False)
    return out


def _datasets(folder: Path, **kwargs):
    common = {"img_size": SIZE, "is_train": False, **kwargs}
    rgb = SpinDataset(folder / "train.npz", folder, **common)
    parts = SpinDataset(
        folder / "train.npz",
        folder,
        input_representation="part_segmentation",
        part_maps=folder / "parts",
        **common,
    )
    return rgb, parts


@pytest.mark.parametrize("params", AUGMENTATIONS, ids=["identity", "flip_rotate", "rotate"])
def test_part_map_crop_covers_the_person_in_the_image_crop(synthetic_dir, params):
    rgb, parts = _datasets(synthetic_dir)
    for index in range(len(rgb)):
        image = input_to_rgb(rgb.get(index, params=params)["img"], "rgb").astype(np.float64)
        one_hot = parts.get(index, params=params)["img"]
        assert one_hot.shape == (25, SIZE, SIZE)
        assert torch.equal(one_hot.sum(0), torch.ones(SIZE, SIZE))  # one label per pixel
        body = one_hot.argmax(0).numpy() > 0
        # Compare only inside the original image (the crop is black beyond it).
        affine = crop_transform(
            rgb.center[index],
            rgb.scale[index] * params.scale_factor,
            SIZE,
            params.rotation_deg,
            params.flip,
        )
        inside = warp_image(np.full((SIZE, SIZE, 3), 255, np.uint8), affine, SIZE)[..., 0] > 128
        distance = np.linalg.norm(image - BACKGROUND, axis=-1)
        person = (distance > PERSON_COLOUR_DISTANCE) & inside
        body &= inside
        iou = (person & body).sum() / (person | body).sum()
        # Aligned maps give 0.85-0.94 at this size; a 2 px shift or a missing flip far less.
        assert iou > 0.8, (index, iou)


@pytest.mark.parametrize("params", AUGMENTATIONS[:2], ids=["identity", "flip_rotate"])
def test_limb_keypoints_land_on_parts_of_their_own_side(synthetic_dir, params):
    """After a flip the keypoints swap left and right: so must the part labels."""
    _, parts = _datasets(synthetic_dir)
    side = {part + 1: name.split("_")[0] for part, name in enumerate(SMPL_24.joint_names)}
    limbs = [
        i
        for i, name in enumerate(SPIN_GT_24.joint_names)
        if name.split()[0] in ("Left", "Right")
        and name.split()[1] in ("Ankle", "Knee", "Wrist", "Elbow")
    ]
    same = other = 0
    for index in range(len(parts)):
        item = parts.get(index, params=params)
        labels = item["img"].argmax(0).numpy()
        pixels = crop_normalized_to_pixels(item["keypoints"][25:].numpy(), SIZE)
        for joint in limbs:
            x, y = np.floor(pixels[joint, :2]).astype(int)
            if not (0 <= x < SIZE and 0 <= y < SIZE):
                continue
            label_side = side[int(labels[y, x])] if labels[y, x] else None
            if label_side in ("left", "right"):
                wanted = SPIN_GT_24.joint_names[joint].split()[0].lower()
                same += label_side == wanted
                other += label_side != wanted
    assert same >= 10 and same >= 0.85 * (same + other), (same, other)


def test_flipping_the_crop_mirrors_the_part_map_and_swaps_its_labels(synthetic_dir):
    _, parts = _datasets(synthetic_dir)
    plain = AugmentationParams(
        flip=False, rotation_deg=20.0, scale_factor=1.0, pixel_noise=(1,) * 3
    )
    flipped = AugmentationParams(
        flip=True, rotation_deg=20.0, scale_factor=1.0, pixel_noise=(1,) * 3
    )
    a = parts.get(0, params=plain)["img"].argmax(0).numpy()
    b = parts.get(0, params=flipped)["img"].argmax(0).numpy()
    assert np.mean(b == flip_part_labels(np.fliplr(a))) > 0.999
    assert (flip_part_labels(flip_part_labels(a)) == a).all()
    assert set(np.unique(b)) - {0} and not np.array_equal(b, np.fliplr(a))


def test_missing_part_maps_are_named_or_skipped(synthetic_dir, tmp_path):
    npz = synthetic_dir / "train.npz"
    with pytest.raises(ValueError, match="needs a folder of part maps"):
        SpinDataset(npz, synthetic_dir, input_representation="part_segmentation")
    with pytest.raises(DatasetFormatError, match="3 part map"):
        SpinDataset(
            npz, synthetic_dir, input_representation="part_segmentation", part_maps=tmp_path
        )
    # One map present (the mirrored layout), the others skipped at load time.
    (tmp_path / "images").mkdir()
    part_map = np.asarray(Image.open(synthetic_dir / "parts" / "train_000001.png"))
    Image.fromarray(part_map).save(tmp_path / "images" / "train_000001.png")
    with pytest.warns(UserWarning, match="2 part map"):
        dataset = SpinDataset(
            npz,
            synthetic_dir,
            img_size=SIZE,
            input_representation="part_segmentation",
            part_maps=tmp_path,
            allow_missing=True,
        )
    item = dataset[0]
    assert item["sample_index"] == 1 and dataset.skipped == 1


def test_colour_part_maps_are_refused(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="single-channel"):
        read_part_map(tmp_path / "rgb.png")
    Image.fromarray(np.full((4, 4), 30, np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(ValueError, match="labels up to 30"):
        read_part_map(tmp_path / "big.png")


# --- keypoint heatmaps -----------------------------------------------------------------------


@pytest.mark.parametrize("params", AUGMENTATIONS, ids=["identity", "flip_rotate", "rotate"])
def test_heatmaps_peak_at_the_augmented_keypoints(tiny_dataset_path, params):
    npz, folder = tiny_dataset_path
    size = 64
    dataset = SpinDataset(
        npz, folder, img_size=size, is_train=False, input_representation="keypoint_heatmaps"
    )
    item = dataset.get(0, params=params)
    heatmaps = item["img"].numpy()
    assert heatmaps.shape == (25, size, size) and item["img"].dtype == torch.float32
    keypoints = crop_normalized_to_pixels(item["keypoints"][:25].numpy(), size)  # OpenPose
    checked = 0
    for channel, (x, y, confidence) in enumerate(keypoints):
        if confidence <= 0:
            assert heatmaps[channel].max() == 0  # undetected: an empty channel
            continue
        if not (1 <= x < size - 1 and 1 <= y < size - 1):
            continue
        row, col = np.unravel_index(heatmaps[channel].argmax(), (size, size))
        assert abs(col + 0.5 - x) <= 0.5 + 1e-6 and abs(row + 0.5 - y) <= 0.5 + 1e-6
        assert 0.8 * confidence < heatmaps[channel].max() <= confidence
        checked += 1
    assert checked >= 15


def test_flipped_heatmaps_are_mirrored_with_sides_swapped(tiny_dataset_path):
    npz, folder = tiny_dataset_path
    dataset = SpinDataset(
        npz, folder, img_size=64, is_train=False, input_representation="keypoint_heatmaps"
    )
    plain = AugmentationParams(
        flip=False, rotation_deg=10.0, scale_factor=1.0, pixel_noise=(1,) * 3
    )
    flipped = AugmentationParams(
        flip=True, rotation_deg=10.0, scale_factor=1.0, pixel_noise=(1,) * 3
    )
    a = dataset.get(1, params=plain)["img"]
    b = dataset.get(1, params=flipped)["img"]
    mirrored = a[flip_permutation("openpose25")].flip(-1)
    assert torch.allclose(b, mirrored, atol=1e-5)


def test_heatmaps_fall_back_to_the_ground_truth_keypoints():
    rng = np.random.default_rng(0)
    keypoints = np.concatenate([rng.uniform(-1, 1, (49, 2)), np.ones((49, 1))], axis=1)
    assert np.array_equal(heatmap_keypoints(keypoints), keypoints[:25])
    keypoints[:25] = 0.0  # no detections: the ground-truth block's shared points
    selected = heatmap_keypoints(keypoints)
    gt = {name: keypoints[25 + i] for i, name in enumerate(SPIN_GT_24.joint_names)}
    assert np.array_equal(selected[0], gt["Nose"])  # BODY_25: 0 Nose
    assert np.array_equal(selected[4], gt["Right Wrist"])  # 4 RWrist
    assert np.array_equal(selected[14], gt["Left Ankle"])  # 14 LAnkle
    # OpenPose's hips are the dataset hips, its neck and mid-hip made from them and the
    # shoulders (complete_openpose_torso); the feet are other points: left empty.
    assert np.array_equal(selected[9], gt["Right Hip"])
    assert np.array_equal(selected[12], gt["Left Hip"])
    assert (selected[[1, 8], 2] == 1).all()
    assert (selected[[19, 20, 21, 22, 23, 24], 2] == 0).all()
    assert (selected[:, 2] > 0).sum() == 19


@pytest.fixture(scope="module")
def sampled_joints_2d():
    """Exact SPIN-49 joints of 2,000 people of the body sampler (open model), perspective
    projection with the hips 5 m in front of the camera: ``(N, 49, 2)``."""
    from spin.body import load_body_model
    from spin.body.sparse import SparseJointModel
    from spin.data.endless import sample_people
    from spin.data.synthetic import SyntheticConfig

    people = sample_people(np.random.default_rng(0), SyntheticConfig(body_model="open"), 2000)
    joint_model = SparseJointModel(load_body_model("open").double())
    joints = joint_model(
        pose_rotvecs=torch.from_numpy(people.pose), betas=torch.from_numpy(people.betas)
    ).joints_spin.numpy()
    joints = joints - joints[:, DATASET_HIPS].mean(axis=1, keepdims=True) + [0.0, 0.0, 5.0]
    return joints[..., :2] / joints[..., 2:]


DATASET_HIPS = [25 + 2, 25 + 3]  # SPIN-49 "Right Hip", "Left Hip"


def test_torso_constants_are_the_body_models_least_squares_fit(sampled_joints_2d):
    uv = sampled_joints_2d
    mid_shoulders, mid_hips = uv[:, [2, 5]].mean(axis=1), uv[:, DATASET_HIPS].mean(axis=1)
    up = mid_shoulders - mid_hips
    for joint, base, constant in ((1, mid_shoulders, NECK_ABOVE_SHOULDERS),
                                  (8, mid_hips, MID_HIP_ABOVE_HIPS)):  # fmt: skip
        offset = uv[:, joint] - base
        fitted = (offset * up).sum() / (up * up).sum()
        assert fitted == pytest.approx(constant, abs=0.005)


def test_missing_openpose_torso_is_made_from_hips_and_shoulders(sampled_joints_2d):
    """MediaPipe-like keypoints (no neck, mid-hip or OpenPose hips) get them back within a
    few % of the torso, several times closer than plain midpoints; keypoints with any of the
    four are left alone."""
    uv = sampled_joints_2d
    keypoints = np.concatenate([uv, np.ones(uv.shape[:2] + (1,))], axis=2)
    detector = keypoints.copy()
    detector[:, [1, 8, 9, 12]] = 0.0
    completed = np.stack([heatmap_keypoints(k) for k in detector])
    torso = np.linalg.norm(uv[:, [2, 5]].mean(axis=1) - uv[:, DATASET_HIPS].mean(axis=1), axis=1)
    for joint, plain in ((1, uv[:, [2, 5]].mean(axis=1)), (8, uv[:, DATASET_HIPS].mean(axis=1))):
        error = np.linalg.norm(completed[:, joint, :2] - uv[:, joint], axis=1) / torso
        plain_error = np.linalg.norm(plain - uv[:, joint], axis=1) / torso
        assert np.median(error) < 0.05 and np.median(error) < np.median(plain_error) / 3
    hips_error = np.linalg.norm(completed[:, [9, 12], :2] - uv[:, [9, 12]], axis=2) / torso[:, None]
    assert np.median(hips_error) < 0.1
    assert (completed[:, [1, 8, 9, 12], 2] == 1).all()
    # One OpenPose torso point present: nothing is made up.
    detector[:, 9] = keypoints[:, 9]
    assert np.array_equal(np.stack([heatmap_keypoints(k) for k in detector]), detector[:, :25])


def test_torso_points_need_both_hips_and_shoulders_and_take_the_lowest_confidence():
    openpose, hips = np.zeros((25, 3)), np.array([[0.1, 0.5, 0.9], [-0.1, 0.5, 0.0]])
    openpose[[2, 5]] = [[0.2, -0.3, 0.8], [-0.2, -0.3, 0.6]]
    out = complete_openpose_torso(openpose, hips)
    assert np.array_equal(out[9], hips[0]) and (out[[1, 8, 12], 2] == 0).all()
    hips[1, 2] = 0.7
    out = complete_openpose_torso(openpose, hips)
    assert out[1, 2] == out[8, 2] == 0.6
    np.testing.assert_allclose(out[8, :2], [0.0, 0.5 + MID_HIP_ABOVE_HIPS * -0.8])
    np.testing.assert_allclose(out[1, :2], [0.0, -0.3 + NECK_ABOVE_SHOULDERS * -0.8])


def test_input_to_rgb_shows_every_representation():
    assert [input_channels(r) for r in ("rgb", "part_segmentation", "keypoint_heatmaps")] == [
        3,
        25,
        25,
    ]
    labels = torch.randint(0, 25, (8, 8))
    one_hot = torch.nn.functional.one_hot(labels, 25).permute(2, 0, 1).float()
    for representation, img in (
        ("rgb", torch.zeros(3, 8, 8)),
        ("part_segmentation", one_hot),
        ("keypoint_heatmaps", torch.rand(25, 8, 8)),
    ):
        picture = input_to_rgb(img, representation)
        assert picture.shape == (8, 8, 3) and picture.dtype == np.uint8
    with pytest.raises(ValueError, match=r"\(25, S, S\)"):
        input_to_rgb(torch.zeros(3, 8, 8), "part_segmentation")


def test_keypoint_vector_holds_seen_keypoints_and_zeros_for_unseen():
    from spin.data.representations import KEYPOINT_RANGE, keypoint_vector

    keypoints = np.array([[0.5, -0.25, 0.9], [10.0, -10.0, 1.0], [0.3, 0.3, 0.0]])
    vector = keypoint_vector(keypoints)
    assert vector.shape == (9, 1, 1) and vector.dtype == torch.float32
    np.testing.assert_allclose(
        vector.reshape(3, 3).numpy(),
        [[0.5, -0.25, 1.0], [KEYPOINT_RANGE, -KEYPOINT_RANGE, 1.0], [0.0, 0.0, 0.0]],
    )
    picture = input_to_rgb(torch.zeros(75, 1, 1), "keypoints")
    assert picture.shape[0] >= 192 and picture.max() == 0  # nothing seen: black


def test_keypoints_representation_follows_the_augmented_keypoints(tiny_dataset_path):
    from spin.data.representations import heatmap_keypoints, keypoint_vector

    npz, folder = tiny_dataset_path
    dataset = SpinDataset(npz, folder, img_size=64, input_representation="keypoints")
    params = AugmentationParams(
        flip=True, rotation_deg=20.0, scale_factor=0.9, pixel_noise=(1, 1, 1)
    )
    item = dataset.get(1, params=params)
    expected = keypoint_vector(heatmap_keypoints(item["keypoints"].numpy()))
    assert item["img"].shape == (75, 1, 1)
    torch.testing.assert_close(item["img"], expected)
