"""HMR: shapes, the mean-parameter start, valid rotations, gradients, mean params."""

import math

import numpy as np
import pytest
import torch

from spin.body import load_body_model
from spin.body.joint_conventions import SMPL_24, SPIN_49
from spin.geometry import (
    crop_intrinsics,
    perspective_projection,
    rotmat_to_sixd,
    rotvec_to_rotmat,
    weak_perspective_to_translation,
)
from spin.regressor import (
    BackboneConfig,
    HMRConfig,
    build_hmr,
    chordal_mean,
    load_mean_params,
    mean_params_for_body_model,
    predict_body,
)

NUM_BETAS = 10


@pytest.fixture(scope="module")
def body_model():
    return load_body_model("open-lite")


def _hmr(body_model, backbone="tiny", seed=0, **overrides):
    torch.manual_seed(seed)
    return build_hmr(HMRConfig(backbone=BackboneConfig(name=backbone), **overrides), body_model)


@pytest.mark.parametrize(
    ("backbone", "size"), [("tiny", 64), ("tiny", 224), ("resnet18", 64), ("resnet18", 224)]
)
def test_output_shapes(body_model, backbone, size):
    hmr = _hmr(body_model, backbone)
    out = hmr(torch.randn(2, 3, size, size))
    assert out.pose_6d.shape == (2, 24, 6)
    assert out.pose_rotmats.shape == (2, 24, 3, 3)
    assert out.pose_rotvecs.shape == (2, 24, 3)
    assert out.betas.shape == (2, NUM_BETAS)
    assert out.cam.shape == out.cam_t.shape == (2, 3)
    assert out.iterations == ()
    torch.testing.assert_close(out.cam_t, weak_perspective_to_translation(out.cam))
    body = predict_body(out, body_model)
    assert body.vertices.shape[0] == 2 and body.joints_spin.shape == (2, 49, 3)


def test_initial_prediction_is_the_mean_plus_small_residuals(body_model):
    hmr = _hmr(body_model).eval()
    with torch.no_grad():
        out = hmr(torch.randn(4, 3, 64, 64))
    mean_pose = hmr.init_pose_6d.reshape(24, 6)
    pose_gap = (out.pose_6d - mean_pose).abs().max()
    assert 0 < pose_gap < 0.05
    assert (out.betas - hmr.init_betas).abs().max() < 0.05
    assert (out.cam - hmr.init_cam).abs().max() < 0.05
    # Large heads move far from the mean: the bound above tests the small init.
    loud = _hmr(body_model, init_gain=1.0).eval()
    with torch.no_grad():
        assert (loud(torch.randn(4, 3, 64, 64)).pose_6d - mean_pose).abs().max() > 0.2


def test_rotmats_are_rotations_even_far_from_the_mean(body_model):
    hmr = _hmr(body_model, init_gain=3.0)
    out = hmr(torch.randn(3, 3, 64, 64))
    rotmats = out.pose_rotmats.double()
    eye = torch.eye(3, dtype=torch.float64).expand_as(rotmats)
    torch.testing.assert_close(rotmats @ rotmats.transpose(-1, -2), eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        torch.linalg.det(rotmats), torch.ones(3, 24, dtype=torch.float64), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        rotvec_to_rotmat(out.pose_rotvecs), out.pose_rotmats, atol=1e-5, rtol=0
    )


