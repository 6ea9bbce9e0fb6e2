"""Merge finished parts into the public latent-range shards `latents-<start>-<end>.safetensors`.

Each shard is assembled in a memory-mapped file from one slice of every part, so memory is bounded
by one part's slice whatever the number of tokens. Parts are visited in sequence order, which keeps
token indices sorted within each latent.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from autointerp.cache.safetensors_io import MappedSafetensors, TensorSpec, torch_to_numpy
from autointerp.rundir import atomic_path, shard_file_name


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
    """Write every shard (skipping ones already written) and gather per-latent statistics."""
    firing = np.zeros(num_latents, dtype=np.int64)
    max_act = np.zeros(num_latents, dtype=np.float32)
    shards = []
    with ExitStack() as stack:
        parts = [stack.enter_context(safe_open(str(f), framework="pt")) for f in part_files]
        metadata = [part.metadata() or {} for part in parts]
        for start, end in shard_ranges(num_latents, latents_per_shard):
            name = shard_file_name(start, end)
            _merge_shard(parts, out_dir / name, start, end, index_dtype, value_dtype, firing, max_act)
            shards.append(ShardInfo(name, start, end))
    return MergeResult(
        shards=shards,
        firing_count=firing,
        max_activation=max_act,
        unmasked_tokens=sum(int(m.get("tokens", 0)) for m in metadata),
        seconds=sum(float(m.get("seconds", 0.0)) for m in metadata),
    )


def _merge_shard(parts, path: Path, start: int, end: int, index_dtype, value_dtype, firing, max_act) -> None:
    bounds = [part.get_slice("indptr")[start : end + 1].numpy() for part in parts]
    counts = np.stack([np.diff(b) for b in bounds]) if bounds else np.zeros((0, end - start), np.int64)
    total = counts.sum(axis=0)
    indptr = np.zeros(end - start + 1, dtype=np.int64)
    np.cumsum(total, out=indptr[1:])
    firing[start:end] = total
    if path.exists():
        _read_shard_max(path, indptr, max_act[start:end])
        return
    before = np.cumsum(counts, axis=0) - counts  # entries of earlier parts, per latent
    nnz = int(indptr[-1])
    specs = [
        TensorSpec("indptr", torch.int64, (end - start + 1,)),
        TensorSpec("token_index", index_dtype, (nnz,)),
        TensorSpec("activation", value_dtype, (nnz,)),
    ]
    with atomic_path(path) as tmp:
        out = MappedSafetensors(tmp, specs)
        out["indptr"][:] = indptr
        for part, bound, count, earlier in zip(parts, bounds, counts, before, strict=True):
            lo, hi = int(bound[0]), int(bound[-1])
            if hi == lo:
                continue
            # element j of latent l in this slice goes to indptr[l] + earlier[l] + (j - local start of l)
            shift = indptr[:-1] + earlier - (bound[:-1] - lo)
            dest = np.repeat(shift, count) + np.arange(hi - lo)
            out["token_index"][dest] = torch_to_numpy(part.get_slice("token_index")[lo:hi])
            values = part.get_slice("activation")[lo:hi]
            out["activation"][dest] = torch_to_numpy(values)
            _update_max(max_act[start:end], values.float().numpy(), count)
        out.close()


def _update_max(max_act: np.ndarray, values: np.ndarray, count: np.ndarray) -> None:
    nonempty = count > 0
    starts = np.concatenate([[0], np.cumsum(count)[:-1]])[nonempty]
    np.maximum.at(max_act, np.flatnonzero(nonempty), np.maximum.reduceat(values, starts))


def _read_shard_max(path: Path, indptr: np.ndarray, max_act: np.ndarray) -> None:
    """Per-latent max of a shard written by an earlier, interrupted merge."""
    with safe_open(str(path), framework="pt") as f:
        values = f.get_tensor("activation").float().numpy()
    _update_max(max_act, values, np.diff(indptr))
