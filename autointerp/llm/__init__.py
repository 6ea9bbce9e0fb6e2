"""LLM access: one async client interface over vLLM, OpenAI-compatible servers and local transformers."""

from __future__ import annotations

from typing import Any

from autointerp.errors import ConfigError
from autointerp.llm.base import LLMClient, run_requests
from autointerp.llm.response_cache import CachedClient, ResponseCache
from autointerp.llm.types import (
    LLMError,
    LLMFatalError,
    LLMRequest,
    LLMResponse,
    Message,
    SamplingParams,
    TokenLogprob,
)

__all__ = [
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
    "run_requests",
]


def make_client(cfg: Any) -> LLMClient:
    """The client for `cfg.backend` (an ExplainerConfig-like object); backends are imported only when used."""
    if cfg.backend == "vllm":
        from autointerp.llm.vllm_backend import VLLMClient

        return VLLMClient(cfg)
    if cfg.backend == "openai":
        from autointerp.llm.openai_backend import OpenAIClient

        return OpenAIClient(cfg)
    if cfg.backend == "transformers":
        from autointerp.llm.transformers_backend import TransformersClient

        return TransformersClient(cfg)
    raise ConfigError("explainer.backend", f"must be vllm | openai | transformers, got {cfg.backend!r}")
