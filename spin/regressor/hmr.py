"""HMR: an image encoder and an iterative error feedback (IEF) head predicting SMPL.

From a crop, the encoder gives a feature ``f``; the head starts from the mean
parameters ``theta_0 = [pose_6d, betas, cam]`` and refines them a few times::

    theta_{t+1} = theta_t + heads(drop(fc2(drop(fc1([f, theta_t])))))

with three linear heads (pose 24 x 6, betas NB, camera 3) initialised small (Xavier,
gain 0.01, zero bias) so the first prediction is close to the mean (Kanazawa et al.,
CVPR 2018; SPIN, ICCV 2019). Rotations are 6D (Zhou et al., CVPR 2019), turned into
rotation matrices by Gram-Schmidt. The camera is SPIN's weak-perspective crop camera
``[s, tx, ty]``, also given as the translation ``cam_t`` of the equivalent perspective
crop camera (focal 5000 px, 224 px crop; see :mod:`spin.geometry.cameras`), so
:func:`predict_body` places the body in that camera's frame.

The module names ``fc1``, ``drop1``, ``fc2``, ``drop2``, ``decpose``, ``decshape`` and
``deccam`` are SPIN's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from spin.body.layer import BodyModel, BodyOutput
from spin.geometry.cameras import CROP_SIZE, FOCAL_LENGTH, weak_perspective_to_translation
from spin.geometry.rotations import rotmat_to_rotvec, sixd_to_rotmat
from spin.regressor.backbones import BackboneConfig, build_backbone
from spin.regressor.mean_params import (
    NUM_POSE_JOINTS,
    SIXD_SIZE,
    MeanParams,
    load_mean_params,
    mean_params_for_body_model,
)

__all__ = ["HMR", "HMRConfig", "HMROutput", "build_hmr", "predict_body", "soft_clamp"]

CAM_SIZE = 3
"""Numbers in the weak-perspective camera ``[s, tx, ty]``."""

SOFT_CLAMP_SHARPNESS = 30.0
"""Sharpness of :func:`soft_clamp`'s corners (1 / their width, in the clamped units)."""


def soft_clamp(
    x: Tensor, low: float | None, high: float | None, sharpness: float = SOFT_CLAMP_SHARPNESS
) -> Tensor:
    """A smooth clamp: ``x`` inside ``[low, high]`` (to ``exp(-sharpness d) / sharpness`` at
    a distance ``d`` from a bound), the bound outside, with a gradient that fades over
    ``~1 / sharpness`` instead of stopping dead. Either bound may be None.

    Args:
        x: any shape.
        low, high: the bounds, ``low < high``.
        sharpness: softplus sharpness of the corners.
    """
    if low is not None:
        x = low + F.softplus(x - low, beta=sharpness)
    if high is not None:
        x = high - F.softplus(high - x, beta=sharpness)
    return x


