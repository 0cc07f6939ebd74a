"""spin-show-body: pose and shape a body model and render a labelled grid of views.

The first row varies the shape (T-pose), the second the pose (mean shape), front views
then side views. Joints (``joints_smpl``) are drawn as dots over every tile.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from spin.body import load_body_model
from spin.body.joint_conventions import get_convention
from spin.cli.errors import add_debug_option, reported
from spin.geometry import perspective_projection
from spin.render.backend import RenderBackendError
from spin.render.figures import draw_points, grid_image, save_png
from spin.render.mesh_renderer import (
    MeshRenderer,
    apply_transform,
    framing_distance,
    side_view_transform,
)

SMPL24 = get_convention("smpl24")
NUM_JOINTS = SMPL24.num_joints
# SMPL joint indices used by the poses below.
LEFT_HIP, RIGHT_HIP = SMPL24.index("left_hip"), SMPL24.index("right_hip")
LEFT_KNEE, RIGHT_KNEE = SMPL24.index("left_knee"), SMPL24.index("right_knee")
LEFT_SHOULDER, RIGHT_SHOULDER = SMPL24.index("left_shoulder"), SMPL24.index("right_shoulder")
LEFT_ELBOW, RIGHT_ELBOW = SMPL24.index("left_elbow"), SMPL24.index("right_elbow")

NCOLS = 6
MIN_TILE_SIZE = 16
# Focal length in tile widths: a ~28 degree field of view, so perspective stays mild.
FOCAL_PER_TILE = 2.0
# Fraction of the tile the widest front view may fill; others keep its scale.
FRAME_FILL = 0.9
BODY_COLOR = (0.65, 0.74, 0.86)
JOINT_RGB = (220, 40, 40)
JOINT_RADIUS_PER_TILE = 1.0 / 128
# SMPL's frame (y up, x the subject's left, z the subject's front) to the camera frame
# (x right, y down, z forward) of a camera on +z looking at the subject: a rotation of
# 180 degrees about x, so the subject stands upright, faces the camera and has their
# left on the image's right.
SMPL_TO_CAMERA = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class BodyView:
    """One tile: a pose (24, 3) axis-angle per SMPL joint, some betas, a view direction."""

    pose_name: str
    pose_rotvecs: np.ndarray
    betas: dict[int, float] = field(default_factory=dict)
    shape_name: str = ""
    side: bool = False

    @property
    def label(self) -> str:
        pose = f"{self.pose_name} (side)" if self.side else self.pose_name
        shape = self.shape_name or (
            ", ".join(f"betas[{i}]={v:+g}" for i, v in self.betas.items()) or "mean shape"
        )
        return f"{pose}\n{shape}"


def t_pose() -> np.ndarray:
    """(24, 3) zero axis-angle: SMPL's rest pose, arms out sideways."""
    return np.zeros((NUM_JOINTS, 3))


def a_pose() -> np.ndarray:
    """(24, 3) upper arms lowered 45 degrees from the T-pose."""
    pose = t_pose()
    pose[LEFT_SHOULDER] = _rotvec(z=-45)
    pose[RIGHT_SHOULDER] = _rotvec(z=45)
    return pose


def walking_pose() -> np.ndarray:
    """(24, 3) mid-stride: left leg forward, right leg back, arms swinging opposite.

    In SMPL's frame a negative rotation about x swings a downward limb forward, a
    positive one about x bends a knee backward.
    """
    pose = t_pose()
    pose[LEFT_HIP] = _rotvec(x=-25)
    pose[RIGHT_HIP] = _rotvec(x=15)
    pose[LEFT_KNEE] = _rotvec(x=10)
    pose[RIGHT_KNEE] = _rotvec(x=40)
    pose[LEFT_SHOULDER] = _rotvec(z=-70, then_x=20)
    pose[RIGHT_SHOULDER] = _rotvec(z=70, then_x=-20)
    pose[LEFT_ELBOW] = _rotvec(y=-40)
    pose[RIGHT_ELBOW] = _rotvec(y=40)
    return pose


def sitting_pose() -> np.ndarray:
    """(24, 3) seated: hips flexed 90 degrees, knees bent 90, forearms forward over the thighs."""
    pose = t_pose()
    pose[LEFT_HIP] = pose[RIGHT_HIP] = _rotvec(x=-90)
    pose[LEFT_KNEE] = pose[RIGHT_KNEE] = _rotvec(x=90)
    pose[LEFT_SHOULDER] = _rotvec(z=-75, then_x=-25)
    pose[RIGHT_SHOULDER] = _rotvec(z=75, then_x=-25)
    pose[LEFT_ELBOW] = _rotvec(y=-50)
    pose[RIGHT_ELBOW] = _rotvec(y=50)
    return pose


def default_views(num_betas: int, seed: int) -> list[BodyView]:
    """The tiles of the figure: shapes in the T-pose, then poses of the mean shape."""
    rng = np.random.default_rng(seed)
    random_betas = rng.standard_normal(num_betas)
    views = [
        BodyView("T-pose", t_pose()),
        BodyView("T-pose", t_pose(), {0: 2.0}),
        BodyView("T-pose", t_pose(), {0: -2.0}),
        BodyView("T-pose", t_pose(), {1: 2.0}),
        BodyView("T-pose", t_pose(), {1: -2.0}),
        BodyView(
            "T-pose",
            t_pose(),
            dict(enumerate(random_betas.tolist())),
            shape_name=f"random betas, seed {seed}",
        ),
    ]
    for side in (False, True):
        views += [
            BodyView("A-pose", a_pose(), side=side),
            BodyView("walking", walking_pose(), side=side),
            BodyView("sitting", sitting_pose(), side=side),
        ]
    return views


