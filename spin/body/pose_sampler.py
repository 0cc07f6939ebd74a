"""Plausible everyday body poses in SMPL's axis-angle convention, within anatomical ranges.

Clinical angles
    Each SMPL joint but the pelvis has three signed angles in degrees, its *clinical
    angles* (``(..., 24, 3)``; the pelvis row, SMPL's global orientation, is unused):
    two swing angles and one twist. Each angle belongs to a pair of opposite clinical
    motions, e.g. hip flexion (positive) / extension (negative); :data:`JOINT_RANGES`
    names them and :func:`motion_axis` finds one by name.

    A joint's rotation relative to its parent is ``R = S T N`` (swing-twist):

    - ``N``: the clinical neutral posture relative to SMPL's rest. SMPL rests in a
      T-pose, so for the shoulders ``N`` lowers the arm to the side (90 degrees about
      -z for the left arm); every other joint is neutral at rest.
    - ``T``: a twist by the third angle about the segment's long axis (in the neutral
      posture), e.g. the humerus for internal/external rotation of the shoulder.
    - ``S``: a swing whose rotation vector, perpendicular to that axis, has the first
      two angles as its components on the joint's two swing axes.

    Axes are SMPL's (y up, x the subject's left, z front); joints rotate about
    world-aligned axes in the rest pose. :data:`JOINT_RANGES` defines the left and
    midline joints; a right joint is the mirror image of its left twin (``x -> -x``:
    its axis-angle vector has y and z negated), so "flexion" means the same motion on
    both sides and mirroring a pose never leaves the ranges.

Ranges of motion
    Per angle a maximum in each direction. Shoulders and hips are ball joints: their
    limb direction must lie inside a cone whose half-angle is interpolated linearly,
    in the plane of elevation, between the four clinical maxima (so a flexed hip may
    still abduct, the arm may cross the chest); their twist and every other joint's
    three angles are boxes. The swing-twist decomposition is singular only for a swing
    of 180 degrees (an arm straight overhead); samples keep swings below
    :data:`MAX_SWING_DEG`.

    Sources (normal adult ranges, rounded as usually tabulated):

    - AAOS, *Joint Motion: Method of Measuring and Recording* (1965), and Greene &
      Heckman, *The Clinical Measurement of Joint Motion* (AAOS, 1994): shoulder,
      elbow, forearm, wrist, hip, knee, ankle, subtalar and toe (MTP) ranges.
    - AMA, *Guides to the Evaluation of Permanent Impairment*, 5th ed. (2001), ch. 15:
      cervical (flexion 50, extension 60, lateral bending 45, rotation 80), thoracic
      and lumbar ranges. The spine's totals are split over SMPL's spine1 (lumbar) and
      spine2/spine3 (thoracic), the cervical ones equally over neck and head.
    - No table covers SMPL's collar, hand (finger block) or foot (toe block) joints,
      nor knee/elbow varus-valgus and tibial rotation: those ranges are small values
      chosen here, marked "ours" below.

Sampling
    :func:`sample_poses` draws an activity per sample (:data:`ACTIVITY_WEIGHTS`),
    builds its template (mean clinical angles with the activity's own variation and
    couplings, e.g. opposite arm and leg swing when walking), adds per-angle noise,
    clips to the ranges, converts to axis-angle and mirrors half the poses left/right.
    Everything is numpy float64 and deterministic given the generator; no body model
    is needed. The global orientation is zero (pelvis upright, facing +z).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from spin.body.joint_conventions import SMPL_24, flip_permutation

__all__ = [
    "ACTIVITY_WEIGHTS",
    "JOINT_RANGES",
    "MAX_SWING_DEG",
    "JointRange",
    "clinical_to_pose",
    "clip_to_ranges",
    "joint_limit_violation",
    "motion_axis",
    "pose_to_clinical",
    "sample_poses",
]

NUM_JOINTS = SMPL_24.num_joints
POSE_SIZE = 3 * NUM_JOINTS

# Swings are kept below this when clipping (the swing-twist decomposition is singular
# at 180 degrees, an arm straight overhead).
MAX_SWING_DEG = 175.0
# Clipping stops this far inside a limit, so clipped poses have a violation of exactly 0
# despite float round-off in the axis-angle round trip.
CLIP_MARGIN_DEG = 1e-6
# Per-sample noise added to every template: a Gaussian with this fraction of the
# joint's mean range (per angle) as standard deviation.
NOISE_FRACTION = 0.05
# The "random" activity: angles drawn around neutral with this fraction of each
# directional limit as standard deviation.
RANDOM_FRACTION = 0.3
MIRROR_PROBABILITY = 0.5

# --- Ranges of motion ----------------------------------------------------------------------

_AXES = {
    "x": np.array([1.0, 0.0, 0.0]),
    "y": np.array([0.0, 1.0, 0.0]),
    "z": np.array([0.0, 0.0, 1.0]),
}


def _axis(spec: str) -> np.ndarray:
    """``"+x"``, ``"-z"``, ... as a unit vector in SMPL's frame."""
    sign = {"+": 1.0, "-": -1.0}[spec[0]]
    return sign * _AXES[spec[1]]


