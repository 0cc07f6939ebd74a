"""The arrays that define an SMPL-format body model: numpy only, no file I/O, no torch."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spin.body.joint_conventions import SMPL_OUTPUT_VERTEX_JOINTS, SPIN_VERTEX_JOINTS

__all__ = [
    "GENDERS",
    "NUM_COCO_KEYPOINTS",
    "NUM_EXTRA_JOINTS",
    "NUM_H36M_JOINTS",
    "NUM_JOINTS",
    "NUM_POSE_BASIS",
    "BodyModelData",
]

NUM_JOINTS = 24  # SMPL's kinematic tree
NUM_POSE_BASIS = (NUM_JOINTS - 1) * 9  # 207: rotation-matrix entries of the 23 non-root joints
NUM_EXTRA_JOINTS = 9  # rows of SPIN's J_regressor_extra
NUM_H36M_JOINTS = 17
NUM_COCO_KEYPOINTS = 23  # COCO-17 + big toe, small toe, heel per foot
GENDERS = ("neutral", "male", "female")


def _float_array(a) -> np.ndarray:
    a = np.asarray(a)
    return a if np.issubdtype(a.dtype, np.floating) else a.astype(np.float64)


@dataclass(frozen=True, eq=False)
class BodyModelData:
    """An SMPL-format body model as plain arrays (V vertices, F faces, NB shape betas).

    Attributes:
        name: display name ("open", "smpl", ...).
        v_template: ``(V, 3)`` rest-pose vertices, metres.
        faces: ``(F, 3)`` int64 vertex indices.
        shapedirs: ``(V, 3, NB)`` shape blend shapes.
        posedirs: ``(V, 3, 207)`` pose blend shapes (may be all zeros).
        J_regressor: ``(24, V)`` dense joint regressor.
        lbs_weights: ``(V, 24)`` skinning weights.
        parents: ``(24,)`` int64 kinematic tree, ``parents[0] == -1``, ``parents[i] < i``.
        vertex_ids: mesh vertex of each vertex joint (keys in
            ``SMPL_OUTPUT_VERTEX_JOINTS``; if any are given, the 11 face and foot
            keys SPIN uses are required; the fingertips are optional). May be empty.
        J_regressor_extra: ``(9, V)`` SPIN's extra regressor (rows in
            ``EXTRA_REGRESSOR_JOINTS`` order) or None.
        J_regressor_h36m: ``(17, V)`` H36M-17 regressor or None.
        keypoint_regressor_coco: ``(23, V)`` COCO-17 + 6 foot keypoints or None.
        gender: "neutral", "male" or "female".

    Arrays are converted with ``np.asarray`` (faces and parents to int64) and
    checked on construction; a mismatch raises ValueError saying what to fix.
    """

    name: str
    v_template: np.ndarray
    faces: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    lbs_weights: np.ndarray
    parents: np.ndarray
    vertex_ids: dict[str, int] = field(default_factory=dict)
    J_regressor_extra: np.ndarray | None = None
    J_regressor_h36m: np.ndarray | None = None
    keypoint_regressor_coco: np.ndarray | None = None
    gender: str = "neutral"

    def __post_init__(self) -> None:
        for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "lbs_weights"):
            object.__setattr__(self, key, _float_array(getattr(self, key)))
        for key in ("J_regressor_extra", "J_regressor_h36m", "keypoint_regressor_coco"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, _float_array(getattr(self, key)))
        object.__setattr__(self, "faces", np.asarray(self.faces).astype(np.int64, copy=False))
        object.__setattr__(self, "parents", np.asarray(self.parents).astype(np.int64, copy=False))
        object.__setattr__(
            self, "vertex_ids", {str(k): int(v) for k, v in dict(self.vertex_ids).items()}
        )
        self.validate()

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def num_betas(self) -> int:
        return int(self.shapedirs.shape[-1])

    def validate(self) -> None:
        """Check every array against the vertex count; raise ValueError listing all problems."""
        problems = _problems(self)
        if problems:
            raise ValueError(
                f"body model {self.name!r} is inconsistent:\n  - " + "\n  - ".join(problems)
            )


def _problems(d: BodyModelData) -> list[str]:
    if not isinstance(d.name, str) or not d.name:
        return [f"name must be a non-empty string, got {d.name!r}"]
    if d.v_template.ndim != 2 or d.v_template.shape[1] != 3 or d.v_template.shape[0] == 0:
        return [f"v_template must have shape (V, 3), got {d.v_template.shape}"]
    V = d.v_template.shape[0]
    out: list[str] = []

    def check_shape(key: str, expected: tuple, meaning: str) -> None:
        a = getattr(d, key)
        if a.shape != expected:
            out.append(f"{key} must have shape {meaning} = {expected}, got {a.shape}")

    if d.gender not in GENDERS:
        out.append(f"gender must be one of {GENDERS}, got {d.gender!r}")

    if d.faces.ndim != 2 or d.faces.shape[1] != 3:
        out.append(f"faces must have shape (F, 3), got {d.faces.shape}")
    elif d.faces.size and (d.faces.min() < 0 or d.faces.max() >= V):
        out.append(
            f"faces index vertices {d.faces.min()}..{d.faces.max()} but v_template "
            f"has {V} vertices (indices must be 0..{V - 1})"
        )

    # Vertex-indexed arrays: report a vertex-count mismatch in words.
    for key, vertex_axis in (("shapedirs", 0), ("posedirs", 0), ("lbs_weights", 0)):
        a = getattr(d, key)
        if a.ndim > vertex_axis and a.shape[vertex_axis] != V:
            out.append(f"{key} has {a.shape[vertex_axis]} vertices but v_template has {V}")
    if d.shapedirs.ndim != 3 or d.shapedirs.shape[1] != 3 or d.shapedirs.shape[2] == 0:
        out.append(f"shapedirs must have shape (V, 3, NB) with NB >= 1, got {d.shapedirs.shape}")
    if d.posedirs.shape[1:] != (3, NUM_POSE_BASIS):
        out.append(
            f"posedirs must have shape (V, 3, {NUM_POSE_BASIS}) (use zeros if the model has "
            f"no pose blend shapes), got {d.posedirs.shape}"
        )
    if d.lbs_weights.ndim != 2 or d.lbs_weights.shape[1] != NUM_JOINTS:
        out.append(f"lbs_weights must have shape (V, {NUM_JOINTS}), got {d.lbs_weights.shape}")

    for key, rows, meaning in (
        ("J_regressor", NUM_JOINTS, "(24, V)"),
        ("J_regressor_extra", NUM_EXTRA_JOINTS, "(9, V)"),
        ("J_regressor_h36m", NUM_H36M_JOINTS, "(17, V)"),
        ("keypoint_regressor_coco", NUM_COCO_KEYPOINTS, "(23, V)"),
    ):
        a = getattr(d, key)
        if a is None:
            continue
        if a.ndim == 2 and a.shape[0] == rows and a.shape[1] != V:
            out.append(f"{key} has {a.shape[1]} vertices but v_template has {V}")
        else:
            check_shape(key, (rows, V), meaning)

    if d.parents.shape != (NUM_JOINTS,):
        out.append(f"parents must have shape ({NUM_JOINTS},), got {d.parents.shape}")
    else:
        if d.parents[0] != -1:
            out.append(f"parents[0] must be -1 (the root), got {d.parents[0]}")
        bad = [i for i in range(1, NUM_JOINTS) if not 0 <= d.parents[i] < i]
        if bad:
            out.append(
                f"parents must list each joint after its parent (0 <= parents[i] < i); "
                f"joints {bad} break this"
            )

    unknown = sorted(set(d.vertex_ids) - set(SMPL_OUTPUT_VERTEX_JOINTS))
    if unknown:
        out.append(
            f"vertex_ids has unknown keys {unknown}; known: {list(SMPL_OUTPUT_VERTEX_JOINTS)}"
        )
    missing = [k for k in SPIN_VERTEX_JOINTS if k not in d.vertex_ids]
    if d.vertex_ids and missing:
        out.append(f"vertex_ids is missing {missing} (give all of {list(SPIN_VERTEX_JOINTS)})")
    out_of_range = {k: v for k, v in d.vertex_ids.items() if not 0 <= v < V}
    if out_of_range:
        out.append(f"vertex_ids {out_of_range} are outside 0..{V - 1}")

    if not out:
        for key in (
            "v_template",
            "shapedirs",
            "posedirs",
            "J_regressor",
            "lbs_weights",
            "J_regressor_extra",
            "J_regressor_h36m",
            "keypoint_regressor_coco",
        ):
            a = getattr(d, key)
            if a is not None and not np.isfinite(a).all():
                out.append(f"{key} contains NaN or infinite values")
    return out