def pose_bodies(model, views: Sequence[BodyView]) -> tuple[np.ndarray, np.ndarray]:
    """Run the body model on every view.

    Returns:
        vertices (N, V, 3) and joints (N, 24, 3), metres in SMPL's frame.
    """
    reference = next(buffer for buffer in model.buffers() if buffer.is_floating_point())
    dtype, device = reference.dtype, reference.device
    pose_rotvecs = torch.tensor(
        np.stack([view.pose_rotvecs.reshape(-1) for view in views]), dtype=dtype, device=device
    )
    betas = torch.zeros(len(views), model.num_betas, dtype=dtype, device=device)
    for row, view in enumerate(views):
        for index, value in view.betas.items():
            if index >= model.num_betas:
                raise ValueError(
                    f"view {view.label!r} sets betas[{index}]: the model has {model.num_betas}"
                )
            betas[row, index] = value
    transl = torch.zeros(len(views), 3, dtype=dtype, device=device)
    with torch.no_grad():
        out = model(pose_rotvecs=pose_rotvecs, betas=betas, transl=transl)
    return out.vertices.cpu().numpy(), out.joints_smpl.cpu().numpy()


def render_views(
    vertices: np.ndarray,
    joints: np.ndarray,
    faces: np.ndarray,
    views: Sequence[BodyView],
    tile_size: int,
) -> list[np.ndarray]:
    """Render each body (vertices (N, V, 3), joints (N, J, 3), SMPL frame) as a tile.

    Front views share one camera distance (the one that frames the widest of them), so
    sizes compare across tiles; side views are framed one by one.
    """
    image_size = (tile_size, tile_size)
    centre = tile_size / 2.0
    focal = FOCAL_PER_TILE * tile_size
    intrinsics = np.array([[focal, 0.0, centre], [0.0, focal, centre], [0.0, 0.0, 1.0]])
    cam_vertices = vertices @ SMPL_TO_CAMERA.T
    cam_joints = joints @ SMPL_TO_CAMERA.T
    bbox_centres = 0.5 * (cam_vertices.min(axis=1) + cam_vertices.max(axis=1))
    front = [i for i, view in enumerate(views) if not view.side]
    distance = max(
        framing_distance(cam_vertices[i] - bbox_centres[i], intrinsics, image_size, FRAME_FILL)
        for i in front
    )
    radius = max(1.5, JOINT_RADIUS_PER_TILE * tile_size)
    background = np.full((tile_size, tile_size, 3), 255, dtype=np.uint8)
    tiles = []
    with MeshRenderer(image_size) as renderer:
        for i, view in enumerate(views):
            if view.side:
                transform = side_view_transform(
                    cam_vertices[i], intrinsics, image_size, fill=FRAME_FILL
                )
            else:
                transform = np.eye(4)
                transform[:3, 3] = np.array([0.0, 0.0, distance]) - bbox_centres[i]
            tile = renderer.render(
                apply_transform(transform, cam_vertices[i]),
                faces,
                intrinsics,
                color=BODY_COLOR,
                background=background,
            )
            moved_joints = torch.from_numpy(apply_transform(transform, cam_joints[i]))
            joints_2d = perspective_projection(moved_joints, torch.from_numpy(intrinsics)).numpy()
            tiles.append(draw_points(tile, joints_2d, JOINT_RGB, radius))
    return tiles


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spin-show-body",
        description=(
            "Pose and shape a body model and save a labelled grid of renders: shapes "
            "(betas) in the T-pose, then A-pose, walking and sitting from the front and "
            "the side, with joints as red dots."
        ),
    )
    parser.add_argument(
        "--model",
        default="open",
        help='body model: "open" (bundled), "open-lite" (bundled, low-poly) or the path '
        "to an SMPL model file or folder (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("outputs/open_body.png"),
        help="PNG to write (default: %(default)s)",
    )
    parser.add_argument(
        "--size", type=int, default=384, help="tile size in pixels (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random-shape tile (default: %(default)s)"
    )
    add_debug_option(parser)
    return parser


@reported("spin-show-body")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.size < MIN_TILE_SIZE:
        parser.error(f"--size must be at least {MIN_TILE_SIZE} pixels, got {args.size}")
    start = time.perf_counter()
    try:
        model = load_body_model(args.model)
    except FileNotFoundError as error:
        # The message says where models are looked for and how to get one.
        parser.exit(1, f"spin-show-body: {error}\n")
    views = default_views(model.num_betas, args.seed)
    vertices, joints = pose_bodies(model, views)
    try:
        tiles = render_views(vertices, joints, np.asarray(model.faces), views, args.size)
    except RenderBackendError as error:
        parser.exit(1, f"spin-show-body: {error}\n")
    figure = grid_image(tiles, NCOLS, labels=[view.label for view in views])
    path = save_png(args.out, figure)
    elapsed = time.perf_counter() - start

    heights = vertices[:, :, 1].max(axis=1) - vertices[:, :, 1].min(axis=1)
    print(f"wrote {path} ({figure.shape[1]}x{figure.shape[0]} px, {len(views)} views)")
    print(f"standing height of the mean shape (T-pose): {heights[0]:.3f} m")
    print(f"took {elapsed:.1f} s")
    return 0


def _rotvec(x: float = 0.0, y: float = 0.0, z: float = 0.0, then_x: float = 0.0) -> np.ndarray:
    """Axis-angle (3,) of rotations about x, y, z (degrees, applied in that order), then
    about x again by ``then_x`` degrees."""
    rotation = Rotation.from_euler("xyz", [x, y, z], degrees=True)
    rotation = Rotation.from_euler("x", then_x, degrees=True) * rotation
    return rotation.as_rotvec()


if __name__ == "__main__":
    raise SystemExit(main())
