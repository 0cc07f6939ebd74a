"""Named joint conventions and conversion between them.

A :class:`Convention` lists its joints twice: ``joint_names`` are the labels that
convention itself uses ("OP RHip", "left_hip", ...), unique within it; ``points``
name the body point each joint denotes, in one vocabulary shared by every
convention. :func:`convert` maps joints whose points are equal and nothing else.

Shared points (the same in every convention that has them):
    ``nose``, ``{left,right}_{eye,ear,shoulder,elbow,wrist,knee,ankle}``,
    ``{left,right}_{big_toe,small_toe,heel}``.
    As in SPIN, SMPL's shoulder..ankle joints count as the same points as the
    annotated COCO/OpenPose/LSP/H36M ones. MediaPipe's ``foot_index`` is taken as
    the big toe. BlazePose (MediaPipe) is a superset of COCO's keypoints.

Points that share a word but differ get a qualified name and are never identified:
    - hips: ``smpl_*_hip`` (SMPL's kinematic hip joints), ``op_*_hip`` (OpenPose;
      SPIN regresses them from the SMPL hips and ignores them when fitting) and
      ``dataset_*_hip`` (COCO, LSP, MPII, H36M and SPIN's "Right Hip"/"Left Hip",
      which its extra regressor produces; SPIN stores COCO and H36M hips there);
    - neck: ``smpl_neck``, ``op_neck`` (OpenPose's neck), ``lsp_neck``;
    - pelvis: ``smpl_pelvis``, ``op_mid_hip``, ``mpii_pelvis``, ``h36m_pelvis``;
    - head and thorax: ``smpl_head``, ``lsp_head_top``, ``h36m_head``,
      ``h36m_thorax``, ``mpii_thorax``;
    - H36M's "neck/nose" joint is ``h36m_neck_nose``; SPIN calls the same point
      "Jaw (H36M)".

The evaluation protocol that compares H36M-regressed joints in LSP order is a
separate, explicit table (:data:`H36M_TO_LSP14`): it pairs H36M's thorax with the
LSP neck and H36M's head with the LSP head top, which are not the same points, so
``convert(..., "h36m17", "lsp14")`` leaves those two joints empty.

SPIN's 49 joints hold some points twice (OpenPose block and ground-truth block,
e.g. "OP RKnee" and "Right Knee"). Converting *to* spin49 fills both slots;
converting *from* spin49 takes the later (ground-truth) slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "COCO_17",
    "Convention",
    "EXTRA_REGRESSOR_JOINTS",
    "H36M_17",
    "H36M_TO_LSP14",
    "JOINT_CONVENTIONS",
    "LSP_14",
    "MEDIAPIPE_33",
    "OPENPOSE_25",
    "SMPL_24",
    "SMPL_OUTPUT_VERTEX_JOINTS",
    "SPIN49_FROM_SMPL_OUTPUT",
    "SPIN_49",
    "SPIN_VERTEX_JOINTS",
    "conversion_indices",
    "convert",
    "flip_permutation",
    "get_convention",
]


@dataclass(frozen=True)
class Convention:
    """A named, ordered list of joints.

    ``joint_names[i]`` is the convention's own label of joint ``i``;
    ``points[i]`` is the body point it denotes in the shared vocabulary.
    """

    name: str
    joint_names: tuple[str, ...]
    points: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.joint_names) != len(self.points):
            raise ValueError(
                f"convention {self.name!r}: {len(self.joint_names)} joint names but "
                f"{len(self.points)} points; give one point per joint"
            )
        if len(set(self.joint_names)) != len(self.joint_names):
            raise ValueError(f"convention {self.name!r}: joint names must be unique")

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def index(self, joint_name: str) -> int:
        """Position of a joint given its label in this convention."""
        try:
            return self.joint_names.index(joint_name)
        except ValueError:
            raise KeyError(
                f"convention {self.name!r} has no joint {joint_name!r}; "
                f"its joints are {list(self.joint_names)}"
            ) from None


def _convention(name: str, pairs: Sequence[tuple[str, str]]) -> Convention:
    return Convention(name, tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))


SMPL_24 = _convention(
    "smpl24",
    [
        ("pelvis", "smpl_pelvis"),
        ("left_hip", "smpl_left_hip"),
        ("right_hip", "smpl_right_hip"),
        ("spine1", "smpl_spine1"),
        ("left_knee", "left_knee"),
        ("right_knee", "right_knee"),
        ("spine2", "smpl_spine2"),
        ("left_ankle", "left_ankle"),
        ("right_ankle", "right_ankle"),
        ("spine3", "smpl_spine3"),
        ("left_foot", "smpl_left_foot"),
        ("right_foot", "smpl_right_foot"),
        ("neck", "smpl_neck"),
        ("left_collar", "smpl_left_collar"),
        ("right_collar", "smpl_right_collar"),
        ("head", "smpl_head"),
        ("left_shoulder", "left_shoulder"),
        ("right_shoulder", "right_shoulder"),
        ("left_elbow", "left_elbow"),
        ("right_elbow", "right_elbow"),
        ("left_wrist", "left_wrist"),
        ("right_wrist", "right_wrist"),
        ("left_hand", "smpl_left_hand"),
        ("right_hand", "smpl_right_hand"),
    ],
)

_OPENPOSE_25_PAIRS = [
    ("Nose", "nose"),
    ("Neck", "op_neck"),
    ("RShoulder", "right_shoulder"),
    ("RElbow", "right_elbow"),
    ("RWrist", "right_wrist"),
    ("LShoulder", "left_shoulder"),
    ("LElbow", "left_elbow"),
    ("LWrist", "left_wrist"),
    ("MidHip", "op_mid_hip"),
    ("RHip", "op_right_hip"),
    ("RKnee", "right_knee"),
    ("RAnkle", "right_ankle"),
    ("LHip", "op_left_hip"),
    ("LKnee", "left_knee"),
    ("LAnkle", "left_ankle"),
    ("REye", "right_eye"),
    ("LEye", "left_eye"),
    ("REar", "right_ear"),
    ("LEar", "left_ear"),
    ("LBigToe", "left_big_toe"),
    ("LSmallToe", "left_small_toe"),
    ("LHeel", "left_heel"),
    ("RBigToe", "right_big_toe"),
    ("RSmallToe", "right_small_toe"),
    ("RHeel", "right_heel"),
]
OPENPOSE_25 = _convention("openpose25", _OPENPOSE_25_PAIRS)

# SPIN's 24 "ground truth" joints: the dataset-style joints of LSP/MPII/H36M/COCO.
_SPIN_GT_24_PAIRS = [
    ("Right Ankle", "right_ankle"),
    ("Right Knee", "right_knee"),
    ("Right Hip", "dataset_right_hip"),
    ("Left Hip", "dataset_left_hip"),
    ("Left Knee", "left_knee"),
    ("Left Ankle", "left_ankle"),
    ("Right Wrist", "right_wrist"),
    ("Right Elbow", "right_elbow"),
    ("Right Shoulder", "right_shoulder"),
    ("Left Shoulder", "left_shoulder"),
    ("Left Elbow", "left_elbow"),
    ("Left Wrist", "left_wrist"),
    ("Neck (LSP)", "lsp_neck"),
    ("Top of Head (LSP)", "lsp_head_top"),
    ("Pelvis (MPII)", "mpii_pelvis"),
    ("Thorax (MPII)", "mpii_thorax"),
    ("Spine (H36M)", "h36m_spine"),
    ("Jaw (H36M)", "h36m_neck_nose"),
    ("Head (H36M)", "h36m_head"),
    ("Nose", "nose"),
    ("Left Eye", "left_eye"),
    ("Right Eye", "right_eye"),
    ("Left Ear", "left_ear"),
    ("Right Ear", "right_ear"),
]
SPIN_49 = _convention(
    "spin49", [("OP " + label, point) for label, point in _OPENPOSE_25_PAIRS] + _SPIN_GT_24_PAIRS
)

COCO_17 = _convention(
    "coco17",
    [
        ("nose", "nose"),
        ("left_eye", "left_eye"),
        ("right_eye", "right_eye"),
        ("left_ear", "left_ear"),
        ("right_ear", "right_ear"),
        ("left_shoulder", "left_shoulder"),
        ("right_shoulder", "right_shoulder"),
        ("left_elbow", "left_elbow"),
        ("right_elbow", "right_elbow"),
        ("left_wrist", "left_wrist"),
        ("right_wrist", "right_wrist"),
        ("left_hip", "dataset_left_hip"),
        ("right_hip", "dataset_right_hip"),
        ("left_knee", "left_knee"),
        ("right_knee", "right_knee"),
        ("left_ankle", "left_ankle"),
        ("right_ankle", "right_ankle"),
    ],
)

H36M_17 = _convention(
    "h36m17",
    [
        ("pelvis", "h36m_pelvis"),
        ("right_hip", "dataset_right_hip"),
        ("right_knee", "right_knee"),
        ("right_ankle", "right_ankle"),
        ("left_hip", "dataset_left_hip"),
        ("left_knee", "left_knee"),
        ("left_ankle", "left_ankle"),
        ("spine", "h36m_spine"),
        ("thorax", "h36m_thorax"),
        ("neck_nose", "h36m_neck_nose"),
        ("head", "h36m_head"),
        ("left_shoulder", "left_shoulder"),
        ("left_elbow", "left_elbow"),
        ("left_wrist", "left_wrist"),
        ("right_shoulder", "right_shoulder"),
        ("right_elbow", "right_elbow"),
        ("right_wrist", "right_wrist"),
    ],
)

LSP_14 = _convention(
    "lsp14",
    [
        ("right_ankle", "right_ankle"),
        ("right_knee", "right_knee"),
        ("right_hip", "dataset_right_hip"),
        ("left_hip", "dataset_left_hip"),
        ("left_knee", "left_knee"),
        ("left_ankle", "left_ankle"),
        ("right_wrist", "right_wrist"),
        ("right_elbow", "right_elbow"),
        ("right_shoulder", "right_shoulder"),
        ("left_shoulder", "left_shoulder"),
        ("left_elbow", "left_elbow"),
        ("left_wrist", "left_wrist"),
        ("neck", "lsp_neck"),
        ("head_top", "lsp_head_top"),
    ],
)

MEDIAPIPE_33 = _convention(
    "mediapipe33",
    [
        ("nose", "nose"),
        ("left_eye_inner", "mp_left_eye_inner"),
        ("left_eye", "left_eye"),
        ("left_eye_outer", "mp_left_eye_outer"),
        ("right_eye_inner", "mp_right_eye_inner"),
        ("right_eye", "right_eye"),
        ("right_eye_outer", "mp_right_eye_outer"),
        ("left_ear", "left_ear"),
        ("right_ear", "right_ear"),
        ("mouth_left", "mp_mouth_left"),
        ("mouth_right", "mp_mouth_right"),
        ("left_shoulder", "left_shoulder"),
        ("right_shoulder", "right_shoulder"),
        ("left_elbow", "left_elbow"),
        ("right_elbow", "right_elbow"),
        ("left_wrist", "left_wrist"),
        ("right_wrist", "right_wrist"),
        ("left_pinky", "mp_left_pinky"),
        ("right_pinky", "mp_right_pinky"),
        ("left_index", "mp_left_index"),
        ("right_index", "mp_right_index"),
        ("left_thumb", "mp_left_thumb"),
        ("right_thumb", "mp_right_thumb"),
        ("left_hip", "dataset_left_hip"),
        ("right_hip", "dataset_right_hip"),
        ("left_knee", "left_knee"),
        ("right_knee", "right_knee"),
        ("left_ankle", "left_ankle"),
        ("right_ankle", "right_ankle"),
        ("left_heel", "left_heel"),
        ("right_heel", "right_heel"),
        ("left_foot_index", "left_big_toe"),
        ("right_foot_index", "right_big_toe"),
    ],
)

JOINT_CONVENTIONS: dict[str, Convention] = {
    c.name: c for c in (SMPL_24, SPIN_49, OPENPOSE_25, COCO_17, H36M_17, LSP_14, MEDIAPIPE_33)
}

# --- How a body model builds SPIN's 49 joints -------------------------------------------

#: Mesh-vertex joints in smplx's order (keys of ``BodyModelData.vertex_ids``).
SMPL_OUTPUT_VERTEX_JOINTS: tuple[str, ...] = (
    "nose",
    "reye",
    "leye",
    "rear",
    "lear",
    "LBigToe",
    "LSmallToe",
    "LHeel",
    "RBigToe",
    "RSmallToe",
    "RHeel",
    "lthumb",
    "lindex",
    "lmiddle",
    "lring",
    "lpinky",
    "rthumb",
    "rindex",
    "rmiddle",
    "rring",
    "rpinky",
)
#: The vertex joints SPIN's 49 joints use (the fingertips are not used).
SPIN_VERTEX_JOINTS: tuple[str, ...] = SMPL_OUTPUT_VERTEX_JOINTS[:11]

#: Rows of SPIN's extra joint regressor (``J_regressor_extra.npy``), in order.
EXTRA_REGRESSOR_JOINTS: tuple[str, ...] = (
    "Right Hip",
    "Left Hip",
    "Neck (LSP)",
    "Top of Head (LSP)",
    "Pelvis (MPII)",
    "Thorax (MPII)",
    "Spine (H36M)",
    "Jaw (H36M)",
    "Head (H36M)",
)

#: Source of each SPIN-49 joint, indexing the concatenation
#: ``[24 SMPL joints, 21 vertex joints (SMPL_OUTPUT_VERTEX_JOINTS), 9 extra-regressor rows]``
#: (SPIN's convention; 45 + row for the extra regressor).
SPIN49_FROM_SMPL_OUTPUT: tuple[int, ...] = (
    # OpenPose BODY_25
    24, 12, 17, 19, 21, 16, 18, 20, 0, 2, 5, 8, 1, 4, 7, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34,
    # ground truth
    8, 5, 45, 46, 4, 7, 21, 19, 17, 16, 18, 20, 47, 48, 49, 50, 51, 52, 53, 24, 26, 25, 28, 27,
)  # fmt: skip

#: Evaluation protocol: the 14 LSP-order joints taken from H36M-17 joints
#: (H36M thorax stands for the LSP neck, H36M head for the LSP head top).
H36M_TO_LSP14: tuple[int, ...] = (3, 2, 1, 4, 5, 6, 16, 15, 14, 11, 12, 13, 8, 10)


# --- Functions ------------------------------------------------------------------------


def get_convention(convention: str | Convention) -> Convention:
    """Look a convention up by name (``"smpl24"``, ``"spin49"``, ...) or pass one through."""
    if isinstance(convention, Convention):
        return convention
    try:
        return JOINT_CONVENTIONS[convention]
    except KeyError:
        raise KeyError(
            f"unknown joint convention {convention!r}; known: {sorted(JOINT_CONVENTIONS)}"
        ) from None


def conversion_indices(src: str | Convention, dst: str | Convention) -> list[int]:
    """For each ``dst`` joint, the ``src`` joint denoting the same point, or -1 if none.

    Converting a convention to itself is the identity. When ``src`` holds a point
    more than once (spin49), the later joint is used.
    """
    src_c, dst_c = get_convention(src), get_convention(dst)
    if src_c == dst_c:
        return list(range(src_c.num_joints))
    position = {point: i for i, point in enumerate(src_c.points)}  # later wins
    return [position.get(point, -1) for point in dst_c.points]


def convert(keypoints, src: str | Convention, dst: str | Convention):
    """Reorder keypoints from one convention to another by the points they denote.

    Args:
        keypoints: ``(..., J_src, C)`` torch tensor or numpy array; C is 2 (x, y),
            3 (x, y, confidence or x, y, z) or 4 (x, y, z, confidence).
        src, dst: convention names (see :data:`JOINT_CONVENTIONS`) or conventions.

    Returns:
        ``(..., J_dst, C)`` of the same type, dtype and device. Joints of ``dst``
        with no counterpart in ``src`` are all zeros, so their confidence is 0.
    """
    src_c, dst_c = get_convention(src), get_convention(dst)
    if keypoints.ndim < 2 or keypoints.shape[-2] != src_c.num_joints:
        raise ValueError(
            f"expected keypoints of shape (..., {src_c.num_joints}, C) for convention "
            f"{src_c.name!r}, got {tuple(keypoints.shape)}; check the source convention"
        )
    indices = conversion_indices(src_c, dst_c)
    gather = [max(i, 0) for i in indices]
    found = [i >= 0 for i in indices]
    if isinstance(keypoints, torch.Tensor):
        out = keypoints.index_select(-2, torch.tensor(gather, device=keypoints.device))
        mask = torch.tensor(found, device=keypoints.device)[:, None]
        return torch.where(mask, out, torch.zeros((), dtype=out.dtype, device=out.device))
    keypoints = np.asarray(keypoints)
    out = np.take(keypoints, gather, axis=-2)
    return np.where(np.asarray(found)[:, None], out, np.zeros((), dtype=out.dtype))


def _mirror_point(point: str) -> str:
    swap = {"left": "right", "right": "left"}
    return "_".join(swap.get(token, token) for token in point.split("_"))


def flip_permutation(convention: str | Convention) -> list[int]:
    """Left/right swap: ``flipped[..., i, :] = keypoints[..., perm[i], :]``.

    Joints on the midline map to themselves. Where a point occurs several times
    (spin49's two blocks), its k-th occurrence maps to the k-th occurrence of the
    mirrored point, so each block stays in place. The result is an involution.
    """
    conv = get_convention(convention)
    occurrences: dict[str, list[int]] = {}
    for i, point in enumerate(conv.points):
        occurrences.setdefault(point, []).append(i)
    perm = []
    for i, point in enumerate(conv.points):
        rank = occurrences[point].index(i)
        mirrored = occurrences.get(_mirror_point(point), [])
        if len(mirrored) != len(occurrences[point]):
            raise ValueError(
                f"convention {conv.name!r}: joint {conv.joint_names[i]!r} has no mirror "
                f"image {_mirror_point(point)!r}"
            )
        perm.append(mirrored[rank])
    return perm
