"""Crash safety: ``kill -9`` spin-train and spin-fit-dataset at random moments, resume, and
check that nothing is corrupt, that at most one checkpoint interval (or one shard) of work
is lost, and that the final files equal an uninterrupted run's.

Each test prints what it injected and what survived (``pytest -rP`` shows it).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from spin.cli import fit_dataset as fit_cli
from spin.fitting import fit_dataset as fd
from spin.fitting.fits_cache import FitsCache
from spin.train import checkpoint as ckpt
from spin.train.checkpoint import CACHE_NAME, CHECKPOINT_NAME, PENDING_CACHE_NAME
from spin.train.trainer import Trainer
from tests.cli.test_fit_dataset import TINY_ARGS
from tests.fitting.test_fit_dataset import make_dataset, make_tiny_smplify, read
from tests.train.tiny import TINY, tiny_config

REPO = Path(__file__).resolve().parents[2]
NUM_STEPS = 12
CHECKPOINT_EVERY = 2
TRAIN_KILLS = 3
FIT_SAMPLES = 6
FIT_KILLS = 3
SEED = 20240607  # of the kill moments
STARTUP_TIMEOUT_S = 120.0
POLL_S = 0.02
TRAIN_OVERRIDES = [
    f"num_steps={NUM_STEPS}",
    f"checkpoint_every={CHECKPOINT_EVERY}",
    "log_every=1",
    "val_every=0",
    "wandb.image_every=0",
    "threads=1",
]


def subprocess_env() -> dict[str, str]:
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def logged_steps(metrics: Path, skip_lines: int = 0) -> list[int]:
    """Steps of the ``loss/total`` lines of ``metrics.jsonl`` after its first ``skip_lines``;
    a line being written (no newline yet) is left out."""
    if not metrics.exists():
        return []
    text = metrics.read_text()
    lines = text.split("\n")[:-1]  # the last piece is "" or a line still being written
    return [json.loads(line)["step"] for line in lines[skip_lines:] if '"loss/total"' in line]


def loss_curve(metrics: Path) -> dict[int, float]:
    """Step -> ``loss/total``; after a resume the re-run steps' lines win."""
    curve = {}
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        if "loss/total" in record:
            curve[record["step"]] = record["loss/total"]
    return curve


