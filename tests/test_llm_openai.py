"""The OpenAI-compatible client against a real local HTTP server with scripted faults."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

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

KEY_ENV = "AUTOINTERP_TEST_KEY"
KEY = "sk-secret-123"
CHAT = LLMRequest(
    (Message("system", "You explain."), Message("user", "Explain.")), SamplingParams(logprobs=2)
)


class FakeServer(ThreadingHTTPServer):
    """Answers /v1/chat/completions and /v1/completions; `script` holds the next answers, then success."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.script: list[tuple] = []
        self.calls: list[dict] = []
        self.success_delay = 0.0
        self.active = self.max_active = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def next_action(self, call: dict) -> tuple:
        with self.lock:
            self.calls.append(call)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            return self.script.pop(0) if self.script else ("ok",)

    def done(self) -> None:
        with self.lock:
            self.active -= 1

    def handle_error(self, request, client_address) -> None:
        """Clients that time out close their socket; the late write fails quietly."""


class Handler(BaseHTTPRequestHandler):
    server: FakeServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        call = {"path": self.path, "body": body, "headers": dict(self.headers), "time": time.monotonic()}
        action = self.server.next_action(call)
        try:
            if action[0] == "hang":
                time.sleep(action[1])
            if action[0] == "status":
                _, status, headers, payload = action
                self.reply(status, payload, headers)
            else:
                time.sleep(self.server.success_delay)
                self.reply(200, success(self.path, body))
        finally:
            self.server.done()

    def reply(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def success(path: str, body: dict) -> dict:
    actual = {"logprob": -1.0, "rank": 3, "decoded_token": "a"}
    prompt_logprobs = [None, {"7": actual, "5": {"logprob": -0.5, "rank": 1, "decoded_token": "b"}}]
    if path.endswith("/chat/completions"):
        tokens = [("hel", -0.1, {"he": -2.5}), ("lo", -0.2, {"la": -3.0})]
        content = [
            {"token": t, "logprob": lp, "top_logprobs": [{"token": a, "logprob": v} for a, v in alts.items()]}
            for t, lp, alts in tokens
        ]
        usage = {"prompt_tokens": 12, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 8}}
        choice = {"message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}
        choice["logprobs"] = {"content": content} if body.get("logprobs") else None
        reply = {"choices": [choice], "usage": usage}
        if "prompt_logprobs" in body:
            reply["prompt_logprobs"] = prompt_logprobs
        return reply
    choice = {"text": " world", "finish_reason": "length"}
    choice["logprobs"] = {"tokens": [" world"], "token_logprobs": [-0.3], "top_logprobs": [{" there": -1.2}]}
    if "prompt_logprobs" in body:
        choice["prompt_logprobs"] = prompt_logprobs
    return {"choices": [choice], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


@pytest.fixture
def server(monkeypatch) -> Iterator[FakeServer]:
    monkeypatch.setenv(KEY_ENV, KEY)
    fake = FakeServer()
    thread = threading.Thread(target=fake.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    fake.shutdown()
    fake.server_close()


def make(url: str, backoff_cap: float = 0.05, **overrides) -> OpenAIClient:
    settings = dict(backend="openai", model="test-model", base_url=url, api_key_env=KEY_ENV, timeout=0.3)
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
