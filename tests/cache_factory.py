"""Write complete caches in the public format from planted activations, without running a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from autointerp.cache import CacheReader
from autointerp.cache.merge import shard_ranges
from autointerp.cache.tokens import write_tokens
from autointerp.rundir import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    STATS_FILE,
    TOKENS_FILE,
    shard_file_name,
    write_json_atomic,
)

DECODER_FILE = "decoder.safetensors"
PlantedActivations = dict[int, list[tuple[int, float]]]
"""Latent -> [(global token index = sequence * ctx_len + position, activation)]."""


def write_synthetic_cache(
    directory: Path,
    tokens: np.ndarray,
    acts: PlantedActivations | np.ndarray,
    num_latents: int,
    latents_per_shard: int = 64,
    decoder: np.ndarray | None = None,
) -> CacheReader:
    """A finished cache of `tokens` [S, T] where latents fire as planted (a dict or dense [S*T, L])."""
    num_sequences, ctx_len = tokens.shape
    write_tokens(iter(tokens), num_sequences, ctx_len, directory / TOKENS_FILE)
    columns = _columns(acts, num_latents)
    shards = []
    for start, end in shard_ranges(num_latents, latents_per_shard):
        save_file(_shard(columns[start:end]), str(directory / shard_file_name(start, end)))
        shards.append({"file": shard_file_name(start, end), "start": start, "end": end})
    stats = {
        "firing_count": np.array([len(index) for index, _ in columns], dtype=np.int64),
        "max_activation": np.array([v.max(initial=0.0) for _, v in columns], dtype=np.float32),
    }
    save_file(stats, str(directory / STATS_FILE))
    if decoder is not None:
        save_file({"W_dec": np.ascontiguousarray(decoder, dtype=np.float32)}, str(directory / DECODER_FILE))
    write_json_atomic(directory / MANIFEST_FILE, _manifest(directory.name, num_latents, tokens.shape, shards))
    return CacheReader(directory)


def _columns(acts: PlantedActivations | np.ndarray, num_latents: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per latent: sorted token indices (int32) and their activations (float32)."""
    if isinstance(acts, np.ndarray):
        nonzero = [np.flatnonzero(acts[:, latent]) for latent in range(num_latents)]
        return [
            (index.astype(np.int32), acts[index, latent].astype(np.float32))
            for latent, index in enumerate(nonzero)
        ]
    columns = []
    for latent in range(num_latents):
        pairs = sorted(acts.get(latent, []))
        index = np.array([i for i, _ in pairs], dtype=np.int32)
        if len(np.unique(index)) != len(index):
            raise ValueError(f"latent {latent} is planted twice at one token")
        columns.append((index, np.array([v for _, v in pairs], dtype=np.float32)))
    return columns


def _shard(columns: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    indptr = np.zeros(len(columns) + 1, dtype=np.int64)
    np.cumsum([len(index) for index, _ in columns], out=indptr[1:])
    return {
        "indptr": indptr,
        "token_index": np.concatenate([index for index, _ in columns] + [np.zeros(0, np.int32)]),
        "activation": np.concatenate([values for _, values in columns] + [np.zeros(0, np.float32)]),
    }


def _manifest(hookpoint: str, num_latents: int, shape: tuple[int, int], shards: list[dict]) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "hookpoint": hookpoint,
        "num_latents": num_latents,
        "num_sequences": shape[0],
        "ctx_len": shape[1],
        "activation_dtype": "float32",
        "token_index_dtype": "int32",
        "shards": shards,
        "config_hash": "synthetic",
        "complete": True,
    }
