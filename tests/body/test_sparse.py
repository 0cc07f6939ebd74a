"""The joints-only model agrees with the full layer, and its analytic Jacobian with autodiff."""

import pytest
import torch
from torch.func import jacfwd

from spin.body import BodyModel, load_body_model_data
from spin.body.sparse import SparseJointModel, right_jacobian_so3
from spin.geometry import rotvec_to_rotmat


def random_params(batch, generator, dtype=torch.float64):
    pose = 0.6 * torch.randn(batch, 72, generator=generator, dtype=dtype)
    pose[0, 9:12] = 0.0  # one exactly zero rotation
    betas = torch.randn(batch, 10, generator=generator, dtype=dtype)
    transl = torch.randn(batch, 3, generator=generator, dtype=dtype)
    return pose, betas, transl


@pytest.fixture(params=["toy", "open-lite"])
def body(request, toy_model_data):
    data = toy_model_data if request.param == "toy" else load_body_model_data("open-lite")
    return BodyModel(data, dtype=torch.float64)


def test_joints_match_the_full_layer(body):
    sparse = SparseJointModel(body)
    pose, betas, transl = random_params(4, torch.Generator().manual_seed(0))
    full = body(pose_rotvecs=pose, betas=betas, transl=transl)
    ours = sparse(pose_rotvecs=pose, betas=betas, transl=transl)
    assert torch.allclose(ours.joints_smpl, full.joints_smpl, atol=1e-10)
    assert torch.allclose(ours.joints_spin, full.joints_spin, atol=1e-10)


def test_float32_model_matches(toy_model_data):
    body = BodyModel(toy_model_data)
    sparse = SparseJointModel(body)
    pose, betas, transl = (t.float() for t in random_params(3, torch.Generator().manual_seed(1)))
    full = body(pose_rotvecs=pose, betas=betas, transl=transl)
    assert torch.allclose(
        sparse(pose_rotvecs=pose, betas=betas, transl=transl).joints_spin,
        full.joints_spin,
        atol=1e-5,
    )


def test_analytic_jacobian_matches_autodiff(body):
    sparse = SparseJointModel(body)
    pose, betas, transl = random_params(3, torch.Generator().manual_seed(2))
    joints, jacobian = sparse.joints_and_jacobian(pose, betas, transl)
    x = torch.cat([pose, betas, transl], dim=1)

    def joints_of(params):
        return sparse(
            pose_rotvecs=params[:, :72], betas=params[:, 72:82], transl=params[:, 82:]
        ).joints_spin

    reference = jacfwd(joints_of)(x)  # (B, 49, 3, B, 85)
    reference = torch.stack([reference[b, :, :, b] for b in range(x.shape[0])])
    assert torch.allclose(joints, joints_of(x), atol=1e-12)
    if sparse.has_posedirs:
        # Pose-corrective shapes are left out of the pose derivative: compare the rest.
        assert torch.allclose(jacobian[..., 72:], reference[..., 72:], atol=1e-7)
    else:
        # smplx's Rodrigues adds 1e-8 to the angle: agreement to ~1e-8.
        assert torch.allclose(jacobian, reference, atol=1e-6)


def test_right_jacobian_of_so3():
    g = torch.Generator().manual_seed(3)
    rotvecs = torch.randn(5, 3, generator=g, dtype=torch.float64)
    rotvecs[0] = 1e-6  # the small-angle branch
    delta = 1e-6 * torch.randn(5, 3, generator=g, dtype=torch.float64)
    lhs = rotvec_to_rotmat(rotvecs + delta)
    rhs = rotvec_to_rotmat(rotvecs) @ rotvec_to_rotmat(
        (right_jacobian_so3(rotvecs) @ delta[..., None])[..., 0]
    )
    assert (lhs - rhs).abs().max() < 1e-11


def test_root_only_jacobian_is_the_full_ones_root_columns(body):
    sparse = SparseJointModel(body)
    pose, betas, transl = random_params(3, torch.Generator().manual_seed(4))
    joints, full = sparse.joints_and_jacobian(pose, betas, transl)
    root_joints, root = sparse.joints_and_jacobian(pose, betas, transl, root_only=True)
    assert root.shape == (*full.shape[:-1], 6)
    assert torch.allclose(root_joints, joints, atol=1e-12)
    assert torch.allclose(root[..., :3], full[..., :3], atol=1e-10)
    assert torch.equal(root[..., 3:], full[..., -3:])
