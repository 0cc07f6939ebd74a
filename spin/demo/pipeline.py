"""spin-demo's pipeline: one photo in, fitted 3D bodies in the photo's camera out.

:func:`run_demo` fits one person, :func:`run_demo_people` everyone MediaPipe finds
(:func:`spin.demo.keypoints.detect_people_mediapipe`; one regressor and one SMPLify serve
them all, :class:`DemoFitter`; :func:`render_people` draws them in one overlay and scores
each fitted body against MediaPipe's mask of the person). Per person, small steps:

1. **Keypoints**: given (with their convention), else MediaPipe's pose model
   (:func:`spin.demo.keypoints.detect_mediapipe`). Keypoints below
   :attr:`DemoConfig.min_confidence`, outside the image or not finite get confidence 0.
2. **Person box** (:func:`person_box`): the given box, else the keypoints' box enlarged
   1.2 times (SPIN's demo); the crop is the square of the box's longer side about its
   centre (SPIN's ``scale * 200`` px).
3. **Initial body** (:func:`regress` / :func:`mean_body`): with a checkpoint, the
   regressor's prediction (:class:`spin.predict.Predictor`) on its input for the box, made
   like the dataset makes it: the RGB crop, or for a keypoint representation (``keypoints``,
   ``keypoint_heatmaps``) the step-1 keypoints placed in the crop
   (:mod:`spin.predict.inputs`; part-map checkpoints are refused: there is no segmenter).
   Its weak-perspective crop camera is turned into the full-frame one
   (:func:`spin.geometry.crop_translation_to_full_frame`); without a checkpoint, the mean
   pose (upright, facing the camera) and mean shape.
4. **SMPLify** (:func:`refine`) on the keypoints with a *full-frame* perspective camera:
   focal length the image diagonal (CLIFF's guess) unless given, principal point at the
   image centre. The camera translation starts from the least-squares fit of the initial
   body's joints to the keypoints (what SMPLify does with ``init_cam_t=None``): a
   regressor's camera is often the weakest part of its prediction. The initial body is
   tried turned to four headings in one batch and the lowest objective wins
   (:data:`INITIAL_YAWS_DEG`): one start cannot turn a body seen from the side or back.

Pixel units of the fit. SMPLify's weights (GMoF sigma = 100 px, the prior weights) are
tuned for residuals in pixels of SPIN's 224-px crop. In full-image pixels the same fit
would change with the resolution: for a person 1,000 px tall, residuals are ~4.5x larger,
so the robust term saturates later and the priors count ~20x less. So the fit measures
residuals in crop pixels: keypoints and intrinsics both go through the similarity
``p -> (p - box_corner) * 224 / box_side``. The camera is still the full-frame one (same
rays, same translation; only its pixel unit and origin change), and the objective is
SPIN's: this equals scaling sigma by ``box_side / 224`` and dividing the whole objective
by ``(box_side / 224)^2``. Reprojection errors are reported in image pixels.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from spin.atomic import atomic_write_text
from spin.body import BodyModel, load_body_model
from spin.body.joint_conventions import SPIN_49, conversion_indices, convert, get_convention
from spin.demo.keypoints import (
    KEYPOINT_BOX_ENLARGE,
    MAX_PEOPLE,
    box_from_keypoints,
    detect_mediapipe,
    detect_people_mediapipe,
)
from spin.fitting.priors import load_pose_prior
from spin.fitting.smplify import SMPLify, SMPLifyConfig
from spin.geometry import (
    CROP_SIZE,
    crop_translation_to_full_frame,
    full_frame_intrinsics,
    perspective_projection,
    rotmat_to_rotvec,
)
from spin.predict import Predictor, crop_box, load_predictor
from spin.regressor.mean_params import mean_params_for_body_model

__all__ = [
    "DEFAULT_MODE",
    "MEDIAPIPE_DETECTOR",
    "DemoConfig",
    "DemoFitter",
    "DemoPerson",
    "DemoResult",
    "InitialBody",
    "clean_keypoints",
    "fit_frame",
    "mean_body",
    "person_box",
    "refine",
    "regress",
    "mask_iou",
    "people_to_dict",
    "render_people",
    "render_result",
    "result_to_dict",
    "run_demo",
    "run_demo_people",
    "turned_starts",
    "write_obj",
    "write_people_obj",
]

DEFAULT_MODE = "anchored"
"""SMPLify schedule of the demo: Levenberg-Marquardt on SPIN's objective plus terms that keep
the body pose and betas near the regressor's start where the keypoints do not decide
(``spin.fitting.smplify``'s ``"anchored"``; from the mean pose, ``--checkpoint none``, the
anchors are off and it is plain ``"lm"``). It is the fitter that is better in 3D: on rendered
people it never trained on, with MediaPipe's keypoints (``tools/bench_demo.py``, see the
README), and on ``tools/bench_smplify.py``'s regressor-like starts. ``--mode lm`` follows the
photo's keypoints more closely (lower 2D error) at the cost of 3D accuracy."""

