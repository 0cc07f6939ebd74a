"""The regressor's starting point: mean pose (6D), mean shape and mean camera.

HMR's iterative error feedback starts every image from the same parameters and adds
predicted residuals. Two sources:

- :func:`load_mean_params`: SPIN's ``smpl_mean_params.npz`` (keys ``pose`` (144,) in
  6D, ``shape`` (10,), ``cam`` (3,)), the means of SMPL fits to real data. Its 6D
  convention is ours (``R[:, :2]`` of each joint flattened row-major, see
  :mod:`spin.geometry.rotations`), so the numbers are used as they are.
- :func:`mean_params_for_body_model`: a default computed at construction, for the open
  body model or whenever no such file is at hand. The body pose is the *chordal mean*
  of poses drawn from :func:`spin.body.pose_sampler.sample_poses`: per joint, the
  arithmetic mean of the rotation matrices projected back onto SO(3) (the rotation
  nearest to it in Frobenius norm, by SVD). The sampler covers everyday activities
  within anatomical ranges and mirrors half its poses, so the mean is a relaxed,
  left/right-symmetric posture: arms down and a little forward, hips and knees a
  little flexed (the sitting, crouching and kneeling poses pull them). The global
  orientation is upright and facing the camera: 180 degrees about x takes SMPL's axes
  (y up, z towards the body's front) to the camera frame (y down, z into the scene),
  so the head is at the top of the image and the face looks at the camera. Betas are
  zero (the model's mean shape) and the camera is ``[s, tx, ty] = [0.9, 0, 0]``
  (SPIN's mean: a 1.7 m body spans about 3/4 of the crop, centred). The sampler is
  seeded, so the result is deterministic; nothing is cached on disk (2000 samples
  take well under a second).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from torch import Tensor

from spin.body.pose_sampler import sample_poses
from spin.geometry.rotations import rotmat_to_sixd, sixd_to_rotmat

__all__ = [
    "DEFAULT_NUM_SAMPLES",
    "MEAN_CAM",
    "NUM_POSE_JOINTS",
    "SIXD_SIZE",
    "UPRIGHT_FACING_CAMERA",
    "MeanParams",
    "chordal_mean",
    "load_mean_params",
    "mean_params_for_body_model",
]

NUM_POSE_JOINTS = 24
"""Rotations in an SMPL pose, global orientation first."""

SIXD_SIZE = 6
"""Numbers per rotation in the 6D representation."""

MEAN_CAM = (0.9, 0.0, 0.0)
"""Default weak-perspective camera ``[s, tx, ty]``: SPIN's mean (a 1.7 m body spans
``0.9 * 1.7 / 2``, about 3/4 of the crop, centred)."""

UPRIGHT_FACING_CAMERA = ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0))
"""Global orientation of the computed mean: 180 degrees about x, taking SMPL's axes
(y up, z front) to the camera frame (y down, z forward) with the body facing the camera."""

DEFAULT_NUM_SAMPLES = 2000
"""Poses averaged by :func:`mean_params_for_body_model`: the per-joint means move by
well under a degree beyond this."""

DEFAULT_SEED = 0
"""Seed of the pose sampler in :func:`mean_params_for_body_model`."""

SPIN_KEYS = {"pose_6d": "pose", "betas": "shape", "cam": "cam"}
"""Our field name -> key in SPIN's ``smpl_mean_params.npz``."""


@dataclass(frozen=True, eq=False)
class MeanParams:
    """Mean parameters the regressor starts from (float64 CPU tensors).

    Attributes:
        pose_6d: ``(144,)`` 24 rotations in 6D, global orientation first.
        betas: ``(NB,)`` shape coefficients.
        cam: ``(3,)`` weak-perspective camera ``[s, tx, ty]``.
        source: where they come from, for logs.
    """

    pose_6d: Tensor
    betas: Tensor
    cam: Tensor
    source: str = ""

    def __post_init__(self) -> None:
        expected = {
            "pose_6d": (NUM_POSE_JOINTS * SIXD_SIZE,),
            "betas": None,
            "cam": (3,),
        }
        for name, shape in expected.items():
            value = getattr(self, name)
            if not isinstance(value, Tensor):
                raise TypeError(f"MeanParams.{name} must be a torch.Tensor, got {type(value)}")
            if value.dim() != 1 or (shape is not None and tuple(value.shape) != shape):
                want = "(NB,)" if shape is None else f"({shape[0]},)"
                raise ValueError(
                    f"expected MeanParams.{name} of shape {want}, got {tuple(value.shape)}"
                )
            if not torch.isfinite(value).all():
                raise ValueError(f"MeanParams.{name} has non-finite values")

    @property
    def num_betas(self) -> int:
        return self.betas.shape[0]

    @property
    def pose_rotmats(self) -> Tensor:
        """``(24, 3, 3)`` the mean pose as rotation matrices."""
        return sixd_to_rotmat(self.pose_6d.reshape(NUM_POSE_JOINTS, SIXD_SIZE))

    def with_num_betas(self, num_betas: int) -> MeanParams:
        """The same parameters with ``num_betas`` betas: zeros appended, or the trailing
        ones dropped (betas are ordered by decreasing variance)."""
        if num_betas < 1:
            raise ValueError(f"num_betas must be >= 1, got {num_betas}")
        betas = self.betas[:num_betas]
        if num_betas > betas.shape[0]:
            betas = torch.cat([betas, betas.new_zeros(num_betas - betas.shape[0])])
        return MeanParams(self.pose_6d, betas, self.cam, self.source)


