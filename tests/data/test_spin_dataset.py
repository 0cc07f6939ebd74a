import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from spin.body.joint_conventions import SPIN49_FROM_SMPL_OUTPUT, flip_permutation
from spin.data.augment import (
    SPIN_GT_24,
    AugmentationConfig,
    AugmentationParams,
    crop_image,
    crop_normalized_to_pixels,
    identity_params,
)
from spin.data.spin_dataset import DatasetFormatError, SpinDataset, denormalize_image
from spin.geometry import perspective_projection
from tests.data.conftest import NO_3D_SAMPLE, NUM_SAMPLES, joint_colours

SIZE = 64
PELVIS_GT = 14  # "Pelvis (MPII)" in the 24 ground-truth joints

AUGMENTATIONS = [
    identity_params(),
    AugmentationParams(flip=False, rotation_deg=25.0, scale_factor=1.1, pixel_noise=(1, 1, 1)),
    AugmentationParams(flip=True, rotation_deg=0.0, scale_factor=0.8, pixel_noise=(1, 1, 1)),
    AugmentationParams(flip=True, rotation_deg=-55.0, scale_factor=1.25, pixel_noise=(1, 1, 1)),
]


def _dataset(paths, **kwargs):
    npz, folder = paths
    kwargs.setdefault("img_size", SIZE)
    return SpinDataset(npz, folder, name="tiny", **kwargs)


def test_item_has_the_documented_keys_shapes_and_types(tiny_dataset_path):
    item = _dataset(tiny_dataset_path)[0]
    shapes = {
        "img": (3, SIZE, SIZE),
        "keypoints": (49, 3),
        "keypoints_orig": (49, 3),
        "pose": (72,),
        "betas": (10,),
        "pose_3d": (24, 4),
        "has_smpl": (),
        "has_pose_3d": (),
        "center": (2,),
        "scale": (),
        "orig_shape": (2,),
        "is_flipped": (),
        "rot_angle": (),
        "scale_factor": (),
        "pixel_noise": (3,),
        "intrinsics": (3, 3),
        "crop_intrinsics": (3, 3),
        "transl": (3,),
    }
    for key, shape in shapes.items():
        assert isinstance(item[key], torch.Tensor), key
        assert tuple(item[key].shape) == shape, key
    assert item["img"].dtype == torch.float32
    assert item["orig_shape"].tolist() == [240, 320]
    assert item["sample_index"] == 0 and item["requested_index"] == 0
    assert item["dataset_name"] == "tiny" and item["imgname"] == "images/000.png"


def test_collates_into_batches(tiny_dataset_path):
    batch = next(iter(DataLoader(_dataset(tiny_dataset_path), batch_size=NUM_SAMPLES)))
    assert batch["img"].shape == (NUM_SAMPLES, 3, SIZE, SIZE)
    assert batch["sample_index"].tolist() == list(range(NUM_SAMPLES))
    assert batch["dataset_name"] == ["tiny"] * NUM_SAMPLES


def test_evaluation_items_are_not_augmented(tiny_dataset_path, tiny_arrays):
    dataset = _dataset(tiny_dataset_path, is_train=False)
    for index in range(NUM_SAMPLES):
        item = dataset[index]
        assert not item["is_flipped"] and item["rot_angle"] == 0 and item["scale_factor"] == 1
        stored = np.concatenate([tiny_arrays["openpose"], tiny_arrays["part"]], axis=1)[index]
        np.testing.assert_allclose(item["keypoints_orig"].numpy(), stored, rtol=1e-6)
        np.testing.assert_allclose(item["pose"].numpy(), tiny_arrays["pose"][index], rtol=1e-6)
    assert dataset[NO_3D_SAMPLE]["has_pose_3d"] == 0 and dataset[NO_3D_SAMPLE]["has_smpl"] == 0
    assert (dataset[NO_3D_SAMPLE]["pose_3d"] == 0).all()
    assert dataset[0]["has_pose_3d"] == 1 and dataset[0]["has_smpl"] == 1


