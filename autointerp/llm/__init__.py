"""LLM access: one async client interface over vLLM, OpenAI-compatible servers and local transformers."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util

from autointerp.config import LLMBackend, LLMSettings, RunConfig
from autointerp.errors import ConfigError
from autointerp.llm.base import LLMClient, run_requests
from autointerp.llm.response_cache import CachedClient, ResponseCache
from autointerp.llm.types import (
    FAILURE_KINDS,
    FailureKind,
    LLMError,
    LLMFatalError,
    LLMRequest,
    LLMResponse,
    Message,
    SamplingParams,
    TokenLogprob,
)

__all__ = [
    "FAILURE_KINDS",
    "FailureKind",
    "CachedClient",
    "LLMClient",
    "LLMError",
    "LLMFatalError",
    "LLMRequest",
    "LLMResponse",
    "Message",
    "ResponseCache",
    "SamplingParams",
    "TokenLogprob",
    "BACKENDS",
    "make_client",
    "resolve_backend",
    "with_resolved_backends",
    "run_requests",
]


BACKENDS: dict[str, str] = {
    "vllm": "autointerp.llm.vllm_backend:VLLMClient",
    "openai": "autointerp.llm.openai_backend:OpenAIClient",
    "transformers": "autointerp.llm.transformers_backend:TransformersClient",
}
"""Backend name -> `module:class` of its client, imported only when used."""


def make_client(settings: LLMSettings) -> LLMClient:
    """The client for one role's LLM settings; errors name that role's config keys."""
    backend = resolve_backend(settings.backend)
    if backend not in BACKENDS:
        choices = " | ".join(["auto", *BACKENDS])
        raise ConfigError(settings.key("backend"), f"must be {choices}, got {settings.backend!r}")
    module, _, name = BACKENDS[backend].partition(":")
    client_class = getattr(importlib.import_module(module), name)
    return client_class(settings)


def resolve_backend(backend: LLMBackend) -> LLMBackend:
    """`auto` is vllm when it is installed, else transformers (per machine: keys hash `auto` as given)."""
    if backend != "auto":
        return backend
    return "vllm" if vllm_installed() else "transformers"


def vllm_installed() -> bool:
    """Whether vLLM can be imported here (what `auto` resolves by)."""
    return importlib.util.find_spec("vllm") is not None


def with_resolved_backends(config: RunConfig) -> RunConfig:
    """`config` with each role's `auto` backend resolved on this machine, as versions before `auto` was
    hashed as given wrote it into record keys (their records still count as made with `auto` here)."""
    explainer, scorer, surprisal = config.explainer, config.scorer, config.surprisal
    return dataclasses.replace(
        config,
        explainer=dataclasses.replace(explainer, backend=resolve_backend(explainer.backend)),
        scorer=dataclasses.replace(scorer, backend=scorer.backend and resolve_backend(scorer.backend)),
        surprisal=dataclasses.replace(surprisal, backend=resolve_backend(surprisal.backend)),
    )
