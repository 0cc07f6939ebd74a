"""How good are the fits that supervise training? Score a run's fits cache against the truth.

For runs on the embedded synthetic data, every training sample's true pose and shape are known
(2D-only samples merely hide them from training; endless people, ``data.endless``, are drawn
again from the run's seed): this prints, per run, the fraction of
samples with a valid fit (SPIN's rule: the fit's reprojection loss, per-joint mean, below the
run's threshold) and the PA-MPJPE / MPJPE (mm; 14 LSP joints from the H36M regressor,
pelvis-centred) of the valid fits and of all fits, over the 2D-only samples (those whose
supervision comes from fits alone) and over all samples.

Usage: ``python tools/cache_quality.py RUN_DIR [RUN_DIR ...]`` (a run folder of spin-train,
holding ``config.json`` and ``fits_cache.h5``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from spin.body import load_body_model
from spin.body.joint_conventions import H36M_TO_LSP14
from spin.config import build_config
from spin.data.spin_dataset import SpinDataset
from spin.data.synthetic import hidden_parameters
from spin.eval.metrics import M_TO_MM, center_on, mpjpe, pa_mpjpe
from spin.fitting.fits_cache import FitsCache
from spin.train.config import TrainConfig
from spin.train.experiments import format_table
from spin.train.trainer import endless_dataset

SYNTHETIC_NAME = "synthetic"


def joints_lsp(body, pose: np.ndarray, betas: np.ndarray, batch: int = 256) -> torch.Tensor:
    """``(N, 14, 3)`` pelvis-centred LSP joints of SMPL parameters."""
    parts = []
    with torch.no_grad():
        for start in range(0, len(pose), batch):
            out = body(
                pose_rotvecs=torch.as_tensor(pose[start : start + batch], dtype=torch.float32),
                betas=torch.as_tensor(betas[start : start + batch], dtype=torch.float32),
            )
            parts.append(center_on(out.joints_h36m, 0)[:, list(H36M_TO_LSP14)])
    return torch.cat(parts)


def truth_of_run(run_dir: Path, config: dict, cache: FitsCache):
    """The cached record of the run's synthetic training people, their true pose and betas,
    and which of them are 2D-only in training: the rendered split, or the endless people
    (``data.endless``, regenerated from the run's seed)."""
    if config["data"].get("endless"):
        dataset = endless_dataset(build_config(TrainConfig, config))
        if dataset.name in cache._records:
            true_pose, true_betas, labelled = dataset.hidden_parameters()
            return cache._records[dataset.name], true_pose, true_betas, ~labelled
    synthetic = config["data"].get("synthetic")
    if not synthetic or SYNTHETIC_NAME not in cache._records:
        raise SystemExit(f"{run_dir}: no fits of synthetic or endless training people")
    out_dir = Path(synthetic["out_dir"])
    true_pose, true_betas = hidden_parameters(out_dir, "train")
    dataset = SpinDataset(out_dir / "train.npz", out_dir, name=SYNTHETIC_NAME)
    dataset.keep_3d_labels(synthetic["fraction_3d"], seed=config["seed"])
    return cache._records[SYNTHETIC_NAME], true_pose, true_betas, dataset.has_smpl < 0.5


def score_run(run_dir: Path, body) -> dict:
    config = json.loads((run_dir / "config.json").read_text())
    cache = FitsCache.load(run_dir / "fits_cache.h5")
    record, true_pose, true_betas, only_2d = truth_of_run(run_dir, config, cache)
    fitted = np.isfinite(record["loss"])
    valid = record["valid"].astype(bool) & fitted
    truth = joints_lsp(body, true_pose, true_betas)
    pose = np.where(fitted[:, None], record["pose"], 0.0)
    betas = np.where(fitted[:, None], record["betas"], 0.0)
    fits = joints_lsp(body, pose, betas)
    pa = (pa_mpjpe(fits, truth) * M_TO_MM).numpy()
    full = (mpjpe(fits, truth) * M_TO_MM).numpy()

    def mean(values, mask):
        return float(values[mask].mean()) if mask.any() else float("nan")

    return {
        "run": run_dir.name,
        "valid (2D-only)": float(valid[only_2d].mean()),
        "PA valid (2D-only)": mean(pa, valid & only_2d),
        "PA all fits (2D-only)": mean(pa, fitted & only_2d),
        "MPJPE valid (2D-only)": mean(full, valid & only_2d),
        "PA valid (all)": mean(pa, valid),
        "threshold": float(config["fits"]["valid_threshold"]),
        "SMPLify": config["smplify"]["mode"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--body-model", default="open")
    args = parser.parse_args(argv)
    body = load_body_model(args.body_model)
    rows = [score_run(run, body) for run in args.runs]
    header = list(rows[0])
    print(format_table(header, [[row[k] for k in header] for row in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