def chordal_mean(rotmats: Tensor) -> Tensor:
    """Chordal L2 mean of rotations: their matrix mean projected back onto SO(3).

    With ``M = U S V^T`` the arithmetic mean, the result ``U diag(1, 1, det(U V^T)) V^T``
    is the rotation closest to ``M`` in Frobenius norm, i.e. the rotation minimising
    the summed squared chordal distances to the inputs.

    Args:
        rotmats: ``(N, ..., 3, 3)`` rotation matrices; the mean is over the first dim.

    Returns:
        ``(..., 3, 3)`` rotation matrices.
    """
    if rotmats.dim() < 3 or tuple(rotmats.shape[-2:]) != (3, 3) or rotmats.shape[0] == 0:
        raise ValueError(
            f"expected rotmats of shape (N, ..., 3, 3), N >= 1, got {tuple(rotmats.shape)}"
        )
    u, _, vh = torch.linalg.svd(rotmats.mean(dim=0))
    det = torch.linalg.det(u @ vh)
    fix = torch.ones(*det.shape, 3, dtype=rotmats.dtype, device=rotmats.device)
    fix[..., 2] = det.sign()
    return (u * fix.unsqueeze(-2)) @ vh


def mean_params_for_body_model(
    body_model_name: str,
    num_betas: int = 10,
    seed: int = DEFAULT_SEED,
    num_samples: int = DEFAULT_NUM_SAMPLES,
) -> MeanParams:
    """Default mean parameters, computed from the pose sampler (see the module docstring).

    The pose sampler works in SMPL's kinematic convention, which every SMPL-format body
    model shares, so the numbers do not depend on the model's mesh; ``body_model_name``
    is recorded in :attr:`MeanParams.source`. For the official SMPL model SPIN's
    ``smpl_mean_params.npz`` (the mean of fits to real data) is the better start.

    Args:
        body_model_name: the body model these are for (``"open"``, ``"open-lite"``, ...).
        num_betas: NB, the body model's number of shape coefficients.
        seed: seed of the pose sampler; the result is a deterministic function of it.
        num_samples: poses averaged.

    Returns:
        float64 :class:`MeanParams`.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    poses = sample_poses(num_samples, np.random.default_rng(seed))  # (N, 72)
    # scipy's Rodrigues: the same numbers as ours, and no torch warm-up on the first call.
    rotmats = Rotation.from_rotvec(poses.reshape(-1, 3)).as_matrix()
    rotmats = torch.from_numpy(rotmats).reshape(num_samples, NUM_POSE_JOINTS, 3, 3)
    mean_rotmats = chordal_mean(rotmats)  # (24, 3, 3)
    mean_rotmats[0] = torch.tensor(UPRIGHT_FACING_CAMERA, dtype=mean_rotmats.dtype)
    return MeanParams(
        pose_6d=rotmat_to_sixd(mean_rotmats).reshape(-1),
        betas=torch.zeros(num_betas, dtype=torch.float64),
        cam=torch.tensor(MEAN_CAM, dtype=torch.float64),
        source=(
            f"chordal mean of {num_samples} sampled poses (seed {seed}) for body model "
            f"{body_model_name!r}, upright facing the camera"
        ),
    ).with_num_betas(num_betas)


def load_mean_params(path: str | os.PathLike, num_betas: int | None = None) -> MeanParams:
    """Read SPIN's ``smpl_mean_params.npz``.

    Args:
        path: the ``.npz`` with ``pose`` (144,) 6D, ``shape`` (NB,), ``cam`` (3,).
        num_betas: resize the betas to this many (see :meth:`MeanParams.with_num_betas`);
            None keeps the file's.

    Returns:
        float64 :class:`MeanParams`.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"mean parameters file {os.fspath(path)!r} does not exist; give SPIN's "
            "smpl_mean_params.npz or set mean_params=null to compute them for the body model"
        )
    with np.load(path, allow_pickle=False) as npz:
        missing = [key for key in SPIN_KEYS.values() if key not in npz.files]
        if missing:
            raise ValueError(
                f"{os.fspath(path)!r} lacks keys {missing} (has {npz.files}); expected SPIN's "
                "smpl_mean_params.npz with pose (144,) in 6D, shape (10,) and cam (3,)"
            )
        arrays = {field: np.asarray(npz[key], dtype=np.float64) for field, key in SPIN_KEYS.items()}
    pose_size = NUM_POSE_JOINTS * SIXD_SIZE
    if arrays["pose_6d"].size != pose_size:
        hint = " (axis-angle? convert it to 6D first)" if arrays["pose_6d"].size == 72 else ""
        raise ValueError(
            f"expected 'pose' in {os.fspath(path)!r} to hold {pose_size} numbers (24 joints in "
            f"6D), got shape {arrays['pose_6d'].shape}{hint}"
        )
    tensors = {field: torch.from_numpy(a.reshape(-1)) for field, a in arrays.items()}
    params = MeanParams(**tensors, source=os.fspath(path))
    return params if num_betas is None else params.with_num_betas(num_betas)
