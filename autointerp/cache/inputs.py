"""What a hookpoint's cache is made from, as config values and file contents: checked by every stage that
reads the cache, so an explain or score run never renders one model's token ids with another's tokenizer,
or reads a cache of another corpus while its config claims the new one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autointerp.cache.reader import CacheReader
from autointerp.config import RunConfig
from autointerp.corpus import corpus_version, data_file_paths
from autointerp.fingerprint import Digests, run_digests
from autointerp.modelpath import local_model_files
from autointerp.rundir import FORMAT_VERSION, refuse_stale

READ_CHECKED = ("model", "dataset", "cache")
"""The parts of a cache key that stages reading the cache compare with their config (the coder's weights
are fingerprinted by the cache stage alone, which loads it)."""


def cache_inputs(config: RunConfig, hookpoint: str, digests: Digests) -> dict[str, Any]:
    """The config values that define a hookpoint's cache, but the coder's file fingerprint.

    A local model is hashed by the content of its files, local `data_files` by their content alone (not
    their paths); hub models and datasets by their names. `model.dtype` is hashed as configured (`auto`
    stays `auto`), so that tasks on machines that resolve it differently (a bf16 GPU, a CPU merge job)
    share one cache.
    """
    model: dict[str, Any] = {"path": config.model.path, "dtype": config.model.dtype}
    files = local_model_files(config.model.path)
    if files:
        model["files"] = digests.named(files)
    dataset = config.to_dict()["dataset"] | corpus_version(config.dataset)
    if config.dataset.data_files:
        dataset["data_files"] = [_content(entry, digests) for entry in data_file_paths(config.dataset)]
    return {
        "format_version": FORMAT_VERSION,
        "model": model,
        "sparse_coder": {"path": config.sparse_coder.path, "hookpoint": hookpoint},
        "dataset": dataset,
        "cache": {
            "n_tokens": config.cache.n_tokens,
            "ctx_len": config.cache.ctx_len,
            "activation_dtype": config.cache.activation_dtype,
        },
    }


def _content(entry: Path | str, digests: Digests) -> str | None:
    """A data file's sha256 (None: the file is gone), or the URL of a remote one."""
    if isinstance(entry, str):
        return entry
    return digests.file(entry) if entry.is_file() else None


def as_recorded(key: dict[str, Any], recorded: object) -> dict[str, Any]:
    """`key`, with data files that are gone (a corpus deleted after caching) taken as the cache's recorded
    ones: what is no longer there cannot be checked, and reading or finishing the cache does not need it."""
    files = key["dataset"].get("data_files")
    dataset = recorded.get("dataset") if isinstance(recorded, dict) else None
    if not files or None not in files or not isinstance(dataset, dict):
        return key
    return {**key, "dataset": {**key["dataset"], "data_files": dataset.get("data_files")}}


def refuse_other_cache(config: RunConfig, reader: CacheReader, hookpoint: str) -> None:
    """Refuse a cache made from another model, corpus or cache settings than the config names."""
    recorded = reader.manifest.get("cache_key")
    if not isinstance(recorded, dict):
        return  # a cache of an older format: its config hash is checked by the cache stage
    expected = as_recorded(cache_inputs(config, hookpoint, run_digests(config.run_dir)), recorded)
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
