"""3DPW converter on a tiny fixture laid out like the official download.

The fixture: ``sequenceFiles/test/<seq>.pkl`` written the way Python 2 wrote 3DPW's
pickles (protocol 2, byte strings as py2 ``str`` opcodes, ``numpy.core`` globals),
2 actors x 6 frames with one invalid camera pose, and ``imageFiles/<seq>/image_XXXXX.jpg``.
The body model is the bundled open-lite (both genders), posed in float64, so every
expected output is computable.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spin.body import BodyModel, UnsafeModelFileError, load_body_model, load_body_model_data
from spin.body.joint_conventions import SPIN_49
from spin.data.convert_3dpw import (
    COCO18_TO_BODY25,
    camera_frame_smpl,
    convert_3dpw,
    gt_joints_from_body,
    read_sequence,
)
from spin.data.formats import load_spin_npz, validate_spin_npz
from spin.geometry import perspective_projection, rotvec_to_rotmat

REPO = Path(__file__).resolve().parents[2]
SEQUENCE = "downtown_fixture_00"
NUM_FRAMES = 6
IMAGE_SIZE = (270, 480)  # width, height (3DPW's portrait 1080 x 1920, quartered)
INTRINSICS = np.array([[500.0, 0.0, 135.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
INVALID = (0, 2)  # (actor, frame) with an invalid camera pose
OFF_CENTRE_FRAME = 5  # camera shifted so that some joints fall outside the image


class _Py2Pickler(pickle._Pickler):
    """Writes what Python 2's pickle wrote: ``bytes`` as py2 ``str`` opcodes and
    numpy globals under ``numpy.core``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", None)
        if module and module.startswith("numpy._core"):
            name = name or obj.__qualname__
            module = module.replace("numpy._core", "numpy.core")
            self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


def write_py2_pickle(obj, path: Path) -> None:
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    path.write_bytes(buffer.getvalue())


def _rotation(axis_angle) -> np.ndarray:
    return rotvec_to_rotmat(torch.tensor(axis_angle, dtype=torch.float64)).numpy()


@pytest.fixture(scope="module")
def model():
    return load_body_model("open-lite").to(torch.float64)


@pytest.fixture(scope="module")
def models(model):
    return {"m": model, "f": model}


def make_sequence(model, seed: int = 0) -> dict:
    """A 3DPW-like sequence dict (py2 strings as bytes), world-frame SMPL."""
    rng = np.random.default_rng(seed)
    poses, betas, trans, joints, poses2d, valid = [], [], [], [], [], []
    for actor in range(2):
        pose = rng.normal(scale=0.15, size=(NUM_FRAMES, 72))
        pose[:, :3] = rng.normal(scale=0.3, size=(NUM_FRAMES, 3))
        beta = rng.normal(size=10 if actor == 0 else 300)  # 3DPW has both
        tr = np.array([0.4 * actor - 0.2, 0.1, 0.0]) + rng.normal(scale=0.05, size=(NUM_FRAMES, 3))
        out = model(
            pose_rotvecs=torch.from_numpy(pose),
            betas=torch.from_numpy(np.tile(beta[:10], (NUM_FRAMES, 1))),
            transl=torch.from_numpy(tr),
        )
        poses.append(pose)
        betas.append(beta)
        trans.append(tr)
        joints.append(out.joints_smpl.detach().numpy().reshape(NUM_FRAMES, 72))
        detections = rng.uniform(0, 200, size=(NUM_FRAMES, 3, 18))
        detections[:, 2] = rng.uniform(0, 1, size=(NUM_FRAMES, 18))
        poses2d.append(detections)
        valid.append(np.ones(NUM_FRAMES, dtype=bool if actor == 0 else np.int64))
    valid[INVALID[0]][INVALID[1]] = 0
    cam_poses = np.zeros((NUM_FRAMES, 4, 4))
    for f in range(NUM_FRAMES):
        # World is y-up; the camera looks along world -z, 4 m away, slightly turned.
        turn = _rotation(rng.normal(scale=0.05, size=3))
        cam_poses[f, :3, :3] = turn @ _rotation([np.pi, 0.0, 0.0])
        cam_poses[f, :3, 3] = [0.0, 0.0, 4.0]
        cam_poses[f, 3, 3] = 1.0
    cam_poses[OFF_CENTRE_FRAME, :3, 3] = [0.6, 0.0, 3.0]
    return {
        "sequence": SEQUENCE.encode(),
        "genders": [b"m", b"f"],
        "poses": poses,
        "betas": betas,
        "trans": trans,
        "poses_60Hz": [np.repeat(p, 2, axis=0) for p in poses],
        "trans_60Hz": [np.repeat(t, 2, axis=0) for t in trans],
        "betas_clothed": [b[:10] for b in betas],
        "v_template_clothed": [np.zeros((5, 3)), np.zeros((5, 3))],
        "texture_maps": [np.zeros((4, 4, 3), dtype=np.uint8)] * 2,
        "cam_poses": cam_poses,
        "cam_intrinsics": INTRINSICS.copy(),
        "poses2d": poses2d,
        "campose_valid": valid,
        "jointPositions": joints,
        "img_frame_ids": np.arange(NUM_FRAMES),
    }


