"""spin.fitting.fit_dataset: crop-frame inputs, bad samples, the HDF5 output, resuming."""

import math
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from spin.body import load_body_model
from spin.data.augment import crop_transform, transform_points
from spin.fitting import fit_dataset as fd
from spin.fitting.smplify import SMPLify, StageConfig
from spin.geometry import (
    crop_intrinsics,
    perspective_projection,
    rotmat_to_rotvec,
    rotvec_to_rotmat,
)

IMAGE_WIDTH, IMAGE_HEIGHT = 320, 240
NUM_SAMPLES = 10
NAN_SAMPLE, NO_KEYPOINT_SAMPLE = 3, 7
BOX_MARGIN = 1.2
# Few Levenberg-Marquardt iterations: enough to fit, fast enough for a unit test.
TINY_STAGES = (
    StageConfig("camera", "camera", ("global_orient", "cam_t"), 4, "lm"),
    StageConfig("body", "body", ("global_orient", "body_pose", "betas"), 6, "lm"),
)
TINY_CONFIG = fd.FitDatasetConfig(
    body_model="open-lite", stages=TINY_STAGES, shard_size=4, batch_size=4
)


class StandInPrior(torch.nn.Module):
    """A unit Gaussian pose prior with GMMPrior's interface (energy and residuals)."""

    def forward(self, body_pose):
        return 0.5 * (body_pose**2).sum(-1)

    def residuals(self, body_pose):
        return body_pose


def make_smplify(config: fd.FitDatasetConfig) -> SMPLify:
    """The tests' SMPLify factory: the configured body model with the stand-in prior."""
    return SMPLify(load_body_model(config.body_model), StandInPrior(), config.smplify_config())


def make_smplify_float64(config: fd.FitDatasetConfig) -> SMPLify:
    """:func:`make_smplify` in double precision (for comparisons across thread counts)."""
    body_model = load_body_model(config.body_model).to(torch.float64)
    return SMPLify(body_model, StandInPrior(), config.smplify_config())


def make_tiny_smplify(config: fd.FitDatasetConfig) -> SMPLify:
    """:func:`make_smplify` with TINY_STAGES whatever the configuration says (CLI tests)."""
    return make_smplify(replace(config, stages=TINY_STAGES))


def make_dataset(path: Path, num: int = NUM_SAMPLES, seed: int = 0) -> Path:
    """A SPIN ``.npz`` of open-lite bodies posed at random, seen by a perspective camera in
    320x240 images (no image files); sample NAN_SAMPLE has a NaN keypoint and
    NO_KEYPOINT_SAMPLE (if ``num`` reaches it) no confident keypoint."""
    rng = np.random.default_rng(seed)
    body = load_body_model("open-lite").to(torch.float64)
    pose = rng.normal(scale=0.2, size=(num, 72))
    for i in range(num):  # upright in the camera frame (180 degrees about x), then a yaw
        turn = torch.tensor([math.pi, 0.0, 0.0], dtype=torch.float64)
        yaw = torch.tensor([0.0, rng.uniform(-1.0, 1.0), 0.0], dtype=torch.float64)
        orient = rotvec_to_rotmat(turn) @ rotvec_to_rotmat(yaw)
        pose[i, :3] = rotmat_to_rotvec(orient).numpy()
    transl = np.stack(
        [rng.uniform(-0.3, 0.3, num), rng.uniform(-0.2, 0.2, num), rng.uniform(4.5, 6.0, num)], 1
    )
    with torch.no_grad():
        joints = body(
            pose_rotvecs=torch.from_numpy(pose),
            betas=torch.from_numpy(rng.normal(scale=0.7, size=(num, 10))),
            transl=torch.from_numpy(transl),
        ).joints_spin
    intrinsics = torch.tensor(
        [[500.0, 0, IMAGE_WIDTH / 2], [0, 500.0, IMAGE_HEIGHT / 2], [0, 0, 1]]
    )
    pixels = perspective_projection(joints, intrinsics.to(joints)).numpy()
    pixels += rng.normal(scale=0.5, size=pixels.shape)
    keypoints = np.concatenate([pixels, np.ones((num, 49, 1))], axis=-1)
    keypoints[:, [17, 18]] = 0.0  # undetected ears
    lo, hi = pixels.min(axis=1), pixels.max(axis=1)
    keypoints[NAN_SAMPLE, 5, 0] = np.nan
    if NO_KEYPOINT_SAMPLE < num:
        keypoints[NO_KEYPOINT_SAMPLE, :, 2] = 0.0
    np.savez(
        path,
        imgname=np.array([f"images/{i:03d}.jpg" for i in range(num)]),
        center=(lo + hi) / 2,
        scale=BOX_MARGIN * (hi - lo).max(axis=1) / 200.0,
        openpose=keypoints[:, :25],
        part=keypoints[:, 25:],
    )
    return path