@pytest.mark.parametrize("params", AUGMENTATIONS)
def test_augmented_3d_joints_project_onto_augmented_keypoints(tiny_dataset_path, params):
    """Acceptance: after rotation, scale and flip the 3D ground truth still projects onto
    the 2D keypoints (< 1 px in crop pixels) through the crop camera."""
    dataset = _dataset(tiny_dataset_path)
    for index in range(NO_3D_SAMPLE):
        item = dataset.get(index, params=params)
        assert bool(item["is_flipped"]) == params.flip
        keypoints = crop_normalized_to_pixels(item["keypoints"].double(), SIZE)
        projected = perspective_projection(
            item["pose_3d"][:, :3].double(), item["crop_intrinsics"].double()
        )
        error = (projected - keypoints[25:, :2]).norm(dim=-1)
        assert error.max() < 1.0, f"sample {index}: {error.max():.3f} px"
        assert error.max() < 1e-2  # in fact exact up to float32 rounding


def test_openpose_and_ground_truth_blocks_flip_together(tiny_dataset_path):
    # In the fixture both blocks come from the same body joints, so joints that denote
    # the same SMPL joint must stay together after any augmentation.
    pairs = [
        (i, j)
        for i in range(25)
        for j in range(25, 49)
        if SPIN49_FROM_SMPL_OUTPUT[i] == SPIN49_FROM_SMPL_OUTPUT[j]
    ]
    assert len(pairs) >= 12
    dataset = _dataset(tiny_dataset_path)
    for params in AUGMENTATIONS:
        keypoints = dataset.get(0, params=params)["keypoints"]
        for i, j in pairs:
            if keypoints[i, 2] > 0:
                torch.testing.assert_close(keypoints[i], keypoints[j])


@pytest.mark.parametrize("params", AUGMENTATIONS[1:])
def test_augmented_pose_poses_the_augmented_3d_joints(tiny_dataset_path, body_model, params):
    dataset = _dataset(tiny_dataset_path)
    item = dataset.get(0, params=params)
    out = body_model(pose_rotvecs=item["pose"].double()[None], betas=item["betas"].double()[None])
    joints = out.joints_spin[0, 25:]
    target = item["pose_3d"][:, :3].double()
    error = ((joints - joints[PELVIS_GT]) - (target - target[PELVIS_GT])).norm(dim=-1).max()
    # exact up to float32 without a flip; the open model is symmetric to ~1 cm
    assert error < (0.03 if params.flip else 1e-4)


def test_image_shows_each_joint_blob_at_its_augmented_keypoint(tiny_dataset_path, tiny_arrays):
    size = 160  # large enough for the blobs to keep a pure-colour centre
    dataset = _dataset(tiny_dataset_path, img_size=size)
    colours = joint_colours(24).astype(int)
    for params in AUGMENTATIONS:
        for index in range(NUM_SAMPLES):
            part = tiny_arrays["part"][index, :, :2]
            distance = np.linalg.norm(part[:, None] - part[None], axis=-1)
            np.fill_diagonal(distance, np.inf)
            isolated = np.flatnonzero(distance.min(axis=1) > 12)
            item = dataset.get(index, params=params)
            image = denormalize_image(item["img"]).astype(int)
            pixels = crop_normalized_to_pixels(item["keypoints"][25:].numpy(), size)
            # joint j of the augmented order is joint source[j] of the original image
            source = _source_joints(params.flip)
            checked = 0
            for j in range(24):
                if source[j] not in isolated:
                    continue
                x, y = np.floor(pixels[j, :2]).astype(int)
                if 0 <= x < size and 0 <= y < size:
                    assert np.abs(image[y, x] - colours[source[j]]).max() < 25
                    checked += 1
            assert checked >= 6


def _source_joints(flip):
    return flip_permutation(SPIN_GT_24) if flip else list(range(24))


def test_pixel_noise_scales_channels(tiny_dataset_path):
    dataset = _dataset(tiny_dataset_path)
    plain = denormalize_image(dataset.get(0, params=identity_params())["img"]).astype(float)
    noisy_params = AugmentationParams(False, 0.0, 1.0, (1.3, 0.7, 1.0))
    noisy = denormalize_image(dataset.get(0, params=noisy_params)["img"]).astype(float)
    expected = np.clip(plain * np.array([1.3, 0.7, 1.0]), 0, 255)
    assert np.abs(noisy - expected).max() <= 2


def test_denormalize_inverts_the_input_normalisation(tiny_dataset_path, tiny_arrays):
    npz, folder = tiny_dataset_path
    item = _dataset(tiny_dataset_path, is_train=False)[1]
    image = Image.open(folder / tiny_arrays["imgname"][1])
    expected = crop_image(image, tiny_arrays["center"][1], tiny_arrays["scale"][1], SIZE)
    assert np.abs(denormalize_image(item["img"]).astype(int) - expected).max() <= 1