def make_3dpw_root(tmp_path: Path, seq: dict, split: str = "test") -> Path:
    root = tmp_path / "3DPW"
    (root / "sequenceFiles" / split).mkdir(parents=True)
    for other in ("train", "validation", "test"):
        (root / "sequenceFiles" / other).mkdir(exist_ok=True)
    write_py2_pickle(seq, root / "sequenceFiles" / split / f"{SEQUENCE}.pkl")
    images = root / "imageFiles" / SEQUENCE
    images.mkdir(parents=True)
    for f in range(NUM_FRAMES):
        Image.new("RGB", IMAGE_SIZE, (90, 90, 90)).save(images / f"image_{f:05d}.jpg")
    return root


@pytest.fixture(scope="module")
def sequence(model):
    return make_sequence(model)


@pytest.fixture(scope="module")
def converted(tmp_path_factory, sequence, models):
    root = make_3dpw_root(tmp_path_factory.mktemp("pw3d"), sequence)
    return root, convert_3dpw(root, "test", models)


def test_fixture_pickle_reads_like_a_python2_pickle(converted, sequence):
    root, _ = converted
    raw = (root / "sequenceFiles" / "test" / f"{SEQUENCE}.pkl").read_bytes()
    assert b"numpy.core.multiarray" in raw and b"numpy._core" not in raw
    assert b"_codecs" not in raw  # array data stored as py2 str, not py3 bytes
    seq = read_sequence(root / "sequenceFiles" / "test" / f"{SEQUENCE}.pkl")
    assert seq["sequence"] == SEQUENCE and seq["genders"] == ["m", "f"]
    np.testing.assert_array_equal(seq["cam_poses"], sequence["cam_poses"])


def test_documented_keys_shapes_and_dtypes(converted):
    _, conversion = converted
    arrays = conversion.arrays
    n = 2 * NUM_FRAMES - 1
    assert conversion.num_samples == n
    assert validate_spin_npz(arrays) == []
    expected = {
        "imgname": (n,),
        "center": (n, 2),
        "scale": (n,),
        "part": (n, 24, 3),
        "openpose": (n, 25, 3),
        "S": (n, 24, 4),
        "S_h36m": (n, 17, 4),
        "pose": (n, 72),
        "shape": (n, 10),
        "has_smpl": (n,),
        "gender": (n,),
        "intrinsics": (n, 3, 3),
        "transl": (n, 3),
        "image_size": (n, 2),
        "sequence": (n,),
        "frame": (n,),
        "actor": (n,),
    }
    assert {key: arrays[key].shape for key in arrays} == expected
    for key in ("imgname", "gender", "sequence"):
        assert arrays[key].dtype.kind == "U"
    for key in ("center", "scale", "part", "openpose", "S", "pose", "shape", "transl"):
        assert arrays[key].dtype == np.float64
    assert arrays["frame"].dtype.kind == "i" and arrays["actor"].dtype.kind == "i"
    np.testing.assert_array_equal(arrays["has_smpl"], 1)
    assert set(arrays["gender"][arrays["actor"] == 0]) == {"m"}
    assert set(arrays["gender"][arrays["actor"] == 1]) == {"f"}
    np.testing.assert_array_equal(arrays["image_size"], np.tile(IMAGE_SIZE, (n, 1)))
    np.testing.assert_allclose(arrays["intrinsics"], np.tile(INTRINSICS, (n, 1, 1)))


def test_image_names_exist_under_the_root(converted):
    root, conversion = converted
    arrays = conversion.arrays
    for name, frame in zip(arrays["imgname"], arrays["frame"], strict=True):
        assert name == f"imageFiles/{SEQUENCE}/image_{frame:05d}.jpg"
        assert (root / name).is_file()


def test_invalid_camera_frames_are_dropped_and_counted(converted):
    _, conversion = converted
    arrays = conversion.arrays
    pairs = set(zip(arrays["actor"].tolist(), arrays["frame"].tolist(), strict=True))
    all_pairs = {(a, f) for a in range(2) for f in range(NUM_FRAMES)}
    assert pairs == all_pairs - {INVALID}
    assert conversion.skipped == {"invalid camera pose": 1}
    assert conversion.notes == []  # the model's joints match jointPositions