SMPLIFY_MODES = ("anchored", "lm", "fast", "faithful")
"""``spin.fitting.smplify`` schedules: Levenberg-Marquardt with terms that keep the body pose
and betas near the regressor's start ("anchored"; without them from the mean pose),
Levenberg-Marquardt on SPIN's objective alone ("lm"), or SPIN's 100 + 100 Adam steps on the
joints only ("fast") or posing the whole mesh ("faithful"; the same fit, slower)."""

INITIAL_YAWS_DEG = (0.0, 90.0, 180.0, 270.0)
"""Turns of the initial body about its own vertical axis, fitted side by side in one batch;
the fit with the lowest SMPLify objective wins. From a single start SMPLify cannot turn a
body around (its camera stage only nudges the orientation), so a person seen from the side
or the back ends up facing the camera, contorted. On 24 synthetic people of any heading
(ground-truth 2D keypoints, "lm" mode) the heading was more than 45 degrees off for 11 of
them from the front-facing start alone and for none with these four starts; the
pelvis-centred joint error fell from 198 to 101 mm."""

MIN_CONFIDENCE = 0.2
"""Keypoints at or below this confidence are not fitted (SPIN's OpenPose threshold);
MediaPipe gives guessed, out-of-view joints a visibility near 0."""

OVERLAY_ALPHA = 0.8
"""Opacity of the mesh over the photo."""

MESH_COLOR = (0.65, 0.74, 0.86)
KEYPOINT_RGB = (230, 30, 30)
KEYPOINT_RADIUS_PER_PX = 1.0 / 200
"""Keypoint dots on the overlay: radius as a fraction of the image's longer side."""

SIDE_BACKGROUND = 255
"""Grey level behind the side view."""

CV_TO_GL = np.diag([1.0, -1.0, -1.0])
"""Camera frame (x right, y down, z forward) to OpenGL's (x right, y up, z backward): the
OBJ is written in the latter, so viewers show the body upright, as the camera saw it."""


@dataclass(frozen=True)
class DemoConfig:
    """Settings of :func:`run_demo`.

    Attributes:
        mode: SMPLify schedule, one of :data:`SMPLIFY_MODES` (see :data:`DEFAULT_MODE`).
        focal_length: full-frame focal length in pixels; None for the image diagonal.
        body_model: body model without a checkpoint (``"open"``, ``"open-lite"``,
            ``"smpl"`` or a path); None means the checkpoint's, else ``"open"``. With a
            checkpoint it must be the checkpoint's.
        pose_prior: SMPLify's pose prior; None means the checkpoint's, else ``"open"``.
        min_confidence: keypoints at or below this confidence are ignored.
        box_enlarge: a box made from keypoints is this much larger than their extent.
        fit_crop_size: the crop size whose pixel unit the fit uses (see the module notes).
        initial_yaws_deg: turns of the initial body about its vertical axis that SMPLify
            starts from; the lowest objective wins (see :data:`INITIAL_YAWS_DEG`).
    """

    mode: Literal["lm", "anchored", "fast", "faithful"] = DEFAULT_MODE
    focal_length: float | None = None
    body_model: str | None = None
    pose_prior: str | None = None
    min_confidence: float = MIN_CONFIDENCE
    box_enlarge: float = KEYPOINT_BOX_ENLARGE
    fit_crop_size: int = CROP_SIZE
    initial_yaws_deg: tuple[float, ...] = INITIAL_YAWS_DEG

    def __post_init__(self) -> None:
        if self.mode not in SMPLIFY_MODES:
            raise ValueError(f"unknown SMPLify mode {self.mode!r}; use one of {SMPLIFY_MODES}")
        if self.focal_length is not None and not (
            math.isfinite(self.focal_length) and self.focal_length > 0
        ):
            raise ValueError(
                f"--focal-length must be a finite number of pixels > 0, got {self.focal_length}"
            )
        if not 0.0 <= self.min_confidence < 1.0:
            raise ValueError(
                f"--min-confidence must be in [0, 1) (keypoint confidences lie in [0, 1]), got "
                f"{self.min_confidence}"
            )
        if self.box_enlarge <= 0 or self.fit_crop_size < 1:
            raise ValueError("box_enlarge and fit_crop_size must be positive")
        if not self.initial_yaws_deg:
            raise ValueError("initial_yaws_deg needs at least one angle (0: the start as it is)")


