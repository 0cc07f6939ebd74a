"""spin.demo: keypoint files, person boxes, the fitting pipeline, MediaPipe on a real photo."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spin.body import load_body_model
from spin.config import build_config, config_to_dict
from spin.demo.keypoints import (
    box_from_keypoints,
    detect_mediapipe,
    read_keypoints_file,
    search_regions,
)
from spin.demo.pipeline import (
    DemoConfig,
    DemoFitter,
    clean_keypoints,
    mask_iou,
    people_to_dict,
    person_box,
    regress,
    render_people,
    render_result,
    result_to_dict,
    run_demo,
    run_demo_people,
    turned_starts,
    write_obj,
    write_people_obj,
)
from spin.geometry import rotvec_to_rotmat
from spin.predict import load_predictor
from spin.regressor.hmr import build_hmr
from spin.render.mesh_renderer import render_silhouette
from spin.train.checkpoint import save_checkpoint
from spin.train.config import TrainConfig
from tests.demo import PHOTO_SIZE, synthetic_photo, write_coco_keypoints

FIT = DemoConfig(mode="lm", body_model="open-lite")
FIT_LM = DemoConfig(mode="lm")  # with a checkpoint: its body model


@pytest.fixture(scope="module")
def photo():
    return synthetic_photo()


# --- keypoint files -----------------------------------------------------------------------


def test_reads_openpose_json(tmp_path):
    values = np.arange(75, dtype=np.float64).reshape(25, 3)
    values[:, 2] = np.linspace(0.0, 1.0, 25)
    people = [{"pose_keypoints_2d": values.ravel().tolist()}, {"pose_keypoints_2d": [0.0] * 75}]
    path = tmp_path / "photo_keypoints.json"
    path.write_text(json.dumps({"version": 1.3, "people": people}))
    keypoints, convention = read_keypoints_file(path)
    assert convention == "openpose25"
    np.testing.assert_array_equal(keypoints, values)
    assert read_keypoints_file(path, person=1)[0].sum() == 0


def test_openpose_errors_say_what_is_wrong(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"people": []}))
    with pytest.raises(ValueError, match="no person"):
        read_keypoints_file(empty)
    coco18 = tmp_path / "coco18.json"
    coco18.write_text(json.dumps({"people": [{"pose_keypoints_2d": [1.0] * 54}]}))
    with pytest.raises(ValueError, match="BODY_25"):
        read_keypoints_file(coco18)
    with pytest.raises(FileNotFoundError, match="no keypoints file"):
        read_keypoints_file(tmp_path / "missing.json")


def test_reads_coco_layouts(tmp_path):
    flags = np.zeros((17, 3))
    flags[:, 0], flags[:, 1] = np.arange(17), 100 + np.arange(17)
    flags[:, 2] = [2, 1, 0] * 5 + [2, 2]
    expected = flags.copy()
    expected[:, 2] = flags[:, 2] > 0
    layouts = {
        "object": {"keypoints": flags.ravel().tolist()},
        "list": [{"keypoints": flags.ravel().tolist()}],
        "annotations": {"annotations": [{"keypoints": flags.ravel().tolist()}]},
    }
    for name, data in layouts.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        keypoints, convention = read_keypoints_file(path)
        assert convention == "coco17", name
        np.testing.assert_array_equal(keypoints, expected, err_msg=name)


def test_coco_detector_scores_are_kept_as_confidences(tmp_path):
    scored = np.ones((17, 3))
    scored[:, 2] = np.linspace(0.05, 0.95, 17)
    path = tmp_path / "detections.json"
    path.write_text(json.dumps([{"keypoints": scored.ravel().tolist(), "score": 0.9}]))
    keypoints, _ = read_keypoints_file(path)
    np.testing.assert_allclose(keypoints[:, 2], scored[:, 2])


def test_unknown_json_layout_is_refused(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"joints": [1, 2, 3]}))
    with pytest.raises(ValueError, match="OpenPose file"):
        read_keypoints_file(path)


# --- boxes and keypoint cleaning ---------------------------------------------------------------


def test_box_from_keypoints_encloses_the_confident_ones_enlarged():
    keypoints = np.array([[10.0, 20.0, 0.9], [110.0, 220.0, 0.8], [500.0, 500.0, 0.0]])
    box = box_from_keypoints(keypoints)
    # Centre (60, 120), extent 100 x 200, enlarged 1.2 times.
    np.testing.assert_allclose(box, [0.0, 0.0, 120.0, 240.0])
    np.testing.assert_allclose(box_from_keypoints(keypoints, enlarge=1.0), [10, 20, 110, 220])
    with pytest.raises(ValueError, match="--bbox"):
        box_from_keypoints(keypoints, min_confidence=0.85)


def test_person_box_is_the_square_of_the_longer_side():
    center, side = person_box(np.zeros((3, 3)), bbox=(10.0, 20.0, 110.0, 220.0))
    np.testing.assert_allclose(center, [60.0, 120.0])
    assert side == 200.0
    with pytest.raises(ValueError, match="x1 > x0"):
        person_box(np.zeros((3, 3)), bbox=(10.0, 20.0, 5.0, 220.0))


def test_clean_keypoints_drops_unsure_and_outside_points():
    keypoints = np.array(
        [[5.0, 5.0, 0.9], [5.0, 5.0, 0.1], [-3.0, 5.0, 0.9], [5.0, 50.0, 0.9], [np.nan, 1, 1]]
    )
    cleaned = clean_keypoints(keypoints, (40, 30), min_confidence=0.2)
    np.testing.assert_array_equal(cleaned[0], keypoints[0])
    assert (cleaned[1:] == 0).all()


def test_turned_starts_turn_about_the_body_vertical():
    pose = np.zeros(72)
    pose[:3] = [np.pi, 0.0, 0.0]
    pose[10] = 0.3
    starts = turned_starts(pose, [0.0, 90.0, 180.0])
    rotations = rotvec_to_rotmat(torch.from_numpy(starts[:, :3]))
    up = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    front = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    # The body's up stays image-up (camera -y); its front goes from the camera (-z) to the side.
    torch.testing.assert_close(rotations @ up, -up.expand(3, 3))
    torch.testing.assert_close(rotations[:, :, 2] @ front, torch.tensor([-1.0, 0.0, 1.0]).double())
    np.testing.assert_array_equal(starts[:, 3:], np.repeat(pose[None, 3:], 3, axis=0))


# --- the pipeline ------------------------------------------------------------------------------


def test_fit_from_a_coco_file_lands_on_the_keypoints_and_the_body(tmp_path, photo):
    keypoints, convention = read_keypoints_file(
        write_coco_keypoints(tmp_path / "k.json", photo.keypoints)
    )
    result = run_demo(photo.image, keypoints=keypoints, convention=convention, config=FIT)
    assert result.image_size == PHOTO_SIZE
    assert result.initial == "mean pose"
    # The 15 COCO keypoints SMPLify fits (all but the hips) lie within a few pixels.
    assert result.num_fitted == 15
    assert np.nanmax(result.errors) < 6.0, result.errors
    assert result.mean_error < 3.0
    # The body itself is where the photo's body is: its silhouette overlaps it.
    fitted = render_silhouette(result.vertices, result.faces, result.intrinsics, PHOTO_SIZE)
    iou = (fitted & photo.silhouette).sum() / (fitted | photo.silhouette).sum()
    assert iou > 0.75, iou
    # Depth is the photo's up to the body-size ambiguity.
    assert abs(result.cam_t[2] - photo.cam_t[0, 2].item()) < 0.6

    overlay, side = render_result(photo.image, result)
    assert overlay.shape == side.shape == photo.image.shape
    assert (overlay != photo.image).any(axis=-1).mean() > 0.05
    data = json.loads(json.dumps(result_to_dict(result)))
    assert data["keypoints"]["convention"] == "coco17"
    assert data["keypoints"]["error_px"][11] is None  # hips are not fitted
    assert len(data["pose_rotvecs"]) == 72 and len(data["cam_t"]) == 3
    assert data["mean_reprojection_error_px"] == pytest.approx(result.mean_error, abs=1e-4)

    obj = write_obj(tmp_path / "body.obj", result.vertices, result.faces)
    lines = obj.read_text().splitlines()
    assert sum(line.startswith("v ") for line in lines) == len(result.vertices)
    heights = np.array([float(line.split()[2]) for line in lines if line.startswith("v ")])
    head = heights[np.argmin(result.vertices[:, 1])]  # the topmost vertex in the image
    assert head == heights.max()  # ... is the highest in the OBJ (y up)


def test_fit_with_a_checkpoint_starts_from_the_regressor(tmp_path, photo):
    # An untrained tiny regressor: its prediction is arbitrary, the plumbing is what's tested.
    tiny = {"body_model": "open-lite", "hmr": {"backbone": {"name": "tiny"}}}
    config = build_config(TrainConfig, {**tiny, "data": {"img_size": 64}})
    torch.manual_seed(0)
    model = build_hmr(config.hmr, load_body_model("open-lite"))
    optimizer = torch.optim.Adam(model.parameters())
    path = save_checkpoint(tmp_path, model, optimizer, 1, config_to_dict(config))

    result = run_demo(
        photo.image,
        checkpoint=path,
        keypoints=photo.keypoints,
        convention="coco17",
        config=DemoConfig(mode="lm"),
    )
    assert result.initial.startswith("regressor")
    assert result.body_model == "open-lite"
    assert result.regressed_cam_t is not None and np.isfinite(result.regressed_cam_t).all()
    assert result.mean_error < 3.0
    with pytest.raises(ValueError, match="trained with body model 'open-lite'"):
        run_demo(
            photo.image,
            checkpoint=path,
            keypoints=photo.keypoints,
            convention="coco17",
            config=DemoConfig(body_model="open"),
        )


def test_anchored_mode_keeps_what_the_keypoints_leave_open_at_the_start(tmp_path, photo):
    """With only the upper body's keypoints, ``anchored`` keeps the regressor's legs
    (nothing in the data term moves them but the priors) where ``lm`` lets the priors move
    them; both fit the keypoints they have."""
    tiny = {"body_model": "open-lite", "hmr": {"backbone": {"name": "tiny"}}}
    config = build_config(TrainConfig, {**tiny, "data": {"img_size": 64}})
    torch.manual_seed(0)
    model = build_hmr(config.hmr, load_body_model("open-lite"))
    path = save_checkpoint(tmp_path, model, torch.optim.Adam(model.parameters()), 1,
                           config_to_dict(config))  # fmt: skip
    upper = photo.keypoints.copy()
    upper[11:, 2] = 0.0  # COCO: hips, knees and ankles unseen
    legs = np.r_[12:18, 21:27]  # rotation vectors of SMPL joints 4, 5 (knees), 7, 8 (ankles)
    moved = {}
    for mode in ("lm", "anchored"):
        result = run_demo(photo.image, checkpoint=path, keypoints=upper, convention="coco17",
                          config=DemoConfig(mode=mode, initial_yaws_deg=(0.0,)))  # fmt: skip
        predictor = load_predictor(path)
        defaults = DemoConfig()
        cleaned = clean_keypoints(upper, PHOTO_SIZE, defaults.min_confidence)
        center, side = person_box(cleaned, None, defaults.box_enlarge)
        start = regress(predictor, photo.image, center, side, result.intrinsics)
        moved[mode] = np.abs(result.pose_rotvecs[legs] - start.pose_rotvecs[legs]).max()
        assert result.mean_error < 6.0, (mode, result.mean_error)
    assert moved["anchored"] < 0.75 * moved["lm"], moved  # measured: 0.14 vs 0.31 rad


def test_keypoints_need_a_convention(photo):
    with pytest.raises(ValueError, match="convention"):
        run_demo(photo.image, keypoints=photo.keypoints, config=FIT)


def test_missing_mediapipe_says_how_to_install_it(monkeypatch, photo):
    for name in [n for n in sys.modules if n == "mediapipe" or n.startswith("mediapipe.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    with pytest.raises(ImportError, match="make demo-setup"):
        detect_mediapipe(photo.image)


# --- MediaPipe on a real photograph ---------------------------------------------------------


def _astronaut_path() -> Path | None:
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / "astronaut.png"
    return path if path.is_file() else None


@pytest.mark.skipif(
    importlib.util.find_spec("mediapipe") is None or _astronaut_path() is None,
    reason="needs the demo extra: MediaPipe and scikit-image's astronaut.png (make demo-setup)",
)
@pytest.mark.filterwarnings("ignore:label\\(\\) is deprecated:DeprecationWarning")
def test_mediapipe_finds_the_astronauts_face_and_shoulders():
    from PIL import Image

    image = np.asarray(Image.open(_astronaut_path()).convert("RGB"))
    height, width = image.shape[:2]
    keypoints = detect_mediapipe(image)
    assert keypoints.shape == (33, 3)
    nose, left_shoulder, right_shoulder = keypoints[0], keypoints[11], keypoints[12]
    # The face is in the upper half, centred left of the middle (x ~ 220 of 512).
    assert nose[2] > 0.9 and 0.3 * width < nose[0] < 0.6 * width and nose[1] < 0.5 * height
    for shoulder in (left_shoulder, right_shoulder):
        assert shoulder[2] > 0.9
        assert nose[1] < shoulder[1] < 0.6 * height  # at the top of the suit, below the nose
    # She faces the camera: her left shoulder is on the image's right.
    assert right_shoulder[0] < nose[0] < left_shoulder[0]


# --- checkpoints of other input representations -------------------------------------------


def test_a_keypoints_checkpoint_starts_from_its_prediction_on_the_keypoints(tiny_runs, photo):
    """A `keypoints` (mlp) checkpoint: its input is made from the keypoints the demo fits."""
    checkpoint = tiny_runs("keypoints").checkpoint
    result = run_demo(
        photo.image,
        checkpoint=checkpoint,
        keypoints=photo.keypoints,
        convention="coco17",
        config=DemoConfig(mode="lm"),
    )
    assert result.initial.startswith("regressor") and "keypoints input" in result.initial
    assert result.regressed_cam_t is not None and np.isfinite(result.regressed_cam_t).all()
    assert result.mean_error < 3.0
    # The start is the predictor's output on the vector of those keypoints in the box.
    predictor = load_predictor(checkpoint)
    center, side = person_box(result.keypoints, None)
    args = (photo.image, center, side, result.intrinsics)
    initial = regress(predictor, *args, result.keypoints, "coco17")
    np.testing.assert_allclose(initial.cam_t, result.regressed_cam_t)
    inputs = predictor.input_from_keypoints(result.keypoints, "coco17", center, side)
    assert int((inputs.reshape(25, 3)[:, 2] > 0).sum()) >= 10  # the fitted joints are in it
    moved = result.keypoints.copy()
    moved[9, :2] += 30.0  # the left wrist elsewhere: another prediction
    other = regress(predictor, *args, moved, "coco17")
    assert not np.allclose(other.pose_rotvecs, initial.pose_rotvecs)
    with pytest.raises(ValueError, match="2D keypoints"):
        regress(predictor, *args)


def test_a_heatmap_checkpoint_runs_and_a_part_map_one_is_refused(tiny_runs, photo):
    heatmaps = tiny_runs("keypoint_heatmaps").checkpoint
    result = run_demo(
        photo.image, heatmaps, keypoints=photo.keypoints, convention="coco17", config=FIT_LM
    )
    assert "keypoint_heatmaps input" in result.initial and result.mean_error < 3.0
    parts = tiny_runs("part_segmentation").checkpoint
    with pytest.raises(ValueError, match="segmenter"):
        run_demo(photo.image, parts, keypoints=photo.keypoints, convention="coco17", config=FIT_LM)


@pytest.mark.skipif(
    importlib.util.find_spec("mediapipe") is None or _astronaut_path() is None,
    reason="needs the demo extra: MediaPipe and scikit-image's astronaut.png (make demo-setup)",
)
@pytest.mark.filterwarnings("ignore:label\\(\\) is deprecated:DeprecationWarning")
def test_mediapipe_keypoints_feed_a_keypoints_checkpoint(tiny_runs):
    from PIL import Image

    image = np.asarray(Image.open(_astronaut_path()).convert("RGB"))
    result = run_demo(image, tiny_runs("keypoints").checkpoint, config=FIT_LM)
    assert result.convention == "mediapipe33" and "keypoints input" in result.initial
    predictor = load_predictor(tiny_runs("keypoints").checkpoint)
    center, side = person_box(result.keypoints, None)
    inputs = predictor.input_from_keypoints(result.keypoints, "mediapipe33", center, side)
    # MediaPipe's face, shoulders, elbows and wrists land in the vector's OpenPose slots.
    assert int((inputs.reshape(25, 3)[:, 2] > 0).sum()) >= 8
    assert np.isfinite(result.mean_error)


# --- every person in a photo --------------------------------------------------------------


def test_search_regions_tile_wide_and_tall_pictures():
    assert search_regions((0, 0, 400, 300)) == [(0, 0, 400, 300)]
    wide = search_regions((10, 0, 1010, 200))
    assert wide[0] == (10, 0, 1010, 200)
    assert all(r[3] - r[1] == 200 and r[2] - r[0] == 200 for r in wide[1:])
    assert wide[1][0] == 10 and wide[-1][2] == 1010  # the tiles cover the whole width
    steps = np.diff([r[0] for r in wide[1:]])
    assert (steps <= 100).all()  # overlapping by at least half
    tall = search_regions((0, 0, 100, 400))
    assert all(r[2] - r[0] == 100 and r[3] - r[1] == 100 for r in tall[1:])


def test_mask_iou():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True
    b[1:3] = True
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    assert np.isnan(mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)))
    with pytest.raises(ValueError, match="shapes"):
        mask_iou(a, np.zeros((3, 3), bool))


def test_people_are_written_as_named_objects_of_one_obj(tmp_path, photo):
    result = run_demo(photo.image, keypoints=photo.keypoints, convention="coco17", config=FIT)
    obj = write_people_obj(tmp_path / "two.obj", [result, result])
    lines = obj.read_text().splitlines()
    assert [line for line in lines if line.startswith("o ")] == ["o person_0", "o person_1"]
    faces = np.array([[int(v) for v in line.split()[1:]] for line in lines if line[0] == "f"])
    assert faces.min() == 1 and faces.max() == 2 * len(result.vertices)


def _two_people() -> tuple[np.ndarray, np.ndarray]:
    """The synthetic photo beside its mirror image: two people, and the left one's
    silhouette in the composed image."""
    photo = synthetic_photo()
    image = np.concatenate([photo.image, photo.image[:, ::-1]], axis=1)
    left = np.concatenate([photo.silhouette, np.zeros_like(photo.silhouette)], axis=1)
    return np.ascontiguousarray(image), left


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None, reason="needs MediaPipe")
@pytest.mark.filterwarnings("ignore:label\\(\\) is deprecated:DeprecationWarning")
def test_every_person_in_a_composed_photo_is_found_and_fitted():
    image, left_silhouette = _two_people()
    width = image.shape[1]
    people = run_demo_people(image, config=FIT)
    assert len(people) == 2 and all(p.result is not None for p in people)
    centres = sorted(p.detector_box[[0, 2]].mean() for p in people)
    assert centres[0] < width / 2 < centres[1]  # one on each side
    for person in people:
        assert person.detector_mask.shape == image.shape[:2]
        assert person.result.mean_error < 6.0, person.result.mean_error
    overlay, side, silhouettes = render_people(image, [p.result for p in people])
    assert overlay.shape == side.shape == image.shape
    for person, silhouette in zip(people, silhouettes, strict=True):
        assert mask_iou(silhouette, person.detector_mask) > 0.5
    # The fitted body of the person on the left covers the left person of the picture.
    on_left = [s for p, s in zip(people, silhouettes, strict=True) if p.detector_box[0] < width / 2]
    assert mask_iou(on_left[0], left_silhouette) > 0.6
    # A box limits the search to the person inside it.
    right = run_demo_people(image, bbox=(width / 2, 0, width, image.shape[0]), config=FIT)
    assert len(right) == 1 and right[0].detector_box[0] >= width / 2
    record = json.loads(json.dumps(people_to_dict(people, "MediaPipe")))
    assert record["people_found"] == record["people_fitted"] == 2
    first = record["people"][0]
    assert len(first["detector_keypoints"]["xy_confidence"]) == 33
    assert len(first["fit"]["keypoints"]["projected_xy"]) == 33
    assert first["fit"]["mean_reprojection_error_px"] < 6.0


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None, reason="needs MediaPipe")
@pytest.mark.filterwarnings("ignore:label\\(\\) is deprecated:DeprecationWarning")
def test_a_box_with_nobody_in_it_is_named_in_the_error():
    image, _ = _two_people()
    empty = np.zeros_like(image)
    with pytest.raises(ValueError, match="no person inside the box"):
        run_demo_people(empty, bbox=(0, 0, 100, 100), config=FIT)
    with pytest.raises(ValueError, match="no person in the image"):
        run_demo_people(empty, config=FIT)


def test_default_mode_anchors_to_the_regressor_only():
    """The demo's default fitter keeps the fit near the regressor's start; from the mean pose
    (no checkpoint) the anchors are off, since they would pull the fit back to the mean."""
    from spin.fitting.smplify import ANCHOR_WEIGHTS
    from spin.predict.shipped import SHIPPED_MODEL

    assert DemoConfig().mode == "anchored"
    image = np.zeros((64, 48, 3), dtype=np.uint8)
    mean_start = DemoFitter.create(image, None, DemoConfig(body_model="open-lite"))
    assert mean_start.smplify.config.resolved_anchor_weights() == (0.0, 0.0)
    shipped = DemoFitter.create(image, SHIPPED_MODEL, DemoConfig())
    assert shipped.smplify.config.resolved_anchor_weights() == ANCHOR_WEIGHTS
