"""spin.fitting.fits_cache: un-augmented storage, SPIN's update rule, atomic persistence."""

import json
import math

import h5py
import numpy as np
import pytest
import torch

from spin.body import load_body_model
from spin.body.joint_conventions import flip_permutation
from spin.data.augment import augment_pose_rotvecs, rotate_joints_3d
from spin.fitting import fit_dataset as fd
from spin.fitting.fits_cache import (
    FITS_CACHE_FORMAT_VERSION,
    CachedFits,
    FitsCache,
    FitsCacheConfig,
    FitsCacheError,
    Update,
    supervision_from_cache,
)
from spin.geometry import rotvec_to_rotmat

NUM_BETAS = 10
SIZES = {"lsp": 6, "coco": 4}


@pytest.fixture(scope="module")
def body_model():
    return load_body_model("open-lite").to(torch.float64)


def random_poses(num: int, seed: int) -> torch.Tensor:
    """``(num, 72)`` float64 poses; global orientations of all sizes, small body rotations."""
    generator = torch.Generator().manual_seed(seed)
    pose = torch.randn(num, 72, generator=generator, dtype=torch.float64) * 0.3
    pose[:, :3] = torch.randn(num, 3, generator=generator, dtype=torch.float64)
    return pose


def augment_rows(pose: torch.Tensor, rotation, flip) -> torch.Tensor:
    """Row-wise ``augment_pose_rotvecs`` (the function takes one augmentation at a time)."""
    return torch.stack(
        [
            augment_pose_rotvecs(p[None], float(r), bool(f))[0]
            for p, r, f in zip(pose, rotation, flip, strict=True)
        ]
    )


def rotmats(pose) -> torch.Tensor:
    """``(B, 24, 3, 3)``: compare poses as rotations (a rotvec near pi has two spellings)."""
    pose = torch.as_tensor(pose, dtype=torch.float64)
    return rotvec_to_rotmat(pose.reshape(len(pose), 24, 3))


def root_relative(joints: torch.Tensor) -> torch.Tensor:
    return joints - joints[:, :1]


def mirror(joints: torch.Tensor) -> torch.Tensor:
    """Mirror SMPL-24 joints ``x -> -x`` and swap left and right."""
    return joints[:, flip_permutation("smpl24")] * torch.tensor(
        [-1.0, 1.0, 1.0], dtype=joints.dtype
    )


def store(cache, name, index, loss, pose=None, betas=None, step=0, rotation=0.0, flip=False):
    """Offer one new fit for ``name[index]``; returns whether it was written."""
    pose = torch.zeros(1, 72) if pose is None else torch.as_tensor(pose, dtype=torch.float32)
    betas = torch.zeros(1, NUM_BETAS) if betas is None else torch.as_tensor(betas).float()
    return bool(
        cache.update_if_better(
            [name], [index], [rotation], [flip], pose.reshape(1, 72), betas.reshape(1, -1),
            torch.tensor([loss]), torch.tensor([math.inf]), step,
        )[0]
    )  # fmt: skip


# --- un-augmentation ----------------------------------------------------------------------------


