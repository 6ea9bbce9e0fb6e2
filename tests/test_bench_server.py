"""The pipeline benchmark's instant LLM server speaks what the openai backend and the readers expect."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from autointerp.config import ExplainerConfig, LLMSettings
from autointerp.explain.parse import parse_explanation
from autointerp.llm import LLMRequest, Message, SamplingParams, run_requests
from autointerp.llm.openai_backend import OpenAIClient
from autointerp.score.answers import first_token_choice

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "instant_llm.py"


@pytest.fixture
def instant_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, str(SCRIPT), "--port", str(port)])
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{url}/models", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        process.kill()
        process.wait()


def _settings(url: str) -> LLMSettings:
    config = ExplainerConfig(
        backend="openai",
        model="instant",
        base_url=url,
        api_key_env="AUTOINTERP_TEST_NO_KEY",
        max_concurrency=8,
        timeout=10.0,
        max_retries=0,
    )
    return config.llm


def test_instant_server_answers_scorer_and_explainer_prompts_and_counts_them(instant_url):
    score = LLMRequest(
        (Message("user", "Does it fire? Answer 0 or 1."),), SamplingParams(max_tokens=1, logprobs=5)
    )
    explain = LLMRequest((Message("user", "Explain the latent."),), SamplingParams(max_tokens=200))

    async def ask() -> list:
        client = OpenAIClient(_settings(instant_url))
        try:
            answers = [None] * 5
            async for index, result in run_requests(client, [score, score, score, explain, explain]):
                answers[index] = result
            return answers
        finally:
            await client.aclose()

    answers = asyncio.run(ask())
    probabilities = first_token_choice(answers[0], ("0", "1"))
    assert probabilities["1"] == pytest.approx(0.7, abs=1e-4)
    assert parse_explanation(answers[3].text).startswith("the token 'def'")
    with urllib.request.urlopen(f"{instant_url}/stats") as reply:
        stats = json.loads(reply.read())
    assert (stats["score"], stats["explain"]) == (3, 2)
    with urllib.request.urlopen(f"{instant_url}/sample/score") as reply:
        assert json.loads(reply.read())["top_logprobs"] == 5
