"""Evaluate a checkpoint on a benchmark protocol: MPJPE, PA-MPJPE and PVE, per joint and sample.

:func:`evaluate` runs the regressor of a checkpoint over the samples a
:class:`~spin.eval.protocols.Protocol` selects from a SPIN-format ``.npz``, compares the
predicted body with the ground truth the protocol names and returns an :class:`EvalReport`
(per-sample errors in millimetres, per-joint errors, counts and the header lines stating the
protocol). :func:`format_table`, :func:`save_json` and :func:`save_figure` write it out.
``refine=True`` also reports the errors after SMPLify, initialised from each prediction, fits
the sample's 2D keypoints (SPIN-49 in SPIN's 224-pixel crop camera, the fitting schedule and
pose prior of the checkpoint's config), as in SPIN's loop.

Inputs. The checkpoint is loaded with :func:`spin.predict.load_predictor`, whatever its input
representation, and the samples are made by :meth:`spin.predict.Predictor.dataset`: RGB crops,
or keypoint representations (``keypoints``, ``keypoint_heatmaps``) made from the file's 2D
keypoints exactly as in training (the OpenPose block where a sample has a confident point,
else its ground-truth 2D joints; samples with neither are left out and counted), or part maps
from a folder (``part_maps``). The report's header states which.

Body models. The regressor predicts the parameters of the body model it was trained with
(``body_model`` in the checkpoint's config); predictions are posed with that model. Asking
for another one (``body_model=``) is refused unless it is the same kind: the bundled open
models (``open``, ``open-lite``: one shape space) or SMPL files (another path to them). A
checkpoint of the open model can still be scored on SMPL-based benchmarks (3DPW, H36M):
the ground truth then comes from the official SMPL files when they are found (``smpl_dir``,
``$SPIN_SMPL_DIR``), else from the file's SMPL parameters posed with the open model; either
way the open model's joints are not SMPL's, so the report says those numbers are only
indicative. Per-vertex errors need the same mesh on both sides and are left out otherwise
(said in the report).

Every root alignment uses the H36M pelvis (row 0 of the ``h36m17`` joints): MPJPE on
pelvis-centred joints, PVE on meshes centred on their own regressed pelvis, PA-MPJPE after a
per-sample similarity Procrustes alignment.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from torch.utils.data._utils.collate import default_collate
from tqdm import tqdm

from spin.atomic import atomic_write_bytes, atomic_write_text
from spin.body import BodyModel, load_body_model
from spin.body.loading import SMPL_DIR_ENV
from spin.data.detected import DETECTED_DESCRIPTION, detected_keypoints_file
from spin.data.formats import load_spin_npz
from spin.eval.metrics import M_TO_MM, center_on, per_joint_errors, pve
from spin.eval.protocols import (
    GENDERED_CODES,
    H36M_PELVIS,
    Protocol,
    deviations,
    select_samples,
)
from spin.fitting.smplify import SMPLIFY_MODES, SMPLify
from spin.geometry.procrustes import procrustes_align
from spin.predict import BodyModelMismatchError, Predictor, load_predictor
from spin.predict.inputs import FROM_KEYPOINTS
from spin.predict.predictor import OPEN_FAMILY, SMPL_FAMILY

__all__ = [
    "BodyModelMismatchError",
    "EvalReport",
    "GroundTruthModels",
    "SampleErrors",
    "compute_errors",
    "default_dataset",
    "evaluate",
    "format_table",
    "ground_truth_bodies",
    "report_to_dict",
    "resolve_ground_truth",
    "save_figure",
    "save_json",
    "training_synthetic_dir",
]

NEUTRAL_CODE = "n"
KEYPOINT_SOURCES = ("dataset", "detected")
"""Where 2D keypoints come from: the dataset file's, or MediaPipe's on its images."""
HISTOGRAM_BINS = 40


# --- Ground truth ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class GroundTruthModels:
    """The body models that turn a file's SMPL parameters into ground-truth joints and meshes.

    Attributes:
        models: gender code (``'m'``, ``'f'``, ``'n'``) -> body model; samples whose code has
            no model use ``'n'``.
        gendered: male/female models are used.
        description: the report's ground-truth line.
        pve: per-vertex errors are meaningful (same mesh as the predictions).
        notes: what the report must say about this choice.
    """

    models: dict[str, BodyModel]
    gendered: bool
    description: str
    pve: bool
    notes: tuple[str, ...] = ()


def _smpl_source(smpl_dir, loaded: Predictor) -> tuple[str | Path | None, str]:
    """Where the official SMPL files are, and how they were found."""
    if smpl_dir is not None:
        return Path(smpl_dir), f"--smpl-dir {smpl_dir}"
    if loaded.family == SMPL_FAMILY:
        spec = loaded.body_model_spec
        if spec == "smpl":
            return "smpl", f"${SMPL_DIR_ENV}"
        path = Path(spec)
        return (path if path.is_dir() else path.parent), f"the folder of {spec}"
    if os.environ.get(SMPL_DIR_ENV):
        return "smpl", f"${SMPL_DIR_ENV}"
    return None, ""


def _load_gt_model(source, gender: str, like: BodyModel) -> BodyModel:
    model = load_body_model(source, gender=gender)
    if not model.has_joints_h36m:
        raise ValueError(
            f"the {gender} model from {source} has no H36M joint regressor; place SPIN's "
            "J_regressor_h36m.npy next to the SMPL files (or in the folder above them)"
        )
    return model.to(device=like.v_template.device, dtype=like.v_template.dtype)


def resolve_ground_truth(
    protocol: Protocol,
    genders: np.ndarray,
    loaded: Predictor,
    smpl_dir: str | os.PathLike | None = None,
) -> GroundTruthModels | None:
    """Which body models give the ground truth of ``protocol`` (None for 3D-joint ground truth).

    Args:
        protocol: the protocol (its ``gender`` and ``gt_body_model`` decide).
        genders: ``(M,)`` gender codes of the evaluated samples.
        loaded: the predictor (its body model and where its SMPL files are).
        smpl_dir: folder with the official SMPL files (neutral, male, female).

    Raises:
        ValueError: gendered ground truth was asked for and is impossible, or ``smpl_dir``
            lacks a model.
    """
    if protocol.ground_truth != "smpl":
        return None
    body = loaded.body_model
    if protocol.gt_body_model == "checkpoint":
        if protocol.gender == "gendered":
            raise ValueError(
                f"protocol {protocol.name!r}: its ground truth is posed with the checkpoint's "
                f"body model {body.name!r}, which is gender-neutral; gendered ground truth "
                "only exists for SMPL-fitted benchmarks (3dpw)"
            )
        return GroundTruthModels(
            models={NEUTRAL_CODE: body},
            gendered=False,
            description=(
                "ground truth: neutral: the file's SMPL-format parameters posed with the "
                f"checkpoint's body model {body.name!r} (the model the data was made with)"
            ),
            pve=protocol.pve,
        )

    has_genders = bool(np.isin(genders, GENDERED_CODES).any())
    if protocol.gender == "gendered" and not has_genders:
        raise ValueError(
            "gendered ground truth was asked for, but the evaluated samples have no 'm'/'f' "
            "gender; use --gt neutral"
        )
    want_gendered = protocol.gender == "gendered" or (protocol.gender == "auto" and has_genders)
    source, how = _smpl_source(smpl_dir, loaded)
    notes: list[str] = []

    neutral = body if loaded.family == SMPL_FAMILY else None
    if neutral is None and source is not None:
        try:
            neutral = _load_gt_model(source, "neutral", body)
        except (FileNotFoundError, ValueError) as error:
            if smpl_dir is not None and not want_gendered:
                raise ValueError(f"--smpl-dir {smpl_dir}: {error}") from None
            notes.append(f"no neutral SMPL model via {how}: {error}")

    gendered: dict[str, BodyModel] = {}
    why_neutral = ""
    if want_gendered:
        if source is None:
            why_neutral = (
                "the gendered SMPL files were not found: pass --smpl-dir or set " + SMPL_DIR_ENV
            )
        else:
            try:
                gendered = {
                    "m": _load_gt_model(source, "male", body),
                    "f": _load_gt_model(source, "female", body),
                }
            except (FileNotFoundError, ValueError) as error:
                if smpl_dir is not None or protocol.gender == "gendered":
                    raise ValueError(
                        f"gendered ground truth needs the male and female SMPL models "
                        f"({how}): {error}"
                    ) from None
                why_neutral = f"the gendered SMPL files were not found via {how}"
        if not gendered and protocol.gender == "gendered":
            raise ValueError(
                "gendered ground truth needs the official male and female SMPL models: pass "
                f"--smpl-dir DIR (or set {SMPL_DIR_ENV}) with SMPL_MALE/SMPL_FEMALE files"
            )
    elif protocol.gender == "neutral":
        why_neutral = "neutral asked for"
    elif not has_genders:
        why_neutral = "the file has no 'm'/'f' genders"

    posed_with_open = neutral is None and not gendered
    if posed_with_open:
        neutral = body
    models = dict(gendered)
    if neutral is not None:
        models[NEUTRAL_CODE] = neutral

    if gendered:
        description = (
            "ground truth: gendered SMPL meshes (male/female model per sample's gender"
            + (", neutral where unknown" if NEUTRAL_CODE in models else "")
            + f"; from {how})"
        )
    elif posed_with_open:
        description = (
            "ground truth: neutral: the file's SMPL parameters posed with the open body model "
            f"{body.name!r} (no SMPL files found: pass --smpl-dir DIR or set {SMPL_DIR_ENV} "
            "for the official" + (", gendered" if want_gendered else "") + " ground truth)"
        )
    else:
        origin = f"; from {how}" if loaded.family == OPEN_FAMILY else ""
        description = f"ground truth: neutral SMPL meshes ({why_neutral}{origin})"

    num_vertices = body.data.num_vertices
    same_mesh = all(m.data.num_vertices == num_vertices for m in models.values())
    if protocol.pve and not same_mesh:
        other = next(m for m in models.values() if m.data.num_vertices != num_vertices)
        notes.append(
            f"PVE not reported: the predicted mesh ({body.name}, {num_vertices} vertices) and "
            f"the ground-truth mesh ({other.name}, {other.data.num_vertices} vertices) differ"
        )
    return GroundTruthModels(
        models=models,
        gendered=bool(gendered),
        description=description,
        pve=protocol.pve and same_mesh,
        notes=tuple(notes),
    )


def ground_truth_bodies(
    gt: GroundTruthModels,
    pose_rotvecs: torch.Tensor,
    betas: torch.Tensor,
    genders,
    with_vertices: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Ground-truth H36M-17 joints ``(B, 17, 3)`` and vertices ``(B, V, 3)`` (or None).

    Args:
        gt: the ground-truth models.
        pose_rotvecs: ``(B, 72)``; betas: ``(B, K)``; genders: ``B`` gender codes.
        with_vertices: also return the meshes.
    """
    codes = [g if g in gt.models else NEUTRAL_CODE for g in genders]
    if NEUTRAL_CODE in codes and NEUTRAL_CODE not in gt.models:
        raise ValueError(
            "a sample has no 'm'/'f' gender and there is no neutral SMPL model; put "
            "SMPL_NEUTRAL next to the gendered files"
        )
    batch = pose_rotvecs.shape[0]
    joints = vertices = None
    for code in sorted(set(codes)):
        rows = torch.tensor([i for i, c in enumerate(codes) if c == code], device=betas.device)
        out = gt.models[code](pose_rotvecs=pose_rotvecs[rows], betas=betas[rows])
        part = out.require_joints_h36m()
        if joints is None:
            joints = part.new_zeros(batch, *part.shape[1:])
        joints[rows] = part
        if with_vertices:
            if vertices is None:
                vertices = out.vertices.new_zeros(batch, *out.vertices.shape[1:])
            vertices[rows] = out.vertices
    return joints, vertices


