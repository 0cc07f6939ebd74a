"""Human3.6M converter on a tiny fixture in the documented layout.

2 subjects (a training one and a test one) x 2 actions (one with a space, as the
official names have) x 2 cameras (one of them the P2 front camera) x 12 frames,
joints in millimetres in the camera frame, official-looking intrinsics.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spin.body.joint_conventions import SPIN_49
from spin.data.convert_h36m import H36M32_TO_17, convert_h36m, read_poses
from spin.data.formats import load_spin_npz, validate_spin_npz
from spin.geometry import perspective_projection

REPO = Path(__file__).resolve().parents[2]
SUBJECTS = ("S1", "S9")
ACTIONS = ("Directions", "Walking 1")
CAMERAS = {
    "54138969": {
        "fx": 1145.05,
        "fy": 1143.78,
        "cx": 512.54,
        "cy": 515.45,
        "width": 1000,
        "height": 1002,
    },
    "60457274": {
        "fx": 1145.51,
        "fy": 1144.77,
        "cx": 514.97,
        "cy": 501.88,
        "width": 1000,
        "height": 1002,
    },
}
NUM_FRAMES = 12
KEPT_FRAMES = [0, 5, 10]
#: GT-24 slots the H36M joints fill (joint name -> SPIN GT name).
FILLED = (
    "Right Ankle",
    "Right Knee",
    "Right Hip",
    "Left Hip",
    "Left Knee",
    "Left Ankle",
    "Right Wrist",
    "Right Elbow",
    "Right Shoulder",
    "Left Shoulder",
    "Left Elbow",
    "Left Wrist",
    "Spine (H36M)",
    "Jaw (H36M)",
    "Head (H36M)",
)


def make_poses(rng) -> np.ndarray:
    """(F, 32, 3) millimetres: a person ~1.8 m tall, 4-5 m in front of the camera."""
    body = rng.normal(scale=250.0, size=(NUM_FRAMES, 32, 3))
    body[..., 1] *= 3.0
    return body + np.array([rng.uniform(-300, 300), 0.0, rng.uniform(4000, 5000)])


def make_h36m_root(tmp_path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root = tmp_path / "h36m"
    root.mkdir()
    (root / "cameras.json").write_text(json.dumps(CAMERAS))
    for subject in SUBJECTS:
        (root / subject / "poses_3d").mkdir(parents=True)
        for action in ACTIONS:
            for camera in CAMERAS:
                np.save(root / subject / "poses_3d" / f"{action}.{camera}.npy", make_poses(rng))
                images = root / subject / f"{action}.{camera}"
                images.mkdir()
                for frame in range(1, NUM_FRAMES + 1):  # ffmpeg numbers from 1
                    name = f"{subject}_{action}.{camera}_{frame:06d}.jpg"
                    Image.new("RGB", (8, 8)).save(images / name)
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_h36m_root(tmp_path_factory.mktemp("h36m"))


@pytest.fixture(scope="module")
def p1(root):
    # The fixture has S9 only among the test subjects.
    return convert_h36m(root, "p1", subjects=["S9"])


def test_documented_keys_shapes_and_dtypes(p1):
    arrays = p1.arrays
    n = 2 * 2 * len(KEPT_FRAMES)
    assert p1.num_samples == n
    assert validate_spin_npz(arrays) == []
    expected = {
        "imgname": (n,),
        "center": (n, 2),
        "scale": (n,),
        "part": (n, 24, 3),
        "openpose": (n, 25, 3),
        "S": (n, 24, 4),
        "S_h36m": (n, 17, 4),
        "has_smpl": (n,),
        "intrinsics": (n, 3, 3),
        "image_size": (n, 2),
        "subject": (n,),
        "action": (n,),
        "camera": (n,),
        "frame": (n,),
    }
    assert {key: arrays[key].shape for key in arrays} == expected
    for key in ("imgname", "subject", "action", "camera"):
        assert arrays[key].dtype.kind == "U"
    for key in ("center", "scale", "part", "openpose", "S", "S_h36m", "intrinsics"):
        assert arrays[key].dtype == np.float64
    np.testing.assert_array_equal(arrays["has_smpl"], 0)
    np.testing.assert_array_equal(arrays["openpose"], 0)
    np.testing.assert_array_equal(arrays["image_size"], np.tile([1000, 1002], (n, 1)))


def test_image_names_follow_the_layout(root, p1):
    arrays = p1.arrays
    for i, name in enumerate(arrays["imgname"]):
        subject, action, camera = arrays["subject"][i], arrays["action"][i], arrays["camera"][i]
        frame = arrays["frame"][i]
        assert (
            name == f"{subject}/{action}.{camera}/{subject}_{action}.{camera}_{frame + 1:06d}.jpg"
        )
        assert (root / name).is_file()


def test_protocols_select_subjects_cameras_and_frames(root):
    train = convert_h36m(root, "train", subjects=["S1"])
    p1 = convert_h36m(root, "p1", subjects=["S9"])
    p2 = convert_h36m(root, "p2", subjects=["S9"])
    assert set(train.arrays["subject"]) == {"S1"}
    assert set(p1.arrays["subject"]) == set(p2.arrays["subject"]) == {"S9"}
    assert set(train.arrays["camera"]) == set(p1.arrays["camera"]) == set(CAMERAS)
    assert set(p2.arrays["camera"]) == {"60457274"}
    for conversion in (train, p1, p2):
        assert set(conversion.arrays["frame"].tolist()) == set(KEPT_FRAMES)
        assert set(conversion.arrays["action"]) == set(ACTIONS)
    assert p2.num_samples == len(ACTIONS) * len(KEPT_FRAMES)
    assert train.num_samples == p1.num_samples == 2 * p2.num_samples


def test_protocol_subjects_are_required(root):
    # The default train protocol wants S5-S8, which the fixture lacks.
    with pytest.raises(FileNotFoundError, match="S5/poses_3d"):
        convert_h36m(root, "train")


def test_S_holds_the_h36m_joints_in_metres_in_their_gt24_slots(root, p1):
    arrays = p1.arrays
    for i in range(p1.num_samples):
        path = root / arrays["subject"][i] / "poses_3d"
        poses = np.load(path / f"{arrays['action'][i]}.{arrays['camera'][i]}.npy")
        joints_m = poses[arrays["frame"][i], list(H36M32_TO_17)] / 1000.0
        np.testing.assert_allclose(arrays["S_h36m"][i, :, :3], joints_m)
        # h36m17 order: 3 = right ankle, 10 = head, 14 = right shoulder, 9 = neck/nose.
        gt = arrays["S"][i]
        np.testing.assert_allclose(gt[SPIN_49.index("Right Ankle") - 25, :3], joints_m[3])
        np.testing.assert_allclose(gt[SPIN_49.index("Head (H36M)") - 25, :3], joints_m[10])
        np.testing.assert_allclose(gt[SPIN_49.index("Right Shoulder") - 25, :3], joints_m[14])
        np.testing.assert_allclose(gt[SPIN_49.index("Jaw (H36M)") - 25, :3], joints_m[9])
    filled = [SPIN_49.index(name) - 25 for name in FILLED]
    expected_conf = np.zeros(24)
    expected_conf[filled] = 1.0
    np.testing.assert_array_equal(arrays["S"][..., 3], np.tile(expected_conf, (p1.num_samples, 1)))
    np.testing.assert_array_equal(arrays["S"][:, expected_conf == 0], 0.0)
    assert 3.0 < arrays["S"][:, filled, 2].mean() < 6.0  # metres


def test_part_is_the_projection_of_S_and_the_box_covers_the_joints(p1):
    arrays = p1.arrays
    k = torch.from_numpy(arrays["intrinsics"])
    projected = perspective_projection(torch.from_numpy(arrays["S"][..., :3]), k).numpy()
    visible = arrays["part"][..., 2] > 0
    assert visible.sum() > 0.9 * arrays["S"][..., 3].sum()
    np.testing.assert_array_equal(visible & (arrays["S"][..., 3] == 0), False)
    assert np.abs(arrays["part"][..., :2][visible] - projected[visible]).max() < 1e-3
    cx, cy = arrays["intrinsics"][:, 0, 2], arrays["intrinsics"][:, 1, 2]
    np.testing.assert_allclose(arrays["intrinsics"][:, 0, 0], 1145.05, atol=0.5)
    assert np.all(np.abs(cx - 513) < 3) and np.all(np.abs(cy - 508) < 8)
    joints_2d = perspective_projection(torch.from_numpy(arrays["S_h36m"][..., :3]), k).numpy()
    low, high = joints_2d.min(axis=1), joints_2d.max(axis=1)
    np.testing.assert_allclose(arrays["center"], (low + high) / 2)
    np.testing.assert_allclose(arrays["scale"], 1.2 * (high - low).max(axis=1) / 200)


def test_every_limit_and_missing_images(tmp_path):
    root = make_h36m_root(tmp_path)
    with pytest.warns(UserWarning, match="not the standard benchmark"):
        every = convert_h36m(root, "p2", subjects=["S9"], every=4)
    assert set(every.arrays["frame"].tolist()) == {0, 4, 8}
    assert convert_h36m(root, "p1", subjects=["S9"], limit=5).num_samples == 5
    (root / "S9" / "Directions.60457274" / "S9_Directions.60457274_000006.jpg").unlink()
    missing = convert_h36m(root, "p2", subjects=["S9"])
    assert missing.num_samples == 2 * len(KEPT_FRAMES) - 1
    assert missing.skipped == {"image file missing": 1}


def test_cameras_json_may_override_a_camera_per_subject(tmp_path):
    root = make_h36m_root(tmp_path)
    override = dict(CAMERAS["60457274"], fx=2000.0, fy=2000.0)
    (root / "cameras.json").write_text(json.dumps({**CAMERAS, "S9": {"60457274": override}}))
    p2 = convert_h36m(root, "p2", subjects=["S9"])
    np.testing.assert_array_equal(p2.arrays["intrinsics"][:, 0, 0], 2000.0)
    train = convert_h36m(root, "train", subjects=["S1"])
    assert set(train.arrays["intrinsics"][:, 0, 0].tolist()) == {1145.05, 1145.51}


def test_poses_in_metres_or_world_frame_are_refused(tmp_path):
    path = tmp_path / "Walking.54138969.npy"
    poses = make_poses(np.random.default_rng(1))
    np.save(path, poses / 1000.0)
    with pytest.raises(ValueError, match="millimetres"):
        read_poses(path)
    world = poses.copy()
    world[..., 2] -= 4500.0
    np.save(path, world)
    with pytest.raises(ValueError, match="camera-frame joints"):
        read_poses(path)
    np.save(path, poses.reshape(1, NUM_FRAMES, 96))  # the CDF's (1, F, 96)
    np.testing.assert_array_equal(read_poses(path), poses)


def test_command_writes_a_valid_npz(root, tmp_path, capsys):
    path = REPO / "tools" / "convert_h36m.py"
    spec = importlib.util.spec_from_file_location("convert_h36m_cli", path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / "h36m_p2.npz"
    args = ["--root", str(root), "--protocol", "p2", "--subjects", "S9", "--out", str(out)]
    assert cli.main(args) == 0
    arrays = load_spin_npz(out)
    assert set(arrays["camera"]) == {"60457274"}
    assert f"wrote {len(arrays['imgname'])} samples" in capsys.readouterr().out