def committed_state(run: Path) -> tuple[int, int]:
    """(checkpoint step, step of the cache a resume would use), loading both fully."""
    state = torch.load(run / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    step = int(state["step"])
    cache = FitsCache.load(run / CACHE_NAME)
    pending = run / PENDING_CACHE_NAME
    if pending.exists() and FitsCache.load(pending).step == step:
        return step, step  # killed between the checkpoint and the cache's rename
    return step, cache.step


def assert_same_cache(path_a: Path, path_b: Path) -> None:
    cache_a, cache_b = FitsCache.load(path_a), FitsCache.load(path_b)
    assert cache_a.dataset_names == cache_b.dataset_names
    for name in cache_a.dataset_names:
        for key, value in cache_a.arrays(name).items():
            np.testing.assert_array_equal(cache_b.arrays(name)[key], value, err_msg=key)


def kill_when(command: list[str], cwd: Path, reached, rng, jitter_s: float) -> None:
    """Start ``command``, wait until ``reached()`` (or it exits, or the start-up timeout),
    wait a random moment of up to ``jitter_s``, then SIGKILL it and check it died of it."""
    process = subprocess.Popen(
        command, cwd=cwd, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while process.poll() is None and time.monotonic() < deadline:
        if reached():
            break
        time.sleep(POLL_S)
    time.sleep(rng.uniform(0.0, jitter_s))
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, stderr.decode()[-2000:]


def test_training_killed_at_random_moments_resumes_to_the_uninterrupted_result(tmp_path):
    data = tmp_path / "data"
    reference = Trainer(tiny_config(data, tmp_path / "reference", *TRAIN_OVERRIDES), progress=False)
    reference.run()  # also generates the synthetic data the subprocesses read
    run_dir = tmp_path / "killed"
    run = run_dir / "tiny"
    metrics = run / "metrics.jsonl"
    command = [
        sys.executable,
        "-m",
        "spin.cli.train",
        "--config",
        str(TINY),
        "--resume",
        "--no-progress",
        f"data.synthetic.out_dir={data}",
        f"run_dir={run_dir}",
        *TRAIN_OVERRIDES,
    ]
    rng = random.Random(SEED)
    kills = []  # (steps logged before the kill, checkpoint step after it)
    inside_commit = 0  # kills that left a pending cache (inside the checkpoint commit)
    checkpoint_step = 0
    last_target = NUM_STEPS - 4  # leaves the run a few steps to be killed in
    for _ in range(TRAIN_KILLS):
        low = min(checkpoint_step + 1, last_target)
        target = rng.randint(low, min(checkpoint_step + 4, last_target))
        skip = len(metrics.read_text().splitlines()) if metrics.exists() else 0
        # Killed at a random moment of the next step or its save.
        kill_when(
            command,
            tmp_path,
            lambda: max(logged_steps(metrics, skip), default=0) >= target,  # noqa: B023
            rng,
            0.4,
        )
        done = max(logged_steps(metrics, skip), default=0)
        assert done >= target, f"step {target} not reached in {STARTUP_TIMEOUT_S} s"

        # Nothing is corrupt: the checkpoint and the cache load, and belong to the same step.
        step, cache_step = committed_state(run)
        assert cache_step == step
        assert step % CHECKPOINT_EVERY == 0 and step <= done
        assert done - step <= CHECKPOINT_EVERY, (done, step)
        inside_commit += (run / PENDING_CACHE_NAME).exists()
        kills.append((done, step))
        checkpoint_step = step

    finished = subprocess.run(command, cwd=tmp_path, env=subprocess_env(), capture_output=True)
    assert finished.returncode == 0, finished.stderr.decode()[-2000:]
    assert f"at step {NUM_STEPS}" in finished.stdout.decode()

    lost = [done - step for done, step in kills]
    print(
        f"FAULT kill -9 spin-train x{len(kills)} after steps {[d for d, _ in kills]} of "
        f"{NUM_STEPS} (checkpoint every {CHECKPOINT_EVERY}): resumed from steps "
        f"{[s for _, s in kills]}, lost {lost} steps (max {max(lost)}); checkpoint and cache "
        f"loadable and of the same step after every kill ({inside_commit} kill(s) fell inside "
        "the checkpoint commit); the final run reached step "
        f"{NUM_STEPS} with the model, cache and loss curve of the uninterrupted run"
    )
    for (name, value), other in zip(
        reference.model.state_dict().items(),
        torch.load(run / CHECKPOINT_NAME, weights_only=True)["model"].values(),
        strict=True,
    ):
        assert torch.equal(value, other), name
    assert_same_cache(reference.run_dir / CACHE_NAME, run / CACHE_NAME)
    assert loss_curve(metrics) == loss_curve(reference.run_dir / "metrics.jsonl")
    assert not list(run.glob("*.tmp")) and not (run / PENDING_CACHE_NAME).exists()


def test_fit_dataset_killed_at_random_moments_resumes_to_the_same_file(tmp_path, monkeypatch):
    dataset = make_dataset(tmp_path / "tiny.npz", num=FIT_SAMPLES)
    args = [str(dataset), *TINY_ARGS, "--shard-size", "1"]
    out = tmp_path / "killed.h5"
    shards = fd.shard_folder(out)
    code = (
        "import sys; from tests.cli.test_fit_dataset import main_with_stand_in_prior as m; "
        "sys.exit(m(sys.argv[1:]))"
    )
    rng = random.Random(SEED)
    kills = []  # (shards done before the kill, stale temporary files it left)
    for _ in range(FIT_KILLS):
        before = len(list(shards.glob(fd.SHARD_GLOB)))
        last_target = FIT_SAMPLES - 3  # leaves the run a few shards to be killed in
        target = rng.randint(min(before + 1, last_target), min(before + 2, last_target))
        # Killed at a random moment of the next shard or its write.
        kill_when(
            [sys.executable, "-c", code, *args, "-o", str(out)],
            REPO,
            lambda: len(list(shards.glob(fd.SHARD_GLOB))) >= target,  # noqa: B023
            rng,
            0.1,
        )
        assert not out.exists(), "the run finished before it could be killed"
        finished = sorted(shards.glob(fd.SHARD_GLOB))
        for path in finished:  # every finished shard is complete
            with np.load(path) as npz:
                assert len(npz["pose"]) == 1
        kills.append((len(finished), len(list(shards.glob(fd.TEMP_PREFIX + "*")))))

    monkeypatch.setattr(fd, "build_smplify", make_tiny_smplify)
    assert fit_cli.main([*args, "-o", str(out)]) == 0
    reference = tmp_path / "uninterrupted.h5"
    assert fit_cli.main([*args, "-o", str(reference)]) == 0
    print(
        f"FAULT kill -9 spin-fit-dataset x{len(kills)} with {[k for k, _ in kills]} of "
        f"{FIT_SAMPLES} shards done ({sum(t for _, t in kills)} half-written temporary "
        "shard(s) left behind and ignored): every finished shard readable, no partial output, "
        "the rerun resumed and wrote the same file as an uninterrupted run"
    )
    assert [k for k, _ in kills] == sorted(k for k, _ in kills)  # no finished shard was lost
    resumed, expected = read(out), read(reference)
    assert resumed.keys() == expected.keys()
    for key, values in expected.items():
        np.testing.assert_array_equal(resumed[key], values, err_msg=key)
    assert not shards.exists() and not out.with_name(out.name + ".tmp").exists()


class Killed(BaseException):
    """Stands in for SIGKILL at an exact moment: nothing catches it."""


def test_kills_inside_the_checkpoint_commit_resume_exactly(tmp_path, monkeypatch):
    """The two moments a random kill rarely hits: after the pending cache is written but
    before its checkpoint, and after the checkpoint but before the cache's rename."""
    overrides = [
        "num_steps=3",
        "checkpoint_every=1",
        "val_every=0",
        "wandb.image_every=0",
        "threads=1",
    ]
    data = tmp_path / "data"
    reference = Trainer(tiny_config(data, tmp_path / "a", *overrides), progress=False)
    reference.run()
    config = tiny_config(data, tmp_path / "b", *overrides)
    run = tmp_path / "b" / "tiny"

    real_save, real_replace = ckpt.atomic_torch_save, os.replace

    def dies_writing_checkpoint_2(state, path):
        if state["step"] == 2:
            raise Killed
        real_save(state, path)

    monkeypatch.setattr(ckpt, "atomic_torch_save", dies_writing_checkpoint_2)
    with pytest.raises(Killed):
        Trainer(config, progress=False).run()
    monkeypatch.undo()
    assert FitsCache.load(run / PENDING_CACHE_NAME).step == 2  # ahead of the checkpoint
    assert committed_state(run) == (1, 1)

    def dies_renaming_the_cache(source, target):
        if Path(source).name == PENDING_CACHE_NAME:
            raise Killed
        real_replace(source, target)

    resumed = Trainer(config, resume=True, progress=False)  # drops the pending cache
    assert resumed.step == 1 and resumed.cache.step == 1
    monkeypatch.setattr(os, "replace", dies_renaming_the_cache)
    with pytest.raises(Killed):
        resumed.run()
    monkeypatch.undo()
    assert FitsCache.load(run / CACHE_NAME).step == 1  # behind the checkpoint of step 2
    assert committed_state(run) == (2, 2)

    resumed = Trainer(config, resume=True, progress=False)  # renames the pending cache
    assert resumed.step == 2 and resumed.cache.step == 2
    resumed.run()
    for (name, value), other in zip(
        reference.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(value, other), name
    assert_same_cache(reference.run_dir / CACHE_NAME, run / CACHE_NAME)
    assert loss_curve(run / "metrics.jsonl") == loss_curve(reference.run_dir / "metrics.jsonl")
    print(
        "FAULT killed between the pending cache and its checkpoint (step 2), then between the "
        "checkpoint and the cache rename (step 2): the resumes used the caches of steps 1 and "
        "2 and the run ended equal to the uninterrupted one"
    )
