"""The OpenAI-compatible client against a real local HTTP server with scripted faults."""

from __future__ import annotations

import asyncio
import math
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from fault_server import FaultServer, serving

from autointerp.config import ExplainerConfig
from autointerp.llm import (
    LLMError,
    LLMFatalError,
    LLMRequest,
    LLMResponse,
    Message,
    SamplingParams,
    make_client,
    run_requests,
)
from autointerp.llm.openai_backend import OpenAIClient, parse_retry_after
from autointerp.llm.openai_wire import read_json

KEY_ENV = "AUTOINTERP_TEST_KEY"
KEY = "sk-secret-123"
CHAT = LLMRequest(
    (Message("system", "You explain."), Message("user", "Explain.")), SamplingParams(logprobs=2)
)


@pytest.fixture
def server(monkeypatch) -> Iterator[FaultServer]:
    monkeypatch.setenv(KEY_ENV, KEY)
    with serving(FaultServer()) as fake:
        yield fake


def make(url: str, backoff_cap: float = 0.05, **overrides) -> OpenAIClient:
    settings = dict(
        backend="openai", model="test-model", base_url=url, api_key_env=KEY_ENV, timeout=0.3, ready_timeout=0
    )
    cfg = ExplainerConfig(**{**settings, "max_retries": 5, "max_concurrency": 4, **overrides})
    return OpenAIClient(cfg.llm, backoff_base=0.01, backoff_cap=backoff_cap)


def generate(url: str, request: LLMRequest = CHAT, **overrides) -> LLMResponse:
    async def main() -> LLMResponse:
        client = make(url, **overrides)
        try:
            return await client.generate(request)
        finally:
            await client.aclose()

    return asyncio.run(main())


def error(status: int, message: str, headers: dict | None = None) -> tuple:
    return ("status", status, headers or {}, {"error": {"message": message, "type": "error"}})


def test_retries_429_500_and_timeout_then_parses(server):
    server.script = [error(429, "slow down", {"Retry-After": "0"})] * 2 + [error(500, "oops"), ("hang", 1.0)]
    response = generate(server.url)
    assert len(server.calls) == 5
    call = server.calls[-1]
    assert call["path"] == "/v1/chat/completions"
    assert call["headers"]["Authorization"] == f"Bearer {KEY}"
    assert call["body"]["logprobs"] is True and call["body"]["top_logprobs"] == 2
    assert call["body"]["messages"][0] == {"role": "system", "content": "You explain."}
    assert "prompt_logprobs" not in call["body"] and "seed" not in call["body"]
    assert response.text == "hello" and response.finish_reason == "stop"
    assert (response.prompt_tokens, response.completion_tokens, response.cached_tokens) == (12, 2, 8)
    assert [(t.token, t.logprob) for t in response.logprobs] == [("hel", -0.1), ("lo", -0.2)]
    assert response.logprobs[0].top == {"he": -2.5, "hel": -0.1}
    assert response.prompt_logprobs is None and response.latency > 0


def test_retry_after_is_honoured(server):
    server.script = [error(429, "slow down", {"Retry-After": "0.3"})]
    generate(server.url, backoff_cap=5.0)
    assert len(server.calls) == 2
    assert server.calls[1]["time"] - server.calls[0]["time"] >= 0.3


def test_retry_after_parsing():
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 28 < parse_retry_after(later) <= 30
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None


def test_raw_completion_with_prompt_logprobs(server):
    params = SamplingParams(logprobs=1, prompt_logprobs=1, stop=("\n",), seed=3, max_tokens=5)
    response = generate(server.url, LLMRequest((Message("user", "Hello"),), params, raw=True))
    body = server.calls[0]["body"]
    assert server.calls[0]["path"] == "/v1/completions"
    assert body["prompt"] == "Hello" and body["logprobs"] == 1 and body["prompt_logprobs"] == 1
    assert (body["stop"], body["seed"], body["max_tokens"], body["model"]) == (["\n"], 3, 5, "test-model")
    assert response.text == " world" and response.cached_tokens == 0
    assert response.logprobs[0].top == {" there": -1.2, " world": -0.3}
    first, second = response.prompt_logprobs
    assert first is None
    assert (second.token, second.logprob, second.top) == ("a", -1.0, {"a": -1.0, "b": -0.5})


