"""Properties of the bundled open body model (`open` and `open-lite`)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from spin.body import load_body_model
from spin.body.joint_conventions import H36M_17, SMPL_24, SPIN_49
from tests.body.conftest import smplx_reference

MODELS = ["open", "open-lite"]
# Golden values of the committed assets: a change here means the bundled model changed.
GOLDEN = {
    "open": {"vertices": 13348, "faces": 26692, "height_m": 1.72387},
    "open-lite": {"vertices": 1229, "faces": 2454, "height_m": 1.72100},
}


@pytest.fixture(scope="module", params=MODELS)
def model(request):
    return load_body_model(request.param).to(torch.float64)


def axis_angle(axis: str, degrees: float) -> torch.Tensor:
    vector = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}[axis]
    return torch.tensor(vector, dtype=torch.float64) * math.radians(degrees)


def make_pose(rotations: dict[str, tuple[str, float]]) -> torch.Tensor:
    """(1, 72) axis-angle pose from {joint name: (axis, degrees)}."""
    pose = torch.zeros(24, 3, dtype=torch.float64)
    for name, (axis, degrees) in rotations.items():
        pose[SMPL_24.index(name)] = axis_angle(axis, degrees)
    return pose.reshape(1, 72)


# SMPL axes: x = subject's left, y = up, z = front. Rotations are about the joints' world axes.
POSES = {
    "t_pose": {},
    "a_pose": {"left_shoulder": ("z", -45.0), "right_shoulder": ("z", 45.0)},
    "elbows_knees_90": {
        "left_elbow": ("y", -90.0),
        "right_elbow": ("y", 90.0),
        "left_knee": ("x", 90.0),
        "right_knee": ("x", 90.0),
    },
    "sitting": {
        "left_hip": ("x", -90.0),
        "right_hip": ("x", -90.0),
        "left_knee": ("x", 90.0),
        "right_knee": ("x", 90.0),
    },
}


def winding_numbers(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Generalised winding number of points (N, 3) w.r.t. a triangle mesh: ~1 inside, ~0
    outside (robust to the small holes of a mesh without eyeballs)."""
    tri = vertices[faces]  # (F, 3, 3)
    result = []
    for p in points:
        a, b, c = (tri[:, i] - p for i in range(3))
        la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
        numerator = np.einsum("ij,ij->i", a, np.cross(b, c))
        denominator = (
            la * lb * lc
            + np.einsum("ij,ij->i", a, b) * lc
            + np.einsum("ij,ij->i", b, c) * la
            + np.einsum("ij,ij->i", c, a) * lb
        )
        result.append(2 * np.arctan2(numerator, denominator).sum() / (4 * np.pi))
    return np.array(result)


def test_golden_sizes_and_height(model):
    golden = GOLDEN[model.name]
    out = model(pose_rotvecs=torch.zeros(1, 72, dtype=torch.float64))
    vertices = out.vertices[0].numpy()
    assert vertices.shape == (golden["vertices"], 3)
    assert model.faces.shape == (golden["faces"], 3)
    height = vertices[:, 1].max() - vertices[:, 1].min()
    assert height == pytest.approx(golden["height_m"], abs=2e-4)
    assert 1.65 <= height <= 1.80


def test_beta0_makes_taller_and_spans_height(model):
    betas = torch.zeros(2, model.num_betas, dtype=torch.float64)
    betas[0, 0], betas[1, 0] = -2.0, 2.0
    out = model(pose_rotvecs=torch.zeros(2, 72, dtype=torch.float64), betas=betas)
    heights = out.vertices[..., 1].amax(-1) - out.vertices[..., 1].amin(-1)
    assert heights[1] - heights[0] >= 0.35
    # Pelvis stays at the origin for every shape (shapes are pelvis-centred).
    assert out.joints_smpl[:, 0].abs().max() < 5e-3


