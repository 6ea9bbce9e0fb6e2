"""Which latents a run works on, and the seeded generators behind every random draw."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from autointerp.cache import CacheReader
from autointerp.config import LatentsConfig, RunConfig, parse_latent_ranges
from autointerp.errors import ConfigError
from autointerp.examples.windows import activating_windows
from autointerp.latentfile import latents_for, read_latent_file


def rng_for(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator derived from the run seed and `keys` (hookpoint, latent, purpose, ...).

    The derivation hashes the keys with SHA-256, so it is stable across processes and Python versions.
    """
    plain = [int(seed), *(key if isinstance(key, str) else int(key) for key in keys)]
    digest = hashlib.sha256(json.dumps(plain).encode()).digest()
    return np.random.default_rng(np.random.SeedSequence(int.from_bytes(digest, "little")))


@dataclass(frozen=True)
class LatentSelection:
    """The latents to work on, and how many a sample passed over because they were not eligible."""

    latents: list[int]
    """Sorted."""
    not_eligible: int = 0


def sample_latents(
    cfg: LatentsConfig,
    num_latents: int,
    seed: int,
    hookpoint: str,
    eligible: Callable[[int], bool] | None = None,
) -> LatentSelection:
    """The explicit `indices` or `indices_file`, else every latent (`sample: null`), else a seeded sample of
    eligible latents.

    The sample walks one seeded permutation of all latents and keeps the first `sample` eligible ones, so it
    is prefix-stable: a larger sample with the same seed holds every latent of a smaller one.
    """
    explicit = _explicit(cfg, hookpoint)
    if explicit is not None:
        key, indices = explicit
        outside = [i for i in indices if not 0 <= i < num_latents]
        if outside:
            raise ConfigError(
                key,
                f"latent {outside[0]} is out of range: {hookpoint} has {num_latents} latents "
                f"(0 to {num_latents - 1})",
            )
        return LatentSelection(sorted(set(indices)))
    if cfg.sample is None:
        return LatentSelection(list(range(num_latents)))
    chosen: list[int] = []
    passed_over = 0
    for latent in rng_for(seed, hookpoint, "latents").permutation(num_latents).tolist():
        if len(chosen) == cfg.sample:
            break
        if eligible is None or eligible(latent):
            chosen.append(latent)
        else:
            passed_over += 1
    return LatentSelection(sorted(chosen), passed_over)


def select_latents(
    cfg: LatentsConfig,
    num_latents: int,
    seed: int,
    hookpoint: str,
    eligible: Callable[[int], bool] | None = None,
) -> list[int]:
    """The sorted latents of `hookpoint` to work on (see `sample_latents`)."""
    return sample_latents(cfg, num_latents, seed, hookpoint, eligible).latents


def run_latents(config: RunConfig, reader: CacheReader, hookpoint: str) -> LatentSelection:
    """The run's latents of one hookpoint's cache; a sample takes only latents with at least
    `latents.min_activations` activating windows of `examples.window` tokens."""
    minimum = config.latents.min_activations
    firing = reader.stats()["firing_count"]
    width = min(config.examples.window, reader.ctx_len)

    def eligible(latent: int) -> bool:
        if firing[latent] < minimum:  # a cheap bound: every window holds at least one firing token
            return False
        return activating_windows(reader.latent(latent).token_index, reader.ctx_len, width) >= minimum

    return sample_latents(config.latents, reader.num_latents, config.seed, hookpoint, eligible)


def _explicit(cfg: LatentsConfig, hookpoint: str) -> tuple[str, list[int]] | None:
    """The config key and the latents it lists for `hookpoint`, or None when the latents are sampled."""
    if cfg.indices_file is not None:
        return "latents.indices_file", latents_for(
            read_latent_file(cfg.indices_file), hookpoint, cfg.indices_file
        )
    if cfg.indices is not None:
        indices = parse_latent_ranges(cfg.indices) if isinstance(cfg.indices, str) else list(cfg.indices)
        return "latents.indices", indices
    return None