@dataclass(frozen=True)
class HMRConfig:
    """The regressor; defaults are SPIN's.

    Attributes:
        backbone: the image encoder.
        iterations: IEF iterations.
        hidden: width of the two hidden layers.
        dropout: dropout probability after each hidden layer.
        hidden_relu: apply ReLU after each hidden layer. SPIN's head has none (the two
            hidden layers are linear); HMR's original TensorFlow head has them.
        init_gain: Xavier gain of the three output heads (their biases start at zero).
        mean_params: path to SPIN's ``smpl_mean_params.npz``, or None to compute them
            for the body model (:func:`~spin.regressor.mean_params.mean_params_for_body_model`).
        focal_length: crop camera focal length in pixels, for ``cam_t``.
        crop_size: side of the crop in pixels that ``cam`` refers to, for ``cam_t``.
        cam_scale_bounds: ``(low, high)``: the camera scale ``s`` that places the body
            (``cam_t``) is kept in this range, or None for SPIN's unbounded camera. ``s``
            sets the depth ``tz = 2 f / (crop_size s)``: at ``s <= 0`` the body is at or
            behind the camera (a pole of the projection) and at large ``s`` it crosses the
            camera plane; there the 2D loss and its gradient grow without bound and
            training diverges. The bound is smooth (:func:`soft_clamp`, the identity to
            ~1e-8 between ``low + 0.5`` and ``high - 0.5``) and applies to ``cam_t``
            only: ``cam`` (the IEF state and SPIN's camera term) stays unbounded, so the
            camera term still pulls a negative ``s`` back. The defaults keep the body
            between ~4.5 and ~450 m with SPIN's camera (people filling the crop: s ~ 0.5-1.5).
    """

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    iterations: int = 3
    hidden: int = 1024
    dropout: float = 0.5
    hidden_relu: bool = False
    init_gain: float = 0.01
    mean_params: str | None = None
    focal_length: float = FOCAL_LENGTH
    crop_size: int = CROP_SIZE
    cam_scale_bounds: tuple[float, float] | None = (0.1, 10.0)

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"HMR iterations must be >= 1, got {self.iterations}")
        if self.hidden < 1:
            raise ValueError(f"HMR hidden width must be >= 1, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"HMR dropout must be in [0, 1), got {self.dropout}")
        if self.cam_scale_bounds is not None:
            low, high = self.cam_scale_bounds
            if not 0.0 < low < high:
                raise ValueError(
                    f"HMR cam_scale_bounds must be (low, high) with 0 < low < high, got "
                    f"{tuple(self.cam_scale_bounds)}"
                )


@dataclass(frozen=True, eq=False)
class HMROutput:
    """The regressor's prediction.

    Attributes:
        pose_6d: ``(B, 24, 6)`` rotations in 6D, global orientation first.
        pose_rotmats: ``(B, 24, 3, 3)`` the same as rotation matrices.
        betas: ``(B, NB)`` shape coefficients.
        cam: ``(B, 3)`` weak-perspective crop camera ``[s, tx, ty]``.
        cam_t: ``(B, 3)`` translation of the body in the perspective crop camera (from
            ``cam`` with its scale kept in ``HMRConfig.cam_scale_bounds``).
        iterations: when asked for, one :class:`HMROutput` per IEF iteration (the last
            equals this one), for deep supervision; else empty.
    """

    pose_6d: Tensor
    pose_rotmats: Tensor
    betas: Tensor
    cam: Tensor
    cam_t: Tensor
    iterations: tuple[HMROutput, ...] = ()

    @property
    def pose_rotvecs(self) -> Tensor:
        """``(B, 24, 3)`` the pose as axis-angle vectors (``.reshape(B, 72)`` for SMPL's)."""
        return rotmat_to_rotvec(self.pose_rotmats)


class HMR(nn.Module):
    """Encoder + IEF head. Holds parameters and the mean parameters (buffers, saved in
    ``state_dict``, so a checkpoint keeps the start it was trained from).

    Args:
        backbone: images ``(B, C, H, W)`` to features ``(B, feature_dim)``.
        feature_dim: the backbone's feature size.
        mean_params: the starting point; its ``num_betas`` sets NB.
        config: head settings (``config.backbone`` is only recorded).
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        mean_params: MeanParams,
        config: HMRConfig,
    ) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.num_betas = mean_params.num_betas
        pose_size = NUM_POSE_JOINTS * SIXD_SIZE
        state_size = pose_size + self.num_betas + CAM_SIZE
        self.fc1 = nn.Linear(feature_dim + state_size, config.hidden)
        self.drop1 = nn.Dropout(config.dropout)
        self.fc2 = nn.Linear(config.hidden, config.hidden)
        self.drop2 = nn.Dropout(config.dropout)
        self.decpose = nn.Linear(config.hidden, pose_size)
        self.decshape = nn.Linear(config.hidden, self.num_betas)
        self.deccam = nn.Linear(config.hidden, CAM_SIZE)
        for head in (self.decpose, self.decshape, self.deccam):
            nn.init.xavier_uniform_(head.weight, gain=config.init_gain)
            nn.init.zeros_(head.bias)
        dtype = torch.get_default_dtype()
        self.register_buffer("init_pose_6d", mean_params.pose_6d.to(dtype))
        self.register_buffer("init_betas", mean_params.betas.to(dtype))
        self.register_buffer("init_cam", mean_params.cam.to(dtype))

    def _refine(self, state: Tensor) -> Tensor:
        """One IEF step's hidden layers: ``(B, F + 144 + NB + 3)`` to ``(B, hidden)``."""
        x = self.fc1(state)
        if self.config.hidden_relu:
            x = F.relu(x)
        x = self.fc2(self.drop1(x))
        if self.config.hidden_relu:
            x = F.relu(x)
        return self.drop2(x)

    def _output(self, pose_6d: Tensor, betas: Tensor, cam: Tensor) -> HMROutput:
        pose_6d = pose_6d.reshape(-1, NUM_POSE_JOINTS, SIXD_SIZE)
        placing = cam
        if self.config.cam_scale_bounds is not None:
            low, high = self.config.cam_scale_bounds
            placing = torch.cat([soft_clamp(cam[:, :1], low, high), cam[:, 1:]], dim=1)
        return HMROutput(
            pose_6d=pose_6d,
            pose_rotmats=sixd_to_rotmat(pose_6d),
            betas=betas,
            cam=cam,
            cam_t=weak_perspective_to_translation(
                placing, self.config.focal_length, self.config.crop_size
            ),
        )

    def mean_prediction(self, batch: int) -> HMROutput:
        """The mean parameters the IEF starts from, for ``batch`` samples: the mean-pose
        reference a trained regressor must beat."""
        return self._output(
            self.init_pose_6d.expand(batch, -1),
            self.init_betas.expand(batch, -1),
            self.init_cam.expand(batch, -1),
        )

    def forward(
        self,
        images: Tensor,
        iterations: int | None = None,
        keep_iterations: bool = False,
    ) -> HMROutput:
        """Regress body parameters from crops.

        Args:
            images: ``(B, C, H, W)`` normalised crops of any size (the feature is pooled).
            iterations: IEF iterations; None for ``config.iterations``.
            keep_iterations: also return every iteration's prediction
                (:attr:`HMROutput.iterations`).

        Returns:
            :class:`HMROutput` of the last iteration.
        """
        iterations = self.config.iterations if iterations is None else iterations
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        features = self.backbone(images)
        batch = images.shape[0]
        if tuple(features.shape) != (batch, self.feature_dim):
            raise ValueError(
                f"the backbone gave features of shape {tuple(features.shape)}, expected "
                f"({batch}, {self.feature_dim}); does feature_dim match the backbone?"
            )
        pose_6d = self.init_pose_6d.expand(batch, -1)
        betas = self.init_betas.expand(batch, -1)
        cam = self.init_cam.expand(batch, -1)
        steps = []
        for _ in range(iterations):
            hidden = self._refine(torch.cat([features, pose_6d, betas, cam], dim=1))
            pose_6d = pose_6d + self.decpose(hidden)
            betas = betas + self.decshape(hidden)
            cam = cam + self.deccam(hidden)
            if keep_iterations:
                steps.append(self._output(pose_6d, betas, cam))
        final = self._output(pose_6d, betas, cam)
        if keep_iterations:
            final = replace(final, iterations=tuple(steps))
        return final


def predict_body(output: HMROutput, body_model: BodyModel) -> BodyOutput:
    """Pose the body model with a prediction, in the crop camera's frame.

    The pose is applied as rotation matrices and the body translated by ``cam_t``, so
    vertices and joints are in the perspective crop camera's frame (x right, y down,
    z forward); project them with ``crop_intrinsics`` of the same focal length and crop
    size as the HMR config.

    Args:
        output: the regressor's prediction; its dtype and device must be the body model's.
        body_model: a body model with ``num_betas >= NB``.

    Returns:
        The posed :class:`~spin.body.layer.BodyOutput`.
    """
    return body_model(pose_rotmats=output.pose_rotmats, betas=output.betas, transl=output.cam_t)


def build_hmr(config: HMRConfig, body_model: BodyModel) -> HMR:
    """Build the regressor for a body model: the backbone (with its weights file, if
    any) and the mean parameters (from ``config.mean_params``, resized to the model's
    number of betas, or computed for the model).

    Returns:
        An :class:`HMR` on the CPU in the default dtype; move it with ``.to(device)``.
    """
    backbone, feature_dim = build_backbone(config.backbone)
    if config.mean_params is None:
        mean_params = mean_params_for_body_model(body_model.name, body_model.num_betas)
    else:
        mean_params = load_mean_params(config.mean_params, num_betas=body_model.num_betas)
    return HMR(backbone, feature_dim, mean_params, config)
