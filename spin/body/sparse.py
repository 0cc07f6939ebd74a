"""Joints without the mesh: SMPL's maths for the joints alone, exact and cheap.

Everything SPIN's joints need from the mesh is linear, so it folds into small tensors:

- SMPL's kinematic joints depend on the shaped rest mesh only through ``J_regressor``:
  ``J_regressor @ (v_template + shapedirs @ betas)`` is a (24, 3) template plus a (24, 3, NB)
  shape basis.
- A vertex joint or an extra-regressor joint is a fixed row ``r`` over posed vertices, and
  linear blend skinning is linear in the per-joint transforms ``A_j``::

      sum_v r_v sum_j w_vj (A_j [v_v; 1]) = sum_j A_j[:3, :3] m_j + A_j[:3, 3] c_j
      m_j = sum_v r_v w_vj v_v,   c_j = sum_v r_v w_vj

  where the rest vertex ``v_v = v_template + shapedirs @ betas + posedirs @ pose_features`` is
  linear in betas and in the pose features, so ``m_j`` folds into three small tensors too.

A forward pass then costs the kinematic chain plus a few hundred multiply-adds per joint,
whatever the mesh size: the inner loop of SMPLify (and its Jacobians) needs nothing more.
"""

from __future__ import annotations

import torch
from smplx.lbs import batch_rodrigues
from torch import Tensor, nn

from spin.body.layer import BodyModel
from spin.body.model_data import NUM_JOINTS

__all__ = ["SparseJointModel", "SparseJoints"]


class SparseJoints:
    """SMPL-24 joints ``(B, 24, 3)`` and SPIN-49 joints ``(B, 49, 3)`` (or None)."""

    __slots__ = ("joints_smpl", "joints_spin")

    def __init__(self, joints_smpl: Tensor, joints_spin: Tensor | None) -> None:
        self.joints_smpl = joints_smpl
        self.joints_spin = joints_spin