@dataclass(frozen=True)
class JointRange:
    """Range of motion of one SMPL joint (left side or midline) as three clinical angles.

    Attributes:
        joint: SMPL-24 joint name.
        axes: rotation axes in SMPL's rest frame, ``"+x"``, ``"-y"``, ...: swing 1, swing 2,
            twist (the segment's long axis). A positive angle rotates about the axis by
            the right-hand rule and is the first motion of the pair.
        motions: (positive, negative) motion names per angle.
        limits: (positive maximum, negative maximum) in degrees per angle, both >= 0.
        cone: ball joint: the swing is limited by a cone interpolated between the four
            swing maxima instead of a box.
        neutral_deg: axis-angle vector (degrees) of the clinical neutral posture
            relative to SMPL's rest.
    """

    joint: str
    axes: tuple[str, str, str]
    motions: tuple[tuple[str, str], tuple[str, str], tuple[str, str]]
    limits: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]
    cone: bool = False
    neutral_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def axis_vectors(self) -> np.ndarray:
        """``(3, 3)`` unit axes as rows: swing 1, swing 2, twist."""
        return np.stack([_axis(spec) for spec in self.axes])

    @property
    def upper(self) -> np.ndarray:
        """``(3,)`` largest angle per axis (degrees)."""
        return np.array([pos for pos, _ in self.limits])

    @property
    def lower(self) -> np.ndarray:
        """``(3,)`` smallest angle per axis (degrees)."""
        return -np.array([neg for _, neg in self.limits])


_FLEXION = ("flexion", "extension")
_ABDUCTION = ("abduction", "adduction")
_ROTATION = ("internal_rotation", "external_rotation")
_LATERAL = ("left_lateral_bending", "right_lateral_bending")
_AXIAL = ("left_rotation", "right_rotation")
_FOREARM = ("pronation", "supination")
_DEVIATION = ("radial_deviation", "ulnar_deviation")
_VALGUS = ("valgus", "varus")
# Trunk, neck and head: flexion bends forward (+x), left lateral bending tilts the
# segment above toward +x (-z), left rotation turns its front toward +x (+y).
_MIDLINE_AXES = ("+x", "-z", "+y")

#: Ranges of motion of the left and midline joints (right joints mirror the left ones).
#: Degrees, (positive, negative) maxima per angle; see the module docstring for sources.
JOINT_RANGES: dict[str, JointRange] = {
    r.joint: r
    for r in (
        # AAOS: flexion 120, extension 30, abduction 45, adduction 30, rotation 45 / 45.
        # -x swings the thigh forward, +z swings the left thigh out, -y turns its front
        # medially (internal rotation).
        JointRange(
            "left_hip",
            ("-x", "+z", "-y"),
            (_FLEXION, _ABDUCTION, _ROTATION),
            ((120, 30), (45, 30), (45, 45)),
            cone=True,
        ),
        # AMA lumbar: flexion 60, extension 25, lateral bending 25; rotation ~10 (ours).
        JointRange(
            "spine1", _MIDLINE_AXES, (_FLEXION, _LATERAL, _AXIAL), ((60, 25), (25, 25), (10, 10))
        ),
        # AAOS: flexion 135 (+x swings the shin back); hyperextension 5, valgus/varus 5
        # and tibial rotation 10 are ours.
        JointRange(
            "left_knee",
            ("+x", "+z", "-y"),
            (_FLEXION, _VALGUS, _ROTATION),
            ((135, 5), (5, 5), (10, 10)),
        ),
        # AMA thoracic (~50 flexion, ~30 extension and lateral bending, 30 rotation),
        # half on spine2, half on spine3.
        JointRange(
            "spine2", _MIDLINE_AXES, (_FLEXION, _LATERAL, _AXIAL), ((25, 15), (15, 15), (15, 15))
        ),
        # AAOS: dorsiflexion 20, plantarflexion 50 (-x lifts the toes); forefoot
        # abduction 10, adduction 20 (+y turns the left toes out); subtalar inversion 35,
        # eversion 15 (-z turns the left sole medially).
        JointRange(
            "left_ankle",
            ("-x", "+y", "-z"),
            (("dorsiflexion", "plantarflexion"), _ABDUCTION, ("inversion", "eversion")),
            ((20, 50), (10, 20), (35, 15)),
        ),
        JointRange(
            "spine3", _MIDLINE_AXES, (_FLEXION, _LATERAL, _AXIAL), ((25, 15), (15, 15), (15, 15))
        ),
        # Toe block (MTP; AAOS first toe: extension 70, flexion 45): SMPL's foot joint
        # moves all toes, so smaller (ours).
        JointRange(
            "left_foot",
            ("-x", "+y", "-z"),
            (("extension", "flexion"), _ABDUCTION, ("inversion", "eversion")),
            ((30, 20), (5, 5), (5, 5)),
        ),
        # AMA cervical: flexion 50, extension 60, lateral bending 45, rotation 80,
        # half on the neck, half on the head.
        JointRange(
            "neck", _MIDLINE_AXES, (_FLEXION, _LATERAL, _AXIAL), ((25, 30), (22.5, 22.5), (40, 40))
        ),
        # Clavicle (ours): +z raises the left shoulder, -y brings it forward, -x turns the
        # clavicle's top backward.
        JointRange(
            "left_collar",
            ("+z", "-y", "-x"),
            (
                ("elevation", "depression"),
                ("protraction", "retraction"),
                ("posterior_rotation", "anterior_rotation"),
            ),
            ((30, 10), (15, 15), (10, 10)),
        ),
        JointRange(
            "head", _MIDLINE_AXES, (_FLEXION, _LATERAL, _AXIAL), ((25, 30), (22.5, 22.5), (40, 40))
        ),
        # AAOS: flexion 180, extension 60, abduction 180, adduction 50, internal rotation
        # 70, external 90. Neutral = arm at the side (-90 about z from the T-pose); then
        # -x swings the arm forward, +z out to the side, -y (the humerus) turns its front
        # medially.
        JointRange(
            "left_shoulder",
            ("-x", "+z", "-y"),
            (_FLEXION, _ABDUCTION, _ROTATION),
            ((180, 60), (180, 50), (70, 90)),
            cone=True,
            neutral_deg=(0.0, 0.0, -90.0),
        ),
        # AAOS: elbow flexion 150 (-y swings the left forearm forward in the T-pose, palm
        # down), forearm pronation 80 / supination 80 (+x turns the thumb down);
        # hyperextension 5 and valgus/varus 10 are ours.
        JointRange(
            "left_elbow",
            ("-y", "+z", "+x"),
            (_FLEXION, _VALGUS, _FOREARM),
            ((150, 5), (10, 10), (80, 80)),
        ),
        # AAOS: wrist flexion 80, extension 70 (-z bends the palm-down hand down), radial
        # 20 / ulnar 30 deviation (-y swings it toward the thumb, +z); twist 20 (ours:
        # SMPL fits split forearm rotation between elbow and wrist).
        JointRange(
            "left_wrist",
            ("-z", "-y", "+x"),
            (_FLEXION, _DEVIATION, _FOREARM),
            ((80, 70), (20, 30), (20, 20)),
        ),
        # Finger block (ours): SMPL's hand joint bends all fingers at once.
        JointRange(
            "left_hand",
            ("-z", "-y", "+x"),
            (_FLEXION, _DEVIATION, _FOREARM),
            ((30, 10), (10, 10), (5, 5)),
        ),
    )
}


