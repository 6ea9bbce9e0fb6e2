"""Fault injection: the OpenAI-compatible client against a real loopback server that misbehaves.

Each test scripts one kind of server fault and checks how it is classified: retried, a per-request
`LLMError` of a given `kind`, or a fatal `LLMFatalError` that stops the stage.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator

import pytest
from fault_server import FaultServer, blackholed_port, free_port, serving

from autointerp.config import ExplainerConfig
from autointerp.llm import (
    LLMError,
    LLMFatalError,
    LLMRequest,
    LLMResponse,
    Message,
    SamplingParams,
    run_requests,
)
from autointerp.llm.openai_backend import REJECT_LIMIT, OpenAIClient, is_retryable

CHAT = LLMRequest((Message("user", "Explain."),), SamplingParams(logprobs=2))


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with serving(FaultServer()) as fake:
        yield fake


def make(url: str, backoff_cap: float = 0.02, retry_after_cap: float = 600.0, **overrides) -> OpenAIClient:
    settings = dict(backend="openai", model="m", base_url=url, timeout=2.0, ready_timeout=0, max_retries=3)
    cfg = ExplainerConfig(**{**settings, **overrides})
    return OpenAIClient(
        cfg.llm, backoff_base=0.01, backoff_cap=backoff_cap, retry_after_cap=retry_after_cap, ready_poll=0.1
    )


def generate(url: str, request: LLMRequest = CHAT, **overrides) -> LLMResponse:
    async def main() -> LLMResponse:
        client = make(url, **overrides)
        try:
            return await client.generate(request)
        finally:
            await client.aclose()

    return asyncio.run(main())


def failure(url: str, **overrides) -> LLMError:
    with pytest.raises(LLMError) as caught:
        generate(url, **overrides)
    return caught.value


def error(status: int, message: str, headers: dict | None = None, **fields) -> tuple:
    return ("status", status, headers or {}, {"error": {"message": message, "type": "error", **fields}})


def test_402_is_fatal_with_one_clear_message(server):
    server.script = [error(402, "Insufficient credits. Add more using https://example.com/credits")]
    exc = failure(server.url)
    assert isinstance(exc, LLMFatalError) and exc.kind == "fatal"
    assert "credits" in str(exc) and "HTTP 402" in str(exc) and len(server.calls) == 1


def test_quota_exhausted_429_is_fatal_but_a_rate_limit_is_retried(server):
    quota = error(429, "You exceeded your current quota, please check your plan.", code="insufficient_quota")
    server.script = [quota]
    exc = failure(server.url)
    assert isinstance(exc, LLMFatalError) and "quota" in str(exc) and len(server.calls) == 1
    server.calls.clear()
    server.script = [error(429, "Rate limit reached for requests per min")] * 2
    assert generate(server.url).text == "hello" and len(server.calls) == 3


@pytest.mark.parametrize("status", [520, 521, 522, 524, 509, 529, 425])
def test_cloudflare_and_other_transient_statuses_are_retried(server, status):
    server.script = [error(status, "origin timeout")] * 2
    assert generate(server.url).text == "hello" and len(server.calls) == 3


def test_not_implemented_is_a_rejection_not_retried(server):
    server.script = [error(501, "not implemented")]
    exc = failure(server.url)
    assert exc.kind == "rejected" and len(server.calls) == 1
    assert not is_retryable(501) and not is_retryable(505) and is_retryable(599)


def test_exhausted_retries_are_transient_and_keep_the_message(server):
    server.script = [error(503, "engine overloaded")] * 10
    exc = failure(server.url, max_retries=2)
    assert exc.kind == "transient" and not isinstance(exc, LLMFatalError)
    assert "engine overloaded" in str(exc) and "3 attempts" in str(exc)


def test_a_200_with_an_error_body_keeps_the_server_message(server):
    body = {"error": {"message": "upstream overloaded", "code": 502}}
    server.script = [("status", 200, {}, body)] * 10
    exc = failure(server.url, max_retries=1)
    assert exc.kind == "transient" and "upstream overloaded" in str(exc) and len(server.calls) == 2
    server.calls.clear()
    server.script = [("status", 200, {}, body)]
    assert generate(server.url).text == "hello" and len(server.calls) == 2


def test_a_200_error_body_with_a_client_code_is_classified_by_it(server):
    server.script = [("status", 200, {}, {"error": {"message": "no credits left", "code": 402}})]
    assert isinstance(failure(server.url), LLMFatalError)
    server.script = [("status", 200, {}, {"error": {"message": "prompt too long", "code": 400}})]
    exc = failure(server.url)
    assert exc.kind == "rejected" and "prompt too long" in str(exc)


MALFORMED = [
    {"choices": ["x"]},
    {"choices": [{"message": "x"}]},
    {"choices": None},
    {"choices": []},
    {"choices": {"0": {}}},
    {"choices": [{"message": {"content": "1"}}], "usage": [1]},
    {"choices": [{"message": {"content": "1"}}], "usage": {"prompt_tokens_details": [1]}},
    {"choices": [{"message": {"content": "1"}}], "usage": {"prompt_tokens": "12"}},
    {"choices": [{"message": {"content": 5}}]},
    {"choices": [{"message": {"content": "1"}, "logprobs": {"content": [{"token": "1"}]}}]},
    {"choices": [{"message": {"content": "1"}, "logprobs": {"content": "x"}}]},
    {"choices": [{"message": {"content": "1"}, "finish_reason": 3}]},
    [1, 2],
    "just a string",
]


@pytest.mark.parametrize("payload", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_bodies_are_parse_errors_not_crashes(server, payload):
    server.script = [("status", 200, {}, payload)]
    exc = failure(server.url)
    assert type(exc) is LLMError and exc.kind == "parse" and "malformed" in str(exc)
    assert len(server.calls) == 1


def test_a_body_that_is_not_json_is_a_parse_error(server):
    server.script = [("raw", 200, {"Content-Type": "text/html"}, b"<html>Bad gateway</html>")]
    exc = failure(server.url)
    assert exc.kind == "parse" and "not JSON" in str(exc) and "Bad gateway" in str(exc)


def test_malformed_answers_among_many_do_not_stop_the_others(server):
    server.script = [("status", 200, {}, {"choices": ["x"]})] * 3

    async def main() -> list:
        client = make(server.url, max_concurrency=2)
        try:
            return [result async for _, result in run_requests(client, [CHAT] * 8)]
        finally:
            await client.aclose()

    results = asyncio.run(main())
    assert sum(isinstance(r, LLMError) and r.kind == "parse" for r in results) == 3
    assert sum(isinstance(r, LLMResponse) for r in results) == 5


def test_a_slow_answer_hits_the_read_limit_and_is_retried(server):
    server.script = [("slow", 1.5)]
    started = time.monotonic()
    assert generate(server.url, read_timeout=0.3, timeout=5.0).text == "hello"
    assert len(server.calls) == 2 and time.monotonic() - started < 1.4


def test_an_answer_over_the_total_limit_is_retried_then_transient(server):
    server.script = [("hang", 1.0)] * 3
    exc = failure(server.url, timeout=0.3, max_retries=1)
    assert exc.kind == "transient" and "no answer within 0.3 s" in str(exc)


def test_dropped_connections_are_retried(server):
    server.script = [("drop",)] * 2
    assert generate(server.url).text == "hello" and len(server.calls) == 3
    server.script = [("drop",)] * 10
    exc = failure(server.url, max_retries=1)
    assert exc.kind == "transient" and "connection dropped" in str(exc)


def test_retry_after_is_honoured_beyond_the_backoff_cap_and_pauses_every_request(server):
    server.script = [error(429, "slow down", {"Retry-After": "0.6"})]

    async def main() -> None:
        client = make(server.url, backoff_cap=0.02, max_concurrency=2)
        try:
            first = asyncio.ensure_future(client.generate(CHAT))
            while not server.calls or client._pause_until == 0.0:  # until the first one has had its 429
                await asyncio.sleep(0.01)
            await asyncio.gather(first, client.generate(CHAT))
        finally:
            await client.aclose()

    asyncio.run(main())
    times = [call["time"] for call in server.calls]
    assert len(times) == 3
    assert min(times[1:]) - times[0] >= 0.55  # neither the retry nor the other request went out earlier


def test_rate_limit_reset_header_is_honoured(server):
    server.script = [error(429, "slow down", {"x-ratelimit-reset-requests": "400ms"})]
    generate(server.url)
    assert server.calls[1]["time"] - server.calls[0]["time"] >= 0.38


def test_a_wait_longer_than_the_cap_fails_the_request_at_once(server):
    server.script = [error(429, "come back tomorrow", {"Retry-After": "86400"})]
    started = time.monotonic()
    exc = failure(server.url, retry_after_cap=60.0)
    assert exc.kind == "transient" and "86400 s" in str(exc) and time.monotonic() - started < 2


def test_the_same_rejection_over_and_over_becomes_fatal(server):
    server.script = [error(400, "top_logprobs must be at most 5")] * (REJECT_LIMIT + 5)

    async def main() -> list:
        client = make(server.url, max_concurrency=1)
        try:
            return [result async for _, result in run_requests(client, [CHAT] * (REJECT_LIMIT + 5))]
        finally:
            await client.aclose()

    with pytest.raises(LLMFatalError, match="rejected 20 requests in a row"):
        asyncio.run(main())
    assert len(server.calls) == REJECT_LIMIT


def test_a_server_still_loading_is_waited_for_with_a_message(server, caplog):
    loading = ("status", 503, {}, {"error": {"message": "Loading model", "code": 503}})
    server.models_script = [loading] * 3
    with caplog.at_level(logging.WARNING, logger="autointerp.llm"):
        assert generate(server.url, ready_timeout=10).text == "hello"
    assert server.probes == 4 and len(server.calls) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("waiting up to 10 s" in m and "Loading model" in m for m in messages)


def test_a_server_that_starts_late_is_waited_for():
    port = free_port()
    late = FaultServer.__new__(FaultServer)

    def start_later() -> None:
        time.sleep(0.8)
        FaultServer.__init__(late, port)
        late.serve_forever(poll_interval=0.05)

    thread = threading.Thread(target=start_later, daemon=True)
    thread.start()
    try:
        assert generate(f"http://127.0.0.1:{port}/v1", ready_timeout=10).text == "hello"
    finally:
        while not hasattr(late, "calls"):
            time.sleep(0.05)
        late.shutdown()
        late.server_close()
    assert len(late.calls) == 1


def test_a_server_that_never_comes_up_is_fatal_after_the_ready_timeout():
    url = f"http://127.0.0.1:{free_port()}/v1"
    started = time.monotonic()
    with pytest.raises(LLMFatalError, match="cannot reach .*ready_timeout"):
        generate(url, ready_timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 3


def test_a_blackholed_host_is_reported_unreachable_quickly():
    with blackholed_port() as port:
        started = time.monotonic()
        with pytest.raises(LLMFatalError, match="cannot reach .*connect_timeout"):
            generate(f"http://127.0.0.1:{port}/v1", connect_timeout=0.5, timeout=60, ready_timeout=60)
        assert time.monotonic() - started < 3


def test_losing_the_server_mid_run_is_fatal_not_a_failure_per_request():
    server = FaultServer()

    async def main() -> None:
        client = make(server.url, max_retries=2)
        try:
            await client.generate(CHAT)
            server.shutdown()
            server.server_close()
            await client.generate(CHAT)
        finally:
            await client.aclose()

    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    with pytest.raises(LLMFatalError, match="lost the connection"):
        asyncio.run(main())


def test_missing_logprobs_are_reported_once(server, caplog):
    bare = {"choices": [{"message": {"content": "1"}}]}
    server.script = [("status", 200, {}, bare)] * 2

    async def main() -> list[LLMResponse]:
        client = make(server.url)
        try:
            return [await client.generate(CHAT), await client.generate(CHAT)]
        finally:
            await client.aclose()

    with caplog.at_level(logging.WARNING, logger="autointerp.llm"):
        responses = asyncio.run(main())
    assert all(r.logprobs is None for r in responses)
    warnings = [r.getMessage() for r in caplog.records if "no logprobs" in r.getMessage()]
    assert len(warnings) == 1 and "answer text" in warnings[0]


def test_the_key_over_plain_http_to_a_remote_host_is_warned_about(monkeypatch, caplog):
    monkeypatch.setenv("AUTOINTERP_FAULT_KEY", "sk-abc")
    with caplog.at_level(logging.WARNING, logger="autointerp.llm"):
        make("http://203.0.113.9:8000/v1", api_key_env="AUTOINTERP_FAULT_KEY")
        make("http://127.0.0.1:8000/v1", api_key_env="AUTOINTERP_FAULT_KEY")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "plain http" in messages[0] and "sk-abc" not in messages[0]


def test_messages_never_show_credentials_of_the_url(server):
    server.script = [error(503, "busy")]
    exc = failure(server.url + "?api-version=2024-01-01", max_retries=0)
    assert "127.0.0.1" in str(exc) and "api-version" not in str(exc)


def test_a_key_that_may_not_list_models_still_generates(server):
    server.models_script = [error(403, "Missing scopes: api.model.read")]
    assert generate(server.url, ready_timeout=10).text == "hello"
    assert server.probes == 1 and len(server.calls) == 1
