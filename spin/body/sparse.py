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
        # The chain level by level (joints of one depth at once: 8 products for SMPL's tree
        # instead of 23); the root counts as its own parent (its offset is zero).
        order, parent_position, self.level_slices = _levels(self.parent_list)
        self.register_buffer("level_order", order, persistent=False)
        self.register_buffer("level_parent_position", parent_position, persistent=False)
        self.register_buffer("joint_position", torch.argsort(order), persistent=False)
        self.register_buffer(
            "parent_index", torch.tensor([max(p, 0) for p in self.parent_list]), persistent=False
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
        rotations ``(B, 24, 3, 3)`` and rest joints ``(B, 24, 3)`` (SMPL's kinematic chain).

        The posed joint ``j`` is the root's rest joint plus, over the joints ``a`` on its
        path, the parent's rotation applied to the bone ``rest_a - rest_parent(a)``: one sum
        over :attr:`subtree` once the global rotations are known."""
        ordered = local.index_select(1, self.level_order)
        glob = ordered[:, :1]
        for start, end in self.level_slices:
            parents = glob.index_select(1, self.level_parent_position[start:end])
            glob = torch.cat([glob, parents @ ordered[:, start:end]], dim=1)
        glob = glob.index_select(1, self.joint_position)
        bones = rest - rest.index_select(1, self.parent_index)
        moved = torch.einsum("bjrc,bjc->bjr", glob.index_select(1, self.parent_index), bones)
        return glob, rest[:, :1] + torch.einsum("aj,bar->bjr", self.subtree, moved)

    def joints_and_jacobian(
        self, pose_rotvecs: Tensor, betas: Tensor, transl: Tensor, *, root_only: bool = False
    ) -> tuple[Tensor, Tensor]:
        """SPIN-49 joints and their analytic Jacobian.

        Args:
            pose_rotvecs: ``(B, 72)``; betas: ``(B, NB)``; transl: ``(B, 3)``.
            root_only: differentiate with respect to the global orientation and the
                translation only (SMPLify's camera stage): ``(B, 49, 3, 3 + 3)``.

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
        points_rest = self._rest_points(betas, local)
        origin = joints - torch.einsum("bjrc,bjc->bjr", glob, rest)  # translation of A_j
        parts = torch.einsum("bjrc,bkjc->bkjr", glob, points_rest) + torch.einsum(
            "kj,bjr->bkjr", self.point_weight, origin
        )
        points = parts.sum(dim=2)  # (B, K, 3)
        sources = torch.cat([joints, points], dim=1).index_select(1, self.spin_gather)
        transl_d = torch.eye(3, dtype=local.dtype, device=local.device).expand(
            batch, sources.shape[1], 3, 3
        )
        # Rotations: world-frame derivative w x lever, then local axis-angle (G_i Jr).
        if root_only:
            to_local = glob[:, 0] @ right_jacobian_so3(rotvecs[:, 0])  # (B, 3, 3)
            # A point's lever about the root: itself less its total skinning weight x P_0.
            weight = torch.cat([self.point_weight.new_ones(NUM_JOINTS), self.point_weight.sum(1)])
            weight = weight.index_select(0, self.spin_gather)
            lever = sources - weight[:, None] * joints[:, None, 0]
            orient_d = _cross_columns(to_local[:, None], lever)  # (B, 49, 3, 3)
            return sources + transl[:, None], torch.cat([orient_d, transl_d], dim=-1)
        subtree = self.subtree
        to_local = glob @ right_jacobian_so3(rotvecs)  # (B, 24, 3, 3)
        subtree_sum = torch.einsum("ij,bkjr->bkir", subtree, parts)
        subtree_weight = self.point_weight @ subtree.T  # (K, 24)
        points_lever = subtree_sum - subtree_weight[None, :, :, None] * joints[:, None]
        strict = (subtree - torch.eye(NUM_JOINTS, dtype=subtree.dtype, device=subtree.device)).T
        joints_lever = joints[:, :, None] - joints[:, None, :]  # [b, j, i] = P_j - P_i
        lever = torch.cat([joints_lever * strict[..., None], points_lever], dim=1)
        pose_d = _cross_columns(to_local[:, None], lever)  # (B, 24 + K, 24, 3, 3)
        pose_d = pose_d.index_select(1, self.spin_gather)
        pose_d = pose_d.permute(0, 1, 3, 2, 4).reshape(batch, pose_d.shape[1], 3, -1)

        # Shape: the chain's sum over bones with each bone's shape basis, then the points.
        bones_d = self.joint_shapedirs - self.joint_shapedirs.index_select(0, self.parent_index)
        moved_d = torch.einsum("bjrc,jcn->bjrn", glob.index_select(1, self.parent_index), bones_d)
        joints_d_betas = self.joint_shapedirs[0] + torch.einsum(
            "aj,barn->bjrn", self.subtree, moved_d
        )  # (B, 24, 3, NB)
        folded = self.point_shapedirs - self.point_weight[..., None, None] * self.joint_shapedirs
        points_d_betas = torch.einsum("bjrc,kjcn->bkrn", glob, folded) + torch.einsum(
            "kj,bjrn->bkrn", self.point_weight, joints_d_betas
        )
        betas_d = torch.cat([joints_d_betas, points_d_betas], dim=1).index_select(
            1, self.spin_gather
        )
        jacobian = torch.cat([pose_d, betas_d, transl_d], dim=-1)
        return sources + transl[:, None], jacobian

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


def _levels(parents: list[int]) -> tuple[Tensor, Tensor, list[tuple[int, int]]]:
    """Joints ordered by depth in the tree (root first), each joint's parent's position in
    that order, and the ``(start, end)`` range of each depth below the root."""
    depth = [0] * len(parents)
    for j in range(1, len(parents)):
        depth[j] = depth[parents[j]] + 1
    order = sorted(range(len(parents)), key=lambda j: (depth[j], j))
    position = {j: i for i, j in enumerate(order)}
    parent_position = [position[max(parents[j], 0)] for j in order]
    slices = []
    for level in range(1, max(depth) + 1):
        members = [i for i, j in enumerate(order) if depth[j] == level]
        slices.append((members[0], members[-1] + 1))
    return torch.tensor(order), torch.tensor(parent_position), slices


def _cross_columns(matrices: Tensor, lever: Tensor) -> Tensor:
    """``-[lever]x @ matrices``: each column ``m`` of ``matrices (..., 3, 3)`` becomes
    ``m x lever`` (``lever (..., 3)``; both broadcast)."""
    mx, my, mz = matrices.unbind(-2)  # rows, (..., 3) over the columns
    lx, ly, lz = lever[..., None].unbind(-2)
    return torch.stack([my * lz - mz * ly, mz * lx - mx * lz, mx * ly - my * lx], dim=-2)


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
