"""The cached token sequences: `tokens.safetensors` with "tokens" int32 [num_sequences, ctx_len]."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from autointerp.cache.safetensors_io import SafetensorsWriter, TensorSpec
from autointerp.rundir import atomic_path

TOKENS_KEY = "tokens"
_COPY_ROWS = 65536


def write_tokens(sequences: Iterable[np.ndarray], max_sequences: int, ctx_len: int, path: Path) -> int:
    """Stream up to `max_sequences` sequences into `path` (atomically); returns how many were written.

    Rows go to a raw scratch file first, so memory stays at one sequence whatever the count.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.raw")
    count = 0
    try:
        with open(scratch, "wb") as raw:
            for sequence in sequences:
                if count == max_sequences:
                    break
                raw.write(np.ascontiguousarray(sequence, dtype=np.int32).tobytes())
                count += 1
        rows = np.memmap(scratch, dtype=np.int32, mode="r", shape=(count, ctx_len)) if count else None
        with atomic_path(path) as tmp:
            out = SafetensorsWriter(tmp, [TensorSpec(TOKENS_KEY, torch.int32, (count, ctx_len))])
            for start in range(0, count, _COPY_ROWS):
                assert rows is not None  # count > 0
                out.write(TOKENS_KEY, start * ctx_len, rows[start : start + _COPY_ROWS])
            out.close()
    finally:
        scratch.unlink(missing_ok=True)
    return count


def count_sequences(path: Path) -> int:
    with safe_open(str(path), framework="pt") as f:
        return int(f.get_slice(TOKENS_KEY).get_shape()[0])


def read_tokens(path: Path, start: int = 0, end: int | None = None) -> torch.Tensor:
    """Rows `start:end` of the token file as an int32 tensor, reading only those rows."""
    with safe_open(str(path), framework="pt") as f:
        return f.get_slice(TOKENS_KEY)[start:end]


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