def test_pose_is_camera_frame_and_shape_is_first_ten_betas(converted, sequence):
    _, conversion = converted
    arrays = conversion.arrays
    for i, (actor, frame) in enumerate(zip(arrays["actor"], arrays["frame"], strict=True)):
        world = sequence["poses"][actor][frame]
        rotation = sequence["cam_poses"][frame, :3, :3]
        expected = rotation @ _rotation(world[:3])
        np.testing.assert_allclose(_rotation(arrays["pose"][i, :3]), expected, atol=1e-10)
        np.testing.assert_array_equal(arrays["pose"][i, 3:], world[3:])
        np.testing.assert_array_equal(arrays["shape"][i], sequence["betas"][actor][:10])


def test_reposing_in_the_camera_frame_reproduces_S_and_the_mesh(converted, sequence, model):
    _, conversion = converted
    arrays = conversion.arrays
    t = torch.from_numpy
    out = model(
        pose_rotvecs=t(arrays["pose"]), betas=t(arrays["shape"]), transl=t(arrays["transl"])
    )
    reposed = gt_joints_from_body(out).detach().numpy()
    assert np.abs(reposed - arrays["S"]).max() < 1e-4
    np.testing.assert_array_equal(arrays["S"][..., 3], 1.0)
    # The same mesh as the world mesh seen through the extrinsics (the translation
    # accounts for SMPL rotating about the pelvis, not the origin).
    actors, frames = arrays["actor"], arrays["frame"]
    world_pose = np.stack([sequence["poses"][a][f] for a, f in zip(actors, frames, strict=True)])
    world_trans = np.stack([sequence["trans"][a][f] for a, f in zip(actors, frames, strict=True)])
    world = model(pose_rotvecs=t(world_pose), betas=t(arrays["shape"]), transl=t(world_trans))
    extrinsics = sequence["cam_poses"][frames]
    expected = world.vertices.detach().numpy() @ extrinsics[:, :3, :3].transpose(0, 2, 1)
    expected += extrinsics[:, None, :3, 3]
    # smplx's Rodrigues adds 1e-8 to rotation vectors, hence not machine precision.
    assert np.abs(out.vertices.detach().numpy() - expected).max() < 1e-6
    assert np.all(arrays["S"][..., 2] > 1.0)  # metres, in front of the camera


def test_camera_frame_smpl_rotates_about_the_rest_pelvis():
    rng = np.random.default_rng(3)
    t = torch.from_numpy
    orient, trans, pelvis = (t(rng.normal(size=3)) for _ in range(3))
    rotation, translation = t(_rotation(rng.normal(size=3))), t(rng.normal(size=3))
    point = t(rng.normal(size=3))  # a rest-pose body point
    world = rotvec_to_rotmat(orient) @ (point - pelvis) + pelvis + trans
    orient_cam, transl_cam = camera_frame_smpl(orient, trans, rotation, translation, pelvis)
    camera = rotvec_to_rotmat(orient_cam) @ (point - pelvis) + pelvis + transl_cam
    torch.testing.assert_close(camera, rotation @ world + translation)


def test_gt_joints_without_spin_joints_fill_what_smpl_and_h36m_give():
    data = load_body_model_data("open-lite")
    full = BodyModel(data, dtype=torch.float64)
    reduced = BodyModel(dataclasses.replace(data, J_regressor_extra=None), dtype=torch.float64)
    pose = torch.from_numpy(np.random.default_rng(2).normal(scale=0.2, size=(2, 72)))
    expected = gt_joints_from_body(full(pose_rotvecs=pose))
    gt = gt_joints_from_body(reduced(pose_rotvecs=pose))
    from_smpl = [SPIN_49.index(n) - 25 for n in ("Right Ankle", "Left Knee", "Right Wrist")]
    from_h36m = [SPIN_49.index(n) - 25 for n in ("Right Hip", "Spine (H36M)", "Head (H36M)")]
    absent = [SPIN_49.index(n) - 25 for n in ("Neck (LSP)", "Pelvis (MPII)", "Nose")]
    torch.testing.assert_close(gt[:, from_smpl], expected[:, from_smpl])
    assert torch.all(gt[:, from_h36m, 3] == 1) and torch.all(gt[:, absent] == 0)
    assert int(gt[0, :, 3].sum()) == 15


def test_part_is_the_projection_of_S(converted):
    _, conversion = converted
    arrays = conversion.arrays
    k = torch.from_numpy(arrays["intrinsics"])
    projected = perspective_projection(torch.from_numpy(arrays["S"][..., :3]), k).numpy()
    width, height = IMAGE_SIZE
    inside = (projected[..., 0] >= 0) & (projected[..., 0] < width)
    inside &= (projected[..., 1] >= 0) & (projected[..., 1] < height)
    np.testing.assert_array_equal(arrays["part"][..., 2], inside.astype(float))
    assert np.abs(arrays["part"][..., :2][inside] - projected[inside]).max() < 1e-3
    assert 0 < (~inside).sum() and inside.sum() > 0.8 * inside.size
    assert (~inside[arrays["frame"] == OFF_CENTRE_FRAME]).any()