@dataclass(frozen=True, eq=False)
class InitialBody:
    """Where SMPLify starts: ``pose_rotvecs`` (72,), ``betas`` (NB,) and, from a regressor,
    its full-frame ``cam_t`` (3,) (None for the mean body); ``source`` names it."""

    pose_rotvecs: np.ndarray
    betas: np.ndarray
    cam_t: np.ndarray | None
    source: str


@dataclass(frozen=True, eq=False)
class DemoResult:
    """The fitted body in the photo's camera (numpy, float64).

    Attributes:
        pose_rotvecs: ``(72,)`` axis-angle, global orientation first.
        betas: ``(NB,)``.
        cam_t: ``(3,)`` the body's translation in the camera frame, metres.
        vertices: ``(V, 3)`` camera frame (x right, y down, z forward), metres.
        faces: ``(F, 3)`` int.
        intrinsics: ``(3, 3)`` full-frame camera, pixels.
        image_size: ``(width, height)``.
        box: ``(4,)`` the square crop ``(x0, y0, x1, y1)``, pixels.
        keypoints: ``(J, 3)`` the keypoints fitted (low-confidence ones zeroed), pixels.
        convention: their joint convention.
        projected: ``(J, 2)`` the body's joints of that convention, projected; NaN where
            the body model has no such joint.
        errors: ``(J,)`` pixel distance projected-to-keypoint; NaN for joints not fitted.
        initial: where the fit started (``"regressor (PATH)"`` or ``"mean pose"``).
        initial_yaw_deg: the turn of that start about the vertical axis that won.
        regressed_cam_t: ``(3,)`` the regressor's camera moved to the full frame (SMPLify
            starts from the keypoints' least-squares camera instead); None without one.
        mode: the SMPLify schedule.
        body_model: the body model's name.
    """

    pose_rotvecs: np.ndarray
    betas: np.ndarray
    cam_t: np.ndarray
    vertices: np.ndarray
    faces: np.ndarray
    intrinsics: np.ndarray
    image_size: tuple[int, int]
    box: np.ndarray
    keypoints: np.ndarray
    convention: str
    projected: np.ndarray
    errors: np.ndarray
    initial: str
    initial_yaw_deg: float
    regressed_cam_t: np.ndarray | None
    mode: str
    body_model: str

    @property
    def mean_error(self) -> float:
        """Mean reprojection error in pixels over the fitted keypoints."""
        fitted = np.isfinite(self.errors)
        return float(self.errors[fitted].mean()) if fitted.any() else float("nan")

    @property
    def num_fitted(self) -> int:
        return int(np.isfinite(self.errors).sum())


def run_demo(
    image: np.ndarray,
    checkpoint: str | os.PathLike | None = None,
    bbox: Sequence[float] | None = None,
    keypoints: np.ndarray | None = None,
    convention: str | None = None,
    config: DemoConfig | None = None,
) -> DemoResult:
    """Fit a 3D body to the person in ``image`` (one person; :func:`run_demo_people` fits
    everyone MediaPipe finds).

    Args:
        image: ``(H, W, 3)`` uint8 RGB photo.
        checkpoint: a ``spin-train`` checkpoint for the initial body (rgb, keypoints or
            keypoint_heatmaps inputs); None starts SMPLify from the mean pose.
        bbox: ``(x0, y0, x1, y1)`` pixels around the person; None makes it from the
            keypoints (with MediaPipe, a given box also limits where it looks).
        keypoints: ``(J, 3)`` ``(x, y, confidence)`` pixels in ``convention``; None runs
            MediaPipe (needs ``make demo-setup``).
        convention: the keypoints' joint convention (``"openpose25"``, ``"coco17"``, ...).
        config: :class:`DemoConfig`.

    Returns:
        :class:`DemoResult`.
    """
    config = config or DemoConfig()
    image = _check_image(image)
    if keypoints is None:
        keypoints, convention = detect_mediapipe(image, bbox), "mediapipe33"
        if not (keypoints[:, 2] > 0).any():
            raise ValueError(_nobody_found(bbox))
    elif convention is None:
        raise ValueError("name the keypoints' joint convention (e.g. 'coco17', 'openpose25')")
    get_convention(convention)  # fails early on an unknown name
    fitter = DemoFitter.create(image, checkpoint, config)
    return fitter.fit(image, keypoints, convention, bbox)


