"""The SPIN training loop: regressor, SMPLify in the loop, persistent fits cache.

A run lives in ``run_dir/name``: ``config.json``, ``checkpoint.pt`` and ``fits_cache.h5``
(committed together, atomically, every ``checkpoint_every`` steps and at the end; see
:mod:`spin.train.checkpoint`),
``metrics.jsonl`` (one line per log), and wandb's offline run under ``wandb/``.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from spin.body import load_body_model
from spin.body.joint_conventions import H36M_TO_LSP14
from spin.body.sparse import SparseJointModel
from spin.config import config_to_dict
from spin.data.detected import detected_keypoints_file
from spin.data.endless import EndlessKeypoints
from spin.data.mixed_dataset import MixedDataset
from spin.data.spin_dataset import SpinDataset
from spin.eval.metrics import (
    M_TO_MM,
    center_on,
    keypoint_error,
    mpjpe,
    pa_mpjpe,
    rotation_error_deg,
)
from spin.fitting.fits_cache import FitsCache
from spin.fitting.priors import load_pose_prior
from spin.fitting.smplify import SMPLify
from spin.geometry import crop_intrinsics, perspective_projection, rotvec_to_rotmat
from spin.predict import Predictor, predictor_config
from spin.regressor.hmr import build_hmr
from spin.train import step as steps
from spin.train.adversarial import add_adversarial_loss, build_adversarial_prior
from spin.train.checkpoint import (
    CACHE_NAME,
    CHECKPOINT_NAME,
    CONFIG_NAME,
    PENDING_CACHE_NAME,
    load_checkpoint,
    save_checkpoint,
    settle_fits_cache,
)
from spin.train.config import DatasetEntry, TrainConfig, resolve_input_channels
from spin.train.distributed import (
    RankBatches,
    barrier,
    init_distributed,
    local_batch_size,
    main_first,
    mean_over_ranks,
    update_cache_everywhere,
    wrap_model,
)
from spin.train.run_logger import NullLogger, RunLogger

__all__ = ["RunFolderError", "Trainer", "ensure_synthetic_data", "prepare_run_folder"]

#: Files that make a folder a run (a new run refuses to start over them).
RUN_FILES = (
    CONFIG_NAME,
    CHECKPOINT_NAME,
    CACHE_NAME,
    PENDING_CACHE_NAME,
    "metrics.jsonl",
    "final_metrics.json",
)
#: Settings a resumed run must share with the checkpoint: they define its model and data.
RESUME_MUST_MATCH = (
    "mode",
    "body_model",
    "pose_prior",
    "hmr.backbone.name",
    "hmr.backbone.in_channels",
    "hmr.iterations",
    "hmr.hidden",
    "hmr.hidden_relu",
    "hmr.focal_length",
    "hmr.crop_size",
    "data.img_size",
    "data.input_representation",
)


class RunFolderError(ValueError):
    """The run folder does not fit the request: a run exists and neither ``--resume`` nor
    ``--overwrite`` was given, or the checkpoint being resumed belongs to another setup."""


def prepare_run_folder(run_dir: Path, resume: bool, overwrite: bool, is_main: bool = True) -> None:
    """Refuse to start a new run over an existing one unless ``overwrite`` (which deletes
    the old folder); with ``resume`` and no checkpoint, say that a new run starts."""
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite exclude each other: continue or replace?")
    if resume:
        if is_main and not (run_dir / CHECKPOINT_NAME).exists():
            print(f"no checkpoint in {run_dir}: nothing to resume, starting a new run")
        return
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if not existing:
        return
    if not overwrite:
        raise RunFolderError(
            f"{run_dir} already holds a run ({', '.join(existing)}); pass --resume to continue "
            "it, --overwrite to replace it, or choose another name=..."
        )
    if is_main:
        print(f"--overwrite: deleting the run in {run_dir}")
        shutil.rmtree(run_dir)


def _differences(stored: dict, current: dict, keys: tuple[str, ...]) -> list[str]:
    """``key: stored -> current`` for each dotted key whose values differ."""

    def get(tree: dict, dotted: str):
        for part in dotted.split("."):
            tree = tree.get(part) if isinstance(tree, dict) else None
        return tree

    return [
        f"{key}: {get(stored, key)!r} in the checkpoint, {get(current, key)!r} now"
        for key in keys
        if get(stored, key) != get(current, key)
    ]


def endless_dataset(config: TrainConfig) -> EndlessKeypoints:
    """The run's endless people (``data.endless``), as training draws them."""
    endless = config.data.endless
    return EndlessKeypoints(
        replace(
            synthetic_config(config),
            keypoint_outlier_prob=endless.outlier_prob,
            keypoint_swap_prob=endless.swap_prob,
        ),
        endless.length,
        fraction_3d=endless.fraction_3d,
        img_size=config.data.img_size,
        input_representation=config.data.input_representation,
        heatmap_sigma=config.data.heatmap_sigma,
        seed=endless.seed,
        chunk=endless.chunk,
    )


