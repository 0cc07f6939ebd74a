"""The stateless body model layer: pose, shape and translation in, mesh and joints out.

The maths is smplx's pure ``lbs`` function; :class:`BodyModel` only holds the model
arrays as buffers and assembles the joint sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from smplx.lbs import batch_rodrigues, lbs, vertices2joints
from torch import Tensor, nn

from spin.body.joint_conventions import (
    SMPL_OUTPUT_VERTEX_JOINTS,
    SPIN49_FROM_SMPL_OUTPUT,
    SPIN_VERTEX_JOINTS,
)
from spin.body.model_data import NUM_JOINTS, BodyModelData

__all__ = ["BodyModel", "BodyOutput"]

_NO_SPIN_JOINTS = (
    "this body model has no SPIN-49 joints: they need SPIN's extra joint regressor "
    "(J_regressor_extra, 9 x V) and the face/foot vertex ids. For the official SMPL model, "
    "place SPIN's J_regressor_extra.npy next to the SMPL file (or in the folder above it); "
    "the bundled 'open' model includes both."
)
_NO_H36M_JOINTS = (
    "this body model has no H36M joint regressor. For the official SMPL model, place "
    "SPIN's J_regressor_h36m.npy next to the SMPL file (or in the folder above it)."
)


@dataclass(frozen=True, eq=False)
class BodyOutput:
    """Result of :meth:`BodyModel.forward`.

    Attributes:
        vertices: ``(B, V, 3)`` posed mesh vertices (translation applied).
        joints_smpl: ``(B, 24, 3)`` SMPL kinematic joints (``smpl24`` convention).
        joints_spin: ``(B, 49, 3)`` SPIN's 49 joints (``spin49``), or None when the
            model has no extra regressor.
        joints_h36m: ``(B, 17, 3)`` H36M-17 joints regressed from the vertices, or
            None when the model has no H36M regressor.
        rotmats: ``(B, 24, 3, 3)`` per-joint rotations (relative to the parent).
    """

    vertices: Tensor
    joints_smpl: Tensor
    joints_spin: Tensor | None
    joints_h36m: Tensor | None
    rotmats: Tensor

    def require_joints_spin(self) -> Tensor:
        """``joints_spin``, or a ValueError saying how to get it."""
        if self.joints_spin is None:
            raise ValueError(_NO_SPIN_JOINTS)
        return self.joints_spin

    def require_joints_h36m(self) -> Tensor:
        """``joints_h36m``, or a ValueError saying how to get it."""
        if self.joints_h36m is None:
            raise ValueError(_NO_H36M_JOINTS)
        return self.joints_h36m


def _spin49_plan(vertex_ids: dict[str, int]) -> tuple[list[int], list[int]]:
    """Vertex ids to select and a gather index into
    ``[24 SMPL joints, those vertices, 9 extra-regressor joints]`` giving SPIN's 49 joints."""
    used_vertex_joints = list(SPIN_VERTEX_JOINTS)
    selected = [vertex_ids[key] for key in used_vertex_joints]
    first_extra = NUM_JOINTS + len(SMPL_OUTPUT_VERTEX_JOINTS)
    gather = []
    for source in SPIN49_FROM_SMPL_OUTPUT:
        if source < NUM_JOINTS:
            gather.append(source)
        elif source < first_extra:
            key = SMPL_OUTPUT_VERTEX_JOINTS[source - NUM_JOINTS]
            gather.append(NUM_JOINTS + used_vertex_joints.index(key))
        else:
            gather.append(NUM_JOINTS + len(selected) + source - first_extra)
    return selected, gather


