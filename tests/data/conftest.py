"""A tiny SPIN-format dataset made on the fly: the open-lite body, posed at random,
seen by a perspective camera; images are coloured blobs at the projected joints."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from spin.body import load_body_model
from spin.geometry import perspective_projection

IMAGE_WIDTH, IMAGE_HEIGHT = 320, 240
NUM_SAMPLES = 4
NO_3D_SAMPLE = NUM_SAMPLES - 1  # the last sample is 2D-only, like in-the-wild data
BLOB_RADIUS = 3
BACKGROUND = (40, 60, 90)
BOX_MARGIN = 1.2  # person box side = margin x the keypoints' extent


def joint_colours(num: int) -> np.ndarray:
    """Distinct, saturated colours, one per joint, far from the background."""
    rng = np.random.default_rng(123)
    return rng.integers(120, 256, size=(num, 3)).astype(np.uint8)


@pytest.fixture(scope="session")
def body_model():
    return load_body_model("open-lite").to(torch.float64)


def _rot_x(angle):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(angle):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def make_samples(body_model, num=NUM_SAMPLES, seed=0) -> dict[str, np.ndarray]:
    """Random people in front of a camera, as SPIN-format arrays (no images)."""
    from spin.geometry import rotmat_to_rotvec

    rng = np.random.default_rng(seed)
    pose = rng.normal(scale=0.2, size=(num, 72))
    # Upright in the camera frame (y down): turn SMPL's y-up body by pi about x, then yaw.
    for i in range(num):
        orient = _rot_x(math.pi) @ _rot_y(rng.uniform(-1.2, 1.2))
        pose[i, :3] = rotmat_to_rotvec(torch.from_numpy(orient)).numpy()
    betas = rng.normal(scale=0.7, size=(num, 10))
    transl = np.stack(
        [rng.uniform(-0.3, 0.3, num), rng.uniform(-0.2, 0.2, num), rng.uniform(4.5, 6.0, num)],
        axis=1,
    )
    focal = rng.uniform(450.0, 600.0, num)
    principal = np.stack(
        [IMAGE_WIDTH / 2 + rng.uniform(-8, 8, num), IMAGE_HEIGHT / 2 + rng.uniform(-8, 8, num)],
        axis=1,
    )
    intrinsics = np.zeros((num, 3, 3))
    intrinsics[:, 0, 0] = intrinsics[:, 1, 1] = focal
    intrinsics[:, :2, 2] = principal
    intrinsics[:, 2, 2] = 1.0

    out = body_model(
        pose_rotvecs=torch.from_numpy(pose),
        betas=torch.from_numpy(betas),
        transl=torch.from_numpy(transl),
    )
    joints = out.joints_spin  # (N, 49, 3) camera frame
    pixels = perspective_projection(joints, torch.from_numpy(intrinsics)).numpy()
    joints = joints.numpy()
    ones = np.ones((num, 49, 1))
    keypoints = np.concatenate([pixels, ones], axis=-1)
    openpose = keypoints[:, :25].copy()
    openpose[:, [17, 18]] = 0.0  # undetected ears: zero coordinates and confidence
    part = keypoints[:, 25:].copy()
    joints_3d = np.concatenate([joints[:, 25:], ones[:, 25:]], axis=-1)
    has_smpl = np.ones(num)
    joints_3d[NO_3D_SAMPLE] = 0.0
    has_smpl[NO_3D_SAMPLE] = 0.0

    lo, hi = pixels.min(axis=1), pixels.max(axis=1)
    return {
        "imgname": np.array([f"images/{i:03d}.png" for i in range(num)]),
        "center": (lo + hi) / 2,
        "scale": BOX_MARGIN * (hi - lo).max(axis=1) / 200.0,
        "part": part,
        "openpose": openpose,
        "S": joints_3d,
        "pose": pose,
        "shape": betas,
        "has_smpl": has_smpl,
        "gender": np.array(["n"] * num),
        "intrinsics": intrinsics,
        "transl": transl,
    }


def draw_blobs(points: np.ndarray, colours: np.ndarray) -> Image.Image:
    """Background with a filled disc of ``colours[j]`` at each ``points[j]`` (x, y)."""
    image = Image.new("RGB", (IMAGE_WIDTH, IMAGE_HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    r = BLOB_RADIUS
    for (x, y), colour in zip(points, colours, strict=True):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(c) for c in colour))
    return image


def write_dataset(folder: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write the images (blobs at the 24 ground-truth joints) and the ``.npz``."""
    colours = joint_colours(24)
    for name, part in zip(arrays["imgname"], arrays["part"], strict=True):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        draw_blobs(part[:, :2], colours).save(path)
    npz = folder / "tiny.npz"
    np.savez(npz, **arrays)
    return npz


@pytest.fixture(scope="session")
def tiny_arrays(body_model):
    return make_samples(body_model)


@pytest.fixture
def tiny_dataset_path(tmp_path, tiny_arrays):
    """``(npz path, image folder)`` of a fresh copy of the tiny dataset."""
    return write_dataset(tmp_path, tiny_arrays), tmp_path
