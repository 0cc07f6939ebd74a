"""A small reader of TensorFlow Lite model files (``.tflite``), with no dependency beyond numpy.

A ``.tflite`` file is a FlatBuffers table laid out by TensorFlow Lite's ``schema.fbs``: a
``Model`` holds operator codes, subgraphs (tensors, operators, inputs, outputs) and raw
buffers. This module reads what a converter of plain convolutional networks needs: each
tensor's name, shape, type and constant data; each operator's kind, inputs, outputs and
options (strides, SAME/VALID padding, fused activation, pool sizes, resize flavour, reshape
target). Half-precision weights are stored as FLOAT16 constants followed by a DEQUANTIZE
operator; :meth:`TFLiteModel.constant` follows such an operator back to its data and returns
float32.

Only the subset of the schema these models use is read; an operator whose options are not
decoded here gets an empty ``options`` mapping (the converter then refuses it by kind).

FlatBuffers in three lines: the file starts with a little-endian ``uint32`` offset to the
root table; a table starts with an ``int32`` that, subtracted from its position, points to
its vtable (``uint16`` sizes, then one ``uint16`` offset per field, 0 for "absent, use the
default"); references to tables, vectors and strings are ``uint32`` offsets from where they
are stored, and a vector is a ``uint32`` length followed by its elements.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "TFLiteModel",
    "TFLiteOperator",
    "TFLiteTensor",
    "read_tflite",
]

FILE_IDENTIFIER = b"TFL3"
"""The four bytes after the root offset of every TensorFlow Lite file."""

# schema.fbs enum BuiltinOperator (the codes of the operators read here, and a few more so
# that a model using them is named in error messages).
BUILTIN_OPERATORS = {
    0: "ADD",
    1: "AVERAGE_POOL_2D",
    2: "CONCATENATION",
    3: "CONV_2D",
    4: "DEPTHWISE_CONV_2D",
    5: "DEPTH_TO_SPACE",
    6: "DEQUANTIZE",
    9: "FULLY_CONNECTED",
    14: "LOGISTIC",
    17: "MAX_POOL_2D",
    18: "MUL",
    19: "RELU",
    21: "RELU6",
    22: "RESHAPE",
    23: "RESIZE_BILINEAR",
    25: "SOFTMAX",
    28: "TANH",
    32: "CUSTOM",
    34: "PAD",
    39: "TRANSPOSE",
    40: "MEAN",
    41: "SUB",
    42: "DIV",
    49: "SPLIT",
    53: "CAST",
    54: "PRELU",
    67: "TRANSPOSE_CONV",
    97: "RESIZE_NEAREST_NEIGHBOR",
    98: "LEAKY_RELU",
    117: "HARD_SWISH",
    124: "DENSIFY",
}

# schema.fbs enum TensorType -> numpy dtype.
TENSOR_TYPES = {
    0: np.dtype("<f4"),
    1: np.dtype("<f2"),
    2: np.dtype("<i4"),
    3: np.dtype("u1"),
    4: np.dtype("<i8"),
    6: np.dtype("?"),
    7: np.dtype("<i2"),
    9: np.dtype("i1"),
}

PADDINGS = {0: "SAME", 1: "VALID"}
"""schema.fbs enum Padding."""

ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
"""schema.fbs enum ActivationFunctionType."""


class _Table:
    """One FlatBuffers table: fields by their index in the schema."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos
        vtable = pos - struct.unpack_from("<i", data, pos)[0]
        vtable_size = struct.unpack_from("<H", data, vtable)[0]
        count = (vtable_size - 4) // 2
        self.offsets = struct.unpack_from(f"<{count}H", data, vtable + 4)

    def _field(self, index: int) -> int:
        """Absolute position of field ``index``, or 0 when it is absent."""
        if index >= len(self.offsets) or self.offsets[index] == 0:
            return 0
        return self.pos + self.offsets[index]

    def scalar(self, index: int, fmt: str, default=0):
        at = self._field(index)
        return default if at == 0 else struct.unpack_from("<" + fmt, self.data, at)[0]

    def _target(self, index: int) -> int:
        at = self._field(index)
        return 0 if at == 0 else at + struct.unpack_from("<I", self.data, at)[0]

    def table(self, index: int) -> _Table | None:
        at = self._target(index)
        return None if at == 0 else _Table(self.data, at)

    def tables(self, index: int) -> list[_Table]:
        at = self._target(index)
        if at == 0:
            return []
        length = struct.unpack_from("<I", self.data, at)[0]
        items = []
        for i in range(length):
            slot = at + 4 + 4 * i
            items.append(_Table(self.data, slot + struct.unpack_from("<I", self.data, slot)[0]))
        return items

    def vector(self, index: int, dtype: str) -> np.ndarray:
        """A vector of scalars (a copy), empty when absent."""
        at = self._target(index)
        if at == 0:
            return np.zeros(0, dtype=dtype)
        length = struct.unpack_from("<I", self.data, at)[0]
        return np.frombuffer(self.data, dtype=dtype, count=length, offset=at + 4).copy()

    def bytes(self, index: int) -> bytes:
        at = self._target(index)
        if at == 0:
            return b""
        length = struct.unpack_from("<I", self.data, at)[0]
        return self.data[at + 4 : at + 4 + length]

    def string(self, index: int) -> str:
        return self.bytes(index).decode("utf-8")


