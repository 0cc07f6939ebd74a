"""Tests of spin.demo, and a synthetic "photo" they share with the spin-demo CLI tests."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spin.body import load_body_model
from spin.body.joint_conventions import convert
from spin.geometry import (
    full_frame_intrinsics,
    perspective_projection,
    rotmat_to_rotvec,
    rotvec_to_rotmat,
)
from spin.render.mesh_renderer import MeshRenderer

PHOTO_SIZE = (240, 320)  # (width, height)
BACKGROUND_RGB = (90, 110, 95)


@dataclass(frozen=True)
class SyntheticPhoto:
    """The open-lite body rendered by a full-frame camera (focal = image diagonal).

    Attributes:
        image: ``(H, W, 3)`` uint8.
        keypoints: ``(17, 3)`` its projected COCO joints, confidence 1.
        silhouette: ``(H, W)`` bool, the pixels the body covers.
        pose_rotvecs, betas, cam_t: the body's parameters.
    """

    image: np.ndarray
    keypoints: np.ndarray
    silhouette: np.ndarray
    pose_rotvecs: torch.Tensor
    betas: torch.Tensor
    cam_t: torch.Tensor


def synthetic_photo() -> SyntheticPhoto:
    """A standing body turned 25 degrees, arms away from the sides, knee bent."""
    body = load_body_model("open-lite")
    pose = torch.zeros(1, 72)
    upright = rotvec_to_rotmat(torch.tensor([math.pi, 0.0, 0.0]))  # facing the camera
    turn = rotvec_to_rotmat(torch.tensor([0.0, math.radians(25.0), 0.0]))
    pose[0, :3] = rotmat_to_rotvec(upright @ turn)
    pose[0, 3 * 16 + 2] = -0.9  # left shoulder: arm down (SMPL's z)
    pose[0, 3 * 17 + 2] = 1.1  # right shoulder
    pose[0, 3 * 18 + 1] = -0.6  # left elbow bent
    pose[0, 3 * 5 + 0] = 0.5  # right knee bent
    betas = torch.zeros(1, 10)
    betas[0, 0] = 0.8
    cam_t = torch.tensor([[0.1, 0.15, 4.0]])
    intrinsics = full_frame_intrinsics(torch.tensor([[float(s) for s in PHOTO_SIZE]]))
    out = body(pose_rotvecs=pose, betas=betas, transl=cam_t)
    pixels = perspective_projection(out.joints_spin, intrinsics)[0]
    spin49 = torch.cat([pixels, torch.ones(49, 1)], dim=-1)
    keypoints = convert(spin49, "spin49", "coco17").double().numpy()
    vertices = out.vertices[0].double().numpy()
    k = intrinsics[0].double().numpy()
    background = np.empty((PHOTO_SIZE[1], PHOTO_SIZE[0], 3), np.uint8)
    background[:] = BACKGROUND_RGB
    with MeshRenderer(PHOTO_SIZE) as renderer:
        image = renderer.render(vertices, body.faces, k, background=background)
        silhouette = renderer.render_silhouette(vertices, body.faces, k)
    return SyntheticPhoto(image, keypoints, silhouette, pose, betas, cam_t)


def write_coco_keypoints(path: Path, keypoints: np.ndarray) -> Path:
    """A COCO-style annotation file (visibility flag 2) of ``keypoints`` (17, 3)."""
    flat = [[float(x), float(y), 2] for x, y, _ in keypoints]
    path.write_text(json.dumps({"annotations": [{"keypoints": sum(flat, [])}]}))
    return path
