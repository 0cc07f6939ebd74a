import math

import pytest
import roma
import torch

from spin.eval.metrics import M_TO_MM, center_on, mpjpe, pa_mpjpe, per_joint_errors, pve

F64 = torch.float64


def test_mpjpe_by_hand():
    pred = torch.tensor([[[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]], dtype=F64)
    target = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]], dtype=F64)
    # As given: distances 1 and |(1, -1, 0)| = sqrt(2).
    torch.testing.assert_close(
        per_joint_errors(pred, target), torch.tensor([[1.0, math.sqrt(2)]], dtype=F64)
    )
    torch.testing.assert_close(
        mpjpe(pred, target), torch.tensor([(1 + math.sqrt(2)) / 2], dtype=F64)
    )
    # Root-aligned on joint 0: pred becomes [0, (1, 0, 0)], distances 0 and 1.
    torch.testing.assert_close(mpjpe(pred, target, root=0), torch.tensor([0.5], dtype=F64))
    torch.testing.assert_close(
        mpjpe(pred, target, root=0) * M_TO_MM, torch.tensor([500.0], dtype=F64)
    )


def test_center_on_mean_of_several_joints():
    points = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [4.0, 2.0, 0.0]]])
    centred = center_on(points, [0, 1])  # root at (1, 0, 0)
    expected = torch.tensor([[[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [3.0, 2.0, 0.0]]])
    torch.testing.assert_close(centred, expected)
    with pytest.raises(ValueError, match="out of range"):
        center_on(points, 3)


def test_pa_mpjpe_of_a_similarity_copy_is_zero():
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(6, 14, 3, generator=gen, dtype=F64)
    rotation = roma.random_rotmat((6,), dtype=F64, generator=gen)
    scale = 0.5 + torch.rand(6, 1, 1, generator=gen, dtype=F64)
    shift = torch.randn(6, 1, 3, generator=gen, dtype=F64)
    pred = scale * target @ rotation.transpose(-1, -2) + shift
    assert (pa_mpjpe(pred, target) < 1e-6).all()
    assert (mpjpe(pred, target) > 0.1).all()


def test_pa_mpjpe_is_at_most_mpjpe():
    gen = torch.Generator().manual_seed(1)
    pred = torch.randn(8, 14, 3, generator=gen, dtype=F64)
    target = torch.randn(8, 14, 3, generator=gen, dtype=F64)
    pa = pa_mpjpe(pred, target)
    assert pa.shape == (8,)
    assert (pa <= mpjpe(pred, target) + 1e-12).all()
    assert (pa <= mpjpe(pred, target, root=0) + 1e-12).all()


def test_pve_by_hand():
    pred = torch.tensor([[[1.0, 0.0, 0.0], [1.0, 3.0, 4.0]]])
    target = torch.zeros(1, 2, 3)
    torch.testing.assert_close(pve(pred, target), torch.tensor([(1.0 + math.sqrt(26)) / 2]))
    # Subtracting (1, 0, 0) from pred leaves distances 0 and 5.
    origin = torch.tensor([[1.0, 0.0, 0.0]])
    torch.testing.assert_close(pve(pred, target, pred_origin=origin), torch.tensor([2.5]))
    torch.testing.assert_close(
        pve(pred, target, pred_origin=origin, target_origin=origin),
        pve(pred, target),
    )


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="same shape"):
        mpjpe(torch.zeros(2, 14, 3), torch.zeros(2, 17, 3))
    with pytest.raises(ValueError, match=r"\(B, J, 3\)"):
        pa_mpjpe(torch.zeros(2, 14, 2), torch.zeros(2, 14, 2))


def test_rotation_error_is_the_geodesic_angle():
    from spin.eval.metrics import rotation_error_deg
    from spin.geometry import rotvec_to_rotmat

    axis = torch.tensor([0.0, 0.6, 0.8], dtype=torch.float64)
    angles = torch.tensor([0.0, 30.0, 90.0, 179.0], dtype=torch.float64)
    target = rotvec_to_rotmat(torch.tensor([[0.3, -0.2, 0.5]] * 4, dtype=torch.float64))
    turn = rotvec_to_rotmat(torch.deg2rad(angles)[:, None] * axis)
    error = rotation_error_deg((target @ turn)[None], target[None])
    assert torch.allclose(error, angles.mean()[None], atol=1e-4)
    per_sample = rotation_error_deg((target @ turn)[:, None], target[:, None])
    assert torch.allclose(per_sample, angles, atol=1e-4)


def test_keypoint_error_ignores_invisible_keypoints():
    from spin.eval.metrics import keypoint_error

    target = torch.zeros(2, 3, 2)
    pred = torch.tensor([[[3.0, 4.0], [0.0, 1.0], [100.0, 0.0]]] * 2)
    confidence = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    error = keypoint_error(pred, target, confidence)
    assert error[0] == 3.0  # (5 + 1) / 2; the third keypoint is invisible
    assert torch.isnan(error[1])