def test_gradients_reach_backbone_and_heads(body_model):
    hmr = _hmr(body_model).train()
    out = hmr(torch.randn(2, 3, 64, 64))
    loss = out.pose_rotmats.square().sum() + out.betas.square().sum() + out.cam_t.sum()
    loss.backward()
    for name in (
        "backbone.blocks.0.weight",
        "fc1.weight",
        "fc2.weight",
        "decpose.weight",
        "decshape.weight",
        "deccam.weight",
    ):
        grad = dict(hmr.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_iterations(body_model):
    hmr = _hmr(body_model).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        one = hmr(images, iterations=1)
        three = hmr(images)
        kept = hmr(images, keep_iterations=True)
    assert not torch.allclose(one.pose_6d, three.pose_6d)
    assert len(kept.iterations) == 3
    torch.testing.assert_close(kept.iterations[0].pose_6d, one.pose_6d)
    torch.testing.assert_close(kept.iterations[-1].cam_t, three.cam_t)
    torch.testing.assert_close(kept.pose_rotmats, three.pose_rotmats)
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        hmr(images, iterations=0)


def test_mean_params_are_kept_in_the_state_dict(body_model):
    state = _hmr(body_model).state_dict()
    assert state["init_pose_6d"].shape == (144,)
    assert state["init_betas"].shape == (NUM_BETAS,)
    torch.testing.assert_close(state["init_cam"], torch.tensor([0.9, 0.0, 0.0]))


def test_open_model_mean_params_deterministic_upright_facing_camera(body_model):
    first = mean_params_for_body_model("open")
    again = mean_params_for_body_model("open")
    assert torch.equal(first.pose_6d, again.pose_6d)
    assert not torch.equal(first.pose_6d, mean_params_for_body_model("open", seed=1).pose_6d)
    assert torch.equal(first.betas, torch.zeros(NUM_BETAS, dtype=torch.float64))

    hmr = build_hmr(HMRConfig(backbone=BackboneConfig(name="tiny"), init_gain=0.0), body_model)
    with torch.no_grad():
        body = predict_body(hmr.eval()(torch.zeros(1, 3, 64, 64)), body_model)
    joints = body.joints_smpl[0]
    pixels = perspective_projection(joints, crop_intrinsics((), joints))
    u, v = pixels.unbind(-1)
    head, pelvis = SMPL_24.index("head"), SMPL_24.index("pelvis")
    ankle = SMPL_24.index("left_ankle")
    assert v[head] < v[pelvis] < v[ankle]  # upright: head at the top of the image
    # Facing the camera: the subject's left is on the image's right, the nose in front.
    assert u[SMPL_24.index("left_hip")] > u[SMPL_24.index("right_hip")]
    assert u[SMPL_24.index("left_shoulder")] > u[SMPL_24.index("right_shoulder")]
    nose = body.joints_spin[0, SPIN_49.index("OP Nose")]
    assert nose[2] < joints[head, 2]
    assert ((pixels > 0) & (pixels < 224)).all()  # in the crop


def test_chordal_mean():
    torch.manual_seed(0)
    centre = rotvec_to_rotmat(torch.tensor([0.3, -1.0, 0.5], dtype=torch.float64))
    offsets = rotvec_to_rotmat(0.2 * torch.randn(50, 3, dtype=torch.float64))
    # Offsets and their inverses around the centre average back to it.
    rotmats = torch.cat([centre @ offsets, centre @ offsets.transpose(-1, -2)])
    torch.testing.assert_close(chordal_mean(rotmats), centre)
    mean = chordal_mean(rotvec_to_rotmat(torch.randn(10, 4, 3, dtype=torch.float64)))
    assert mean.shape == (4, 3, 3)
    torch.testing.assert_close(torch.linalg.det(mean), torch.ones(4, dtype=torch.float64))


def _write_spin_mean_params(path, seed=0, num_betas=NUM_BETAS):
    rng = np.random.default_rng(seed)
    rotmats = rotvec_to_rotmat(torch.from_numpy(rng.normal(scale=0.5, size=(24, 3))))
    arrays = {
        "pose": rotmat_to_sixd(rotmats).reshape(144).numpy(),
        "shape": rng.normal(size=num_betas),
        "cam": np.array([0.85, 0.02, -0.01]),
    }
    np.savez(path, **arrays)
    return arrays


def test_spin_mean_params_file(body_model, tmp_path):
    path = tmp_path / "smpl_mean_params.npz"
    arrays = _write_spin_mean_params(path)
    hmr = build_hmr(
        HMRConfig(backbone=BackboneConfig(name="tiny"), mean_params=str(path)), body_model
    )
    torch.testing.assert_close(hmr.init_pose_6d.double(), torch.from_numpy(arrays["pose"]))
    torch.testing.assert_close(hmr.init_betas.double(), torch.from_numpy(arrays["shape"]))
    torch.testing.assert_close(hmr.init_cam.double(), torch.from_numpy(arrays["cam"]))
    loaded = load_mean_params(path)
    assert loaded.source == str(path)
    torch.testing.assert_close(loaded.pose_rotmats, sixd_rotmats(arrays["pose"]))
    assert load_mean_params(path, num_betas=4).betas.shape == (4,)
    padded = load_mean_params(path, num_betas=12).betas
    assert padded.shape == (12,) and torch.equal(padded[10:], torch.zeros(2, dtype=padded.dtype))


def sixd_rotmats(pose):
    """The file's 6D numbers read as the first two columns of each rotation."""
    columns = torch.from_numpy(pose).reshape(24, 3, 2)
    return torch.cat(
        [columns, torch.linalg.cross(columns[..., 0], columns[..., 1])[..., None]], dim=-1
    )


def test_bad_mean_params_files(tmp_path):
    np.savez(tmp_path / "axis_angle.npz", pose=np.zeros(72), shape=np.zeros(10), cam=np.ones(3))
    with pytest.raises(ValueError, match="axis-angle"):
        load_mean_params(tmp_path / "axis_angle.npz")
    np.savez(tmp_path / "no_cam.npz", pose=np.zeros(144), shape=np.zeros(10))
    with pytest.raises(ValueError, match=r"lacks keys \['cam'\]"):
        load_mean_params(tmp_path / "no_cam.npz")
    with pytest.raises(FileNotFoundError, match="mean_params=null"):
        load_mean_params(tmp_path / "absent.npz")


def test_soft_clamp_is_the_identity_inside_and_bounded_outside():
    from spin.regressor.hmr import SOFT_CLAMP_SHARPNESS, soft_clamp

    inside = torch.linspace(0.6, 9.5, 50, dtype=torch.float64)
    # softplus(d) - d = log(1 + exp(-k d)) / k <= exp(-k d) / k at a distance d from a bound
    tolerance = math.exp(-SOFT_CLAMP_SHARPNESS * 0.5) / SOFT_CLAMP_SHARPNESS
    torch.testing.assert_close(soft_clamp(inside, 0.1, 10.0), inside, atol=tolerance, rtol=0)
    outside = torch.tensor([-1e6, -3.0, 0.0, 0.1, 10.0, 12.0, 1e6], dtype=torch.float64)
    clamped = soft_clamp(outside, 0.1, 10.0)
    rounding = 1e-12  # 10 - (10 - 0.1) in float64
    assert bool((clamped >= 0.1 - rounding).all()) and bool((clamped <= 10.0 + rounding).all())
    assert torch.isfinite(clamped).all()
    # Monotone and smooth: the gradient fades near the bounds instead of stopping dead.
    x = torch.linspace(-1.0, 11.0, 1201, dtype=torch.float64, requires_grad=True)
    soft_clamp(x, 0.1, 10.0).sum().backward()
    assert bool((x.grad >= 0).all()) and bool((x.grad <= 1).all())
    assert 0.4 < float(x.grad[x.detach().sub(0.1).abs().argmin()]) < 0.6  # half at the bound
    y = torch.tensor([0.3, 5.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: soft_clamp(v, 0.1, 10.0), (y,))


def test_cam_t_keeps_the_body_in_front_of_the_camera_whatever_the_scale(body_model):
    """The depth of the body comes from the bounded scale, so no camera output puts the
    body at or behind the camera plane (the pole that made training diverge); inside the
    bounds cam_t is SPIN's."""
    hmr = _hmr(body_model).eval()
    low, high = hmr.config.cam_scale_bounds
    scales = torch.tensor([-5.0, -1e-3, 0.0, 0.05, 0.9, 1.3, 50.0, 1e6])
    cam = torch.stack([scales, torch.zeros_like(scales), torch.zeros_like(scales)], dim=1)
    out = hmr._output(
        hmr.init_pose_6d.expand(len(scales), -1), hmr.init_betas.expand(len(scales), -1), cam
    )
    depth = out.cam_t[:, 2]
    assert torch.isfinite(depth).all()
    from spin.geometry.cameras import CROP_SIZE, FOCAL_LENGTH

    nearest, farthest = 2 * FOCAL_LENGTH / (CROP_SIZE * high), 2 * FOCAL_LENGTH / (CROP_SIZE * low)
    assert bool((depth >= nearest * (1 - 1e-5)).all()) and bool((depth <= farthest * 1.0001).all())
    torch.testing.assert_close(out.cam_t[4:6], weak_perspective_to_translation(cam[4:6]))
    torch.testing.assert_close(out.cam, cam)  # the IEF state is SPIN's, unbounded
    unbounded = _hmr(body_model, cam_scale_bounds=None)._output(
        hmr.init_pose_6d.expand(len(scales), -1), hmr.init_betas.expand(len(scales), -1), cam
    )
    assert float(unbounded.cam_t[0, 2]) < 0  # SPIN's camera puts it behind the camera


def test_bad_cam_scale_bounds_are_refused():
    with pytest.raises(ValueError, match="cam_scale_bounds"):
        HMRConfig(cam_scale_bounds=(1.0, 0.5))
    with pytest.raises(ValueError, match="cam_scale_bounds"):
        HMRConfig(cam_scale_bounds=(0.0, 5.0))
