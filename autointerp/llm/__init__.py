"""LLM access: one async client interface over vLLM, OpenAI-compatible servers and local transformers."""

from __future__ import annotations

import importlib
import importlib.util

from autointerp.config import LLMSettings
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


def resolve_backend(backend: str) -> str:
    """`auto` is vllm when it is installed, else transformers."""
    if backend != "auto":
        return backend
    return "vllm" if importlib.util.find_spec("vllm") is not None else "transformers"
