"""A trained regressor ready to predict: :class:`Predictor` and :func:`load_predictor`.

A :class:`Predictor` holds the network, the body model its predictions are posed with and
what it needs around it (:class:`PredictorConfig`: input representation, crop size and rules,
crop camera, pose prior and SMPLify schedule of its training run), read from the config
saved in every checkpoint, so a checkpoint alone rebuilds it whatever its input
representation. It makes the network's input from an image and a person box, from 2D
keypoints (:mod:`spin.predict.inputs`) or from a dataset sample
(:meth:`Predictor.dataset`, :meth:`Predictor.input_from_batch`), predicts SMPL pose, shape and
the crop camera, and optionally refines the prediction with SMPLify
(:meth:`Predictor.refine`). ``spin-eval``, ``spin-demo`` and the trainer's validation all go
through it.

Body models. The regressor predicts the parameters of the body model it was trained with
(``body_model`` in the checkpoint's config). :func:`load_predictor` can pose them with another
file of the same kind (the bundled open models ``open``/``open-lite`` share one shape space;
SMPL files are SMPL wherever they are), never with the other kind
(:class:`BodyModelMismatchError`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from spin.body import BodyModel, BodyOutput, load_body_model
from spin.body.loading import BUNDLED_MODELS, SMPL_DIR_ENV
from spin.config import ConfigError, build_config
from spin.data.spin_dataset import SpinDataset
from spin.fitting.priors import load_pose_prior
from spin.fitting.smplify import SMPLify, SMPLifyConfig
from spin.predict.checkpoint import read_checkpoint
from spin.predict.inputs import (
    InputConfig,
    InputUnavailableError,
    keypoints_in_crop,
    make_input,
)
from spin.predict.refine import Refinement, refine_in_crop
from spin.regressor.hmr import HMR, HMRConfig, HMROutput, build_hmr, predict_body

__all__ = [
    "OPEN_FAMILY",
    "SMPL_FAMILY",
    "BodyModelMismatchError",
    "CheckpointInfo",
    "Predictor",
    "PredictorConfig",
    "load_predictor",
    "predictor_config",
]

OPEN_FAMILY = "open"
SMPL_FAMILY = "smpl"


class BodyModelMismatchError(ValueError):
    """The body model asked for is not the one the checkpoint's regressor was trained with."""


@dataclass(frozen=True)
class PredictorConfig:
    """What a trained regressor needs around it: the parts of its training config (same
    names) that predicting uses.

    Attributes:
        body_model: the body model it was trained with (name or path).
        pose_prior: SMPLify's pose prior of the run.
        hmr: the regressor (its crop camera: ``focal_length``, ``crop_size``).
        smplify: the run's SMPLify schedule (the default for refinement).
        input: how its input is made (representation, crop side, heatmap sigma).
    """

    body_model: str = "open"
    pose_prior: str = "open"
    hmr: HMRConfig = field(default_factory=HMRConfig)
    smplify: SMPLifyConfig = field(default_factory=SMPLifyConfig)
    input: InputConfig = field(default_factory=InputConfig)


_FROM_TRAINING = ("body_model", "pose_prior", "hmr", "smplify")


def predictor_config(training_config: Mapping) -> PredictorConfig:
    """The :class:`PredictorConfig` of a training config given as plain data (what a
    checkpoint saves: ``spin.config.config_to_dict`` of the run's config); ``input`` comes
    from its ``data`` section. Keys it does not name are defaults.

    Raises:
        spin.config.ConfigError: a value does not fit this version's configs.
    """
    picked = {key: training_config[key] for key in _FROM_TRAINING if key in training_config}
    data = training_config.get("data") or {}
    picked["input"] = {f.name: data[f.name] for f in fields(InputConfig) if f.name in data}
    return build_config(PredictorConfig, picked)


@dataclass(frozen=True)
class CheckpointInfo:
    """Where a predictor came from.

    Attributes:
        path: the checkpoint file.
        step: its training steps.
        training_config: its whole saved config, plain data.
    """

    path: Path
    step: int
    training_config: dict