def _definition_joint(joint_name: str) -> tuple[str, bool]:
    """The :data:`JOINT_RANGES` key defining a joint and whether the joint mirrors it."""
    if joint_name.startswith("right_"):
        return "left_" + joint_name[len("right_") :], True
    return joint_name, False


def _joint_table() -> list[tuple[int, JointRange, bool]]:
    """Per SMPL joint but the pelvis: its index, range definition and whether it mirrors it."""
    table = []
    for index, name in enumerate(SMPL_24.joint_names[1:], start=1):
        key, mirrored = _definition_joint(name)
        table.append((index, JOINT_RANGES[key], mirrored))
    return table


_JOINT_TABLE = _joint_table()

# Axis-angle of a mirrored rotation (x -> -x): y and z negated.
_MIRROR_SIGNS = np.array([1.0, -1.0, -1.0])
_FLIP_PERMUTATION = flip_permutation(SMPL_24)


def motion_axis(joint: str, motion: str) -> tuple[int, float]:
    """Which clinical angle of ``joint`` holds ``motion``, and its sign.

    ``motion_axis("right_knee", "flexion") == (0, 1.0)``: the knee's first angle,
    positive. Right joints use their left twin's motion names.
    """
    key, _ = _definition_joint(joint)
    if key not in JOINT_RANGES:
        raise KeyError(
            f"no range of motion for joint {joint!r}; known joints: "
            f"{[n for n in SMPL_24.joint_names if n != 'pelvis']}"
        )
    definition = JOINT_RANGES[key]
    for axis, (positive, negative) in enumerate(definition.motions):
        if motion == positive:
            return axis, 1.0
        if motion == negative:
            return axis, -1.0
    names = [name for pair in definition.motions for name in pair]
    raise KeyError(f"joint {joint!r} has no motion {motion!r}; its motions are {names}")


# --- Clinical angles <-> axis-angle -----------------------------------------------------------


def _check_angles(angles) -> np.ndarray:
    angles = np.asarray(angles, dtype=np.float64)
    if angles.ndim < 2 or angles.shape[-2:] != (NUM_JOINTS, 3):
        raise ValueError(
            f"expected clinical angles of shape (..., {NUM_JOINTS}, 3) (degrees per SMPL "
            f"joint), got {angles.shape}"
        )
    return angles


def _check_pose(pose_rotvecs) -> np.ndarray:
    pose = np.asarray(pose_rotvecs, dtype=np.float64)
    if pose.ndim < 1 or pose.shape[-1] != POSE_SIZE:
        raise ValueError(
            f"expected pose_rotvecs of shape (..., {POSE_SIZE}) (24 SMPL joints, axis-angle, "
            f"global orientation first), got {pose.shape}"
        )
    return pose


def _rotation_from_angles(definition: JointRange, angles: np.ndarray) -> Rotation:
    """Rotations ``S T N`` of one joint from its clinical angles ``(N, 3)`` in degrees."""
    axes = definition.axis_vectors
    radians = np.deg2rad(angles)
    swing = radians[:, :1] * axes[0] + radians[:, 1:2] * axes[1]
    twist = radians[:, 2:3] * axes[2]
    neutral = Rotation.from_rotvec(np.deg2rad(definition.neutral_deg))
    return Rotation.from_rotvec(swing) * Rotation.from_rotvec(twist) * neutral


def _angles_from_rotation(definition: JointRange, rotation: Rotation) -> np.ndarray:
    """Clinical angles ``(N, 3)`` (degrees) of rotations of one joint: swing-twist about
    the joint's twist axis, after removing the neutral posture."""
    axes = definition.axis_vectors
    relative = rotation * Rotation.from_rotvec(np.deg2rad(definition.neutral_deg)).inv()
    quat = relative.as_quat()  # (N, 4) x, y, z, w
    quat = quat * np.where(quat[:, 3:] < 0, -1.0, 1.0)
    twist = 2.0 * np.arctan2(quat[:, :3] @ axes[2], quat[:, 3])  # (-pi, pi]
    swing = (relative * Rotation.from_rotvec(twist[:, None] * axes[2]).inv()).as_rotvec()
    return np.rad2deg(np.stack([swing @ axes[0], swing @ axes[1], twist], axis=1))


