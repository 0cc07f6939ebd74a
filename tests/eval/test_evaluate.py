"""spin.eval.evaluate on tiny data: a hand computation of the metrics, the 3DPW and H36M
paths on the converters' fixtures, the report's header, refinement and body-model checks.

The checkpoint is an untrained tiny regressor (configs/tiny.yaml, open-lite body) whose pose
head is given larger random weights, so that every sample gets its own prediction.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spin.body import load_body_model, load_body_model_data, save_body_model_data
from spin.config import build_config, config_to_dict, load_config
from spin.data.formats import save_spin_npz
from spin.data.spin_dataset import SpinDataset
from spin.data.synthetic import SyntheticConfig, generate_synthetic
from spin.eval.evaluate import (
    BodyModelMismatchError,
    evaluate,
    format_table,
    save_figure,
    save_json,
)
from spin.eval.protocols import get_protocol
from spin.predict import load_predictor
from spin.regressor.hmr import build_hmr
from spin.train.checkpoint import load_checkpoint, save_checkpoint
from spin.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"
NUM_SYNTHETIC = 5
#: SPIN's evaluation joints, written out independently of the package: the rows of the
#: H36M-17 joints giving the 14 LSP-order ones (H36M thorax -> neck, head -> head top).
LSP14_FROM_H36M = [3, 2, 1, 4, 5, 6, 16, 15, 14, 11, 12, 13, 8, 10]
PELVIS = 0
TOLERANCE_MM = 0.01


# --- Builders shared with tests/cli/test_eval.py --------------------------------------------


def make_synthetic_set(folder: Path, num: int = NUM_SYNTHETIC) -> Path:
    """A tiny synthetic test split (open-lite people, all with SMPL ground truth)."""
    config = SyntheticConfig(image_size=(96, 96), body_model="open-lite", fraction_3d=1.0)
    generate_synthetic(config, num, folder, split="test", progress=False)
    return folder / "test.npz"


def make_checkpoint(run_dir: Path, synthetic_dir: Path, seed: int = 0) -> Path:
    """An untrained tiny regressor saved like spin-train saves one (open-lite body model)."""
    config = load_config(
        TrainConfig,
        TINY,
        [f"run_dir={run_dir}", f"data.synthetic.out_dir={synthetic_dir}"],
    )
    torch.manual_seed(seed)
    model = build_hmr(config.hmr, load_body_model(config.body_model))
    with torch.no_grad():  # predictions that differ visibly between samples
        model.decpose.weight.normal_(0.0, 0.02)
        model.decshape.weight.normal_(0.0, 0.02)
    optimizer = torch.optim.Adam(model.parameters())
    return save_checkpoint(run_dir, model, optimizer, 1, config_to_dict(config))


# --- The hand computation ------------------------------------------------------------------


def procrustes_numpy(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``source`` (N, 3) moved onto ``target`` by the best scale, rotation and translation."""
    mu_s, mu_t = source.mean(axis=0), target.mean(axis=0)
    x, y = (source - mu_s).T, (target - mu_t).T  # (3, N)
    k = x @ y.T
    u, _, vt = np.linalg.svd(k)
    v = vt.T
    z = np.eye(3)
    z[2, 2] = np.sign(np.linalg.det(u @ v.T))  # a rotation, not a reflection
    rotation = v @ z @ u.T
    scale = np.trace(rotation @ k) / np.sum(x**2)
    translation = mu_t - scale * rotation @ mu_s
    return (scale * rotation @ source.T).T + translation


def predictions(checkpoint: Path, npz: Path, images: Path, rows) -> tuple[np.ndarray, ...]:
    """Predicted H36M-17 joints (R, 17, 3) and vertices, one sample at a time."""
    config = build_config(TrainConfig, load_checkpoint(checkpoint)["config"])
    body = load_body_model(config.body_model)
    model = build_hmr(config.hmr, body)
    load_checkpoint(checkpoint, model)
    model.eval()
    dataset = SpinDataset(npz, images, img_size=config.data.img_size, is_train=False)
    joints, vertices = [], []
    with torch.no_grad():
        for row in rows:
            prediction = model(dataset[int(row)]["img"][None])
            out = body(pose_rotmats=prediction.pose_rotmats, betas=prediction.betas)
            joints.append(out.joints_h36m[0].double().numpy())
            vertices.append(out.vertices[0].double().numpy())
    return np.stack(joints), np.stack(vertices)


