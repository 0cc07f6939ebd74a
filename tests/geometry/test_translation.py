import pytest
import roma
import torch

from spin.geometry.cameras import intrinsics_matrix, perspective_projection
from spin.geometry.translation import FALLBACK_DEPTH, estimate_translation

F64 = torch.float64
BATCH, JOINTS = 5, 12


def _uniform(gen, shape, low, high, dtype=F64):
    return low + (high - low) * torch.rand(shape, generator=gen, dtype=dtype)


def _scene(dtype=F64):
    """Random bodies, rotations, per-sample intrinsics and translations, with exact keypoints."""
    gen = torch.Generator().manual_seed(0)
    joints = 0.5 * torch.randn(BATCH, JOINTS, 3, generator=gen, dtype=dtype)
    rotation = roma.random_rotmat((BATCH,), dtype=dtype, generator=gen)
    intrinsics = intrinsics_matrix(
        _uniform(gen, (BATCH, 2), 500.0, 5000.0, dtype),
        _uniform(gen, (BATCH, 2), 100.0, 900.0, dtype),
    )
    translation = torch.stack(
        [
            _uniform(gen, (BATCH,), -1.0, 1.0, dtype),
            _uniform(gen, (BATCH,), -1.0, 1.0, dtype),
            _uniform(gen, (BATCH,), 4.0, 40.0, dtype),
        ],
        dim=-1,
    )
    keypoints = perspective_projection(joints, intrinsics, rotation, translation)
    confidences = _uniform(gen, (BATCH, JOINTS), 0.2, 1.0, dtype)
    return joints, keypoints, confidences, intrinsics, rotation, translation


def test_recovers_a_known_translation_from_exact_keypoints():
    joints, keypoints, confidences, intrinsics, rotation, translation = _scene()
    estimate = estimate_translation(joints, keypoints, confidences, intrinsics, rotation)
    torch.testing.assert_close(estimate, translation, atol=1e-8, rtol=1e-10)


def test_recovers_a_known_translation_in_float32():
    joints, keypoints, confidences, intrinsics, rotation, translation = _scene(torch.float32)
    estimate = estimate_translation(joints, keypoints, confidences, intrinsics, rotation)
    assert estimate.dtype == torch.float32
    torch.testing.assert_close(estimate, translation, atol=1e-3, rtol=1e-4)


def test_handles_skewed_intrinsics_and_leading_dims():
    joints, _, confidences, intrinsics, rotation, translation = _scene()
    intrinsics = intrinsics.clone()
    intrinsics[:, 0, 1] = 3.0  # skew
    keypoints = perspective_projection(joints, intrinsics, rotation, translation)
    estimate = estimate_translation(
        joints.reshape(1, BATCH, JOINTS, 3),
        keypoints.reshape(1, BATCH, JOINTS, 2),
        confidences.reshape(1, BATCH, JOINTS),
        intrinsics,
        rotation,
    )
    assert estimate.shape == (1, BATCH, 3)
    torch.testing.assert_close(estimate[0], translation, atol=1e-8, rtol=1e-10)


def test_ignores_zero_confidence_outliers():
    joints, keypoints, confidences, intrinsics, rotation, translation = _scene()
    keypoints, confidences = keypoints.clone(), confidences.clone()
    keypoints[:, :4] += 500.0
    confidences[:, :4] = 0.0
    estimate = estimate_translation(joints, keypoints, confidences, intrinsics, rotation)
    torch.testing.assert_close(estimate, translation, atol=1e-8, rtol=1e-10)


def test_too_few_confident_joints_fall_back_without_nan():
    joints, keypoints, confidences, intrinsics, _, translation = _scene()
    confidences = confidences.clone()
    confidences[0] = 0.0  # no joint at all
    confidences[1, 1:] = 0.0  # a single joint
    joints.requires_grad_()
    estimate = estimate_translation(joints, keypoints, confidences, intrinsics)
    assert torch.isfinite(estimate).all()
    # The centroid lands on the optical axis at the fallback depth.
    for sample in (0, 1):
        centroid = (joints[sample] + estimate[sample]).mean(dim=0)
        expected = torch.tensor([0.0, 0.0, FALLBACK_DEPTH], dtype=F64)
        torch.testing.assert_close(centroid, expected)
    estimate.sum().backward()
    assert torch.isfinite(joints.grad).all()

    initial = torch.full((BATCH,), 7.0, dtype=F64)
    estimate = estimate_translation(
        joints, keypoints, confidences, intrinsics, initial_depth=initial
    )
    torch.testing.assert_close((joints[0] + estimate[0]).mean(dim=0)[2], initial[0])


def test_depth_prior_pulls_the_depth_to_its_initial_value():
    joints, keypoints, confidences, intrinsics, rotation, translation = _scene()
    noisy = keypoints + 5.0 * torch.randn(
        keypoints.shape, generator=torch.Generator().manual_seed(1), dtype=F64
    )
    initial = translation[:, 2] + 3.0
    free = estimate_translation(joints, noisy, confidences, intrinsics, rotation)
    pulled = estimate_translation(
        joints, noisy, confidences, intrinsics, rotation, initial_depth=initial, depth_weight=1e12
    )
    torch.testing.assert_close(pulled[:, 2], initial, atol=1e-3, rtol=0)
    assert ((pulled[:, 2] - initial).abs() < (free[:, 2] - initial).abs()).all()
    with pytest.raises(ValueError, match="initial_depth"):
        estimate_translation(joints, noisy, confidences, intrinsics, depth_weight=1.0)


def test_gradcheck_estimate_translation():
    joints, keypoints, confidences, intrinsics, rotation, _ = _scene()
    joints = joints[:2, :5].clone().requires_grad_()
    keypoints = keypoints[:2, :5].clone().requires_grad_()
    confidences = confidences[:2, :5].clone().requires_grad_()

    def estimate(joints, keypoints, confidences):
        return estimate_translation(joints, keypoints, confidences, intrinsics[:2], rotation[:2])

    assert torch.autograd.gradcheck(estimate, (joints, keypoints, confidences))


def test_mismatched_joint_counts_raise():
    joints, keypoints, confidences, intrinsics, _, _ = _scene()
    with pytest.raises(ValueError, match="same number of joints"):
        estimate_translation(joints, keypoints[:, :-1], confidences, intrinsics)
