"""SMPLify's loss terms against hand computations, residual forms and gradients."""

import math

import pytest
import torch

from spin.fitting import losses


def test_gmof_by_hand():
    r = torch.tensor([0.0, 3.0, -4.0])
    expected = torch.tensor([0.0, 100 * 9 / (100 + 9), 100 * 16 / (100 + 16)])
    assert torch.allclose(losses.gmof(r, sigma=10.0), expected)
    # Large residuals saturate at sigma^2.
    assert losses.gmof(torch.tensor([1e6]), sigma=10.0).item() == pytest.approx(100.0, rel=1e-6)


def test_reprojection_loss_by_hand():
    projected = torch.tensor([[[10.0, 0.0], [0.0, 0.0]]])
    keypoints = torch.tensor([[[13.0, 4.0], [50.0, 0.0]]])
    conf = torch.tensor([[0.5, 0.0]])
    sigma = 100.0
    per_joint = losses.reprojection_loss(projected, keypoints, conf, sigma)
    expected_first = 0.25 * (1e4 * 9 / (1e4 + 9) + 1e4 * 16 / (1e4 + 16))
    assert per_joint.shape == (1, 2)
    assert per_joint[0, 0].item() == pytest.approx(expected_first, rel=1e-6)
    assert per_joint[0, 1].item() == 0.0  # zero confidence ignores the joint


def test_angle_prior_by_hand():
    body_pose = torch.zeros(1, 69)
    assert losses.angle_prior(body_pose).item() == pytest.approx(4.0)  # exp(0)^2 * 4
    body_pose[0, 52] = 1.0  # left elbow bent the wrong way (+y)
    body_pose[0, 12] = 2.0  # right knee bent the right way (+x)
    expected = math.exp(1.0) ** 2 + 1 + 1 + math.exp(-2.0) ** 2
    assert losses.angle_prior(body_pose).item() == pytest.approx(expected, rel=1e-6)


def test_shape_and_depth_and_torso_by_hand():
    assert losses.shape_prior(torch.tensor([[1.0, -2.0, 3.0]])).item() == 14.0
    cam = torch.tensor([[0.0, 0.0, 12.0]])
    assert losses.camera_depth_loss(cam, torch.tensor([[5.0, 5.0, 10.0]])).item() == 4.0
    projected = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]])
    keypoints = torch.tensor([[[3.0, 4.0], [1.0, 2.0], [0.0, 0.0]]])
    # Joint 2 is not a torso joint here; the weights say which torso joints count.
    value = losses.torso_camera_loss(projected, keypoints, torch.tensor([[1.0, 1.0]]), [0, 1])
    assert value.item() == pytest.approx(25.0 + 1.0)
    assert losses.torso_camera_loss(projected, keypoints, torch.tensor([[0.0, 1.0]]), [0, 1]) == 1


def test_torso_weights_follow_spins_rule():
    """SPIN's camera_fitting_loss: the OpenPose torso joints if all have confidence > 0,
    else the ground-truth ones whatever their confidence; "visible": those seen."""
    openpose, gt = [0, 1], [2, 3]
    conf = torch.tensor(
        [
            [0.9, 0.4, 0.0, 0.0],  # all OpenPose torso joints seen -> OpenPose only
            [0.9, 0.0, 0.8, 0.0],  # one missing -> ground truth only, even the unseen one
            [0.0, 0.0, 0.0, 0.0],  # nothing seen -> SPIN still uses the ground-truth ones
        ]
    )
    spin_rule = losses.torso_camera_weights(conf, openpose, gt, "spin")
    torch.testing.assert_close(
        spin_rule, torch.tensor([[1.0, 1, 0, 0], [0.0, 0, 1, 1], [0.0, 0, 1, 1]])
    )
    visible = losses.torso_camera_weights(conf, openpose, gt, "visible")
    torch.testing.assert_close(visible, (conf > 0).float())
    with pytest.raises(ValueError, match="unknown torso rule"):
        losses.torso_camera_weights(conf, openpose, gt, "all")


def test_residual_forms_square_to_the_losses():
    g = torch.Generator().manual_seed(0)
    projected = 50 * torch.randn(3, 7, 2, generator=g)
    keypoints = 50 * torch.randn(3, 7, 2, generator=g)
    conf = torch.rand(3, 7, generator=g)
    r = losses.reprojection_residuals(projected, keypoints, conf, 30.0)
    assert torch.allclose(
        (r**2).sum(-1),
        losses.reprojection_loss(projected, keypoints, conf, 30.0).sum(-1),
        rtol=1e-5,
    )
    body_pose = torch.randn(3, 69, generator=g)
    assert torch.allclose(
        (losses.angle_prior_residuals(body_pose) ** 2).sum(-1), losses.angle_prior(body_pose)
    )
    weights = (conf[:, [0, 2, 5]] > 0.5).float()
    t = losses.torso_camera_residuals(projected, keypoints, weights, [0, 2, 5])
    assert torch.allclose(
        (t**2).sum(-1), losses.torso_camera_loss(projected, keypoints, weights, [0, 2, 5])
    )


def test_gradients_float64():
    g = torch.Generator().manual_seed(1)
    projected = (20 * torch.randn(2, 5, 2, generator=g, dtype=torch.float64)).requires_grad_()
    keypoints = 20 * torch.randn(2, 5, 2, generator=g, dtype=torch.float64)
    conf = torch.rand(2, 5, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda p: losses.reprojection_loss(p, keypoints, conf, 10.0), (projected,)
    )
    assert torch.autograd.gradcheck(
        lambda p: losses.reprojection_residuals(p, keypoints, conf, 10.0), (projected,)
    )
    body_pose = torch.randn(2, 69, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(losses.angle_prior, (body_pose,))
    betas = torch.randn(2, 10, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(losses.shape_prior, (betas,))
    cam = torch.randn(2, 3, generator=g, dtype=torch.float64).requires_grad_()
    initial = torch.randn(2, 3, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda c: losses.camera_depth_loss(c, initial), (cam,))
