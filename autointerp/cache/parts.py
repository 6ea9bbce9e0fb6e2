"""Parts: the resumable work units of the cache stage.

A part holds the activations of one contiguous range of sequences for one hookpoint, as CSR over all
latents ("indptr", "token_index", "activation"), written atomically. A part file that exists is complete.
Parts are merged into latent-range shards once every part is done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from autointerp.coders.base import SparseActivations
from autointerp.rundir import PARTS_DIR, atomic_path, part_file_name


@dataclass(frozen=True)
class PartPlan:
    """Which sequences each part covers."""

    num_sequences: int
    sequences_per_part: int

    @property
    def num_parts(self) -> int:
        return -(-self.num_sequences // self.sequences_per_part)

    def sequence_range(self, part: int) -> tuple[int, int]:
        start = part * self.sequences_per_part
        return start, min(start + self.sequences_per_part, self.num_sequences)

    def file(self, hookpoint_dir: Path, part: int) -> Path:
        start, end = self.sequence_range(part)
        return hookpoint_dir / PARTS_DIR / part_file_name(start, end)

    def files(self, hookpoint_dir: Path) -> list[Path]:
        return [self.file(hookpoint_dir, part) for part in range(self.num_parts)]


@dataclass
class PartBuffer:
    """Accumulates the sparse activations of one part for one hookpoint."""

    num_latents: int
    index_dtype: torch.dtype
    value_dtype: torch.dtype
    latents: list[torch.Tensor] = field(default_factory=list)
    token_index: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    tokens_seen: int = 0

    def add(self, acts: SparseActivations, row_token_index: torch.Tensor) -> None:
        """Add one batch; `row_token_index[r]` is the global token index of encoded row r."""
        self.latents.append(acts.latents.to("cpu", torch.int32, non_blocking=True))
        self.token_index.append(row_token_index[acts.rows].to("cpu", self.index_dtype, non_blocking=True))
        self.values.append(acts.values.to("cpu", self.value_dtype, non_blocking=True))
        self.tokens_seen += int(row_token_index.numel())

    def to_csr(self) -> dict[str, torch.Tensor]:
        """CSR over latents; token indices stay in increasing order within each latent (stable sort)."""
        if torch.cuda.is_initialized():
            torch.cuda.synchronize()  # the batches were copied from the GPU without blocking
        latents = _take(self.latents, torch.int32)
        token_index = _take(self.token_index, self.index_dtype)
        values = _take(self.values, self.value_dtype)
        counts = torch.bincount(latents, minlength=self.num_latents)
        order = torch.sort(latents, stable=True).indices
        del latents
        indptr = torch.zeros(self.num_latents + 1, dtype=torch.int64)
        torch.cumsum(counts, 0, out=indptr[1:])
        return {"indptr": indptr, "token_index": token_index[order], "activation": values[order]}


def _take(chunks: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """Concatenate and release the batch buffers (so they are not held twice)."""
    joined = torch.cat(chunks) if chunks else torch.empty(0, dtype=dtype)
    chunks.clear()
    return joined


def write_part(path: Path, buffer: PartBuffer, seconds: float) -> None:
    """Write a finished part atomically, with its token count and compute time as metadata."""
    metadata = {"tokens": str(buffer.tokens_seen), "seconds": f"{seconds:.3f}"}
    with atomic_path(path) as tmp:
        save_file(buffer.to_csr(), str(tmp), metadata=metadata)
