"""Read a finished cache: one latent is one slice of one shard."""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from autointerp.cache.tokens import map_tokens, read_tokens
from autointerp.errors import UserError
from autointerp.rundir import MANIFEST_FILE, STATS_FILE, TOKENS_FILE, read_json_file

REBUILD = "rerun `autointerp cache --force` to rebuild the cache"


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
        self.manifest: dict[str, Any] = read_json_file(manifest_path, REBUILD)
        if not isinstance(self.manifest, dict) or not self.manifest.get("complete"):
            raise UserError(
                f"the cache at {hookpoint_dir} is unfinished: run `autointerp cache` to complete it"
            )
        problem = manifest_problem(self.manifest)
        if problem:
            raise UserError(f"{manifest_path}: {problem} (edited or damaged?); {REBUILD}")
        self._starts = [shard["start"] for shard in self.manifest["shards"]]
        self._handles: dict[Path, Any] = {}

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
        path = self.dir / TOKENS_FILE
        with _readable(path):
            tokens = read_tokens(path, start, end)
        if tokens.ndim != 2 or tokens.shape[1] != self.ctx_len:
            raise UserError(
                f"{path}: rows of {list(tokens.shape)[1:]} tokens, not ctx_len={self.ctx_len}; {REBUILD}"
            )
        return tokens

    def token_array(self) -> np.ndarray:
        """All token rows, int32 [num_sequences, ctx_len], memory-mapped (read from disk as used)."""
        path = self.dir / TOKENS_FILE
        with _readable(path):
            tokens = map_tokens(path)
        if tokens.shape[1] != self.ctx_len:
            raise UserError(
                f"{path}: rows of {tokens.shape[1]} tokens, not ctx_len={self.ctx_len}; {REBUILD}"
            )
        return tokens

    def latent(self, latent: int) -> LatentActivations:
        if not 0 <= latent < self.num_latents:
            raise IndexError(f"latent {latent} out of range [0, {self.num_latents})")
        shard = self.manifest["shards"][bisect.bisect_right(self._starts, latent) - 1]
        local = latent - shard["start"]
        path = self.dir / shard["file"]
        with _readable(path):
            f = self._shard(path)
            bounds = [int(v) for v in f.get_slice("indptr")[local : local + 2]]
            if len(bounds) != 2 or not 0 <= bounds[0] <= bounds[1]:
                raise UserError(f"{path}: its latents do not match the manifest; {REBUILD}")
            if bounds[0] == bounds[1]:  # silent (and numpy slices of an empty tensor fail)
                return LatentActivations(latent, np.zeros(0, np.int64), np.zeros(0, np.float32))
            token_index = _array(f.get_slice("token_index")[bounds[0] : bounds[1]], np.int64)
            activation = _array(f.get_slice("activation")[bounds[0] : bounds[1]], np.float32)
        return LatentActivations(latent, token_index, activation)

    def _shard(self, path: Path) -> Any:
        """The shard file, opened once (memory-mapped) and kept open for the reader's life: as numpy arrays
        (no round trip through torch), or as torch tensors where it holds bfloat16, which numpy lacks."""
        if path not in self._handles:
            handle = safe_open(str(path), framework="np")
            if handle.get_slice("activation").get_dtype() == "BF16":
                handle = safe_open(str(path), framework="pt")
            self._handles[path] = handle
        return self._handles[path]

    def stats(self) -> dict[str, np.ndarray]:
        """Per-latent `firing_count` and `max_activation`."""
        path = self.dir / STATS_FILE
        with _readable(path), safe_open(str(path), framework="np") as f:
            return {key: f.get_tensor(key) for key in f.keys()}


def _array(part: np.ndarray | torch.Tensor, dtype: type[np.generic]) -> np.ndarray:
    """A slice of a shard as a numpy array of `dtype` (a bfloat16 one by way of float32)."""
    if isinstance(part, torch.Tensor):
        part = (part.float() if part.dtype == torch.bfloat16 else part).numpy()
    return part.astype(dtype, copy=False)


@contextmanager
def _readable(path: Path) -> Iterator[None]:
    """A cache file that cannot be read (missing, truncated, not safetensors) is a UserError naming it."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:  # safetensors raises its own error types (SafetensorError, ...) for damage
        reason = type(exc).__name__
        raise UserError(f"{path}: cannot be read ({reason}: damaged or truncated?); {REBUILD}") from None


def manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What makes a complete manifest unusable (missing keys, wrong types, shards not covering every
    latent), or None."""
    for key in ("num_latents", "ctx_len", "num_sequences"):
        value = manifest.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            return f"{key!r} is {value!r}, not a positive integer"
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards:
        return "lists no shards"
    expected = 0
    for shard in shards:
        if not isinstance(shard, dict) or not isinstance(shard.get("file"), str):
            return f"has a shard entry that is not {{start, end, file}}: {shard!r}"
        if (
            shard.get("start") != expected
            or not isinstance(shard.get("end"), int)
            or shard["end"] <= expected
        ):
            return f"its shards do not cover the latents in order (at latent {expected})"
        expected = shard["end"]
    if expected != manifest["num_latents"]:
        return f"its shards cover {expected} latents, not num_latents={manifest['num_latents']}"
    return None