def test_fit_stored_under_a_flipped_rotated_view_reads_back_for_another_view(body_model):
    truth = random_poses(3, seed=0)
    betas = torch.randn(
        3, NUM_BETAS, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    index = [4, 0, 2]
    # SMPLify ran on flipped, rotated crops: its fits are in that augmented frame.
    rotation_a, flip_a = torch.tensor([30.0, -45.0, 10.0]), torch.tensor([True, True, True])
    fit_a = augment_rows(truth, rotation_a, flip_a)
    cache = FitsCache.empty(SIZES)
    updated = cache.update_if_better(
        ["lsp"] * 3, torch.tensor(index), rotation_a, flip_a, fit_a.float(), betas.float(),
        torch.tensor([5.0, 6.0, 7.0]), torch.full((3,), math.inf), step=3,
    )  # fmt: skip
    assert updated.tolist() == [True, True, True]
    stored = torch.from_numpy(cache.arrays("lsp")["pose"][index]).double()
    torch.testing.assert_close(rotmats(stored), rotmats(truth), atol=1e-5, rtol=0)

    # Read back for an un-flipped view with other rotations.
    rotation_b, flip_b = torch.tensor([-20.0, 0.0, 55.0]), torch.tensor([False, False, False])
    like = torch.zeros((), dtype=torch.float64)
    fetched = cache.fetch("lsp", torch.tensor(index), rotation_b, flip_b, like=like)
    assert fetched.pose_rotvecs.dtype == torch.float64
    # Exactly the stored record augmented for view B ...
    assert torch.equal(fetched.pose_rotvecs, augment_rows(stored, rotation_b, flip_b))
    # ... which is the truth augmented for view B.
    expected = augment_rows(truth, rotation_b, flip_b)
    torch.testing.assert_close(rotmats(fetched.pose_rotvecs), rotmats(expected), atol=1e-5, rtol=0)
    torch.testing.assert_close(fetched.betas, betas.float().double())

    # Posing the body: the truth's joints turned about the camera axis by view B's rotation.
    truth_joints = root_relative(body_model(pose_rotvecs=truth, betas=betas).joints_smpl)
    posed = root_relative(body_model(pose_rotvecs=fetched.pose_rotvecs, betas=betas).joints_smpl)
    for row, angle in enumerate(rotation_b.tolist()):
        target = rotate_joints_3d(truth_joints[row], angle)
        torch.testing.assert_close(posed[row], target, atol=1e-5, rtol=0)
    # A cache that stored the augmented fit as it came (no un-augmentation) is far off.
    wrong = augment_rows(fit_a, rotation_b, flip_b)
    wrong_posed = root_relative(body_model(pose_rotvecs=wrong, betas=betas).joints_smpl)
    assert (wrong_posed - posed).norm(dim=-1).max() > 0.1


def test_fetch_for_a_flipped_view_poses_the_mirrored_body(body_model):
    truth = random_poses(2, seed=2)
    betas = torch.zeros(2, NUM_BETAS, dtype=torch.float64)
    cache = FitsCache.empty(SIZES)
    # Stored from an un-flipped rotated view, read from a flipped one.
    rotation_a, flip_a = torch.tensor([-35.0, 15.0]), torch.tensor([0, 0])
    cache.update_if_better(
        ["coco", "coco"], [1, 3], rotation_a, flip_a, augment_rows(truth, rotation_a, flip_a),
        betas, torch.tensor([1.0, 2.0]), torch.full((2,), math.inf), step=0,
    )  # fmt: skip
    rotation_b, flip_b = torch.tensor([25.0, 0.0]), torch.tensor([1, 1])
    fetched = cache.fetch(["coco", "coco"], [1, 3], rotation_b, flip_b, like=betas)
    truth_joints = root_relative(body_model(pose_rotvecs=truth, betas=betas).joints_smpl)
    posed = root_relative(body_model(pose_rotvecs=fetched.pose_rotvecs, betas=betas).joints_smpl)
    for row, angle in enumerate(rotation_b.tolist()):
        target = mirror(rotate_joints_3d(truth_joints[row : row + 1], angle))[0]
        # The open model is left/right symmetric to about a centimetre.
        assert (posed[row] - target).norm(dim=-1).max() < 0.03
        unflipped = rotate_joints_3d(truth_joints[row], angle)
        assert (posed[row] - unflipped).norm(dim=-1).max() > 0.1


def test_fetch_follows_like_and_defaults_to_float32_cpu():
    cache = FitsCache.empty(SIZES)
    default = cache.fetch("lsp", [0, 1], [0.0, 10.0], [False, True])
    assert default.pose_rotvecs.dtype == torch.float32 and default.pose_rotvecs.device.type == "cpu"
    assert default.pose_rotvecs.shape == (2, 72) and default.betas.shape == (2, NUM_BETAS)
    assert default.has_fit.dtype == torch.bool and not default.has_fit.any()
    assert torch.isinf(default.loss).all() and not default.valid.any()
    like = torch.zeros(3, dtype=torch.float64)
    assert cache.fetch("lsp", [0], [0.0], [0], like=like).betas.dtype == torch.float64


def test_fetch_rejects_unknown_datasets_and_indices():
    cache = FitsCache.empty(SIZES)
    with pytest.raises(FitsCacheError, match="unknown dataset 'mpii'"):
        cache.fetch("mpii", [0], [0.0], [0])
    with pytest.raises(FitsCacheError, match="out of range for dataset 'coco'"):
        cache.fetch(["lsp", "coco"], [5, 4], [0.0, 0.0], [0, 0])
    with pytest.raises(FitsCacheError, match=r"rotation_deg of shape \(B,\)"):
        cache.fetch("lsp", [0, 1], [0.0], [0, 0])


# --- the update rule ----------------------------------------------------------------------------


def test_update_only_replaces_a_fit_with_a_lower_loss_on_the_same_keypoints():
    cache = FitsCache.empty(SIZES)
    # No cached fit: the caller's cached loss is ignored (counts as +inf).
    assert cache.update_if_better(
        "lsp", [2], [0.0], [0], torch.zeros(1, 72), torch.zeros(1, NUM_BETAS),
        torch.tensor([50.0]), torch.tensor([1.0]), step=1,
    ).tolist() == [True]  # fmt: skip

    def offer(new_loss, cached_loss, step, betas_value=1.0):
        return cache.update_if_better(
            "lsp", [2], [0.0], [0], torch.zeros(1, 72), torch.full((1, NUM_BETAS), betas_value),
            torch.tensor([new_loss]), torch.tensor([cached_loss]), step=step,
        ).item()  # fmt: skip

    # Compared with the cached fit's loss on these keypoints, not the stored 50.
    assert not offer(45.0, 40.0, step=2)
    assert not offer(40.0, 40.0, step=3)
    assert offer(60.0, 70.0, step=4)
    records = cache.arrays("lsp")
    assert records["loss"][2] == 60.0 and records["updated_step"][2] == 4
    assert (records["betas"][2] == 1.0).all()
    # Non-finite losses, poses or betas never replace anything.
    assert not offer(math.nan, 70.0, step=5)
    assert not offer(math.inf, math.inf, step=5)
    assert not offer(-math.inf, 70.0, step=5)
    assert not offer(1.0, 70.0, step=5, betas_value=math.nan)
    assert cache.statistics()["skipped_nonfinite"] == 4
    # A cached fit that cannot be scored (NaN) loses to any finite fit.
    assert offer(65.0, math.nan, step=6)
    records = cache.arrays("lsp")
    assert records["loss"][2] == 65.0 and records["updated_step"][2] == 6
    assert cache.statistics()["updates_total"] == 3


def test_duplicates_in_a_batch_keep_the_lowest_loss():
    cache = FitsCache.empty(SIZES)
    pose = torch.zeros(4, 72)
    pose[:, 5] = torch.tensor([0.1, 0.2, 0.3, 0.4])  # tells the rows apart
    updated = cache.update_if_better(
        ["lsp", "lsp", "coco", "lsp"], [1, 1, 1, 1], [0.0] * 4, [0] * 4, pose,
        torch.zeros(4, NUM_BETAS), torch.tensor([20.0, 10.0, 30.0, 10.0]),
        torch.full((4,), math.inf), step=7,
    )  # fmt: skip
    # Row 1 and row 3 tie at 10: the earlier wins; coco[1] is another sample.
    assert updated.tolist() == [False, True, True, False]
    assert cache.arrays("lsp")["pose"][1, 5] == pytest.approx(0.2)
    assert cache.arrays("lsp")["loss"][1] == 10.0
    assert cache.arrays("coco")["pose"][1, 5] == pytest.approx(0.3)
    assert cache.statistics()["updates_since_save"] == 2


def test_apply_updates_gives_the_same_cache_everywhere():
    """Updates gathered from several ranks, applied on each: identical caches."""
    rng = np.random.default_rng(0)

    def update(name, index, loss, step):
        pose = rng.normal(size=72).astype(np.float32)
        return Update(name, index, pose, np.zeros(NUM_BETAS, np.float32), loss, step)

    rank0 = [update("lsp", 0, 5.0, 1), update("lsp", 3, 150.0, 1)]
    rank1 = [update("lsp", 0, 4.0, 1), update("coco", 2, 7.0, 1)]
    gathered = rank0 + rank1
    caches = [FitsCache.empty(SIZES), FitsCache.empty(SIZES)]
    applied = [cache.apply_updates(gathered) for cache in caches]
    assert applied[0].tolist() == [False, True, True, True]
    for name in SIZES:
        for key, value in caches[0].arrays(name).items():
            np.testing.assert_array_equal(value, caches[1].arrays(name)[key])
    np.testing.assert_array_equal(caches[0].arrays("lsp")["pose"][0], rank1[0].pose_rotvecs)
    with pytest.raises(FitsCacheError, match="out of range"):
        caches[0].apply_updates([update("coco", 4, 1.0, 2)])
    with pytest.raises(FitsCacheError, match=r"betas of shape \(10,\)"):
        caches[0].apply_updates([Update("coco", 0, np.zeros(72), np.zeros(9), 1.0, 2)])


def test_validity_threshold():
    cache = FitsCache.empty(SIZES, FitsCacheConfig(valid_threshold=50.0))
    for index, loss in enumerate([49.9, 50.0, 120.0]):
        store(cache, "coco", index, loss)
    assert cache.arrays("coco")["valid"].tolist() == [True, False, False, False]
    fetched = cache.fetch("coco", [0, 1, 2, 3], [0.0] * 4, [0] * 4)
    assert fetched.valid.tolist() == [True, False, False, False]
    assert fetched.has_fit.tolist() == [True, True, True, False]
    stats = cache.statistics()
    assert stats["fraction_with_fit"] == pytest.approx(3 / 10)
    assert stats["fraction_valid"] == pytest.approx(1 / 10)
    assert stats["mean_valid_loss"] == pytest.approx(49.9)
    # SPIN's default threshold is 100.
    default = FitsCache.empty(SIZES)
    store(default, "coco", 0, 99.0)
    store(default, "coco", 1, 100.0)
    assert default.arrays("coco")["valid"][:2].tolist() == [True, False]


# --- supervision --------------------------------------------------------------------------------


def test_supervision_applies_validity_and_the_extreme_betas_rule():
    config = FitsCacheConfig()
    betas = torch.zeros(5, NUM_BETAS)
    betas[:, 0] = 1.0
    betas[1, 4] = 3.5
    betas[2, 9] = -3.01
    betas[3, 2] = 2.99
    cached = CachedFits(
        pose_rotvecs=torch.randn(5, 72),
        betas=betas,
        loss=torch.tensor([10.0, 20.0, 30.0, 40.0, math.inf]),
        valid=torch.tensor([True, True, True, False, False]),
        has_fit=torch.tensor([True, True, True, True, False]),
    )
    pose, out_betas, use_fit = supervision_from_cache(cached, config)
    assert torch.equal(pose, cached.pose_rotvecs)
    assert use_fit.tolist() == [True, True, True, False, False]
    assert torch.equal(out_betas[0], betas[0]) and torch.equal(out_betas[3], betas[3])
    assert (out_betas[1] == 0).all() and (out_betas[2] == 0).all()
    # The rule applies at supervision only: the cache keeps the betas SMPLify found.
    cache = FitsCache.empty(SIZES)
    store(cache, "lsp", 0, 5.0, betas=betas[1])
    assert cache.arrays("lsp")["betas"][0, 4] == pytest.approx(3.5)
    # SPIN's exact rule: validity from the loss on the current keypoints, when given.
    current = torch.tensor([150.0, 20.0, 30.0, 40.0, 1.0])
    assert supervision_from_cache(cached, config, current).use_fit.tolist() == [
        False, True, True, True, False,
    ]  # fmt: skip


# --- persistence --------------------------------------------------------------------------------


def filled_cache(config=None) -> FitsCache:
    cache = FitsCache.empty({**SIZES, "empty": 0}, config)
    rng = np.random.default_rng(3)
    pose = torch.from_numpy(rng.normal(size=(5, 72)).astype(np.float32))
    betas = torch.from_numpy(rng.normal(size=(5, NUM_BETAS)).astype(np.float32))
    cache.update_if_better(
        ["lsp", "lsp", "coco", "lsp", "coco"], [0, 5, 3, 2, 0], [10.0, 0.0, -30.0, 5.0, 0.0],
        [1, 0, 1, 0, 0], pose, betas, torch.tensor([3.0, 250.0, 40.0, 99.5, 7.0]),
        torch.full((5,), math.inf), step=11,
    )  # fmt: skip
    return cache


def assert_same_cache(a: FitsCache, b: FitsCache) -> None:
    assert a.dataset_names == b.dataset_names and a.config == b.config and a.step == b.step
    for name in a.dataset_names:
        arrays_a, arrays_b = a.arrays(name), b.arrays(name)
        assert arrays_a.keys() == arrays_b.keys()
        for key, value in arrays_a.items():
            assert value.dtype == arrays_b[key].dtype
            np.testing.assert_array_equal(value, arrays_b[key])


def test_save_load_round_trip_is_exact(tmp_path):
    cache = filled_cache(FitsCacheConfig(valid_threshold=80.0, max_abs_beta=2.5))
    path = cache.save(tmp_path / "cache.h5")
    assert cache.statistics()["updates_since_save"] == 0
    loaded = FitsCache.load(path)
    assert_same_cache(cache, loaded)
    assert loaded.step == 11 and loaded.config.valid_threshold == 80.0
    assert not (tmp_path / "cache.h5.tmp").exists()
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == FITS_CACHE_FORMAT_VERSION == 2
        assert json.loads(f.attrs["config"])["max_abs_beta"] == 2.5
        assert f["lsp/pose"].shape == (6, 72) and f["lsp/pose"].dtype == np.float32
    # A later save with an explicit step.
    cache.save(path, step=20)
    assert FitsCache.load(path).step == 20


def test_state_dict_round_trip_through_a_weights_only_checkpoint(tmp_path):
    cache = filled_cache()
    torch.save({"fits_cache": cache.state_dict()}, tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)["fits_cache"]
    restored = FitsCache.empty({"other": 1})
    restored.load_state_dict(state)
    assert_same_cache(cache, restored)


def test_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "cache.h5"
    cache = filled_cache()
    cache.save(path)
    before = FitsCache.load(path)
    store(cache, "coco", 2, 1.0, step=12)  # a change the failed save would have written

    import errno

    import spin.atomic

    def disk_full(fd):  # the file is written (built in memory first), then flushed to disk
        assert (tmp_path / "cache.h5.tmp").exists()
        raise OSError(errno.ENOSPC, "No space left on device (simulated)")

    monkeypatch.setattr(spin.atomic.os, "fsync", disk_full)
    with pytest.raises(OSError, match="simulated"):
        cache.save(path)
    monkeypatch.undo()
    assert not (tmp_path / "cache.h5.tmp").exists()
    assert_same_cache(FitsCache.load(path), before)
    assert cache.statistics()["updates_since_save"] == 1  # still unsaved


def test_leftover_tmp_from_a_killed_save_is_ignored_and_replaced(tmp_path):
    path = tmp_path / "cache.h5"
    cache = filled_cache()
    cache.save(path)
    tmp = tmp_path / "cache.h5.tmp"
    tmp.write_bytes(b"half a file")
    assert_same_cache(FitsCache.load(path), cache)
    cache.save(path)
    assert not tmp.exists()
    assert_same_cache(FitsCache.load(path), cache)


def test_load_rejects_corrupt_and_foreign_files_with_the_path(tmp_path):
    good = filled_cache().save(tmp_path / "good.h5")
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    for path in (garbage, truncated):
        with pytest.raises(FitsCacheError, match=f"{path.name}.*(corrupt|not a fits cache)"):
            FitsCache.load(path)
    with pytest.raises(FitsCacheError, match="no such fits cache"):
        FitsCache.load(tmp_path / "missing.h5")

    static = write_static_fits(tmp_path / "static.h5", sample_index=[0, 1])
    with pytest.raises(FitsCacheError, match="static.h5.*from_static_fits"):
        FitsCache.load(static)

    wrong_version = tmp_path / "v99.h5"
    wrong_version.write_bytes(good.read_bytes())
    with h5py.File(wrong_version, "r+") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(FitsCacheError, match="v99.h5 has fits cache format version 99"):
        FitsCache.load(wrong_version)

    wrong_shape = tmp_path / "shape.h5"
    wrong_shape.write_bytes(good.read_bytes())
    with h5py.File(wrong_shape, "r+") as f:
        del f["lsp/pose"]
        f["lsp/pose"] = np.zeros((6, 71), dtype=np.float32)
    with pytest.raises(FitsCacheError, match=r"shape.h5: dataset 'lsp': expected pose of shape"):
        FitsCache.load(wrong_shape)


# --- static fits --------------------------------------------------------------------------------


def write_static_fits(path, sample_index, loss=None, valid=None, num_betas=NUM_BETAS, seed=0):
    """A file in ``spin-fit-dataset``'s layout."""
    rng = np.random.default_rng(seed)
    num = len(sample_index)
    loss = np.full(num, 10.0) if loss is None else np.asarray(loss)
    valid = np.isfinite(loss) & (loss < 100) if valid is None else np.asarray(valid)
    with h5py.File(path, "w") as f:
        f["pose"] = rng.normal(size=(num, 72)).astype(np.float32)
        f["betas"] = rng.normal(size=(num, num_betas)).astype(np.float32)
        f["cam_t"] = rng.normal(size=(num, 3)).astype(np.float32)
        f["reprojection_loss"] = loss.astype(np.float32)
        f["joint_losses"] = np.zeros((num, 49), dtype=np.float32)
        f["valid"] = valid
        f["status"] = np.zeros(num, dtype=np.int8)
        f["sample_index"] = np.asarray(sample_index, dtype=np.int64)
        f.create_dataset(
            "imgname", data=np.array([f"im{i}.jpg" for i in sample_index], dtype=object),
            dtype=h5py.string_dtype(),
        )  # fmt: skip
        f.attrs["format_version"] = fd.OUTPUT_FORMAT_VERSION
        f.attrs["config"] = "{}"
    return path


def test_from_static_fits_maps_rows_to_samples(tmp_path):
    # Rows out of order; sample 1 is not in the file; one unfitted (+inf), one with a NaN
    # pose, one marked invalid by the file, one above the threshold.
    sample_index = [5, 0, 3, 2, 4]
    loss = [10.0, np.inf, 20.0, 150.0, 30.0]
    valid = [True, False, False, False, True]
    path = write_static_fits(tmp_path / "lsp.h5", sample_index, loss, valid)
    with h5py.File(path, "r+") as f:
        pose = f["pose"][()]
        pose[4, 7] = np.nan  # sample 4
        f["pose"][...] = pose
        file_pose, file_betas = f["pose"][()], f["betas"][()]

    cache = FitsCache.from_static_fits({"lsp": path}, SIZES)
    records = cache.arrays("lsp")
    assert records["loss"].tolist() == [np.inf, np.inf, 150.0, 20.0, np.inf, 10.0]
    assert records["valid"].tolist() == [False, False, False, False, False, True]
    assert (records["updated_step"] == -1).all()
    np.testing.assert_array_equal(records["pose"][5], file_pose[0])
    np.testing.assert_array_equal(records["betas"][3], file_betas[2])
    assert (records["pose"][[0, 1, 4]] == 0).all()
    # coco has no file: empty.
    assert np.isinf(cache.arrays("coco")["loss"]).all()
    # Read back through fetch: static fits are already in the un-augmented frame.
    fetched = cache.fetch("lsp", [5], [0.0], [0])
    assert torch.equal(fetched.pose_rotvecs[0], torch.from_numpy(file_pose[0]))
    assert fetched.valid.tolist() == [True]


def test_from_static_fits_rejects_mismatched_files(tmp_path):
    path = write_static_fits(tmp_path / "a.h5", [0, 1])
    with pytest.raises(FitsCacheError, match="'mpii'.*add its size"):
        FitsCache.from_static_fits({"mpii": path}, SIZES)
    with pytest.raises(FitsCacheError, match="a.h5 has 10 betas per fit, the cache 16"):
        FitsCache.from_static_fits({"lsp": path}, SIZES, FitsCacheConfig(num_betas=16))
    big = write_static_fits(tmp_path / "big.h5", [0, 6])
    with pytest.raises(FitsCacheError, match=r"big.h5: sample_index out of range \[0, 6\)"):
        FitsCache.from_static_fits({"lsp": big}, SIZES)
    not_fits = tmp_path / "other.h5"
    with h5py.File(not_fits, "w") as f:
        f["pose"] = np.zeros((2, 72), dtype=np.float32)
    with pytest.raises(FitsCacheError, match="other.h5 is not an output of spin-fit-dataset"):
        FitsCache.from_static_fits({"lsp": not_fits}, SIZES)