def hand_errors(pred17, gt17, pred_vertices=None, gt_vertices=None) -> dict[str, np.ndarray]:
    """MPJPE, PA-MPJPE (and PVE) in mm, per sample, by the protocol written out in numpy."""
    mpjpe, pa, pve = [], [], []
    for i in range(len(pred17)):
        pred = (pred17[i] - pred17[i, PELVIS])[LSP14_FROM_H36M]
        gt = (gt17[i] - gt17[i, PELVIS])[LSP14_FROM_H36M]
        mpjpe.append(np.linalg.norm(pred - gt, axis=1).mean() * 1000.0)
        pa.append(np.linalg.norm(procrustes_numpy(pred, gt) - gt, axis=1).mean() * 1000.0)
        if pred_vertices is not None:
            pv = pred_vertices[i] - pred17[i, PELVIS]
            gv = gt_vertices[i] - gt17[i, PELVIS]
            pve.append(np.linalg.norm(pv - gv, axis=1).mean() * 1000.0)
    out = {"mpjpe": np.array(mpjpe), "pa_mpjpe": np.array(pa)}
    if pred_vertices is not None:
        out["pve"] = np.array(pve)
    return out


def hand_synthetic_errors(checkpoint: Path, npz: Path) -> dict[str, np.ndarray]:
    arrays = np.load(npz)
    rows = np.arange(len(arrays["imgname"]))
    pred17, pred_vertices = predictions(checkpoint, npz, npz.parent, rows)
    body = load_body_model("open-lite")
    with torch.no_grad():
        gt = body(
            pose_rotvecs=torch.as_tensor(arrays["pose"], dtype=torch.float32),
            betas=torch.as_tensor(arrays["shape"], dtype=torch.float32),
        )
    return hand_errors(
        pred17, gt.joints_h36m.double().numpy(), pred_vertices, gt.vertices.double().numpy()
    )


# --- Fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_npz(tmp_path_factory) -> Path:
    return make_synthetic_set(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, synthetic_npz) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("run"), synthetic_npz.parent)


@pytest.fixture(scope="module")
def synthetic_report(checkpoint, synthetic_npz):
    # Batches of 2 over 5 samples: the last batch is partial.
    return evaluate(
        checkpoint, synthetic_npz, None, get_protocol("synthetic"), batch_size=2, progress=False
    )


@pytest.fixture
def no_smpl(monkeypatch):
    monkeypatch.delenv("SPIN_SMPL_DIR", raising=False)


# --- Synthetic ------------------------------------------------------------------------------


def test_synthetic_matches_a_hand_computation(checkpoint, synthetic_npz, synthetic_report):
    expected = hand_synthetic_errors(checkpoint, synthetic_npz)
    report = synthetic_report
    assert report.num_evaluated == NUM_SYNTHETIC
    np.testing.assert_array_equal(report.sample_index, np.arange(NUM_SYNTHETIC))
    for key in ("mpjpe", "pa_mpjpe", "pve"):
        np.testing.assert_allclose(getattr(report, key), expected[key], atol=TOLERANCE_MM)
    # The samples differ, PA-MPJPE is below MPJPE, and the per-joint errors average to them.
    assert np.ptp(report.mpjpe) > 1.0
    assert np.all(report.pa_mpjpe < report.mpjpe)
    np.testing.assert_allclose(report.errors.per_joint.mean(axis=1), report.mpjpe)
    np.testing.assert_allclose(report.errors.per_joint_pa.mean(axis=1), report.pa_mpjpe)
    assert report.errors.per_joint.shape == (NUM_SYNTHETIC, 14)