def clinical_to_pose(angles) -> np.ndarray:
    """Axis-angle SMPL pose from clinical angles.

    Args:
        angles: ``(..., 24, 3)`` clinical angles in degrees (see the module docstring);
            the pelvis row is ignored.

    Returns:
        ``(..., 72)`` float64 axis-angle pose, global orientation (first 3) zero.
    """
    angles = _check_angles(angles)
    flat = angles.reshape(-1, NUM_JOINTS, 3)
    pose = np.zeros_like(flat)
    for index, definition, mirrored in _JOINT_TABLE:
        rotvecs = _rotation_from_angles(definition, flat[:, index]).as_rotvec()
        pose[:, index] = rotvecs * _MIRROR_SIGNS if mirrored else rotvecs
    return pose.reshape(*angles.shape[:-2], POSE_SIZE)


def pose_to_clinical(pose_rotvecs) -> np.ndarray:
    """Clinical angles of an axis-angle SMPL pose (inverse of :func:`clinical_to_pose`).

    Args:
        pose_rotvecs: ``(..., 72)`` axis-angle pose, global orientation first (ignored).

    Returns:
        ``(..., 24, 3)`` float64 clinical angles in degrees; the pelvis row is zero.
        Twists are in ``(-180, 180]``.
    """
    pose = _check_pose(pose_rotvecs)
    flat = pose.reshape(-1, NUM_JOINTS, 3)
    angles = np.zeros_like(flat)
    for index, definition, mirrored in _JOINT_TABLE:
        rotvecs = flat[:, index] * _MIRROR_SIGNS if mirrored else flat[:, index]
        angles[:, index] = _angles_from_rotation(definition, Rotation.from_rotvec(rotvecs))
    return angles.reshape(*pose.shape[:-1], NUM_JOINTS, 3)


# --- Limits ---------------------------------------------------------------------------------


def _cone_limit(definition: JointRange, plane: np.ndarray) -> np.ndarray:
    """Largest swing (degrees) of a ball joint in the plane of elevation ``plane``
    (radians, ``atan2(swing 2, swing 1)``): linear between the four clinical maxima."""
    (pos1, neg1), (pos2, neg2), _ = definition.limits
    anchors = np.array([-np.pi, -np.pi / 2, 0.0, np.pi / 2, np.pi])
    return np.interp(plane, anchors, [neg1, neg2, pos1, pos2, neg1])


def _excess(definition: JointRange, angles: np.ndarray) -> np.ndarray:
    """Degrees beyond the range, ``(N,)``, for one joint's clinical angles ``(N, 3)``."""
    over = np.maximum(angles - definition.upper, 0.0) + np.maximum(definition.lower - angles, 0.0)
    if not definition.cone:
        return over.sum(axis=1)
    swing = np.hypot(angles[:, 0], angles[:, 1])
    limit = _cone_limit(definition, np.arctan2(angles[:, 1], angles[:, 0]))
    return np.maximum(swing - limit, 0.0) + over[:, 2]


def joint_limit_violation(pose_rotvecs, per_joint: bool = False):
    """How far a pose goes beyond the ranges of motion, in degrees.

    For each joint, the sum over its clinical angles of the degrees beyond their limits
    (for shoulders and hips: the swing beyond the cone, plus the twist beyond its
    limits). The global orientation is not judged. Not differentiable.

    Args:
        pose_rotvecs: ``(..., 72)`` axis-angle SMPL pose, numpy array or torch tensor.
        per_joint: return the violation of each joint instead of their sum.

    Returns:
        ``(...)`` (or ``(..., 24)`` with ``per_joint``) degrees, 0 within range; a numpy
        float64 array, or for a tensor input a tensor of its dtype and device.
    """
    torch_input = _is_tensor(pose_rotvecs)
    pose = pose_rotvecs.detach().cpu().numpy() if torch_input else pose_rotvecs
    angles = pose_to_clinical(pose)
    flat = angles.reshape(-1, NUM_JOINTS, 3)
    excess = np.zeros(flat.shape[:2])
    for index, definition, _ in _JOINT_TABLE:
        excess[:, index] = _excess(definition, flat[:, index])
    excess = excess.reshape(angles.shape[:-1])
    result = excess if per_joint else excess.sum(axis=-1)
    if torch_input:
        import torch

        return torch.as_tensor(result, dtype=pose_rotvecs.dtype, device=pose_rotvecs.device)
    return result


def _is_tensor(value) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def clip_to_ranges(angles) -> np.ndarray:
    """Clinical angles ``(..., 24, 3)`` (degrees) clipped into the ranges of motion.

    Box limits clip each angle; ball-joint swings are shortened to the cone (and to
    :data:`MAX_SWING_DEG`) keeping their direction. Returns a float64 copy.
    """
    angles = _check_angles(angles).copy()
    flat = angles.reshape(-1, NUM_JOINTS, 3)
    for index, definition, _ in _JOINT_TABLE:
        joint = flat[:, index]
        joint[:] = np.clip(
            joint, definition.lower + CLIP_MARGIN_DEG, definition.upper - CLIP_MARGIN_DEG
        )
        if definition.cone:
            swing = np.hypot(joint[:, 0], joint[:, 1])
            limit = np.minimum(
                _cone_limit(definition, np.arctan2(joint[:, 1], joint[:, 0])), MAX_SWING_DEG
            )
            scale = np.minimum(1.0, (limit - CLIP_MARGIN_DEG) / np.maximum(swing, 1e-12))
            joint[:, :2] *= scale[:, None]
    return angles


def _mirror_pose(pose: np.ndarray) -> np.ndarray:
    """Mirror ``(N, 72)`` poses left/right: swap joints, negate y and z of each rotvec."""
    per_joint = pose.reshape(-1, NUM_JOINTS, 3)[:, _FLIP_PERMUTATION] * _MIRROR_SIGNS
    return per_joint.reshape(pose.shape)