def run(source, out, config=TINY_CONFIG, **kwargs) -> fd.FitSummary:
    return fd.fit_dataset(source, out, config, progress=False, make_smplify=make_smplify, **kwargs)


def read(path) -> dict[str, np.ndarray]:
    return fd.load_fits(path)[0]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny.npz")


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory) -> tuple[Path, fd.FitSummary]:
    out = tmp_path_factory.mktemp("fits") / "fits.h5"
    return out, run(dataset, out)


# --- inputs -------------------------------------------------------------------------------


def test_keypoints_to_crop_matches_the_crop_transform():
    rng = np.random.default_rng(1)
    keypoints = np.concatenate([rng.uniform(0, 300, (3, 5, 2)), rng.uniform(0, 1, (3, 5, 1))], -1)
    center, scale = rng.uniform(50, 250, (3, 2)), rng.uniform(0.5, 2.0, 3)
    crop = fd.keypoints_to_crop(keypoints, center, scale)
    for i in range(3):
        expected = transform_points(keypoints[i, :, :2], crop_transform(center[i], scale[i], 224))
        np.testing.assert_allclose(crop[i, :, :2], expected, atol=1e-9)
    np.testing.assert_array_equal(crop[..., 2], keypoints[..., 2])
    # The box centre lands on the crop centre, its corners on the crop's.
    corner = center[:, None] + 100 * scale[:, None, None] * np.array([[-1.0, -1.0], [1, 1]])
    crop_corners = fd.keypoints_to_crop(corner, center, scale)
    np.testing.assert_allclose(crop_corners, [[[0, 0], [224, 224]]] * 3, atol=1e-9)


def test_input_status_flags_each_kind_of_bad_sample():
    keypoints = np.ones((6, 49, 3))
    center, scale = np.zeros((6, 2)), np.ones(6)
    keypoints[1, 10, 1] = np.inf
    keypoints[2, :, 2] = 0.0
    keypoints[3, :, 2] = 0.0
    keypoints[3, 0, 2] = 1.0  # one confident keypoint is not enough
    keypoints[4, :, 2] = 0.0
    keypoints[4, [1, 9, 12], 2] = 1.0  # only ignored joints (neck, hips) are confident
    scale[5] = 0.0
    status = fd.input_status(keypoints, center, scale)
    S = fd.FitStatus
    expected = [S.OK, S.NONFINITE_KEYPOINTS, S.TOO_FEW_KEYPOINTS, S.TOO_FEW_KEYPOINTS]
    assert status.tolist() == [*expected, S.TOO_FEW_KEYPOINTS, S.BAD_BOX]


def test_fits_are_deterministic_and_nearly_independent_of_their_batch(dataset):
    """Refitting a batch gives the same bits. Another batch composition gives the same fit up
    to float32 round-off, which Levenberg-Marquardt's accept/reject steps can amplify (to
    ~1e-4 here); so shards are always batched the same way (fixed shard and batch sizes)."""
    inputs = fd.dataset_inputs(dataset)
    good = np.flatnonzero(inputs.status == fd.FitStatus.OK)[:5]
    smplify = make_smplify(TINY_CONFIG)
    init = fd.mean_initialisation(len(inputs), 10)
    whole = fd.fit_batch(smplify, inputs.keypoints[good], init.select(good))
    again = fd.fit_batch(smplify, inputs.keypoints[good], init.select(good))
    np.testing.assert_array_equal(again.pose_rotvecs, whole.pose_rotvecs)
    np.testing.assert_array_equal(again.reprojection_loss, whole.reprojection_loss)
    part = fd.fit_batch(smplify, inputs.keypoints[good[2:5]], init.select(good[2:5]))
    np.testing.assert_allclose(part.pose_rotvecs, whole.pose_rotvecs[2:5], atol=1e-2)
    np.testing.assert_allclose(part.reprojection_loss, whole.reprojection_loss[2:5], rtol=1e-2)


# --- the output file ----------------------------------------------------------------------