def test_mean_pose_reference_matches_a_hand_computation(checkpoint, synthetic_npz):
    """--baseline mean-pose: the checkpoint's mean parameters for every sample, scored with
    the same protocol; an untrained regressor would score about the same."""
    report = evaluate(
        checkpoint,
        synthetic_npz,
        None,
        get_protocol("synthetic"),
        batch_size=2,
        progress=False,
        mean_pose=True,
    )
    model = load_predictor(checkpoint).model
    body = load_body_model("open-lite")
    arrays = np.load(synthetic_npz)
    with torch.no_grad():
        mean = model.mean_prediction(1)
        pred = body(pose_rotmats=mean.pose_rotmats, betas=mean.betas)
        gt = body(
            pose_rotvecs=torch.as_tensor(arrays["pose"], dtype=torch.float32),
            betas=torch.as_tensor(arrays["shape"], dtype=torch.float32),
        )
    repeat = (NUM_SYNTHETIC, 1, 1)
    expected = hand_errors(
        np.tile(pred.joints_h36m.double().numpy(), repeat),
        gt.joints_h36m.double().numpy(),
        np.tile(pred.vertices.double().numpy(), repeat),
        gt.vertices.double().numpy(),
    )
    for key in ("mpjpe", "pa_mpjpe", "pve"):
        np.testing.assert_allclose(
            getattr(report.mean_pose, key), expected[key], atol=TOLERANCE_MM, err_msg=key
        )
    assert not np.allclose(report.mean_pose.pa_mpjpe, report.pa_mpjpe)  # not the model's
    assert "mean pose" in format_table(report).splitlines()[len(report.header) + 1]


def test_header_names_the_protocol(synthetic_report, checkpoint):
    header = synthetic_report.header
    assert header[0].startswith("dataset: synthetic")
    assert "[protocol synthetic, file " in header[0]
    assert header[1].startswith("joints: lsp14") and "pelvis-centred" in header[1]
    assert header[2].startswith("ground truth: neutral") and "open-lite" in header[2]
    assert header[3].startswith("frames: every frame") and "5 of 5 samples" in header[3]
    assert header[4].startswith("body model: open-lite") and str(checkpoint) in header[4]
    assert not any("indicative" in line for line in header)  # exact ground truth here
    table = format_table(synthetic_report)
    assert table.splitlines()[: len(header)] == list(header)
    assert "PA-MPJPE" in table and "PVE" in table and "right_ankle" in table