@dataclass(frozen=True, eq=False)
class DemoPerson:
    """One person of a photo: what the detector gave and the fit.

    Attributes:
        keypoints: ``(J, 3)`` the detector's keypoints, image pixels, in ``convention``.
        convention: their joint convention (``"mediapipe33"`` for MediaPipe).
        detector_box: ``(4,)`` ``(x0, y0, x1, y1)`` the detector's box of the person.
        detector_mask: ``(H, W)`` bool, the detector's segmentation (None without one).
        result: the fit, or None if the person was skipped.
        skipped: why not fitted (None if fitted).
        mask_iou: IoU of the rendered fitted body with ``detector_mask`` (None until
            rendered, or without a mask).
    """

    keypoints: np.ndarray
    convention: str
    detector_box: np.ndarray
    detector_mask: np.ndarray | None
    result: DemoResult | None
    skipped: str | None = None
    mask_iou: float | None = None


def run_demo_people(
    image: np.ndarray,
    checkpoint: str | os.PathLike | None = None,
    bbox: Sequence[float] | None = None,
    config: DemoConfig | None = None,
    max_people: int = MAX_PEOPLE,
) -> list[DemoPerson]:
    """Fit a 3D body to every person MediaPipe finds in ``image`` (inside ``bbox`` if
    given; :func:`spin.demo.keypoints.detect_people_mediapipe`), one after the other with
    one regressor and one SMPLify. A person whose keypoints cannot be fitted is kept with
    the reason (:attr:`DemoPerson.skipped`).

    Raises:
        ValueError: MediaPipe found nobody (the message says what to try).
    """
    config = config or DemoConfig()
    image = _check_image(image)
    detections = detect_people_mediapipe(image, bbox, max_people)
    if not detections:
        raise ValueError(_nobody_found(bbox))
    fitter = DemoFitter.create(image, checkpoint, config)
    people = []
    for found in detections:
        try:
            # The person's own box: MediaPipe already looked inside the given one.
            result, skipped = fitter.fit(image, found.keypoints, "mediapipe33", None), None
        except ValueError as error:
            result, skipped = None, str(error)
        people.append(
            DemoPerson(found.keypoints, "mediapipe33", found.box, found.mask, result, skipped)
        )
    return people


@dataclass(frozen=True, eq=False)
class DemoFitter:
    """What fitting a person in one photo needs, made once per photo: the regressor (or
    None), the body model, SMPLify and the full-frame camera ``intrinsics`` (3, 3)."""

    config: DemoConfig
    predictor: Predictor | None
    body_model: BodyModel
    smplify: SMPLify
    intrinsics: np.ndarray

    @classmethod
    def create(
        cls, image: np.ndarray, checkpoint: str | os.PathLike | None, config: DemoConfig
    ) -> DemoFitter:
        image_size = (image.shape[1], image.shape[0])
        predictor = load_predictor(checkpoint) if checkpoint is not None else None
        body_name = _resolve_body_model(config.body_model, predictor)
        body_model = predictor.body_model if predictor is not None else load_body_model(body_name)
        prior = load_pose_prior(
            config.pose_prior or (predictor.config.pose_prior if predictor is not None else "open")
        )
        intrinsics = full_frame_intrinsics(
            torch.tensor(image_size, dtype=torch.float64), config.focal_length
        ).numpy()
        smplify_config = SMPLifyConfig(mode=config.mode)
        if predictor is None:  # the mean pose: no anchors (they would pull the fit back to it)
            smplify_config = replace(
                smplify_config, anchor_pose_weight=0.0, anchor_betas_weight=0.0
            )
        smplify = SMPLify(body_model, prior, smplify_config)
        return cls(config, predictor, body_model, smplify, intrinsics)

    def fit(
        self,
        image: np.ndarray,
        keypoints: np.ndarray,
        convention: str,
        bbox: Sequence[float] | None,
    ) -> DemoResult:
        """Steps 2-4 of the module notes for one person's ``(J, 3)`` keypoints."""
        config = self.config
        image_size = (image.shape[1], image.shape[0])
        cleaned = clean_keypoints(keypoints, image_size, config.min_confidence)
        if bbox is None and (cleaned[:, 2] > 0).sum() < 2:
            raise ValueError(keypoint_shortfall(keypoints, image_size, config.min_confidence))
        keypoints = cleaned
        center, side = person_box(keypoints, bbox, config.box_enlarge)
        if self.predictor is not None:
            initial = regress(
                self.predictor, image, center, side, self.intrinsics, keypoints, convention
            )
        else:
            initial = mean_body(self.body_model)
        fit = refine(
            self.smplify, keypoints, convention, self.intrinsics, initial, center, side, config
        )
        projected, errors = _reprojection(
            fit["joints"], keypoints, convention, self.intrinsics, self.smplify
        )
        half = side / 2.0
        return DemoResult(
            pose_rotvecs=fit["pose_rotvecs"],
            betas=fit["betas"],
            cam_t=fit["cam_t"],
            vertices=fit["vertices"],
            faces=np.asarray(self.body_model.faces),
            intrinsics=self.intrinsics,
            image_size=image_size,
            box=np.concatenate([center - half, center + half]),
            keypoints=keypoints,
            convention=get_convention(convention).name,
            projected=projected,
            errors=errors,
            initial=initial.source,
            initial_yaw_deg=fit["yaw_deg"],
            regressed_cam_t=initial.cam_t,
            mode=config.mode,
            body_model=self.body_model.name,
        )