class SparseJointModel(nn.Module):
    """Exact SMPL-24 and SPIN-49 joints of a :class:`BodyModel` without posing the mesh.

    Holds folded copies of the body model's arrays (its dtype and device); ``forward`` takes
    the body model's arguments and agrees with ``BodyModel.forward`` to float precision.
    """

    def __init__(self, body_model: BodyModel) -> None:
        super().__init__()
        self.has_joints_spin = body_model.has_joints_spin
        dtype = body_model.v_template.dtype
        # Fold in float64, store in the model's dtype.
        v_template = body_model.v_template.double()
        shapedirs = body_model.shapedirs.double()
        j_regressor = body_model.J_regressor.double()
        self.num_betas = body_model.num_betas
        self.register_buffer("parents", body_model.parents.clone(), persistent=False)
        # The kinematic chain walks a Python list: indexing with tensor elements would wait
        # for the device at every joint (and breaks CUDA graph capture).
        self.parent_list: list[int] = body_model.parents.tolist()
        self.register_buffer(
            "subtree", _subtree(self.parent_list).to(body_model.v_template), persistent=False
        )
        self.register_buffer(
            "joint_template", (j_regressor @ v_template).to(dtype), persistent=False
        )
        self.register_buffer(
            "joint_shapedirs",
            torch.einsum("jv,vdk->jdk", j_regressor, shapedirs).to(dtype),
            persistent=False,
        )
        if not self.has_joints_spin:
            return
        num_vertices = v_template.shape[0]
        vertex_rows = torch.zeros(
            body_model.spin_vertex_ids.numel(), num_vertices, dtype=torch.float64
        )
        vertex_rows[torch.arange(vertex_rows.shape[0]), body_model.spin_vertex_ids.cpu()] = 1.0
        rows = torch.cat([vertex_rows.to(v_template.device), body_model.J_regressor_extra.double()])
        weights = body_model.lbs_weights.double()
        rows_weights = torch.einsum("kv,vj->kjv", rows, weights)  # (K, 24, V)
        posedirs = body_model.posedirs.double().reshape(body_model.posedirs.shape[0], -1, 3)
        self.has_posedirs = bool(posedirs.abs().max() > 0)
        self.register_buffer("point_weight", rows_weights.sum(-1).to(dtype), persistent=False)
        self.register_buffer(
            "point_template",
            torch.einsum("kjv,vd->kjd", rows_weights, v_template).to(dtype),
            persistent=False,
        )
        self.register_buffer(
            "point_shapedirs",
            torch.einsum("kjv,vdn->kjdn", rows_weights, shapedirs).to(dtype),
            persistent=False,
        )
        self.register_buffer(
            "point_posedirs",
            torch.einsum("kjv,pvd->kjdp", rows_weights, posedirs).to(dtype)
            if self.has_posedirs
            else None,
            persistent=False,
        )
        self.register_buffer("spin_gather", body_model.spin_gather.clone(), persistent=False)

    def _rest_points(self, betas: Tensor, local_rotmats: Tensor) -> Tensor:
        """``(B, K, 24, 3)`` folded rest points ``m_kj`` (shape and pose-corrective terms)."""
        points = self.point_template + torch.einsum("kjdn,bn->bkjd", self.point_shapedirs, betas)
        if self.has_posedirs:
            eye = torch.eye(3, dtype=local_rotmats.dtype, device=local_rotmats.device)
            features = (local_rotmats[:, 1:] - eye).reshape(local_rotmats.shape[0], -1)
            points = points + torch.einsum("kjdp,bp->bkjd", self.point_posedirs, features)
        return points

    def _chain(self, local: Tensor, rest: Tensor) -> tuple[Tensor, Tensor]:
        """Global rotations ``(B, 24, 3, 3)`` and posed joints ``(B, 24, 3)`` from local
        rotations ``(B, 24, 3, 3)`` and rest joints ``(B, 24, 3)`` (SMPL's kinematic chain)."""
        rotations = [local[:, 0]]
        posed = [rest[:, 0]]
        for j in range(1, NUM_JOINTS):
            p = self.parent_list[j]
            rotations.append(rotations[p] @ local[:, j])
            offset = rest[:, j] - rest[:, p]
            posed.append(posed[p] + torch.einsum("brc,bc->br", rotations[p], offset))
        return torch.stack(rotations, dim=1), torch.stack(posed, dim=1)

    def joints_and_jacobian(
        self, pose_rotvecs: Tensor, betas: Tensor, transl: Tensor
    ) -> tuple[Tensor, Tensor]:
        """SPIN-49 joints and their analytic Jacobian.

        Args:
            pose_rotvecs: ``(B, 72)``; betas: ``(B, NB)``; transl: ``(B, 3)``.

        Returns:
            joints ``(B, 49, 3)`` and ``d joints / d [pose_rotvecs, betas, transl]``
            ``(B, 49, 3, 72 + NB + 3)``. Rotating joint ``i`` by a small world rotation
            ``w`` moves every point attached to its subtree by ``w x (x - P_i)``; the local
            axis-angle maps to ``w`` through ``G_i Jr(theta_i)``. Pose-corrective blend
            shapes (official SMPL) are left out of the derivative (exact for the open model,
            whose ``posedirs`` are zero; a close approximation otherwise).
        """
        if not self.has_joints_spin:
            raise ValueError("this body model has no SPIN-49 joints")
        batch = pose_rotvecs.shape[0]
        rotvecs = pose_rotvecs.reshape(batch, NUM_JOINTS, 3)
        local = batch_rodrigues(rotvecs.reshape(-1, 3)).reshape(batch, NUM_JOINTS, 3, 3)
        rest = self.joint_template + torch.einsum("jdk,bk->bjd", self.joint_shapedirs, betas)
        glob, joints = self._chain(local, rest)
        rest_d = [self.joint_shapedirs[0].expand(batch, -1, -1)]
        for j in range(1, NUM_JOINTS):
            p = self.parent_list[j]
            offset_d = self.joint_shapedirs[j] - self.joint_shapedirs[p]
            rest_d.append(rest_d[p] + torch.einsum("brc,cn->brn", glob[:, p], offset_d))
        joints_d_betas = torch.stack(rest_d, dim=1)  # (B, 24, 3, NB)

        points_rest = self._rest_points(betas, local)
        origin = joints - torch.einsum("bjrc,bjc->bjr", glob, rest)  # translation of A_j
        parts = torch.einsum("bjrc,bkjc->bkjr", glob, points_rest) + torch.einsum(
            "kj,bjr->bkjr", self.point_weight, origin
        )
        points = parts.sum(dim=2)  # (B, K, 3)

        # Rotations: world-frame derivative, then local axis-angle.
        subtree = self.subtree
        to_local = glob @ right_jacobian_so3(rotvecs)  # (B, 24, 3, 3)
        subtree_sum = torch.einsum("ij,bkjr->bkir", subtree, parts)
        subtree_weight = self.point_weight @ subtree.T  # (K, 24)
        lever = subtree_sum - subtree_weight[None, :, :, None] * joints[:, None]
        points_d_pose = -_skew(lever) @ to_local[:, None]  # (B, K, 24, 3, 3)
        strict = (subtree - torch.eye(NUM_JOINTS, dtype=subtree.dtype, device=subtree.device)).T
        joint_lever = joints[:, :, None] - joints[:, None, :]  # [b, j, i] = P_j - P_i
        joints_d_pose = -_skew(joint_lever) @ to_local[:, None]  # (B, 24(j), 24(i), 3, 3)
        joints_d_pose = joints_d_pose * strict[None, :, :, None, None]
        pose_d = torch.cat([joints_d_pose, points_d_pose], dim=1)  # (B, 24+K, 24, 3, 3)
        pose_d = pose_d.permute(0, 1, 3, 2, 4).reshape(batch, pose_d.shape[1], 3, -1)

        # Shape: through the rest points and the posed joints.
        folded = self.point_shapedirs - self.point_weight[..., None, None] * self.joint_shapedirs
        points_d_betas = torch.einsum("bjrc,kjcn->bkrn", glob, folded) + torch.einsum(
            "kj,bjrn->bkrn", self.point_weight, joints_d_betas
        )
        betas_d = torch.cat([joints_d_betas, points_d_betas], dim=1)

        transl_d = torch.eye(3, dtype=local.dtype, device=local.device).expand(
            batch, betas_d.shape[1], 3, 3
        )
        sources = torch.cat([joints, points], dim=1) + transl[:, None]
        jacobian = torch.cat([pose_d, betas_d, transl_d], dim=-1)
        return (
            sources.index_select(1, self.spin_gather),
            jacobian.index_select(1, self.spin_gather),
        )

    def forward(
        self,
        pose_rotvecs: Tensor | None = None,
        betas: Tensor | None = None,
        transl: Tensor | None = None,
        *,
        pose_rotmats: Tensor | None = None,
    ) -> SparseJoints:
        """Joints of the posed body.

        Args:
            pose_rotvecs: ``(B, 72)`` axis-angle (or give ``pose_rotmats`` ``(B, 24, 3, 3)``).
            betas: ``(B, NB)`` shape coefficients (all of them).
            transl: ``(B, 3)`` translation or None.
        """
        if pose_rotmats is None:
            batch = pose_rotvecs.shape[0]
            pose_rotmats = batch_rodrigues(pose_rotvecs.reshape(-1, 3)).reshape(
                batch, NUM_JOINTS, 3, 3
            )
        rest_joints = self.joint_template + torch.einsum("jdk,bk->bjd", self.joint_shapedirs, betas)
        glob, joints_smpl = self._chain(pose_rotmats, rest_joints)
        joints_spin = None
        if self.has_joints_spin:
            # A_j = [G_j | P_j - G_j rest_j] applied to the folded rest points.
            origin = joints_smpl - torch.einsum("bjrc,bjc->bjr", glob, rest_joints)
            points = self._rest_points(betas, pose_rotmats)
            posed = torch.einsum("bjrc,bkjc->bkr", glob, points)
            posed = posed + torch.einsum("bjr,kj->bkr", origin, self.point_weight)
            sources = torch.cat([joints_smpl, posed], dim=1)
            joints_spin = sources.index_select(1, self.spin_gather)
        if transl is not None:
            joints_smpl = joints_smpl + transl[:, None]
            if joints_spin is not None:
                joints_spin = joints_spin + transl[:, None]
        return SparseJoints(joints_smpl, joints_spin)


