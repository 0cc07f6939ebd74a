"""Backbones: torchvision naming, weight loading, channel adaptation, feature sizes."""

import pytest
import torch

from spin.regressor.backbones import (
    BackboneConfig,
    BasicBlock,
    ResNet,
    TinyCNN,
    adapt_first_conv,
    build_backbone,
    load_torchvision_weights,
)

_BN = "weight bias running_mean running_var num_batches_tracked"


def _bn(prefix):
    return [f"{prefix}.{suffix}" for suffix in _BN.split()]


# torchvision's resnet18().state_dict() keys, in order, written out (not derived from
# our code): a stem, four stages of two BasicBlocks, a 1x1 downsample on the first
# block of stages 2-4, and the ImageNet classifier.
TORCHVISION_RESNET18_KEYS = (
    ["conv1.weight", *_bn("bn1")]
    + ["layer1.0.conv1.weight", *_bn("layer1.0.bn1"), "layer1.0.conv2.weight", *_bn("layer1.0.bn2")]
    + ["layer1.1.conv1.weight", *_bn("layer1.1.bn1"), "layer1.1.conv2.weight", *_bn("layer1.1.bn2")]
    + ["layer2.0.conv1.weight", *_bn("layer2.0.bn1"), "layer2.0.conv2.weight", *_bn("layer2.0.bn2")]
    + ["layer2.0.downsample.0.weight", *_bn("layer2.0.downsample.1")]
    + ["layer2.1.conv1.weight", *_bn("layer2.1.bn1"), "layer2.1.conv2.weight", *_bn("layer2.1.bn2")]
    + ["layer3.0.conv1.weight", *_bn("layer3.0.bn1"), "layer3.0.conv2.weight", *_bn("layer3.0.bn2")]
    + ["layer3.0.downsample.0.weight", *_bn("layer3.0.downsample.1")]
    + ["layer3.1.conv1.weight", *_bn("layer3.1.bn1"), "layer3.1.conv2.weight", *_bn("layer3.1.bn2")]
    + ["layer4.0.conv1.weight", *_bn("layer4.0.bn1"), "layer4.0.conv2.weight", *_bn("layer4.0.bn2")]
    + ["layer4.0.downsample.0.weight", *_bn("layer4.0.downsample.1")]
    + ["layer4.1.conv1.weight", *_bn("layer4.1.bn1"), "layer4.1.conv2.weight", *_bn("layer4.1.bn2")]
    + ["fc.weight", "fc.bias"]
)

# Published sizes of torchvision's ResNets: parameters and state_dict entries, both
# counting the 1000-way fc, and the pooled feature size (the fc's input).
TORCHVISION_SIZES = {
    "resnet18": (11_689_512, 122, 512),
    "resnet34": (21_797_672, 218, 512),
    "resnet50": (25_557_032, 320, 2048),
}
IMAGENET_CLASSES = 1000


def test_resnet18_keys_are_torchvision_keys_without_fc():
    model, _ = build_backbone(BackboneConfig(name="resnet18"))
    assert len(TORCHVISION_RESNET18_KEYS) == 122
    assert list(model.state_dict()) == [
        k for k in TORCHVISION_RESNET18_KEYS if not k.startswith("fc.")
    ]


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_resnet_sizes_match_torchvision(name):
    num_params, num_keys, feature_dim = TORCHVISION_SIZES[name]
    model, dim = build_backbone(BackboneConfig(name=name))
    fc_params = feature_dim * IMAGENET_CLASSES + IMAGENET_CLASSES
    assert dim == model.feature_dim == feature_dim
    assert sum(p.numel() for p in model.parameters()) == num_params - fc_params
    assert len(model.state_dict()) == num_keys - 2
    keys = set(model.state_dict())
    if name == "resnet50":  # bottlenecks widen 64 -> 256 already in layer1
        assert {"layer1.0.downsample.0.weight", "layer4.2.conv3.weight"} <= keys
    else:
        assert "layer1.0.downsample.0.weight" not in keys
        assert "layer2.0.downsample.1.running_var" in keys
    with torch.no_grad():
        features = model(torch.randn(1, 3, 64, 64))
    assert features.shape == (1, feature_dim) and torch.isfinite(features).all()


def test_tiny_cnn_forward_any_size_and_channels():
    torch.manual_seed(0)
    model, dim = build_backbone(BackboneConfig(name="tiny"))
    assert dim == model.feature_dim == 128
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 128)
    model = TinyCNN(in_channels=25)
    assert model(torch.randn(3, 25, 64, 64)).shape == (3, model.feature_dim)
    assert model(torch.randn(1, 25, 50, 70)).shape == (1, model.feature_dim)


