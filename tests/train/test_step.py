"""Pieces of the training step that are pure functions: the camera term, the lr schedule."""

import math

import pytest
import torch

from spin.train.config import TrainConfig
from spin.train.step import camera_scale_penalty
from spin.train.trainer import learning_rate


def test_camera_penalty_is_spins_term_for_positive_scales():
    scale = torch.linspace(0.0, 3.0, 31, dtype=torch.float64)
    torch.testing.assert_close(camera_scale_penalty(scale), torch.exp(-10.0 * scale) ** 2)


def test_camera_penalty_stays_finite_with_a_bounded_gradient_below_zero():
    """SPIN's exp(-20 s) overflows float32 below s = -4.4 and reaches ~6e12 at s = -1.5;
    its tangent continuation keeps pulling s up with SPIN's slope at 0."""
    scale = torch.tensor([-1e4, -5.0, -1.5, -1e-3], requires_grad=True)
    penalty = camera_scale_penalty(scale)
    assert torch.isfinite(penalty).all()
    penalty.sum().backward()
    torch.testing.assert_close(scale.grad, torch.full_like(scale, -20.0))
    assert float(camera_scale_penalty(torch.tensor([-1.5]))) == pytest.approx(31.0)
    # C1 at zero: the same value and slope from both sides.
    x = torch.tensor([-1e-6, 1e-6], dtype=torch.float64, requires_grad=True)
    camera_scale_penalty(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, -20.0), rtol=1e-4, atol=0)


def test_learning_rate_warm_up_then_cosine_to_the_floor():
    config = TrainConfig(lr=1e-3, num_steps=101, warmup_steps=10, lr_final_fraction=0.1)
    rates = [learning_rate(config, step) for step in range(101)]
    assert rates[0] == pytest.approx(1e-3 * 0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(0))))
    assert rates[9] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.09))))
    assert rates[50] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert rates[100] == pytest.approx(1e-4)
    assert all(
        b <= a for a, b in zip(rates[9:-1], rates[10:], strict=True)
    )  # non-increasing after warm-up
    constant = TrainConfig(lr=5e-5, num_steps=100, lr_schedule="constant")
    assert {learning_rate(constant, step) for step in range(100)} == {5e-5}


@pytest.mark.parametrize(
    "override",
    [{"warmup_steps": -1}, {"lr_final_fraction": 1.5}, {"grad_clip_norm": 0.0}],
)
def test_bad_optimisation_settings_are_refused(override):
    with pytest.raises(ValueError):
        TrainConfig(**override)


def test_validation_line_names_every_metric_and_the_mean_pose():
    from spin.train.trainer import format_validation

    val = {
        "val/mpjpe_mm": 201.25,
        "val/pa_mpjpe_mm": 95.04,
        "val/mean_pose_pa_mpjpe_mm": 131.6,
        "val/rotation_deg": 14.2,
        "val/keypoints_2d_px": 9.87,
    }
    assert format_validation(500, val) == (
        "val step 500: MPJPE 201.2 mm, PA-MPJPE 95.0 mm (mean pose 131.6), rotation 14.2 deg, "
        "2D 9.9 px"
    )
