"""Reading weight files tensor by tensor, each straight into the tensor that keeps it. Used by checkpoint.py.

`StoredWeights` lists what a checkpoint's files hold (names, shapes, dtypes) without reading them; `read` then
reads the tensors a loader asks for, in the layout and dtype it wants (transposed, cast), each into a new
tensor that becomes the parameter. A model is loaded holding its weights once, plus one buffer per reading thread
(16 MiB, or the largest matrix to transpose (and its cast) if that is larger: 9 MiB in GPT-2 124M, 39 MiB in
GPT-2 XL, fp32); tensors are read by as many threads as torch uses (at most 8):

* safetensors files are read with plain reads, never memory-mapped: pages of a mapped file that a copy
  touches count as the process's memory until the file is unmapped, so the file would sit beside the model.
* A tensor that needs no change is read into its new tensor directly; a matrix to transpose is read into the
  buffer and transposed into its new tensor; a tensor to cast passes through the buffer a few rows at a time.
* `pytorch_model.bin` files are memory-mapped by torch.load (its pages are paged in as they are copied).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import FileIO
from pathlib import Path

import torch
from torch import Tensor

from gptkit.errors import CheckpointError

# safetensors' dtype names (its files are little-endian, as is every CPU torch runs on)
_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_BUFFER_BYTES = 16 * 2**20  # rows of a tensor to cast are read this many bytes at a time
_MAX_THREADS = 8  # reading threads at most (no more than torch's thread count)
Layout = Mapping[str, tuple[str, bool]]  # name to give -> (name in the files, stored transposed)


@dataclass(frozen=True)
class _Stored:
    """Where one tensor of a safetensors file lies."""

    path: Path
    offset: int  # of its first byte in the file
    dtype: torch.dtype
    shape: tuple[int, ...]


class StoredWeights:
    """The tensors of a checkpoint's weight files, by name, read only by `read`: floating-point tensors into
    `dtype` when one is given, the rest (and all of them without one) as stored."""

    def __init__(self, entries: dict[str, _Stored | Tensor], dtype: torch.dtype | None = None) -> None:
        self._entries = entries
        self._dtype = dtype

    @classmethod
    def open(cls, paths: Iterable[Path], dtype: torch.dtype | None = None) -> StoredWeights:
        """The tensors of these safetensors or torch.load files (the shards of one checkpoint)."""
        entries: dict[str, _Stored | Tensor] = {}
        for path in paths:
            entries.update(_file_entries(path))
        return cls(entries, dtype)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(entry.shape) for name, entry in self._entries.items()}

    def stored_dtype(self, name: str) -> torch.dtype:
        return self._entries[name].dtype

    def select(self, names: Iterable[str] | Mapping[str, str]) -> StoredWeights:
        """Only the tensors of `names`; a mapping renames them (new name -> stored name). Nothing is read."""
        pairs = names.items() if isinstance(names, Mapping) else ((name, name) for name in names)
        return StoredWeights({new: self._entries[old] for new, old in pairs}, self._dtype)

    def read(self, names: Iterable[str] | Layout) -> dict[str, Tensor]:
        """Read tensors into new ones: `names` as stored, or a layout {name: (stored name, transposed)} that
        renames them and transposes the 2-D ones marked (to torch's [out, in] from Conv1D's [in, out])."""
        layout = names if isinstance(names, Mapping) else {name: (name, False) for name in names}
        # A matrix to transpose is read whole, then transposed in one pass (torch's blocked transpose: several
        # times faster than writing rows into a transposed view); casts go a few rows at a time.
        whole = [e for e in (self._entries[stored] for stored, t in layout.values() if t) if isinstance(e, _Stored)]
        buffer_bytes = max([_BUFFER_BYTES, *(_matrix_bytes(e, self._dtype_of(e)) for e in whole)])
        buffers = threading.local()  # one per reading thread; pages touched only as used

        def read_one(item: tuple[str, tuple[str, bool]]) -> tuple[str, Tensor]:
            name, (stored, transposed) = item
            if not hasattr(buffers, "bytes"):
                buffers.bytes = torch.empty(buffer_bytes, dtype=torch.uint8)
            entry = self._entries[stored]
            return name, _read(entry, self._dtype_of(entry), transposed, buffers.bytes)

        # Most of a load is the kernel handing over fresh pages and copying the file's cached pages into them:
        # work that threads share out (twice as fast on 2 CPUs), where torch's own threads do not reach.
        threads = min(torch.get_num_threads(), _MAX_THREADS, max(1, len(layout)))
        with ThreadPoolExecutor(threads, thread_name_prefix="gptkit-read") as pool:
            return dict(pool.map(read_one, layout.items()))

    def _dtype_of(self, entry: _Stored | Tensor) -> torch.dtype:
        """The dtype a stored tensor is read into."""
        return self._dtype if self._dtype is not None and entry.dtype.is_floating_point else entry.dtype


def _matrix_bytes(entry: _Stored, dtype: torch.dtype) -> int:
    """What transposing a stored matrix takes in the buffer: the matrix, and its cast if there is one."""
    stored = math.prod(entry.shape) * entry.dtype.itemsize
    return stored if dtype == entry.dtype else _aligned(stored) + math.prod(entry.shape) * dtype.itemsize


def _aligned(offset: int) -> int:
    return -(-offset // 8) * 8  # any dtype can be viewed at a multiple of 8 bytes


def _file_entries(path: Path) -> dict[str, _Stored | Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: weight file is missing")
    if path.suffix == ".safetensors":
        return dict(_safetensors_entries(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(state).__name__}")
    return state


def _safetensors_entries(path: Path) -> dict[str, _Stored]:
    """Where each tensor of a safetensors file lies: the file is an 8-byte little-endian header length, a
    JSON header {name: {dtype, shape, data_offsets}, "__metadata__": ...}, then the data the offsets index."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if not 2 <= length <= size - 8:
                raise ValueError(f"header length {length} in a file of {size} bytes")
            header = json.loads(f.read(length))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
    except (OSError, ValueError) as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{path}: cannot read weights (not a safetensors file: {exc})") from exc
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _SAFETENSORS_DTYPES[info["dtype"]]
            shape = tuple(int(n) for n in info["shape"])
            start, end = (int(n) for n in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: tensor {name!r} has an unsupported or malformed entry {info!r}") from exc
        if not 0 <= start <= end or end - start != math.prod(shape) * dtype.itemsize or 8 + length + end > size:
            raise CheckpointError(f"{path}: tensor {name!r} does not fit its data offsets (file truncated?)")
        entries[name] = _Stored(path, 8 + length + start, dtype, shape)
    return entries


def _read(entry: _Stored | Tensor, dtype: torch.dtype, transposed: bool, buffer: Tensor) -> Tensor:
    """A stored tensor in a new tensor of `dtype`, transposed when asked (2-D)."""
    out = torch.empty(entry.shape[::-1] if transposed else entry.shape, dtype=dtype)
    if out.numel() == 0:
        return out
    if isinstance(entry, Tensor):  # memory-mapped by torch.load
        out.copy_(entry.t() if transposed else entry)
        return out
    with open(entry.path, "rb", buffering=0) as f:
        f.seek(entry.offset)
        if transposed:
            stored_bytes = out.numel() * entry.dtype.itemsize
            stored = buffer[:stored_bytes].view(entry.dtype).view(entry.shape)
            _read_into(f, stored, entry.path)
            if dtype != entry.dtype:  # cast first: torch's fast transpose wants one dtype on both sides
                at = _aligned(stored_bytes)
                cast = buffer[at : at + out.numel() * dtype.itemsize].view(dtype)
                stored = cast.view(entry.shape).copy_(stored)
            out.copy_(stored.t())
        elif dtype == entry.dtype:
            _read_into(f, out, entry.path)  # straight into place
        else:  # cast a few rows at a time
            rows = out.view(entry.shape[0] if entry.shape else 1, -1)
            row_bytes = rows.shape[1] * entry.dtype.itemsize
            step = max(1, buffer.numel() // row_bytes)
            for start in range(0, rows.shape[0], step):
                n = min(step, rows.shape[0] - start)
                size = n * row_bytes
                chunk = buffer[:size] if size <= buffer.numel() else torch.empty(size, dtype=torch.uint8)
                part = chunk.view(entry.dtype).view(n, rows.shape[1])
                _read_into(f, part, entry.path)
                rows[start : start + n].copy_(part)
    return out


def _read_into(f: FileIO, tensor: Tensor, path: Path) -> None:
    """Fill a contiguous tensor with the file's next bytes."""
    view = tensor.view(-1).view(torch.uint8).numpy().data  # the tensor's own memory
    while view.nbytes:
        n = f.readinto(view)
        if not n:
            raise CheckpointError(f"{path}: ends inside a tensor (file truncated?)")
        view = view[n:]
