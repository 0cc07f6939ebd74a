"""Batched SMPLify: fit a body model to 2D keypoints, SPIN's objective and schedule.

The objective (REFERENCE.md, "SMPLify in the loop") is evaluated per sample; stages are data
(:class:`StageConfig`: what is optimised, which objective, which optimiser, how long) run by one
loop. These modes ship:

- ``mode="faithful"`` (default): SPIN's, exactly. A camera stage (100 Adam steps, lr 1e-2, global
  orientation + camera translation on the torso joints + a depth term) then a body stage (100
  Adam steps, body pose + betas + global orientation, camera fixed), posing the whole mesh at
  every step as SPIN's implementation does.
- ``mode="fast"``: the same schedule and the same numbers, evaluating only the joints the
  objective needs (:class:`~spin.body.sparse.SparseJointModel`: SMPL's maths folded into a few
  small tensors, exact) instead of the whole mesh: many times faster, same fits.
- ``mode="lm"``: the same objective minimised by batched Levenberg-Marquardt on its residuals
  with analytic Jacobians, dropping samples from the batch as they converge. It reaches lower
  objective values than the 100-step Adam schedule; from a poor start (the mean pose) that means
  much better fits; from a good start (a regressor's prediction) its converged optimum is worse
  in 3D than where SPIN's truncated Adam stops: the priors pull the converged fit to the mean
  shape and pose and the pose bends to fit keypoint noise (``tools/bench_smplify.py``).
- ``mode="anchored"`` (the default of ``spin-fit-dataset``): ``"lm"``
  on SPIN's objective plus two terms that keep the fit near its start where the keypoints do
  not decide (:data:`ANCHOR_WEIGHTS`): converged and better in 3D than SPIN's schedule.

Fits that start from the mean pose (``spin-fit-dataset --init mean``, static fits) use
:func:`mean_start_config`: no anchors, and the start tried at four headings, the lowest
objective winning (``SMPLifyConfig.headings``).

Everything follows the device and dtype of the body model and the inputs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import Tensor
from torch.func import jvp, vmap

from spin.body.joint_conventions import SPIN_49, convert, get_convention
from spin.body.layer import BodyModel
from spin.body.sparse import SparseJointModel
from spin.fitting import losses
from spin.geometry.cameras import perspective_projection
from spin.geometry.rotations import rotmat_to_rotvec, rotvec_to_rotmat
from spin.geometry.translation import estimate_translation

__all__ = [
    "SMPLify",
    "SMPLifyConfig",
    "SMPLifyResult",
    "StageConfig",
    "default_stages",
    "mean_start_config",
    "turned",
]

Variable = Literal["global_orient", "body_pose", "betas", "cam_t"]
VARIABLES: tuple[str, ...] = ("global_orient", "body_pose", "betas", "cam_t")

#: Joints SPIN ignores when fitting: their definitions differ between datasets and SMPL.
IGNORED_JOINTS: tuple[str, ...] = ("OP Neck", "OP RHip", "OP LHip", "Right Hip", "Left Hip")
#: Joints that place the camera in the first stage: SPIN's four OpenPose torso joints, then
#: their four ground-truth counterparts (which of them count: ``SMPLifyConfig.torso_rule``).
TORSO_JOINTS: tuple[str, ...] = (
    "OP RHip",
    "OP LHip",
    "OP RShoulder",
    "OP LShoulder",
    "Right Hip",
    "Left Hip",
    "Right Shoulder",
    "Left Shoulder",
)
SMPLIFY_MODES: tuple[str, ...] = ("faithful", "fast", "lm", "anchored")
"""SMPLify's modes (:class:`SMPLifyConfig`)."""

ROOT_VARIABLES = frozenset({"global_orient", "cam_t"})
"""Variables that move the body as a whole: a stage optimising only these (SMPLify's camera
stage) needs the Jacobian's root columns only."""

ANCHOR_WEIGHTS = (200.0, 25.0)
"""``"anchored"`` mode's weights of ``||body_pose - start||^2`` and ``||betas - start||^2``,
in the units of the data term (confidence^2 x crop pixels^2): a start off by 0.15-0.25 rad
per pose value and 0.5-1 per beta (a regressor's errors) weighs about as much as 4 px of
keypoint noise on a few joints. Chosen on ``tools/bench_smplify.py`` (seeds 0-2): from
regressor-like starts the fits are ~10 mm PA-MPJPE better than SPIN's Adam schedule, where
SPIN's objective alone, converged, is ~10 mm worse."""

MEAN_START_HEADINGS = (0.0, 90.0, 180.0, 270.0)
"""Headings tried by :func:`mean_start_config` (degrees about the body's vertical axis)."""

#: Levenberg-Marquardt: initial damping, factors on rejection / acceptance, and bounds.
LM_INITIAL_DAMPING = 1e-2
LM_DAMPING_UP = 4.0
LM_DAMPING_DOWN = 0.3
LM_DAMPING_RANGE = (1e-7, 1e7)
#: On a CPU, iterate only the samples still active (same fits, less arithmetic); elsewhere
#: every iteration has the whole batch's shapes and converged samples are masked.
LM_COMPACT_ON_CPU = True


@dataclass(frozen=True)
class StageConfig:
    """One stage of the fitting schedule.

    Attributes:
        name: for logs and loss histories.
        objective: ``"camera"`` (torso reprojection + depth term) or ``"body"`` (robust
            reprojection + pose, angle and shape priors).
        optimize: the variables this stage changes (others stay fixed).
        iterations: Adam steps, L-BFGS iterations or Levenberg-Marquardt iterations.
        optimizer: ``"adam"``, ``"lbfgs"`` or ``"lm"``.
        lr: learning rate (Adam, L-BFGS).
        tolerance: LM only: a sample stops once an accepted step lowers its loss by less
            than this fraction (0 never stops early).
    """

    name: str
    objective: Literal["camera", "body"]
    optimize: tuple[str, ...]
    iterations: int
    optimizer: Literal["adam", "lbfgs", "lm"] = "adam"
    lr: float = 1e-2
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        unknown = set(self.optimize) - set(VARIABLES)
        if unknown:
            raise ValueError(f"stage {self.name!r}: unknown variables {sorted(unknown)}")
        if self.objective not in ("camera", "body"):
            raise ValueError(f"stage {self.name!r}: objective must be 'camera' or 'body'")
        if self.optimizer not in ("adam", "lbfgs", "lm"):
            raise ValueError(f"stage {self.name!r}: optimizer must be adam, lbfgs or lm")
        if self.iterations < 0:
            raise ValueError(f"stage {self.name!r}: iterations must be >= 0")


