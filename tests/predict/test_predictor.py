"""spin.predict: checkpoints of every input representation (tiny configs, 2 steps) loaded,
their inputs made from an image, from keypoints and from a dataset, predictions and
SMPLify refinement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from spin.fitting.smplify import SMPLifyConfig
from spin.geometry import crop_intrinsics
from spin.predict import InputUnavailableError, crop_pixels, load_predictor, read_checkpoint
from tests.predict import REPRESENTATIONS

BATCH = 3
CHANNELS = {"rgb": 3, "part_segmentation": 25, "keypoint_heatmaps": 25, "keypoints": 75}


@pytest.fixture(scope="module")
def data_dir(tiny_runs):
    return tiny_runs("rgb").data_dir


@pytest.fixture(scope="module")
def trained(tiny_runs):
    """representation -> (trainer, checkpoint path)."""

    def get(representation: str):
        run = tiny_runs(representation)
        return run.trainer, run.checkpoint

    return get


def _dataset(predictor, data_dir):
    part_maps = data_dir / "parts" if predictor.representation == "part_segmentation" else None
    return predictor.dataset(data_dir / "test.npz", data_dir, part_maps=part_maps)


def _batch(dataset):
    return next(iter(DataLoader(dataset, batch_size=BATCH)))


@pytest.mark.parametrize("representation", list(REPRESENTATIONS))
def test_a_checkpoint_of_each_representation_predicts_from_a_dataset(
    trained, data_dir, representation
):
    trainer, path = trained(representation)
    predictor = load_predictor(path)
    assert predictor.representation == representation
    assert predictor.img_size == 64 and predictor.trained_with == "open-lite"
    assert predictor.checkpoint.step == 2 and not predictor.model.training
    assert predictor.model.backbone.in_channels == CHANNELS[representation]

    batch = _batch(_dataset(predictor, data_dir))
    inputs = predictor.input_from_batch(batch)
    spatial = (1, 1) if representation == "keypoints" else (64, 64)
    assert inputs.shape == (BATCH, CHANNELS[representation], *spatial)
    prediction = predictor.predict(inputs)
    assert prediction.pose_rotmats.shape == (BATCH, 24, 3, 3)
    assert prediction.betas.shape == (BATCH, 10) and prediction.cam.shape == (BATCH, 3)
    assert prediction.cam_t.shape == (BATCH, 3)
    assert predictor.body(prediction).vertices.shape[0] == BATCH
    # The loaded weights are the trained ones: the same prediction as the trainer's model.
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(inputs)
    torch.testing.assert_close(prediction.pose_rotmats, expected.pose_rotmats)
    torch.testing.assert_close(prediction.betas, expected.betas)
    # ... and the trainer's validation made the same inputs (both go through the API).
    torch.testing.assert_close(trainer.val_data[0]["img"], _dataset(predictor, data_dir)[0]["img"])


@pytest.mark.parametrize("representation", ["rgb", "keypoint_heatmaps", "keypoints"])
def test_inputs_from_a_photo_are_the_dataset_samples(trained, data_dir, representation):
    """An image + box (rgb) or 2D keypoints + box (keypoint inputs) give exactly the
    un-augmented dataset sample with the same box."""
    predictor = load_predictor(trained(representation)[1])
    dataset = _dataset(predictor, data_dir)
    for index in range(2):
        item = dataset[index]
        center, side = item["center"].numpy(), float(item["scale"]) * 200.0
        image = np.asarray(Image.open(data_dir / item["imgname"]).convert("RGB"))
        keypoints = item["keypoints_orig"].numpy()  # SPIN-49, pixels of the image
        made = predictor.input_for_person(center, side, image, keypoints, "spin49")
        # (the item's box and keypoints are float32 copies of the file's: 1e-6 apart)
        torch.testing.assert_close(made[0], item["img"], rtol=0, atol=1e-5)
        if representation == "rgb":
            torch.testing.assert_close(predictor.input_from_image(image, center, side), made)
            with pytest.raises(InputUnavailableError, match="give the image"):
                predictor.input_from_keypoints(keypoints, "spin49", center, side)
        else:
            torch.testing.assert_close(
                predictor.input_from_keypoints(keypoints, "spin49", center, side), made
            )
            with pytest.raises(InputUnavailableError, match="2D keypoints"):
                predictor.input_from_image(image, center, side)
        # The crop keypoints SMPLify fits are the dataset's too.
        crop = predictor.crop_keypoints(keypoints, "spin49", center, side)
        torch.testing.assert_close(crop[0], item["keypoints"], rtol=0, atol=1e-5)


def test_keypoints_of_another_convention_fill_what_they_share(trained):
    """COCO-17 keypoints make the same vector as the SPIN-49 keypoints they share."""
    predictor = load_predictor(trained("keypoints")[1])
    rng = np.random.default_rng(0)
    spin49 = np.concatenate([rng.uniform(20, 80, (49, 2)), np.ones((49, 1))], axis=1)
    spin49[:25] = 0.0  # no OpenPose block: the ground-truth joints are used
    from spin.body.joint_conventions import convert

    coco = convert(spin49, "spin49", "coco17")
    center, side = np.array([50.0, 50.0]), 80.0
    from_coco = predictor.input_from_keypoints(coco, "coco17", center, side)
    from_spin = predictor.input_from_keypoints(spin49, "spin49", center, side)
    seen = from_coco.reshape(25, 3)[:, 2] > 0
    assert 10 <= int(seen.sum()) < 25  # the face, limbs; no neck, hips or feet
    torch.testing.assert_close(from_coco, from_spin)
    with pytest.raises(KeyError, match="unknown joint convention"):
        predictor.input_from_keypoints(coco, "coco18", center, side)


def test_part_maps_cannot_be_made_from_a_photo(trained, data_dir):
    predictor = load_predictor(trained("part_segmentation")[1])
    image = np.zeros((96, 96, 3), np.uint8)
    keypoints = np.ones((17, 3))
    with pytest.raises(InputUnavailableError, match="segmenter"):
        predictor.input_for_person([48.0, 48.0], 80.0, image, keypoints, "coco17")
    with pytest.raises(InputUnavailableError, match="--part-maps"):
        predictor.dataset(data_dir / "test.npz", data_dir)


def test_a_batch_of_another_representation_is_refused(trained, data_dir):
    rgb = load_predictor(trained("rgb")[1])
    keypoints = load_predictor(trained("keypoints")[1])
    batch = _batch(_dataset(rgb, data_dir))
    with pytest.raises(ValueError, match=r"takes keypoints inputs of shape \(B, 75, H, W\)"):
        keypoints.input_from_batch(batch)


@pytest.mark.parametrize("representation", ["rgb", "keypoints"])
def test_refinement_fits_the_keypoints_from_the_prediction(trained, data_dir, representation):
    predictor = load_predictor(trained(representation)[1])
    batch = _batch(_dataset(predictor, data_dir))
    prediction = predictor.predict(predictor.input_from_batch(batch))
    smplify = predictor.smplify(SMPLifyConfig(mode="lm"))
    refined = predictor.refine(prediction, batch["keypoints"], smplify)
    assert refined.pose_rotvecs.shape == (BATCH, 72) and refined.betas.shape == (BATCH, 10)
    assert refined.cam_t.shape == (BATCH, 3) and refined.valid.all()
    assert refined.num_fallbacks == 0
    # The fit lands closer to the keypoints than the prediction it started from.
    keypoints_px = crop_pixels(batch["keypoints"], predictor.config.hmr.crop_size)
    intrinsics = crop_intrinsics((BATCH,), like=keypoints_px)
    before = smplify.reprojection_loss(
        prediction.pose_rotvecs.reshape(BATCH, 72),
        prediction.betas,
        prediction.cam_t,
        keypoints_px,
        intrinsics,
    )
    assert (refined.fit.reprojection_loss < before).all(), (refined.fit.reprojection_loss, before)
    # A sample without keypoints keeps the prediction.
    empty = batch["keypoints"].clone()
    empty[0, :, 2] = 0.0
    partial = predictor.refine(prediction, empty, smplify)
    assert not partial.valid[0] and partial.num_fallbacks == 1
    torch.testing.assert_close(partial.betas[0], prediction.betas[0])


def test_reading_a_checkpoint_leaves_the_rng_alone(trained):
    path = trained("rgb")[1]
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    contents = read_checkpoint(path)
    load_predictor(path)
    torch.testing.assert_close(torch.rand(3), expected)
    assert contents.step == 2 and contents.config["data"]["img_size"] == 64