# --- Activity templates ---------------------------------------------------------------------

# Share of a trunk motion taken by spine1 (lumbar), spine2 and spine3 (thoracic).
_TRUNK_SHARES = {
    "flexion": (0.5, 0.25, 0.25),
    "extension": (0.4, 0.3, 0.3),
    "left_lateral_bending": (0.4, 0.3, 0.3),
    "left_rotation": (0.2, 0.4, 0.4),
}
_TRUNK = ("spine1", "spine2", "spine3")


class _Angles:
    """Clinical angles ``(N, 24, 3)`` of one activity, written by motion name."""

    def __init__(self, num: int) -> None:
        self.values = np.zeros((num, NUM_JOINTS, 3))

    def add(self, joint: str, motion: str, degrees) -> None:
        axis, sign = motion_axis(joint, motion)
        self.values[:, SMPL_24.index(joint), axis] += sign * np.asarray(degrees, dtype=float)

    def add_pair(self, joint: str, motion: str, left, right=None) -> None:
        """``left_<joint>`` gets ``left``, ``right_<joint>`` gets ``right`` (default: same)."""
        self.add(f"left_{joint}", motion, left)
        self.add(f"right_{joint}", motion, left if right is None else right)

    def add_swing(self, joint: str, elevation, plane) -> None:
        """Swing a ball joint by ``elevation`` degrees in the plane of elevation ``plane``
        (degrees: 0 flexion, 90 abduction, -90 adduction, 180 extension)."""
        plane = np.deg2rad(plane)
        self.add(joint, "flexion", np.asarray(elevation) * np.cos(plane))
        self.add(joint, "abduction", np.asarray(elevation) * np.sin(plane))

    def add_trunk(self, motion: str, degrees) -> None:
        """Spread a trunk motion over spine1..3 (:data:`_TRUNK_SHARES`)."""
        for joint, share in zip(_TRUNK, _TRUNK_SHARES[motion], strict=True):
            self.add(joint, motion, share * np.asarray(degrees, dtype=float))

    def add_cervical(self, motion: str, degrees) -> None:
        """Spread a cervical motion equally over neck and head."""
        self.add("neck", motion, 0.5 * np.asarray(degrees, dtype=float))
        self.add("head", motion, 0.5 * np.asarray(degrees, dtype=float))


def _relaxed_arm(a: _Angles, rng: np.random.Generator, side: str, num: int) -> None:
    """Arm hanging at the side: slightly abducted, internally rotated, elbow a bit bent."""
    a.add(f"{side}_shoulder", "abduction", rng.normal(8, 5, num))
    a.add(f"{side}_shoulder", "flexion", rng.normal(3, 6, num))
    a.add(f"{side}_shoulder", "internal_rotation", rng.normal(10, 10, num))
    a.add(f"{side}_elbow", "flexion", rng.normal(15, 8, num))
    a.add(f"{side}_elbow", "pronation", rng.normal(0, 20, num))
    a.add(f"{side}_wrist", "flexion", rng.normal(5, 8, num))
    a.add(f"{side}_hand", "flexion", rng.normal(10, 5, num))


def _relaxed_head(a: _Angles, rng: np.random.Generator, num: int) -> None:
    a.add_cervical("flexion", rng.normal(5, 10, num))
    a.add_cervical("left_rotation", rng.normal(0, 20, num))
    a.add_cervical("left_lateral_bending", rng.normal(0, 5, num))


def _standing_legs(a: _Angles, rng: np.random.Generator, num: int) -> None:
    """Both feet on the ground, weight shifted a little to one side."""
    shift = rng.normal(0, 4, num)
    a.add_pair("hip", "abduction", 4 + shift, 4 - shift)
    a.add_pair("hip", "flexion", rng.normal(0, 4, num), rng.normal(0, 4, num))
    a.add_pair("hip", "external_rotation", rng.normal(5, 5, num), rng.normal(5, 5, num))
    a.add_pair("knee", "flexion", np.abs(rng.normal(3, 4, num)), np.abs(rng.normal(3, 4, num)))
    a.add_pair("ankle", "abduction", rng.normal(5, 4, num), rng.normal(5, 4, num))


def _standing(rng: np.random.Generator, num: int) -> np.ndarray:
    """Standing; arms relaxed, on the hips, crossed, or one arm gesturing."""
    a = _Angles(num)
    _standing_legs(a, rng, num)
    for side in ("left", "right"):
        _relaxed_arm(a, rng, side, num)
    _relaxed_head(a, rng, num)
    a.add_trunk("flexion", rng.normal(0, 4, num))
    relaxed = a.values.copy()

    hands_on_hips = _Angles(num)
    hands_on_hips.add_pair("shoulder", "abduction", rng.normal(40, 8, num))
    hands_on_hips.add_pair("shoulder", "extension", rng.normal(10, 8, num))
    hands_on_hips.add_pair("shoulder", "internal_rotation", rng.normal(35, 10, num))
    hands_on_hips.add_pair("elbow", "flexion", rng.normal(100, 12, num))

    crossed = _Angles(num)
    crossed.add_pair("shoulder", "flexion", rng.normal(35, 8, num))
    crossed.add_pair("shoulder", "internal_rotation", rng.normal(55, 8, num))
    crossed.add_pair("elbow", "flexion", rng.normal(115, 10, num))

    gesture = _Angles(num)
    gesture.add_swing("left_shoulder", rng.uniform(20, 100, num), rng.uniform(-20, 80, num))
    gesture.add("left_elbow", "flexion", rng.uniform(10, 110, num))

    arms = ("left_shoulder", "right_shoulder", "left_elbow", "right_elbow")
    rows = [SMPL_24.index(j) for j in arms]
    variant = rng.choice(4, size=num, p=[0.55, 0.15, 0.15, 0.15])
    out = relaxed.copy()
    for code, other in ((1, hands_on_hips), (2, crossed)):
        pick = variant == code
        out[np.ix_(pick, rows)] = other.values[np.ix_(pick, rows)]
    pick = variant == 3
    left = [SMPL_24.index("left_shoulder"), SMPL_24.index("left_elbow")]
    out[np.ix_(pick, left)] = gesture.values[np.ix_(pick, left)]
    return out


