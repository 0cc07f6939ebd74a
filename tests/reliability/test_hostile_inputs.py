"""Hostile and broken inputs: each gets a clear error naming the file, or is skipped (or its
bad labels dropped) and counted, and a training run never dies of one bad sample.

Covered elsewhere (not repeated here): corrupt and truncated images
(tests/data/test_spin_dataset.py::test_corrupt_image_is_skipped_counted_and_warned_once),
missing keys and inconsistent lengths (tests/data/test_spin_dataset.py::
test_missing_key_is_named, ::test_inconsistent_length_is_named), a body model pickle that
tries to run code (tests/body/test_loading.py::test_malicious_pickle_is_refused_without_running),
corrupt, truncated and foreign fits caches
(tests/fitting/test_fits_cache.py::test_load_rejects_corrupt_and_foreign_files_with_the_path),
NaN keypoints in spin-fit-dataset
(tests/fitting/test_fit_dataset.py::test_bad_samples_are_marked_invalid_and_counted).
Each test prints the faults it injected and what happened (``pytest -rP`` shows it).
"""

from __future__ import annotations

import math
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from spin.data.spin_dataset import DatasetFormatError, SpinDataset
from spin.data.synthetic import SyntheticConfig, generate_synthetic
from spin.fitting.fits_cache import FitsCache, FitsCacheConfig, FitsCacheError
from spin.train import checkpoint as ckpt
from spin.train.trainer import Trainer
from tests.train.tiny import tiny_config

NUM_SAMPLES = 5
CORRUPT_IMAGE_SAMPLE = 4
EXPECTED_DROPS = {"2D keypoints": 2, "3D joints": 1, "SMPL pose/shape": 2}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A few synthetic samples with all labels: ``(npz, image folder)``."""
    folder = tmp_path_factory.mktemp("synthetic")
    config = SyntheticConfig(image_size=(96, 96), body_model="open-lite", fraction_3d=1.0)
    generate_synthetic(config, NUM_SAMPLES, folder, split="train", progress=False)
    return folder / "train.npz", folder


def hostile_copy(synthetic, tmp_path):
    """The synthetic data with NaN/inf labels on every sample but one, whose image is cut
    short: ``(npz, image folder)`` in ``tmp_path``."""
    npz, folder = synthetic
    images = tmp_path / "images"
    shutil.copytree(folder / "images", images)
    arrays = dict(np.load(npz))
    arrays["openpose"][0, 3, 0] = np.nan
    arrays["shape"][0, 1] = np.inf
    arrays["part"][1, 5, 1] = -np.inf
    arrays["S"][2, 0, 2] = np.nan
    arrays["pose"][3, 10] = np.nan
    image = tmp_path / str(arrays["imgname"][CORRUPT_IMAGE_SAMPLE])
    image.write_bytes(image.read_bytes()[:300])
    path = tmp_path / "hostile.npz"
    np.savez(path, **arrays)
    return path, tmp_path


def test_nonfinite_labels_are_dropped_and_counted(synthetic, tmp_path):
    npz, folder = hostile_copy(synthetic, tmp_path)
    with pytest.warns(UserWarning, match=r"hostile.npz.*2D keypoints of 2 sample\(s\)"):
        dataset = SpinDataset(npz, folder, img_size=64, is_train=False)
    assert dataset.dropped_labels == EXPECTED_DROPS
    assert "SMPL pose/shape dropped (NaN/inf) on 2 sample(s)" in dataset.summary()
    for index in range(CORRUPT_IMAGE_SAMPLE):
        item = dataset[index]
        for key, value in item.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                assert torch.isfinite(value).all(), (index, key)
    assert dataset[0]["keypoints_orig"][3].eq(0).all()  # the NaN keypoint: no position
    assert dataset[0]["keypoints"][3, 2] == 0  # and no weight
    assert dataset[0]["has_smpl"] == 0 and dataset[3]["has_smpl"] == 0
    assert dataset[2]["has_pose_3d"] == 0 and dataset[1]["has_pose_3d"] == 1


def test_training_on_bad_samples_completes_with_finite_losses(synthetic, tmp_path):
    npz, folder = hostile_copy(synthetic, tmp_path / "data")
    entry = f"{{name: hostile, npz: {npz}, images: {folder}}}"
    config = tiny_config(
        tmp_path / "unused",
        tmp_path / "runs",
        f"data.train=[{entry}]",
        "data.val=null",
        f"batch_size={NUM_SAMPLES}",
        "num_steps=2",
        "val_every=0",
        "wandb.image_every=0",
        "threads=1",
    )
    with pytest.warns(UserWarning):  # the dropped labels, then the corrupt image
        trainer = Trainer(config, progress=False)
        metrics = trainer.run()  # raises FloatingPointError on a non-finite loss
    assert trainer.step == 2
    assert all(math.isfinite(v) for k, v in metrics.items() if k.startswith("loss/"))
    dataset = trainer.train_sets[0]
    draws = [trainer.train_data.source(i)[1] for i in range(2 * NUM_SAMPLES)]
    assert dataset.skipped == draws.count(CORRUPT_IMAGE_SAMPLE)
    cache = FitsCache.load(trainer.run_dir / ckpt.CACHE_NAME).arrays("hostile")
    fitted = np.isfinite(cache["loss"])
    assert fitted.any() and np.isfinite(cache["pose"][fitted]).all()
    print(
        f"FAULT {sum(EXPECTED_DROPS.values())} samples with NaN/inf labels "
        f"({EXPECTED_DROPS}) + 1 truncated image in a {NUM_SAMPLES}-sample training set: "
        f"labels dropped and counted, the image's {dataset.skipped} draw(s) of "
        f"{len(draws)} replaced and counted, 2 training steps with finite losses "
        f"(loss/total {metrics['loss/total']:.3g}), {int(fitted.sum())} finite fits cached"
    )


def test_empty_dataset_and_wrong_shapes_are_errors_naming_the_file(synthetic, tmp_path):
    npz, folder = synthetic
    arrays = dict(np.load(npz))
    empty = tmp_path / "empty.npz"
    np.savez(empty, **{key: value[:0] for key, value in arrays.items()})
    with pytest.raises(DatasetFormatError, match=r"empty.npz: no samples"):
        SpinDataset(empty, folder)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, **{**arrays, "part": arrays["part"][..., :2]})
    declared = r"wrong.npz: key 'part' declares shape \(5, 24, 2\)"
    with pytest.raises(DatasetFormatError, match=declared):
        SpinDataset(wrong, folder)
    print("FAULT empty dataset, wrong 'part' shape: clear errors naming the file and key")


class Exploit:
    """Pickles as a call of ``func(*args)``: what a malicious checkpoint carries."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class Stowaway:
    """An innocent-looking class instance, which a weights-only load must refuse too."""


