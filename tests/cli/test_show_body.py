from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import roma
import torch
import trimesh
from PIL import Image

import spin.body
from spin.cli import show_body
from spin.render.figures import label_strip_height

OPEN_LITE = Path(spin.body.__file__).parent / "assets" / "open_lite.npz"
TILE = 128
NUM_TILES = 12
BODY_RGB = np.array(show_body.BODY_COLOR) * 255


def _expected_figure_size(tile: int) -> tuple[int, int]:
    """(width, height) of the grid: NUM_TILES tiles, two-line labels under each row."""
    nrows = -(-NUM_TILES // show_body.NCOLS)
    return show_body.NCOLS * tile, nrows * (tile + label_strip_height(tile, num_lines=2))


# A stand-in body model with the interface of spin.body's BodyModel: SMPL's 24-joint
# tree (y up, x the subject's left, z front, metres), one capsule per bone moving rigidly
# with its parent joint, a sphere for the head.
_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
_REST_JOINTS = np.array(
    [
        [0.0, 0.0, 0.0],
        [0.09, -0.08, 0.0],
        [-0.09, -0.08, 0.0],
        [0.0, 0.11, 0.0],
        [0.1, -0.46, 0.0],
        [-0.1, -0.46, 0.0],
        [0.0, 0.24, 0.0],
        [0.11, -0.86, -0.03],
        [-0.11, -0.86, -0.03],
        [0.0, 0.3, 0.0],
        [0.12, -0.92, 0.1],
        [-0.12, -0.92, 0.1],
        [0.0, 0.5, 0.0],
        [0.07, 0.42, 0.0],
        [-0.07, 0.42, 0.0],
        [0.0, 0.6, 0.03],
        [0.17, 0.44, 0.0],
        [-0.17, 0.44, 0.0],
        [0.43, 0.44, 0.0],
        [-0.43, 0.44, 0.0],
        [0.68, 0.44, 0.0],
        [-0.68, 0.44, 0.0],
        [0.76, 0.44, 0.0],
        [-0.76, 0.44, 0.0],
    ]
)
_BONE_RADIUS = {3: 0.13, 6: 0.14, 9: 0.14, 1: 0.08, 2: 0.08, 4: 0.065, 5: 0.065}


@dataclass(frozen=True)
class _StandInOutput:
    vertices: torch.Tensor
    joints_smpl: torch.Tensor


class _StandInBody(torch.nn.Module):
    num_betas = 10

    def __init__(self):
        super().__init__()
        pieces, owners = [], []
        for joint, parent in enumerate(_PARENTS):
            if parent < 0:
                continue
            start, end = _REST_JOINTS[parent], _REST_JOINTS[joint]
            length = np.linalg.norm(end - start)
            capsule = trimesh.creation.capsule(
                height=length, radius=_BONE_RADIUS.get(joint, 0.045), count=[12, 12]
            )
            capsule.apply_transform(trimesh.geometry.align_vectors([0, 0, 1], end - start))
            capsule.apply_translation((start + end) / 2)
            pieces.append(capsule)
            owners.append(np.full(len(capsule.vertices), parent))
        head = trimesh.creation.icosphere(subdivisions=2, radius=0.1)
        head.apply_translation(_REST_JOINTS[15] + [0.0, 0.08, 0.0])
        pieces.append(head)
        owners.append(np.full(len(head.vertices), 15))
        mesh = trimesh.util.concatenate(pieces)
        self.faces = np.asarray(mesh.faces)
        self.register_buffer("rest_vertices", torch.tensor(mesh.vertices, dtype=torch.float32))
        self.register_buffer("rest_joints", torch.tensor(_REST_JOINTS, dtype=torch.float32))
        self.register_buffer("owner", torch.from_numpy(np.concatenate(owners)))

    def forward(self, pose_rotvecs, betas, transl):
        batch = pose_rotvecs.shape[0]
        local = roma.rotvec_to_rotmat(pose_rotvecs.reshape(batch, 24, 3))
        # betas[0] scales the body (height), betas[1] its girth.
        scale = torch.stack(
            [1 + 0.05 * betas[:, 0] + 0.1 * betas[:, 1], 1 + 0.05 * betas[:, 0]], dim=-1
        )
        scale = scale[:, [0, 1, 0]][:, None]
        rest_joints = self.rest_joints * scale
        rest_vertices = self.rest_vertices * scale
        rotations, positions = [local[:, 0]], [rest_joints[:, 0]]
        for joint in range(1, 24):
            parent = _PARENTS[joint]
            offset = rest_joints[:, joint] - rest_joints[:, parent]
            positions.append(positions[parent] + (rotations[parent] @ offset[..., None])[..., 0])
            rotations.append(rotations[parent] @ local[:, joint])
        rotations, positions = torch.stack(rotations, 1), torch.stack(positions, 1)
        owner = self.owner
        relative = rest_vertices - rest_joints[:, owner]
        vertices = (rotations[:, owner] @ relative[..., None])[..., 0] + positions[:, owner]
        return _StandInOutput(vertices + transl[:, None], positions + transl[:, None])


def _check_figure(path: Path, tile: int) -> np.ndarray:
    assert path.is_file()
    figure = np.asarray(Image.open(path).convert("RGB"))
    assert (figure.shape[1], figure.shape[0]) == _expected_figure_size(tile)
    # Not blank: body-coloured pixels in every tile and red joint dots.
    strip = label_strip_height(tile, num_lines=2)
    for index in range(NUM_TILES):
        row, col = divmod(index, show_body.NCOLS)
        top = row * (tile + strip)
        cell = figure[top : top + tile, col * tile : (col + 1) * tile]
        bluish = (cell[..., 2] > cell[..., 0] + 20) & (cell[..., 2] > 120)
        assert bluish.mean() > 0.02, f"tile {index} shows no body"
    red = (figure[..., 0] > 180) & (figure[..., 1] < 90) & (figure[..., 2] < 90)
    assert red.sum() > 10 * NUM_TILES, "joint dots missing"
    return figure


def test_show_body_with_a_stand_in_model(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(show_body, "load_body_model", lambda name: _StandInBody())
    out = tmp_path / "x.png"
    assert show_body.main(["--model", "open-lite", "--out", str(out), "--size", str(TILE)]) == 0
    figure = _check_figure(out, TILE)
    printed = capsys.readouterr().out
    assert str(out) in printed and "height" in printed
    # Upright and facing the camera: in the first tile (T-pose) the head is at the top,
    # the feet at the bottom and the arms span the width.
    tile = figure[:TILE, :TILE]
    body = (tile != 255).any(axis=-1)
    rows, cols = np.nonzero(body)
    head_row = rows.min()
    assert abs(cols[rows == head_row].mean() - TILE / 2) < 5, "head should be centred on top"
    assert np.ptp(cols) > 0.7 * TILE


def test_show_body_renders_the_open_lite_model(tmp_path):
    if not OPEN_LITE.exists():
        pytest.skip(f"{OPEN_LITE} not built yet (tools/build_open_body_model.py makes it)")
    out = tmp_path / "x.png"
    assert show_body.main(["--model", "open-lite", "--out", str(out), "--size", str(TILE)]) == 0
    _check_figure(out, TILE)


def test_smpl_to_camera_puts_the_subject_upright_facing_the_camera():
    rotation = show_body.SMPL_TO_CAMERA
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3))
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    left, up, front = np.eye(3) @ rotation.T  # SMPL x, y, z
    assert up[1] < 0, "SMPL up should be image up (camera -y)"
    assert left[0] > 0, "the subject's left should be on the image's right"
    assert front[2] < 0, "the subject's front should face the camera (camera -z)"