def _nobody_found(bbox: Sequence[float] | None) -> str:
    if bbox is not None:
        x0, y0, x1, y1 = bbox
        return (
            f"MediaPipe found no person inside the box ({x0:g}, {y0:g}) - ({x1:g}, {y1:g}); "
            "give a box that holds a whole person, or your own keypoints (--keypoints FILE)"
        )
    return (
        "MediaPipe found no person in the image; give the person's box (--bbox) or "
        "your own keypoints (--keypoints FILE)"
    )


# --- steps ------------------------------------------------------------------------------------


def clean_keypoints(
    keypoints: np.ndarray, image_size: Sequence[int], min_confidence: float
) -> np.ndarray:
    """``(J, 3)`` copy with confidence 0 for keypoints at or below ``min_confidence``,
    outside the ``(width, height)`` image, or not finite (their coordinates become 0)."""
    keypoints = np.array(keypoints, dtype=np.float64)
    if keypoints.ndim != 2 or keypoints.shape[1] != 3:
        raise ValueError(f"expected keypoints of shape (J, 3), got {keypoints.shape}")
    width, height = image_size
    x, y, conf = keypoints.T
    with np.errstate(invalid="ignore"):
        inside = (x >= 0) & (x <= width) & (y >= 0) & (y <= height)
        keep = np.isfinite(keypoints).all(axis=1) & inside & (conf > min_confidence)
    keypoints[~keep] = 0.0
    return keypoints


