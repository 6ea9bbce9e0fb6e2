"""LLM access: one async client interface over vLLM, OpenAI-compatible servers and local transformers."""

from __future__ import annotations

import importlib.util
from typing import Any

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
    "make_client",
    "resolve_backend",
    "run_requests",
]


def make_client(cfg: Any) -> LLMClient:
    """The client for `cfg.backend` (an ExplainerConfig-like object); backends are imported only when used."""
    backend = resolve_backend(cfg.backend)
    if backend == "vllm":
        from autointerp.llm.vllm_backend import VLLMClient

        return VLLMClient(cfg)
    if backend == "openai":
        from autointerp.llm.openai_backend import OpenAIClient

        return OpenAIClient(cfg)
    if backend == "transformers":
        from autointerp.llm.transformers_backend import TransformersClient

        return TransformersClient(cfg)
    raise ConfigError(
        "explainer.backend", f"must be auto | vllm | openai | transformers, got {cfg.backend!r}"
    )


def resolve_backend(backend: str) -> str:
    """`auto` is vllm when it is installed, else transformers."""
    if backend != "auto":
        return backend
    return "vllm" if importlib.util.find_spec("vllm") is not None else "transformers"