@dataclass(frozen=True, eq=False)
class Predictor:
    """A regressor with its body model and the rules of its input.

    Attributes:
        model: the HMR regressor (its mode, train or eval, is the caller's; a loaded one is in
            eval mode).
        body_model: the body model predictions are posed with.
        config: :class:`PredictorConfig`.
        body_model_spec: what ``body_model`` was loaded from (name or path).
        checkpoint: where it was loaded from; None for a model in memory (training).
    """

    model: HMR
    body_model: BodyModel
    config: PredictorConfig
    body_model_spec: str
    checkpoint: CheckpointInfo | None = None

    # --- what it is ---------------------------------------------------------------------

    @property
    def representation(self) -> str:
        """The input representation the network takes."""
        return self.config.input.input_representation

    @property
    def img_size(self) -> int:
        """Side of the network's square input in pixels."""
        return self.config.input.img_size

    @property
    def trained_with(self) -> str:
        """The body model the regressor was trained with."""
        return self.config.body_model

    @property
    def family(self) -> str:
        """``"open"`` (the bundled open models) or ``"smpl"`` (SMPL files)."""
        return _model_family(self.body_model)

    def _reference(self) -> Tensor:
        return next(self.model.parameters())

    # --- inputs ---------------------------------------------------------------------------

    def _batched(self, single: Tensor) -> Tensor:
        ref = self._reference()
        return single[None].to(device=ref.device, dtype=ref.dtype)

    def input_from_image(self, image: np.ndarray, center, side: float) -> Tensor:
        """``(1, C, S, S)``: the network input for the person in the square box of ``side``
        px about ``center`` (2,) of an ``(H, W, 3)`` uint8 image, cropped like a dataset
        sample. Raises :class:`~spin.predict.inputs.InputUnavailableError` unless the
        network takes crops of the image (``rgb``)."""
        return self._batched(make_input(self.config.input, center, side, image=image))

    def input_from_keypoints(
        self, keypoints: np.ndarray, convention: str, center, side: float
    ) -> Tensor:
        """``(1, C, S, S)``: the network input made from a person's ``(J, 3)`` 2D keypoints
        (pixels + confidence, in ``convention``) in the square box of ``side`` px about
        ``center`` (2,). Raises :class:`~spin.predict.inputs.InputUnavailableError` unless
        the network takes a keypoint representation."""
        return self._batched(
            make_input(self.config.input, center, side, keypoints=keypoints, convention=convention)
        )

    def input_for_person(
        self,
        center,
        side: float,
        image: np.ndarray | None = None,
        keypoints: np.ndarray | None = None,
        convention: str | None = None,
    ) -> Tensor:
        """``(1, C, S, S)`` from whichever of the image and the keypoints the network's
        representation is made of (:func:`~spin.predict.inputs.make_input`)."""
        return self._batched(
            make_input(self.config.input, center, side, image, keypoints, convention)
        )

    def crop_keypoints(self, keypoints: np.ndarray, convention: str, center, side: float) -> Tensor:
        """``(1, 49, 3)``: a person's ``(J, 3)`` 2D keypoints (pixels + confidence, in
        ``convention``) as SPIN-49 keypoints in normalised coordinates of the crop of ``side``
        px about ``center`` (2,), on the body model's device and dtype: what
        :meth:`refine` fits to."""
        crop = keypoints_in_crop(keypoints, convention, center, side, self.img_size)
        ref = self.body_model.v_template
        return torch.as_tensor(crop, dtype=ref.dtype, device=ref.device)[None]

    def input_from_batch(self, batch: Mapping) -> Tensor:
        """``(B, C, S, S)``: a dataset batch's network inputs (``batch["img"]``, made by
        :meth:`dataset` or a dataset with the same input settings) on the model's device
        and dtype.

        Raises:
            ValueError: the batch holds inputs of another representation.
        """
        images = batch["img"]
        channels = self.config.input.channels
        if images.ndim != 4 or images.shape[1] != channels:
            raise ValueError(
                f"the batch's inputs have shape {tuple(images.shape)}, but the regressor takes "
                f"{self.representation} inputs of shape (B, {channels}, H, W); make the "
                "dataset with Predictor.dataset (or input_representation="
                f"{self.representation})"
            )
        ref = self._reference()
        return images.to(device=ref.device, dtype=ref.dtype)

    def dataset(self, npz_path, image_folder, part_maps=None, **options):
        """A :class:`~spin.data.spin_dataset.SpinDataset` of un-augmented samples whose
        ``img`` is this network's input (its representation, crop side and heatmap sigma):
        keypoint representations come from the file's 2D keypoints, part maps from
        ``part_maps``.

        Args:
            npz_path, image_folder: the SPIN-format file and its image folder.
            part_maps: the folder of part maps, for ``part_segmentation`` networks.
            **options: further :class:`~spin.data.spin_dataset.SpinDataset` arguments
                (``name``, ``allow_outside_images``, ...).

        Raises:
            InputUnavailableError: a ``part_segmentation`` network and no ``part_maps``.
        """
        if self.representation == "part_segmentation" and part_maps is None:
            raise InputUnavailableError(
                f"dataset {npz_path}: the regressor takes part_segmentation inputs (one-hot "
                "body-part maps), which cannot be made from the images (no segmenter): give "
                "the folder of the dataset's part maps (spin-eval --part-maps FOLDER; a "
                "config's dataset entry: part_maps; synthetic data: OUT_DIR/parts)"
            )
        settings = self.config.input
        return SpinDataset(
            npz_path,
            image_folder,
            img_size=settings.img_size,
            is_train=False,
            input_representation=settings.input_representation,
            part_maps=part_maps,
            heatmap_sigma=settings.heatmap_sigma,
            **options,
        )

    # --- predictions ----------------------------------------------------------------------

    def predict(self, inputs: Tensor) -> HMROutput:
        """The regressor's prediction (no gradients) for ``(B, C, S, S)`` inputs: pose,
        betas and the weak-perspective camera of the crop (``cam_t`` in SPIN's crop camera,
        ``config.hmr.focal_length`` / ``crop_size``)."""
        with torch.no_grad():
            return self.model(inputs)

    def mean_prediction(self, batch: int = 1) -> HMROutput:
        """The regressor's starting point (its mean parameters) for ``batch`` samples: the
        reference a trained regressor must beat."""
        with torch.no_grad():
            return self.model.mean_prediction(batch)

    def body(self, prediction: HMROutput) -> BodyOutput:
        """The body a prediction describes, in its crop camera's frame (no gradients)."""
        with torch.no_grad():
            return predict_body(prediction, self.body_model)

    def smplify(self, config: SMPLifyConfig | None = None) -> SMPLify:
        """A fitter for this body model with the run's pose prior and ``config`` (None: the
        run's SMPLify schedule)."""
        ref = self.body_model.v_template
        prior = load_pose_prior(self.config.pose_prior).to(ref.device)
        return SMPLify(self.body_model, prior, config or self.config.smplify)

    def refine(
        self,
        prediction: HMROutput,
        keypoints: Tensor,
        smplify: SMPLify | SMPLifyConfig | None = None,
    ) -> Refinement:
        """SMPLify from ``prediction`` on the crops' keypoints, in the regressor's crop camera.

        Args:
            prediction: the regressor's output for B crops.
            keypoints: ``(B, 49, 3)`` SPIN-49 keypoints in normalised crop coordinates with
                confidences (a dataset batch's ``keypoints``, or :meth:`crop_keypoints` of a
                photo's).
            smplify: a fitter (reuse one over many batches), a schedule, or None for the
                run's schedule.

        Returns:
            :class:`~spin.predict.refine.Refinement`: the fit, or the prediction for samples
            with too few confident keypoints (``valid`` False).
        """
        if not isinstance(smplify, SMPLify):
            smplify = self.smplify(smplify)
        hmr = self.config.hmr
        return refine_in_crop(smplify, prediction, keypoints, hmr.focal_length, hmr.crop_size)


