"""HMR's adversarial body prior: discriminators over SMPL body-joint rotations and betas.

Kanazawa et al., "End-to-end Recovery of Human Shape and Pose" (CVPR 2018), Sec. 3.3:
factorised discriminators judge whether a pose and shape look like real people.

- Pose: each of the 23 body-joint rotation matrices (the global orientation is not
  judged) is embedded by the same small network (HMR's shared 1x1 convolutions:
  9 -> 32 -> 32, ReLU). Then 23 per-joint discriminators (a linear 32 -> 1 each, on
  their joint's embedding) and one whole-pose discriminator (the 23 embeddings
  flattened, 23 * 32 -> 1024 -> 1024 -> 1, ReLU between).
- Shape: betas -> 10 -> 5 -> 1 (ReLU between).

So :class:`PoseShapeDiscriminator` gives 25 scores per sample: 23 joints, the whole
pose, the shape (in that order). The losses are in :mod:`spin.train.adversarial`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["NUM_BODY_JOINTS", "NUM_SCORES", "PoseShapeDiscriminator"]

NUM_BODY_JOINTS = 23
"""SMPL joints the pose discriminators judge: all but the pelvis (global orientation)."""

NUM_SCORES = NUM_BODY_JOINTS + 2
"""Scores per sample: one per body joint, the whole pose, the shape."""

JOINT_EMBEDDING = (32, 32)
"""HMR's shared per-joint embedding of a flattened rotation matrix (9 -> 32 -> 32)."""

WHOLE_POSE_HIDDEN = (1024, 1024)
"""Hidden widths of HMR's whole-pose discriminator."""

SHAPE_HIDDEN = (10, 5)
"""Hidden widths of HMR's shape discriminator."""


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers through ``sizes`` with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class PoseShapeDiscriminator(nn.Module):
    """HMR's 25 discriminators (module docstring).

    Args:
        num_betas: length of the betas it judges (the body model's).
        num_joints: body joints judged (SMPL: 23).
    """

    def __init__(self, num_betas: int = 10, num_joints: int = NUM_BODY_JOINTS) -> None:
        super().__init__()
        if num_betas < 1 or num_joints < 1:
            raise ValueError(
                f"need num_betas >= 1 and num_joints >= 1, got {num_betas}, {num_joints}"
            )
        self.num_betas = num_betas
        self.num_joints = num_joints
        embed = JOINT_EMBEDDING[-1]
        # Shared over joints: HMR's 1x1 convolutions, each followed by a ReLU.
        self.joint_embedding = nn.Sequential(_mlp((9, *JOINT_EMBEDDING)), nn.ReLU())
        # One linear 32 -> 1 per joint, as a (J, 32) weight and (J,) bias.
        self.joint_weight = nn.Parameter(torch.empty(num_joints, embed))
        self.joint_bias = nn.Parameter(torch.empty(num_joints))
        bound = 1.0 / embed**0.5  # nn.Linear's default initialisation
        nn.init.uniform_(self.joint_weight, -bound, bound)
        nn.init.uniform_(self.joint_bias, -bound, bound)
        self.whole_pose = _mlp((num_joints * embed, *WHOLE_POSE_HIDDEN, 1))
        self.shape = _mlp((num_betas, *SHAPE_HIDDEN, 1))

    def forward(self, body_rotmats: Tensor, betas: Tensor) -> Tensor:
        """Scores (higher = more real; LSGAN targets 1 real, 0 fake).

        Args:
            body_rotmats: ``(B, 23, 3, 3)`` body-joint rotations (SMPL joints 1..23, the
                global orientation left out).
            betas: ``(B, NB)`` shape coefficients.

        Returns:
            ``(B, 25)``: 23 per-joint scores, the whole-pose score, the shape score.
        """
        joints = self.num_joints
        if body_rotmats.dim() != 4 or body_rotmats.shape[1:] != (joints, 3, 3):
            raise ValueError(
                f"expected body_rotmats of shape (B, {joints}, 3, 3), got "
                f"{tuple(body_rotmats.shape)}; drop the global orientation (pose_rotmats[:, 1:])"
            )
        if betas.dim() != 2 or betas.shape != (body_rotmats.shape[0], self.num_betas):
            raise ValueError(
                f"expected betas of shape ({body_rotmats.shape[0]}, {self.num_betas}), "
                f"got {tuple(betas.shape)}"
            )
        embedding = self.joint_embedding(body_rotmats.flatten(-2))  # (B, J, 32)
        per_joint = (embedding * self.joint_weight).sum(-1) + self.joint_bias  # (B, J)
        whole = self.whole_pose(embedding.flatten(1))  # (B, 1)
        shape = self.shape(betas)  # (B, 1)
        return torch.cat([per_joint, whole, shape], dim=1)