def synthetic_config(config: TrainConfig):
    """The :class:`~spin.data.synthetic.SyntheticConfig` of ``data.synthetic`` (all of its
    samples labelled; training hides labels itself)."""
    from spin.data.synthetic import SyntheticConfig

    synthetic = config.data.synthetic
    return SyntheticConfig(
        image_size=(synthetic.image_size, synthetic.image_size),
        body_model=synthetic.body_model,
        seed=synthetic.seed,
        fraction_3d=1.0,
    )


def ensure_synthetic_data(
    config: TrainConfig, splits: tuple[str, ...] = ("train", "test")
) -> tuple[list[DatasetEntry], DatasetEntry]:
    """The synthetic train/test splits, generated with the data config when missing (only
    the ``splits`` asked for; without "train" the list of train entries is empty)."""
    synthetic = config.data.synthetic
    out_dir = Path(synthetic.out_dir)
    from spin.data.synthetic import generate_synthetic

    base = synthetic_config(config)
    for split, num in {"train": synthetic.num_train, "test": synthetic.num_test}.items():
        if split in splits and not (out_dir / f"{split}.npz").exists():
            print(f"generating {num} synthetic {split} samples in {out_dir} (first run only)")
            generate_synthetic(base, num, out_dir, split=split)
    parts = str(out_dir / "parts")  # the renderer's exact part maps
    train = DatasetEntry(
        "synthetic",
        str(out_dir / "train.npz"),
        str(out_dir),
        fraction_3d=synthetic.fraction_3d,
        part_maps=parts,
    )
    test = DatasetEntry("synthetic_test", str(out_dir / "test.npz"), str(out_dir), part_maps=parts)
    return ([train] if "train" in splits else []), test


def synthetic_splits_named(config: TrainConfig, entries: list[DatasetEntry]) -> tuple[str, ...]:
    """The synthetic splits that ``entries`` name by path (``<data.synthetic.out_dir>/
    <split>.npz``) and that do not exist yet: a config may train on the embedded data's
    files like on any dataset, and they are generated on first use."""
    synthetic = config.data.synthetic
    if synthetic is None:
        return ()
    named = {Path(entry.npz).resolve() for entry in entries}
    return tuple(
        split
        for split in ("train", "test")
        if (path := Path(synthetic.out_dir, f"{split}.npz")).resolve() in named
        and not path.exists()
    )


def _collate(items: list[dict]) -> dict:
    batch = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(values[0], (int, float, np.integer, np.floating)):
            batch[key] = torch.as_tensor(values)
        else:
            batch[key] = values
    return batch


def _to(batch: dict, device: torch.device, dtype: torch.dtype) -> dict:
    """The batch on ``device``, its floating tensors in ``dtype``."""
    return {
        k: (v.to(device, dtype) if v.is_floating_point() else v.to(device))
        if isinstance(v, torch.Tensor)
        else v
        for k, v in batch.items()
    }


def format_validation(step: int, val: dict) -> str:
    """One console line of validation results, with the mean-pose reference."""
    return (
        f"val step {step}: MPJPE {val['val/mpjpe_mm']:.1f} mm, PA-MPJPE "
        f"{val['val/pa_mpjpe_mm']:.1f} mm (mean pose {val['val/mean_pose_pa_mpjpe_mm']:.1f}), "
        f"rotation {val['val/rotation_deg']:.1f} deg, 2D {val['val/keypoints_2d_px']:.1f} px"
    )


