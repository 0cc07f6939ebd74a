"""Configuration of a training run: one dataclass per component, defaults from SPIN."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

from spin.data.augment import AugmentationConfig
from spin.data.representations import HEATMAP_SIGMA, input_channels
from spin.fitting.fits_cache import FitsCacheConfig
from spin.fitting.smplify import SMPLifyConfig
from spin.regressor.backbones import RGB_CHANNELS
from spin.regressor.hmr import HMRConfig
from spin.train.adversarial import AdversarialConfig

__all__ = [
    "AdversarialConfig",
    "DataConfig",
    "DatasetEntry",
    "EndlessDataConfig",
    "LossConfig",
    "SyntheticDataConfig",
    "TrainConfig",
    "WandbConfig",
    "resolve_input_channels",
]


@dataclass(frozen=True)
class DatasetEntry:
    """A SPIN-format dataset: ``npz`` file, image folder, sampling ratio in the mix,
    optionally static fits (``spin-fit-dataset`` output) to start its fits cache from, and
    optionally the fraction of its samples that keep their 3D labels in training (the others
    are treated as 2D-only; ``None`` keeps the file's labels), and the folder of its part
    maps, needed only with ``data.input_representation=part_segmentation``
    (:func:`spin.data.representations.part_map_path` gives the layout; the synthetic data's
    is set automatically). ``allow_outside_images`` accepts ``imgname`` entries that lead
    outside ``images`` (refused by default). ``keypoints`` says whose 2D keypoints the
    samples carry: ``file`` (the file's), or ``mediapipe`` (MediaPipe run once on the images,
    cached next to the file, only the samples where it found someone:
    :func:`spin.data.detected.detected_keypoints_file`), so that a keypoint network learns
    the detector's errors as it will meet them on photos."""

    name: str
    npz: str
    images: str
    ratio: float = 1.0
    static_fits: str | None = None
    fraction_3d: float | None = None
    part_maps: str | None = None
    allow_outside_images: bool = False
    keypoints: Literal["file", "mediapipe"] = "file"


@dataclass(frozen=True)
class SyntheticDataConfig:
    """The embedded default data: generated with ``spin-make-synthetic`` when missing.

    The train split is generated with 3D labels on every sample; training keeps them on
    ``fraction_3d`` of the samples (the rest are 2D-only, like in-the-wild data), so one
    dataset serves every fraction.
    """

    out_dir: str = "data/synthetic"
    num_train: int = 2000
    num_test: int = 200
    image_size: int = 128
    fraction_3d: float = 0.1
    body_model: str = "open"
    seed: int = 0


@dataclass(frozen=True)
class EndlessDataConfig:
    """Training samples made on the fly from sampled bodies, never stored
    (:class:`spin.data.endless.EndlessKeypoints`); only for the keypoint representations.
    People and cameras follow ``data.synthetic`` (image size, body model); the rendered test
    split still validates.

    ``length`` distinct samples (item ``k`` of the run is sample ``k mod length``: with
    ``length >= num_steps * batch_size`` no sample repeats); ``fraction_3d`` of them keep
    their 3D labels; ``ratio`` is the endless set's weight beside ``data.train``'s entries;
    ``outlier_prob`` and ``swap_prob`` add a real detector's gross errors and left/right swaps
    to the keypoints (``SyntheticConfig.keypoint_outlier_prob`` / ``keypoint_swap_prob``).
    A fits cache (``in_loop``) holds one record per sample, so there ``length`` is limited
    to :data:`MAX_CACHED_ENDLESS`.
    """

    length: int = 1_000_000
    fraction_3d: float = 1.0
    seed: int = 1
    ratio: float = 1.0
    chunk: int = 32
    outlier_prob: float = 0.0
    swap_prob: float = 0.0

    def __post_init__(self) -> None:
        if self.length < 1 or self.chunk < 1:
            raise ValueError(
                f"data.endless.length and chunk must be >= 1, got {self.length}, {self.chunk}"
            )
        if not 0.0 <= self.fraction_3d <= 1.0 or self.ratio < 0:
            raise ValueError(
                "data.endless.fraction_3d must be in [0, 1] and ratio >= 0, got "
                f"{self.fraction_3d} and {self.ratio}"
            )
        for name in ("outlier_prob", "swap_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(
                    f"data.endless.{name} must be a probability in [0, 1], got "
                    f"{getattr(self, name)}"
                )


MAX_CACHED_ENDLESS = 200_000
"""Largest ``data.endless.length`` a fits cache accepts (~70 MB of records)."""

MIN_IMG_SIZE = 16
"""Smallest crop side the network accepts (the backbones halve it 4-5 times)."""


@dataclass(frozen=True)
class DataConfig:
    """Training mix and validation split. With ``synthetic`` set and ``train`` empty, the
    synthetic train/test splits are used (and generated if missing).

    ``input_representation`` is what the network sees, for training and validation alike:
    ``rgb`` (the crop), ``part_segmentation`` (one-hot part map, 25 channels) or
    ``keypoint_heatmaps`` (BODY_25 Gaussian heatmaps, 25 channels, std ``heatmap_sigma``
    times the crop side); see :mod:`spin.data.representations`. The backbone's input
    channels follow it (:func:`resolve_input_channels`).
    """

    train: tuple[DatasetEntry, ...] = ()
    val: DatasetEntry | None = None
    synthetic: SyntheticDataConfig | None = field(default_factory=SyntheticDataConfig)
    endless: EndlessDataConfig | None = None
    img_size: int = 224
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    num_workers: int = 0
    val_samples: int = 200
    input_representation: Literal["rgb", "part_segmentation", "keypoint_heatmaps", "keypoints"] = (
        "rgb"
    )
    heatmap_sigma: float = HEATMAP_SIGMA

    def __post_init__(self) -> None:
        if self.img_size < MIN_IMG_SIZE:
            raise ValueError(f"data.img_size must be >= {MIN_IMG_SIZE} pixels, got {self.img_size}")
        if self.val_samples < 0 or self.num_workers < 0:
            raise ValueError(
                f"data.val_samples and data.num_workers must be >= 0, got {self.val_samples} "
                f"and {self.num_workers}"
            )
        if self.endless is not None:
            if self.input_representation not in ("keypoints", "keypoint_heatmaps"):
                raise ValueError(
                    "data.endless makes keypoint samples without images: it needs "
                    "data.input_representation=keypoints or keypoint_heatmaps, got "
                    f"{self.input_representation}"
                )
            if self.synthetic is None:
                raise ValueError(
                    "data.endless samples people as data.synthetic does (and validates on its "
                    "test split): data.synthetic must be set"
                )


@dataclass(frozen=True)
class LossConfig:
    """SPIN's loss weights (REFERENCE.md); ``scale`` multiplies everything (SPIN: 60)."""

    keypoints_2d: float = 5.0
    keypoints_3d: float = 5.0
    pose: float = 1.0
    betas: float = 0.001
    camera: float = 1.0
    scale: float = 60.0
    openpose_weight: float = 0.0
    gt_weight: float = 1.0


@dataclass(frozen=True)
class WandbConfig:
    enabled: bool = True
    project: str = "spin-hmr"
    mode: Literal["offline", "online", "disabled"] = "offline"
    image_every: int = 100


@dataclass(frozen=True)
class TrainConfig:
    """A training run.

    ``mode``: ``regression_only`` (no fits: 2D and available 3D/SMPL ground truth),
    ``static_fits`` (fits cache read, never updated) or ``in_loop`` (SPIN).
    ``adversarial``: HMR's adversarial pose/shape prior, off by default.

    Optimisation (Adam): ``lr`` ramps up linearly over ``warmup_steps`` and, with
    ``lr_schedule=cosine`` (the default; SPIN's is ``constant``), decays along a half cosine
    to ``lr_final_fraction * lr`` at ``num_steps``, so the model a run ends with is an
    annealed iterate rather than whichever step an oscillating optimiser landed on. The
    gradient's global norm is clipped to ``grad_clip_norm`` (None: never): healthy steps
    of the CPU configs have norms of ~100-700 (loss scale 60), so the clip only evens out
    their size, which Adam ignores, and stops a single step with a norm of 1e6 from
    poisoning Adam's moments (what made runs diverge; see the README's "Training stability").

    ``dtype``: float64 runs the whole step (network, body model, SMPLify) in double
    precision; slow, for tests and debugging that compare two computations exactly.
    """

    name: str = "spin"
    mode: Literal["regression_only", "static_fits", "in_loop"] = "in_loop"
    run_dir: str = "runs"
    body_model: str = "open"
    pose_prior: str = "open"
    hmr: HMRConfig = field(default_factory=HMRConfig)
    smplify: SMPLifyConfig = field(default_factory=SMPLifyConfig)
    fits: FitsCacheConfig = field(default_factory=FitsCacheConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    batch_size: int = 64
    lr: float = 5e-5
    warmup_steps: int = 0
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    lr_final_fraction: float = 0.0
    grad_clip_norm: float | None = 100.0
    num_steps: int = 1000
    log_every: int = 10
    val_every: int = 500
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    dtype: Literal["float32", "float64"] = "float32"

    def __post_init__(self) -> None:
        if not self.name or self.name in (".", "..") or any(c in self.name for c in "/\\\0"):
            raise ValueError(
                f"name must be a plain folder name (no '/', not empty, '.' or '..'), got "
                f"{self.name!r}; the run goes to run_dir/name"
            )
        for key in ("batch_size", "num_steps", "log_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("val_every", "checkpoint_every", "threads"):
            if getattr(self, key) < 0:
                raise ValueError(
                    f"{key} must be >= 0 (0: never / default), got {getattr(self, key)}"
                )
        if not (math.isfinite(self.lr) and self.lr >= 0.0):
            raise ValueError(f"lr must be a finite number >= 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.lr_final_fraction <= 1.0:
            raise ValueError(f"lr_final_fraction must be in [0, 1], got {self.lr_final_fraction}")
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0.0:
            raise ValueError(f"grad_clip_norm must be positive or null, got {self.grad_clip_norm}")
        endless = self.data.endless
        if endless is not None and self.mode == "static_fits":
            raise ValueError(
                "mode=static_fits reads fits made beforehand over a dataset on disk; endless "
                "samples are made on the fly (use regression_only or in_loop)"
            )
        if endless is not None and self.mode == "in_loop" and endless.length > MAX_CACHED_ENDLESS:
            raise ValueError(
                f"mode=in_loop keeps a fit per sample: data.endless.length must be <= "
                f"{MAX_CACHED_ENDLESS}, got {endless.length}"
            )


def resolve_input_channels(config: TrainConfig) -> TrainConfig:
    """The config with the backbone's input channels set by ``data.input_representation``.

    An ``hmr.backbone.in_channels`` left at 3 (the default) becomes the representation's
    channel count, so ``data.input_representation=part_segmentation`` alone is enough; the
    resolved value is what gets saved with checkpoints. Raises ``ValueError`` for an
    explicit count that does not match.
    """
    representation = config.data.input_representation
    wanted = input_channels(representation)
    backbone = config.hmr.backbone
    if backbone.in_channels == wanted:
        return config
    if representation == "rgb" or backbone.in_channels != RGB_CHANNELS:
        raise ValueError(
            f"data.input_representation={representation} gives {wanted} input channels but "
            f"hmr.backbone.in_channels={backbone.in_channels}; leave in_channels at its "
            "default (it is set from the representation) or make them agree"
        )
    hmr = replace(config.hmr, backbone=replace(backbone, in_channels=wanted))
    return replace(config, hmr=hmr)