def test_box_covers_the_projected_mesh(converted, model):
    _, conversion = converted
    arrays = conversion.arrays
    t = torch.from_numpy
    out = model(
        pose_rotvecs=t(arrays["pose"]), betas=t(arrays["shape"]), transl=t(arrays["transl"])
    )
    vertices_2d = perspective_projection(out.vertices, t(arrays["intrinsics"])).detach().numpy()
    low, high = vertices_2d.min(axis=1), vertices_2d.max(axis=1)
    np.testing.assert_allclose(arrays["center"], (low + high) / 2, atol=1e-6)
    np.testing.assert_allclose(arrays["scale"], 1.2 * (high - low).max(axis=1) / 200, atol=1e-9)


def test_openpose_coco18_detections_go_to_their_body25_slots(converted, sequence):
    _, conversion = converted
    arrays = conversion.arrays
    for i, (actor, frame) in enumerate(zip(arrays["actor"], arrays["frame"], strict=True)):
        detections = sequence["poses2d"][actor][frame].T  # (18, 3)
        np.testing.assert_array_equal(arrays["openpose"][i, list(COCO18_TO_BODY25)], detections)
    np.testing.assert_array_equal(arrays["openpose"][:, [8, 19, 20, 21, 22, 23, 24]], 0.0)
    # Spot check of the table: COCO-18 RHip (8) -> BODY_25 RHip (9), LHip (11) -> 12.
    assert COCO18_TO_BODY25[8] == 9 and COCO18_TO_BODY25[11] == 12


def test_every_and_limit(tmp_path, sequence, models):
    root = make_3dpw_root(tmp_path, sequence)
    every = convert_3dpw(root, "test", models, every=2)
    pairs = list(zip(every.arrays["actor"].tolist(), every.arrays["frame"].tolist(), strict=True))
    assert pairs == [(0, 0), (0, 4), (1, 0), (1, 2), (1, 4)]  # frame 2 invalid for actor 0
    assert every.skipped == {"invalid camera pose": 1}
    limited = convert_3dpw(root, "test", models, limit=4)
    assert limited.num_samples == 4
    assert limited.arrays["actor"].tolist() == [0, 0, 0, 0]


def test_missing_image_is_skipped_and_counted(tmp_path, sequence, models):
    root = make_3dpw_root(tmp_path, sequence)
    (root / "imageFiles" / SEQUENCE / "image_00004.jpg").unlink()
    conversion = convert_3dpw(root, "test", models)
    assert 4 not in conversion.arrays["frame"]
    assert conversion.num_samples == 2 * NUM_FRAMES - 1 - 2
    assert conversion.skipped["image file missing"] == 2


def test_wrong_body_model_is_reported(tmp_path, sequence, models):
    seq = dict(sequence)
    seq["jointPositions"] = [j + 0.1 for j in sequence["jointPositions"]]
    root = make_3dpw_root(tmp_path, seq)
    conversion = convert_3dpw(root, "test", models)
    assert len(conversion.notes) == 2 and "jointPositions" in conversion.notes[0]


def test_malicious_sequence_pickle_is_refused(tmp_path, models):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    folder = tmp_path / "3DPW" / "sequenceFiles" / "test"
    folder.mkdir(parents=True)
    (folder / "evil.pkl").write_bytes(
        pickle.dumps({"sequence": "evil", "poses": Exploit()}, protocol=2)
    )
    with pytest.raises(UnsafeModelFileError, match="refusing to load .*evil.pkl"):
        convert_3dpw(tmp_path / "3DPW", "test", models)
    assert not marker.exists()


def test_unknown_split_and_missing_root_say_what_to_pass(tmp_path, models):
    with pytest.raises(ValueError, match="choose one of"):
        convert_3dpw(tmp_path, "val", models)
    with pytest.raises(FileNotFoundError, match="3DPW root"):
        convert_3dpw(tmp_path, "test", models)


def test_command_writes_a_valid_npz(tmp_path, sequence, capsys):
    root = make_3dpw_root(tmp_path, sequence)
    spec = importlib.util.spec_from_file_location(
        "convert_3dpw_cli", REPO / "tools" / "convert_3dpw.py"
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / "out" / "3dpw_test.npz"
    with pytest.warns(UserWarning, match="NOT 3DPW's ground truth"):
        code = cli.main(["--root", str(root), "--out", str(out), "--body-model", "open"])
    assert code == 0
    arrays = load_spin_npz(out)
    assert len(arrays["imgname"]) == 2 * NUM_FRAMES - 1
    assert "wrote 11 samples" in capsys.readouterr().out