def learning_rate(config: TrainConfig, step: int) -> float:
    """The rate of optimiser step ``step`` (0-based): ``lr``, ramped up linearly over the
    first ``warmup_steps`` steps and, with ``lr_schedule=cosine``, decayed along a half
    cosine to ``lr_final_fraction * lr`` at ``num_steps``. A function of the step alone, so
    a resumed run gets the same rates."""
    rate = config.lr
    if config.warmup_steps:
        rate *= min(1.0, (step + 1) / config.warmup_steps)
    if config.lr_schedule == "cosine":
        progress = min(1.0, step / max(1, config.num_steps - 1))
        floor = config.lr_final_fraction
        rate *= floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return rate


class Trainer:
    """Builds every component from a :class:`TrainConfig` and runs the loop.

    Args:
        config: the run's configuration.
        resume: continue from ``run_dir/name/checkpoint.pt`` when it exists (a new run
            starts, with a notice, when it does not).
        progress: show a tqdm bar.
        overwrite: delete an existing run in ``run_dir/name`` first; without it (or
            ``resume``) an existing run is an error (:class:`RunFolderError`).
    """

    def __init__(
        self,
        config: TrainConfig,
        resume: bool = False,
        progress: bool = True,
        overwrite: bool = False,
    ):
        # The backbone's input channels follow data.input_representation.
        self.config = config = resolve_input_channels(config)
        self.progress = progress
        self.run_dir = Path(config.run_dir) / config.name
        if config.threads:
            torch.set_num_threads(config.threads)
        # Subnormal floats (e.g. far tails of heatmaps, tiny activations) make CPU
        # convolutions ~20x slower; flushing them to zero changes nothing measurable.
        torch.set_flush_denormal(True)
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        # One process, or one rank of a torchrun launch (spin.train.distributed).
        self.distributed = init_distributed(config.device)
        local_batch_size(config.batch_size, self.distributed.world_size)  # divisible, or fail now
        self.device = self.distributed.device
        if not overwrite or self.distributed.is_main:  # rank 0 alone deletes
            prepare_run_folder(self.run_dir, resume, overwrite, self.distributed.is_main)
        barrier(self.distributed)
        self.dtype = getattr(torch, config.dtype)

        self.body_model = load_body_model(config.body_model).to(self.device, self.dtype)
        self.model = build_hmr(config.hmr, self.body_model).to(self.device, self.dtype)
        # The losses need the joints alone: posing the mesh (13k vertices for the open
        # model) would cost more than a small backbone's whole step.
        self.joint_model = SparseJointModel(self.body_model)
        # The model as spin-eval and spin-demo will see it once saved: validation goes
        # through the same prediction API (inputs, prediction) as they do.
        self.predictor = Predictor(
            self.model,
            self.body_model,
            predictor_config(config_to_dict(config)),
            body_model_spec=config.body_model,
        )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.adversarial = None  # HMR's discriminators, their optimiser and pose corpus
        if config.adversarial.enabled:
            self.adversarial = build_adversarial_prior(
                config.adversarial, self.body_model.num_betas, config.seed, self.device
            )
            self.adversarial.discriminator.to(self.dtype)
            self.adversarial.corpus = self.adversarial.corpus.to(self.dtype)

        train_entries, val_entry = list(config.data.train), config.data.val
        endless = config.data.endless
        if not train_entries and (endless is None or val_entry is None):
            if config.data.synthetic is None:
                raise ValueError("data.train is empty and data.synthetic is null: no data")
            # Endless samples need the rendered test split alone (validation).
            splits = ("test",) if endless is not None else ("train", "test")
            with main_first(self.distributed):  # rank 0 generates missing data
                train_entries, synthetic_val = ensure_synthetic_data(config, splits)
            val_entry = val_entry or synthetic_val
        with main_first(self.distributed):  # rank 0 makes missing data, runs the detector
            named = train_entries + ([val_entry] if val_entry is not None else [])
            missing = synthetic_splits_named(config, named)
            if missing:
                ensure_synthetic_data(config, missing)
            train_entries = [self._with_keypoints(e) for e in train_entries]
            val_entry = self._with_keypoints(val_entry) if val_entry is not None else None
        self.train_sets = [
            SpinDataset(
                e.npz,
                e.images,
                name=e.name,
                img_size=config.data.img_size,
                augmentation=config.data.augmentation,
                is_train=True,
                seed=config.seed,
                input_representation=config.data.input_representation,
                part_maps=e.part_maps,
                heatmap_sigma=config.data.heatmap_sigma,
                allow_outside_images=e.allow_outside_images,
            )
            for e in train_entries
        ]
        for dataset, entry in zip(self.train_sets, train_entries, strict=True):
            if entry.fraction_3d is not None:
                dataset.keep_3d_labels(entry.fraction_3d, seed=config.seed)
        ratios = [e.ratio for e in train_entries]
        if endless is not None:
            self.train_sets.append(endless_dataset(config))
            ratios.append(endless.ratio)
        self.train_data = MixedDataset(
            self.train_sets,
            ratios,
            length=config.num_steps * config.batch_size,
            seed=config.seed,
        )
        self.val_data = None
        if val_entry is not None:
            self.val_data = self.predictor.dataset(
                val_entry.npz,
                val_entry.images,
                part_maps=val_entry.part_maps,
                name=val_entry.name,
                allow_outside_images=val_entry.allow_outside_images,
            )

        self.smplify = None
        self.cache = None
        if config.mode != "regression_only":
            prior = load_pose_prior(config.pose_prior).to(self.device, self.dtype)
            self.smplify = SMPLify(self.body_model, prior, config.smplify)
            with main_first(self.distributed):  # rank 0 makes missing static fits
                self.cache = self._initial_cache(train_entries)

        self.step = 0
        # Rank 0 first: it settles an interrupted cache commit before the others read.
        with main_first(self.distributed):
            if resume and (self.run_dir / CHECKPOINT_NAME).exists():
                path = self.run_dir / CHECKPOINT_NAME

                def same_setup(stored: dict) -> None:
                    mismatch = _differences(stored, config_to_dict(config), RESUME_MUST_MATCH)
                    if mismatch:
                        raise RunFolderError(
                            f"{path} was trained with other settings ({'; '.join(mismatch)}); "
                            f"resume with the run's own config ({self.run_dir / CONFIG_NAME}) or "
                            "start a new run (another name=, or --overwrite)"
                        )

                state = load_checkpoint(path, self.model, self.optimizer, same_setup)
                self.step = state["step"]
                if self.adversarial is not None:
                    if "adversarial" in state["modules"]:
                        self.adversarial.load_state_dict(state["modules"]["adversarial"])
                    else:
                        print("warning: the checkpoint has no discriminator; starting a new one")
                cache_path = settle_fits_cache(self.run_dir, self.step)
                if self.cache is not None and cache_path is None:
                    raise RunFolderError(
                        f"{self.run_dir / CACHE_NAME} is missing: the checkpoint of step "
                        f"{self.step} cannot be resumed without its fits cache; restore the file, "
                        "or start the run again (--overwrite)"
                    )
                if self.cache is not None and cache_path is not None:
                    self.cache = FitsCache.load(cache_path)
                    if self.cache.step != self.step:
                        print(
                            f"warning: {cache_path} holds the fits of step {self.cache.step}, the "
                            f"checkpoint is at step {self.step}: the resumed run is not exact"
                        )
                print(f"resumed {self.run_dir} at step {self.step}")
        if self.distributed.is_main:
            self.logger = RunLogger(self.run_dir, config_to_dict(config), config.wandb, resume)
        else:
            self.logger = NullLogger()
        # What the training forward runs: DDP over self.model with several processes.
        self.train_model = wrap_model(self.model, self.distributed)
        if self.adversarial is not None:
            self.adversarial.train_discriminator = wrap_model(
                self.adversarial.discriminator, self.distributed
            )

    def _with_keypoints(self, entry: DatasetEntry) -> DatasetEntry:
        """The entry as trained on: with ``keypoints: mediapipe``, its detected copy."""
        if entry.keypoints == "file":
            return entry
        npz = detected_keypoints_file(
            entry.npz, entry.images, Path(entry.npz).parent, self.progress, found_only=True
        )
        print(f"{entry.name}: MediaPipe's keypoints from {npz}")
        return replace(entry, npz=str(npz), keypoints="file")

    def _initial_cache(self, entries: list[DatasetEntry]) -> FitsCache:
        sizes = {dataset.name: len(dataset) for dataset in self.train_sets}
        static = {e.name: e.static_fits for e in entries if e.static_fits}
        if self.config.mode == "static_fits":
            for entry in entries:
                if entry.name not in static:
                    static[entry.name] = str(self._make_static_fits(entry))
        if static:
            return FitsCache.from_static_fits(static, sizes, self.config.fits)
        return FitsCache.empty(sizes, self.config.fits)

    def _make_static_fits(self, entry: DatasetEntry) -> Path:
        """SPIN's static fits for a dataset without any: SMPLify from the mean pose over the
        whole dataset (``spin-fit-dataset``), computed once next to the dataset."""
        from spin.fitting.fit_dataset import FitDatasetConfig, fit_dataset

        path = Path(entry.npz).with_name(
            f"{Path(entry.npz).stem}_fits_{self.config.smplify.mode}.h5"
        )
        if not path.exists():
            print(f"fitting {entry.npz} once for static fits -> {path}")
            fit_config = FitDatasetConfig(
                mode=self.config.smplify.mode,
                stages=self.config.smplify.stages,
                body_model=self.config.body_model,
                prior=self.config.pose_prior,
                valid_threshold=self.config.fits.valid_threshold,
                seed=self.config.seed,
                device=self.config.device,
            )
            fit_dataset(entry.npz, path, fit_config, progress=self.progress)
        return path

    # ------------------------------------------------------------------ one step

    def train_step(self, batch: dict) -> dict:
        """One optimiser step on a batch; returns scalars for logging."""
        config = self.config
        self.model.train()
        batch = _to(batch, self.device, self.dtype)
        timings = {}
        start = time.perf_counter()
        prediction, body = steps.regress(self.train_model, batch["img"], self.joint_model)
        timings["time/forward"] = time.perf_counter() - start

        fits = None
        stats = {}
        result = None
        if self.cache is not None:
            start = time.perf_counter()
            keypoints_px = steps.crop_pixels(batch["keypoints"])
            intrinsics = crop_intrinsics(keypoints_px.shape[:1], like=keypoints_px)
            names = list(batch["dataset_name"])
            view = (batch["sample_index"], batch["rot_angle"], batch["is_flipped"])
            fits, _, cached_loss = steps.fetch_cached_fits(
                self.cache, batch, self.smplify, keypoints_px, intrinsics
            )
            timings["time/cache_fetch"] = time.perf_counter() - start
            if config.mode == "in_loop":
                start = time.perf_counter()
                result = steps.refine_with_smplify(
                    self.smplify, prediction, keypoints_px, intrinsics
                )
                timings["time/smplify"] = time.perf_counter() - start
                start = time.perf_counter()
                updated = update_cache_everywhere(  # gathered over ranks
                    self.distributed,
                    self.cache,
                    names,
                    *view,
                    result.pose_rotvecs,
                    result.betas,
                    result.reprojection_loss,
                    cached_loss,
                    step=self.step,
                )
                stats["fits/updated_fraction"] = float(updated.float().mean())
                # The best of the cached and the new fit, scored on this batch's keypoints.
                best_loss = torch.where(updated, result.reprojection_loss, cached_loss)
                fits = self.cache.fetch(names, *view, like=keypoints_px)
                timings["time/cache_update"] = time.perf_counter() - start
            else:
                best_loss = cached_loss
            valid = fits.has_fit & (best_loss < config.fits.valid_threshold)
            fits = replace(fits, loss=best_loss, valid=valid)
            stats["fits/batch_valid_fraction"] = float(fits.valid.float().mean())
        supervision = steps.select_supervision(batch, fits, config.fits)
        start = time.perf_counter()
        losses = steps.compute_losses(prediction, body, batch, supervision, config.loss)
        if self.adversarial is not None:
            adversarial = self.adversarial.encoder_loss(prediction.pose_rotmats, prediction.betas)
            weight, scale = config.adversarial.weight, config.loss.scale
            add_adversarial_loss(losses, adversarial, weight, scale)
        self.optimizer.zero_grad()
        losses["total"].backward()
        stats["grad_norm"] = self._clip_gradients()
        self._set_learning_rate()
        self.optimizer.step()
        if self.adversarial is not None:  # then one discriminator step on the prediction
            losses["discriminator"] = self.adversarial.step(
                prediction.pose_rotmats, prediction.betas
            )
        timings["time/backward"] = time.perf_counter() - start
        scalars = {f"loss/{k}": float(v.detach()) for k, v in losses.items()}
        scalars["supervision/fraction"] = float(supervision.valid.float().mean())
        scalars.update(stats)
        scalars.update(timings)
        self._last = (batch, prediction, result)
        return scalars

    def _clip_gradients(self) -> float:
        """Clip the regressor's gradient to ``grad_clip_norm`` (global L2 norm); returns the
        norm before clipping (logged as ``grad_norm``)."""
        limit = self.config.grad_clip_norm
        parameters = [p for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(
            parameters, math.inf if limit is None else limit, foreach=True
        )
        return float(norm)

    def _set_learning_rate(self) -> None:
        """The optimiser's rate for this step (:func:`learning_rate`)."""
        rate = learning_rate(self.config, self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = rate

    # ------------------------------------------------------------------ validation

    @torch.no_grad()
    def validate(self) -> dict:
        """Held-out metrics (inputs and predictions through :attr:`predictor`, as
        ``spin-eval`` makes them) on the samples with SMPL ground truth: MPJPE and PA-MPJPE (mm,
        H36M regressor, 14 LSP joints), the mean angle of the 23 body-joint rotations
        (degrees), the 2D error of the 24 ground-truth keypoints (pixels of the 224 crop),
        and the PA-MPJPE of the mean-pose reference on the same samples."""
        if self.val_data is None or not self.distributed.is_main:  # rank 0 validates
            return {}
        self.model.eval()
        count = min(len(self.val_data), self.config.data.val_samples)
        loader = DataLoader(
            torch.utils.data.Subset(self.val_data, range(count)),
            batch_size=self.config.batch_size,
            collate_fn=_collate,
            generator=torch.Generator().manual_seed(self.config.seed),
        )
        errors: dict[str, list] = {"mpjpe_mm": [], "pa_mpjpe_mm": [], "rotation_deg": []}
        errors["keypoints_2d_px"] = []
        errors["mean_pose_pa_mpjpe_mm"] = []
        index = list(H36M_TO_LSP14)
        # The reference a regressor must beat: the mean parameters, the same for every sample.
        mean = self.predictor.mean_prediction(1)
        mean_body = self.body_model(pose_rotmats=mean.pose_rotmats, betas=mean.betas)
        mean_joints = center_on(mean_body.joints_h36m, 0)[:, index]
        for batch in loader:
            batch = _to(batch, self.device, self.dtype)
            has_smpl = batch["has_smpl"] > 0.5
            if not has_smpl.any():
                continue
            prediction = self.predictor.predict(self.predictor.input_from_batch(batch))
            body = self.predictor.body(prediction)
            truth = self.body_model(pose_rotvecs=batch["pose"], betas=batch["betas"])
            pred = center_on(body.joints_h36m, 0)[has_smpl][:, index]
            gt = center_on(truth.joints_h36m, 0)[has_smpl][:, index]
            errors["mpjpe_mm"].append(mpjpe(pred, gt) * M_TO_MM)
            errors["pa_mpjpe_mm"].append(pa_mpjpe(pred, gt) * M_TO_MM)
            reference = mean_joints.expand(len(gt), -1, -1)
            errors["mean_pose_pa_mpjpe_mm"].append(pa_mpjpe(reference, gt) * M_TO_MM)
            target_rotmats = rotvec_to_rotmat(batch["pose"].reshape(-1, 24, 3))
            errors["rotation_deg"].append(
                rotation_error_deg(prediction.pose_rotmats[:, 1:], target_rotmats[:, 1:])[has_smpl]
            )
            intrinsics = crop_intrinsics(has_smpl.shape, like=body.joints_spin)
            first = steps.NUM_OPENPOSE  # the 24 ground-truth keypoints follow OpenPose's 25
            projected = perspective_projection(body.joints_spin[:, first:], intrinsics)
            keypoints = steps.crop_pixels(batch["keypoints"][:, first:])
            errors["keypoints_2d_px"].append(
                keypoint_error(projected, keypoints[..., :2], keypoints[..., 2])[has_smpl]
            )
        if not errors["mpjpe_mm"]:
            return {}
        return {f"val/{k}": float(torch.cat(v).nanmean()) for k, v in errors.items()}

    # ------------------------------------------------------------------ loop

    def save(self) -> None:
        """Checkpoint and fits cache, written by rank 0; every rank waits for them."""
        if self.distributed.is_main:
            save_checkpoint(
                self.run_dir,
                self.model,
                self.optimizer,
                self.step,
                config_to_dict(self.config),
                cache=self.cache,  # committed together with the checkpoint
                modules=(
                    {"adversarial": self.adversarial.state_dict()} if self.adversarial else None
                ),
            )
        barrier(self.distributed)

    def run(self, max_steps: int | None = None) -> dict:
        """Train until ``num_steps`` (or ``max_steps`` more steps); returns the last metrics."""
        config = self.config
        end = (
            config.num_steps if max_steps is None else min(config.num_steps, self.step + max_steps)
        )
        loader = DataLoader(
            self.train_data,
            # Step k: items [k*B, (k+1)*B) of the mix, this rank's contiguous share of them.
            batch_sampler=RankBatches(
                self.step,
                end,
                config.batch_size,
                self.distributed.rank,
                self.distributed.world_size,
            ),
            num_workers=config.data.num_workers,
            collate_fn=_collate,
            # Its own generator: iterating a loader must not consume the global RNG that
            # dropout uses, or a resumed run would diverge from an uninterrupted one.
            generator=torch.Generator().manual_seed(config.seed + self.step),
        )
        show = self.progress and self.distributed.is_main
        bar = tqdm(total=end - self.step, desc=config.name, disable=not show, unit="step")
        metrics: dict = {}
        validated_at = None  # the step this call last validated at
        window_start = time.perf_counter()
        data_start = time.perf_counter()
        for batch in loader:
            data_time = time.perf_counter() - data_start
            scalars = self.train_step(batch)
            scalars["time/data"] = data_time
            self.step += 1
            if not all(math.isfinite(v) for k, v in scalars.items() if k.startswith("loss/")):
                raise FloatingPointError(f"non-finite loss at step {self.step}: {scalars}")
            bar.update(1)
            bar.set_postfix(loss=f"{scalars['loss/total']:.3g}")
            if self.step % config.log_every == 0 or self.step == end:
                elapsed = time.perf_counter() - window_start
                scalars["throughput/samples_per_s"] = config.batch_size * config.log_every / elapsed
                scalars["lr"] = self.optimizer.param_groups[0]["lr"]
                if self.cache is not None:
                    scalars.update({f"cache/{k}": v for k, v in self.cache.statistics().items()})
                scalars = mean_over_ranks(self.distributed, scalars)
                self.logger.log(scalars, self.step)
                metrics.update(scalars)
                window_start = time.perf_counter()
            if config.wandb.image_every and self.step % config.wandb.image_every == 0:
                self.logger.log_panel(self._last, self.body_model, self.step)
            if config.val_every and self.step % config.val_every == 0:
                val = self.validate()
                validated_at = self.step
                self.logger.log(val, self.step)
                if val:
                    tqdm.write(format_validation(self.step, val))
                metrics.update(val)
            if config.checkpoint_every and self.step % config.checkpoint_every == 0:
                self.save()
            data_start = time.perf_counter()
        bar.close()
        if self.step == end:
            self.save()
            if self.step == config.num_steps and validated_at != self.step:
                val = self.validate()
                if val:
                    self.logger.log(val, self.step)
                    tqdm.write(format_validation(self.step, val))
                    metrics.update(val)
        for dataset in self.train_sets:
            if getattr(dataset, "skipped", 0):
                print(dataset.summary())
        self.logger.finish()
        if self.distributed.is_main:
            (self.run_dir / "final_metrics.json").write_text(json.dumps(metrics, indent=2))
        return metrics