def default_stages(mode: str) -> tuple[StageConfig, ...]:
    """SPIN's schedule (``"faithful"``, ``"fast"``) or the Levenberg-Marquardt one (``"lm"``,
    ``"anchored"``)."""
    if mode in ("faithful", "fast"):
        return (
            StageConfig("camera", "camera", ("global_orient", "cam_t"), 100, "adam", 1e-2),
            StageConfig("body", "body", ("global_orient", "body_pose", "betas"), 100, "adam", 1e-2),
        )
    if mode in ("lm", "anchored"):
        return (
            StageConfig("camera", "camera", ("global_orient", "cam_t"), 10, "lm", tolerance=1e-4),
            StageConfig(
                "body", "body", ("global_orient", "body_pose", "betas"), 20, "lm", tolerance=1e-4
            ),
        )
    raise ValueError(
        f"unknown SMPLify mode {mode!r}; use one of {', '.join(map(repr, SMPLIFY_MODES))}"
    )


@dataclass(frozen=True)
class SMPLifyConfig:
    """SMPLify settings; the defaults are SPIN's.

    Attributes:
        mode: ``"faithful"`` (SPIN's Adam schedule, whole mesh), ``"fast"`` (the same schedule
            on the joints only: same fits, much faster), ``"lm"`` (SPIN's objective by
            Levenberg-Marquardt) or ``"anchored"`` (Levenberg-Marquardt on SPIN's objective plus
            terms that keep the fit near its start).
        stages: explicit schedule; empty means ``default_stages(mode)``.
        sparse_joints: evaluate only the joints (exact, much faster than posing the mesh);
            None: False for ``"faithful"``, True otherwise.
        sigma: GMoF scale in pixels.
        pose_prior_weight, angle_prior_weight, shape_prior_weight: prior weights.
        depth_weight: weight of ``(tz - tz_init)^2`` in the camera stage.
        ignored_joints, torso_joints: SPIN-49 joint names (see the module constants);
            ``torso_joints`` lists OpenPose joints, then as many ground-truth ones.
        torso_rule: which torso joints place the camera (:func:`~spin.fitting.losses.
            torso_camera_weights`): ``"spin"`` (SPIN's rule, the default: the OpenPose torso
            joints if all have confidence > 0, else the ground-truth ones whatever their
            confidence) or ``"visible"`` (every torso joint with confidence > 0; not SPIN's).
    """

    mode: Literal["faithful", "fast", "lm", "anchored"] = "faithful"
    stages: tuple[StageConfig, ...] = ()
    sparse_joints: bool | None = None
    sigma: float = 100.0
    pose_prior_weight: float = 4.78**2
    angle_prior_weight: float = 15.2**2
    shape_prior_weight: float = 5.0**2
    depth_weight: float = 100.0**2
    ignored_joints: tuple[str, ...] = IGNORED_JOINTS
    torso_joints: tuple[str, ...] = TORSO_JOINTS
    torso_rule: Literal["spin", "visible"] = "spin"
    anchor_pose_weight: float | None = None
    anchor_betas_weight: float | None = None
    headings: tuple[float, ...] = ()
    heading_trial_iterations: int = 5

    def __post_init__(self) -> None:
        if self.mode not in SMPLIFY_MODES:
            raise ValueError(
                f"unknown SMPLify mode {self.mode!r}; use one of "
                f"{', '.join(map(repr, SMPLIFY_MODES))}"
            )
        if len(self.torso_joints) % 2 or not self.torso_joints:
            raise ValueError(
                "torso_joints must list OpenPose joints then as many ground-truth joints, got "
                f"{len(self.torso_joints)} names"
            )

    def resolved_anchor_weights(self) -> tuple[float, float]:
        """``(pose, betas)`` anchor weights, the mode's where a field is None."""
        pose, betas = ANCHOR_WEIGHTS if self.mode == "anchored" else (0.0, 0.0)
        return (
            pose if self.anchor_pose_weight is None else self.anchor_pose_weight,
            betas if self.anchor_betas_weight is None else self.anchor_betas_weight,
        )

    def resolved_stages(self) -> tuple[StageConfig, ...]:
        return self.stages or default_stages(self.mode)

    def uses_sparse_joints(self) -> bool:
        return self.mode != "faithful" if self.sparse_joints is None else self.sparse_joints


@dataclass(frozen=True, eq=False)
class SMPLifyResult:
    """Fitted parameters and their losses.

    Attributes:
        pose_rotvecs: ``(B, 72)`` axis-angle, global orientation first.
        betas: ``(B, NB)``.
        cam_t: ``(B, 3)`` camera translation (the body's translation in the camera frame).
        reprojection_loss: ``(B,)`` SPIN's per-sample reprojection loss: ``conf^2 * GMoF``
            averaged over the 49 joints (ignored and unseen ones count as 0), what SPIN's
            trainer compares with the cached fit's and with its validity threshold (100);
            the body stage's objective uses their sum.
        joint_losses: ``(B, 49)`` its per-joint terms.
        total_loss: ``(B,)`` the full body-stage objective.
        valid: ``(B,)`` bool: the sample had confident, finite keypoints.
        history: per stage name, ``(iterations + 1,)`` mean objective over the batch.
        vertices, joints: ``(B, V, 3)`` and ``(B, 49, 3)`` in the camera frame, when asked.
    """

    pose_rotvecs: Tensor
    betas: Tensor
    cam_t: Tensor
    reprojection_loss: Tensor
    joint_losses: Tensor
    total_loss: Tensor
    valid: Tensor
    history: dict[str, Tensor] = field(default_factory=dict)
    vertices: Tensor | None = None
    joints: Tensor | None = None


