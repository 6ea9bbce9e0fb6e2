"""Which latents a run works on, and the seeded generators behind every random draw."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from autointerp.config import LatentsConfig, parse_latent_ranges
from autointerp.errors import ConfigError
from autointerp.latentfile import latents_for, read_latent_file


def rng_for(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator derived from the run seed and `keys` (hookpoint, latent, purpose, ...).

    The derivation hashes the keys with SHA-256, so it is stable across processes and Python versions.
    """
    plain = [int(seed), *(key if isinstance(key, str) else int(key) for key in keys)]
    digest = hashlib.sha256(json.dumps(plain).encode()).digest()
    return np.random.default_rng(np.random.SeedSequence(int.from_bytes(digest, "little")))


def select_latents(cfg: LatentsConfig, num_latents: int, seed: int, hookpoint: str) -> list[int]:
    """The sorted latents of `hookpoint` to work on: the explicit `indices` or `indices_file`, else a seeded
    sample."""
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
        return sorted(set(indices))
    if cfg.sample is None or cfg.sample >= num_latents:
        return list(range(num_latents))
    chosen = rng_for(seed, hookpoint, "latents").choice(num_latents, size=cfg.sample, replace=False)
    return sorted(int(i) for i in chosen)


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
