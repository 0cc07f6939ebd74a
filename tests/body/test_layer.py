import dataclasses

import numpy as np
import pytest
import torch

from spin.body import BodyModel
from spin.body.joint_conventions import SPIN49_FROM_SMPL_OUTPUT, SPIN_49, SPIN_VERTEX_JOINTS
from tests.body.conftest import make_toy_model_data, smplx_reference


def random_params(batch, num_betas, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    pose = (torch.rand(batch, 72, generator=g, dtype=torch.float64) - 0.5) * 1.5
    betas = torch.randn(batch, num_betas, generator=g, dtype=torch.float64)
    transl = torch.randn(batch, 3, generator=g, dtype=torch.float64)
    return pose.to(dtype), betas.to(dtype), transl.to(dtype)


def reference_output(data, pose, betas, transl):
    ref = smplx_reference(data, pose.dtype)
    out = ref(global_orient=pose[:, :3], body_pose=pose[:, 3:], betas=betas, transl=transl)
    extra = torch.einsum(
        "jv,bvk->bjk", torch.as_tensor(data.J_regressor_extra, dtype=pose.dtype), out.vertices
    )
    spin = torch.cat([out.joints, extra], dim=1)[:, list(SPIN49_FROM_SMPL_OUTPUT)]
    return out.vertices, out.joints[:, :24], spin


@pytest.mark.parametrize("batch", [1, 5])
def test_matches_smplx(toy_model_data, batch):
    pose, betas, transl = random_params(batch, 10)
    out = BodyModel(toy_model_data)(pose, betas, transl)
    vertices, joints, spin = reference_output(toy_model_data, pose, betas, transl)
    assert out.vertices.shape == (batch, 60, 3)
    assert (out.vertices - vertices).abs().max() < 1e-5
    assert (out.joints_smpl - joints).abs().max() < 1e-5
    assert out.joints_spin.shape == (batch, 49, 3)
    assert (out.joints_spin - spin).abs().max() < 1e-5
    assert out.rotmats.shape == (batch, 24, 3, 3)


def test_float64_matches_smplx(toy_model_data):
    pose, betas, transl = random_params(3, 10, torch.float64)
    vertices, joints, spin = reference_output(toy_model_data, pose, betas, transl)
    # smplx rounds its arrays through float32 even for float64, as does .to(float64).
    out = BodyModel(toy_model_data).to(torch.float64)(pose, betas, transl)
    assert out.vertices.dtype == out.joints_spin.dtype == torch.float64
    assert (out.vertices - vertices).abs().max() < 1e-12
    assert (out.joints_spin - spin).abs().max() < 1e-6
    # Built in float64, the model keeps the arrays' full precision.
    exact = BodyModel(toy_model_data, dtype=torch.float64)(pose, betas, transl)
    assert (exact.vertices - vertices).abs().max() < 1e-6
    extra = torch.as_tensor(toy_model_data.J_regressor_extra)
    head = extra[8] @ exact.vertices
    assert (exact.joints_spin[:, SPIN_49.index("Head (H36M)")] - head).abs().max() < 1e-14


def test_more_than_ten_betas_match_smplx():
    data = make_toy_model_data(num_betas=12)
    pose, betas, transl = random_params(2, 12)
    out = BodyModel(data)(pose, betas, transl)
    vertices, _, _ = reference_output(data, pose, betas, transl)
    assert (out.vertices - vertices).abs().max() < 1e-5


def test_fewer_betas_are_zero_padded(toy_model_data):
    model = BodyModel(toy_model_data)
    pose, betas, _ = random_params(4, 10)
    betas[:, 4:] = 0
    full = model(pose, betas)
    short = model(pose, betas[:, :4])
    assert torch.equal(full.vertices, short.vertices)
    mean_shape = model(pose)
    assert torch.equal(mean_shape.vertices, model(pose, torch.zeros(1, 10)).vertices)


def test_rotmats_input_equals_rotvec_input(toy_model_data):
    model = BodyModel(toy_model_data)
    pose, betas, transl = random_params(3, 10)
    from_rotvecs = model(pose.reshape(3, 24, 3), betas, transl)
    from_rotmats = model(pose_rotmats=from_rotvecs.rotmats, betas=betas, transl=transl)
    assert torch.allclose(from_rotvecs.vertices, from_rotmats.vertices, atol=1e-6)
    assert torch.allclose(from_rotvecs.joints_spin, from_rotmats.joints_spin, atol=1e-6)


def test_spin_joint_rows(toy_model_data):
    data = toy_model_data
    out = BodyModel(data)(*random_params(2, 10))
    v, spin = out.vertices, out.joints_spin

    def row(name):
        return spin[:, SPIN_49.index(name)]

    assert torch.equal(row("OP Nose"), v[:, data.vertex_ids["nose"]])
    assert torch.equal(row("Nose"), v[:, data.vertex_ids["nose"]])
    assert torch.equal(row("OP LHeel"), v[:, data.vertex_ids["LHeel"]])
    assert torch.equal(row("OP Neck"), out.joints_smpl[:, 12])
    assert torch.equal(row("Right Ankle"), out.joints_smpl[:, 8])
    extra = torch.as_tensor(data.J_regressor_extra, dtype=torch.float32)
    assert torch.allclose(row("Right Hip"), extra[0] @ v, atol=1e-6)
    assert torch.allclose(row("Head (H36M)"), extra[8] @ v, atol=1e-6)
    h36m = torch.as_tensor(data.J_regressor_h36m, dtype=torch.float32)
    assert torch.allclose(out.joints_h36m, torch.einsum("jv,bvk->bjk", h36m, v), atol=1e-6)


def test_fingertips_are_optional(toy_model_data):
    params = random_params(2, 10)
    full = BodyModel(toy_model_data)(*params)
    ids = {k: toy_model_data.vertex_ids[k] for k in SPIN_VERTEX_JOINTS}
    no_tips = BodyModel(dataclasses.replace(toy_model_data, vertex_ids=ids))(*params)
    assert torch.equal(full.joints_spin, no_tips.joints_spin)


def test_without_extra_regressors(toy_model_data):
    data = dataclasses.replace(toy_model_data, J_regressor_extra=None, J_regressor_h36m=None)
    out = BodyModel(data)(*random_params(1, 10))
    assert out.joints_spin is None and out.joints_h36m is None
    with pytest.raises(ValueError, match="J_regressor_extra.npy next to the SMPL file"):
        out.require_joints_spin()
    with pytest.raises(ValueError, match="J_regressor_h36m.npy"):
        out.require_joints_h36m()


def test_stateless_and_nothing_in_state_dict(toy_model_data):
    model = BodyModel(toy_model_data)
    assert model.state_dict() == {}
    assert list(model.parameters()) == []
    for batch in (1, 7, 2):
        assert model(torch.zeros(batch, 72)).vertices.shape == (batch, 60, 3)
    assert model.faces.dtype == np.int64 and model.faces_tensor.dtype == torch.long


def test_gradients_flow(toy_model_data):
    model = BodyModel(toy_model_data).to(torch.float64)
    pose, betas, _ = random_params(2, 10, torch.float64)
    pose.requires_grad_(True)
    betas.requires_grad_(True)
    model(pose, betas).joints_spin.square().sum().backward()
    assert pose.grad.abs().sum() > 0 and betas.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"pose_rotvecs": torch.zeros(72)},
            r"pose_rotvecs of shape \(B, 72\).*\(72,\); add a batch",
        ),
        ({"pose_rotvecs": torch.zeros(2, 69)}, "prepend the global orientation"),
        ({"pose_rotmats": torch.zeros(24, 3, 3)}, "add a batch dimension"),
        (
            {"pose_rotvecs": torch.zeros(2, 72), "betas": torch.zeros(10)},
            r"expected betas of shape \(2, 10\), got \(10,\); add a batch dimension",
        ),
        ({"pose_rotvecs": torch.zeros(2, 72), "betas": torch.zeros(2, 11)}, "only 10 shape"),
        ({"pose_rotvecs": torch.zeros(2, 72), "betas": torch.zeros(3, 10)}, r"\(2, 10\)"),
        ({"pose_rotvecs": torch.zeros(2, 72), "transl": torch.zeros(3)}, "add a batch"),
        ({}, "exactly one of"),
        ({"pose_rotvecs": torch.zeros(1, 72), "pose_rotmats": torch.zeros(1, 24, 3, 3)}, "one of"),
        ({"pose_rotvecs": torch.zeros(1, 72, dtype=torch.float64)}, r"model.to\("),
    ],
)
def test_bad_inputs_say_how_to_fix(toy_model_data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        BodyModel(toy_model_data)(**kwargs)
