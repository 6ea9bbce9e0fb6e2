"""The on-disk response cache and the caching client."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

from autointerp.llm import (
    CachedClient,
    LLMClient,
    LLMError,
    LLMRequest,
    LLMResponse,
    Message,
    ResponseCache,
    TokenLogprob,
)

RESPONSE = LLMResponse(
    text="dogs",
    logprobs=[TokenLogprob("dogs", -0.1, {"dogs": -0.1, "cats": -2.0})],
    prompt_logprobs=[None, TokenLogprob("a", -3.0)],
    prompt_tokens=5,
    cached_tokens=2,
    completion_tokens=1,
    latency=0.5,
    finish_reason="stop",
)


class CountingClient(LLMClient):
    model = "fake"

    def __init__(self, fail: bool = False):
        self.calls = 0
        self.fail = fail

    async def generate(self, request: LLMRequest) -> LLMResponse:
        self.calls += 1
        if self.fail:
            raise LLMError("prompt too long")
        return LLMResponse(text=request.messages[0].content.upper())

    async def aclose(self) -> None:
        pass


def request(text: str) -> LLMRequest:
    return LLMRequest((Message("user", text),))


def ask(client: LLMClient, texts: list[str]) -> list[LLMResponse]:
    async def main() -> list[LLMResponse]:
        try:
            return [await client.generate(request(text)) for text in texts]
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_round_trip_across_reopen(tmp_path):
    cache = ResponseCache(tmp_path, "shard-0")
    cache.put("k", RESPONSE)
    cache.close()
    assert ResponseCache(tmp_path, "shard-0").get("k") == RESPONSE
    assert ResponseCache(tmp_path, "shard-0").get("missing") is None


def test_torn_last_line_is_skipped_and_cut(tmp_path):
    cache = ResponseCache(tmp_path, "s")
    cache.put("a", RESPONSE)
    cache.put("b", RESPONSE)
    cache.close()
    data = cache.path.read_bytes()
    cache.path.write_bytes(data[:-20])
    reopened = ResponseCache(tmp_path, "s")
    assert reopened.get("a") == RESPONSE and reopened.get("b") is None
    reopened.put("c", RESPONSE)
    reopened.close()
    assert {k for k in "abc" if ResponseCache(tmp_path, "s").get(k)} == {"a", "c"}


def test_puts_survive_kill_9(tmp_path):
    script = f"""
        import os, signal
        from autointerp.llm import LLMResponse, ResponseCache
        cache = ResponseCache({str(tmp_path)!r}, "killed", sync_every=1000)
        for i in range(50):
            cache.put(str(i), LLMResponse(text="x" * 10_000))
        os.kill(os.getpid(), signal.SIGKILL)
    """
    assert subprocess.run([sys.executable, "-c", textwrap.dedent(script)]).returncode == -9
    reopened = ResponseCache(tmp_path, "killed")
    assert len(reopened) == 50 and reopened.get("49") == LLMResponse(text="x" * 10_000)


def test_a_task_reads_only_its_own_file(tmp_path):
    """A SLURM task's memory does not grow with the other tasks' answers: it indexes its own file only."""
    for shard in ("0", "1"):
        cache = ResponseCache(tmp_path, shard)
        cache.put(f"key-{shard}", RESPONSE)
        cache.close()
    assert len(ResponseCache(tmp_path, "2")) == 0
    again = ResponseCache(tmp_path, "1")
    assert len(again) == 1 and again.get("key-1") == RESPONSE and again.get("key-0") is None


def test_the_index_points_at_each_keys_last_answer(tmp_path):
    cache = ResponseCache(tmp_path, "0")
    cache.put("a", LLMResponse(text="first"))
    cache.put("b", LLMResponse(text="other"))
    cache.put("a", LLMResponse(text="second"))
    assert cache.get("a") == LLMResponse(text="second")
    cache.close()
    with open(cache.path, "ab") as f:
        f.write(b'{"key": "c", "response": {"te')  # torn by a kill
    reopened = ResponseCache(tmp_path, "0")
    assert (
        reopened.get("a") == LLMResponse(text="second") and reopened.get("c") is None and len(reopened) == 2
    )


def test_cached_client_asks_once_and_never_after_reopen(tmp_path):
    inner = CountingClient()
    client = CachedClient(inner, ResponseCache(tmp_path, "0"))
    first, second = ask(client, ["x", "x"])
    assert first == second == LLMResponse(text="X")
    assert inner.calls == 1 and (client.hits, client.misses) == (1, 1)
    client.cache.close()
    again = CachedClient(CountingClient(), ResponseCache(tmp_path, "0"))
    assert ask(again, ["x"]) == [first] and again.client.calls == 0 and again.hits == 1


def test_errors_are_not_cached(tmp_path):
    client = CachedClient(CountingClient(fail=True), ResponseCache(tmp_path, "0"))
    for _ in range(2):
        with pytest.raises(LLMError):
            ask(client, ["x"])
    assert client.client.calls == 2 and len(ResponseCache(tmp_path, "0")) == 0


def test_another_endpoint_never_replays_these_answers(tmp_path):
    """A changed server or backend (same model name) asks afresh instead of replaying the old answers."""
    first = CachedClient(CountingClient(), ResponseCache(tmp_path, "0"), "openai:http://a/v1")
    ask(first, ["x"])
    first.cache.close()
    other = CachedClient(CountingClient(), ResponseCache(tmp_path, "0"), "openai:http://b/v1")
    ask(other, ["x"])
    assert other.client.calls == 1 and other.hits == 0
    other.cache.close()
    same = CachedClient(CountingClient(), ResponseCache(tmp_path, "0"), "openai:http://a/v1")
    ask(same, ["x"])
    assert same.client.calls == 0 and same.hits == 1


def test_request_keys_are_those_of_the_dataclass_fields():
    """The response-cache key hashes the request's fields as `dataclasses.asdict` lays them out, so caches
    written before keep answering."""
    import dataclasses
    import hashlib
    import json

    from autointerp.llm import LLMRequest, Message, SamplingParams

    request = LLMRequest(
        (Message("system", "s"), Message("user", "u")),
        SamplingParams(temperature=0.5, max_tokens=7, stop=("\n",), logprobs=2, prompt_logprobs=0, seed=3),
    )
    assert json.loads(json.dumps(request.plain())) == json.loads(json.dumps(dataclasses.asdict(request)))
    legacy = json.dumps({"model": "m", **dataclasses.asdict(request)}, sort_keys=True)
    assert request.key("m") == hashlib.sha256(legacy.encode()).hexdigest()


def test_an_answer_written_over_a_torn_tail_is_read_back(tmp_path):
    """A torn last line is cut off when the file is next opened for writing; an answer read before (so in
    the reader's buffer) and the new line written over it must not mix."""
    cache = ResponseCache(tmp_path, "0")
    cache.put("a", LLMResponse(text="first"))
    cache.close()
    with open(cache.path, "ab") as f:
        f.write(b'{"key": "b", "response": {"text": "torn')
    reopened = ResponseCache(tmp_path, "0")
    assert reopened.get("a") == LLMResponse(text="first")  # the reader buffers the torn bytes too
    reopened.put("c", LLMResponse(text="new"))
    assert reopened.get("c") == LLMResponse(text="new") and reopened.get("b") is None