@dataclass(frozen=True, eq=False)
class _Observations:
    """Per-sample data the objective compares against (SPIN-49 order)."""

    keypoints: Tensor  # (B, 49, 2) pixels
    confidences: Tensor  # (B, 49), ignored joints zeroed
    torso_confidences: Tensor  # (B, 49), before ignoring
    torso_weights: Tensor  # (B, T) 0/1: the torso joints that place the camera
    intrinsics: Tensor  # (B, 3, 3)
    initial_cam_t: Tensor  # (B, 3)
    initial_body_pose: Tensor  # (B, 69): the start, which the anchor terms pull towards
    initial_betas: Tensor  # (B, NB)

    def select(self, index: Tensor) -> _Observations:
        return _Observations(*(getattr(self, f).index_select(0, index) for f in _OBS_FIELDS))

    def repeat(self, times: int) -> _Observations:
        """The batch ``times`` times over, ``[all samples] * times``."""
        return _Observations(
            *(
                getattr(self, f).repeat(times, *([1] * (getattr(self, f).ndim - 1)))
                for f in _OBS_FIELDS
            )
        )


_OBS_FIELDS = (
    "keypoints",
    "confidences",
    "torso_confidences",
    "torso_weights",
    "intrinsics",
    "initial_cam_t",
    "initial_body_pose",
    "initial_betas",
)


