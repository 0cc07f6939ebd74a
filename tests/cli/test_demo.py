"""spin-demo: the command writes its four files and explains its options."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from spin.cli import demo
from spin.predict.shipped import SHIPPED_MODEL
from tests.demo import PHOTO_SIZE, synthetic_photo, write_coco_keypoints


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--checkpoint",
        "--bbox",
        "--keypoints",
        "--out",
        "--mode",
        "--focal-length",
        "--body-model",
        "--min-confidence",
        "make demo-setup",
    ):
        assert option in text, option


def test_writes_overlay_side_view_mesh_and_parameters(tmp_path, capsys):
    photo = synthetic_photo()
    image_path = tmp_path / "person.png"
    Image.fromarray(photo.image).save(image_path)
    keypoints = write_coco_keypoints(tmp_path / "person_keypoints.json", photo.keypoints)
    out = tmp_path / "out"
    code = demo.main(
        [
            str(image_path),
            "--keypoints",
            str(keypoints),
            "--out",
            str(out),
            "--body-model",
            "open-lite",
            "--focal-length",
            "600",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "mean reprojection error" in printed

    for name in ("person_overlay.png", "person_side.png"):
        with Image.open(out / name) as image:
            assert image.size == PHOTO_SIZE, name
    assert (out / "person.obj").read_text().startswith("o person_0\nv ")
    record = json.loads((out / "person.json").read_text())
    assert record["people_found"] == record["people_fitted"] == 1
    assert record["detector"].startswith("keypoints file")
    person = record["people"][0]
    assert person["detector_keypoints"]["convention"] == "coco17"
    assert person["mask_iou"] is None  # a keypoints file has no mask
    data = person["fit"]
    assert np.allclose(np.array(data["intrinsics"])[[0, 1], [0, 1]], 600.0)
    assert data["keypoints"]["convention"] == "coco17"
    assert len(data["keypoints"]["xy_confidence"]) == 17
    assert len(data["pose_rotvecs"]) == 72
    # The photo was taken with a 400 px focal length (its diagonal): the fit still lands near
    # its keypoints with a 600 px camera.
    error = data["mean_reprojection_error_px"]
    assert 0 <= error < 10
    assert f"{error:.2f} px" in printed


def test_bad_arguments_exit_with_a_message(tmp_path, capsys):
    photo = synthetic_photo()
    image_path = tmp_path / "person.png"
    Image.fromarray(photo.image).save(image_path)
    with pytest.raises(SystemExit) as exit_info:
        demo.main([str(image_path), "--bbox", "10,20,5"])
    assert exit_info.value.code == 1
    assert "--bbox expects four finite numbers x0,y0,x1,y1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        demo.main([str(tmp_path / "missing.png"), "--keypoints", str(tmp_path / "k.json")])
    assert "missing.png" in capsys.readouterr().err


def test_the_shipped_model_gives_the_initial_body_unless_told_otherwise(tmp_path, capsys):
    photo = synthetic_photo()
    image_path = tmp_path / "person.png"
    Image.fromarray(photo.image).save(image_path)
    keypoints = write_coco_keypoints(tmp_path / "person_keypoints.json", photo.keypoints)
    argv = [str(image_path), "--keypoints", str(keypoints), "--out", str(tmp_path / "out")]
    assert demo.main(argv) == 0
    assert "start: regressor (" in capsys.readouterr().out
    data = json.loads((tmp_path / "out" / "person.json").read_text())["people"][0]["fit"]
    assert SHIPPED_MODEL.name in data["initial"] and "keypoints input" in data["initial"]
    assert data["regressed_cam_t"] is not None and data["mean_reprojection_error_px"] < 10
    for start in (["--checkpoint", "none"], ["--body-model", "open-lite"]):
        assert demo.main([*argv, *start]) == 0
        assert "start: mean pose" in capsys.readouterr().out, start


def test_a_keypoints_checkpoint_end_to_end(tiny_runs, tmp_path, capsys):
    photo = synthetic_photo()
    image_path = tmp_path / "person.png"
    Image.fromarray(photo.image).save(image_path)
    keypoints = write_coco_keypoints(tmp_path / "person_keypoints.json", photo.keypoints)
    checkpoint = tiny_runs("keypoints").checkpoint
    out = tmp_path / "out"
    argv = [str(image_path), "--keypoints", str(keypoints), "--checkpoint", str(checkpoint)]
    assert demo.main([*argv, "--out", str(out)]) == 0
    assert "keypoints input" in capsys.readouterr().out
    data = json.loads((out / "person.json").read_text())["people"][0]["fit"]
    assert "keypoints input" in data["initial"] and data["regressed_cam_t"] is not None
    assert data["mean_reprojection_error_px"] < 10


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None, reason="needs MediaPipe")
@pytest.mark.filterwarnings("ignore:label\\(\\) is deprecated:DeprecationWarning")
def test_every_person_is_fitted_and_reported(tmp_path, capsys):
    photo = synthetic_photo()
    image_path = tmp_path / "two.png"
    Image.fromarray(np.concatenate([photo.image, photo.image[:, ::-1]], axis=1)).save(image_path)
    out = tmp_path / "out"
    assert demo.main([str(image_path), "--out", str(out), "--body-model", "open-lite"]) == 0
    printed = capsys.readouterr().out
    assert "2 found, 2 fitted" in printed
    record = json.loads((out / "two.json").read_text())
    assert record["people_found"] == record["people_fitted"] == 2
    for k, person in enumerate(record["people"]):
        assert len(person["detector_box_xyxy"]) == 4 and person["mask_iou"] > 0.5
        error = person["fit"]["mean_reprojection_error_px"]
        assert f"person {k}: box" in printed and f"error {error:.2f} px" in printed
    objects = [line for line in (out / "two.obj").read_text().splitlines() if line[:2] == "o "]
    assert objects == ["o person_0", "o person_1"]
    assert demo.main([str(image_path), "--out", str(out), "--max-people", "1"]) == 0
    assert "1 found, 1 fitted" in capsys.readouterr().out
