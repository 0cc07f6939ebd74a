import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import spin.body
from spin.body import load_body_model
from spin.data.formats import validate_spin_npz
from spin.data.synthetic import (
    BACKGROUND_KINDS,
    TEST_SEED_OFFSET,
    SyntheticConfig,
    body_template,
    contact_sheet,
    detector_keypoints,
    generate_synthetic,
    has_3d_flags,
    hidden_parameters,
    image_background,
    joint_occlusion,
    procedural_background,
    split_seed,
)
from spin.geometry import perspective_projection
from spin.render.mesh_renderer import MeshRenderer

OPEN_LITE = Path(spin.body.__file__).parent / "assets" / "open_lite.npz"
pytestmark = pytest.mark.skipif(
    not OPEN_LITE.exists(), reason=f"{OPEN_LITE} not built yet (tools/build_open_body_model.py)"
)

SIZE = 96
NUM = 6
# Half the people partly outside the frame, so some joints are outside the image.
CONFIG = SyntheticConfig(
    image_size=(SIZE, SIZE), body_model="open-lite", truncation_prob=0.5, seed=7
)
OP = {"RShoulder": 2, "RElbow": 3, "RWrist": 4, "LShoulder": 5, "LElbow": 6, "LWrist": 7}
OP.update({"RKnee": 10, "RAnkle": 11, "LKnee": 13, "LAnkle": 14, "REar": 17, "LEar": 18})
LEFT_SHOULDER = 16  # SMPL joint; the right one is 17


