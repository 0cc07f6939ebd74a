"""The default fitter: anchor terms, several headings from the mean pose, and a
Levenberg-Marquardt iteration of fixed shapes that never waits for the device."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

import spin.fitting.smplify as smplify_module
from spin.body import load_body_model
from spin.fitting.priors import load_pose_prior
from spin.fitting.smplify import (
    SMPLify,
    SMPLifyConfig,
    StageConfig,
    _residuals_and_jacobian,
    mean_start_config,
    turned,
)
from spin.geometry.rotations import rotmat_to_rotvec, rotvec_to_rotmat
from tests.fitting.test_smplify import make_bodies, mean_pose, pa_error, upright


@pytest.fixture(scope="module")
def body():
    return load_body_model("open-lite")


@pytest.fixture(scope="module")
def prior():
    return load_pose_prior("open")


def noisy_start(pose, betas, seed: int, pose_noise: float = 0.2, betas_noise: float = 0.7):
    """A regressor-like guess: the truth with noise on every body-pose value and beta."""
    g = torch.Generator().manual_seed(seed)
    start = pose.clone()
    start[:, 3:] += pose_noise * torch.randn(start[:, 3:].shape, generator=g)
    return start, betas + betas_noise * torch.randn(betas.shape, generator=g)


def test_mode_resolves_the_anchor_weights():
    assert SMPLifyConfig(mode="anchored").resolved_anchor_weights() == smplify_module.ANCHOR_WEIGHTS
    assert SMPLifyConfig(mode="lm").resolved_anchor_weights() == (0.0, 0.0)
    assert SMPLifyConfig(mode="fast", anchor_pose_weight=3.0).resolved_anchor_weights() == (3.0, 0)
    mean = mean_start_config(SMPLifyConfig(mode="anchored"))
    assert mean.resolved_anchor_weights() == (0.0, 0.0)
    assert mean.headings == smplify_module.MEAN_START_HEADINGS
    assert mean_start_config(SMPLifyConfig(mode="fast")).headings == ()  # SPIN's schedule
    with pytest.raises(ValueError, match="unknown SMPLify mode"):
        SMPLifyConfig(mode="adam")


def test_anchored_linearization_matches_autodiff(body, prior):
    keypoints, intrinsics, pose, betas, _ = make_bodies(body, 4, seed=11, noise_px=4.0)
    smplify = SMPLify(body, prior, SMPLifyConfig(mode="anchored"))
    obs, _ = smplify._observations(keypoints, intrinsics, "spin49")
    start, start_betas = noisy_start(pose, betas, seed=1)
    variables, obs = smplify._start(start, start_betas, None, obs)
    variables = {**variables, "body_pose": pose[:, 3:], "betas": betas}  # away from the start
    stage = StageConfig("body", "body", ("global_orient", "body_pose", "betas"), 1, "lm")
    residuals, jacobian = smplify._analytic_linearization(stage, variables, obs)
    assert residuals.shape[1] == 98 + 69 + 4 + 10 + 69 + 10  # reprojection, priors, anchors

    def residual_fn(x):
        split = torch.split(x, [3, 69, 10], dim=1)
        return smplify._body_residuals(
            {**variables, **dict(zip(stage.optimize, split, strict=True))}, obs
        )

    x = torch.cat([variables[name] for name in stage.optimize], dim=1)
    expected, expected_jacobian = _residuals_and_jacobian(residual_fn, x)
    torch.testing.assert_close(residuals, expected, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(jacobian, expected_jacobian, rtol=1e-3, atol=1e-2)
    pose_weight, betas_weight = smplify_module.ANCHOR_WEIGHTS
    anchors = torch.cat(
        [
            math.sqrt(pose_weight) * (pose[:, 3:] - start[:, 3:]),
            math.sqrt(betas_weight) * (betas - start_betas),
        ],
        dim=1,
    )
    torch.testing.assert_close(residuals[:, -79:], anchors)
    # The objective counts each anchor as its squared residuals.
    lm = SMPLify(body, prior, SMPLifyConfig(mode="lm"))
    extra = smplify._body_terms(variables, obs)["total"] - lm._body_terms(variables, obs)["total"]
    torch.testing.assert_close(extra, (anchors**2).sum(-1), rtol=1e-4, atol=1e-2)


def test_anchored_beats_spins_objective_from_a_regressor_like_start(body, prior):
    keypoints, intrinsics, pose, betas, _ = make_bodies(body, 16, seed=12, noise_px=4.0)
    start, start_betas = noisy_start(pose, betas, seed=2)
    errors = {}
    for mode in ("lm", "anchored"):
        result = SMPLify(body, prior, SMPLifyConfig(mode=mode))(
            keypoints, intrinsics, init_pose_rotvecs=start, init_betas=start_betas
        )
        errors[mode] = float(pa_error(body, result.pose_rotvecs, result.betas, pose, betas).mean())
    before = float(pa_error(body, start, start_betas, pose, betas).mean())
    assert errors["anchored"] < errors["lm"], errors
    assert errors["anchored"] < 0.8 * before, (before, errors)


def test_turned_turns_about_the_bodys_vertical_axis():
    pose = torch.zeros(2, 72)
    pose[:, :3] = upright(2, torch.tensor([10.0, -40.0]))
    pose[:, 3:] = 0.1
    out = turned(pose, (0.0, 90.0, 180.0))
    assert out.shape == (6, 72)
    torch.testing.assert_close(out[:2], pose, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 3:], pose[:, 3:].repeat(3, 1))
    # Turning an upright body about its own vertical axis adds to its yaw.
    torch.testing.assert_close(
        out[2:4, :3], upright(2, torch.tensor([100.0, 50.0])), atol=1e-5, rtol=0
    )
    expected = rotvec_to_rotmat(pose[:, :3]) @ rotvec_to_rotmat(torch.tensor([0.0, math.pi, 0.0]))
    torch.testing.assert_close(rotvec_to_rotmat(out[4:, :3]), expected, atol=1e-5, rtol=0)


def test_headings_turn_a_body_seen_from_behind(body, prior):
    keypoints, intrinsics, pose, betas, _ = make_bodies(body, 8, seed=13, noise_px=2.0)
    pose[:, :3] = upright(8, torch.linspace(150.0, 210.0, 8))  # backs to the camera
    from spin.geometry import perspective_projection

    cam_t = torch.tensor([0.0, 0.0, 12.0]).repeat(8, 1)
    joints = body(pose_rotvecs=pose, betas=betas, transl=cam_t).joints_spin
    keypoints[..., :2] = perspective_projection(joints, intrinsics)
    errors = {}
    for name, config in {
        "one start": SMPLifyConfig(mode="lm"),
        "headings": mean_start_config(SMPLifyConfig(mode="anchored")),
    }.items():
        result = SMPLify(body, prior, config)(keypoints, intrinsics, init_pose_rotvecs=mean_pose(8))
        errors[name] = float(pa_error(body, result.pose_rotvecs, result.betas, pose, betas).mean())
        if name == "headings":
            relative = rotvec_to_rotmat(pose[:, :3]).transpose(1, 2) @ rotvec_to_rotmat(
                result.pose_rotvecs[:, :3]
            )
            angle = rotmat_to_rotvec(relative).norm(dim=-1)
            assert (angle < math.radians(45)).all(), torch.rad2deg(angle)
            assert set(result.history) == {"trial camera", "trial body", "body"}
    assert errors["headings"] < 0.7 * errors["one start"], errors


@contextlib.contextmanager
def forbid_host_syncs(monkeypatch):
    """Any tensor -> Python value conversion (what makes the host wait for a GPU) raises."""

    def refuse(*args, **kwargs):
        raise AssertionError("host sync in the LM iteration")

    with monkeypatch.context() as patch:
        for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero"):
            patch.setattr(torch.Tensor, name, refuse)
        yield


@pytest.mark.parametrize("mode", ["lm", "anchored"])
def test_fixed_shape_iteration_matches_the_compacted_one_without_syncs(
    body, prior, monkeypatch, mode
):
    body64 = load_body_model("open-lite").to(torch.float64)
    prior64 = load_pose_prior("open").to(torch.float64)
    keypoints, intrinsics, pose, betas, _ = make_bodies(body, 12, seed=14, noise_px=3.0)
    start, start_betas = noisy_start(pose, betas, seed=3)
    inputs = [t.double() for t in (keypoints, intrinsics, start, start_betas)]
    config = SMPLifyConfig(mode=mode)
    compacted = SMPLify(body64, prior64, config)(*inputs[:2], *inputs[2:])
    smplify = SMPLify(body64, prior64, config)
    run_lm = smplify._run_lm

    def guarded(*args):
        with forbid_host_syncs(monkeypatch):
            return run_lm(*args)

    monkeypatch.setattr(smplify_module, "LM_COMPACT_ON_CPU", False)
    monkeypatch.setattr(smplify, "_run_lm", guarded)
    fixed = smplify(*inputs[:2], *inputs[2:])
    for name in ("pose_rotvecs", "betas", "cam_t", "total_loss"):
        torch.testing.assert_close(
            getattr(fixed, name), getattr(compacted, name), rtol=1e-9, atol=1e-9
        )
    for stage in compacted.history:
        torch.testing.assert_close(
            fixed.history[stage], compacted.history[stage], rtol=1e-9, atol=1e-9
        )


@pytest.mark.parametrize("mode", ["lm", "anchored"])
@pytest.mark.parametrize(
    "optimize", [("global_orient", "body_pose", "betas"), ("body_pose",), ("betas", "cam_t")]
)
def test_closed_form_normal_equations_match_the_jacobian(body, mode, optimize):
    """The LM step's J^T r and J^T J, summed in closed form for the prior, angle, shape and
    anchor rows, equal the products of the full residual Jacobian (float64)."""
    keypoints, intrinsics, pose, betas, _ = make_bodies(body, 4, seed=12, noise_px=4.0)
    start, start_betas = noisy_start(pose, betas, seed=2)
    keypoints, intrinsics, pose, betas, start, start_betas = (
        t.double() for t in (keypoints, intrinsics, pose, betas, start, start_betas)
    )
    body64 = load_body_model("open-lite").to(torch.float64)
    prior64 = load_pose_prior("open", dtype=torch.float64)  # P and L L^T agree to float64
    smplify = SMPLify(body64, prior64, SMPLifyConfig(mode=mode))
    obs, _ = smplify._observations(keypoints, intrinsics, "spin49")
    variables, obs = smplify._start(start, start_betas, None, obs)
    variables = {**variables, "body_pose": pose[:, 3:], "betas": betas}
    stage = StageConfig("body", "body", optimize, 1, "lm")
    residuals, jacobian = smplify._analytic_linearization(stage, variables, obs)
    gradient, hessian = smplify._normal_equations(stage, variables, obs)
    torch.testing.assert_close(gradient, torch.einsum("brp,br->bp", jacobian, residuals))
    torch.testing.assert_close(hessian, jacobian.transpose(1, 2) @ jacobian)