def test_t_pose_is_a_t_pose(model):
    joints = model(pose_rotvecs=torch.zeros(1, 72, dtype=torch.float64)).joints_smpl[0].numpy()
    for side, sign in (("left", 1.0), ("right", -1.0)):
        shoulder, elbow, wrist = (
            joints[SMPL_24.index(f"{side}_{j}")] for j in ("shoulder", "elbow", "wrist")
        )
        for a, b in ((shoulder, elbow), (elbow, wrist)):
            direction = (b - a) / np.linalg.norm(b - a)
            assert direction[0] * sign > 0.99, f"{side} arm not horizontal: {direction}"
        hip, knee, ankle = (joints[SMPL_24.index(f"{side}_{j}")] for j in ("hip", "knee", "ankle"))
        for a, b in ((hip, knee), (knee, ankle)):
            direction = (b - a) / np.linalg.norm(b - a)
            assert direction[1] < -0.99, f"{side} leg not vertical: {direction}"


@pytest.mark.parametrize("pose_name", list(POSES))
def test_joints_inside_mesh(model, pose_name):
    out = model(pose_rotvecs=make_pose(POSES[pose_name]))
    inside = winding_numbers(
        out.joints_smpl[0].numpy(), out.vertices[0].numpy(), np.asarray(model.faces)
    )
    outside = [SMPL_24.joint_names[i] for i in np.where(inside < 0.5)[0]]
    assert not outside, f"joints outside the mesh in {pose_name}: {outside}"
    # The test itself can tell outside from inside: points 30 cm in front of each joint.
    shifted = out.joints_smpl[0].numpy() + np.array([0.0, 0.0, 0.3])
    in_front = winding_numbers(shifted, out.vertices[0].numpy(), np.asarray(model.faces))
    assert (in_front < 0.5).mean() > 0.8


def test_poses_move_the_limbs_where_intended(model):
    # Guards the sign conventions of POSES (and of the model's axes).
    joints = model(pose_rotvecs=make_pose(POSES["sitting"])).joints_smpl[0].numpy()
    knee, ankle = joints[SMPL_24.index("left_knee")], joints[SMPL_24.index("left_ankle")]
    hip = joints[SMPL_24.index("left_hip")]
    assert knee[2] - hip[2] > 0.3  # thigh points forward
    assert ankle[1] - knee[1] < -0.3  # shin points down
    joints = model(pose_rotvecs=make_pose(POSES["a_pose"])).joints_smpl[0].numpy()
    assert joints[SMPL_24.index("left_wrist"), 1] < joints[SMPL_24.index("left_shoulder"), 1] - 0.3


def test_side_keypoints_are_where_they_belong(model):
    out = model(pose_rotvecs=torch.zeros(1, 72, dtype=torch.float64))
    j = out.joints_smpl[0]
    spin = out.joints_spin[0]
    h36m = out.joints_h36m[0]
    head = j[SMPL_24.index("head")]
    assert spin[SPIN_49.index("Top of Head (LSP)")][1] > head[1] + 0.1
    assert spin[SPIN_49.index("OP Nose")][2] > head[2] + 0.05  # the nose is in front
    ears = spin[SPIN_49.index("Left Ear")], spin[SPIN_49.index("Right Ear")]
    assert ears[0][0] > head[0] + 0.05 > head[0] - 0.05 > ears[1][0]  # left ear on +x
    # H36M pelvis between the hips, below the spine, below the thorax.
    pelvis, spine, thorax = (h36m[H36M_17.index(n)] for n in ("pelvis", "spine", "thorax"))
    hips = h36m[H36M_17.index("right_hip")], h36m[H36M_17.index("left_hip")]
    assert torch.allclose(pelvis, 0.5 * (hips[0] + hips[1]), atol=1e-6)
    assert thorax[1] > spine[1] > pelvis[1]


def test_matches_smplx_on_the_bundled_model(model):
    data = model.data
    num_betas = data.num_betas
    reference = smplx_reference(data, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    pose = 0.4 * torch.randn(3, 72, generator=generator, dtype=torch.float64)
    betas = torch.randn(3, num_betas, generator=generator, dtype=torch.float64)
    transl = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    expected = reference(
        global_orient=pose[:, :3], body_pose=pose[:, 3:], betas=betas, transl=transl
    )
    ours = model(pose_rotvecs=pose, betas=betas, transl=transl)
    assert (ours.vertices - expected.vertices).abs().max() < 1e-5
    assert (ours.joints_smpl - expected.joints[:, :24]).abs().max() < 1e-5


def test_loading_never_imports_anny():
    code = (
        "import sys; sys.modules['anny'] = None\n"
        "from spin.body import load_body_model\n"
        "for name in ('open', 'open-lite'):\n"
        "    load_body_model(name)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
