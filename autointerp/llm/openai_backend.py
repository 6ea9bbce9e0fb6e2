"""Any OpenAI-compatible server (`vllm serve`, llama.cpp server, hosted APIs) as an LLMClient."""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import time
from datetime import datetime, timezone
from typing import Any

import httpx

from autointerp.config import LLMSettings
from autointerp.llm.base import LLMClient
from autointerp.llm.types import LLMError, LLMFatalError, LLMRequest, LLMResponse, TokenLogprob

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MESSAGE_CHARS = 300


class OpenAIClient(LLMClient):
    """Bounded concurrency, retries with full-jitter exponential backoff that honour Retry-After, timeouts.

    The API key is read from `$<settings.api_key_env>` only (absent: no Authorization header) and is never
    logged, cached or put into an exception message.
    """

    def __init__(self, settings: LLMSettings, backoff_base: float = 1.0, backoff_cap: float = 60.0):
        if not settings.model:
            raise settings.missing("model", "the served model name")
        if not settings.base_url:
            raise settings.missing("base_url", "the server's endpoint, e.g. http://127.0.0.1:8000/v1")
        self._settings = settings
        self.model: str = settings.model
        self.base_url: str = settings.base_url.rstrip("/")
        self.max_in_flight = settings.max_concurrency
        self._api_key_env: str = settings.api_key_env
        self._api_key = os.environ.get(settings.api_key_env) or None
        self._timeout: float = settings.timeout
        self._max_retries: int = settings.max_retries
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._semaphore = asyncio.Semaphore(settings.max_concurrency)
        self._reached = False
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self._api_key}"} if self._api_key else {},
            timeout=settings.timeout,
            limits=httpx.Limits(max_connections=settings.max_concurrency),
        )

    async def generate(self, request: LLMRequest) -> LLMResponse:
        async with self._semaphore:
            return await self._generate_with_retries(request)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _generate_with_retries(self, request: LLMRequest) -> LLMResponse:
        path, body = request_payload(self.model, request)
        connect_failures = 0
        for attempt in range(self._max_retries + 1):
            start = time.perf_counter()
            try:
                response = await asyncio.wait_for(self._http.post(path, json=body), self._timeout)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                connect_failures += 1
                reason, delay = "cannot connect", None
            except (asyncio.TimeoutError, httpx.TimeoutException):
                reason, delay = f"no answer within {self._timeout:g} s", None
            except httpx.RequestError as exc:
                reason, delay = f"connection error ({type(exc).__name__})", None
            else:
                self._reached = True
                if response.status_code == 200:
                    return self._parse(response, request, time.perf_counter() - start)
                self._raise_for_status(response)
                reason, delay = f"HTTP {response.status_code}", self._retry_after(response)
            if attempt < self._max_retries:
                await asyncio.sleep(self._backoff(attempt) if delay is None else delay)
        attempts = self._max_retries + 1
        if connect_failures == attempts and not self._reached:
            raise LLMFatalError(f"cannot reach {self.base_url} ({attempts} attempts): is the server running?")
        raise LLMError(f"{self.base_url}: gave up after {attempts} attempts, last: {reason}")

    def _parse(self, response: httpx.Response, request: LLMRequest, latency: float) -> LLMResponse:
        try:
            return parse_response(response.json(), request, latency)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"{self.base_url} sent a malformed answer ({type(exc).__name__}: {exc})") from None

    def _raise_for_status(self, response: httpx.Response) -> None:
        """Raise for a non-retryable error status; return for a retryable one."""
        status = response.status_code
        if status in RETRY_STATUSES:
            return
        message = self._redact(server_message(response))
        if status in (401, 403):
            raise LLMFatalError(
                f"{self.base_url} refused the API key (HTTP {status}: {message}); "
                f"check the key in ${self._api_key_env}"
            )
        if status == 404 or _says_model_missing(message):
            raise LLMFatalError(
                f"model {self.model!r} not found at {self.base_url} (HTTP {status}: {message}); "
                f"check {self._settings.key('model')} and {self._settings.key('base_url')}"
            )
        raise LLMError(f"HTTP {status}: {message}")

    def _retry_after(self, response: httpx.Response) -> float | None:
        seconds = parse_retry_after(response.headers.get("retry-after"))
        return None if seconds is None else min(seconds, self._backoff_cap)

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^attempt)]."""
        return random.uniform(0.0, min(self._backoff_cap, self._backoff_base * 2**attempt))

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text


def request_payload(model: str, request: LLMRequest) -> tuple[str, dict[str, Any]]:
    """The endpoint path and JSON body for `request` (chat or raw completion)."""
    params = request.params
    body: dict[str, Any] = {
        "model": model,
        "temperature": params.temperature,
        "max_tokens": params.max_tokens,
    }
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    if params.prompt_logprobs is not None:
        body["prompt_logprobs"] = params.prompt_logprobs  # vLLM extension
    if request.raw:
        body["prompt"] = request.messages[0].content
        if params.logprobs is not None:
            body["logprobs"] = params.logprobs
        return "/completions", body
    body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
    if request.messages[-1].role == "assistant":  # a prefill to continue (vLLM extension)
        body.update(continue_final_message=True, add_generation_prompt=False)
    if params.logprobs is not None:
        body.update(logprobs=True, top_logprobs=params.logprobs)
    return "/chat/completions", body


def parse_response(data: dict[str, Any], request: LLMRequest, latency: float) -> LLMResponse:
    """An LLMResponse from a (chat) completion body; `latency` is that of the successful attempt."""
    choice = data["choices"][0]
    usage = data.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    if request.raw:
        text, logprobs = choice.get("text", ""), _completion_logprobs(choice.get("logprobs"))
    else:
        text = (choice.get("message") or {}).get("content") or ""
        logprobs = _chat_logprobs(choice.get("logprobs"))
    prompt_logprobs = choice.get("prompt_logprobs", data.get("prompt_logprobs"))
    return LLMResponse(
        text=text,
        logprobs=logprobs if request.params.logprobs is not None else None,
        prompt_logprobs=None if prompt_logprobs is None else [_vllm_logprob(x) for x in prompt_logprobs],
        prompt_tokens=usage.get("prompt_tokens") or 0,
        cached_tokens=details.get("cached_tokens") or 0,
        completion_tokens=usage.get("completion_tokens") or 0,
        latency=latency,
        finish_reason=choice.get("finish_reason"),
    )


def _chat_logprobs(data: dict[str, Any] | None) -> list[TokenLogprob] | None:
    if not data or data.get("content") is None:
        return None
    return [_token_logprob(item["token"], item["logprob"], _alternatives(item)) for item in data["content"]]


def _completion_logprobs(data: dict[str, Any] | None) -> list[TokenLogprob] | None:
    if not data or data.get("tokens") is None:
        return None
    tops = data.get("top_logprobs") or [None] * len(data["tokens"])
    return [
        _token_logprob(token, logprob, top or {})
        for token, logprob, top in zip(data["tokens"], data["token_logprobs"], tops, strict=True)
    ]


def _alternatives(item: dict[str, Any]) -> dict[str, float]:
    return {top["token"]: top["logprob"] for top in item.get("top_logprobs") or []}


def _vllm_logprob(entry: dict[str, Any] | None) -> TokenLogprob | None:
    """A vLLM prompt-logprob entry `{token_id: {logprob, rank, decoded_token}}`, real token first."""
    if entry is None:
        return None
    items = list(entry.values())
    top = {item["decoded_token"]: item["logprob"] for item in items}
    return _token_logprob(items[0]["decoded_token"], items[0]["logprob"], top)


def _token_logprob(token: str, logprob: float, top: dict[str, float]) -> TokenLogprob:
    """The chosen token is always among the alternatives, as with the vLLM and transformers backends."""
    return TokenLogprob(token=token, logprob=logprob, top={**top, token: top.get(token, logprob)})


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delay in seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def server_message(response: httpx.Response) -> str:
    """The server's error message on one line (OpenAI, vLLM and llama.cpp error bodies)."""
    try:
        data = response.json()
    except ValueError:
        data = None
    message: Any = response.text
    if isinstance(data, dict):
        error = data.get("error")
        message = error.get("message", error) if isinstance(error, dict) else error
        message = message or data.get("message", data)
    line = " ".join(str(message).split())
    return line if len(line) <= MESSAGE_CHARS else line[: MESSAGE_CHARS - 3] + "..."


def _says_model_missing(message: str) -> bool:
    lowered = message.lower()
    return "model" in lowered and ("does not exist" in lowered or "not found" in lowered)