def _files_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    path = generate_synthetic(CONFIG, NUM, out, split="train", progress=False)
    with np.load(path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    return out, path, arrays


@pytest.fixture(scope="module")
def model():
    return load_body_model("open-lite")


def test_writes_the_spin_format(dataset):
    out, path, arrays = dataset
    assert path == out / "train.npz"
    assert validate_spin_npz(arrays) == []
    shapes = {
        "imgname": (NUM,),
        "center": (NUM, 2),
        "scale": (NUM,),
        "part": (NUM, 24, 3),
        "openpose": (NUM, 25, 3),
        "S": (NUM, 24, 4),
        "pose": (NUM, 72),
        "shape": (NUM, 10),
        "transl": (NUM, 3),
        "has_smpl": (NUM,),
        "gender": (NUM,),
        "intrinsics": (NUM, 3, 3),
        "image_size": (NUM, 2),
    }
    for key, shape in shapes.items():
        assert arrays[key].shape == shape, key
    for key in ("center", "scale", "part", "openpose", "S", "pose", "shape", "intrinsics"):
        assert arrays[key].dtype == np.float64, key
    assert arrays["imgname"].dtype.kind == "U" and set(arrays["gender"]) == {"n"}
    assert (arrays["image_size"] == SIZE).all()
    for index, name in enumerate(arrays["imgname"]):
        assert name == f"images/train_{index:06d}.jpg"
        with Image.open(out / name) as image:
            assert image.format == "JPEG" and image.size == (SIZE, SIZE)
        part_map = np.asarray(Image.open(out / "parts" / f"train_{index:06d}.png"))
        assert part_map.shape == (SIZE, SIZE) and part_map.max() <= 24
    confidences = arrays["openpose"][..., 2]
    assert ((confidences >= 0) & (confidences <= 1)).all()
    assert set(np.unique(arrays["part"][..., 2])) <= {0.0, 1.0}
    assert (out / "train_config.json").is_file()


def test_part_is_the_projection_of_the_3d_joints(dataset):
    _, _, arrays = dataset
    has_3d = arrays["has_smpl"] == 1
    assert has_3d.any()
    joints_2d = perspective_projection(
        torch.from_numpy(arrays["S"][has_3d, :, :3]), torch.from_numpy(arrays["intrinsics"][has_3d])
    ).numpy()
    np.testing.assert_allclose(arrays["part"][has_3d, :, :2], joints_2d, atol=1e-3)
    assert (arrays["S"][has_3d, :, 3] == 1).all()


def test_reposing_the_smpl_parameters_gives_the_3d_joints(dataset, model):
    _, _, arrays = dataset
    has_3d = arrays["has_smpl"] == 1
    with torch.no_grad():
        out = model(
            pose_rotvecs=torch.tensor(arrays["pose"][has_3d], dtype=torch.float32),
            betas=torch.tensor(arrays["shape"][has_3d], dtype=torch.float32),
            transl=torch.tensor(arrays["transl"][has_3d], dtype=torch.float32),
        )
    joints = out.joints_spin[:, 25:].double().numpy()
    np.testing.assert_allclose(joints, arrays["S"][has_3d, :, :3], atol=1e-5)
    # In front of the camera, upright: the head above (smaller y than) the ankles.
    assert (joints[..., 2] > 0).all()


def test_2d_only_samples_have_no_3d_ground_truth(dataset):
    _, _, arrays = dataset
    no_3d = arrays["has_smpl"] == 0
    assert no_3d.sum() == NUM // 2  # fraction_3d = 0.5, spread evenly
    for key in ("S", "pose", "shape", "transl"):
        assert (arrays[key][no_3d] == 0).all(), key
    # Their 2D annotations and camera are still there.
    assert (arrays["part"][no_3d, :, 2] > 0).any()
    assert (arrays["intrinsics"][no_3d, 0, 0] > 0).all()


def test_openpose_keypoints_are_near_the_joints_and_zero_outside_the_image(dataset, model):
    _, _, arrays = dataset
    openpose = arrays["openpose"]
    kept = openpose[..., 2] > 0
    # Exact projections of the 25 OpenPose joints, from the ground-truth parameters of
    # the 3D samples.
    has_3d = arrays["has_smpl"] == 1
    with torch.no_grad():
        out = model(
            pose_rotvecs=torch.tensor(arrays["pose"][has_3d], dtype=torch.float32),
            betas=torch.tensor(arrays["shape"][has_3d], dtype=torch.float32),
            transl=torch.tensor(arrays["transl"][has_3d], dtype=torch.float32),
        )
    exact = perspective_projection(
        out.joints_spin[:, :25].double(), torch.from_numpy(arrays["intrinsics"][has_3d])
    ).numpy()
    error = np.linalg.norm(openpose[has_3d, :, :2] - exact, axis=-1)[kept[has_3d]]
    box_side = 200 * arrays["scale"][has_3d].max()
    assert np.median(error) < 0.05 * box_side and error.max() < 0.25 * box_side
    inside = (exact >= 0).all(axis=-1) & (exact < SIZE).all(axis=-1)
    assert (~inside).any(), "expected some joints outside the image (truncated people)"
    assert (openpose[has_3d][~inside] == 0).all()
    assert (openpose[~kept] == 0).all()
    # part's visibility is exactly "inside the image".
    part = arrays["part"]
    part_inside = (part[..., :2] >= 0).all(axis=-1) & (part[..., :2] < SIZE).all(axis=-1)
    np.testing.assert_array_equal(part[..., 2] == 1, part_inside)


def test_box_surrounds_the_rendered_body(dataset):
    out, _, arrays = dataset
    for index in range(NUM):
        part_map = np.asarray(Image.open(out / "parts" / f"train_{index:06d}.png"))
        rows, cols = np.nonzero(part_map)
        half = 100 * arrays["scale"][index]
        cx, cy = arrays["center"][index]
        inside = (np.abs(cols + 0.5 - cx) < half) & (np.abs(rows + 0.5 - cy) < half)
        assert inside.mean() > 0.9
        body_side = max(np.ptp(cols), np.ptp(rows)) + 1
        assert 1.0 * body_side < 2 * half < 1.45 * body_side


def test_same_seed_gives_identical_files(dataset, tmp_path):
    out, _, arrays = dataset
    small = 3
    again = generate_synthetic(CONFIG, small, tmp_path, progress=False)
    with np.load(again) as npz:
        for key in npz.files:
            np.testing.assert_array_equal(npz[key], arrays[key][:small], err_msg=key)
    first = _files_digest(out / "images")
    for name, digest in _files_digest(tmp_path / "images").items():
        assert first[name] == digest, name
    other_seed = generate_synthetic(replace(CONFIG, seed=8), small, tmp_path / "b", progress=False)
    with np.load(other_seed) as npz:
        assert not np.allclose(npz["center"], arrays["center"][:small])


def test_train_and_test_splits_differ(dataset, tmp_path):
    _, _, train = dataset
    assert split_seed(3, "train") == 3 and split_seed(3, "test") == 3 + TEST_SEED_OFFSET
    path = generate_synthetic(CONFIG, 3, tmp_path, split="test", progress=False)
    with np.load(path) as test:
        assert test["imgname"][0] == "images/test_000000.jpg"
        assert not np.allclose(test["center"], train["center"][:3])
        assert not np.allclose(test["part"], train["part"][:3])
    with pytest.raises(ValueError, match="split"):
        split_seed(0, "val")


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_fraction_3d_edge_cases(tmp_path, fraction):
    config = replace(CONFIG, fraction_3d=fraction, write_part_maps=False, image_size=(48, 48))
    path = generate_synthetic(config, 3, tmp_path, progress=False)
    with np.load(path) as arrays:
        assert (arrays["has_smpl"] == fraction).all()
        assert (arrays["S"][..., 3] == fraction).all()
        assert (np.abs(arrays["pose"]).sum(axis=1) > 0).all() == bool(fraction)
    assert not (tmp_path / "parts").exists()


def test_has_3d_flags_spread_the_fraction_evenly():
    rng = np.random.default_rng(0)
    for fraction in (0.0, 0.1, 0.25, 0.5, 0.9, 1.0):
        offset = rng.random()
        flags = has_3d_flags(fraction, 20, offset)
        assert flags.dtype == bool and flags.shape == (20,)
        assert abs(flags.sum() - 20 * fraction) <= 1
        # Any window of consecutive samples holds its share, up to one.
        for start in range(0, 15):
            assert abs(flags[start : start + 5].sum() - 5 * fraction) <= 1
        # A sample's flag does not depend on how many samples are made.
        np.testing.assert_array_equal(has_3d_flags(fraction, 7, offset), flags[:7])
    assert has_3d_flags(0.5, 20, 0.3).sum() == 10


def _profile_scene(model, yaw_deg):
    """open-lite with its arms lowered 70 degrees (an A-pose), turned by yaw about its
    vertical axis, 3 m in front of the camera."""
    from scipy.spatial.transform import Rotation

    orient = Rotation.from_matrix(np.diag([1.0, -1.0, -1.0])) * Rotation.from_euler(
        "y", yaw_deg, degrees=True
    )
    pose = torch.zeros(1, 24, 3)
    pose[0, 0] = torch.tensor(orient.as_rotvec(), dtype=torch.float32)
    pose[0, LEFT_SHOULDER, 2] = -np.deg2rad(70)
    pose[0, LEFT_SHOULDER + 1, 2] = np.deg2rad(70)
    pose = pose.reshape(1, 72)
    with torch.no_grad():
        out = model(pose_rotvecs=pose, transl=torch.tensor([[0.0, 0.2, 3.0]]))
    return out.vertices[0].double().numpy(), out.joints_spin[0, :25].double().numpy()


@pytest.mark.parametrize("yaw", [0.0, 90.0])
def test_joints_behind_the_body_are_occluded(model, yaw):
    template = body_template(model)
    intrinsics = np.array([[160.0, 0.0, 64.0], [0.0, 160.0, 64.0], [0.0, 0.0, 1.0]])
    vertices, joints = _profile_scene(model, yaw)
    joints_2d = perspective_projection(
        torch.from_numpy(joints), torch.from_numpy(intrinsics)
    ).numpy()
    with MeshRenderer((128, 128)) as renderer:
        rendered = renderer.render_labels(
            vertices, template.faces, template.face_parts + 1, intrinsics
        )
    occluded = joint_occlusion(
        joints,
        joints_2d,
        vertices,
        template.vertex_parts,
        rendered.labels,
        rendered.depth,
        CONFIG.occlusion_margin_m,
    )
    hidden = {name for name, index in OP.items() if occluded[index]}
    if yaw == 0:
        assert not hidden, "facing the camera, no limb joint is hidden"
    else:
        # Yaw +90 turns the subject's front to image right: the right side faces the camera.
        near = {"RShoulder", "RElbow", "RWrist", "RKnee", "RAnkle", "REar"}
        far = {"LShoulder", "LElbow", "LWrist", "LKnee", "LAnkle", "LEar"}
        assert not hidden & near, hidden
        assert len(hidden & far) >= 5, hidden


def test_detector_keypoints_noise_drops_and_confidences():
    rng = np.random.default_rng(0)
    config = replace(CONFIG, keypoint_drop_prob=0.1, occluded_drop_prob=0.5)
    num = 4000
    joints_2d = np.tile([[40.0, 50.0]], (num, 1))
    joints_2d[:100] = [-5.0, 50.0]  # outside the image
    occluded = np.zeros(num, dtype=bool)
    occluded[2000:] = True
    body_side = 50.0
    out = detector_keypoints(rng, joints_2d, occluded, body_side, (SIZE, SIZE), config)
    assert (out[:100] == 0).all()
    visible, hidden = out[100:2000], out[2000:]
    kept_visible = visible[visible[:, 2] > 0]
    assert abs(1 - len(kept_visible) / len(visible) - 0.1) < 0.03
    assert abs(1 - (hidden[:, 2] > 0).mean() - (1 - 0.9 * 0.5)) < 0.04
    std = (kept_visible[:, :2] - [40.0, 50.0]).std()
    assert std == pytest.approx(config.keypoint_noise * body_side, rel=0.1)
    assert kept_visible[:, 2].min() >= 0.6 and hidden[hidden[:, 2] > 0, 2].max() <= 0.5


def test_detector_keypoints_gross_outliers_and_left_right_swaps():
    """The heavy tail of a real detector: outliers moved 20-50% of the box side, and
    swapped left/right pairs; with both probabilities 0, the random stream is unchanged."""
    from spin.body.joint_conventions import flip_permutation

    flip = np.array(flip_permutation("openpose25"))
    body_side = 40.0
    joints_2d = np.random.default_rng(1).uniform(20, SIZE - 20, (25, 2))
    occluded = np.zeros(25, dtype=bool)
    quiet = replace(CONFIG, keypoint_noise=0.0, keypoint_drop_prob=0.0)

    swapped = detector_keypoints(
        np.random.default_rng(0), joints_2d, occluded, body_side, (SIZE, SIZE),
        replace(quiet, keypoint_swap_prob=1.0),
    )  # fmt: skip
    np.testing.assert_allclose(swapped[:, :2], joints_2d[flip])
    assert (flip == np.arange(25)).sum() >= 3  # the midline points stay

    moved = []
    for seed in range(40):
        out = detector_keypoints(
            np.random.default_rng(seed), joints_2d, occluded, body_side, (SIZE, SIZE),
            replace(quiet, keypoint_outlier_prob=0.2),
        )  # fmt: skip
        kept = out[:, 2] > 0
        moved.append(np.linalg.norm(out[kept, :2] - joints_2d[kept], axis=1) / body_side)
    moved = np.concatenate(moved)
    far = moved[moved > 1e-9]
    assert abs(len(far) / len(moved) - 0.2) < 0.05
    assert far.min() >= 0.2 - 1e-9 and far.max() <= 0.5 + 1e-9

    # Probabilities 0: exactly the draws of the plain model (noise, two confidence draws,
    # two drop draws), so the rendered splits stay what they were.
    rng, reference = np.random.default_rng(3), np.random.default_rng(3)
    detector_keypoints(rng, joints_2d, occluded, body_side, (SIZE, SIZE), CONFIG)
    reference.standard_normal((25, 2))
    for _ in range(4):
        reference.random(25)
    assert rng.random() == reference.random()


def test_backgrounds_vary_and_read_user_images(tmp_path):
    rng = np.random.default_rng(0)
    means = []
    for _ in range(12):
        background = procedural_background(rng, (64, 48))
        assert background.shape == (48, 64, 3) and background.dtype == np.uint8
        means.append(background.reshape(-1, 3).mean(axis=0))
    assert np.ptp(np.array(means), axis=0).max() > 40
    assert len(BACKGROUND_KINDS) >= 5
    # Deterministic given the generator.
    np.testing.assert_array_equal(
        procedural_background(np.random.default_rng(1), (64, 48)),
        procedural_background(np.random.default_rng(1), (64, 48)),
    )
    photo = np.zeros((100, 200, 3), dtype=np.uint8)
    photo[:, :100] = (255, 0, 0)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    crop = image_background(rng, tmp_path / "photo.png", (64, 48))
    assert crop.shape == (48, 64, 3) and crop.dtype == np.uint8


def test_user_backgrounds_are_used(tmp_path):
    backgrounds = tmp_path / "backgrounds"
    backgrounds.mkdir()
    magenta = np.zeros((80, 80, 3), dtype=np.uint8)
    magenta[...] = (255, 0, 255)
    Image.fromarray(magenta).save(backgrounds / "magenta.png")
    config = replace(
        CONFIG,
        background_dir=str(backgrounds),
        background_image_prob=1.0,
        image_size=(48, 48),
        image_noise_std_max=0.0,
    )
    path = generate_synthetic(config, 2, tmp_path / "out", progress=False)
    with np.load(path) as arrays:
        image = np.asarray(Image.open(tmp_path / "out" / arrays["imgname"][0]))
    part_map = np.asarray(Image.open(tmp_path / "out" / "parts" / "train_000000.png"))
    background = image[part_map == 0]
    np.testing.assert_allclose(np.median(background, axis=0), (255, 0, 255), atol=12)
    with pytest.raises(FileNotFoundError, match="no images"):
        (tmp_path / "empty").mkdir()
        generate_synthetic(replace(config, background_dir=str(tmp_path / "empty")), 1, tmp_path)


def test_unreadable_backgrounds_are_skipped_and_reported(tmp_path):
    backgrounds = tmp_path / "backgrounds"
    backgrounds.mkdir()
    (backgrounds / "broken.jpg").write_bytes(b"not a jpeg")
    config = replace(
        CONFIG, background_dir=str(backgrounds), background_image_prob=1.0, image_size=(48, 48)
    )
    path = generate_synthetic(config, 2, tmp_path / "out", progress=False)
    with np.load(path) as arrays:
        assert len(arrays["imgname"]) == 2
    info = json.loads((tmp_path / "out" / "train_config.json").read_text())
    assert info["unreadable_backgrounds"] == [str(backgrounds / "broken.jpg")]
    assert info["config"]["background_dir"] == str(backgrounds)


def test_contact_sheet_tiles_the_images(dataset):
    out, _, _ = dataset
    sheet = contact_sheet(out, "train", num=4, ncols=2)
    assert sheet.dtype == np.uint8 and sheet.shape[1] == 2 * SIZE
    assert sheet.shape[0] > 2 * SIZE


def test_config_is_validated():
    with pytest.raises(ValueError, match="fraction_3d"):
        SyntheticConfig(fraction_3d=1.5)
    with pytest.raises(ValueError, match="person_size"):
        SyntheticConfig(person_size=(0.9, 0.4))
    with pytest.raises(ValueError, match="num"):
        generate_synthetic(CONFIG, 0, "unused")


def test_hidden_parameters_are_the_samples_truth(dataset, tmp_path):
    out, _, arrays = dataset
    has_3d = arrays["has_smpl"] > 0
    pose, betas = hidden_parameters(out, "train")
    assert pose.shape == (NUM, 72) and betas.shape == (NUM, 10)
    # Where the file keeps the labels they are the same numbers; the others are hidden (zero).
    np.testing.assert_array_equal(pose[has_3d], arrays["pose"][has_3d])
    np.testing.assert_array_equal(betas[has_3d], arrays["shape"][has_3d])
    assert not has_3d.all() and np.abs(pose[~has_3d]).sum() > 0
    # The same split made with every label kept has them all.
    full = generate_synthetic(replace(CONFIG, fraction_3d=1.0), NUM, tmp_path, progress=False)
    with np.load(full) as npz:
        np.testing.assert_array_equal(pose, npz["pose"])
        np.testing.assert_array_equal(betas, npz["shape"])
    with pytest.raises(ValueError, match="not a synthetic split"):
        hidden_parameters(tmp_path, "test")