def _shape_str(t: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ("," if t.ndim == 1 else "") + ")"


class BodyModel(nn.Module):
    """SMPL-format body model layer; holds only the model arrays, as buffers.

    Buffers are ``dtype`` (float32 unless given) on the CPU; ``.to(device, dtype)``
    moves them and inputs must then match. Build with ``dtype=torch.float64`` rather
    than ``.to(torch.float64)`` to keep the arrays' full precision. Buffers are not
    saved in ``state_dict`` (they come from the model file). Nothing depends on a
    batch size.

    Attributes:
        data: the :class:`BodyModelData` it was built from.
        name: model name; ``num_betas``: NB; ``faces``: ``(F, 3)`` int64 numpy array
            (also the buffer ``faces_tensor``).
    """

    def __init__(self, data: BodyModelData, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.data = data
        self.name = data.name
        self.num_betas = data.num_betas
        self.faces = data.faces

        def buffer(name: str, array: np.ndarray | None, kind: torch.dtype = dtype) -> None:
            tensor = None if array is None else torch.tensor(np.asarray(array), dtype=kind)
            self.register_buffer(name, tensor, persistent=False)

        num_vertices = data.num_vertices
        buffer("v_template", data.v_template)
        buffer("shapedirs", data.shapedirs)
        # smplx's lbs takes pose blend shapes as (207, V * 3).
        buffer("posedirs", data.posedirs.reshape(num_vertices * 3, -1).T)
        buffer("J_regressor", data.J_regressor)
        buffer("lbs_weights", data.lbs_weights)
        buffer("parents", data.parents, torch.long)
        buffer("faces_tensor", data.faces, torch.long)
        buffer("J_regressor_h36m", data.J_regressor_h36m)

        self.has_joints_spin = data.J_regressor_extra is not None and all(
            key in data.vertex_ids for key in SPIN_VERTEX_JOINTS
        )
        if self.has_joints_spin:
            selected, gather = _spin49_plan(data.vertex_ids)
            buffer("J_regressor_extra", data.J_regressor_extra)
            buffer("spin_vertex_ids", np.asarray(selected), torch.long)
            buffer("spin_gather", np.asarray(gather), torch.long)
        else:
            for name in ("J_regressor_extra", "spin_vertex_ids", "spin_gather"):
                buffer(name, None)

    @property
    def has_joints_h36m(self) -> bool:
        return self.J_regressor_h36m is not None

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, gender={self.data.gender!r}, vertices={self.data.num_vertices}, "
            f"num_betas={self.num_betas}, joints_spin={self.has_joints_spin}, "
            f"joints_h36m={self.has_joints_h36m}"
        )

    def forward(
        self,
        pose_rotvecs: Tensor | None = None,
        betas: Tensor | None = None,
        transl: Tensor | None = None,
        *,
        pose_rotmats: Tensor | None = None,
    ) -> BodyOutput:
        """Pose and shape the body.

        Args:
            pose_rotvecs: ``(B, 72)`` or ``(B, 24, 3)`` axis-angle rotations, global
                orientation first. Give this or ``pose_rotmats``.
            betas: ``(B, K)`` or ``(1, K)`` shape coefficients with ``K <= num_betas``;
                missing trailing coefficients are zero. None means the mean shape.
            transl: ``(B, 3)`` or ``(1, 3)`` translation added to vertices and joints.
            pose_rotmats: ``(B, 24, 3, 3)`` rotation matrices instead of rotvecs.

        All tensors must have the model's dtype and device.
        """
        rotmats = self._rotmats(pose_rotvecs, pose_rotmats)
        batch = rotmats.shape[0]
        betas = self._betas(betas, batch)
        self._check_transl(transl, batch)
        vertices, joints_smpl = lbs(
            betas,
            rotmats,
            self.v_template,
            self.shapedirs,
            self.posedirs,
            self.J_regressor,
            self.parents,
            self.lbs_weights,
            pose2rot=False,
        )
        if transl is not None:
            vertices = vertices + transl[:, None]
            joints_smpl = joints_smpl + transl[:, None]

        joints_spin = None
        if self.has_joints_spin:
            sources = torch.cat(
                [
                    joints_smpl,
                    vertices.index_select(1, self.spin_vertex_ids),
                    vertices2joints(self.J_regressor_extra, vertices),
                ],
                dim=1,
            )
            joints_spin = sources.index_select(1, self.spin_gather)
        joints_h36m = None
        if self.J_regressor_h36m is not None:
            joints_h36m = vertices2joints(self.J_regressor_h36m, vertices)
        return BodyOutput(
            vertices=vertices,
            joints_smpl=joints_smpl,
            joints_spin=joints_spin,
            joints_h36m=joints_h36m,
            rotmats=rotmats,
        )

    # --- input checks -------------------------------------------------------------------

    def _check(self, name: str, t: Tensor) -> None:
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        ref = self.v_template
        if t.dtype != ref.dtype or t.device != ref.device:
            raise ValueError(
                f"{name} is {t.dtype} on {t.device} but the body model is {ref.dtype} on "
                f"{ref.device}; convert the input or move the model with "
                f"model.to({name}.device, {name}.dtype)"
            )

    def _rotmats(self, pose_rotvecs: Tensor | None, pose_rotmats: Tensor | None) -> Tensor:
        if (pose_rotvecs is None) == (pose_rotmats is None):
            raise ValueError(
                "give exactly one of pose_rotvecs (B, 72) and pose_rotmats (B, 24, 3, 3)"
            )
        if pose_rotmats is not None:
            self._check("pose_rotmats", pose_rotmats)
            if pose_rotmats.ndim != 4 or pose_rotmats.shape[1:] != (NUM_JOINTS, 3, 3):
                hint = "; add a batch dimension" if pose_rotmats.shape == (24, 3, 3) else ""
                raise ValueError(
                    f"expected pose_rotmats of shape (B, 24, 3, 3), got "
                    f"{_shape_str(pose_rotmats)}{hint}"
                )
            return pose_rotmats
        self._check("pose_rotvecs", pose_rotvecs)
        shape = tuple(pose_rotvecs.shape)
        if not (
            (len(shape) == 2 and shape[1] == NUM_JOINTS * 3)
            or (len(shape) == 3 and shape[1:] == (NUM_JOINTS, 3))
        ):
            hint = "; add a batch dimension" if shape in ((72,), (24, 3)) else ""
            if len(shape) == 2 and shape[1] == (NUM_JOINTS - 1) * 3:
                hint = "; prepend the global orientation (B, 3) to the body pose"
            raise ValueError(
                f"expected pose_rotvecs of shape (B, 72) or (B, 24, 3), got "
                f"{_shape_str(pose_rotvecs)}{hint}"
            )
        batch = shape[0]
        return batch_rodrigues(pose_rotvecs.reshape(-1, 3)).reshape(batch, NUM_JOINTS, 3, 3)

    def _check_transl(self, transl: Tensor | None, batch: int) -> None:
        if transl is None:
            return
        self._check("transl", transl)
        if transl.ndim != 2 or transl.shape[1] != 3 or transl.shape[0] not in (1, batch):
            hint = "; add a batch dimension" if transl.shape == (3,) else ""
            raise ValueError(
                f"expected transl of shape ({batch}, 3), got {_shape_str(transl)}{hint}"
            )

    def _betas(self, betas: Tensor | None, batch: int) -> Tensor:
        ref = self.v_template
        if betas is None:
            return torch.zeros(batch, self.num_betas, dtype=ref.dtype, device=ref.device)
        self._check("betas", betas)
        if betas.ndim != 2 or betas.shape[0] not in (1, batch) or betas.shape[1] > self.num_betas:
            hint = "; add a batch dimension" if betas.ndim == 1 else ""
            if betas.ndim == 2 and betas.shape[1] > self.num_betas:
                hint = f"; this model has only {self.num_betas} shape coefficients"
            raise ValueError(
                f"expected betas of shape ({batch}, {self.num_betas}), got "
                f"{_shape_str(betas)}{hint}"
            )
        if betas.shape[1] < self.num_betas:
            betas = nn.functional.pad(betas, (0, self.num_betas - betas.shape[1]))
        return betas.expand(batch, -1)
