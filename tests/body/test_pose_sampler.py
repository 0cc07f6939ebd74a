import numpy as np
import pytest
import torch

from spin.body import pose_sampler as ps
from spin.body.joint_conventions import SMPL_24
from spin.body.layer import BodyModel
from spin.body.loading import load_body_model_data


@pytest.fixture(scope="module")
def body():
    return BodyModel(load_body_model_data("open-lite"), dtype=torch.float64)


def _pose(body, pose_rotvecs):
    pose = torch.as_tensor(np.asarray(pose_rotvecs).reshape(-1, 72), dtype=torch.float64)
    zeros = torch.zeros(len(pose), 3, dtype=torch.float64)
    with torch.no_grad():
        out = body(pose_rotvecs=pose, betas=zeros.new_zeros(len(pose), 10), transl=zeros)
    return out.vertices.numpy(), out.joints_smpl.numpy()


def _j(name):
    return SMPL_24.index(name)


# --- Sampling -------------------------------------------------------------------------------


def test_samples_are_within_the_ranges_of_motion():
    poses = ps.sample_poses(300, np.random.default_rng(0))
    assert poses.shape == (300, 72) and poses.dtype == np.float64
    assert np.all(poses[:, :3] == 0), "global orientation must be zero"
    assert np.all(np.isfinite(poses))
    assert ps.joint_limit_violation(poses).max() == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("activity", list(ps.ACTIVITY_WEIGHTS))
def test_every_activity_stays_within_the_ranges(activity):
    poses = ps.sample_poses(40, np.random.default_rng(1), activities=activity)
    assert ps.joint_limit_violation(poses).max() == pytest.approx(0.0, abs=1e-9)