class SMPLify:
    """Batched SMPLify for any :class:`BodyModel` with SPIN-49 joints.

    Args:
        body_model: the body model (its dtype/device set those of the fit).
        pose_prior: callable ``(B, 69) -> (B,)`` energy with a ``residuals`` method
            ``(B, 69) -> (B, 69)`` (``GMMPrior``); see ``spin.fitting.priors``.
        config: :class:`SMPLifyConfig`.
    """

    def __init__(self, body_model: BodyModel, pose_prior, config: SMPLifyConfig | None = None):
        if not body_model.has_joints_spin:
            raise ValueError(
                "SMPLify needs SPIN's 49 joints; the body model has none (for the official SMPL "
                "model place SPIN's J_regressor_extra.npy next to the model file)"
            )
        self.body_model = body_model
        self.pose_prior = pose_prior
        self.config = config or SMPLifyConfig()
        self.sparse_model = (
            SparseJointModel(body_model) if self.config.uses_sparse_joints() else None
        )
        self._ignored = [SPIN_49.index(name) for name in self.config.ignored_joints]
        self._torso = [SPIN_49.index(name) for name in self.config.torso_joints]
        self._anchors = self.config.resolved_anchor_weights()
        half = len(self._torso) // 2
        self._torso_openpose, self._torso_gt = self._torso[:half], self._torso[half:]

    # ------------------------------------------------------------------ public API

    def __call__(
        self,
        keypoints: Tensor,
        intrinsics: Tensor,
        init_pose_rotvecs: Tensor | None = None,
        init_betas: Tensor | None = None,
        init_cam_t: Tensor | None = None,
        convention: str = "spin49",
        return_mesh: bool = False,
    ) -> SMPLifyResult:
        """Fit a batch.

        Args:
            keypoints: ``(B, J, 3)`` 2D keypoints in pixels of ``intrinsics``' image, with
                confidences, in ``convention`` (any of ``spin.body.joint_conventions``).
            intrinsics: ``(B, 3, 3)`` per-sample camera (``crop_intrinsics`` for SPIN's crop
                camera, ``full_frame_intrinsics`` for a full-frame one).
            init_pose_rotvecs: ``(B, 72)``; zeros (T-pose) when None.
            init_betas: ``(B, NB)``; zeros when None.
            init_cam_t: ``(B, 3)``; estimated from the initial joints when None.
            return_mesh: also return vertices and joints of the fit.
        """
        ref = self.body_model.v_template
        batch = keypoints.shape[0]
        self._check_inputs(keypoints, intrinsics, ref)
        observations, valid = self._observations(keypoints, intrinsics, convention)
        pose = _or_zeros(init_pose_rotvecs, (batch, 72), ref).detach()
        betas = _or_zeros(init_betas, (batch, self.body_model.num_betas), ref).detach()
        if init_cam_t is not None:
            init_cam_t = init_cam_t.detach().to(ref.dtype)
        stages = self.config.resolved_stages()
        history = {}
        headings = self.config.headings
        if headings:
            # Every start turned to each heading, side by side; the trial schedule runs on all
            # of them and the lowest body objective wins; the rest of the schedule runs on it.
            trial, stages = _split_schedule(stages, self.config.heading_trial_iterations)
            turns = len(headings)
            pose = turned(pose, headings)  # (H * B, 72), heading-major
            variables, observations = self._start(
                pose,
                betas.repeat(turns, 1),
                None if init_cam_t is None else init_cam_t.repeat(turns, 1),
                observations.repeat(turns),
            )
            history = self._run_stages(trial, variables, observations, "trial ")
            with torch.no_grad():
                total = self._body_terms(variables, observations)["total"]
            total = torch.where(torch.isfinite(total), total, torch.full_like(total, math.inf))
            best = total.view(turns, batch).argmin(dim=0) * batch + torch.arange(
                batch, device=ref.device
            )
            variables = {k: v.index_select(0, best) for k, v in variables.items()}
            observations = observations.select(best)
        else:
            variables, observations = self._start(pose, betas, init_cam_t, observations)
        history.update(self._run_stages(stages, variables, observations))

        with torch.no_grad():
            terms = self._body_terms(variables, observations)
        pose_rotvecs = torch.cat([variables["global_orient"], variables["body_pose"]], dim=1)
        vertices = joints = None
        if return_mesh:
            with torch.no_grad():
                out = self.body_model(
                    pose_rotvecs=pose_rotvecs, betas=variables["betas"], transl=variables["cam_t"]
                )
            vertices, joints = out.vertices, out.joints_spin
        return SMPLifyResult(
            pose_rotvecs=pose_rotvecs.detach(),
            betas=variables["betas"].detach(),
            cam_t=variables["cam_t"].detach(),
            reprojection_loss=terms["joint_losses"].mean(-1),
            joint_losses=terms["joint_losses"],
            total_loss=terms["total"],
            valid=valid,
            history=history,
            vertices=vertices,
            joints=joints,
        )

    def _start(
        self, pose: Tensor, betas: Tensor, cam_t: Tensor | None, observations: _Observations
    ) -> tuple[dict[str, Tensor], _Observations]:
        """The fit's variables at the start (``cam_t`` estimated from the initial joints when
        None) and the observations that remember the start."""
        if cam_t is None:
            with torch.no_grad():
                joints = self._joints(pose, betas, torch.zeros_like(pose[:, :3]))
                cam_t = estimate_translation(
                    joints,
                    observations.keypoints,
                    observations.torso_confidences,
                    observations.intrinsics,
                )
        variables = {
            "global_orient": pose[:, :3].clone(),
            "body_pose": pose[:, 3:].clone(),
            "betas": betas.clone(),
            "cam_t": cam_t.detach().clone(),
        }
        observations = replace(
            observations,
            initial_cam_t=variables["cam_t"].clone(),
            initial_body_pose=variables["body_pose"].clone(),
            initial_betas=variables["betas"].clone(),
        )
        return variables, observations

    def _run_stages(
        self, stages: Sequence[StageConfig], variables, observations, prefix: str = ""
    ) -> dict[str, Tensor]:
        """Run ``stages`` in order, updating ``variables``; the objective history of each."""
        run = {"adam": self._run_adam, "lbfgs": self._run_lbfgs, "lm": self._run_lm}
        return {
            prefix + stage.name: run[stage.optimizer](stage, variables, observations)
            for stage in stages
            if stage.iterations > 0 or not prefix
        }

    def reprojection_loss(
        self,
        pose_rotvecs: Tensor,
        betas: Tensor,
        cam_t: Tensor,
        keypoints: Tensor,
        intrinsics: Tensor,
        convention: str = "spin49",
    ) -> Tensor:
        """``(B,)`` SPIN's reprojection loss (per-joint mean, as
        :attr:`SMPLifyResult.reprojection_loss`) of given parameters on given keypoints (the
        fits cache uses this to score a cached fit on the current, augmented keypoints)."""
        observations, _ = self._observations(keypoints, intrinsics, convention)
        variables = {
            "global_orient": pose_rotvecs[:, :3],
            "body_pose": pose_rotvecs[:, 3:],
            "betas": betas,
            "cam_t": cam_t,
        }
        with torch.no_grad():
            return self._body_terms(variables, observations)["joint_losses"].mean(-1)

    def joints(self, pose_rotvecs: Tensor, betas: Tensor, transl: Tensor | None = None) -> Tensor:
        """``(B, 49, 3)`` SPIN joints of given parameters (the fitter's own evaluation)."""
        if transl is None:
            transl = torch.zeros_like(pose_rotvecs[:, :3])
        return self._joints(pose_rotvecs, betas, transl)

    # ------------------------------------------------------------------ objective

    def _joints(self, pose_rotvecs: Tensor, betas: Tensor, transl: Tensor) -> Tensor:
        """``(B, 49, 3)`` SPIN joints in the camera frame."""
        if self.sparse_model is not None:
            return self.sparse_model(
                pose_rotvecs=pose_rotvecs, betas=betas, transl=transl
            ).joints_spin
        return self.body_model(pose_rotvecs=pose_rotvecs, betas=betas, transl=transl).joints_spin

    def _project(self, variables: dict[str, Tensor], obs: _Observations) -> Tensor:
        pose = torch.cat([variables["global_orient"], variables["body_pose"]], dim=1)
        joints = self._joints(pose, variables["betas"], variables["cam_t"])
        return perspective_projection(joints, obs.intrinsics)

    def _camera_terms(self, variables, obs) -> dict[str, Tensor]:
        projected = self._project(variables, obs)
        torso = losses.torso_camera_loss(projected, obs.keypoints, obs.torso_weights, self._torso)
        depth = losses.camera_depth_loss(variables["cam_t"], obs.initial_cam_t)
        return {"total": torso + self.config.depth_weight * depth}

    def _camera_residuals(self, variables, obs) -> Tensor:
        projected = self._project(variables, obs)
        torso = losses.torso_camera_residuals(
            projected, obs.keypoints, obs.torso_weights, self._torso
        )
        depth = variables["cam_t"][:, 2:] - obs.initial_cam_t[:, 2:]
        return torch.cat([torso, math.sqrt(self.config.depth_weight) * depth], dim=1)

    def _body_terms(self, variables, obs) -> dict[str, Tensor]:
        cfg = self.config
        projected = self._project(variables, obs)
        joint_losses = losses.reprojection_loss(
            projected, obs.keypoints, obs.confidences, cfg.sigma
        )
        body_pose = variables["body_pose"]
        total = (
            joint_losses.sum(-1)
            + cfg.pose_prior_weight * self.pose_prior(body_pose)
            + cfg.angle_prior_weight * losses.angle_prior(body_pose)
            + cfg.shape_prior_weight * losses.shape_prior(variables["betas"])
        )
        pose_anchor, betas_anchor = self._anchors
        if pose_anchor:
            total = total + pose_anchor * losses.shape_prior(body_pose - obs.initial_body_pose)
        if betas_anchor:
            offset = variables["betas"] - obs.initial_betas
            total = total + betas_anchor * losses.shape_prior(offset)
        return {"total": total, "joint_losses": joint_losses}

    def _body_residuals(self, variables, obs) -> Tensor:
        cfg = self.config
        projected = self._project(variables, obs)
        body_pose = variables["body_pose"]
        return torch.cat(
            [
                losses.reprojection_residuals(projected, obs.keypoints, obs.confidences, cfg.sigma),
                math.sqrt(0.5 * cfg.pose_prior_weight) * self.pose_prior.residuals(body_pose),
                math.sqrt(cfg.angle_prior_weight) * losses.angle_prior_residuals(body_pose),
                math.sqrt(cfg.shape_prior_weight) * variables["betas"],
                *self._anchor_residuals(variables, obs),
            ],
            dim=1,
        )

    def _anchor_residuals(self, variables, obs) -> list[Tensor]:
        """Residuals of the anchor terms that are switched on (pose, then betas)."""
        pose_anchor, betas_anchor = self._anchors
        residuals = []
        if pose_anchor:
            offset = variables["body_pose"] - obs.initial_body_pose
            residuals.append(math.sqrt(pose_anchor) * offset)
        if betas_anchor:
            offset = variables["betas"] - obs.initial_betas
            residuals.append(math.sqrt(betas_anchor) * offset)
        return residuals

    def _linearize(self, stage, variables, obs) -> tuple[Tensor, Tensor]:
        """Residuals ``(B, R)`` of the stage's objective and their Jacobian ``(B, R, P)`` with
        respect to the stage's variables (in ``stage.optimize`` order)."""
        if self.sparse_model is None:
            names = list(stage.optimize)
            sizes = [variables[n].shape[1] for n in names]
            residual_fn = (
                self._camera_residuals if stage.objective == "camera" else self._body_residuals
            )

            def residuals(x):
                split = dict(zip(names, torch.split(x, sizes, dim=1), strict=True))
                return residual_fn({**variables, **split}, obs)

            x = torch.cat([variables[n] for n in names], dim=1)
            return _residuals_and_jacobian(residuals, x)
        return self._analytic_linearization(stage, variables, obs)

    def _analytic_linearization(self, stage, variables, obs) -> tuple[Tensor, Tensor]:
        cfg = self.config
        # The camera stage moves the root only: its Jacobian has 6 columns, not 85.
        root_only = stage.objective == "camera" and set(stage.optimize) <= ROOT_VARIABLES
        pose, projected, projected_d = self._projected_with_jacobian(variables, obs, root_only)
        betas = variables["betas"]
        num_betas = betas.shape[1]
        columns = _jacobian_columns(num_betas, root_only)
        batch, num_params = pose.shape[0], projected_d.shape[-1]
        if stage.objective == "camera":
            torso = self._torso
            visible = obs.torso_weights[..., None]
            r_torso = losses.torso_camera_residuals(
                projected, obs.keypoints, obs.torso_weights, torso
            )
            d_torso = (losses.pick(projected_d, torso, 1) * visible[..., None]).flatten(1, 2)
            weight = math.sqrt(cfg.depth_weight)
            r_depth = weight * (variables["cam_t"][:, 2:] - obs.initial_cam_t[:, 2:])
            d_depth = pose.new_zeros(batch, 1, num_params)
            d_depth[:, 0, columns["cam_t"].start + 2] = weight
            r = torch.cat([r_torso, r_depth], dim=1)
            jac = torch.cat([d_torso, d_depth], dim=1)
        else:
            r_reproj, d_reproj = self._reprojection_linearization(projected, projected_d, obs)
            body_pose = variables["body_pose"]
            prior_weight = math.sqrt(0.5 * cfg.pose_prior_weight)
            r_prior = prior_weight * self.pose_prior.residuals(body_pose)
            d_prior = pose.new_zeros(batch, r_prior.shape[1], num_params)
            d_prior[:, :, columns["body_pose"]] = prior_weight * self._prior_jacobian(body_pose)
            angle_weight = math.sqrt(cfg.angle_prior_weight)
            r_angle = angle_weight * losses.angle_prior_residuals(body_pose)
            d_angle = pose.new_zeros(batch, r_angle.shape[1], num_params)
            for row, (index, sign) in enumerate(losses.ANGLE_PRIOR_JOINTS):
                d_angle[:, row, 3 + index] = sign * r_angle[:, row]
            shape_weight = math.sqrt(cfg.shape_prior_weight)
            r_shape = shape_weight * betas
            d_shape = pose.new_zeros(batch, num_betas, num_params)
            d_shape[:, :, columns["betas"]] = shape_weight * torch.eye(
                num_betas, dtype=pose.dtype, device=pose.device
            )
            r = [r_reproj, r_prior, r_angle, r_shape]
            jac = [d_reproj, d_prior, d_angle, d_shape]
            for name, weight in zip(("body_pose", "betas"), self._anchors, strict=True):
                if weight:
                    size = variables[name].shape[1]
                    d_anchor = pose.new_zeros(batch, size, num_params)
                    d_anchor[:, :, columns[name]] = math.sqrt(weight) * torch.eye(
                        size, dtype=pose.dtype, device=pose.device
                    )
                    jac.append(d_anchor)
            r = torch.cat([*r, *self._anchor_residuals(variables, obs)], dim=1)
            jac = torch.cat(jac, dim=1)
        return r, jac.index_select(2, _stage_columns(stage, columns, pose.device))

    def _projected_with_jacobian(
        self, variables, obs, root_only: bool = False
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The full pose ``(B, 72)``, the projected SPIN joints ``(B, 49, 2)`` and their
        Jacobian ``(B, 49, 2, P)`` (columns: :func:`_jacobian_columns`), by the sparse joints."""
        pose = torch.cat([variables["global_orient"], variables["body_pose"]], dim=1)
        joints, joints_d = self.sparse_model.joints_and_jacobian(
            pose, variables["betas"], variables["cam_t"], root_only=root_only
        )
        return pose, *_project_with_jacobian(joints, joints_d, obs.intrinsics)

    def _normal_equations(self, stage, variables, obs) -> tuple[Tensor, Tensor]:
        """Gradient ``J^T r`` ``(B, P)`` and Gauss-Newton matrix ``J^T J`` ``(B, P, P)`` of the
        stage's residuals (``P`` in ``stage.optimize`` order).

        With the sparse joints, the body objective's prior, shape and anchor rows are summed
        in closed form (a GMM prior's ``J^T J`` is the best component's precision, the others
        are diagonal): only the 98 reprojection rows go through a matrix product."""
        if self.sparse_model is None or stage.objective == "camera":
            r, jac = self._linearize(stage, variables, obs)
            return torch.einsum("brp,br->bp", jac, r), jac.transpose(1, 2) @ jac
        cfg = self.config
        body_pose, betas = variables["body_pose"], variables["betas"]
        pose, projected, projected_d = self._projected_with_jacobian(variables, obs)
        r, jac = self._reprojection_linearization(projected, projected_d, obs)
        gradient = torch.einsum("brp,br->bp", jac, r)
        hessian = jac.transpose(1, 2) @ jac
        diagonal = torch.diagonal(hessian, dim1=1, dim2=2)
        columns = _jacobian_columns(betas.shape[1])
        pose_cols, betas_cols = columns["body_pose"], columns["betas"]
        # Pose prior, weight 0.5 w on the squared residuals.
        weight = 0.5 * cfg.pose_prior_weight
        precisions = getattr(self.pose_prior, "precisions", None)
        if precisions is None:
            r_prior = self.pose_prior.residuals(body_pose)
            d_prior = _batched_jacobian(self.pose_prior.residuals, body_pose)
            gradient[:, pose_cols] += weight * torch.einsum("brp,br->bp", d_prior, r_prior)
            hessian[:, pose_cols, pose_cols] += weight * d_prior.transpose(1, 2) @ d_prior
        else:
            best = self.pose_prior.best_component(body_pose)
            precision = precisions.index_select(0, best)
            offset = body_pose - self.pose_prior.means.index_select(0, best)
            gradient[:, pose_cols] += weight * (precision @ offset[..., None])[..., 0]
            hessian[:, pose_cols, pose_cols] += weight * precision
        # Angle prior: residual exp(sign theta), derivative sign * residual.
        angle = math.sqrt(cfg.angle_prior_weight) * losses.angle_prior_residuals(body_pose)
        cols = [3 + index for index, _ in losses.ANGLE_PRIOR_JOINTS]
        signs = angle.new_tensor([sign for _, sign in losses.ANGLE_PRIOR_JOINTS])
        gradient[:, cols] += signs * angle**2
        diagonal[:, cols] += angle**2
        # Shape prior and anchors: identity Jacobians.
        gradient[:, betas_cols] += cfg.shape_prior_weight * betas
        diagonal[:, betas_cols] += cfg.shape_prior_weight
        pose_anchor, betas_anchor = self._anchors
        if pose_anchor:
            gradient[:, pose_cols] += pose_anchor * (body_pose - obs.initial_body_pose)
            diagonal[:, pose_cols] += pose_anchor
        if betas_anchor:
            gradient[:, betas_cols] += betas_anchor * (betas - obs.initial_betas)
            diagonal[:, betas_cols] += betas_anchor
        keep = _stage_columns(stage, columns, pose.device)
        return gradient.index_select(1, keep), hessian.index_select(1, keep).index_select(2, keep)

    def _reprojection_linearization(
        self, projected: Tensor, projected_d: Tensor, obs: _Observations
    ) -> tuple[Tensor, Tensor]:
        """Robust reprojection residuals ``(B, 2J)`` and their Jacobian ``(B, 2J, P)``."""
        sigma = self.config.sigma
        error = projected - obs.keypoints
        scale = torch.sqrt(sigma**2 + error**2)
        conf = obs.confidences[..., None]
        residuals = (conf * sigma * error / scale).flatten(1)
        slope = conf * sigma**3 / scale**3  # d r / d error
        return residuals, (slope[..., None] * projected_d).flatten(1, 2)

    def _prior_jacobian(self, body_pose: Tensor) -> Tensor:
        """``(B, 69, 69)`` Jacobian of the prior's residuals: ``L_k^T`` of the best component
        for a GMM prior (residuals are linear per component), autodiff otherwise."""
        cholesky = getattr(self.pose_prior, "precision_cholesky", None)
        if cholesky is None:
            return _batched_jacobian(self.pose_prior.residuals, body_pose)
        best = self.pose_prior.best_component(body_pose)
        return cholesky.index_select(0, best).transpose(-1, -2)

    def _objective(self, stage: StageConfig) -> Callable:
        return self._camera_terms if stage.objective == "camera" else self._body_terms

    # ------------------------------------------------------------------ optimisers

    def _run_adam(self, stage, variables, obs) -> Tensor:
        params = {name: variables[name].clone().requires_grad_(True) for name in stage.optimize}
        optimizer = torch.optim.Adam(list(params.values()), lr=stage.lr, betas=(0.9, 0.999))
        objective = self._objective(stage)
        history = []
        for _ in range(stage.iterations):
            loss = objective({**variables, **params}, obs)["total"]
            history.append(loss.detach().mean())
            optimizer.zero_grad()
            loss.sum().backward()
            optimizer.step()
        for name, tensor in params.items():
            variables[name] = tensor.detach()
        with torch.no_grad():
            history.append(objective(variables, obs)["total"].mean())
        return torch.stack(history)

    def _run_lbfgs(self, stage, variables, obs) -> Tensor:
        params = {name: variables[name].clone().requires_grad_(True) for name in stage.optimize}
        optimizer = torch.optim.LBFGS(
            list(params.values()), lr=stage.lr, max_iter=1, line_search_fn="strong_wolfe"
        )
        objective = self._objective(stage)
        history = []

        def closure():
            optimizer.zero_grad()
            loss = objective({**variables, **params}, obs)["total"].sum()
            loss.backward()
            return loss

        for _ in range(stage.iterations):
            with torch.no_grad():
                history.append(objective({**variables, **params}, obs)["total"].mean())
            optimizer.step(closure)
        for name, tensor in params.items():
            variables[name] = tensor.detach()
        with torch.no_grad():
            history.append(objective(variables, obs)["total"].mean())
        return torch.stack(history)

    def _run_lm(self, stage, variables, obs) -> Tensor:
        """Batched Levenberg-Marquardt on the stage's residuals.

        Every iteration has the same shapes: a sample that converged (or whose damping reached
        its bound) is frozen by a mask, not removed, so nothing waits for the device. On a CPU
        the iteration runs on the samples still active (less arithmetic, and reading the mask
        costs nothing there); on CUDA it runs on the whole batch, host and device never wait
        for each other.
        """
        objective = self._objective(stage)
        names = list(stage.optimize)
        sizes = [variables[n].shape[1] for n in names]
        x = torch.cat([variables[n] for n in names], dim=1).detach()
        eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)

        def unpack(x: Tensor, fixed: dict[str, Tensor]) -> dict[str, Tensor]:
            return {**fixed, **dict(zip(names, torch.split(x, sizes, dim=1), strict=True))}

        def iterate(state: _LMState, fixed: dict[str, Tensor], obs: _Observations) -> _LMState:
            gradient, hessian = self._normal_equations(stage, unpack(state.x, fixed), obs)
            diagonal = torch.diagonal(hessian, dim1=1, dim2=2)
            system = hessian + (state.damping[:, None] * diagonal + 1e-9)[:, :, None] * eye
            step, _ = torch.linalg.solve_ex(system, -gradient)  # no error check: no sync
            candidate = state.x + step
            new_loss = objective(unpack(candidate, fixed), obs)["total"]
            accept = state.active & torch.isfinite(new_loss) & (new_loss < state.loss)
            improvement = torch.where(accept, state.loss - new_loss, torch.zeros_like(new_loss))
            converged = accept & (improvement <= stage.tolerance * state.loss.abs())
            damping = torch.where(
                accept, state.damping * LM_DAMPING_DOWN, state.damping * LM_DAMPING_UP
            )
            damping = torch.where(state.active, damping.clamp(*LM_DAMPING_RANGE), state.damping)
            stuck = damping >= LM_DAMPING_RANGE[1]
            return _LMState(
                x=torch.where(accept[:, None], candidate, state.x),
                loss=torch.where(accept, new_loss, state.loss),
                damping=damping,
                active=state.active & ~(converged | stuck),
            )

        with torch.no_grad():
            loss = objective(variables, obs)["total"]
            state = _LMState(
                x=x,
                loss=loss,
                damping=torch.full_like(loss, LM_INITIAL_DAMPING),
                active=torch.ones_like(loss, dtype=torch.bool),
            )
            history = [loss.mean()]
            if x.device.type == "cpu" and LM_COMPACT_ON_CPU:
                state = _lm_compacted(iterate, state, variables, obs, stage.iterations, history)
            else:
                for _ in range(stage.iterations):
                    state = iterate(state, variables, obs)
                    history.append(state.loss.mean())
        for name, tensor in unpack(state.x, {}).items():
            variables[name] = tensor.detach()
        return torch.stack(history)

    # ------------------------------------------------------------------ inputs

    def _observations(
        self, keypoints: Tensor, intrinsics: Tensor, convention: str
    ) -> tuple[_Observations, Tensor]:
        ref = self.body_model.v_template
        keypoints = keypoints.to(ref.dtype)
        if get_convention(convention).name != "spin49":
            keypoints = convert(keypoints, convention, "spin49")
        finite = torch.isfinite(keypoints).all(dim=-1)
        keypoints = torch.where(finite[..., None], keypoints, torch.zeros_like(keypoints))
        coords, conf = keypoints[..., :2], keypoints[..., 2].clamp(min=0.0)
        torso_conf = conf.clone()
        conf = conf.clone()
        conf[:, self._ignored] = 0.0
        valid = (conf > 0).sum(dim=1) >= 2
        torso_weights = losses.torso_camera_weights(
            torso_conf, self._torso_openpose, self._torso_gt, self.config.torso_rule
        )
        observations = _Observations(
            keypoints=coords,
            confidences=conf,
            torso_confidences=torso_conf,
            torso_weights=torso_weights,
            intrinsics=intrinsics.to(ref.dtype),
            initial_cam_t=ref.new_zeros(keypoints.shape[0], 3),
            initial_body_pose=ref.new_zeros(keypoints.shape[0], 69),
            initial_betas=ref.new_zeros(keypoints.shape[0], self.body_model.num_betas),
        )
        return observations, valid

    @staticmethod
    def _check_inputs(keypoints: Tensor, intrinsics: Tensor, ref: Tensor) -> None:
        if keypoints.ndim != 3 or keypoints.shape[-1] != 3:
            raise ValueError(
                f"expected keypoints of shape (B, J, 3) (x, y, confidence), got "
                f"{tuple(keypoints.shape)}"
            )
        if intrinsics.shape != (keypoints.shape[0], 3, 3):
            raise ValueError(
                f"expected intrinsics of shape ({keypoints.shape[0]}, 3, 3), got "
                f"{tuple(intrinsics.shape)}; use spin.geometry.crop_intrinsics for SPIN's crop"
            )
        if keypoints.device != ref.device:
            raise ValueError(
                f"keypoints are on {keypoints.device} but the body model is on {ref.device}"
            )


@dataclass(frozen=True, eq=False)
class _LMState:
    """Levenberg-Marquardt state of every sample: parameters ``(B, P)``, objective ``(B,)``,
    damping ``(B,)`` and whether the sample still iterates ``(B,)``."""

    x: Tensor
    loss: Tensor
    damping: Tensor
    active: Tensor

    def select(self, index: Tensor) -> _LMState:
        return _LMState(*(getattr(self, f).index_select(0, index) for f in _LM_FIELDS))

    def scatter(self, index: Tensor, part: _LMState) -> _LMState:
        return _LMState(
            *(getattr(self, f).index_copy(0, index, getattr(part, f)) for f in _LM_FIELDS)
        )


_LM_FIELDS = ("x", "loss", "damping", "active")


def _lm_compacted(iterate, state, variables, obs, iterations, history) -> _LMState:
    """Run ``iterations`` LM iterations on the samples still active only (for CPUs)."""
    for _ in range(iterations):
        index = state.active.nonzero().squeeze(1)
        if index.numel():
            fixed = {k: v.index_select(0, index) for k, v in variables.items()}
            part = iterate(state.select(index), fixed, obs.select(index))
            state = state.scatter(index, part)
        history.append(state.loss.mean())
    return state


def mean_start_config(config: SMPLifyConfig) -> SMPLifyConfig:
    """``config`` for fits that start from the mean pose: no anchor terms (they would pull
    the fit back to the mean pose) and, for the Levenberg-Marquardt modes, the start tried at
    :data:`MEAN_START_HEADINGS` unless ``config.headings`` says otherwise."""
    headings = config.headings
    if not headings and config.mode in ("lm", "anchored"):
        headings = MEAN_START_HEADINGS
    return replace(config, anchor_pose_weight=0.0, anchor_betas_weight=0.0, headings=headings)


def turned(pose_rotvecs: Tensor, headings_deg: Sequence[float]) -> Tensor:
    """``(H * B, 72)``: the poses ``(B, 72)`` with the body turned about its own vertical axis
    (SMPL's y) by each of the H angles in degrees, heading-major (all samples at the first
    heading, then all at the second, ...)."""
    batch = pose_rotvecs.shape[0]
    angles = torch.deg2rad(pose_rotvecs.new_tensor(list(headings_deg)))
    yaw = torch.zeros(len(headings_deg), 3, dtype=pose_rotvecs.dtype, device=pose_rotvecs.device)
    yaw[:, 1] = angles
    orientation = rotvec_to_rotmat(pose_rotvecs[:, :3])  # (B, 3, 3)
    turned_orientation = orientation[None] @ rotvec_to_rotmat(yaw)[:, None]  # (H, B, 3, 3)
    result = pose_rotvecs.repeat(len(headings_deg), 1)
    result[:, :3] = rotmat_to_rotvec(turned_orientation.reshape(-1, 3, 3))
    return result.reshape(len(headings_deg) * batch, 72)


def _split_schedule(
    stages: Sequence[StageConfig], trial_iterations: int
) -> tuple[tuple[StageConfig, ...], tuple[StageConfig, ...]]:
    """The heading trial (every stage up to the first body stage, which stops after
    ``trial_iterations``) and the rest (that body stage's remaining iterations, then the
    later stages)."""
    for position, stage in enumerate(stages):
        if stage.objective == "body":
            done = min(trial_iterations, stage.iterations)
            trial = (*stages[:position], replace(stage, iterations=done))
            rest = (replace(stage, iterations=stage.iterations - done), *stages[position + 1 :])
            return trial, rest
    return tuple(stages), ()


def _residuals_and_jacobian(fn: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """Residuals ``(B, R)`` and per-sample Jacobians ``(B, R, P)`` of a batch-separable
    ``fn: (B, P) -> (B, R)``, by forward-mode autodiff with one tangent per parameter."""
    num_params = x.shape[1]
    tangents = torch.eye(num_params, dtype=x.dtype, device=x.device)[:, None, :].expand(
        num_params, x.shape[0], num_params
    )

    def directional(tangent: Tensor) -> tuple[Tensor, Tensor]:
        return jvp(fn, (x,), (tangent,))

    values, derivatives = vmap(directional)(tangents)
    return values[0], derivatives.permute(1, 2, 0)


def _jacobian_columns(num_betas: int, root_only: bool = False) -> dict[str, slice]:
    """Where each variable's columns are in the sparse joints' Jacobian:
    ``[global_orient, body_pose, betas, cam_t]``, or ``[global_orient, cam_t]`` for a
    root-only one."""
    names = ("global_orient", "cam_t") if root_only else VARIABLES
    sizes = {"global_orient": 3, "body_pose": 69, "betas": num_betas, "cam_t": 3}
    starts = itertools.accumulate([sizes[n] for n in names], initial=0)
    return {n: slice(start, start + sizes[n]) for n, start in zip(names, starts, strict=False)}


def _stage_columns(stage, columns: dict[str, slice], device: torch.device) -> Tensor:
    """Indices of ``stage.optimize``'s variables among the Jacobian's ``columns``."""
    return torch.cat(
        [torch.arange(columns[n].start, columns[n].stop, device=device) for n in stage.optimize]
    )


def _project_with_jacobian(
    points: Tensor, points_d: Tensor, intrinsics: Tensor
) -> tuple[Tensor, Tensor]:
    """Pixels ``(B, J, 2)`` of camera-frame points ``(B, J, 3)`` and their Jacobian
    ``(B, J, 2, P)`` given the points' Jacobian ``(B, J, 3, P)``."""
    projected = perspective_projection(points, intrinsics)
    x, y, z = points.unbind(-1)
    z = z.clamp(min=1e-6)
    k = intrinsics[:, None]
    du = torch.stack(
        [k[..., 0, 0] / z, k[..., 0, 1] / z, -(k[..., 0, 0] * x + k[..., 0, 1] * y) / z**2], -1
    )
    dv = torch.stack([torch.zeros_like(z), k[..., 1, 1] / z, -(k[..., 1, 1] * y) / z**2], -1)
    d_pixels = torch.stack([du, dv], dim=-2)  # (B, J, 2, 3)
    return projected, d_pixels @ points_d


def _batched_jacobian(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``(B, R, P)`` Jacobians of a batch-separable ``fn: (B, P) -> (B, R)``."""
    return _residuals_and_jacobian(fn, x)[1]


def _or_zeros(value: Tensor | None, shape: Sequence[int], ref: Tensor) -> Tensor:
    if value is None:
        return torch.zeros(*shape, dtype=ref.dtype, device=ref.device)
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"expected shape {tuple(shape)}, got {tuple(value.shape)}")
    return value.to(ref.dtype)
