"""Distributed training on CPU (gloo, 2 processes): the fits cache stays consistent across
ranks and equals a single process's, only rank 0 writes files, and spin-train runs under
torchrun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from spin.body import load_body_model
from spin.data.mixed_dataset import MixedDataset
from spin.fitting.fits_cache import FitsCache
from spin.regressor.hmr import build_hmr
from spin.train.checkpoint import load_checkpoint
from spin.train.config import TrainConfig
from spin.train.distributed import RankBatches, cleanup_distributed, local_batch_size
from spin.train.trainer import Trainer
from tests.train.tiny import TINY, tiny_config

STEPS, BATCH = 3, 4
#: In the loop with a frozen model: SMPLify's fits depend only on each sample. In float64, so
#: that the different batch sizes of 1 and 2 processes change nothing the cache can store.
EQUALITY_OVERRIDES = [
    "mode=in_loop",
    f"num_steps={STEPS}",
    f"batch_size={BATCH}",
    "lr=0.0",
    "hmr.dropout=0.0",
    "val_every=0",
    "checkpoint_every=1",
    "log_every=1",
    "threads=1",
    "wandb.image_every=0",
    "dtype=float64",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _per_sample_batchnorm(model: torch.nn.Module) -> None:
    """BatchNorm normalising with its running statistics, as in eval, even in training: a
    sample's prediction then does not depend on the other samples of its (per-rank) batch.
    Without this, each rank's BatchNorm sees half the batch and the two runs start SMPLify
    from different predictions."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
            module.train = lambda mode=True, module=module: module


def _train(rank: int, world_size: int, port: int, config: TrainConfig, out: Path) -> None:
    """One rank (``torch.multiprocessing.spawn`` target): train, then dump its own cache."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    try:
        trainer = Trainer(config, progress=False)
        _per_sample_batchnorm(trainer.model)
        trainer.run()
        np.savez(out / f"cache_rank{rank}.npz", **trainer.cache.arrays("synthetic"))
    finally:
        cleanup_distributed()


def test_global_batch_is_split_into_contiguous_rank_slices():
    batches = [list(RankBatches(1, 3, 6, rank, 3)) for rank in range(3)]
    for step, first in enumerate((6, 12)):
        assert sum((b[step] for b in batches), []) == list(range(first, first + 6))
    assert list(RankBatches(0, 2, 4)) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(ValueError, match="batch_size=6 is the global batch.*multiple of 4"):
        local_batch_size(6, 4)


def test_two_ranks_keep_the_cache_of_one_process(data_dir, tmp_path):
    # The mix puts sample 1 in both ranks' halves of step 1 (batch [6, 1 | 1, 0]), so the
    # gathered updates must also resolve a cross-rank duplicate as one process does.
    mix = MixedDataset([range(8)], [1.0], length=STEPS * BATCH, seed=0)
    halves = [[mix.source(i)[1] for i in range(k * BATCH, (k + 1) * BATCH)] for k in range(STEPS)]
    assert any(set(b[: BATCH // 2]) & set(b[BATCH // 2 :]) for b in halves), halves

    # Rank 0 also generates the data; the other rank waits for it.
    config = tiny_config(data_dir, tmp_path / "two", *EQUALITY_OVERRIDES)
    mp.spawn(_train, args=(2, _free_port(), config, tmp_path), nprocs=2)
    threads = torch.get_num_threads()
    try:
        config = tiny_config(data_dir, tmp_path / "one", *EQUALITY_OVERRIDES)
        trainer = Trainer(config, progress=False)
        _per_sample_batchnorm(trainer.model)
        trainer.run()
    finally:
        torch.set_num_threads(threads)

    single = trainer.cache.arrays("synthetic")
    rank0, rank1 = (np.load(tmp_path / f"cache_rank{rank}.npz") for rank in (0, 1))
    two = tmp_path / "two" / "tiny"
    saved = FitsCache.load(two / "fits_cache.h5").arrays("synthetic")
    for field in single:
        np.testing.assert_array_equal(rank0[field], rank1[field], err_msg=field)  # consistent
        np.testing.assert_array_equal(saved[field], rank0[field], err_msg=field)
    # Equal to one process over the same samples. Convolutions and SMPLify run on batches of
    # 2 instead of 4, which changes float rounding; in float64 (dtype=float64) that differs
    # by ~1e-13 relative, far below the cache's float32 storage, so the stored values agree
    # to one float32 rounding: 1 ulp <= eps * |value| (near-zero entries: eps * the largest).
    eps = np.finfo(np.float32).eps
    for field in ("loss", "pose", "betas"):
        finite = np.isfinite(single[field])
        np.testing.assert_array_equal(np.isfinite(rank0[field]), finite, err_msg=field)
        scale = np.abs(single[field][finite]).max()
        np.testing.assert_allclose(
            rank0[field][finite], single[field][finite], rtol=eps, atol=eps * scale, err_msg=field
        )
    for field in ("valid", "updated_step"):
        np.testing.assert_array_equal(rank0[field], single[field], err_msg=field)
    assert np.isfinite(single["loss"]).sum() >= 4
    assert single["updated_step"].max() >= 1  # later steps updated the cache too

    lines = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    train_steps = [line["step"] for line in lines if "loss/total" in line]
    assert train_steps == list(range(1, STEPS + 1))  # rank 0 alone logs
    assert "val/pa_mpjpe_mm" in json.loads((two / "final_metrics.json").read_text())


def test_spin_train_under_torchrun(data_dir, tmp_path):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "spin.cli.train",
        "--config",
        str(TINY),
        "--no-progress",
        f"data.synthetic.out_dir={data_dir}",
        f"run_dir={tmp_path}",
        "threads=1",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("done: ") == 1, done.stdout
    run = tmp_path / "tiny"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "loss/total" in line] == [1, 2]
    # Checkpoints do not depend on the number of processes: no DDP "module." prefix.
    config = tiny_config(data_dir, tmp_path)
    model = build_hmr(config.hmr, load_body_model(config.body_model))
    assert load_checkpoint(run / "checkpoint.pt", model)["step"] == 2
    assert FitsCache.load(run / "fits_cache.h5").statistics()["fraction_with_fit"] > 0
