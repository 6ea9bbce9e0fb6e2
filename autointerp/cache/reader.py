"""Read a finished cache: one latent is one slice of one shard."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from autointerp.cache.tokens import read_tokens
from autointerp.errors import UserError
from autointerp.rundir import MANIFEST_FILE, STATS_FILE, TOKENS_FILE, read_json


@dataclass(frozen=True)
class LatentActivations:
    """Where one latent fires: global token indices (seq * ctx_len + pos), sorted, and values."""

    latent: int
    token_index: np.ndarray
    activation: np.ndarray


class CacheReader:
    """Reads `cache/<hookpoint>/` of a run directory."""

    def __init__(self, hookpoint_dir: Path):
        manifest_path = hookpoint_dir / MANIFEST_FILE
        if not manifest_path.is_file():
            raise UserError(f"no cache at {hookpoint_dir}: run `autointerp cache` first")
        self.dir = hookpoint_dir
        self.manifest: dict[str, Any] = read_json(manifest_path)
        if not self.manifest.get("complete"):
            raise UserError(
                f"the cache at {hookpoint_dir} is unfinished: run `autointerp cache` to complete it"
            )
        self._starts = [shard["start"] for shard in self.manifest["shards"]]

    @property
    def num_latents(self) -> int:
        return int(self.manifest["num_latents"])

    @property
    def ctx_len(self) -> int:
        return int(self.manifest["ctx_len"])

    @property
    def num_sequences(self) -> int:
        return int(self.manifest["num_sequences"])

    def tokens(self, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Token rows `start:end`, int32 [rows, ctx_len]."""
        return read_tokens(self.dir / TOKENS_FILE, start, end)

    def latent(self, latent: int) -> LatentActivations:
        if not 0 <= latent < self.num_latents:
            raise IndexError(f"latent {latent} out of range [0, {self.num_latents})")
        shard = self.manifest["shards"][bisect.bisect_right(self._starts, latent) - 1]
        local = latent - shard["start"]
        with safe_open(str(self.dir / shard["file"]), framework="pt") as f:
            lo, hi = (int(v) for v in f.get_slice("indptr")[local : local + 2])
            token_index = f.get_slice("token_index")[lo:hi].long().numpy()
            activation = f.get_slice("activation")[lo:hi].float().numpy()
        return LatentActivations(latent, token_index, activation)

    def stats(self) -> dict[str, np.ndarray]:
        """Per-latent `firing_count` and `max_activation`."""
        with safe_open(str(self.dir / STATS_FILE), framework="np") as f:
            return {key: f.get_tensor(key) for key in f.keys()}
