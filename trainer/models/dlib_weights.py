"""Read the weights of dlib's ResNet face descriptor from the ``.dat`` file that ships in
``face-recognition-models`` (the ``[teacher]`` extra), so ``dlib_resnet`` starts as that model.

dlib serialises a network innermost layer first (the input, then the first convolution, ... the
fully connected layer last). Each layer's details begin with its name as a dlib string (a packed
length, then the bytes) and, for layers with parameters, one tensor: a packed version, four packed
dimensions, then little-endian float32 values (dlib's ``serialize(const tensor&)``, version 2).
Only the three parameterised kinds are read; their order is the network's, which
``trainer/models/dlib_resnet.py`` builds in the same order. Nothing is downloaded: the file is the
one ``face_recognition`` itself loads.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

# Layer names as dlib writes them (con_ version 4, fc_ version 2); preceded by their packed length.
_LAYER = re.compile(rb"\x01(\x05con_4|\x07affine_|\x04fc_2)")


@dataclass(frozen=True)
class DlibConv:
    kernel: np.ndarray  # [rows, cols, in, out], as a Keras Conv2D holds it
    bias: np.ndarray    # [out]
    stride: int
    padding: int


@dataclass(frozen=True)
class DlibAffine:
    gamma: np.ndarray   # [channels]: y = gamma * x + beta (dlib's batch norm, frozen for inference)
    beta: np.ndarray


@dataclass(frozen=True)
class DlibDense:
    kernel: np.ndarray  # [inputs, outputs], no bias


class _Reader:
    def __init__(self, data: bytes, pos: int):
        self.data, self.pos = data, pos

    def int(self) -> int:
        """dlib's packed integer: a byte holding the length (low 4 bits) and sign (bit 7)."""
        head = self.data[self.pos]
        size = head & 0x0F
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if head & 0x80 else value

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise ValueError(f"dlib tensor version {version} at byte {self.pos}; expected 2")
        dims = [self.int() for _ in range(4)]
        count = int(np.prod(dims))
        if self.pos + 4 * count > len(self.data):
            raise EOFError(f"truncated at byte {self.pos} ({count} floats announced)")
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos)
        self.pos += 4 * count
        return values.astype(np.float32)


def _conv(reader: _Reader):
    params = reader.tensor()
    filters, rows, cols, stride_y, stride_x, pad_y, pad_x = (reader.int() for _ in range(7))
    if stride_y != stride_x or pad_y != pad_x or rows != cols:
        raise ValueError("dlib_resnet: only square kernels, strides and paddings are expected")
    inputs = (params.size - filters) // (filters * rows * cols)
    kernel = params[:filters * inputs * rows * cols].reshape(filters, inputs, rows, cols)
    return DlibConv(kernel.transpose(2, 3, 1, 0).copy(), params[-filters:].copy(), stride_y, pad_y)


def _affine(reader: _Reader):
    params = reader.tensor()
    half = params.size // 2
    return DlibAffine(params[:half].copy(), params[half:].copy())


def _dense(reader: _Reader):
    outputs, inputs = reader.int(), reader.int()
    params = reader.tensor()
    return DlibDense(params[:inputs * outputs].reshape(inputs, outputs).copy())


_PARSERS = {b"\x05con_4": _conv, b"\x07affine_": _affine, b"\x04fc_2": _dense}


def read_dlib_layers(path: str) -> list[DlibConv | DlibAffine | DlibDense]:
    """The parameterised layers of a dlib network file, input side first."""
    with open(path, "rb") as handle:
        data = handle.read()
    layers, pos = [], 0
    while (match := _LAYER.search(data, pos)) is not None:
        reader = _Reader(data, match.end())
        try:
            layers.append(_PARSERS[match.group(1)](reader))
        except (EOFError, IndexError) as exc:
            raise ValueError(f"{path}: {exc if isinstance(exc, EOFError) else 'truncated'}") from None
        pos = reader.pos  # skip the floats just read: they may contain the pattern by chance
    if not layers:
        raise ValueError(f"{path}: no dlib network layers (not a dlib .dat network file)")
    return layers


def descriptor_path() -> str:
    """The descriptor file inside ``face-recognition-models`` (the ``[teacher]`` extra)."""
    from trainer.teacher import check_teacher

    check_teacher("dlib_resnet_v1")
    import face_recognition_models

    return face_recognition_models.face_recognition_model_location()