def test_checkpoints_with_code_or_unexpected_objects_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    model = torch.nn.Linear(2, 2)
    good = {
        "step": 1,
        "model": model.state_dict(),
        "optimizer": torch.optim.Adam(model.parameters()).state_dict(),
        "torch_rng": torch.get_rng_state(),
        "config": "{}",
        "extra": "{}",
    }
    hostile = {
        "os.system": {**good, "extra": Exploit(os.system, f"touch {marker}")},
        "eval": {**good, "model": Exploit(eval, f"open({str(marker)!r}, 'w')")},
        "class instance": {**good, "extra": Stowaway()},
    }
    for kind, state in hostile.items():
        path = tmp_path / f"{kind}.pt"
        with open(path, "wb") as handle:
            pickle.dump(state, handle, protocol=2)  # torch.load reads plain pickles too
        with pytest.raises(ValueError, match=f"refusing to load checkpoint .*{kind}.pt"):
            ckpt.load_checkpoint(path, model)
        assert not marker.exists(), kind
    torch.save({"model": model.state_dict()}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match=r"partial.pt is not a spin-train checkpoint.*'step'"):
        ckpt.load_checkpoint(tmp_path / "partial.pt")
    print(
        f"FAULT {len(hostile)} checkpoints with code or class instances, 1 without a "
        "checkpoint's entries: all refused with the path named, no code ran"
    )


def test_resume_from_truncated_files_names_them(tmp_path):
    overrides = ["num_steps=1", "val_every=0", "wandb.image_every=0", "threads=1"]
    config = tiny_config(tmp_path / "data", tmp_path, *overrides)
    Trainer(config, progress=False).run()
    run = tmp_path / "tiny"
    for name, error in [(ckpt.CACHE_NAME, FitsCacheError), (ckpt.CHECKPOINT_NAME, ValueError)]:
        path = run / name
        intact = path.read_bytes()
        path.write_bytes(intact[: len(intact) // 2])
        with pytest.raises(error, match=f"{name}.*(truncated|corrupt)"):
            Trainer(config, resume=True, progress=False)
        path.write_bytes(intact)
    print("FAULT checkpoint.pt, fits_cache.h5 cut to half: resume stops with an error naming it")


def test_a_cache_commit_cut_short_is_finished_or_dropped_on_resume(tmp_path):
    config = FitsCacheConfig()

    def cache_file(name, step, loss):
        cache = FitsCache.empty({"data": 2}, config)
        cache._records["data"]["loss"][:] = loss
        return cache.save(tmp_path / name, step=step)

    # Killed after the checkpoint of step 4 landed, before the cache's rename.
    cache_file(ckpt.CACHE_NAME, 2, 20.0)
    cache_file(ckpt.PENDING_CACHE_NAME, 4, 40.0)
    assert ckpt.settle_fits_cache(tmp_path, 4) == tmp_path / ckpt.CACHE_NAME
    assert FitsCache.load(tmp_path / ckpt.CACHE_NAME).step == 4
    assert not (tmp_path / ckpt.PENDING_CACHE_NAME).exists()
    # Killed after the pending cache of step 6, before its checkpoint.
    cache_file(ckpt.PENDING_CACHE_NAME, 6, 60.0)
    ckpt.settle_fits_cache(tmp_path, 4)
    loaded = FitsCache.load(tmp_path / ckpt.CACHE_NAME)
    assert loaded.step == 4 and (loaded.arrays("data")["loss"] == 40.0).all()
    assert not (tmp_path / ckpt.PENDING_CACHE_NAME).exists()