# --- determinism --------------------------------------------------------------------------


def _params(item):
    return (bool(item["is_flipped"]), float(item["rot_angle"]), float(item["scale_factor"]))


def test_augmentation_is_deterministic_per_seed_epoch_and_index(tiny_dataset_path):
    config = AugmentationConfig(rot_zero_prob=0.0)
    first = _dataset(tiny_dataset_path, augmentation=config, seed=3)
    again = _dataset(tiny_dataset_path, augmentation=config, seed=3)
    other_seed = _dataset(tiny_dataset_path, augmentation=config, seed=4)
    a, b = first[1], again[1]
    torch.testing.assert_close(a["img"], b["img"], rtol=0, atol=0)
    torch.testing.assert_close(a["keypoints"], b["keypoints"], rtol=0, atol=0)
    assert _params(a) == _params(b)
    assert _params(other_seed[1]) != _params(a)
    assert _params(first[2]) != _params(a)  # per index
    first.set_epoch(1)
    assert _params(first[1]) != _params(a)  # per epoch
    first.set_epoch(0)
    assert _params(first[1]) == _params(a)
    assert first.augmentation_params(1, draw=5) != first.augmentation_params(1)


def test_disabled_augmentation_gives_identity(tiny_dataset_path):
    dataset = _dataset(tiny_dataset_path, augmentation=AugmentationConfig(enabled=False))
    assert all(dataset.augmentation_params(i) == identity_params() for i in range(NUM_SAMPLES))


# --- validation and bad samples ------------------------------------------------------------


def _rewrite(npz, change):
    arrays = dict(np.load(npz))
    change(arrays)
    np.savez(npz, **arrays)


def test_missing_key_is_named(tiny_dataset_path):
    npz, _ = tiny_dataset_path
    _rewrite(npz, lambda arrays: arrays.pop("center"))
    with pytest.raises(DatasetFormatError, match="'center'"):
        _dataset(tiny_dataset_path)


def test_inconsistent_length_is_named(tiny_dataset_path):
    npz, _ = tiny_dataset_path
    _rewrite(npz, lambda arrays: arrays.update(part=arrays["part"][:-1]))
    expected = r"key 'part' declares shape \(3, 24, 3\), expected \(4, 24, 3\) \(4 samples"
    with pytest.raises(DatasetFormatError, match=expected):
        _dataset(tiny_dataset_path)


def test_bad_scale_drops_the_sample_with_a_warning(tiny_dataset_path):
    npz, _ = tiny_dataset_path
    _rewrite(npz, lambda arrays: arrays["scale"].__setitem__(2, 0.0))
    with pytest.warns(UserWarning, match="sample 2, box side 0 px"):
        dataset = _dataset(tiny_dataset_path)
    assert set(dataset.bad_boxes) == {2}
    assert dataset[2]["sample_index"] == 3  # replaced by the next usable sample, counted
    assert dataset.skipped == 1 and "unusable box" in dataset.summary()
    _rewrite(npz, lambda arrays: arrays["scale"].__setitem__(slice(None), 0.0))
    with pytest.raises(DatasetFormatError, match="no sample has a usable box"):
        _dataset(tiny_dataset_path)


def test_object_arrays_need_allow_pickle(tiny_dataset_path):
    npz, _ = tiny_dataset_path
    _rewrite(npz, lambda arrays: arrays.update(imgname=arrays["imgname"].astype(object)))
    with pytest.raises(DatasetFormatError, match="allow_pickle"):
        _dataset(tiny_dataset_path)
    assert len(_dataset(tiny_dataset_path, allow_pickle=True)) == NUM_SAMPLES


def test_optional_keys_read_as_zeros(tiny_dataset_path):
    npz, _ = tiny_dataset_path
    keep = ("imgname", "center", "scale")
    _rewrite(npz, lambda arrays: [arrays.pop(k) for k in list(arrays) if k not in keep])
    item = _dataset(tiny_dataset_path)[0]
    assert (item["keypoints"][:, 2] == 0).all() and (item["pose"] == 0).all()
    assert item["has_smpl"] == 0 and item["has_pose_3d"] == 0
    assert "intrinsics" not in item and "transl" not in item


