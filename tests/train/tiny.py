"""The few-second training configuration the trainer tests share (configs/tiny.yaml)."""

from __future__ import annotations

from pathlib import Path

from spin.config import load_config
from spin.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"


def tiny_config(data_dir, run_dir, *overrides) -> TrainConfig:
    """configs/tiny.yaml with its synthetic data in ``data_dir`` and runs in ``run_dir``."""
    return load_config(
        TrainConfig,
        TINY,
        [f"data.synthetic.out_dir={data_dir}", f"run_dir={run_dir}", *overrides],
    )
