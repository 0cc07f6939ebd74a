"""Logging of a run: ``metrics.jsonl`` always, wandb (offline by default) when enabled, and
image panels (input crop, predicted mesh, SMPLify fit)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from spin.geometry import CROP_SIZE, FOCAL_LENGTH
from spin.train.checkpoint import CONFIG_NAME, atomic_write_text
from spin.train.config import WandbConfig

__all__ = ["NullLogger", "RunLogger", "panel_images"]

PANEL_SAMPLES = 4
MIN_TILE_PX = 192
"""Panel tiles are at least this many pixels wide (small crops are scaled up)."""
PRED_COLOR = (0.55, 0.7, 0.95)
FIT_COLOR = (0.95, 0.7, 0.45)


def _crop_camera(size: int) -> np.ndarray:
    focal = FOCAL_LENGTH * size / CROP_SIZE
    return np.array([[focal, 0.0, size / 2], [0.0, focal, size / 2], [0.0, 0.0, 1.0]])


def panel_images(
    last, body_model, samples: int = PANEL_SAMPLES, representation: str = "rgb"
) -> np.ndarray:
    """A grid: for a few samples of the last batch, the input crop, the predicted mesh over
    it and (in the loop) the SMPLify fit over it. ``last`` = (batch, prediction, fit); the
    meshes are posed here, for the samples shown only (training itself needs joints alone).
    A part-map or heatmap input (``representation``) is shown in colour
    (:func:`spin.data.representations.input_to_rgb`)."""
    from spin.data.representations import input_to_rgb
    from spin.render.figures import grid_image
    from spin.render.mesh_renderer import MeshRenderer

    batch, prediction, fit = last
    count = min(samples, batch["img"].shape[0])
    pictures = [input_to_rgb(batch["img"][i], representation) for i in range(count)]
    # Tiles of at least MIN_TILE_PX, so that small training crops stay readable.
    size = max(pictures[0].shape[0], MIN_TILE_PX)
    pictures = [
        np.asarray(Image.fromarray(p).resize((size, size), Image.BILINEAR))
        if p.shape[0] != size
        else p
        for p in pictures
    ]
    intrinsics = _crop_camera(size)
    faces = np.asarray(body_model.faces)
    fit_vertices = None
    with torch.no_grad():
        pred_vertices = body_model(
            pose_rotmats=prediction.pose_rotmats[:count].detach(),
            betas=prediction.betas[:count].detach(),
            transl=prediction.cam_t[:count].detach(),
        ).vertices
        if fit is not None:
            fit_vertices = body_model(
                pose_rotvecs=fit.pose_rotvecs[:count],
                betas=fit.betas[:count],
                transl=fit.cam_t[:count],
            ).vertices
    tiles, labels = [], []
    with MeshRenderer((size, size)) as renderer:
        for i, image in enumerate(pictures):
            tiles.append(image)
            labels.append("input")
            vertices = pred_vertices[i].cpu().numpy()
            tiles.append(renderer.render(vertices, faces, intrinsics, PRED_COLOR, image, 0.8))
            labels.append("prediction")
            if fit_vertices is not None:
                vertices = fit_vertices[i].cpu().numpy()
                tiles.append(renderer.render(vertices, faces, intrinsics, FIT_COLOR, image, 0.8))
                labels.append("SMPLify fit")
    columns = 3 if fit_vertices is not None else 2
    return grid_image(tiles, columns, labels=labels)


class RunLogger:
    """Writes scalars to ``run_dir/metrics.jsonl`` and to wandb (offline unless configured)."""

    def __init__(self, run_dir: Path, config: dict, wandb_config: WandbConfig, resume: bool):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        if not resume and self.metrics_path.exists():
            self.metrics_path.unlink()
        atomic_write_text(self.run_dir / CONFIG_NAME, json.dumps(config, indent=2))
        self.input_representation = config["data"]["input_representation"]
        self.wandb_run = None
        if wandb_config.enabled and wandb_config.mode != "disabled":
            os.environ.setdefault("WANDB_MODE", wandb_config.mode)
            os.environ.setdefault("WANDB_SILENT", "true")
            import wandb

            self.wandb_run = wandb.init(
                project=wandb_config.project,
                name=self.run_dir.name,
                dir=str(self.run_dir),
                config=config,
                mode=wandb_config.mode,
                resume="allow" if resume else None,
            )

    def log(self, scalars: dict, step: int) -> None:
        if not scalars:
            return
        with open(self.metrics_path, "a") as handle:
            handle.write(json.dumps({"step": step, **scalars}) + "\n")
        if self.wandb_run is not None:
            self.wandb_run.log(scalars, step=step)

    def log_panel(self, last, body_model, step: int) -> None:
        image = panel_images(last, body_model, representation=self.input_representation)
        path = self.run_dir / "panels" / f"step_{step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        from spin.render.figures import save_png

        save_png(path, image)
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log({"panels/predictions": wandb.Image(image)}, step=step)

    def finish(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


class NullLogger:
    """A :class:`RunLogger` that writes nothing: the logger of every rank but rank 0."""

    def log(self, scalars: dict, step: int) -> None:
        pass

    def log_panel(self, last, body_model, step: int) -> None:
        pass

    def finish(self) -> None:
        pass