def test_missing_image_raises_at_construction(tiny_dataset_path):
    _, folder = tiny_dataset_path
    (folder / "images/002.png").unlink()
    with pytest.raises(DatasetFormatError, match=r"1 image file\(s\) missing.*images/002.png"):
        _dataset(tiny_dataset_path)


def test_missing_image_is_skipped_when_allowed(tiny_dataset_path):
    _, folder = tiny_dataset_path
    (folder / "images/002.png").unlink()
    with pytest.warns(UserWarning, match="002.png"):
        dataset = _dataset(tiny_dataset_path, allow_missing=True)
    item = dataset[2]
    assert item["sample_index"] == 3 and item["requested_index"] == 2
    assert dataset.skipped == 1
    assert "images/002.png (missing, 1x)" in dataset.summary()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_image_is_skipped_counted_and_warned_once(tiny_dataset_path, damage):
    _, folder = tiny_dataset_path
    path = folder / "images/001.png"
    data = path.read_bytes()
    path.write_bytes(b"\x00not an image at all" * 10 if damage == "garbage" else data[:200])
    dataset = _dataset(tiny_dataset_path)  # exists, so construction passes
    with pytest.warns(UserWarning, match="001.png"):
        item = dataset[1]
    assert item["sample_index"] == 2 and item["requested_index"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning for the same file
        dataset[1]
    assert dataset.skipped == 2 and dataset.skipped_files == {"images/001.png": 2}
    assert "images/001.png (corrupt" in dataset.summary()
    assert dataset[0]["sample_index"] == 0 and dataset.skipped == 2


def test_last_sample_wraps_around_and_all_bad_raises(tiny_dataset_path):
    _, folder = tiny_dataset_path
    (folder / f"images/{NUM_SAMPLES - 1:03d}.png").write_bytes(b"garbage")
    dataset = _dataset(tiny_dataset_path)
    with pytest.warns(UserWarning):
        assert dataset[NUM_SAMPLES - 1]["sample_index"] == 0
    for index in range(NUM_SAMPLES):
        (folder / f"images/{index:03d}.png").write_bytes(b"garbage")
    dataset = _dataset(tiny_dataset_path)
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="no readable image"):
        dataset[0]


def test_keep_3d_labels_hides_labels_on_a_nested_seeded_subset(tiny_dataset_path):
    def kept(fraction, seed=0):
        dataset = SpinDataset(*tiny_dataset_path, is_train=False)
        assert dataset.keep_3d_labels(fraction, seed=seed) == round(fraction * len(dataset))
        items = [dataset[i] for i in range(len(dataset))]
        labelled = {i for i, item in enumerate(items) if item["has_smpl"] > 0.5}
        with_3d = {i for i, item in enumerate(items) if item["has_pose_3d"] > 0.5}
        assert labelled == with_3d
        for i, item in enumerate(items):
            if i not in labelled and i != NO_3D_SAMPLE:  # hidden: as if never there
                assert not item["pose"].any() and not item["betas"].any()
                assert not item["pose_3d"].any()
        return labelled

    # The fixture has 3 labelled samples of 4: keep 0, 1, 2, 3 of them.
    subsets = [kept(k / NUM_SAMPLES) for k in range(NUM_SAMPLES)]
    assert [len(s) for s in subsets] == [0, 1, 2, 3]
    assert subsets[1] <= subsets[2] <= subsets[3]
    assert NO_3D_SAMPLE not in subsets[3]
    assert kept(0.5, seed=0) == kept(0.5, seed=0)
    with pytest.raises(ValueError, match="3D labels on 3 of 4"):
        kept(1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        kept(1.5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda arrays: arrays.pop("shape"), "pose is present without shape"),
        (lambda arrays: arrays.update(gender=np.array(["male"] * NUM_SAMPLES)), "gender"),
        (lambda arrays: arrays["part"].__setitem__((0, 0, 2), 0.5), "expected 0/1 values"),
        (lambda arrays: arrays.update(center=arrays["center"].astype(np.int64)), "center"),
    ],
)
def test_the_format_validator_refuses_what_it_refuses_elsewhere(tiny_dataset_path, change, message):
    """One validation of the format: SpinDataset refuses what spin.data.formats refuses
    (apart from DATASET_RULES), every problem listed."""
    npz, _ = tiny_dataset_path
    _rewrite(npz, change)
    with pytest.raises(DatasetFormatError, match=f"breaks the SPIN .npz format(.|\n)*{message}"):
        _dataset(tiny_dataset_path)
