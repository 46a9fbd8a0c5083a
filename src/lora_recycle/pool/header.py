"""Parse a safetensors header ourselves, with a size cap, before any tensor is read.

Layout: 8-byte little-endian header length N, N bytes of JSON ``{name: {dtype, shape, data_offsets}}``
(plus an optional ``__metadata__``), then the data. Checking lengths and offsets against the file size
catches truncated files, and the cap stops a hostile header from making us allocate gigabytes.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

INDEX = "model.safetensors.index.json"  # a sharded model's tensor name -> file map
SINGLE = "model.safetensors"
# safetensors itself refuses headers above 100 MB; adapters need a few hundred KB at most.
MAX_HEADER_BYTES = 16 * 1024 * 1024
DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "U16": 2,
    "U32": 4,
    "U64": 8,
    "BOOL": 1,
}
# little-endian numpy views of the float dtypes; bf16 has none: its bits are the top half of a float32's
NUMPY_FLOATS = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}
FLOAT_DTYPES = frozenset(NUMPY_FLOATS)


class HeaderError(ValueError):
    """The file is not a well-formed, complete safetensors file."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in the header: dtype name, shape and its byte range in the file (absolute)."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


def read_safetensors_header(path: Path, max_header_bytes: int = MAX_HEADER_BYTES) -> dict[str, TensorInfo]:
    """Return ``name -> TensorInfo`` of a safetensors file; raises HeaderError if malformed or truncated."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise HeaderError("file shorter than the 8-byte header length")
        (length,) = struct.unpack("<Q", prefix)
        if length > max_header_bytes:
            raise HeaderError(f"header of {length} bytes exceeds the {max_header_bytes}-byte cap")
        if 8 + length > size:
            raise HeaderError("truncated header")
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise HeaderError("header JSON is nested too deeply") from None
    except HeaderError:
        raise
    except (UnicodeDecodeError, ValueError) as exc:
        raise HeaderError(f"header is not JSON ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(header, dict):
        raise HeaderError("header is not a JSON object")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise HeaderError("__metadata__ must map strings to strings")
    data_size = size - 8 - length
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        info = _tensor_info(name, entry, data_size)
        tensors[name] = TensorInfo(info.dtype, info.shape, 8 + length + info.start, 8 + length + info.end)
    check_layout(tensors, 8 + length, size)
    return tensors


def check_layout(tensors: dict[str, TensorInfo], data_start: int, file_size: int) -> None:
    """The safetensors rule: tensors tile the data section exactly (no gaps, no overlaps, no trailing bytes)."""
    position = data_start
    for name, info in sorted(tensors.items(), key=lambda item: (item[1].start, item[1].end)):
        if info.start < position:
            raise HeaderError(f"tensor {name}: data overlaps the previous tensor")
        if info.start > position:
            raise HeaderError(f"tensor {name}: {info.start - position} unused bytes before its data")
        position = info.end
    if position != file_size:
        raise HeaderError(f"{file_size - position} unused bytes after the last tensor")


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise HeaderError("header repeats a tensor name")
    return dict(pairs)


def read_float64(handle: BinaryIO, info: TensorInfo) -> np.ndarray:
    """Read one float tensor described by a checked header entry from an open file, as float64 (exact).

    Plain reads rather than safetensors' memory map: that path keeps ~40 bytes per tensor alive, which
    grows with the pool. numpy, not torch, so a scan never pays for importing torch.
    """
    handle.seek(info.start)
    return _as_float64(_read_exactly(handle, info.end - info.start), info.dtype).reshape(info.shape)


def squared_norm(handle: BinaryIO, info: TensorInfo, block_bytes: int = 1 << 26) -> float:
    """The sum of squares of one float tensor, in float64, read ``block_bytes`` at a time (a base model's
    largest weight never sits in memory whole, nor in float64)."""
    width = DTYPE_BYTES[info.dtype]
    step = max(width, block_bytes // width * width)
    total = 0.0
    handle.seek(info.start)
    for offset in range(info.start, info.end, step):
        values = _as_float64(_read_exactly(handle, min(step, info.end - offset)), info.dtype)
        total += float(values @ values)
    return total


def checkpoint_files(model_dir: Path) -> dict[str, Path]:
    """Tensor name -> safetensors file of a model directory (through its index, or its single file); {} without."""
    if (model_dir / INDEX).is_file():
        weight_map = json.loads((model_dir / INDEX).read_text(encoding="utf-8")).get("weight_map", {})
        return {name: model_dir / file for name, file in weight_map.items()}
    if (model_dir / SINGLE).is_file():
        return dict.fromkeys(read_safetensors_header(model_dir / SINGLE), model_dir / SINGLE)
    return {}


def stored_norm(file: Path, name: str, headers: dict[Path, dict[str, TensorInfo]]) -> float | None:
    """``||T||_F`` (float64) of tensor ``name`` in the safetensors ``file``, read a block at a time; None when the
    file holds no such tensor in a float dtype numpy reads (fp8, ...). ``headers`` keeps each parsed header."""
    if file not in headers:
        headers[file] = read_safetensors_header(file)
    info = headers[file].get(name)
    if info is None or info.dtype not in NUMPY_FLOATS:
        return None
    with open(file, "rb") as handle:
        return squared_norm(handle, info) ** 0.5


def _read_exactly(handle: BinaryIO, size: int) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise HeaderError("file shorter than its header says (truncated)")
    return data


def _as_float64(data: bytes, dtype: str) -> np.ndarray:
    values = np.frombuffer(data, dtype=NUMPY_FLOATS[dtype])
    if dtype == "BF16":
        values = (values.astype(np.uint32) << 16).view(np.float32)
    return values.astype(np.float64)


def _tensor_info(name: str, entry: object, data_size: int) -> TensorInfo:
    if not isinstance(entry, dict):
        raise HeaderError(f"tensor {name}: entry is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        raise HeaderError(f"tensor {name}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise HeaderError(f"tensor {name}: bad shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
        raise HeaderError(f"tensor {name}: bad data_offsets {offsets!r}")
    start, end = offsets
    if not 0 <= start <= end <= data_size:
        raise HeaderError(f"tensor {name}: data_offsets beyond the end of the file (truncated)")
    if end - start != math.prod(shape) * DTYPE_BYTES[dtype]:
        raise HeaderError(f"tensor {name}: byte length does not match its shape and dtype")
    return TensorInfo(dtype, tuple(shape), start, end)
