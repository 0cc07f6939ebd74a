"""A TensorFlow Lite graph rebuilt as a trainable PyTorch module.

:func:`tflite_to_program` turns the operators of a :class:`~spin.regressor.tflite.TFLiteModel`
that lead to the wanted outputs into a :class:`Program` (a list of steps, plain data) and
the convolution weights into arrays in PyTorch's layout; :class:`TFLiteNet` holds those
weights as ``nn.Parameter``\\ s (one ``nn.Conv2d`` per convolution, named after the
TFLite operator: ``convs.op003.weight``) and executes the steps in order. Operators that
no wanted output depends on are left out, with their weights.

Supported operators (what MediaPipe's BlazePose landmark models use): CONV_2D,
DEPTHWISE_CONV_2D, ADD, PAD, RESIZE_BILINEAR, MAX_POOL_2D, RESHAPE, LOGISTIC, and
DEQUANTIZE of constants (half-precision weights, read as float32). Anything else is
refused by name.

Layout: the module takes and returns images as ``(B, C, H, W)``; every 4D tensor of the
graph is held that way, and RESHAPE applies TensorFlow's (NHWC) element order. TensorFlow's
SAME padding is reproduced exactly: for an input of size ``n``, stride ``s`` and kernel
extent ``k``, ``p = max((ceil(n / s) - 1) s + k - n, 0)`` zeros are added, ``p // 2``
before and the rest after (so a stride-2 convolution of an even input pads only after).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from spin.regressor.tflite import TFLiteModel

__all__ = [
    "SUPPORTED_OPERATORS",
    "Program",
    "Step",
    "TFLiteNet",
    "same_padding",
    "tflite_to_program",
]

SUPPORTED_OPERATORS = (
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "ADD",
    "PAD",
    "RESIZE_BILINEAR",
    "MAX_POOL_2D",
    "RESHAPE",
    "LOGISTIC",
)
"""Operators :class:`TFLiteNet` executes (besides DEQUANTIZE of constants, folded away)."""

_ACTIVATIONS = {
    "NONE": lambda x: x,
    "RELU": F.relu,
    "RELU6": F.relu6,
    "RELU_N1_TO_1": lambda x: x.clamp(-1.0, 1.0),
    "TANH": torch.tanh,
}


@dataclass(frozen=True)
class Step:
    """One operator of the graph.

    Attributes:
        kind: the TFLite operator (one of :data:`SUPPORTED_OPERATORS`).
        inputs: ids of the computed tensors it reads (constants are folded into ``attrs``
            or into the weights of ``module``).
        output: id of the tensor it writes.
        attrs: what the kind needs: ``stride``, ``dilation``, ``padding`` ("SAME"/"VALID"),
            ``activation``, ``groups`` (convolutions); ``kernel`` (pooling); ``pads``
            (PAD: ``((before, after), ...)`` per NHWC axis); ``size``, ``align_corners``
            (resize); ``shape`` (RESHAPE, TensorFlow's).
        module: name of the convolution in :attr:`TFLiteNet.convs`, or "".
    """

    kind: str
    inputs: tuple[int, ...]
    output: int
    attrs: Mapping[str, object]
    module: str = ""


@dataclass(frozen=True)
class Program:
    """What :class:`TFLiteNet` executes; plain data (:meth:`to_dict` for storage).

    Attributes:
        input: id of the graph's image input.
        input_size: ``(H, W, C)`` the graph was converted for.
        outputs: names given to the tensors the module returns, and their ids.
        steps: operators in execution order.
        sources: for each convolution, the ids of the file's weight and bias tensors.
    """

    input: int
    input_size: tuple[int, int, int]
    outputs: Mapping[str, int]
    steps: tuple[Step, ...]
    sources: Mapping[str, tuple[int, int]]

    def select(self, names: Sequence[str]) -> Program:
        """The program computing only the outputs ``names`` (and the steps they need)."""
        missing = [name for name in names if name not in self.outputs]
        if missing:
            raise ValueError(f"the program has no outputs {missing}; it has {list(self.outputs)}")
        needed = {self.outputs[name] for name in names}
        kept = []
        for step in reversed(self.steps):
            if step.output in needed:
                kept.append(step)
                needed.update(step.inputs)
        kept.reverse()
        modules = {step.module for step in kept if step.module}
        return Program(
            input=self.input,
            input_size=self.input_size,
            outputs={name: self.outputs[name] for name in names},
            steps=tuple(kept),
            sources={k: v for k, v in self.sources.items() if k in modules},
        )

    def to_dict(self) -> dict:
        """A dict of lists, strings and numbers (``torch.save``-able with ``weights_only``)."""
        data = asdict(self)
        data["steps"] = [{**asdict(step), "attrs": _plain(dict(step.attrs))} for step in self.steps]
        return _plain(data)

    @classmethod
    def from_dict(cls, data: Mapping) -> Program:
        steps = tuple(
            Step(
                kind=step["kind"],
                inputs=tuple(step["inputs"]),
                output=step["output"],
                attrs=_tuples(step["attrs"]),
                module=step["module"],
            )
            for step in data["steps"]
        )
        return cls(
            input=data["input"],
            input_size=tuple(data["input_size"]),
            outputs=dict(data["outputs"]),
            steps=steps,
            sources={k: tuple(v) for k, v in data["sources"].items()},
        )


def _plain(value):
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _tuples(value):
    if isinstance(value, Mapping):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def same_padding(size: int, stride: int, kernel: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding of one axis: ``(before, after)``."""
    extent = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2


def _ancestors(model: TFLiteModel, wanted: Sequence[int]) -> set[int]:
    """Indices of the operators the ``wanted`` tensors depend on."""
    producers = {out: op for op in model.operators for out in op.outputs}
    needed: set[int] = set()
    stack = list(wanted)
    seen: set[int] = set()
    while stack:
        tensor = stack.pop()
        if tensor in seen or tensor not in producers:
            continue
        seen.add(tensor)
        op = producers[tensor]
        needed.add(op.index)
        stack.extend(i for i in op.inputs if i >= 0)
    return needed


def tflite_to_program(
    model: TFLiteModel, outputs: Mapping[str, int]
) -> tuple[Program, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Convert the part of a TFLite graph that ``outputs`` depend on.

    Args:
        model: the parsed file (one image input, NHWC).
        outputs: names for the tensors to compute, and their ids (any tensor of the
            graph: outputs or intermediate features).

    Returns:
        The program and, per convolution, ``(weight, bias)`` float32 arrays in PyTorch's
        layout: ``(O, I / groups, kh, kw)`` and ``(O,)``.

    Raises:
        ValueError: an operator outside :data:`SUPPORTED_OPERATORS`, or options the
            module cannot reproduce (e.g. a resize with neither half-pixel centres nor
            aligned corners).
    """
    if len(model.inputs) != 1 or len(model.tensors[model.inputs[0]].shape) != 4:
        raise ValueError(
            f"expected a graph with one image input (1, H, W, C), got inputs "
            f"{[model.tensors[i].shape for i in model.inputs]}"
        )
    image = model.inputs[0]
    needed = _ancestors(model, list(outputs.values()))
    steps: list[Step] = []
    weights: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    sources: dict[str, tuple[int, int]] = {}
    for op in model.operators:
        if op.index not in needed:
            continue
        if op.kind == "DEQUANTIZE":
            if not model.is_constant(op.inputs[0]):
                raise ValueError(f"operator {op.index}: DEQUANTIZE of a computed tensor")
            continue
        if op.kind not in SUPPORTED_OPERATORS:
            raise ValueError(
                f"operator {op.index} is {op.kind}, which this converter does not support "
                f"(it handles {', '.join(SUPPORTED_OPERATORS)})"
            )
        values = tuple(i for i in op.inputs if i >= 0 and not model.is_constant(i))
        constants = [i for i in op.inputs if i >= 0 and model.is_constant(i)]
        options = dict(op.options)
        attrs: dict[str, object] = {}
        module = ""
        if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            module = f"op{op.index:03d}"
            weight_id, bias_id = op.inputs[1], op.inputs[2]
            weight = model.constant(weight_id).astype(np.float32)
            bias = (
                model.constant(bias_id).astype(np.float32)
                if bias_id >= 0
                else np.zeros(weight.shape[0 if op.kind == "CONV_2D" else 3], np.float32)
            )
            if op.kind == "CONV_2D":
                torch_weight = weight.transpose(0, 3, 1, 2)  # (O, kh, kw, I) -> (O, I, kh, kw)
                groups = 1
            else:
                torch_weight = weight.transpose(3, 0, 1, 2)  # (1, kh, kw, C m) -> (C m, 1, ..)
                groups = weight.shape[3] // options["depth_multiplier"]
            weights[module] = (np.ascontiguousarray(torch_weight), bias)
            sources[module] = (weight_id, bias_id)
            attrs = {
                "stride": (options["stride_h"], options["stride_w"]),
                "dilation": (options["dilation_h"], options["dilation_w"]),
                "padding": options["padding"],
                "activation": options["activation"],
                "groups": groups,
            }
        elif op.kind == "ADD":
            if len(values) != 2:
                raise ValueError(f"operator {op.index}: ADD of a constant is not supported")
            attrs = {"activation": options["activation"]}
        elif op.kind == "PAD":
            pads = model.constant(op.inputs[1]).astype(int)
            if pads[0].any():
                raise ValueError(f"operator {op.index}: PAD of the batch axis")
            attrs = {"pads": tuple(tuple(int(v) for v in row) for row in pads)}
        elif op.kind == "RESIZE_BILINEAR":
            if not (options["half_pixel_centers"] or options["align_corners"]):
                raise ValueError(
                    f"operator {op.index}: RESIZE_BILINEAR without half_pixel_centers or "
                    "align_corners (TF1's legacy sampling) has no PyTorch equivalent"
                )
            size = model.constant(op.inputs[1]).astype(int)
            attrs = {
                "size": (int(size[0]), int(size[1])),
                "align_corners": bool(options["align_corners"]),
            }
        elif op.kind == "MAX_POOL_2D":
            attrs = {
                "kernel": (options["filter_h"], options["filter_w"]),
                "stride": (options["stride_h"], options["stride_w"]),
                "padding": options["padding"],
                "activation": options["activation"],
            }
        elif op.kind == "RESHAPE":
            shape = options.get("new_shape") or tuple(
                int(v) for v in model.constant(constants[0]).reshape(-1)
            )
            attrs = {"shape": tuple(shape)}
        steps.append(Step(op.kind, values, op.outputs[0], attrs, module))
    program = Program(
        input=image,
        input_size=tuple(model.tensors[image].shape[1:]),
        outputs=dict(outputs),
        steps=tuple(steps),
        sources=sources,
    )
    return program, weights


class TFLiteNet(nn.Module):
    """Executes a :class:`Program` with trainable convolutions.

    Args:
        program: the steps (from :func:`tflite_to_program`).
        weights: ``(weight, bias)`` per convolution, PyTorch layout, as arrays or tensors.

    Attributes:
        convs: one ``nn.Conv2d`` (weights and bias as parameters) per convolution step.
    """

    def __init__(
        self, program: Program, weights: Mapping[str, tuple[np.ndarray | Tensor, ...]]
    ) -> None:
        super().__init__()
        self.program = program
        convs = {}
        for step in program.steps:
            if not step.module:
                continue
            weight, bias = (torch.as_tensor(np.asarray(a)) for a in weights[step.module])
            out_channels, in_per_group, kh, kw = weight.shape
            groups = step.attrs["groups"]
            conv = nn.Conv2d(
                in_per_group * groups, out_channels, (kh, kw), groups=groups, bias=True
            )
            with torch.no_grad():
                conv.weight.copy_(weight)
                conv.bias.copy_(bias)
            convs[step.module] = conv
        missing = set(weights) - set(convs)
        if missing:
            raise ValueError(f"weights given for convolutions the program lacks: {sorted(missing)}")
        self.convs = nn.ModuleDict(convs)
        # After its last reader, a tensor is dropped (outputs are kept).
        last_use: dict[int, int] = {}
        for index, step in enumerate(program.steps):
            for tensor in step.inputs:
                last_use[tensor] = index
        kept = set(program.outputs.values())
        self._drop_after = [
            [t for t in step.inputs if last_use[t] == index and t not in kept]
            for index, step in enumerate(program.steps)
        ]

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Run the graph.

        Args:
            images: ``(B, C, H, W)``; the graph's own input size (``program.input_size``)
                unless its operators are size-agnostic up to the outputs asked for.

        Returns:
            The named outputs: 4D tensors as ``(B, C, H, W)``, others in TensorFlow's
            layout with the batch first (e.g. ``(B, 195)``).
        """
        channels = self.program.input_size[2]
        if images.dim() != 4 or images.shape[1] != channels:
            raise ValueError(
                f"expected images of shape (B, {channels}, H, W), got {tuple(images.shape)}"
            )
        env: dict[int, Tensor] = {self.program.input: images}
        for step, drop in zip(self.program.steps, self._drop_after, strict=True):
            env[step.output] = self._run(step, [env[t] for t in step.inputs])
            for tensor in drop:
                del env[tensor]
        return {name: env[tensor] for name, tensor in self.program.outputs.items()}

    def _run(self, step: Step, inputs: list[Tensor]) -> Tensor:
        attrs = step.attrs
        x = inputs[0]
        if step.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            conv = self.convs[step.module]
            x = _pad_same(x, conv.kernel_size, attrs["stride"], attrs["dilation"], attrs["padding"])
            x = F.conv2d(
                x, conv.weight, conv.bias, attrs["stride"], 0, attrs["dilation"], attrs["groups"]
            )
            return _ACTIVATIONS[attrs["activation"]](x)
        if step.kind == "ADD":
            return _ACTIVATIONS[attrs["activation"]](x + inputs[1])
        if step.kind == "PAD":
            (_, _), (top, bottom), (left, right), (front, back) = attrs["pads"]
            return F.pad(x, (left, right, top, bottom, front, back))
        if step.kind == "RESIZE_BILINEAR":
            return F.interpolate(
                x, size=attrs["size"], mode="bilinear", align_corners=attrs["align_corners"]
            )
        if step.kind == "MAX_POOL_2D":
            x = _pad_same(x, attrs["kernel"], attrs["stride"], (1, 1), attrs["padding"], -math.inf)
            return _ACTIVATIONS[attrs["activation"]](
                F.max_pool2d(x, attrs["kernel"], attrs["stride"])
            )
        if step.kind == "RESHAPE":
            return _reshape_nhwc(x, attrs["shape"])
        if step.kind == "LOGISTIC":
            return torch.sigmoid(x)
        raise AssertionError(f"unsupported step {step.kind}")  # refused at conversion


def _pad_same(
    x: Tensor,
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    padding: str,
    value: float = 0.0,
) -> Tensor:
    """``x`` ``(B, C, H, W)`` padded as TensorFlow pads for ``padding`` ("SAME"/"VALID")."""
    if padding == "VALID":
        return x
    top, bottom = same_padding(x.shape[2], stride[0], kernel[0], dilation[0])
    left, right = same_padding(x.shape[3], stride[1], kernel[1], dilation[1])
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


def _reshape_nhwc(x: Tensor, shape: Sequence[int]) -> Tensor:
    """TensorFlow's RESHAPE (NHWC element order) of a tensor we hold NCHW when 4D; the
    shape's first entry (the batch, 1 in the file) becomes ``x``'s batch."""
    if x.dim() == 4:
        x = x.permute(0, 2, 3, 1)
    out = x.reshape(x.shape[0], *shape[1:])
    if out.dim() == 4:
        out = out.permute(0, 3, 1, 2)
    return out
