"""Merge finished parts into the public latent-range shards `latents-<start>-<end>.safetensors`.

A shard is assembled in chunks of consecutive latents whose entries fill one contiguous stretch of the output,
each chunk gathered from one slice of every part and written in place. Memory is bounded by one chunk
(`CHUNK_ENTRIES`) whatever the number of tokens. Parts are visited in sequence order, which keeps token
indices sorted within each latent.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from autointerp.cache.safetensors_io import SafetensorsWriter, TensorSpec, torch_to_numpy
from autointerp.errors import UserError
from autointerp.rundir import atomic_path, shard_file_name

CHUNK_ENTRIES = 1 << 22
"""Entries gathered in memory at once while merging (about 50 MB)."""


@dataclass(frozen=True)
class ShardInfo:
    file: str
    start: int
    end: int


@dataclass
class MergeResult:
    shards: list[ShardInfo]
    firing_count: np.ndarray
    max_activation: np.ndarray
    unmasked_tokens: int
    seconds: float


def shard_ranges(num_latents: int, latents_per_shard: int) -> list[tuple[int, int]]:
    return [(s, min(s + latents_per_shard, num_latents)) for s in range(0, num_latents, latents_per_shard)]


def merge_parts(
    part_files: list[Path],
    out_dir: Path,
    num_latents: int,
    latents_per_shard: int,
    index_dtype: torch.dtype,
    value_dtype: torch.dtype,
) -> MergeResult:
    """Write every shard (rewriting none that an interrupted merge finished) and gather per-latent stats."""
    firing = np.zeros(num_latents, dtype=np.int64)
    max_act = np.zeros(num_latents, dtype=np.float32)
    shards = []
    with ExitStack() as stack:
        parts = [_open_part(stack, path, num_latents) for path in part_files]
        metadata = [part.metadata() or {} for part in parts]
        for start, end in shard_ranges(num_latents, latents_per_shard):
            name = shard_file_name(start, end)
            merger = _ShardMerge(parts, start, end)
            firing[start:end] = merger.total
            merger.write(out_dir / name, index_dtype, value_dtype, max_act[start:end])
            shards.append(ShardInfo(name, start, end))
    return MergeResult(
        shards=shards,
        firing_count=firing,
        max_activation=max_act,
        unmasked_tokens=sum(int(m.get("tokens", 0)) for m in metadata),
        seconds=sum(float(m.get("seconds", 0.0)) for m in metadata),
    )


def _open_part(stack: ExitStack, path: Path, num_latents: int) -> Any:
    """An open part file, checked to be a readable CSR over `num_latents` latents."""
    fix = "delete it and rerun `autointerp cache` to recompute that part"
    try:
        part = stack.enter_context(safe_open(str(path), framework="pt"))
        shape = part.get_slice("indptr").get_shape()
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise UserError(f"{path}: cannot be read ({type(exc).__name__}: damaged?); {fix}") from None
    if list(shape) != [num_latents + 1]:
        raise UserError(f"{path}: holds {shape[0] - 1 if shape else 0} latents, not {num_latents}; {fix}")
    return part


class _ShardMerge:
    """The layout of one shard: per part and latent, how many entries and where they go."""

    def __init__(self, parts: list, start: int, end: int):
        self.parts = parts
        self.bounds = [part.get_slice("indptr")[start : end + 1].numpy() for part in parts]
        self.counts = np.stack([np.diff(b) for b in self.bounds]).reshape(len(parts), end - start)
        self.total = self.counts.sum(axis=0)
        self.indptr = np.concatenate([[0], np.cumsum(self.total)]).astype(np.int64)
        self.before = np.cumsum(self.counts, axis=0) - self.counts  # entries of earlier parts, per latent

    def chunks(self) -> list[tuple[int, int]]:
        """Latent ranges [a, b) of at most CHUNK_ENTRIES entries (one latent may exceed it alone)."""
        edges, a = [], 0
        while a < len(self.total):
            b = int(np.searchsorted(self.indptr, self.indptr[a] + CHUNK_ENTRIES, side="right")) - 1
            b = max(b, a + 1)
            edges.append((a, b))
            a = b
        return edges

    def write(
        self, path: Path, index_dtype: torch.dtype, value_dtype: torch.dtype, max_act: np.ndarray
    ) -> None:
        if path.exists():  # finished by an interrupted earlier merge: read back its maxima only
            self._read_max(path, max_act)
            return
        nnz = int(self.indptr[-1])
        specs = [
            TensorSpec("indptr", torch.int64, (len(self.indptr),)),
            TensorSpec("token_index", index_dtype, (nnz,)),
            TensorSpec("activation", value_dtype, (nnz,)),
        ]
        with atomic_path(path) as tmp:
            out = SafetensorsWriter(tmp, specs)
            out.write("indptr", 0, self.indptr)
            for a, b in self.chunks():
                token_index, values = self._gather(a, b)
                out.write("token_index", int(self.indptr[a]), token_index)
                out.write("activation", int(self.indptr[a]), torch_to_numpy(values))
                _update_max(max_act[a:b], values.float().numpy(), self.total[a:b])
            out.close()

    def _gather(self, a: int, b: int) -> tuple[np.ndarray, torch.Tensor]:
        """Entries of latents [a, b), in shard order: by latent, then by part (sequence order)."""
        size = int(self.indptr[b] - self.indptr[a])
        token_index: np.ndarray | None = None
        values: torch.Tensor | None = None
        for part, bound, count, earlier in zip(
            self.parts, self.bounds, self.counts, self.before, strict=True
        ):
            lo, hi = int(bound[a]), int(bound[b])
            if hi == lo:
                continue
            tokens = part.get_slice("token_index")[lo:hi]
            acts = part.get_slice("activation")[lo:hi]
            if token_index is None:
                token_index = np.empty(size, dtype=torch_to_numpy(tokens[:0]).dtype)
                values = torch.empty(size, dtype=acts.dtype)
            # entry j of latent l here goes to (indptr[l] - indptr[a]) + earlier[l] + (j - local start of l)
            shift = self.indptr[a:b] - self.indptr[a] + earlier[a:b] - (bound[a:b] - lo)
            dest = np.repeat(shift, count[a:b]) + np.arange(hi - lo)
            assert values is not None  # allocated with token_index
            token_index[dest] = torch_to_numpy(tokens)
            values[torch.from_numpy(dest)] = acts
        if token_index is None or values is None:
            return np.empty(0, dtype=np.int32), torch.empty(0)
        return token_index, values

    def _read_max(self, path: Path, max_act: np.ndarray) -> None:
        with safe_open(str(path), framework="pt") as f:
            for a, b in self.chunks():
                values = f.get_slice("activation")[int(self.indptr[a]) : int(self.indptr[b])]
                _update_max(max_act[a:b], values.float().numpy(), self.total[a:b])


def _update_max(max_act: np.ndarray, values: np.ndarray, count: np.ndarray) -> None:
    """Per-latent maximum of consecutive runs of `values` (`count[l]` entries for latent l)."""
    nonempty = count > 0
    if not nonempty.any():
        return
    starts = np.concatenate([[0], np.cumsum(count)[:-1]])[nonempty]
    np.maximum.at(max_act, np.flatnonzero(nonempty), np.maximum.reduceat(values, starts))