@dataclass(frozen=True)
class TFLiteTensor:
    """A tensor of the graph.

    Attributes:
        index: its index in the subgraph.
        name: TensorFlow's name.
        shape: the static shape, TensorFlow's layout (NHWC for images; convolution filters
            ``(O, kh, kw, I)``, depthwise filters ``(1, kh, kw, C)``).
        dtype: numpy dtype of its elements.
        buffer: index of its buffer; buffers with data make the tensor a constant.
    """

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    buffer: int


@dataclass(frozen=True)
class TFLiteOperator:
    """An operator of the graph.

    Attributes:
        index: its position in execution order.
        kind: the builtin operator's name (``"CONV_2D"``), or ``"BUILTIN_<code>"`` for codes
            this module does not name.
        inputs: tensor indices (-1 for an optional input left out).
        outputs: tensor indices.
        options: decoded options; keys per kind: ``padding`` (``"SAME"``/``"VALID"``),
            ``stride_h``, ``stride_w``, ``dilation_h``, ``dilation_w``, ``activation``
            (``"NONE"``, ``"RELU6"``, ...), ``depth_multiplier``, ``filter_h``, ``filter_w``,
            ``align_corners``, ``half_pixel_centers``, ``new_shape``.
    """

    index: int
    kind: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class TFLiteModel:
    """The first subgraph of a ``.tflite`` file.

    Attributes:
        tensors: all tensors, by index.
        operators: operators in execution order.
        inputs, outputs: indices of the graph's input and output tensors.
        buffers: raw bytes of each buffer (empty for non-constants).
        description: the converter's description string.
    """

    tensors: tuple[TFLiteTensor, ...]
    operators: tuple[TFLiteOperator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    buffers: tuple[bytes, ...]
    description: str = ""

    def producer(self, tensor: int) -> TFLiteOperator | None:
        """The operator that writes ``tensor``, or None for inputs and constants."""
        for op in self.operators:
            if tensor in op.outputs:
                return op
        return None

    def is_constant(self, tensor: int) -> bool:
        """Whether ``tensor`` holds data in the file, directly or through a DEQUANTIZE."""
        if len(self.buffers[self.tensors[tensor].buffer]) > 0:
            return True
        op = self.producer(tensor)
        return op is not None and op.kind == "DEQUANTIZE" and self.is_constant(op.inputs[0])

    def constant(self, tensor: int) -> np.ndarray:
        """The data of a constant tensor, shaped as the file says; FLOAT16 data behind a
        DEQUANTIZE comes back as float32 (exactly: every half is a float).

        Raises:
            ValueError: ``tensor`` is computed by the graph, not stored.
        """
        info = self.tensors[tensor]
        raw = self.buffers[info.buffer]
        if len(raw) == 0:
            op = self.producer(tensor)
            if op is None or op.kind != "DEQUANTIZE":
                raise ValueError(f"tensor {tensor} ({info.name!r}) is not a constant")
            return self.constant(op.inputs[0]).astype(np.float32)
        array = np.frombuffer(raw, dtype=info.dtype)
        return array.reshape(info.shape).copy()

    def tensor_index(self, name: str) -> int:
        """Index of the tensor called ``name``."""
        for tensor in self.tensors:
            if tensor.name == name:
                return tensor.index
        raise KeyError(f"no tensor named {name!r} in the model")


def _options(kind: str, table: _Table | None) -> dict[str, object]:
    """Decode an operator's builtin options (schema.fbs field order)."""
    if table is None:
        return {}
    if kind == "CONV_2D":
        return {
            "padding": PADDINGS[table.scalar(0, "b")],
            "stride_w": table.scalar(1, "i"),
            "stride_h": table.scalar(2, "i"),
            "activation": ACTIVATIONS[table.scalar(3, "b")],
            "dilation_w": table.scalar(4, "i", 1),
            "dilation_h": table.scalar(5, "i", 1),
        }
    if kind == "DEPTHWISE_CONV_2D":
        return {
            "padding": PADDINGS[table.scalar(0, "b")],
            "stride_w": table.scalar(1, "i"),
            "stride_h": table.scalar(2, "i"),
            "depth_multiplier": table.scalar(3, "i"),
            "activation": ACTIVATIONS[table.scalar(4, "b")],
            "dilation_w": table.scalar(5, "i", 1),
            "dilation_h": table.scalar(6, "i", 1),
        }
    if kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        return {
            "padding": PADDINGS[table.scalar(0, "b")],
            "stride_w": table.scalar(1, "i"),
            "stride_h": table.scalar(2, "i"),
            "filter_w": table.scalar(3, "i"),
            "filter_h": table.scalar(4, "i"),
            "activation": ACTIVATIONS[table.scalar(5, "b")],
        }
    if kind in ("ADD", "MUL", "SUB", "DIV", "CONCATENATION", "FULLY_CONNECTED"):
        # AddOptions/MulOptions/SubOptions/DivOptions: activation first; Concatenation:
        # axis then activation; FullyConnected: activation first.
        if kind == "CONCATENATION":
            return {"axis": table.scalar(0, "i"), "activation": ACTIVATIONS[table.scalar(1, "b")]}
        return {"activation": ACTIVATIONS[table.scalar(0, "b")]}
    if kind == "RESIZE_BILINEAR":
        return {
            "align_corners": bool(table.scalar(2, "B")),
            "half_pixel_centers": bool(table.scalar(3, "B")),
        }
    if kind == "RESHAPE":
        return {"new_shape": tuple(int(v) for v in table.vector(0, "<i4"))}
    return {}


def read_tflite(path: str | os.PathLike) -> TFLiteModel:
    """Read the first subgraph of a ``.tflite`` file.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a TensorFlow Lite model.
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise ValueError(
            f"{path} is not a TensorFlow Lite model (no {FILE_IDENTIFIER!r} identifier)"
        )
    model = _Table(data, struct.unpack_from("<I", data, 0)[0])
    # Model: 0 version, 1 operator_codes, 2 subgraphs, 3 description, 4 buffers.
    kinds = []
    for code in model.tables(1):
        # OperatorCode: 0 deprecated_builtin_code (int8), 1 custom_code, 2 version,
        # 3 builtin_code (int32; the larger of the two is the real one).
        builtin = max(code.scalar(0, "b"), code.scalar(3, "i"))
        kinds.append(BUILTIN_OPERATORS.get(builtin, f"BUILTIN_{builtin}"))
    subgraphs = model.tables(2)
    if not subgraphs:
        raise ValueError(f"{path} holds no subgraph")
    graph = subgraphs[0]
    buffers = []
    for buffer in model.tables(4):
        # Buffer: 0 data; 1 offset, 2 size (data stored after the flatbuffer, > 2 GB models).
        offset, size = buffer.scalar(1, "Q"), buffer.scalar(2, "Q")
        buffers.append(data[offset : offset + size] if offset > 1 else buffer.bytes(0))
    tensors = []
    # SubGraph: 0 tensors, 1 inputs, 2 outputs, 3 operators, 4 name.
    for index, tensor in enumerate(graph.tables(0)):
        # Tensor: 0 shape, 1 type, 2 buffer, 3 name.
        type_code = tensor.scalar(1, "b")
        if type_code not in TENSOR_TYPES:
            raise ValueError(f"{path}: tensor {index} has an unsupported type code {type_code}")
        tensors.append(
            TFLiteTensor(
                index=index,
                name=tensor.string(3),
                shape=tuple(int(v) for v in tensor.vector(0, "<i4")),
                dtype=TENSOR_TYPES[type_code],
                buffer=tensor.scalar(2, "I"),
            )
        )
    operators = []
    for index, op in enumerate(graph.tables(3)):
        # Operator: 0 opcode_index, 1 inputs, 2 outputs, 3 builtin_options_type,
        # 4 builtin_options.
        kind = kinds[op.scalar(0, "I")]
        operators.append(
            TFLiteOperator(
                index=index,
                kind=kind,
                inputs=tuple(int(v) for v in op.vector(1, "<i4")),
                outputs=tuple(int(v) for v in op.vector(2, "<i4")),
                options=_options(kind, op.table(4)),
            )
        )
    return TFLiteModel(
        tensors=tuple(tensors),
        operators=tuple(operators),
        inputs=tuple(int(v) for v in graph.vector(1, "<i4")),
        outputs=tuple(int(v) for v in graph.vector(2, "<i4")),
        buffers=tuple(buffers),
        description=model.string(3),
    )
