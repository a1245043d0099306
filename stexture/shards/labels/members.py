"""A sidecar sample's members: the ``.npy`` codec and the ``s`` / ``t`` label maps
(dense or top-k) written and read."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from .layout import (
    LABEL_LAYERS,
    index_field,
    value_field,
)

# the largest label map a reader accepts: 512 x 512 cells of 4096 classes is no "small grid"
_MAX_VALUES = 1 << 28


def encode_npy(array: np.ndarray) -> bytes:
    """``array`` as ``.npy`` bytes (format 1.0, C order, no pickle)."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), version=(1, 0),
                              allow_pickle=False)
    return buffer.getvalue()


def decode_npy(data: bytes, dtype: str, ndim: int = 3) -> np.ndarray:
    """A ``.npy`` member's array, checked before anything of its size is allocated: the
    header must declare ``dtype`` (little-endian), ``ndim`` dimensions, C order, at most
    2**28 values, and exactly as many bytes as follow it. ``ValueError`` otherwise."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, declared = read_header(stream, max_header_size=1024)
    except (ValueError, SyntaxError, OSError) as exc:
        raise ValueError(f"not a .npy array ({exc})") from None
    expected = np.dtype(dtype).newbyteorder("<")
    if declared != expected or fortran or len(shape) != ndim:
        raise ValueError(f"expected a C-order {ndim}-D {expected.name} ({expected.str}) array, "
                         f"the header says {declared.name} ({declared.str}) of shape {shape}"
                         f"{' (Fortran order)' if fortran else ''}")
    count = int(np.prod(shape, dtype=np.int64))
    if not 0 < count <= _MAX_VALUES:
        raise ValueError(f"the array declares {count} values, outside 1..{_MAX_VALUES}")
    if len(data) - stream.tell() != count * expected.itemsize:
        raise ValueError(f"{len(data) - stream.tell()} bytes of data for a {shape} array of "
                         f"{expected.str}")
    return np.frombuffer(data, expected, count, stream.tell()).reshape(shape)


def compress_probabilities(probabilities: np.ndarray, topk: int | None
                           ) -> tuple[np.ndarray, np.ndarray | None]:
    """``(values, indices)`` to store for a ``G x G x C`` probability map: all classes as
    float16 (``indices`` None), or with ``topk`` the ``topk`` largest per cell, largest
    first, with their class indices as int16."""
    if topk is None or topk >= probabilities.shape[-1]:
        return probabilities.astype(np.float16), None
    order = np.argsort(-probabilities, axis=-1, kind="stable")[..., :topk]
    values = np.take_along_axis(probabilities, order, axis=-1)
    return values.astype(np.float16), order.astype(np.int16)


def encode_label_sample(key: str, s: np.ndarray, t: np.ndarray, topk: int | None
                        ) -> dict[str, Any]:
    """The sidecar sample of ``key`` from its ``G x G x C`` probability maps ``s``, ``t``."""
    sample: dict[str, Any] = {"__key__": key}
    for layer, probabilities in zip(LABEL_LAYERS, (s, t), strict=True):
        values, indices = compress_probabilities(probabilities, topk)
        sample[value_field(layer)] = encode_npy(values)
        if indices is not None:
            sample[index_field(layer)] = encode_npy(indices)
    return sample


def _dense(values: np.ndarray, indices: np.ndarray | None, num_classes: int) -> np.ndarray:
    """``G x G x C`` float32 probabilities of stored values: as they are, or a top-k cell
    with the mass it left out shared equally by the other classes (so that every class has
    a probability, and a log)."""
    if indices is None:
        if values.shape[-1] != num_classes:
            raise ValueError(f"{values.shape[-1]} classes stored, the label set has "
                             f"{num_classes}")
        return values.astype(np.float32)
    if indices.shape != values.shape:
        raise ValueError(f"values {values.shape} and class indices {indices.shape} differ")
    if indices.size and not 0 <= int(indices.min()) <= int(indices.max()) < num_classes:
        raise ValueError(f"class indices outside 0..{num_classes - 1}")
    kept = values.astype(np.float32)
    others = max(num_classes - kept.shape[-1], 1)
    rest = np.clip(1.0 - kept.sum(axis=-1, keepdims=True), 0.0, None) / others
    dense = np.broadcast_to(rest, (*values.shape[:-1], num_classes)).copy()
    np.put_along_axis(dense, indices.astype(np.int64), kept, axis=-1)
    return dense


def decode_label_sample(raw: dict[str, Any], num_classes: int, grid: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """``(s, t)`` of a raw sidecar sample (bytes per field), each ``G x G x C`` float32
    (classes outside a top-k cell share its remaining mass). ``ValueError`` naming the key
    for a missing or
    malformed member, or a grid or class count other than the label set's."""
    key = raw.get("__key__", "<no key>")
    maps = []
    for layer in LABEL_LAYERS:
        if value_field(layer) not in raw:
            raise ValueError(f"label sample {key!r} lacks {value_field(layer)}")
        try:
            values = decode_npy(raw[value_field(layer)], "float16")
            indices = (decode_npy(raw[index_field(layer)], "int16")
                       if index_field(layer) in raw else None)
            if values.shape[:2] != (grid, grid):
                raise ValueError(f"a {values.shape[0]}x{values.shape[1]} grid, the label set "
                                 f"has {grid}x{grid}")
            maps.append(_dense(values, indices, num_classes))
        except ValueError as exc:
            raise ValueError(f"label sample {key!r}, {layer}: {exc}") from None
    return maps[0], maps[1]