def _subtree(parents: list[int]) -> Tensor:
    """``(24, 24)``: ``[i, j] = 1`` when joint ``j`` is ``i`` or one of its descendants."""
    subtree = torch.eye(len(parents))
    for j in range(1, len(parents)):
        i = parents[j]
        while i >= 0:
            subtree[i, j] = 1.0
            i = parents[i]
    return subtree


def _skew(v: Tensor) -> Tensor:
    """``(..., 3)`` vectors -> ``(..., 3, 3)`` cross-product matrices ``[v]x``."""
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    return torch.stack(
        [
            torch.stack([zero, -z, y], dim=-1),
            torch.stack([z, zero, -x], dim=-1),
            torch.stack([-y, x, zero], dim=-1),
        ],
        dim=-2,
    )


def right_jacobian_so3(rotvecs: Tensor) -> Tensor:
    """``(..., 3, 3)`` right Jacobian of the exponential map at ``rotvecs`` ``(..., 3)``:
    ``exp(theta + d) ~ exp(theta) exp(Jr(theta) d)`` for small ``d``."""
    angle = rotvecs.norm(dim=-1, keepdim=True)[..., None]  # (..., 1, 1)
    small = angle < 1e-4
    safe = torch.where(small, torch.ones_like(angle), angle)
    k = _skew(rotvecs)
    a = torch.where(small, 0.5 - angle**2 / 24, (1 - torch.cos(safe)) / safe**2)
    b = torch.where(small, 1.0 / 6 - angle**2 / 120, (safe - torch.sin(safe)) / safe**3)
    eye = torch.eye(3, dtype=rotvecs.dtype, device=rotvecs.device)
    return eye - a * k + b * (k @ k)