def test_output_has_the_documented_datasets(uninterrupted):
    out, summary = uninterrupted
    n = NUM_SAMPLES
    expected = {
        "pose": ((n, 72), np.float32),
        "betas": ((n, 10), np.float32),
        "cam_t": ((n, 3), np.float32),
        "reprojection_loss": ((n,), np.float32),
        "joint_losses": ((n, 49), np.float32),
        "valid": ((n,), np.bool_),
        "status": ((n,), np.int8),
        "sample_index": ((n,), np.int64),
    }
    with h5py.File(out, "r") as f:
        for name, (shape, dtype) in expected.items():
            assert f[name].shape == shape and f[name].dtype == dtype, name
            assert f[name].attrs["description"]
        assert f["imgname"].asstr()[3] == "images/003.jpg"
        attrs = dict(f.attrs)
    assert attrs["frame"] == "crop 224, f=5000"
    assert attrs["mode"] == "anchored" and attrs["body_model"] == "open-lite"
    assert '"shard_size": 4' in attrs["config"]
    assert Path(attrs["source"]).name == "tiny.npz"
    assert attrs["created"] and attrs["spin_hmr_version"]
    assert summary.complete and not fd.shard_folder(out).exists()
    np.testing.assert_array_equal(read(out)["sample_index"], np.arange(n))


def test_bad_samples_are_marked_invalid_and_counted(uninterrupted):
    out, summary = uninterrupted
    fits = read(out)
    assert fits["status"][NAN_SAMPLE] == fd.FitStatus.NONFINITE_KEYPOINTS
    assert fits["status"][NO_KEYPOINT_SAMPLE] == fd.FitStatus.TOO_FEW_KEYPOINTS
    for i in (NAN_SAMPLE, NO_KEYPOINT_SAMPLE):
        assert not fits["valid"][i]
        assert fits["reprojection_loss"][i] == np.inf and np.isnan(fits["cam_t"][i]).all()
    assert summary.counts["nonfinite_keypoints"] == 1 and summary.counts["too_few_keypoints"] == 1
    assert summary.fitted_now == NUM_SAMPLES - 2
    text = summary.format()
    assert "nonfinite keypoints: 1" in text and "too few keypoints: 1" in text
    assert "fits/s" in text and "50%" in text and str(out) in text
    np.testing.assert_array_equal(fits["valid"], fits["status"] == fd.FitStatus.OK)


def test_fits_lower_the_reprojection_loss(dataset, uninterrupted):
    out, _ = uninterrupted
    fits = read(out)
    inputs = fd.dataset_inputs(dataset)
    good = np.flatnonzero(inputs.status == fd.FitStatus.OK)
    smplify = make_smplify(TINY_CONFIG)
    init = fd.mean_initialisation(len(good), 10)
    kp = torch.from_numpy(inputs.keypoints[good])
    intrinsics = crop_intrinsics((len(good),), kp)
    pose, betas = torch.from_numpy(init.pose_rotvecs), torch.from_numpy(init.betas)
    cam_t = fd.initial_cam_t(smplify, kp, intrinsics, pose, betas)
    initial = smplify.reprojection_loss(pose, betas, cam_t, kp, intrinsics).numpy()
    final = fits["reprojection_loss"][good]
    assert (final < 0.5 * initial).all(), (initial, final)
    # The stored loss is the loss of the stored parameters on the crop keypoints.
    again = smplify.reprojection_loss(
        *(torch.from_numpy(fits[k][good]) for k in ("pose", "betas", "cam_t")), kp, intrinsics
    )
    np.testing.assert_allclose(again.numpy(), final, rtol=1e-4)
    threshold = TINY_CONFIG.valid_threshold
    np.testing.assert_array_equal(fits["valid"][good], final < threshold)
    above = fits["status"][good] == fd.FitStatus.ABOVE_THRESHOLD
    np.testing.assert_array_equal(above, final >= threshold)


# --- resuming -----------------------------------------------------------------------------


def test_killed_and_resumed_run_equals_an_uninterrupted_one(dataset, uninterrupted, tmp_path):
    out = tmp_path / "fits.h5"
    first = run(dataset, out, max_shards=1)  # the "kill": stop after one shard
    shards = sorted(fd.shard_folder(out).glob("shard_*.npz"))
    assert [p.name for p in shards] == ["shard_00000.npz"]
    assert not out.exists() and not first.complete and "rerun" in first.format()
    second = run(dataset, out)
    assert second.complete and second.shards_resumed == 1 and second.shards_fitted == 2
    resumed, reference = read(out), read(uninterrupted[0])
    assert resumed.keys() == reference.keys()
    for key, values in reference.items():
        np.testing.assert_array_equal(resumed[key], values, err_msg=key)


