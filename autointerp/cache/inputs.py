"""What a hookpoint's cache is made from, as config values: checked by every stage that reads the cache, so
an explain or score run never renders one model's token ids with another's tokenizer, or reads a cache of
another corpus while its config claims the new one."""

from __future__ import annotations

from typing import Any

from autointerp.cache.reader import CacheReader
from autointerp.config import RunConfig
from autointerp.corpus import corpus_version
from autointerp.rundir import FORMAT_VERSION, refuse_stale

READ_CHECKED = ("model", "dataset", "cache")
"""The parts of a cache key that stages reading the cache compare with their config (the coder's weights
are fingerprinted by the cache stage alone, which loads it)."""


def cache_inputs(config: RunConfig, hookpoint: str) -> dict[str, Any]:
    """The config values that define a hookpoint's cache, but the coder's file fingerprint.

    `model.dtype` is hashed as configured (`auto` stays `auto`), so that tasks on machines that resolve it
    differently (a bf16 GPU, a CPU merge job) share one cache.
    """
    return {
        "format_version": FORMAT_VERSION,
        "model": {"path": config.model.path, "dtype": config.model.dtype},
        "sparse_coder": {"path": config.sparse_coder.path, "hookpoint": hookpoint},
        "dataset": config.to_dict()["dataset"] | corpus_version(config.dataset),
        "cache": {
            "n_tokens": config.cache.n_tokens,
            "ctx_len": config.cache.ctx_len,
            "activation_dtype": config.cache.activation_dtype,
        },
    }


def refuse_other_cache(config: RunConfig, reader: CacheReader, hookpoint: str) -> None:
    """Refuse a cache made from another model, corpus or cache settings than the config names."""
    recorded = reader.manifest.get("cache_key")
    if not isinstance(recorded, dict):
        return  # a cache of an older format: its config hash is checked by the cache stage
    expected = cache_inputs(config, hookpoint)
    found = {part: recorded.get(part) for part in READ_CHECKED}
    wanted = {part: expected[part] for part in READ_CHECKED}
    if found["model"] is not None and wanted["model"]["dtype"] == "auto":
        found["model"] = {**found["model"], "dtype": "auto"}  # caches from before dtype was hashed as given
    refuse_stale(
        found,
        wanted,
        f"the cache of {hookpoint} in {reader.dir}",
        "run `autointerp cache` for this config first (with --force to replace it), or restore the config",
    )
