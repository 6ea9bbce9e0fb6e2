"""The cached token sequences: `tokens.safetensors` with "tokens" int32 [num_sequences, ctx_len]."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from autointerp.cache.safetensors_io import SafetensorsWriter, TensorSpec
from autointerp.errors import UserError
from autointerp.rundir import atomic_path

TOKENS_KEY = "tokens"
_COPY_ROWS = 65536
_MAX_HEADER = 100_000_000
"""The largest header safetensors reads."""


def write_tokens(
    sequences: Iterable[np.ndarray], max_sequences: int, ctx_len: int, path: Path, key: str = ""
) -> int:
    """Stream up to `max_sequences` sequences into `path` (atomically); returns how many were written.

    Rows go to a raw scratch file of a unique name first, so memory stays at one sequence whatever the
    count and concurrent writers never share it. No sequence at all writes no file. `key` (what the tokens
    were made from) is stored in the file's metadata, with `ctx_len`, for `check_tokens`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, scratch_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".raw", dir=path.parent)
    scratch = Path(scratch_name)
    count = 0
    try:
        with os.fdopen(fd, "wb") as raw:
            for sequence in sequences:
                if count == max_sequences:
                    break
                raw.write(np.ascontiguousarray(sequence, dtype=np.int32).tobytes())
                count += 1
        if count == 0:
            return 0
        rows = np.memmap(scratch, dtype=np.int32, mode="r", shape=(count, ctx_len))
        metadata = {"ctx_len": str(ctx_len), "key": key}
        with atomic_path(path) as tmp:
            out = SafetensorsWriter(tmp, [TensorSpec(TOKENS_KEY, torch.int32, (count, ctx_len))], metadata)
            for start in range(0, count, _COPY_ROWS):
                assert rows is not None  # count > 0
                out.write(TOKENS_KEY, start * ctx_len, rows[start : start + _COPY_ROWS])
            out.close()
    finally:
        scratch.unlink(missing_ok=True)
    return count


def check_tokens(path: Path, ctx_len: int, key: str) -> int:
    """The number of sequences in `path`, after checking it was made with `ctx_len` (and `key`, if stored)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            shape = f.get_slice(TOKENS_KEY).get_shape()
            metadata = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise UserError(
            f"{path}: cannot be read ({type(exc).__name__}); delete it to tokenize again"
        ) from None
    stored = metadata.get("key")
    if len(shape) != 2 or shape[1] != ctx_len or (stored and key and stored != key):
        raise UserError(
            f"{path}: made for another corpus or ctx_len (shape {list(shape)}); delete it, or pass "
            "--force to recompute the cache"
        )
    return int(shape[0])


def count_sequences(path: Path) -> int:
    with safe_open(str(path), framework="pt") as f:
        return int(f.get_slice(TOKENS_KEY).get_shape()[0])


def read_tokens(path: Path, start: int = 0, end: int | None = None) -> torch.Tensor:
    """Rows `start:end` of the token file as an int32 tensor, reading only those rows."""
    with safe_open(str(path), framework="pt") as f:
        return f.get_slice(TOKENS_KEY)[start:end]


def map_tokens(path: Path) -> np.ndarray:
    """The whole token file as a read-only int32 [num_sequences, ctx_len] array, memory-mapped: rows are
    read from disk (or the page cache) when used, so a cache of billions of tokens costs no memory."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header_size = int.from_bytes(f.read(8), "little")
        if not 0 < header_size <= min(size - 8, _MAX_HEADER):
            raise ValueError(f"a header of {header_size} bytes in a file of {size}")
        entry = json.loads(f.read(header_size))[TOKENS_KEY]
    begin, end = (int(n) for n in entry["data_offsets"])
    shape = tuple(int(n) for n in entry["shape"])
    if entry["dtype"] != "I32" or len(shape) != 2 or min(shape) < 0:
        raise ValueError(f"{TOKENS_KEY} is {entry['dtype']} {list(shape)}, not int32 [sequences, ctx_len]")
    if not 0 <= begin <= end <= size - 8 - header_size or end - begin != 4 * shape[0] * shape[1]:
        raise ValueError(f"{TOKENS_KEY} at bytes {begin}:{end} does not hold shape {list(shape)}")
    mapped = np.memmap(path, dtype=np.int32, mode="r", offset=8 + header_size + begin, shape=shape)
    return mapped.view(np.ndarray)  # still the mapping, indexed as fast as a plain array


def link_or_copy(source: Path, target: Path) -> None:
    """Place `source` at `target` as a hard link (no extra disk), or a copy across file systems."""
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