def test_bad_key_is_fatal_without_retry_and_never_shown(server):
    server.script = [error(401, f"Incorrect API key provided: {KEY}")]
    with pytest.raises(LLMFatalError) as caught:
        generate(server.url)
    assert len(server.calls) == 1
    assert KEY not in str(caught.value) and KEY not in repr(caught.value)
    assert f"${KEY_ENV}" in str(caught.value)


def test_unknown_model_is_fatal(server):
    server.script = [
        ("status", 404, {}, {"object": "error", "message": "The model `test-model` does not exist."})
    ]
    with pytest.raises(LLMFatalError, match="test-model") as caught:
        generate(server.url)
    assert server.url in str(caught.value) and len(server.calls) == 1


def test_bad_request_is_an_item_error(server):
    server.script = [error(400, "This model's maximum context length is 2048 tokens.\nYou asked for 5000.")]
    with pytest.raises(LLMError, match="maximum context length") as caught:
        generate(server.url)
    assert not isinstance(caught.value, LLMFatalError)
    assert "\n" not in str(caught.value) and len(server.calls) == 1


def test_malformed_answer_is_an_item_error(server):
    server.script = [("status", 200, {}, {"unexpected": True})]
    with pytest.raises(LLMError, match="malformed"):
        generate(server.url)


def test_retries_exhausted_is_an_item_error(server):
    server.script = [error(503, "busy")] * 10
    with pytest.raises(LLMError, match="3 attempts") as caught:
        generate(server.url, max_retries=2)
    assert not isinstance(caught.value, LLMFatalError) and len(server.calls) == 3


def test_unreachable_server_is_fatal():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    with pytest.raises(LLMFatalError, match="cannot reach"):
        generate(url, max_retries=2)


def test_concurrency_bound_and_run_requests(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    server.success_delay = 0.05

    async def main() -> list[tuple[int, LLMResponse | LLMError]]:
        client = make_client(
            ExplainerConfig(backend="openai", model="m", base_url=server.url, max_concurrency=3).llm
        )
        assert isinstance(client, OpenAIClient) and client.max_in_flight == 3
        try:
            return [item async for item in run_requests(client, [CHAT] * 20)]
        finally:
            await client.aclose()

    results = asyncio.run(main())
    assert sorted(index for index, _ in results) == list(range(20))
    assert all(isinstance(result, LLMResponse) for _, result in results)
    assert server.max_active == 3 and len(server.calls) == 20
    assert "Authorization" not in server.calls[0]["headers"]


def test_a_query_in_the_base_url_stays_after_the_endpoint_path(server):
    generate(server.url + "?api-version=2024-10-21")
    assert server.calls[0]["path"] == "/v1/chat/completions?api-version=2024-10-21"


@pytest.mark.parametrize("exempt", [False, True])
def test_requests_go_through_the_proxy_named_in_the_environment(server, monkeypatch, exempt):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.url.removesuffix("/v1"))
    if exempt:  # the host itself is then the stub server, reached directly
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert generate(server.url).text == "hello"
        assert server.calls[0]["path"] == "/v1/chat/completions"
    else:  # a host that does not exist, reached only through the proxy
        assert generate("http://llm.invalid:8000/v1").text == "hello"
        assert server.calls[0]["path"] == "http://llm.invalid:8000/v1/chat/completions"


def test_answer_bodies_are_read_alike_with_or_without_orjson():
    assert read_json(b'{"choices": []}') == {"choices": []}
    assert math.isinf(read_json(b'{"logprob": -Infinity}')["logprob"])  # the standard library's reading
    assert read_json(b'\xef\xbb\xbf{"text": "\\ud800"}') == {"text": "\ud800"}  # a BOM, a lone surrogate
    assert read_json(b"<html>Bad gateway</html>") is None and read_json(b"") is None
    assert read_json(b"[" * 100_000) is None


@pytest.fixture
def tls_server(tmp_path) -> Iterator[tuple[FaultServer, str]]:
    """The stub server over https with a self-signed certificate for 127.0.0.1: (server, certificate file)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    fake = FaultServer()
    fake.socket = context.wrap_socket(fake.socket, server_side=True)
    with serving(fake):
        yield fake, str(cert)


def test_https_verifies_the_server_against_the_trusted_certificates(tls_server, monkeypatch):
    server, cert = tls_server
    url = server.url.replace("http://", "https://")
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with pytest.raises(LLMFatalError, match="cannot reach"):  # not in certifi's bundle
        generate(url)
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    assert generate(url).text == "hello" and len(server.calls) == 1