# --- Errors ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SampleErrors:
    """Per-sample errors in millimetres (float64 numpy arrays, M evaluated samples).

    Attributes:
        mpjpe, pa_mpjpe: ``(M,)``; pve: ``(M,)`` or None where not reported.
        per_joint, per_joint_pa: ``(M, J)`` joint distances without / after Procrustes.
    """

    mpjpe: np.ndarray
    pa_mpjpe: np.ndarray
    pve: np.ndarray | None
    per_joint: np.ndarray
    per_joint_pa: np.ndarray

    def means(self) -> dict[str, float | None]:
        """Mean of each metric over the samples (mm); ``pve`` None when not reported."""
        return {
            "mpjpe": float(self.mpjpe.mean()),
            "pa_mpjpe": float(self.pa_mpjpe.mean()),
            "pve": None if self.pve is None else float(self.pve.mean()),
        }

    def summary(self) -> dict[str, float | None]:
        """Means and medians (mm)."""
        out = dict(self.means())
        out["mpjpe_median"] = float(np.median(self.mpjpe))
        out["pa_mpjpe_median"] = float(np.median(self.pa_mpjpe))
        out["pve_median"] = None if self.pve is None else float(np.median(self.pve))
        return out


def compute_errors(
    pred_joints_h36m: torch.Tensor,
    gt_joints_h36m: torch.Tensor,
    joint_indices,
    pred_vertices: torch.Tensor | None = None,
    gt_vertices: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The protocol's errors of a batch, in millimetres, computed in float64.

    Args:
        pred_joints_h36m, gt_joints_h36m: ``(B, 17, 3)`` H36M-17 joints in metres.
        joint_indices: rows of the pelvis-centred joints compared (e.g. ``H36M_TO_LSP14``).
        pred_vertices, gt_vertices: ``(B, V, 3)`` meshes in metres for PVE, or None.

    Returns:
        ``mpjpe``, ``pa_mpjpe`` ``(B,)``, ``per_joint``, ``per_joint_pa`` ``(B, J)`` and, with
        vertices, ``pve`` ``(B,)``.
    """
    pred17, gt17 = pred_joints_h36m.double(), gt_joints_h36m.double()
    index = list(joint_indices)
    pred = center_on(pred17, H36M_PELVIS)[:, index]
    gt = center_on(gt17, H36M_PELVIS)[:, index]
    per_joint = per_joint_errors(pred, gt) * M_TO_MM
    per_joint_pa = per_joint_errors(procrustes_align(pred, gt), gt) * M_TO_MM
    out = {
        "mpjpe": per_joint.mean(dim=-1),
        "pa_mpjpe": per_joint_pa.mean(dim=-1),
        "per_joint": per_joint,
        "per_joint_pa": per_joint_pa,
    }
    if pred_vertices is not None and gt_vertices is not None:
        out["pve"] = (
            pve(
                pred_vertices.double(),
                gt_vertices.double(),
                pred_origin=pred17[:, H36M_PELVIS],
                target_origin=gt17[:, H36M_PELVIS],
            )
            * M_TO_MM
        )
    return out


class _ErrorAccumulator:
    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {}

    def add(self, errors: dict[str, torch.Tensor]) -> None:
        for key, value in errors.items():
            self.parts.setdefault(key, []).append(value.detach().cpu().numpy())

    def result(self, num_joints: int) -> SampleErrors:
        def cat(key: str, shape: tuple[int, ...]) -> np.ndarray:
            parts = self.parts.get(key)
            return np.concatenate(parts) if parts else np.zeros(shape)

        return SampleErrors(
            mpjpe=cat("mpjpe", (0,)),
            pa_mpjpe=cat("pa_mpjpe", (0,)),
            pve=cat("pve", (0,)) if "pve" in self.parts else None,
            per_joint=cat("per_joint", (0, num_joints)),
            per_joint_pa=cat("per_joint_pa", (0, num_joints)),
        )


# --- The report -----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class EvalReport:
    """What an evaluation found.

    Attributes:
        protocol: the protocol used (after any overrides).
        header: lines stating dataset, joints, ground truth, frames and body model; notes.
        errors: the regressor's per-sample errors.
        refined: the same after SMPLify refinement, or None.
        mean_pose: the same for the mean-pose reference (the regressor's starting mean
            parameters for every sample, whatever the image), or None.
        joint_names: names of the compared joints (columns of the per-joint errors).
        sample_index: ``(M,)`` rows of the file that were evaluated; imgname: ``(M,)``.
        num_in_file, num_selected, num_evaluated: N, after the protocol's selection, done.
        excluded: protocol selection reason -> rows left out.
        skipped: other reason (unreadable image, ``limit``) -> rows left out.
        notes: caveats, also in the header.
        checkpoint, step, dataset_file, image_folder, body_model: provenance.
        refine_fallbacks: samples whose fit had too few keypoints (the prediction is kept).
        elapsed_s: wall time.
        input_representation: what the network saw (:mod:`spin.data.representations`).
    """

    protocol: Protocol
    header: tuple[str, ...]
    errors: SampleErrors
    refined: SampleErrors | None
    joint_names: tuple[str, ...]
    sample_index: np.ndarray
    imgname: np.ndarray
    num_in_file: int
    num_selected: int
    num_evaluated: int
    excluded: dict[str, int]
    skipped: dict[str, int]
    notes: tuple[str, ...]
    checkpoint: str
    step: int
    dataset_file: str
    image_folder: str
    body_model: str
    refine_fallbacks: int = 0
    elapsed_s: float = 0.0
    mean_pose: SampleErrors | None = None
    input_representation: str = "rgb"

    @property
    def mpjpe(self) -> np.ndarray:
        return self.errors.mpjpe

    @property
    def pa_mpjpe(self) -> np.ndarray:
        return self.errors.pa_mpjpe

    @property
    def pve(self) -> np.ndarray | None:
        return self.errors.pve


def training_synthetic_dir(predictor: Predictor) -> str | None:
    """The folder of the synthetic data a checkpoint was trained on (its saved
    ``data.synthetic.out_dir``), or None (other data, or a model not from a checkpoint)."""
    if predictor.checkpoint is None:
        return None
    data = predictor.checkpoint.training_config.get("data") or {}
    synthetic = data.get("synthetic") or {}
    return synthetic.get("out_dir")


def default_dataset(protocol: Protocol, synthetic_dir: str | None = None) -> tuple[Path, Path]:
    """The ``.npz`` and image folder a protocol uses when none is given.

    ``synthetic``: the test split in ``synthetic_dir`` (the checkpoint's training data,
    :func:`training_synthetic_dir`) when it exists, else ``data/synthetic``; the
    benchmarks: :attr:`Protocol.default_data`. Relative paths are relative to the working
    directory.

    Raises:
        FileNotFoundError: no default file exists; the message says how to make one.
    """
    candidates: list[tuple[Path, Path]] = []
    if protocol.name == "synthetic" and synthetic_dir is not None:
        out_dir = Path(synthetic_dir)
        candidates.append((out_dir / "test.npz", out_dir))
    if protocol.default_data is not None:
        data = Path(protocol.default_data)
        images = Path(protocol.default_images) if protocol.default_images else data.parent
        candidates.append((data, images))
    for data, images in candidates:
        if data.is_file():
            return data, images
    tried = ", ".join(str(data) for data, _ in candidates) or "nothing"
    how = {
        "synthetic": "make it with spin-make-synthetic (or train once with spin-train)",
        "3dpw": "convert 3DPW with tools/convert_3dpw.py ROOT --split test --out FILE.npz",
        "h36m-p1": "convert Human3.6M with tools/convert_h36m.py --protocol p1 --out FILE.npz",
        "h36m-p2": "convert Human3.6M with tools/convert_h36m.py --protocol p2 --out FILE.npz",
    }.get(protocol.name, "pass the dataset file")
    raise FileNotFoundError(
        f"no dataset file for {protocol.name!r} (looked for {tried}); {how}, then pass it with "
        "--data FILE.npz --images IMAGE_FOLDER"
    )


def _header(
    protocol: Protocol,
    gt: GroundTruthModels | None,
    loaded: Predictor,
    num_evaluated: int,
    num_in_file: int,
    limit: int | None,
    notes: list[str],
    smplify: SMPLify | None,
    part_maps: str | os.PathLike | None = None,
    dataset_file: str | os.PathLike | None = None,
) -> tuple[str, ...]:
    relation = (
        "the checkpoint's"
        if loaded.body_model_spec == loaded.trained_with
        else f"checkpoint trained with {loaded.trained_with!r}"
    )
    frames = protocol.describe_frames()
    frames += f"; {num_evaluated} of {num_in_file} samples in the file evaluated"
    if limit is not None:
        frames += f" (limited to the first {limit} selected)"
    where = f", file {dataset_file}" if dataset_file is not None else ""
    lines = [
        f"dataset: {protocol.dataset} [protocol {protocol.name}{where}]",
        protocol.describe_joints(),
        gt.description if gt is not None else protocol.describe_ground_truth_source(),
        frames,
        f"body model: {loaded.body_model.name} ({relation}); checkpoint "
        f"{loaded.checkpoint.path} (step {loaded.checkpoint.step})",
    ]
    if loaded.representation != "rgb":
        lines.append(_describe_input(loaded, part_maps))
    if smplify is not None:
        mode = smplify.config.mode
        whose = "the checkpoint's" if mode == loaded.config.smplify.mode else "asked for"
        lines.append(
            "refinement: SMPLify from each prediction on the sample's 2D keypoints "
            f"(mode {mode}, {whose}; pose prior {loaded.config.pose_prior!r}), "
            "SPIN's 224-px crop camera"
        )
    lines += [f"note: {note}" for note in notes]
    return tuple(lines)


def _describe_input(loaded: Predictor, part_maps) -> str:
    """The header line on the network's input, for representations other than RGB crops."""
    size = loaded.img_size
    if loaded.representation in FROM_KEYPOINTS:
        return (
            f"input: {loaded.representation} ({size}-px crop) made from the file's 2D "
            "keypoints as in training: the OpenPose block where a sample has a confident "
            "point, else its ground-truth 2D joints"
        )
    return f"input: {loaded.representation} ({size}-px crop) from {part_maps}"


def _subset(batch: dict, keep: torch.Tensor) -> dict:
    rows = keep.nonzero().flatten().tolist()
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == len(keep):
            out[key] = value[keep]
        elif isinstance(value, list) and len(value) == len(keep):
            out[key] = [value[i] for i in rows]
        else:
            out[key] = value
    return out


def evaluate(
    checkpoint: str | os.PathLike,
    dataset_npz: str | os.PathLike | None,
    image_folder: str | os.PathLike | None,
    protocol: Protocol,
    batch_size: int = 32,
    refine: bool = False,
    limit: int | None = None,
    device: str = "cpu",
    progress: bool = True,
    *,
    body_model: str | None = None,
    smpl_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
    mean_pose: bool = False,
    part_maps: str | os.PathLike | None = None,
    keypoints: str = "dataset",
    detected_dir: str | os.PathLike | None = None,
    smplify_mode: str | None = None,
) -> EvalReport:
    """Evaluate a checkpoint on the samples ``protocol`` selects from a dataset file.

    Args:
        checkpoint: a ``checkpoint.pt`` of ``spin-train``.
        dataset_npz: SPIN-format ``.npz``; None for the protocol's default
            (:func:`default_dataset`).
        image_folder: the folder ``imgname`` is relative to; None for the default one
            (or the ``.npz``'s folder when a file is given).
        protocol: which samples, joints and ground truth (:mod:`spin.eval.protocols`).
        batch_size: samples per forward pass.
        refine: also report the errors after SMPLify refinement of each prediction.
        limit: evaluate only the first ``limit`` selected samples.
        device: torch device.
        progress: show a tqdm bar.
        body_model: pose predictions with this body model instead of the checkpoint's
            (same kind only; see the module docstring).
        smpl_dir: folder with the official SMPL models, for gendered (or SMPL) ground truth.
        num_workers: data loader worker processes.
        mean_pose: also score the mean-pose reference on the same samples and protocol.
        part_maps: the folder of the file's part maps, for a checkpoint trained on
            ``part_segmentation`` inputs (there is no segmenter to make them from images).
        keypoints: ``"dataset"`` (the file's 2D keypoints) or ``"detected"`` (MediaPipe's,
            run on the images: :mod:`spin.data.detected`); they make keypoint inputs and
            are what SMPLify refines against.
        detected_dir: where the detected copy of the file is kept (default: the
            checkpoint's ``eval`` folder).
        smplify_mode: the refinement's SMPLify mode (:data:`~spin.fitting.smplify.
            SMPLIFY_MODES`); None: the checkpoint's.

    Raises:
        BodyModelMismatchError: ``body_model`` is not the kind the checkpoint was trained with.
        ValueError, FileNotFoundError: bad inputs, with what to do about them
            (:class:`~spin.predict.inputs.InputUnavailableError`: a part-map checkpoint
            without ``part_maps``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if smplify_mode is not None and smplify_mode not in SMPLIFY_MODES:
        raise ValueError(f"smplify_mode must be one of {SMPLIFY_MODES}, got {smplify_mode!r}")
    if keypoints not in KEYPOINT_SOURCES:
        raise ValueError(f"keypoints must be one of {KEYPOINT_SOURCES}, got {keypoints!r}")
    start = time.perf_counter()
    loaded = load_predictor(checkpoint, body_model, device)
    if dataset_npz is None:
        dataset_npz, default_images = default_dataset(protocol, training_synthetic_dir(loaded))
        image_folder = default_images if image_folder is None else image_folder
    dataset_npz = Path(dataset_npz)
    image_folder = Path(image_folder) if image_folder is not None else dataset_npz.parent
    if not dataset_npz.is_file():
        raise FileNotFoundError(f"no dataset file {dataset_npz}")
    source_npz = dataset_npz
    if keypoints == "detected":
        cache = Path(checkpoint).parent / "eval" if detected_dir is None else detected_dir
        dataset_npz = detected_keypoints_file(dataset_npz, image_folder, cache, progress)

    arrays = load_spin_npz(dataset_npz, validate=False)
    selection = select_samples(arrays, protocol)
    indices = selection.indices
    skipped: dict[str, int] = {}
    truth_keys = ("S_h36m",) if protocol.ground_truth == "joints" else ("pose", "shape")
    finite = np.ones(len(indices), dtype=bool)
    for key in truth_keys:
        if key in arrays:
            values = np.asarray(arrays[key], dtype=np.float64)[indices]
            finite &= np.isfinite(values.reshape(len(indices), -1)).all(axis=1)
    if not finite.all():  # NaN/inf ground truth cannot be scored: left out, counted
        skipped["non-finite ground truth"] = int((~finite).sum())
        indices = indices[finite]
    if limit is not None and len(indices) > limit:
        skipped[f"beyond --limit {limit}"] = len(indices) - limit
        indices = indices[:limit]
    num = len(arrays["imgname"])
    genders = (
        np.asarray(arrays["gender"]).astype(str)
        if "gender" in arrays
        else np.full(num, NEUTRAL_CODE)
    )
    gt = resolve_ground_truth(protocol, genders[indices], loaded, smpl_dir)
    notes: list[str] = []
    if loaded.family == OPEN_FAMILY and (
        protocol.ground_truth == "joints" or protocol.gt_body_model == "official"
    ):
        notes.append(
            f"the body model {loaded.body_model.name!r} is the open model, not SMPL: its "
            "joints (H36M regressor) and mesh are not SMPL's, so these numbers are only "
            "indicative and not comparable with published ones"
        )
    if gt is not None:
        notes.extend(gt.notes)
    for deviation in deviations(protocol):
        notes.append(f"non-standard setting: {deviation}")
    if keypoints == "detected":
        notes.append(DETECTED_DESCRIPTION)

    body = loaded.body_model
    like = body.v_template
    with_pve = gt is not None and gt.pve
    if gt is not None:
        gt_pose = torch.as_tensor(np.asarray(arrays["pose"], dtype=np.float64)).to(like)
        gt_betas = torch.as_tensor(np.asarray(arrays["shape"], dtype=np.float64)).to(like)
    else:
        gt_joints_all = torch.as_tensor(np.asarray(arrays["S_h36m"], dtype=np.float64)[..., :3])

    smplify = None
    if refine:
        schedule = loaded.config.smplify
        if smplify_mode is not None and smplify_mode != schedule.mode:
            schedule = replace(schedule, mode=smplify_mode, stages=())
        smplify = loaded.smplify(schedule)
    dataset = loaded.dataset(dataset_npz, image_folder, part_maps=part_maps, name=protocol.name)
    if dataset.bad_boxes:  # unusable center/scale: left out, counted
        usable = np.array([i not in dataset.bad_boxes for i in indices], dtype=bool)
        if not usable.all():
            skipped["unusable box (center/scale)"] = int((~usable).sum())
            indices = indices[usable]
    loader = DataLoader(
        Subset(dataset, indices.tolist()),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=default_collate,
    )
    joint_indices = protocol.joint_indices
    regressor_errors, refined_errors = _ErrorAccumulator(), _ErrorAccumulator()
    mean_pose_errors = _ErrorAccumulator()
    mean_body = None  # the mean-pose reference: the same body for every sample
    if mean_pose:
        with torch.no_grad():
            reference = loaded.mean_prediction(1)
            mean_body = body(pose_rotmats=reference.pose_rotmats, betas=reference.betas)
    done_index: list[np.ndarray] = []
    fallbacks = 0
    bar = tqdm(
        total=len(indices), desc=f"spin-eval {protocol.name}", unit="sample", disable=not progress
    )
    for batch in loader:
        count = len(batch["sample_index"])
        readable = batch["sample_index"] == batch["requested_index"]
        if not readable.all():
            skipped["unreadable image"] = skipped.get("unreadable image", 0) + int(
                (~readable).sum()
            )
            batch = _subset(batch, readable)
        if len(batch["sample_index"]) == 0:
            bar.update(count)
            continue
        if loaded.representation in FROM_KEYPOINTS:  # an empty input says nothing
            seen = batch["img"].flatten(1).ne(0).any(dim=1)
            if not seen.all():
                reason = "no 2D keypoints to make the network input from"
                skipped[reason] = skipped.get(reason, 0) + int((~seen).sum())
                batch = _subset(batch, seen)
            if len(batch["sample_index"]) == 0:
                bar.update(count)
                continue
        rows = batch["sample_index"].numpy()
        prediction = loaded.predict(loaded.input_from_batch(batch))
        with torch.no_grad():
            pred_body = body(pose_rotmats=prediction.pose_rotmats, betas=prediction.betas)
            pred_joints = pred_body.require_joints_h36m()
            if gt is not None:
                gt_joints, gt_vertices = ground_truth_bodies(
                    gt, gt_pose[rows], gt_betas[rows], genders[rows], with_pve
                )
            else:
                gt_joints, gt_vertices = gt_joints_all[rows].to(like), None
        regressor_errors.add(
            compute_errors(
                pred_joints,
                gt_joints,
                joint_indices,
                pred_body.vertices if with_pve else None,
                gt_vertices,
            )
        )
        if mean_body is not None:
            count = len(rows)
            mean_pose_errors.add(
                compute_errors(
                    mean_body.require_joints_h36m().expand(count, -1, -1),
                    gt_joints,
                    joint_indices,
                    mean_body.vertices.expand(count, -1, -1) if with_pve else None,
                    gt_vertices,
                )
            )
        if smplify is not None:
            refinement = loaded.refine(prediction, batch["keypoints"].to(like), smplify)
            fallbacks += refinement.num_fallbacks
            with torch.no_grad():
                fitted = body(
                    pose_rotvecs=refinement.pose_rotvecs.detach(),
                    betas=refinement.betas.detach(),
                )
            refined_errors.add(
                compute_errors(
                    fitted.require_joints_h36m(),
                    gt_joints,
                    joint_indices,
                    fitted.vertices if with_pve else None,
                    gt_vertices,
                )
            )
        done_index.append(rows)
        bar.update(count)
    bar.close()

    sample_index = np.concatenate(done_index) if done_index else np.zeros(0, dtype=np.int64)
    if sample_index.size == 0:
        raise ValueError(
            f"no sample of {dataset_npz} could be evaluated ({skipped}); check --images"
        )
    if fallbacks:
        notes.append(
            f"refinement: {fallbacks} sample(s) had fewer than 2 confident keypoints; their "
            "refined errors are the regressor's"
        )
    header = _header(
        protocol,
        gt,
        loaded,
        len(sample_index),
        selection.num_in_file,
        limit,
        notes,
        smplify,
        part_maps,
        dataset_file=source_npz,
    )
    num_joints = len(joint_indices)
    return EvalReport(
        protocol=protocol,
        header=header,
        errors=regressor_errors.result(num_joints),
        refined=refined_errors.result(num_joints) if smplify is not None else None,
        joint_names=protocol.joint_names,
        sample_index=sample_index,
        imgname=np.asarray(arrays["imgname"]).astype(str)[sample_index],
        num_in_file=selection.num_in_file,
        num_selected=len(selection.indices),
        num_evaluated=len(sample_index),
        excluded=dict(selection.excluded),
        skipped=skipped,
        notes=tuple(notes),
        checkpoint=str(loaded.checkpoint.path),
        step=loaded.checkpoint.step,
        dataset_file=str(dataset_npz),
        image_folder=str(image_folder),
        body_model=loaded.body_model.name,
        refine_fallbacks=fallbacks,
        elapsed_s=time.perf_counter() - start,
        mean_pose=mean_pose_errors.result(num_joints) if mean_pose else None,
        input_representation=loaded.representation,
    )


# --- Output ---------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.1f}"


def format_table(report: EvalReport) -> str:
    """The report as text: the header lines, the mean errors and the per-joint means (mm)."""
    columns = [("regressor", report.errors)]
    if report.refined is not None:
        columns.append(("+SMPLify", report.refined))
    if report.mean_pose is not None:
        columns.append(("mean pose", report.mean_pose))
    lines = list(report.header)
    lines.append("")
    width = 16
    lines.append(f"{'metric (mm)':<{width}}" + "".join(f"{name:>12}" for name, _ in columns))
    for key, label in (("mpjpe", "MPJPE"), ("pa_mpjpe", "PA-MPJPE"), ("pve", "PVE")):
        values = [errors.means()[key] for _, errors in columns]
        if key == "pve" and all(v is None for v in values):
            continue
        lines.append(f"{label:<{width}}" + "".join(f"{_fmt(v):>12}" for v in values))
    lines.append(f"{'samples':<{width}}" + f"{report.num_evaluated:>12}")
    skipped = {**report.excluded, **report.skipped}
    if skipped:
        lines.append(
            "left out: " + "; ".join(f"{reason}: {count}" for reason, count in skipped.items())
        )
    lines.append("")
    heads = [f"{name} {metric}" for name, _ in columns for metric in ("MPJPE", "PA")]
    joint_width = max(16, max(len(n) for n in report.joint_names) + 2)
    lines.append(f"{'per joint (mm)':<{joint_width}}" + "".join(f"{h:>16}" for h in heads))
    for j, name in enumerate(report.joint_names):
        values = []
        for _, errors in columns:
            values += [errors.per_joint[:, j].mean(), errors.per_joint_pa[:, j].mean()]
        lines.append(f"{name:<{joint_width}}" + "".join(f"{_fmt(float(v)):>16}" for v in values))
    return "\n".join(lines)


def _errors_json(errors: SampleErrors, joint_names) -> dict:
    return {
        "summary_mm": errors.summary(),
        "per_joint_mm": {
            "mpjpe": dict(zip(joint_names, errors.per_joint.mean(axis=0).tolist(), strict=True)),
            "pa_mpjpe": dict(
                zip(joint_names, errors.per_joint_pa.mean(axis=0).tolist(), strict=True)
            ),
        },
        "per_sample_mm": {
            "mpjpe": errors.mpjpe.tolist(),
            "pa_mpjpe": errors.pa_mpjpe.tolist(),
            "pve": None if errors.pve is None else errors.pve.tolist(),
        },
    }


def report_to_dict(report: EvalReport) -> dict:
    """Plain data of a report (what :func:`save_json` writes)."""
    protocol = asdict(report.protocol)
    return {
        "header": list(report.header),
        "protocol": protocol,
        "checkpoint": report.checkpoint,
        "step": report.step,
        "dataset_file": report.dataset_file,
        "image_folder": report.image_folder,
        "body_model": report.body_model,
        "input_representation": report.input_representation,
        "joints": list(report.joint_names),
        "counts": {
            "in_file": report.num_in_file,
            "selected": report.num_selected,
            "evaluated": report.num_evaluated,
            "excluded_by_protocol": report.excluded,
            "skipped": report.skipped,
            "refine_fallbacks": report.refine_fallbacks,
        },
        "notes": list(report.notes),
        "regressor": _errors_json(report.errors, report.joint_names),
        "refined": None
        if report.refined is None
        else _errors_json(report.refined, report.joint_names),
        "mean_pose": None
        if report.mean_pose is None
        else _errors_json(report.mean_pose, report.joint_names),
        "sample_index": report.sample_index.tolist(),
        "imgname": report.imgname.tolist(),
        "elapsed_s": report.elapsed_s,
    }


def _finite_or_null(value):
    """The same plain data with NaN and inf floats as None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def save_json(report: EvalReport, path: str | os.PathLike) -> Path:
    """Write the report (header, protocol, counts, means, per joint, per sample) as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_finite_or_null(report_to_dict(report)), indent=1, allow_nan=False)
    atomic_write_text(path, text)
    return path


def save_figure(report: EvalReport, path: str | os.PathLike) -> Path:
    """Write a PNG: per-joint mean errors, the histogram and the cumulative distribution of
    the per-sample MPJPE and PA-MPJPE (dashed: after SMPLify refinement)."""
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(16, 5.2), layout="constrained")
    bars, hist, cdf = figure.subplots(1, 3, gridspec_kw={"width_ratios": [1.6, 1, 1]})
    sets = [("regressor", report.errors, "-")]
    if report.refined is not None:
        sets.append(("+SMPLify", report.refined, "--"))

    colours = {"MPJPE": "tab:blue", "PA-MPJPE": "tab:orange"}
    metrics = (("MPJPE", "per_joint", "mpjpe"), ("PA-MPJPE", "per_joint_pa", "pa_mpjpe"))
    names = report.joint_names
    x = np.arange(len(names))
    width = 0.8 / (2 * len(sets))
    k = 0
    for label, errors, style in sets:
        for metric, per_joint, _ in metrics:
            offset = (k - (2 * len(sets) - 1) / 2) * width
            bars.bar(
                x + offset,
                getattr(errors, per_joint).mean(axis=0),
                width,
                color=colours[metric],
                alpha=1.0 if style == "-" else 0.55,
                hatch=None if style == "-" else "//",
                label=f"{label} {metric}",
            )
            k += 1
    bars.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    bars.set_ylabel("mean error (mm)")
    bars.set_title("per-joint mean error")
    bars.legend(fontsize=8)

    every = [getattr(errors, attr) for _, errors, _ in sets for _, _, attr in metrics]
    upper = max(float(np.percentile(np.concatenate(every), 99.5)), 1.0)
    edges = np.linspace(0.0, upper, HISTOGRAM_BINS + 1)
    for label, errors, style in sets:
        for metric, _, attr in metrics:
            values = np.sort(getattr(errors, attr))
            hist.hist(
                values,
                bins=edges,
                histtype="step",
                linestyle=style,
                color=colours[metric],
                label=f"{label} {metric} (mean {values.mean():.1f})",
            )
            fraction = np.arange(len(values) + 1) / len(values)
            cdf.step(
                np.concatenate([[0.0], values]),
                fraction,
                where="post",
                linestyle=style,
                color=colours[metric],
                label=f"{label} {metric}",
            )
    hist.set_xlabel("per-sample error (mm)")
    hist.set_ylabel("samples")
    hist.set_title("error distribution")
    hist.legend(fontsize=8)
    cdf.set_xlabel("per-sample error (mm)")
    cdf.set_ylabel("fraction of samples with error <= x")
    cdf.set_ylim(0.0, 1.0)
    cdf.set_xlim(0.0, upper)
    cdf.grid(alpha=0.3)
    cdf.set_title("cumulative distribution")
    cdf.legend(fontsize=8, loc="lower right")
    title = (
        f"{report.protocol.name}: {report.num_evaluated} samples, body model {report.body_model}"
    )
    figure.suptitle(title + "\n" + report.header[2], fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())  # a full disk leaves no half PNG
    return path