def _gait(rng: np.random.Generator, num: int, speed: str) -> np.ndarray:
    """Walking or running: one phase drives both legs (half a cycle apart) and the arms,
    which swing opposite to the leg on their side; the trunk counter-rotates."""
    phase = rng.uniform(0, 2 * np.pi, num)
    amplitude = rng.uniform(0.6, 1.0, num)
    running = speed == "running"
    # Hip flexion centre and swing, peak knee flexion in swing, elbow flexion (degrees).
    hip_mean, hip_swing = (20.0, 35.0) if running else (10.0, 20.0)
    knee_stance, knee_peak = (15.0, 95.0) if running else (5.0, 55.0)
    elbow = 90.0 if running else 20.0
    a = _Angles(num)
    for side, offset in (("left", 0.0), ("right", np.pi)):
        p = phase + offset
        a.add(f"{side}_hip", "flexion", hip_mean + hip_swing * amplitude * np.sin(p))
        # Knee: nearly straight at heel strike (sin p = 1), peaks early in swing.
        bump = ((1 + np.cos(p + 0.4)) / 2) ** 2
        a.add(f"{side}_knee", "flexion", knee_stance + knee_peak * amplitude * bump)
        a.add(f"{side}_ankle", "dorsiflexion", 5 * np.sin(p + np.pi / 2) - 5 * running)
        a.add(f"{side}_hip", "abduction", rng.normal(3, 2, num))
        # The arm swings opposite to the leg on the same side.
        arm_swing = (1.5 if running else 0.8) * hip_swing * amplitude * np.sin(p + np.pi)
        a.add(f"{side}_shoulder", "flexion", arm_swing)
        a.add(f"{side}_shoulder", "abduction", rng.normal(10, 4, num))
        a.add(f"{side}_shoulder", "internal_rotation", rng.normal(15, 8, num))
        a.add(
            f"{side}_elbow",
            "flexion",
            elbow + 0.3 * np.maximum(arm_swing, 0) + rng.normal(0, 8, num),
        )
        a.add(f"{side}_wrist", "flexion", rng.normal(0, 8, num))
    a.add_trunk("left_rotation", 6 * amplitude * np.sin(phase + np.pi))
    a.add_trunk("flexion", rng.normal(12 if running else 3, 4, num))
    a.add_cervical("flexion", rng.normal(0, 6, num))
    a.add_cervical("left_rotation", rng.normal(0, 10, num))
    return a.values


def _walking(rng: np.random.Generator, num: int) -> np.ndarray:
    return _gait(rng, num, "walking")


def _running(rng: np.random.Generator, num: int) -> np.ndarray:
    return _gait(rng, num, "running")


def _reaching(rng: np.random.Generator, num: int) -> np.ndarray:
    """The left arm reaches out (forward, to the side, up or across the body); the trunk
    leans and turns toward the target; sometimes a lunge."""
    a = _Angles(num)
    _standing_legs(a, rng, num)
    _relaxed_arm(a, rng, "right", num)
    plane = rng.uniform(-40, 100, num)
    a.add_swing("left_shoulder", rng.uniform(40, 150, num), plane)
    a.add("left_shoulder", "internal_rotation", rng.normal(0, 20, num))
    a.add("left_elbow", "flexion", rng.uniform(0, 40, num))
    a.add("left_wrist", "extension", rng.normal(10, 10, num))
    a.add_trunk("flexion", rng.uniform(0, 30, num))
    a.add_trunk("left_rotation", 0.25 * (plane - 20) + rng.normal(0, 5, num))
    a.add_cervical("left_rotation", 0.3 * (plane - 20) + rng.normal(0, 8, num))
    lunge = rng.random(num) < 0.3
    a.add("left_hip", "flexion", lunge * rng.uniform(20, 50, num))
    a.add("left_knee", "flexion", lunge * rng.uniform(20, 60, num))
    return a.values


def _arms_raised(rng: np.random.Generator, num: int) -> np.ndarray:
    """Both arms overhead (a quarter of the time only the left one), looking up a bit."""
    a = _Angles(num)
    _standing_legs(a, rng, num)
    elevation = rng.uniform(110, 175, num)
    plane = rng.uniform(0, 70, num)
    one_arm = rng.random(num) < 0.25
    for side in ("left", "right"):
        e = elevation + rng.normal(0, 8, num)
        p = plane + rng.normal(0, 10, num)
        if side == "right":
            e, p = np.where(one_arm, 0.0, e), np.where(one_arm, 0.0, p)
        a.add_swing(f"{side}_shoulder", e, p)
        a.add(f"{side}_shoulder", "external_rotation", rng.normal(20, 15, num))
        a.add(f"{side}_elbow", "flexion", rng.uniform(0, 50, num))
        a.add(f"{side}_collar", "elevation", 0.1 * e)
    right = [SMPL_24.index("right_shoulder"), SMPL_24.index("right_elbow")]
    relaxed = _Angles(num)
    _relaxed_arm(relaxed, rng, "right", num)
    a.values[np.ix_(one_arm, right)] = relaxed.values[np.ix_(one_arm, right)]
    a.add_trunk("extension", rng.normal(5, 5, num))
    a.add_cervical("extension", rng.normal(10, 10, num))
    return a.values