def test_sampling_is_deterministic_given_the_generator():
    a = ps.sample_poses(50, np.random.default_rng(3))
    b = ps.sample_poses(50, np.random.default_rng(3))
    c = ps.sample_poses(50, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_activity_weights_are_a_distribution_over_the_activities():
    assert sum(ps.ACTIVITY_WEIGHTS.values()) == pytest.approx(1.0)
    assert {"standing", "walking", "sitting", "crouching", "arms_raised"} <= set(
        ps.ACTIVITY_WEIGHTS
    )
    with pytest.raises(ValueError, match="unknown activities"):
        ps.sample_poses(2, np.random.default_rng(0), activities=["juggling"])
    with pytest.raises(TypeError, match="default_rng"):
        ps.sample_poses(2, 0)


def test_samples_are_mirrored_left_and_right():
    angles = ps.pose_to_clinical(ps.sample_poses(400, np.random.default_rng(2), ["reaching"]))
    # The template reaches with the left arm; mirroring gives the right arm half the time.
    left = angles[:, _j("left_shoulder")]
    right = angles[:, _j("right_shoulder")]
    left_reaches = np.hypot(left[:, 0], left[:, 1]) > np.hypot(right[:, 0], right[:, 1])
    assert 0.35 < left_reaches.mean() < 0.65


# --- Clinical angles and limits ---------------------------------------------------------------


def test_clinical_angles_round_trip():
    rng = np.random.default_rng(5)
    angles = ps.clip_to_ranges(rng.uniform(-150, 150, size=(64, 24, 3)))
    angles[:, 0] = 0.0
    back = ps.pose_to_clinical(ps.clinical_to_pose(angles))
    np.testing.assert_allclose(back, angles, atol=1e-8)


def test_right_joints_mirror_left_joints():
    angles = np.zeros((24, 3))
    angles[_j("left_hip")] = [40.0, 10.0, 15.0]
    angles[_j("right_hip")] = [40.0, 10.0, 15.0]
    pose = ps.clinical_to_pose(angles).reshape(24, 3)
    np.testing.assert_allclose(pose[_j("right_hip")], pose[_j("left_hip")] * [1, -1, -1])


def test_violation_measures_degrees_beyond_the_range():
    angles = np.zeros((3, 24, 3))
    angles[0, _j("left_knee"), 0] = -40.0  # hyperextension: 35 beyond the 5 allowed
    angles[1, _j("right_elbow"), 0] = 170.0  # 20 beyond 150 degrees of flexion
    angles[2, _j("left_shoulder"), 1] = -80.0  # adduction: 30 beyond 50
    violation = ps.joint_limit_violation(ps.clinical_to_pose(angles))
    np.testing.assert_allclose(violation, [35.0, 20.0, 30.0], atol=1e-6)
    per_joint = ps.joint_limit_violation(ps.clinical_to_pose(angles), per_joint=True)
    assert per_joint.shape == (3, 24)
    assert per_joint[0, _j("left_knee")] == pytest.approx(35.0)
    # The T-pose (arms abducted 90 degrees) is fine.
    assert ps.joint_limit_violation(np.zeros(72)) == pytest.approx(0.0)


def test_violation_of_random_poses_and_tensor_input():
    random = np.random.default_rng(0).uniform(-np.pi, np.pi, size=(20, 72))
    assert np.all(ps.joint_limit_violation(random) > 50)
    tensor = torch.tensor(random, dtype=torch.float32)
    out = ps.joint_limit_violation(tensor)
    assert isinstance(out, torch.Tensor) and out.shape == (20,) and out.dtype == torch.float32


def test_motion_axis_finds_motions_by_name():
    assert ps.motion_axis("right_knee", "flexion") == (0, 1.0)
    assert ps.motion_axis("left_shoulder", "external_rotation") == (2, -1.0)
    with pytest.raises(KeyError, match="its motions are"):
        ps.motion_axis("left_knee", "abduction")


# --- Each clinical motion moves the body the way its name says (open-lite model) --------------

X, Y, Z = np.eye(3)
# (joint, motion, other clinical angles set first, tracked joint or "segment:<joint>" (the
# centroid of the vertices skinned mostly to it), expected direction for the left side).
# Neutral is standing with the arms at the sides (shoulders lowered from the T-pose).
MOTIONS = [
    ("hip", "flexion", {}, "knee", Z),
    ("hip", "extension", {}, "knee", -Z),
    ("hip", "abduction", {}, "knee", X),
    ("hip", "adduction", {}, "knee", -X),
    # With the knee bent the shin points back; internal rotation swings it out.
    ("hip", "internal_rotation", {("knee", "flexion"): 90}, "ankle", X),
    ("hip", "external_rotation", {("knee", "flexion"): 90}, "ankle", -X),
    ("knee", "flexion", {}, "ankle", -Z),
    ("knee", "valgus", {}, "ankle", X),
    ("ankle", "dorsiflexion", {}, "foot", Y),
    ("ankle", "plantarflexion", {}, "foot", -Y),
    ("ankle", "abduction", {}, "foot", X),
    ("ankle", "inversion", {}, "segment:ankle", -X),
    ("foot", "extension", {}, "segment:foot", Y),
    ("collar", "elevation", {}, "shoulder", Y),
    ("collar", "protraction", {}, "shoulder", Z),
    ("shoulder", "flexion", {}, "elbow", Z),
    ("shoulder", "extension", {}, "elbow", -Z),
    ("shoulder", "abduction", {}, "elbow", X),
    ("shoulder", "adduction", {("shoulder", "flexion"): 30}, "elbow", -X),
    # With the elbow bent the forearm points forward; internal rotation turns it inward.
    ("shoulder", "internal_rotation", {("elbow", "flexion"): 90}, "wrist", -X),
    ("shoulder", "external_rotation", {("elbow", "flexion"): 90}, "wrist", X),
    ("elbow", "flexion", {}, "wrist", Z),
    ("elbow", "valgus", {}, "wrist", X),
    # Arm down, the palm faces the thigh; pronation turns it back, so a flexed wrist
    # then moves the hand backward.
    ("elbow", "pronation", {("wrist", "flexion"): 60}, "hand", -Z),
    ("wrist", "flexion", {}, "hand", -X),
    ("wrist", "extension", {}, "hand", X),
    ("wrist", "radial_deviation", {}, "hand", Z),
    ("hand", "flexion", {}, "segment:hand", -X),
]
MIDLINE_MOTIONS = [
    ("spine1", "flexion", "neck", Z),
    ("spine1", "extension", "neck", -Z),
    ("spine1", "left_lateral_bending", "neck", X),
    ("spine2", "left_rotation", "left_shoulder", -Z),
    ("spine3", "flexion", "neck", Z),
    ("neck", "flexion", "segment:head", Z),
    ("neck", "left_lateral_bending", "segment:head", X),
    ("head", "extension", "segment:head", -Z),
    ("head", "left_rotation", "segment:head", X),
]
MOTION_DEGREES = 30.0


def _tracked(body, vertices, joints, name):
    if name.startswith("segment:"):
        index = _j(name[len("segment:") :])
        owner = np.asarray(body.data.lbs_weights).argmax(axis=1)
        return vertices[:, owner == index].mean(axis=1)
    return joints[:, _j(name)]


def _displacement(body, joint, motion, setup, tracked):
    angles = np.zeros((2, 24, 3))
    for (setup_joint, setup_motion), degrees in setup.items():
        axis, sign = ps.motion_axis(setup_joint, setup_motion)
        angles[:, _j(setup_joint), axis] = sign * degrees
    axis, sign = ps.motion_axis(joint, motion)
    angles[1, _j(joint), axis] += sign * MOTION_DEGREES
    vertices, joints = _pose(body, ps.clinical_to_pose(angles))
    points = _tracked(body, vertices, joints, tracked)
    return points[1] - points[0]


def _assert_moves_along(displacement, expected):
    assert np.linalg.norm(displacement) > 0.005, "the motion barely moved the tracked point"
    cosine = displacement @ expected / np.linalg.norm(displacement)
    assert cosine > 0.5, f"moved {np.round(displacement, 3)}, expected along {expected}"


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize(
    ("joint", "motion", "setup", "tracked", "expected"),
    MOTIONS,
    ids=[f"{j}-{m}" for j, m, *_ in MOTIONS],
)
def test_limb_motion_moves_the_body_as_named(body, side, joint, motion, setup, tracked, expected):
    mirror = np.array([1.0, 1.0, 1.0]) if side == "left" else np.array([-1.0, 1.0, 1.0])
    sided_setup = {(f"{side}_{j}", m): d for (j, m), d in setup.items()}
    if tracked.startswith("segment:"):
        sided_tracked = f"segment:{side}_{tracked[len('segment:') :]}"
    else:
        sided_tracked = f"{side}_{tracked}"
    moved = _displacement(body, f"{side}_{joint}", motion, sided_setup, sided_tracked)
    _assert_moves_along(moved, expected * mirror)


@pytest.mark.parametrize(
    ("joint", "motion", "tracked", "expected"),
    MIDLINE_MOTIONS,
    ids=[f"{j}-{m}" for j, m, *_ in MIDLINE_MOTIONS],
)
def test_midline_motion_moves_the_body_as_named(body, joint, motion, tracked, expected):
    _assert_moves_along(_displacement(body, joint, motion, {}, tracked), expected)


def test_shoulder_flexion_raises_the_arm_forward_then_overhead(body):
    angles = np.zeros((2, 24, 3))
    axis, sign = ps.motion_axis("left_shoulder", "flexion")
    angles[0, _j("left_shoulder"), axis] = 90.0 * sign
    angles[1, _j("left_shoulder"), axis] = 170.0 * sign
    _, joints = _pose(body, ps.clinical_to_pose(angles))
    shoulder, wrist, head = _j("left_shoulder"), _j("left_wrist"), _j("head")
    forward = joints[0, wrist] - joints[0, shoulder]
    assert forward[2] > 0.4 and abs(forward[1]) < 0.1  # straight ahead at shoulder height
    assert joints[1, wrist, 1] > joints[1, head, 1] + 0.3  # overhead


def test_elbow_flexion_brings_the_wrist_toward_the_shoulder(body):
    angles = np.zeros((2, 24, 3))
    axis, sign = ps.motion_axis("right_elbow", "flexion")
    angles[1, _j("right_elbow"), axis] = 130.0 * sign
    _, joints = _pose(body, ps.clinical_to_pose(angles))
    gap = np.linalg.norm(joints[:, _j("right_wrist")] - joints[:, _j("right_shoulder")], axis=1)
    assert gap[1] < 0.5 * gap[0]


# --- Activities look like their names -----------------------------------------------------------


def test_sitting_has_knees_near_90_and_thighs_roughly_horizontal(body):
    poses = ps.sample_poses(60, np.random.default_rng(6), activities="sitting")
    knees = ps.pose_to_clinical(poses)[:, [_j("left_knee"), _j("right_knee")], 0]
    assert 75 < np.median(knees) < 105
    _, joints = _pose(body, poses)
    for hip, knee in (("left_hip", "left_knee"), ("right_hip", "right_knee")):
        thigh = joints[:, _j(knee)] - joints[:, _j(hip)]
        tilt = np.degrees(np.arctan2(np.abs(thigh[:, 1]), np.hypot(thigh[:, 0], thigh[:, 2])))
        assert np.quantile(tilt, 0.9) < 30
        assert np.all(thigh[:, 2] > 0.2), "thighs point forward"


def test_walking_puts_one_ankle_in_front_of_the_other(body):
    poses = ps.sample_poses(60, np.random.default_rng(7), activities="walking")
    _, joints = _pose(body, poses)
    gap = np.abs(joints[:, _j("left_ankle"), 2] - joints[:, _j("right_ankle"), 2])
    assert np.mean(gap > 0.05) > 0.8
    # Opposite arm and leg swing: the arm swings forward with the other side's leg.
    angles = ps.pose_to_clinical(poses)
    legs = angles[:, _j("left_hip"), 0] - angles[:, _j("right_hip"), 0]
    arms = angles[:, _j("left_shoulder"), 0] - angles[:, _j("right_shoulder"), 0]
    assert np.corrcoef(legs, arms)[0, 1] < -0.7


@pytest.mark.parametrize("activity", ["standing", "walking", "reaching", "arms_raised"])
def test_upright_activities_keep_everything_above_the_feet(body, activity):
    poses = ps.sample_poses(30, np.random.default_rng(8), activities=activity)
    vertices, joints = _pose(body, poses)
    feet = joints[:, [_j("left_ankle"), _j("right_ankle"), _j("left_foot"), _j("right_foot")], 1]
    assert np.all(vertices[..., 1].min(axis=1) > feet.min(axis=1) - 0.1)
    assert np.all(joints[:, _j("head"), 1] > joints[:, _j("pelvis"), 1] + 0.4)


def test_crouching_flexes_hips_knees_and_ankles_together():
    angles = ps.pose_to_clinical(ps.sample_poses(200, np.random.default_rng(9), "crouching"))
    hips, knees = angles[:, _j("left_hip"), 0], angles[:, _j("left_knee"), 0]
    ankles = angles[:, _j("left_ankle"), 0]
    assert np.median(hips) > 60 and np.median(knees) > 80 and np.median(ankles) > 5
    assert np.corrcoef(hips, knees)[0, 1] > 0.7
    assert np.corrcoef(knees, ankles)[0, 1] > 0.5
