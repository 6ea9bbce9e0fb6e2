"""The one request/response vocabulary every LLM backend speaks."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Message:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class SamplingParams:
    """Immutable generation parameters; each backend adapts them to its own API."""

    temperature: float = 0.0
    max_tokens: int = 200
    stop: tuple[str, ...] = ()
    logprobs: int | None = None
    """Top alternatives to return with each generated token (None: no logprobs)."""
    prompt_logprobs: int | None = None
    """Return the logprob of every prompt token (0: only the actual token; None: none)."""
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")


@dataclass(frozen=True)
class LLMRequest:
    """Chat messages (or, with `raw`, one plain-text prompt) plus sampling params.

    `raw=True` sends `messages[0].content` as a plain completion prompt with no chat template (for base
    models and for scoring text, e.g. surprisal).
    """

    messages: tuple[Message, ...]
    params: SamplingParams = SamplingParams()
    raw: bool = False

    def key(self, model: str) -> str:
        """Hash of (model, request): the response-cache key."""
        payload = json.dumps({"model": model, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: dict[str, float] = field(default_factory=dict)
    """Alternatives at this position: token text -> logprob (includes the chosen token when returned)."""


@dataclass
class LLMResponse:
    text: str
    logprobs: list[TokenLogprob] | None = None
    prompt_logprobs: list[TokenLogprob | None] | None = None
    """One entry per prompt token; the first is None (it has no context)."""
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    latency: float = 0.0
    finish_reason: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict) -> LLMResponse:
        def logprob(item: dict | None) -> TokenLogprob | None:
            return None if item is None else TokenLogprob(**item)

        return LLMResponse(
            **{
                **data,
                "logprobs": None if data.get("logprobs") is None else [logprob(x) for x in data["logprobs"]],
                "prompt_logprobs": None
                if data.get("prompt_logprobs") is None
                else [logprob(x) for x in data["prompt_logprobs"]],
            }
        )


class LLMError(Exception):
    """A request failed for good (after retries, or a 4xx that cannot succeed). Recorded per item."""


class LLMFatalError(LLMError):
    """The backend cannot work at all (wrong model name, bad API key, unreachable server)."""