def keypoint_shortfall(
    keypoints: np.ndarray, image_size: Sequence[int], min_confidence: float
) -> str:
    """Why fewer than 2 keypoints ``(J, 3)`` are usable: how many are not finite, outside the
    ``(width, height)`` image, or at or below ``min_confidence``."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    width, height = image_size
    finite = np.isfinite(keypoints).all(axis=1)
    x, y, conf = np.where(finite[:, None], keypoints, 0.0).T
    outside = finite & ~((x >= 0) & (x <= width) & (y >= 0) & (y <= height))
    low = finite & ~outside & (conf <= min_confidence)
    usable = len(keypoints) - int((~finite).sum()) - int(outside.sum()) - int(low.sum())
    return (
        f"only {usable} of {len(keypoints)} keypoints are usable (2 needed to place the person): "
        f"{int((~finite).sum())} not finite, {int(outside.sum())} outside the {width}x{height} "
        f"image, {int(low.sum())} with confidence <= {min_confidence}; check the keypoints' "
        "pixel coordinates, or give the person's box (--bbox x0,y0,x1,y1)"
    )


def person_box(
    keypoints: np.ndarray, bbox: Sequence[float] | None, enlarge: float = KEYPOINT_BOX_ENLARGE
) -> tuple[np.ndarray, float]:
    """The square person crop: ``(2,)`` centre and side in pixels.

    A given ``bbox`` ``(x0, y0, x1, y1)`` is used as it is (SPIN's demo); otherwise the box
    of the confident keypoints ``(J, 3)`` enlarged ``enlarge`` times. The side is the
    box's longer side.
    """
    if bbox is None:
        bbox = box_from_keypoints(keypoints, 0.0, enlarge)
    return crop_box(bbox)


def regress(
    predictor: Predictor,
    image: np.ndarray,
    center: np.ndarray,
    side: float,
    intrinsics: np.ndarray,
    keypoints: np.ndarray | None = None,
    convention: str | None = None,
) -> InitialBody:
    """The regressor's body for the box of ``side`` px about ``center`` (2,), with its
    camera moved to the full-frame camera ``intrinsics`` (3, 3). Its input is made from the
    image or from the ``(J, 3)`` keypoints in ``convention`` (pixels), whichever its
    representation needs (:meth:`spin.predict.Predictor.input_for_person`)."""
    inputs = predictor.input_for_person(center, side, image, keypoints, convention)
    output = predictor.predict(inputs)
    height, width = image.shape[:2]
    cam_t = crop_translation_to_full_frame(
        output.cam.double(),
        torch.tensor(center, dtype=torch.float64)[None],
        torch.tensor([side], dtype=torch.float64),
        torch.tensor([[width, height]], dtype=torch.float64),
        float(intrinsics[0, 0]),
    )
    pose = rotmat_to_rotvec(output.pose_rotmats.double()).reshape(-1)
    path = predictor.checkpoint.path if predictor.checkpoint is not None else "in memory"
    what = "" if predictor.representation == "rgb" else f", {predictor.representation} input"
    return InitialBody(
        pose_rotvecs=pose.numpy(),
        betas=output.betas[0].double().numpy(),
        cam_t=cam_t[0].numpy(),
        source=f"regressor ({path}{what})",
    )


def mean_body(body_model: BodyModel) -> InitialBody:
    """The mean pose (upright, facing the camera, arms down) and mean shape."""
    mean = mean_params_for_body_model(body_model.name, body_model.num_betas)
    pose = rotmat_to_rotvec(mean.pose_rotmats).reshape(-1)
    return InitialBody(pose.numpy(), mean.betas.numpy(), None, "mean pose")


def fit_frame(center: np.ndarray, side: float, crop_size: int = CROP_SIZE) -> np.ndarray:
    """``(3, 3)`` similarity taking image pixels to the fit's pixels: the square box of
    ``side`` px about ``center`` (2,) becomes ``[0, crop_size]^2``."""
    zoom = crop_size / side
    corner = np.asarray(center, dtype=np.float64) - side / 2.0
    return np.array([[zoom, 0.0, -zoom * corner[0]], [0.0, zoom, -zoom * corner[1]], [0, 0, 1]])


def turned_starts(pose_rotvecs: np.ndarray, yaws_deg: Sequence[float]) -> np.ndarray:
    """``(K, 72)`` copies of ``pose_rotvecs`` (72,) with the body turned by each of the K
    angles (degrees) about its own vertical axis (SMPL's y; right-handed)."""
    from scipy.spatial.transform import Rotation

    orientation = Rotation.from_rotvec(pose_rotvecs[:3])
    turns = Rotation.from_euler("y", np.asarray(yaws_deg, dtype=np.float64)[:, None], degrees=True)
    starts = np.repeat(np.asarray(pose_rotvecs, dtype=np.float64)[None], len(turns), axis=0)
    starts[:, :3] = (orientation * turns).as_rotvec()
    return starts


def refine(
    smplify: SMPLify,
    keypoints: np.ndarray,
    convention: str,
    intrinsics: np.ndarray,
    initial: InitialBody,
    center: np.ndarray,
    side: float,
    config: DemoConfig,
) -> dict[str, np.ndarray]:
    """SMPLify on ``keypoints`` (J, 3) with the full-frame camera ``intrinsics`` (3, 3),
    residuals measured in the box's crop pixels (see the module notes), from the initial
    body turned by each of ``config.initial_yaws_deg`` (one batch); the lowest objective
    wins.

    Returns:
        ``pose_rotvecs`` (72,), ``betas`` (NB,), ``cam_t`` (3,), ``vertices`` (V, 3) and
        SPIN-49 ``joints`` (49, 3) in the camera frame, and ``yaw_deg`` (the winning turn).
    """
    frame = fit_frame(center, side, config.fit_crop_size)
    fit_keypoints = keypoints.copy()
    fit_keypoints[:, :2] = keypoints[:, :2] @ frame[:2, :2].T + frame[:2, 2]
    starts = turned_starts(initial.pose_rotvecs, config.initial_yaws_deg)
    count = len(starts)
    ref = smplify.body_model.v_template

    def batch(array: np.ndarray) -> torch.Tensor:
        tensor = torch.as_tensor(array, dtype=ref.dtype, device=ref.device)
        return tensor.expand(count, *tensor.shape).contiguous()

    result = smplify(
        batch(fit_keypoints),
        batch(frame @ intrinsics),
        init_pose_rotvecs=torch.as_tensor(starts, dtype=ref.dtype, device=ref.device),
        init_betas=batch(initial.betas),
        init_cam_t=None,
        convention=convention,
        return_mesh=True,
    )
    if not bool(result.valid[0]):
        raise ValueError(
            "too few confident keypoints to fit a body (SMPLify needs at least 2 besides the "
            "hips and neck); check the keypoints or lower min_confidence"
        )
    total = torch.nan_to_num(result.total_loss, nan=float("inf"))
    best = int(total.argmin())
    fields = ("pose_rotvecs", "betas", "cam_t", "vertices", "joints")
    fit = {name: getattr(result, name)[best].double().cpu().numpy() for name in fields}
    fit["yaw_deg"] = float(config.initial_yaws_deg[best])
    return fit


def _reprojection(
    joints: np.ndarray,
    keypoints: np.ndarray,
    convention: str,
    intrinsics: np.ndarray,
    smplify: SMPLify,
) -> tuple[np.ndarray, np.ndarray]:
    """Projected joints ``(J, 2)`` of the keypoints' convention (NaN where the body has
    none) and their pixel errors ``(J,)``, NaN for keypoints SMPLify did not fit (zero
    confidence, no counterpart, or a point it ignores: the hips and the neck)."""
    projected49 = perspective_projection(
        torch.from_numpy(joints)[None], torch.from_numpy(intrinsics)[None]
    )[0].numpy()
    index = np.asarray(conversion_indices(SPIN_49, convention))
    has_joint = index >= 0
    projected = convert(projected49, SPIN_49, convention)
    projected[~has_joint] = np.nan
    ignored = {SPIN_49.points[SPIN_49.index(name)] for name in smplify.config.ignored_joints}
    points = get_convention(convention).points
    fitted = has_joint & (keypoints[:, 2] > 0) & np.array([p not in ignored for p in points])
    errors = np.full(len(keypoints), np.nan)
    errors[fitted] = np.linalg.norm(projected[fitted] - keypoints[fitted, :2], axis=1)
    return projected, errors


# --- outputs ----------------------------------------------------------------------------------


def render_result(
    image: np.ndarray, result: DemoResult, draw_keypoints: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The mesh over the photo (with the keypoints SMPLify fitted as red dots) and a side view.

    Returns:
        Two ``(H, W, 3)`` uint8 images: front overlay and side view (the body turned 90
        degrees about the vertical axis, framed, on white).
    """
    from spin.render.figures import draw_points
    from spin.render.mesh_renderer import MeshRenderer, render_side_view

    image = _check_image(image)
    with MeshRenderer(result.image_size) as renderer:
        overlay = renderer.render(
            result.vertices,
            result.faces,
            result.intrinsics,
            MESH_COLOR,
            background=image,
            alpha=OVERLAY_ALPHA,
        )
        side = render_side_view(
            result.vertices,
            result.faces,
            result.intrinsics,
            result.image_size,
            MESH_COLOR,
            background=np.full_like(image, SIDE_BACKGROUND),
            renderer=renderer,
        )
    if draw_keypoints:
        fitted = np.isfinite(result.errors)
        radius = max(1.5, KEYPOINT_RADIUS_PER_PX * max(result.image_size))
        overlay = draw_points(overlay, result.keypoints[fitted, :2], KEYPOINT_RGB, radius)
    return overlay, side


MEDIAPIPE_DETECTOR = "MediaPipe pose (legacy BlazePose, model_complexity 1), repeated per person"
"""How :func:`run_demo_people` finds people (the JSON record's ``detector``)."""

PEOPLE_COLORS = (
    MESH_COLOR,
    (0.90, 0.62, 0.45),
    (0.55, 0.82, 0.55),
    (0.85, 0.55, 0.80),
    (0.92, 0.85, 0.45),
    (0.50, 0.80, 0.85),
)
"""Mesh colours of the people in a multi-person overlay, in the order found (repeating)."""


def render_people(
    image: np.ndarray, results: Sequence[DemoResult], draw_keypoints: bool = True
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """All fitted people in one overlay (each in its own colour, nearer bodies in front),
    one side view of them together, and each person's own silhouette.

    Args:
        image: ``(H, W, 3)`` uint8 photo.
        results: the people's fits, all in the photo's camera.

    Returns:
        ``(H, W, 3)`` overlay, ``(H, W, 3)`` side view, and per person an ``(H, W)`` bool
        mask of the pixels their body covers (alone, not hidden by the others).
    """
    from spin.render.figures import draw_points
    from spin.render.mesh_renderer import MeshRenderer, render_side_view

    image = _check_image(image)
    if not results:
        raise ValueError("no fitted person to render")
    first = results[0]
    vertices, faces, colors, offset = [], [], [], 0
    for index, result in enumerate(results):
        vertices.append(result.vertices)
        faces.append(np.asarray(result.faces) + offset)
        color = PEOPLE_COLORS[index % len(PEOPLE_COLORS)]
        colors.append(np.tile(color, (len(result.vertices), 1)))
        offset += len(result.vertices)
    vertices, faces, colors = (
        np.concatenate(vertices),
        np.concatenate(faces),
        np.concatenate(colors),
    )
    with MeshRenderer(first.image_size) as renderer:
        overlay = renderer.render(
            vertices,
            faces,
            first.intrinsics,
            background=image,
            alpha=OVERLAY_ALPHA,
            vertex_colors=colors,
        )
        side = render_side_view(
            vertices,
            faces,
            first.intrinsics,
            first.image_size,
            MESH_COLOR,
            background=np.full_like(image, SIDE_BACKGROUND),
            renderer=renderer,
        )
        silhouettes = [
            renderer.render_silhouette(r.vertices, r.faces, r.intrinsics) for r in results
        ]
    if draw_keypoints:
        radius = max(1.5, KEYPOINT_RADIUS_PER_PX * max(first.image_size))
        for result in results:
            fitted = np.isfinite(result.errors)
            overlay = draw_points(overlay, result.keypoints[fitted, :2], KEYPOINT_RGB, radius)
    return overlay, side, silhouettes


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``(H, W)`` bool masks (NaN if both are empty)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks of different shapes {a.shape} and {b.shape}")
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else float("nan")


def people_to_dict(people: Sequence[DemoPerson], detector: str) -> dict:
    """The JSON record of a photo's people: how many the ``detector`` found and how many
    were fitted, and per person the detector's box and keypoints, then the fit
    (:func:`result_to_dict`: crop box, projected model joints, reprojection errors in
    pixels, parameters) with the IoU of the rendered body with the detector's mask, or why
    the person was skipped."""
    records = []
    for index, person in enumerate(people):
        record = {
            "person": index,
            "detector_box_xyxy": _json(person.detector_box),
            "detector_keypoints": {
                "convention": get_convention(person.convention).name,
                "xy_confidence": _json(person.keypoints),
            },
            "detector_mask_pixels": None
            if person.detector_mask is None
            else int(person.detector_mask.sum()),
        }
        if person.result is None:
            record["skipped"] = person.skipped
        else:
            record["fit"] = result_to_dict(person.result)
            record["mask_iou"] = None if person.mask_iou is None else _json(person.mask_iou)
        records.append(record)
    return {
        "detector": detector,
        "people_found": len(people),
        "people_fitted": sum(p.result is not None for p in people),
        "people": records,
    }


def result_to_dict(result: DemoResult) -> dict:
    """Plain JSON-able parameters, camera and keypoints of a result (NaN -> None)."""
    return {
        "body_model": result.body_model,
        "initial": result.initial,
        "initial_yaw_deg": result.initial_yaw_deg,
        "smplify_mode": result.mode,
        "image_size": list(result.image_size),
        "box_xyxy": _json(result.box),
        "intrinsics": _json(result.intrinsics),
        "pose_rotvecs": _json(result.pose_rotvecs),
        "betas": _json(result.betas),
        "cam_t": _json(result.cam_t),
        "regressed_cam_t": None
        if result.regressed_cam_t is None
        else _json(result.regressed_cam_t),
        "camera_frame": "x right, y down, z forward (OpenCV), metres; pixels from the top-left",
        "keypoints": {
            "convention": result.convention,
            "joint_names": list(get_convention(result.convention).joint_names),
            "xy_confidence": _json(result.keypoints),
            "projected_xy": _json(result.projected),
            "error_px": _json(result.errors),
        },
        "mean_reprojection_error_px": _json(result.mean_error),
        "num_fitted_keypoints": result.num_fitted,
    }


def write_obj(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray) -> Path:
    """Write the mesh as Wavefront OBJ in OpenGL's camera frame (x right, y up, the camera
    looking down -z), so viewers show it upright as the camera saw it."""
    return atomic_write_text(path, "\n".join(_obj_lines(vertices, faces)) + "\n")


def write_people_obj(path: str | os.PathLike, results: Sequence[DemoResult]) -> Path:
    """Write several fitted bodies into one OBJ (as :func:`write_obj`), one named object
    (``o person_<k>``) each, in the order given."""
    lines, offset = [], 0
    for index, result in enumerate(results):
        lines.append(f"o person_{index}")
        lines += _obj_lines(result.vertices, result.faces, offset)
        offset += len(result.vertices)
    return atomic_write_text(path, "\n".join(lines) + "\n")


def _obj_lines(vertices: np.ndarray, faces: np.ndarray, offset: int = 0) -> list[str]:
    vertices = np.asarray(vertices, dtype=np.float64) @ CV_TO_GL
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    first = offset + 1
    lines += [f"f {a + first} {b + first} {c + first}" for a, b, c in np.asarray(faces)]
    return lines


# --- helpers ----------------------------------------------------------------------------------


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected an RGB image of shape (H, W, 3) uint8, got {image.shape} {image.dtype}"
        )
    return np.ascontiguousarray(image)


def _json(values, decimals: int = 6):
    """Nested lists of rounded floats with None for NaN / inf."""
    array = np.round(np.asarray(values, dtype=np.float64), decimals)
    if array.ndim == 0:
        return float(array) if np.isfinite(array) else None
    return [_json(row, decimals) for row in array]


def _resolve_body_model(requested: str | None, predictor: Predictor | None) -> str:
    if predictor is None:
        return requested or "open"
    trained = predictor.trained_with
    if requested is not None and requested != trained:
        raise ValueError(
            f"the checkpoint was trained with body model {trained!r}, not {requested!r}; "
            "leave the body model unset to use the checkpoint's"
        )
    return trained