def test_json_and_png(synthetic_report, tmp_path):
    import json

    data = json.loads(save_json(synthetic_report, tmp_path / "r.json").read_text())
    assert data["header"] == list(synthetic_report.header)
    assert data["protocol"]["name"] == "synthetic" and data["protocol"]["joints"] == "lsp14"
    assert data["counts"]["evaluated"] == NUM_SYNTHETIC
    np.testing.assert_allclose(data["regressor"]["per_sample_mm"]["mpjpe"], synthetic_report.mpjpe)
    assert data["regressor"]["summary_mm"]["pa_mpjpe"] == pytest.approx(
        synthetic_report.pa_mpjpe.mean()
    )
    assert len(data["regressor"]["per_joint_mm"]["mpjpe"]) == 14 and data["refined"] is None
    png = save_figure(synthetic_report, tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_protocol_overrides_and_limit(checkpoint, synthetic_npz, synthetic_report):
    protocol = get_protocol("synthetic", joints="h36m17", every=2)
    report = evaluate(checkpoint, synthetic_npz, None, protocol, batch_size=8, progress=False)
    np.testing.assert_array_equal(report.sample_index, [0, 2, 4])
    assert report.errors.per_joint.shape == (3, 17) and report.joint_names[0] == "pelvis"
    np.testing.assert_array_equal(report.errors.per_joint[:, 0], 0.0)  # the root itself
    assert report.excluded == {"row index (no 'frame' key) not a multiple of 2": 2}
    assert any("non-standard setting: joints=h36m17" in line for line in report.header)
    assert "every 2nd frame" in report.header[3]
    limited = evaluate(
        checkpoint, synthetic_npz, None, get_protocol("synthetic"), limit=2, progress=False
    )
    np.testing.assert_allclose(limited.mpjpe, synthetic_report.mpjpe[:2], atol=TOLERANCE_MM)
    assert limited.skipped == {"beyond --limit 2": 3}


def test_refinement_reports_errors_after_smplify(checkpoint, synthetic_npz, synthetic_report):
    report = evaluate(
        checkpoint,
        synthetic_npz,
        None,
        get_protocol("synthetic"),
        batch_size=8,
        refine=True,
        limit=3,
        progress=False,
    )
    np.testing.assert_allclose(report.mpjpe, synthetic_report.mpjpe[:3], atol=TOLERANCE_MM)
    refined = report.refined
    assert refined is not None and refined.mpjpe.shape == (3,) and refined.pve.shape == (3,)
    assert np.all(np.isfinite(refined.pa_mpjpe))
    # The fit to exact keypoints moves the body: the numbers change.
    assert np.abs(refined.mpjpe - report.mpjpe).max() > 1.0
    assert any(line.startswith("refinement: SMPLify") for line in report.header)
    assert "+SMPLify" in format_table(report)


def test_refinement_takes_another_smplify_mode(checkpoint, synthetic_npz, synthetic_report):
    common = dict(batch_size=8, refine=True, limit=2, progress=False)
    protocol = get_protocol("synthetic")
    own = evaluate(checkpoint, synthetic_npz, None, protocol, **common)
    assert "anchored" not in next(line for line in own.header if line.startswith("refinement"))
    anchored = evaluate(
        checkpoint, synthetic_npz, None, protocol, smplify_mode="anchored", **common
    )
    line = next(line for line in anchored.header if line.startswith("refinement"))
    assert "mode anchored, asked for" in line
    np.testing.assert_allclose(anchored.mpjpe, synthetic_report.mpjpe[:2], atol=TOLERANCE_MM)
    # The anchor terms keep the fit nearer the prediction: other fits than the run's mode.
    assert np.abs(anchored.refined.pa_mpjpe - own.refined.pa_mpjpe).max() > 0.1
    with pytest.raises(ValueError, match="smplify_mode must be one of"):
        evaluate(checkpoint, synthetic_npz, None, protocol, smplify_mode="adam", **common)


# --- Body models ---------------------------------------------------------------------------


def test_a_mismatching_body_model_is_refused(checkpoint, synthetic_npz):
    with pytest.raises(BodyModelMismatchError, match="trained with the body model 'open-lite'"):
        evaluate(
            checkpoint,
            synthetic_npz,
            None,
            get_protocol("synthetic"),
            body_model="smpl",
            progress=False,
        )
    # SMPL-format files are SMPL to the check, whatever their contents.
    smpl_like = load_body_model_data("open-lite")
    path = Path(checkpoint).parent / "SMPL_NEUTRAL.npz"
    save_body_model_data(dataclasses.replace(smpl_like, name="SMPL_NEUTRAL"), path)
    with pytest.raises(BodyModelMismatchError, match="--body-model .*SMPL_NEUTRAL.npz"):
        load_predictor(checkpoint, body_model=str(path))


def test_the_same_kind_of_body_model_is_accepted(checkpoint, synthetic_npz):
    loaded = load_predictor(checkpoint, body_model="open")
    assert loaded.body_model.name == "open" and loaded.trained_with == "open-lite"
    report = evaluate(
        checkpoint,
        synthetic_npz,
        None,
        get_protocol("synthetic"),
        limit=1,
        body_model="open",
        progress=False,
    )
    assert "checkpoint trained with 'open-lite'" in report.header[4]
    assert report.body_model == "open"


# --- 3DPW ------------------------------------------------------------------------------------


def write_fake_smpl_dir(folder: Path) -> Path:
    """Stand-ins for the official SMPL files: open-lite saved under SMPL's names."""
    folder.mkdir(parents=True, exist_ok=True)
    data = load_body_model_data("open-lite")
    for gender in ("neutral", "male", "female"):
        model = dataclasses.replace(data, name=f"SMPL_{gender.upper()}", gender=gender)
        save_body_model_data(model, folder / f"SMPL_{gender.upper()}.npz")
    return folder


@pytest.fixture(scope="module")
def pw3d(tmp_path_factory) -> tuple[Path, Path]:
    """The 3DPW converter's fixture (open-lite ground truth, genders m/f), converted."""
    from spin.data.convert_3dpw import convert_3dpw
    from tests.data.test_convert_3dpw import make_3dpw_root, make_sequence

    model = load_body_model("open-lite").to(torch.float64)
    root = make_3dpw_root(tmp_path_factory.mktemp("pw3d"), make_sequence(model))
    conversion = convert_3dpw(root, "test", {"m": model, "f": model})
    npz = save_spin_npz(root / "3dpw_test.npz", **conversion.arrays)
    return npz, root


def test_3dpw_path_on_the_converter_fixture(checkpoint, pw3d, no_smpl):
    npz, root = pw3d
    report = evaluate(checkpoint, npz, root, get_protocol("3dpw"), batch_size=4, progress=False)
    arrays = np.load(npz)
    assert report.num_evaluated == len(arrays["imgname"]) == 11
    assert report.header[0].startswith("dataset: 3DPW test split")
    assert report.header[2].startswith("ground truth: neutral")
    assert "no SMPL files found" in report.header[2]
    assert any("only indicative" in line for line in report.header)
    # Without SMPL files the ground truth is the file's parameters posed with the open
    # model, which is what the fixture was made with: check against the hand computation.
    pred17, pred_vertices = predictions(checkpoint, npz, root, report.sample_index)
    body = load_body_model("open-lite")
    with torch.no_grad():
        gt = body(
            pose_rotvecs=torch.as_tensor(arrays["pose"], dtype=torch.float32),
            betas=torch.as_tensor(arrays["shape"], dtype=torch.float32),
        )
    expected = hand_errors(
        pred17, gt.joints_h36m.double().numpy(), pred_vertices, gt.vertices.double().numpy()
    )
    for key in ("mpjpe", "pa_mpjpe", "pve"):
        np.testing.assert_allclose(getattr(report, key), expected[key], atol=TOLERANCE_MM)
    with pytest.raises(ValueError, match="--smpl-dir"):
        evaluate(checkpoint, npz, root, get_protocol("3dpw", gender="gendered"), progress=False)


def test_3dpw_gendered_ground_truth_with_smpl_files(checkpoint, pw3d, tmp_path, no_smpl):
    npz, root = pw3d
    smpl_dir = write_fake_smpl_dir(tmp_path / "smpl")
    neutral = evaluate(checkpoint, npz, root, get_protocol("3dpw"), progress=False, limit=4)
    gendered = evaluate(
        checkpoint, npz, root, get_protocol("3dpw"), progress=False, limit=4, smpl_dir=smpl_dir
    )
    assert gendered.header[2].startswith("ground truth: gendered SMPL meshes")
    assert f"--smpl-dir {smpl_dir}" in gendered.header[2]
    # The stand-in files all hold the fixture's own model: the same numbers.
    np.testing.assert_allclose(gendered.mpjpe, neutral.mpjpe, atol=1e-4)
    np.testing.assert_allclose(gendered.pve, neutral.pve, atol=1e-4)
    forced = evaluate(
        checkpoint,
        npz,
        root,
        get_protocol("3dpw", gender="neutral"),
        progress=False,
        limit=1,
        smpl_dir=smpl_dir,
    )
    assert forced.header[2].startswith("ground truth: neutral SMPL meshes (neutral asked for")
    assert any("non-standard setting: gender=neutral" in line for line in forced.header)


# --- Human3.6M -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def h36m(tmp_path_factory) -> tuple[Path, Path]:
    """The H36M converter's fixture with a training subject (S1) and a test one (S9), as
    one file: 2 subjects x 2 actions x 2 cameras x 3 frames."""
    from spin.data.convert_h36m import convert_h36m
    from tests.data.test_convert_h36m import make_h36m_root

    root = make_h36m_root(tmp_path_factory.mktemp("h36m"))
    conversion = convert_h36m(root, "p1", subjects=["S1", "S9"])
    return save_spin_npz(root / "h36m_p1.npz", **conversion.arrays), root


def test_h36m_protocols_on_the_converter_fixture(checkpoint, h36m, no_smpl):
    npz, root = h36m
    arrays = np.load(npz)
    p1 = evaluate(checkpoint, npz, root, get_protocol("h36m-p1"), batch_size=5, progress=False)
    assert p1.num_in_file == 24 and p1.num_evaluated == 12
    assert p1.excluded == {"subject not in S9, S11": 12}
    assert set(arrays["subject"][p1.sample_index]) == {"S9"}
    p2 = evaluate(checkpoint, npz, root, get_protocol("h36m-p2"), progress=False)
    assert p2.num_evaluated == 6 and set(arrays["camera"][p2.sample_index]) == {"60457274"}
    assert p2.excluded == {"subject not in S9, S11": 12, "camera not in 60457274": 6}
    for report, name in ((p1, "Human3.6M protocol 1"), (p2, "Human3.6M protocol 2")):
        assert report.header[0].startswith(f"dataset: {name}")
        assert report.header[2].startswith("ground truth: the dataset's 3D joints (S_h36m")
        assert "S9, S11" in report.header[3] and "every 5th frame" in report.header[3]
        assert any("only indicative" in line for line in report.header)
        assert report.pve is None
    assert "all cameras" in p1.header[3] and "camera 60457274" in p2.header[3]
    # The ground truth is S_h36m: the hand computation on the front-camera samples.
    pred17, _ = predictions(checkpoint, npz, root, p2.sample_index)
    expected = hand_errors(pred17, arrays["S_h36m"][p2.sample_index, :, :3])
    np.testing.assert_allclose(p2.mpjpe, expected["mpjpe"], atol=TOLERANCE_MM)
    np.testing.assert_allclose(p2.pa_mpjpe, expected["pa_mpjpe"], atol=TOLERANCE_MM)
    # Joint ground truth has no gender.
    with pytest.raises(ValueError, match="no gender"):
        get_protocol("h36m-p1", gender="neutral")


# --- Other input representations -------------------------------------------------------------


def test_a_keypoints_checkpoint_is_evaluated_on_the_files_keypoints(tiny_runs, tmp_path):
    """A `keypoints` (mlp) checkpoint: its inputs are made from the file's 2D keypoints as in
    training; the numbers are those of its predictions on the dataset's samples."""
    run = tiny_runs("keypoints")
    npz = run.data_dir / "test.npz"
    report = evaluate(
        run.checkpoint,
        npz,
        run.data_dir,
        get_protocol("synthetic"),
        batch_size=3,
        refine=True,
        progress=False,
    )
    arrays = np.load(npz)
    num = len(arrays["imgname"])
    assert report.num_evaluated == num and report.input_representation == "keypoints"
    assert any(line.startswith("input: keypoints") for line in report.header)
    assert report.refined is not None and np.isfinite(report.refined.pa_mpjpe).all()
    saved = json.loads(save_json(report, tmp_path / "r.json").read_text())
    assert saved["input_representation"] == "keypoints"
    # By hand: the predictor on each sample's keypoint vector.
    predictor = load_predictor(run.checkpoint)
    dataset = predictor.dataset(npz, run.data_dir)
    body = load_body_model("open-lite")
    with torch.no_grad():
        inputs = torch.stack([dataset[i]["img"] for i in range(num)])
        prediction = predictor.model(inputs)
        pred = body(pose_rotmats=prediction.pose_rotmats, betas=prediction.betas)
        gt = body(
            pose_rotvecs=torch.as_tensor(arrays["pose"], dtype=torch.float32),
            betas=torch.as_tensor(arrays["shape"], dtype=torch.float32),
        )
    expected = hand_errors(
        pred.joints_h36m.double().numpy(),
        gt.joints_h36m.double().numpy(),
        pred.vertices.double().numpy(),
        gt.vertices.double().numpy(),
    )
    for key in ("mpjpe", "pa_mpjpe", "pve"):
        np.testing.assert_allclose(getattr(report, key), expected[key], atol=TOLERANCE_MM)

    # A sample with no 2D keypoint at all has no input: left out and counted.
    blind = dict(arrays)
    for key in ("openpose", "part"):
        blind[key] = blind[key].copy()
        blind[key][1] = 0.0
    blind_npz = save_spin_npz(tmp_path / "blind.npz", **blind)
    report = evaluate(
        run.checkpoint, blind_npz, run.data_dir, get_protocol("synthetic"), progress=False
    )
    assert report.num_evaluated == num - 1 and 1 not in report.sample_index
    assert report.skipped == {"no 2D keypoints to make the network input from": 1}


def test_a_part_map_checkpoint_needs_the_part_maps(tiny_runs):
    run = tiny_runs("part_segmentation")
    npz, protocol = run.data_dir / "test.npz", get_protocol("synthetic")
    with pytest.raises(ValueError, match="no segmenter.*--part-maps"):
        evaluate(run.checkpoint, npz, run.data_dir, protocol, progress=False)
    report = evaluate(
        run.checkpoint,
        npz,
        run.data_dir,
        protocol,
        limit=2,
        part_maps=run.data_dir / "parts",
        progress=False,
    )
    assert report.num_evaluated == 2
    assert any(
        line.startswith("input: part_segmentation") and "parts" in line for line in report.header
    )