def test_resuming_with_another_configuration_is_an_error(dataset, tmp_path):
    out = tmp_path / "fits.h5"
    run(dataset, out, max_shards=1)
    with pytest.raises(fd.ShardMismatchError, match="--overwrite"):
        run(dataset, out, replace(TINY_CONFIG, seed=1))
    with pytest.raises(fd.ShardMismatchError, match="different configuration"):
        run(dataset, out, replace(TINY_CONFIG, shard_size=5))
    summary = run(dataset, out, replace(TINY_CONFIG, shard_size=5), overwrite=True)
    assert summary.complete and summary.shards_resumed == 0
    with pytest.raises(fd.FitDatasetError, match="exists; pass --overwrite"):
        run(dataset, out)


def test_stale_temporary_shards_are_ignored(dataset, tmp_path):
    out = tmp_path / "fits.h5"
    folder = fd.shard_folder(out)
    folder.mkdir()
    (folder / (fd.TEMP_PREFIX + "half_written.npz")).write_bytes(b"\x00" * 10)
    assert run(dataset, out, replace(TINY_CONFIG, limit=2)).complete


# --- initialisation -----------------------------------------------------------------------


def test_mean_initialisation_is_upright_and_facing_the_camera():
    init = fd.mean_initialisation(2, 10)
    rotation = rotvec_to_rotmat(torch.from_numpy(init.pose_rotvecs[0, :3]).double()).numpy()
    up, front = rotation @ [0, 1, 0], rotation @ [0, 0, 1]
    assert up[1] < -0.99 and front[2] < -0.99  # SMPL up is camera -y, front faces the camera
    assert not init.pose_rotvecs[:, 3:].any() and not init.betas.any()
    assert np.isnan(init.cam_t).all()


def test_fits_initialisation_starts_from_earlier_fits(dataset, uninterrupted, tmp_path):
    reference = read(uninterrupted[0])
    no_steps = tuple(replace(stage, iterations=0) for stage in TINY_STAGES)
    config = replace(TINY_CONFIG, init=f"fits:{uninterrupted[0]}", stages=no_steps)
    out = tmp_path / "again.h5"
    run(dataset, out, config)
    again = read(out)
    fitted = reference["valid"]
    for key in ("pose", "betas", "cam_t"):
        np.testing.assert_allclose(again[key][fitted], reference[key][fitted], atol=1e-6)
    np.testing.assert_allclose(
        again["reprojection_loss"][fitted], reference["reprojection_loss"][fitted], rtol=1e-4
    )


def test_checkpoint_initialisation_is_not_available_yet():
    with pytest.raises(fd.InitUnavailableError, match="training issue"):
        fd.parse_init("checkpoint:model.pt")
    with pytest.raises(fd.FitDatasetError, match="unknown initialisation"):
        fd.FitDatasetConfig(init="regressor")


@pytest.fixture(scope="module")
def uninterrupted_float64(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fits64") / "fits.h5"
    fd.fit_dataset(dataset, out, TINY_CONFIG, progress=False, make_smplify=make_smplify_float64)
    return out


def _check_workers(dataset, reference_out, out, workers):
    """Workers (1 torch thread each) give the fits of one process (all threads). The fits
    are computed in float64, where the two thread counts' different summation orders differ
    by ~1e-13 relative, and stored in float32: they agree to one float32 rounding, 1 ulp <=
    eps * |value| (entries near zero: eps * the array's largest)."""
    summary = fd.fit_dataset(
        dataset,
        out,
        TINY_CONFIG,
        progress=False,
        make_smplify=make_smplify_float64,
        workers=workers,
    )
    assert summary.complete and summary.shards_fitted == 3
    reference, fits = read(reference_out), read(out)
    np.testing.assert_array_equal(fits["status"], reference["status"])
    eps = np.finfo(np.float32).eps
    for key in ("pose", "betas", "cam_t", "reprojection_loss"):
        finite = np.isfinite(reference[key])
        np.testing.assert_array_equal(np.isfinite(fits[key]), finite, err_msg=key)
        scale = np.abs(reference[key][finite]).max()
        np.testing.assert_allclose(
            fits[key][finite], reference[key][finite], rtol=eps, atol=eps * scale, err_msg=key
        )


def test_the_workers_code_path(dataset, uninterrupted_float64, tmp_path, monkeypatch):
    # joblib's in-process backend (loky workers take ~20 s to start on 2 cores: each imports
    # torch); test_loky_workers_give_the_same_fits runs the real one.
    monkeypatch.setattr(fd, "PARALLEL_BACKEND", "sequential")
    threads = torch.get_num_threads()
    try:
        _check_workers(dataset, uninterrupted_float64, tmp_path / "threads.h5", workers=2)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_loky_workers_give_the_same_fits(dataset, uninterrupted_float64, tmp_path):
    _check_workers(dataset, uninterrupted_float64, tmp_path / "workers.h5", workers=2)
