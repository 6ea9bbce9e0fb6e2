"""The one request/response vocabulary every LLM backend speaks."""

from __future__ import annotations

import hashlib
import json
import typing
from dataclasses import dataclass, field
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
        payload = json.dumps({"model": model, **self.plain()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def plain(self) -> dict[str, typing.Any]:
        """The request as plain data: what `dataclasses.asdict` gives, built without its deep copies."""
        p = self.params
        params = {
            "temperature": p.temperature,
            "max_tokens": p.max_tokens,
            "stop": p.stop,
            "logprobs": p.logprobs,
            "prompt_logprobs": p.prompt_logprobs,
            "seed": p.seed,
        }
        messages = [{"role": m.role, "content": m.content} for m in self.messages]
        return {"messages": messages, "params": params, "raw": self.raw}


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
        """What `dataclasses.asdict` gives, built directly (it deep-copies field by field, which is most
        of a response cache write)."""
        return {
            "text": self.text,
            "logprobs": _logprob_dicts(self.logprobs),
            "prompt_logprobs": _logprob_dicts(self.prompt_logprobs),
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "completion_tokens": self.completion_tokens,
            "latency": self.latency,
            "finish_reason": self.finish_reason,
        }

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


def _logprob_dicts(positions: list[TokenLogprob] | list[TokenLogprob | None] | None) -> list | None:
    if positions is None:
        return None
    return [
        None if p is None else {"token": p.token, "logprob": p.logprob, "top": dict(p.top)} for p in positions
    ]


FailureKind = Literal["transient", "rejected", "parse", "fatal"]
"""Why a request failed, as stage code records it so that a later run knows what to retry:

- `transient`: the server could not answer now (5xx and 52x, 429 rate limits, timeouts, refused or dropped
  connections) after every retry; a rerun is likely to succeed and should retry it.
- `rejected`: the server refused this very request (a 4xx such as a prompt over the context length); the same
  request fails again, so a rerun retries it only on request.
- `parse`: the server answered 200 with a body this client cannot read (not JSON, `choices` not a list of
  objects, `usage` not an object, ...); likely to fail again with the same server.
- `fatal`: nothing can work (bad API key, no credits, quota exhausted, unknown model, unreachable
  server); only `LLMFatalError` has this kind, and it stops the stage instead of being recorded per item.
"""
FAILURE_KINDS: tuple[FailureKind, ...] = typing.get_args(FailureKind)


class LLMError(Exception):
    """A request failed for good (after retries, or an answer that cannot succeed). Recorded per item.

    `kind` (a `FailureKind`) is machine-readable: record it with the failure so that a rerun can retry
    `transient` failures by default and the others on request.
    """

    def __init__(self, message: str, kind: FailureKind = "transient"):
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown LLM failure kind {kind!r}")
        super().__init__(message)
        self.kind: FailureKind = kind


class LLMFatalError(LLMError):
    """The backend cannot work at all (wrong model name, bad API key, no credits, unreachable server)."""

    def __init__(self, message: str):
        super().__init__(message, kind="fatal")