def _sitting(rng: np.random.Generator, num: int) -> np.ndarray:
    """Seated on a chair: hips and knees near 90 degrees (a fifth with the left leg
    crossed over the right), hands in the lap or on a desk."""
    a = _Angles(num)
    shared = rng.normal(0, 8, num)
    a.add_pair(
        "hip", "flexion", 90 + shared + rng.normal(0, 5, num), 90 + shared + rng.normal(0, 5, num)
    )
    a.add_pair("hip", "abduction", rng.normal(8, 6, num), rng.normal(8, 6, num))
    a.add_pair("hip", "external_rotation", rng.normal(5, 8, num), rng.normal(5, 8, num))
    knees = rng.normal(90, 10, num)
    a.add_pair("knee", "flexion", knees + rng.normal(0, 10, num), knees + rng.normal(0, 10, num))
    a.add_pair("ankle", "dorsiflexion", rng.normal(0, 8, num), rng.normal(0, 8, num))
    crossed = rng.random(num) < 0.2
    a.add("left_hip", "adduction", crossed * 25.0)
    a.add("left_hip", "flexion", crossed * 10.0)
    a.add("left_ankle", "plantarflexion", crossed * 15.0)
    a.add_trunk("flexion", rng.normal(8, 10, num))
    a.add_pair("shoulder", "flexion", rng.normal(30, 15, num), rng.normal(30, 15, num))
    a.add_pair("shoulder", "abduction", rng.normal(10, 6, num), rng.normal(10, 6, num))
    a.add_pair("shoulder", "internal_rotation", rng.normal(30, 15, num), rng.normal(30, 15, num))
    a.add_pair("elbow", "flexion", rng.normal(70, 20, num), rng.normal(70, 20, num))
    a.add_pair("wrist", "extension", rng.normal(10, 10, num), rng.normal(10, 10, num))
    _relaxed_head(a, rng, num)
    return a.values


def _crouching(rng: np.random.Generator, num: int) -> np.ndarray:
    """Crouching to a full squat: hips, knees and ankles flex together with the depth,
    knees apart, trunk leaning forward, arms forward for balance."""
    a = _Angles(num)
    depth = rng.uniform(0.3, 1.0, num)
    a.add_pair("hip", "flexion", 40 + 80 * depth + rng.normal(0, 5, num))
    a.add_pair("knee", "flexion", 45 + 90 * depth + rng.normal(0, 5, num))
    a.add_pair("ankle", "dorsiflexion", 5 + 15 * depth)
    a.add_pair("hip", "abduction", rng.normal(15, 8, num), rng.normal(15, 8, num))
    a.add_pair("hip", "external_rotation", rng.normal(10, 8, num), rng.normal(10, 8, num))
    a.add_trunk("flexion", 10 + 30 * depth + rng.normal(0, 5, num))
    a.add_pair("shoulder", "flexion", rng.normal(45, 20, num), rng.normal(45, 20, num))
    a.add_pair("shoulder", "abduction", rng.normal(10, 6, num), rng.normal(10, 6, num))
    a.add_pair("elbow", "flexion", rng.normal(45, 25, num), rng.normal(45, 25, num))
    a.add_cervical("extension", rng.normal(10, 10, num))
    return a.values


def _bending_forward(rng: np.random.Generator, num: int) -> np.ndarray:
    """Bending forward at the hips and spine (legs tilt, the pelvis stays upright in
    this frame); arms hang toward the ground; knees straight or bent."""
    a = _Angles(num)
    bend = rng.uniform(40, 150, num)
    trunk_share = rng.uniform(0.3, 0.6, num)
    a.add_trunk("flexion", trunk_share * bend)
    a.add_pair("hip", "flexion", (1 - trunk_share) * bend)
    a.add_pair("hip", "abduction", rng.normal(6, 4, num), rng.normal(6, 4, num))
    bent_knees = rng.random(num) < 0.25
    knees = np.where(bent_knees, rng.uniform(20, 60, num), np.abs(rng.normal(5, 5, num)))
    a.add_pair("knee", "flexion", knees)
    a.add_pair("ankle", "dorsiflexion", np.where(bent_knees, 0.3 * knees, 0.0))
    # Hanging arms point down: flexed by about the trunk's tilt from vertical.
    for side in ("left", "right"):
        a.add(f"{side}_shoulder", "flexion", bend - 10 + rng.normal(0, 15, num))
        a.add(f"{side}_shoulder", "abduction", rng.normal(10, 5, num))
        a.add(f"{side}_elbow", "flexion", rng.normal(20, 12, num))
    a.add_cervical("extension", rng.normal(10, 15, num))
    return a.values