# --- Loading ------------------------------------------------------------------------------


def _spec_family(spec: str) -> str | None:
    """``open``/``smpl`` from a body model name; None for a path (known once loaded)."""
    if spec in BUNDLED_MODELS:
        return OPEN_FAMILY
    if spec == "smpl":
        return SMPL_FAMILY
    return None


def _model_family(model: BodyModel) -> str:
    return OPEN_FAMILY if model.name in BUNDLED_MODELS else SMPL_FAMILY


def _describe_family(family: str) -> str:
    return "the bundled open body model" if family == OPEN_FAMILY else "the SMPL model"


def _mismatch(checkpoint: Path, trained_with: str, asked: str, trained_family: str):
    other = SMPL_FAMILY if trained_family == OPEN_FAMILY else OPEN_FAMILY
    return BodyModelMismatchError(
        f"{checkpoint} was trained with the body model {trained_with!r} "
        f"({_describe_family(trained_family)}), but --body-model {asked} is "
        f"{_describe_family(other)}. The regressor predicts pose and shape parameters of the "
        "model it was trained with; the open model's shape space and joints are not SMPL's, "
        "so posing its predictions with the other model gives meaningless numbers. Drop "
        f"--body-model to evaluate with {trained_with!r} (on SMPL-based benchmarks the "
        "numbers of an open-model checkpoint are then marked indicative), or evaluate a "
        f"checkpoint trained with {other} (body_model={other} in its config)."
    )


