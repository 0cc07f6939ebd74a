"""spin-eval --keypoints detected: MediaPipe's keypoints on a dataset's images replace the
file's, and the evaluation says so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spin.data.detected import (
    DETECTED_DESCRIPTION,
    DETECTION_BOX_ENLARGE,
    OPENPOSE_MIN_VISIBILITY,
    detect_dataset_keypoints,
    detected_keypoints_file,
)
from spin.data.formats import load_spin_npz
from spin.data.synthetic import SyntheticConfig, generate_synthetic
from spin.eval.evaluate import evaluate
from spin.eval.protocols import get_protocol
from tests.eval.test_evaluate import make_checkpoint

NUM = 6
SIZE = 192


@pytest.fixture(scope="module")
def synthetic_npz(tmp_path_factory):
    folder = tmp_path_factory.mktemp("detected")
    config = SyntheticConfig(
        image_size=(SIZE, SIZE), body_model="open-lite", fraction_3d=1.0, truncation_prob=0.0
    )
    generate_synthetic(config, NUM, folder, split="test", progress=False)
    return folder / "test.npz"


@pytest.fixture(scope="module")
def detected(synthetic_npz, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return detected_keypoints_file(synthetic_npz, synthetic_npz.parent, cache, progress=False)


def test_detected_keypoints_replace_the_files_near_the_true_ones(synthetic_npz, detected):
    original = load_spin_npz(synthetic_npz)
    copy = load_spin_npz(detected)  # validates: a well-formed SPIN file
    for key in ("center", "scale", "pose", "shape", "imgname"):
        np.testing.assert_array_equal(copy[key], original[key])
    found = copy["openpose"][..., 2].max(axis=1) > 0
    assert found.sum() >= NUM // 2, f"MediaPipe found {found.sum()} of {NUM} people"
    assert not np.array_equal(copy["openpose"], original["openpose"])
    side = original["scale"] * 200
    for row in np.flatnonzero(found):
        both = (copy["openpose"][row, :, 2] > 0.5) & (original["openpose"][row, :, 2] > 0)
        distance = np.linalg.norm(
            copy["openpose"][row, both, :2] - original["openpose"][row, both, :2], axis=1
        )
        assert both.sum() >= 6 and np.median(distance) < 0.1 * side[row], (row, distance)
    assert set(np.unique(copy["part"][..., 2])) <= {0.0, 1.0}
    confidence = copy["openpose"][..., 2]
    assert not ((confidence > 0) & (confidence <= OPENPOSE_MIN_VISIBILITY)).any()
    assert not copy["openpose"][~found].any()


def test_the_copy_is_reused_while_newer_than_the_file(synthetic_npz, detected):
    stamp = detected.stat().st_mtime_ns
    again = detected_keypoints_file(synthetic_npz, synthetic_npz.parent, detected.parent)
    assert again == detected and detected.stat().st_mtime_ns == stamp


def test_a_copy_made_from_another_file_of_the_same_name_is_not_reused(
    synthetic_npz, tmp_path, monkeypatch
):
    """spin-eval keeps the copies of every dataset of one checkpoint in one folder: the copy of
    data/synthetic/test.npz must not be served for data/synthetic256/test.npz."""
    import shutil

    import spin.data.detected as detected_module

    other = tmp_path / "other"
    shutil.copytree(synthetic_npz.parent, other)
    made = []

    def fake_detect(npz_path, image_folder, out_path, progress=True):
        made.append(Path(npz_path))
        return shutil.copyfile(npz_path, out_path)

    monkeypatch.setattr(detected_module, "detect_dataset_keypoints", fake_detect)
    cache = tmp_path / "cache"
    first = detected_keypoints_file(synthetic_npz, synthetic_npz.parent, cache, progress=False)
    second = detected_keypoints_file(other / "test.npz", other, cache, progress=False)
    assert first == second and made == [synthetic_npz, other / "test.npz"]
    detected_keypoints_file(other / "test.npz", other, cache, progress=False)  # its own: reused
    detected_keypoints_file(synthetic_npz, synthetic_npz.parent, cache, progress=False)
    assert made == [synthetic_npz, other / "test.npz", synthetic_npz]


def test_evaluation_on_detected_keypoints_says_so(synthetic_npz, tmp_path):
    checkpoint = make_checkpoint(tmp_path / "run", synthetic_npz.parent)
    report = evaluate(
        checkpoint,
        synthetic_npz,
        synthetic_npz.parent,
        get_protocol("synthetic"),
        progress=False,
        refine=True,
        keypoints="detected",
        detected_dir=tmp_path / "cache",
    )
    assert (tmp_path / "cache" / "test_mediapipe_vis0.2_box1.5.npz").is_file()
    assert DETECTED_DESCRIPTION in "\n".join(report.header)
    with pytest.raises(ValueError, match="keypoints must be one of"):
        evaluate(checkpoint, synthetic_npz, None, get_protocol("synthetic"), keypoints="file")


def test_mediapipe_searches_the_person_box_enlarged(synthetic_npz, tmp_path, monkeypatch):
    """The square MediaPipe sees is the sample's box (``scale`` x 200 px about ``center``)
    times ``box_enlarge``, about the same centre."""
    from contextlib import contextmanager

    from spin.demo import keypoints as demo_keypoints

    boxes = []

    @contextmanager
    def recording_detector():
        def detect(image, box=None):
            boxes.append(box)
            return np.zeros((33, 3))

        yield detect

    monkeypatch.setattr(demo_keypoints, "mediapipe_detector", recording_detector)
    arrays = load_spin_npz(synthetic_npz)
    for enlarge in (1.0, 1.5):
        boxes.clear()
        detect_dataset_keypoints(synthetic_npz, synthetic_npz.parent, tmp_path / "d.npz",
                                 progress=False, box_enlarge=enlarge)  # fmt: skip
        got = np.asarray(boxes)
        np.testing.assert_allclose((got[:, :2] + got[:, 2:]) / 2, arrays["center"], atol=1e-9)
        np.testing.assert_allclose(got[:, 2] - got[:, 0], arrays["scale"] * 200 * enlarge)
    assert DETECTION_BOX_ENLARGE > 1.0