def _random_torchvision_file(path, name="resnet18", seed=0):
    """A state_dict with torchvision's keys (ours plus a 1000-way fc): He-initialised
    convolutions (a fresh model's) and random batch-norm parameters and statistics,
    so every tensor differs from another model's and outputs stay well scaled."""
    torch.manual_seed(seed)
    model, dim = build_backbone(BackboneConfig(name=name))
    state = {}
    for key, value in model.state_dict().items():
        # Batch norms are bn1/bn2 and the downsample branch's second module; a key such as
        # "conv1.weight" must not match (positive conv weights made the outputs ~1e19, and
        # float32 rounding of such sums broke the tolerance of the grey-response test).
        batch_norm = ".bn" in key or key.startswith("bn") or "downsample.1." in key
        if key.endswith("num_batches_tracked"):
            value = value + 7
        elif batch_norm and key.endswith(("running_var", ".weight")):
            value = torch.rand_like(value) + 0.5
        elif key.endswith(("running_mean", "bias")):
            value = 0.1 * torch.randn_like(value)
        state[key] = value.clone()
    state["fc.weight"] = torch.randn(IMAGENET_CLASSES, dim)
    state["fc.bias"] = torch.randn(IMAGENET_CLASSES)
    torch.save(state, path)
    return state


@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory):
    """(path, state) of a random checkpoint with torchvision's ResNet-18 keys."""
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    return path, _random_torchvision_file(path)


def test_load_round_trip(resnet18_checkpoint):
    path, state = resnet18_checkpoint
    model, _ = build_backbone(BackboneConfig(name="resnet18"))
    report = load_torchvision_weights(model, path)
    assert report.ignored == ("fc.weight", "fc.bias")
    assert report.adapted == ()
    assert len(report.loaded) == len(state) - 2
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    # Through the config, too.
    built, _ = build_backbone(BackboneConfig(name="resnet18", weights=str(path)))
    assert torch.equal(built.layer3[1].bn2.running_var, state["layer3.1.bn2.running_var"])


def test_wrong_depth_is_a_clear_error(resnet18_checkpoint):
    shallower = ResNet(BasicBlock, (1, 1, 1, 1))  # a ResNet-10: no second block per stage
    with pytest.raises(ValueError, match=r"unexpected keys \[layer1\.1\.conv1\.weight"):
        load_torchvision_weights(shallower, resnet18_checkpoint[0])


def test_missing_keys_and_shapes_are_reported(resnet18_checkpoint, tmp_path):
    state = dict(resnet18_checkpoint[1])
    del state["layer4.1.bn2.running_mean"]
    torch.save(state, tmp_path / "missing.pth")
    model, _ = build_backbone(BackboneConfig(name="resnet18"))
    with pytest.raises(ValueError, match=r"missing keys \[layer4\.1\.bn2\.running_mean\]"):
        load_torchvision_weights(model, tmp_path / "missing.pth")
    state["layer4.1.bn2.running_mean"] = torch.zeros(7)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"layer4\.1\.bn2\.running_mean: file \(7,\)"):
        load_torchvision_weights(model, tmp_path / "shape.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="not a torchvision state_dict"):
        load_torchvision_weights(model, tmp_path / "list.pth")
    with pytest.raises(FileNotFoundError, match="download the torchvision"):
        load_torchvision_weights(model, tmp_path / "absent.pth")


def test_in_channels_adaptation_keeps_the_grey_response(resnet18_checkpoint):
    path, state = resnet18_checkpoint
    rgb, _ = build_backbone(BackboneConfig(name="resnet18", weights=str(path)))
    torch.manual_seed(1)
    grey = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        expected_features = rgb.eval()(grey.expand(-1, 3, -1, -1))
    for in_channels in (1, 25):
        adapted = ResNet(BasicBlock, (2, 2, 2, 2), in_channels=in_channels)
        report = load_torchvision_weights(adapted, path)
        assert report.adapted == ("conv1.weight",)
        weight = adapted.conv1.weight
        assert weight.shape == (64, in_channels, 7, 7)
        expected = state["conv1.weight"].mean(1, keepdim=True) * 3 / in_channels
        torch.testing.assert_close(weight, expected.expand_as(weight))
        # A grey image through the RGB net = its values in every channel of the new one.
        with torch.no_grad():
            features = adapted.eval()(grey.expand(-1, in_channels, -1, -1))
        torch.testing.assert_close(features, expected_features, rtol=1e-4, atol=1e-4)


def test_adapt_first_conv_rejects_non_rgb():
    with pytest.raises(ValueError, match="RGB filter bank"):
        adapt_first_conv(torch.zeros(64, 4, 7, 7), 1)


def test_wrong_input_channels_and_config_errors():
    tiny, _ = build_backbone(BackboneConfig(name="tiny"))
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, H, W\)"):
        tiny(torch.zeros(1, 4, 32, 32))
    with pytest.raises(ValueError, match="add a batch dimension"):
        tiny(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="unknown backbone 'resnet101'"):
        BackboneConfig(name="resnet101")
    with pytest.raises(ValueError, match="no pretrained weights"):
        BackboneConfig(name="tiny", weights="x.pth")


def test_keypoint_mlp_encodes_vectors_and_trains():
    from spin.regressor.backbones import BackboneConfig, KeypointMLP, build_backbone

    module, features = build_backbone(BackboneConfig(name="mlp", in_channels=75))
    assert isinstance(module, KeypointMLP) and features == module.feature_dim
    x = torch.randn(4, 75, 1, 1, requires_grad=True)
    out = module(x)
    assert out.shape == (4, features)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="no pretrained weights"):
        BackboneConfig(name="mlp", weights="x.pth")