def _kneeling(rng: np.random.Generator, num: int) -> np.ndarray:
    """Kneeling upright on both knees, sitting back on the heels, or on one knee."""
    variant = rng.choice(3, size=num, p=[0.4, 0.3, 0.3])
    a = _Angles(num)
    upright, on_heels, one_knee = variant == 0, variant == 1, variant == 2
    # Both knees down, thighs vertical, feet flat behind.
    hips = np.where(upright, rng.normal(5, 6, num), rng.normal(75, 10, num))
    knees = np.where(upright, rng.normal(95, 8, num), rng.normal(130, 5, num))
    ankles = np.where(upright, rng.normal(35, 10, num), rng.normal(45, 5, num))
    # One knee: the left foot planted in front, the right knee down.
    left_hip = np.where(one_knee, rng.normal(90, 10, num), hips)
    left_knee = np.where(one_knee, rng.normal(90, 10, num), knees)
    left_ankle = np.where(one_knee, -rng.normal(10, 5, num), ankles)
    right_hip = np.where(one_knee, rng.normal(0, 8, num), hips)
    right_knee = np.where(one_knee, rng.normal(100, 10, num), knees)
    a.add_pair("hip", "flexion", left_hip, right_hip)
    a.add_pair("knee", "flexion", left_knee, right_knee)
    a.add_pair("ankle", "plantarflexion", left_ankle, ankles)
    a.add_pair("hip", "abduction", rng.normal(8, 5, num), rng.normal(8, 5, num))
    a.add_trunk("flexion", np.where(on_heels, rng.normal(15, 10, num), rng.normal(5, 6, num)))
    a.add_pair("shoulder", "flexion", rng.normal(25, 20, num), rng.normal(25, 20, num))
    a.add_pair("shoulder", "abduction", rng.normal(10, 6, num), rng.normal(10, 6, num))
    a.add_pair("elbow", "flexion", rng.normal(40, 20, num), rng.normal(40, 20, num))
    _relaxed_head(a, rng, num)
    return a.values


def _random(rng: np.random.Generator, num: int) -> np.ndarray:
    """Every angle drawn around neutral (arms down), spread :data:`RANDOM_FRACTION` of
    its limit in each direction: diversity beyond the templates."""
    noise = rng.standard_normal((num, NUM_JOINTS, 3))
    out = np.zeros_like(noise)
    for index, definition, _ in _JOINT_TABLE:
        limit = np.where(noise[:, index] > 0, definition.upper, -definition.lower)
        out[:, index] = RANDOM_FRACTION * noise[:, index] * limit
    return out


_ACTIVITIES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "standing": _standing,
    "walking": _walking,
    "running": _running,
    "reaching": _reaching,
    "arms_raised": _arms_raised,
    "sitting": _sitting,
    "crouching": _crouching,
    "bending_forward": _bending_forward,
    "kneeling": _kneeling,
    "random": _random,
}

#: Probability of each activity in :func:`sample_poses` (sums to 1). "random" draws
#: every angle around neutral within the ranges, for diversity beyond the templates.
ACTIVITY_WEIGHTS: dict[str, float] = {
    "standing": 0.16,
    "walking": 0.16,
    "running": 0.06,
    "reaching": 0.10,
    "arms_raised": 0.07,
    "sitting": 0.14,
    "crouching": 0.09,
    "bending_forward": 0.07,
    "kneeling": 0.05,
    "random": 0.10,
}


def _activity_probabilities(
    activities: Mapping[str, float] | Sequence[str] | str | None,
) -> dict[str, float]:
    if activities is None:
        weights = dict(ACTIVITY_WEIGHTS)
    elif isinstance(activities, str):
        weights = {activities: 1.0}
    elif isinstance(activities, Mapping):
        weights = {name: float(w) for name, w in activities.items()}
    else:
        weights = {name: 1.0 for name in activities}
    unknown = [name for name in weights if name not in _ACTIVITIES]
    if unknown:
        raise ValueError(f"unknown activities {unknown}; choose from {list(_ACTIVITIES)}")
    total = sum(weights.values())
    if not weights or any(w < 0 for w in weights.values()) or total <= 0:
        raise ValueError(
            f"activity weights must be non-negative with a positive sum, got {weights}"
        )
    return {name: w / total for name, w in weights.items()}


def sample_poses(
    num: int,
    generator: np.random.Generator,
    activities: Mapping[str, float] | Sequence[str] | str | None = None,
) -> np.ndarray:
    """Draw plausible everyday body poses within the anatomical ranges of motion.

    Args:
        num: number of poses.
        generator: numpy random generator (``np.random.default_rng(seed)``); the result
            is a deterministic function of its state.
        activities: None for :data:`ACTIVITY_WEIGHTS`; a name or a list of names
            (equally likely); or a mapping name -> weight (normalised).

    Returns:
        ``(num, 72)`` float64 axis-angle SMPL poses, global orientation (first 3) zero.
        Each pose is an activity template plus noise, clipped to the ranges, mirrored
        left/right with probability 1/2; ``joint_limit_violation`` of each is 0.
    """
    if not isinstance(generator, np.random.Generator):
        raise TypeError(
            f"generator must be a numpy Generator, got {type(generator).__name__}; "
            "pass np.random.default_rng(seed)"
        )
    if int(num) != num or num < 0:
        raise ValueError(f"num must be a non-negative integer, got {num!r}")
    num = int(num)
    probabilities = _activity_probabilities(activities)
    names = list(probabilities)
    labels = generator.choice(len(names), size=num, p=list(probabilities.values()))
    angles = np.zeros((num, NUM_JOINTS, 3))
    for code, name in enumerate(names):
        rows = np.flatnonzero(labels == code)
        if rows.size:
            angles[rows] = _ACTIVITIES[name](generator, rows.size)
    angles += generator.standard_normal(angles.shape) * _NOISE_STD
    pose = clinical_to_pose(clip_to_ranges(angles))
    mirror = generator.random(num) < MIRROR_PROBABILITY
    pose[mirror] = _mirror_pose(pose[mirror])
    return pose


def _noise_std() -> np.ndarray:
    std = np.zeros((NUM_JOINTS, 3))
    for index, definition, _ in _JOINT_TABLE:
        std[index] = NOISE_FRACTION * (definition.upper - definition.lower) / 2
    return std


# (24, 3) standard deviation (degrees) of the per-sample noise on each clinical angle.
_NOISE_STD = _noise_std()
