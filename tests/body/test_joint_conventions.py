import numpy as np
import pytest
import torch

from spin.body.joint_conventions import (
    COCO_17,
    H36M_TO_LSP14,
    JOINT_CONVENTIONS,
    LSP_14,
    OPENPOSE_25,
    SMPL_24,
    SPIN49_FROM_SMPL_OUTPUT,
    SPIN_49,
    conversion_indices,
    convert,
    flip_permutation,
)

NAMES = sorted(JOINT_CONVENTIONS)


def indexed_keypoints(num_joints, channels=3, batch=(2,)):
    """x = joint index, y = -index, confidence 1."""
    kp = torch.ones(*batch, num_joints, channels)
    kp[..., 0] = torch.arange(num_joints, dtype=torch.float32)
    kp[..., 1] = -torch.arange(num_joints, dtype=torch.float32)
    return kp


def test_convention_and_joint_names_are_unique():
    assert NAMES == ["coco17", "h36m17", "lsp14", "mediapipe33", "openpose25", "smpl24", "spin49"]
    for name, conv in JOINT_CONVENTIONS.items():
        assert conv.name == name
        assert len(set(conv.joint_names)) == conv.num_joints
        if name != "spin49":  # spin49 holds some points in both of its blocks
            assert len(set(conv.points)) == conv.num_joints
    assert [c.num_joints for c in (SMPL_24, SPIN_49, OPENPOSE_25, COCO_17, LSP_14)] == [
        24,
        49,
        25,
        17,
        14,
    ]


@pytest.mark.parametrize("name", NAMES)
def test_convert_to_same_convention_is_identity(name):
    kp = indexed_keypoints(JOINT_CONVENTIONS[name].num_joints)
    assert torch.equal(convert(kp, name, name), kp)
    assert np.array_equal(convert(kp.numpy(), name, name), kp.numpy())


def test_spin49_to_lsp14_picks_the_ground_truth_joints():
    kp = indexed_keypoints(49)
    lsp = convert(kp, "spin49", "lsp14")
    # SPIN's 24 ground-truth joints start at 25; their first 14 are in LSP order.
    assert lsp[0, :, 0].tolist() == list(range(25, 39))
    assert (lsp[..., 2] == 1).all()


def test_coco17_to_openpose25_marks_missing_joints():
    kp = indexed_keypoints(17, batch=(3, 2))
    op = convert(kp, "coco17", OPENPOSE_25)
    assert op.shape == (3, 2, 25, 3)
    missing = {"Neck", "MidHip", "RHip", "LHip"} | {
        f"{s}{p}" for s in "LR" for p in ("BigToe", "SmallToe", "Heel")
    }
    for j, label in enumerate(OPENPOSE_25.joint_names):
        if label in missing:
            assert (op[..., j, :] == 0).all(), label
        else:
            assert (op[..., j, 2] == 1).all(), label
    assert op[0, 0, OPENPOSE_25.index("RShoulder"), 0] == COCO_17.index("right_shoulder")
    assert op[0, 0, OPENPOSE_25.index("LEar"), 0] == COCO_17.index("left_ear")
    # Two channels: coordinates only, missing joints still zero.
    xy = convert(kp[..., :2].numpy(), "coco17", "openpose25")
    assert xy.shape == (3, 2, 25, 2) and (xy[..., OPENPOSE_25.index("Neck"), :] == 0).all()


def test_hips_with_different_definitions_are_not_identified():
    assert conversion_indices("smpl24", "coco17")[COCO_17.index("left_hip")] == -1
    assert conversion_indices("openpose25", "lsp14")[LSP_14.index("right_hip")] == -1
    assert conversion_indices("smpl24", "openpose25")[OPENPOSE_25.index("Neck")] == -1
    assert conversion_indices("smpl24", "lsp14")[LSP_14.index("neck")] == -1


def test_h36m_to_lsp14_table_agrees_with_convert_where_points_match():
    indices = conversion_indices("h36m17", "lsp14")
    for lsp_joint, (by_name, by_table) in enumerate(zip(indices, H36M_TO_LSP14, strict=True)):
        if LSP_14.joint_names[lsp_joint] in ("neck", "head_top"):
            assert by_name == -1  # the protocol pairs different points here
        else:
            assert by_name == by_table


def test_spin49_sources_agree_with_smpl24_names():
    for j, source in enumerate(SPIN49_FROM_SMPL_OUTPUT):
        if source < 24 and SPIN_49.points[j] in SMPL_24.points:
            assert SMPL_24.points[source] == SPIN_49.points[j]


def test_convert_validates_joint_count():
    with pytest.raises(ValueError, match=r"\(\.\.\., 17, C\) for convention 'coco17'"):
        convert(torch.zeros(2, 25, 3), "coco17", "lsp14")
    with pytest.raises(KeyError, match="unknown joint convention"):
        convert(torch.zeros(2, 17, 3), "coco", "lsp14")


@pytest.mark.parametrize("name", NAMES)
def test_flip_permutation_is_an_involution_swapping_sides(name):
    conv = JOINT_CONVENTIONS[name]
    perm = flip_permutation(name)
    assert sorted(perm) == list(range(conv.num_joints))
    assert [perm[p] for p in perm] == list(range(conv.num_joints))
    for i, point in enumerate(conv.points):
        tokens = point.split("_")
        if "left" in tokens:
            assert conv.points[perm[i]] == point.replace("left", "right"), conv.joint_names[i]
        elif "right" not in tokens:
            assert perm[i] == i, conv.joint_names[i]
    if name in ("coco17", "lsp14", "smpl24", "mediapipe33"):
        for i, label in enumerate(conv.joint_names):
            if label.startswith("left_"):
                assert conv.joint_names[perm[i]] == label.replace("left_", "right_")


def test_spin49_flip_matches_spin():
    op = [0, 1, 5, 6, 7, 2, 3, 4, 8, 12, 13, 14, 9, 10, 11, 16, 15, 18, 17, 22, 23, 24, 19, 20, 21]
    gt = [5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 12, 13, 14, 15, 16, 17, 18, 19, 21, 20, 23, 22]
    assert flip_permutation("spin49") == op + [25 + i for i in gt]