def load_predictor(
    checkpoint: str | os.PathLike, body_model: str | None = None, device: str = "cpu"
) -> Predictor:
    """Rebuild a checkpoint's regressor, body model and input rules from the config saved in
    it, whatever its input representation. The caller's torch RNG is left as it was.

    Args:
        checkpoint: a ``checkpoint.pt`` written by ``spin-train``.
        body_model: a body model name or path to pose predictions with instead of the
            checkpoint's (e.g. where the SMPL files are on this machine); must be the same
            kind of model (open or SMPL) as the checkpoint's.
        device: torch device.

    Raises:
        BodyModelMismatchError: ``body_model`` is not the kind the checkpoint was trained
            with, or the weights do not fit the body model.
        FileNotFoundError: the checkpoint or the body model files are missing.
        ValueError: the checkpoint cannot be read by this version, or its weights are not
            finite.
    """
    checkpoint = Path(checkpoint)
    contents = read_checkpoint(checkpoint)
    try:
        config = predictor_config(contents.config)
    except ConfigError as error:
        raise ValueError(
            f"{checkpoint}: its saved config does not match this version of spin-hmr: {error}"
        ) from None
    trained_with = config.body_model
    trained_family = _spec_family(trained_with) or SMPL_FAMILY
    spec = trained_with if body_model is None else str(body_model)
    if body_model is not None and _spec_family(spec) not in (None, trained_family):
        raise _mismatch(checkpoint, trained_with, spec, trained_family)
    try:
        body = load_body_model(spec)
    except FileNotFoundError as error:
        hint = (
            " The checkpoint was trained with it; pass --body-model with the path to the SMPL "
            "files on this machine, or set " + SMPL_DIR_ENV + "."
            if body_model is None
            else ""
        )
        raise FileNotFoundError(f"body model {spec!r}: {error}{hint}") from None
    if body_model is not None and _model_family(body) != trained_family:
        raise _mismatch(checkpoint, trained_with, spec, trained_family)
    representation = config.input.input_representation
    if config.hmr.backbone.in_channels != config.input.channels:
        raise ValueError(
            f"{checkpoint}: the regressor takes {config.hmr.backbone.in_channels} input "
            f"channels, but its input representation {representation!r} has "
            f"{config.input.channels}; the saved config is inconsistent"
        )
    # The checkpoint holds every weight and the mean parameters: no files for those.
    hmr_config = replace(
        config.hmr, backbone=replace(config.hmr.backbone, weights=None), mean_params=None
    )
    with torch.random.fork_rng(devices=[]):  # the caller's random stream stays as it was
        model = build_hmr(hmr_config, body)
    try:
        model.load_state_dict(contents.model)
    except RuntimeError as error:
        raise BodyModelMismatchError(
            f"{checkpoint}: its weights do not fit a regressor for body model {spec!r} "
            f"({body.num_betas} betas): {error}"
        ) from None
    bad = [name for name, value in model.state_dict().items() if not torch.isfinite(value).all()]
    if bad:
        raise ValueError(
            f"{checkpoint}: {len(bad)} weight tensor(s) hold NaN or inf (first: {bad[0]}); the "
            "run that wrote it diverged. Use an earlier checkpoint"
        )
    device = torch.device(device)
    return Predictor(
        model=model.to(device).eval(),
        body_model=body.to(device),
        config=config,
        body_model_spec=spec,
        checkpoint=CheckpointInfo(checkpoint, contents.step, contents.config),
    )
