"""Any OpenAI-compatible server (`vllm serve`, llama.cpp server, hosted APIs) as an LLMClient.

Failure policy (README, "Retries, failures and timeouts"):

- Retried with full-jitter exponential backoff, honouring Retry-After and `x-ratelimit-reset-*` (a wait asked
  for by the server pauses every request of the client, not only the one that got it): 408, 409, 425, 429
  rate limits, every 5xx but 501 and 505 (so Cloudflare's 52x too), timeouts, refused or dropped
  connections, and 200 answers whose body is an error with such a code or none.
- Fatal (`LLMFatalError`: the stage stops and records nothing for the requests in flight): 401/403 (API
  key), 402 (no credits), a 429 saying the quota is exhausted, an unknown model, a host that does not answer
  a connection attempt within `connect_timeout`, a server not ready within `ready_timeout`, a server lost
  mid-run (no attempt of a request could connect), and the same rejection for REJECT_LIMIT requests in a row.
- Per request (`LLMError` with its `kind`): any other 4xx (`rejected`), an answer that cannot be read
  (`parse`), retries exhausted (`transient`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import random
import re
import ssl
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import certifi

from autointerp.config import LLMSettings
from autointerp.errors import ConfigError
from autointerp.llm.base import LLMClient
from autointerp.llm.openai_wire import (
    MalformedAnswer,
    ServerError,
    dump_json,
    one_line,
    parse_reset_duration,
    parse_response,
    parse_retry_after,
    read_json,
    request_payload,
    server_error,
)
from autointerp.llm.types import LLMError, LLMFatalError, LLMRequest, LLMResponse
from autointerp.urls import display_url, endpoint, url_credentials

__all__ = ["OpenAIClient", "is_retryable", "parse_response", "parse_retry_after", "request_payload"]

log = logging.getLogger(__name__)

RETRY_4XX = frozenset({408, 409, 425, 429})
NEVER_RETRY_5XX = frozenset({501, 505})
REJECT_LIMIT = 20
"""Identical rejections in a row (no success between them) after which the server is taken to refuse all."""
QUOTA_CODES = frozenset({"insufficient_quota", "quota_exceeded", "billing_hard_limit_reached"})
_QUOTA_MESSAGE = re.compile(r"exceeded your current quota|insufficient[_ ]quota|billing", re.IGNORECASE)
_MODEL_MISSING = re.compile(r"\bmodel\b.*\b(does not exist|not found|not exist)\b", re.IGNORECASE)
_RESET_HEADERS = ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens", "x-ratelimit-reset")
_JSON_BODY = {"Content-Type": "application/json"}


def is_retryable(status: int) -> bool:
    """Whether an HTTP status may succeed when the same request is sent again."""
    return status in RETRY_4XX or (500 <= status <= 599 and status not in NEVER_RETRY_5XX)


@dataclass(frozen=True)
class _Failure:
    """One failed attempt that may be retried."""

    reason: str
    delay: float | None = None
    """Seconds the server asked us to wait (Retry-After), or None for the jittered backoff."""
    connect: bool = False
    """The attempt could not connect at all."""


@dataclass(frozen=True)
class _Reply:
    """A server's answer, read in full."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    latency: float
    """Seconds from sending the request to the end of the body."""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class OpenAIClient(LLMClient):
    """Bounded concurrency, classified retries, a readiness wait, connect / read / total time limits.

    Requests go over one aiohttp session, a pool of `max_concurrency` connections opened by the first
    request (in its event loop) and closed by `aclose`. The API key is read from `$<settings.api_key_env>`
    only (absent: no Authorization header) and is never logged, cached or put into an exception message;
    messages show `base_url` without credentials.
    """

    def __init__(
        self,
        settings: LLMSettings,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        retry_after_cap: float = 600.0,
        ready_poll: float = 2.0,
    ):
        _check_settings(settings)
        cfg = self._settings = settings
        assert cfg.model and cfg.base_url  # checked just above
        self.model: str = cfg.model
        self.base_url: str = cfg.base_url.rstrip("/")
        self.max_in_flight = cfg.max_concurrency
        self._where = display_url(self.base_url)
        self._api_key_env: str = cfg.api_key_env
        self._api_key = os.environ.get(cfg.api_key_env) or None
        self._timeout: float = cfg.timeout
        self._connect_timeout: float = min(cfg.connect_timeout, cfg.timeout)
        self._ready_timeout: float = cfg.ready_timeout
        self._max_retries: int = cfg.max_retries
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._retry_after_cap = retry_after_cap
        self._ready_poll = ready_poll
        self._semaphore = asyncio.Semaphore(cfg.max_concurrency)
        self._ready_lock = asyncio.Lock()
        self._ready = False
        self._reached = False
        self._pause_until = 0.0
        self._rejection: tuple[int, str] | None = None
        self._rejections = 0
        self._warned: set[str] = set()
        self._urls: dict[str, str] = {}
        self._proxy = _env_proxy(self.base_url)
        self._http: aiohttp.ClientSession | None = None
        if self._api_key and _is_plain_remote(self.base_url):
            log.warning(
                "the API key is sent over plain http to %s; use https for remote servers", self._where
            )

    async def generate(self, request: LLMRequest) -> LLMResponse:
        async with self._semaphore:
            session = self._http
            if session is None or not self._ready:
                session = await self._ready_session()
            return await self._generate_with_retries(session, request)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def _ready_session(self) -> aiohttp.ClientSession:
        """The client's session, opened on first use, once the server has answered the readiness probe."""
        async with self._ready_lock:
            if self._http is None:
                self._http = self._open_session()
            if not self._ready:
                await self._wait_until_ready(self._http)
                self._ready = True
            return self._http

    def _open_session(self) -> aiohttp.ClientSession:
        """One connection pool of `max_concurrency` connections, with the connect / read / total limits."""
        cfg = self._settings
        timeout = aiohttp.ClientTimeout(
            total=self._timeout, connect=self._connect_timeout, sock_read=cfg.read_timeout or self._timeout
        )
        https = self.base_url.startswith("https://")
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=cfg.max_concurrency, ssl=_tls_context() if https else True),
            headers={"Authorization": f"Bearer {self._api_key}"} if self._api_key else None,
            timeout=timeout,
        )

    async def _fetch(self, session: aiohttp.ClientSession, path: str, body: bytes | None = None) -> _Reply:
        """GET `path`, or POST the JSON `body` to it; the answer read in full. Raises aiohttp's errors and
        TimeoutError."""
        start = time.perf_counter()
        async with session.request(
            "GET" if body is None else "POST",
            self._url(path),
            data=body,
            headers=None if body is None else _JSON_BODY,
            allow_redirects=False,
            proxy=self._proxy,
        ) as response:
            data = await response.read()
        return _Reply(response.status, response.headers, data, time.perf_counter() - start)

    def _url(self, path: str) -> str:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = endpoint(self.base_url, path)
        return url

    async def _wait_until_ready(self, session: aiohttp.ClientSession) -> None:
        """Poll GET /models until the server answers, for at most `ready_timeout` seconds."""
        deadline = time.monotonic() + self._ready_timeout
        announced = False
        while (reason := await self._probe(session)) is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LLMFatalError(
                    f"cannot reach {self._where}: {reason} (waited {self._ready_timeout:g} s, "
                    f"{self._settings.key('ready_timeout')}); is the server running at that address?"
                )
            if not announced:
                log.warning(
                    "waiting up to %g s for %s to come up (%s; still loading its model?)",
                    self._ready_timeout,
                    self._where,
                    reason,
                )
                announced = True
            await asyncio.sleep(min(self._ready_poll, left))
        if announced:
            log.warning("%s is up", self._where)

    async def _probe(self, session: aiohttp.ClientSession) -> str | None:
        """None once the server answers; otherwise why it is not ready. Raises for a host that never does."""
        try:
            reply = await self._fetch(session, "/models")
        except aiohttp.ConnectionTimeoutError:
            raise self._unreachable() from None
        except aiohttp.ClientConnectorError as exc:
            return f"cannot connect ({one_line(str(exc.os_error)) or 'connection refused'})"
        except asyncio.TimeoutError:
            return f"no answer to GET /models within {self._timeout:g} s"
        except aiohttp.ClientError as exc:
            return f"connection error ({type(exc).__name__})"
        self._reached = True
        if is_retryable(reply.status) and reply.status != 429:
            return f"HTTP {reply.status}: {self._error_of(reply, read_json(reply.body)).message}"
        return None  # up; what it thinks of the key or the model, the first request tells

    def _unreachable(self) -> LLMFatalError:
        return LLMFatalError(
            f"cannot reach {self._where}: no answer to a connection attempt within "
            f"{self._connect_timeout:g} s ({self._settings.key('connect_timeout')}); check the host and port "
            f"of {self._settings.key('base_url')} "
            "(a wrong address, or a firewall that drops packets)"
        )

    async def _generate_with_retries(
        self, session: aiohttp.ClientSession, request: LLMRequest
    ) -> LLMResponse:
        path, payload = request_payload(self.model, request)
        body = dump_json(payload)
        failures: list[_Failure] = []
        started = time.monotonic()
        for attempt in range(self._max_retries + 1):
            if self._pause_until > time.monotonic():
                await self._wait_for_pause()
            outcome = await self._attempt(session, path, body, request)
            if isinstance(outcome, LLMResponse):
                return outcome
            failures.append(outcome)
            if attempt < self._max_retries:
                await asyncio.sleep(self._delay(outcome, attempt))
        return self._give_up(failures, time.monotonic() - started)

    async def _attempt(
        self, session: aiohttp.ClientSession, path: str, body: bytes, request: LLMRequest
    ) -> LLMResponse | _Failure:
        """The answer, or why this attempt failed; raises when no retry can help."""
        try:
            reply = await self._fetch(session, path, body)
        except aiohttp.ConnectionTimeoutError:
            if not self._reached:
                raise self._unreachable() from None
            return _Failure(f"cannot connect within {self._connect_timeout:g} s", connect=True)
        except aiohttp.ClientConnectorError:
            return _Failure("cannot connect", connect=True)
        except asyncio.TimeoutError:
            return _Failure(f"no answer within {self._timeout:g} s")
        except aiohttp.ClientError as exc:
            return _Failure(f"connection dropped ({type(exc).__name__})")
        self._reached = True
        return self._outcome(reply, request)

    def _delay(self, failure: _Failure, attempt: int) -> float:
        if failure.delay is None:
            return self._backoff(attempt)
        self._pause_until = max(self._pause_until, time.monotonic() + failure.delay)
        return failure.delay

    async def _wait_for_pause(self) -> None:
        """A wait the server asked for holds back every request of this client."""
        while (wait := self._pause_until - time.monotonic()) > 0:
            await asyncio.sleep(wait)

    def _give_up(self, failures: list[_Failure], seconds: float) -> LLMResponse:
        attempts = len(failures)
        if all(f.connect for f in failures):
            raise LLMFatalError(
                f"lost the connection to {self._where}: {attempts} attempts over {seconds:.0f} s could not "
                "connect; rerun once the server is back (finished work is kept)"
            )
        raise LLMError(
            f"{self._where}: gave up after {attempts} attempts, last: {failures[-1].reason}", kind="transient"
        )

    def _outcome(self, reply: _Reply, request: LLMRequest) -> LLMResponse | _Failure:
        """The parsed answer, or a retryable failure; raises for a failure that retrying cannot fix."""
        status, data = reply.status, read_json(reply.body)
        if status == 200:
            if not (isinstance(data, dict) and data.get("error") and not data.get("choices")):
                return self._answer(data, reply, request)
            error = self._error_of(reply, data)
            status = error.status or 500
            label = f"HTTP 200 with an error body (code {error.code or 'none'})"
        else:
            error = self._error_of(reply, data)
            label = f"HTTP {status}"
        fatal = self._fatal(status, error)
        if fatal is not None:
            raise fatal
        if is_retryable(status):
            return _Failure(f"{label}: {error.message}", self._server_delay(reply.headers, status))
        self._count_rejection(status, error.message)
        raise LLMError(f"{label}: {error.message}", kind="rejected")

    def _answer(self, data: Any, reply: _Reply, request: LLMRequest) -> LLMResponse:
        if data is None:
            raise LLMError(
                f"{self._where} sent an answer that is not JSON: {self._redact(one_line(reply.text[:200]))}",
                kind="parse",
            )
        try:
            parsed = parse_response(data, request, reply.latency)
        except MalformedAnswer as exc:
            raise LLMError(f"{self._where} sent a malformed answer ({exc})", kind="parse") from None
        self._rejection, self._rejections = None, 0
        self._check_logprobs(parsed, request)
        return parsed

    def _check_logprobs(self, response: LLMResponse, request: LLMRequest) -> None:
        """Warn once when the server drops logprobs that were asked for (answers then come from text)."""
        missing = []
        if request.params.logprobs is not None and response.logprobs is None:
            missing.append("logprobs")
        if request.params.prompt_logprobs is not None and response.prompt_logprobs is None:
            missing.append("prompt_logprobs")
        for name in missing:
            if name not in self._warned:
                self._warned.add(name)
                log.warning(
                    "%s returns no %s although they were asked for; scores that need them fall back to "
                    "the answer text (probabilities become 0 or 1)",
                    self._where,
                    name,
                )

    def _error_of(self, reply: _Reply, data: Any) -> ServerError:
        """What the error body `data` (None when not JSON) of `reply` says, without the API key."""
        error = server_error(data, reply.text)
        return ServerError(self._redact(error.message), error.code, error.type)

    def _fatal(self, status: int, error: ServerError) -> LLMFatalError | None:
        """The fatal error for a status and error body, or None when the request alone failed."""
        where, message = self._where, f"HTTP {status}: {error.message}"
        if status in (401, 403):
            return LLMFatalError(
                f"{where} refused the API key ({message}); check the key in ${self._api_key_env}"
            )
        if status == 402:
            return LLMFatalError(
                f"{where} refuses requests for lack of credits ({message}); add credits, then rerun "
                "(finished work is kept)"
            )
        if {error.code, error.type} & QUOTA_CODES or (status == 429 and _QUOTA_MESSAGE.search(error.message)):
            return LLMFatalError(
                f"{where}: the quota is exhausted ({message}); raise it or wait until it resets, then rerun "
                "(finished work is kept)"
            )
        if status == 404 or (
            status in (400, 422) and (error.code == "model_not_found" or _MODEL_MISSING.search(error.message))
        ):
            return LLMFatalError(
                f"model {self.model!r} not found at {where} ({message}); "
                f"check {self._settings.key('model')} and {self._settings.key('base_url')}"
            )
        return None

    def _count_rejection(self, status: int, message: str) -> None:
        """The same rejection REJECT_LIMIT times in a row means the server refuses every request."""
        key = (status, message)
        self._rejections = self._rejections + 1 if self._rejection == key else 1
        self._rejection = key
        if self._rejections >= REJECT_LIMIT:
            raise LLMFatalError(
                f"{self._where} rejected {self._rejections} requests in a row with HTTP {status}: {message}; "
                "nothing can succeed with these settings"
            )

    def _server_delay(self, headers: Mapping[str, str], status: int) -> float | None:
        """The wait the server asks for (Retry-After, or on a 429 the rate-limit reset headers)."""
        seconds = parse_retry_after(headers.get("retry-after"))
        if seconds is None and status == 429:
            resets = [parse_reset_duration(headers.get(name)) for name in _RESET_HEADERS]
            seconds = max((s for s in resets if s is not None), default=None)
        if seconds is not None and seconds > self._retry_after_cap:
            raise LLMError(
                f"HTTP {status}: {self._where} asks to wait {seconds:.0f} s before retrying, longer than "
                f"the {self._retry_after_cap:g} s this client waits; rerun later",
                kind="transient",
            )
        return seconds

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^attempt)]."""
        return random.uniform(0.0, min(self._backoff_cap, self._backoff_base * 2**attempt))

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text


def _check_settings(settings: LLMSettings) -> None:
    if not settings.model:
        raise settings.missing("model", "the served model name")
    if not settings.base_url:
        raise settings.missing("base_url", "the server's endpoint, e.g. http://127.0.0.1:8000/v1")
    if not settings.base_url.startswith(("http://", "https://")):
        raise ConfigError(
            settings.key("base_url"), f"must start with http:// or https://: {display_url(settings.base_url)}"
        )
    credential = url_credentials(settings.base_url)
    if credential:
        raise ConfigError(
            settings.key("base_url"),
            f"holds {credential}; put the key in the environment variable named by "
            f"{settings.key('api_key_env')}",
        )
    if settings.max_retries < 0:
        raise ConfigError(settings.key("max_retries"), f"must be 0 or more, got {settings.max_retries}")
    for key in ("timeout", "connect_timeout"):
        if not getattr(settings, key) > 0:
            raise ConfigError(settings.key(key), f"must be positive, got {getattr(settings, key)}")


def _tls_context() -> ssl.SSLContext:
    """Certificates from $SSL_CERT_FILE, else $SSL_CERT_DIR, else certifi's bundle (not the system's, which
    some Python builds lack)."""
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    return ssl.create_default_context(cafile=certifi.where())


def _env_proxy(url: str) -> str | None:
    """The proxy that $HTTPS_PROXY, $HTTP_PROXY or $ALL_PROXY names for `url`, unless $NO_PROXY exempts it."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


def _is_plain_remote(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True
