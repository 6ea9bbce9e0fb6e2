"""The transformers backend on the tiny random Llama, checked against the model's own generate and forward."""

from __future__ import annotations

import asyncio

import pytest
import torch
from transformers import AutoTokenizer

from autointerp.config import ExplainerConfig
from autointerp.llm import LLMError, LLMRequest, LLMResponse, Message, SamplingParams, make_client
from autointerp.llm.chat import encode_prompt, render_prompt
from autointerp.llm.transformers_backend import TransformersClient

PROMPTS = ["The class statement", "def", "A for loop runs over the items of a list, and", "import os"]
TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def client(tiny_model_dir) -> TransformersClient:
    client = make_client(ExplainerConfig(backend="transformers", model=str(tiny_model_dir)).llm)
    assert isinstance(client, TransformersClient)
    return client


def raw(text: str, **params) -> LLMRequest:
    return LLMRequest((Message("user", text),), SamplingParams(**{"max_tokens": 12, **params}), raw=True)


def ask(client: TransformersClient, requests: list[LLMRequest]) -> list[LLMResponse]:
    """All requests submitted at once, so they share batches."""

    async def main() -> list[LLMResponse]:
        return await asyncio.gather(*(client.generate(r) for r in requests))

    return asyncio.run(main())


def prompt_ids(client: TransformersClient, text: str) -> torch.Tensor:
    return client.tokenizer(text, return_tensors="pt")["input_ids"]


def log_softmax(client: TransformersClient, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return client.lm(input_ids=ids).logits[0].float().log_softmax(-1)


def test_greedy_is_deterministic_and_matches_model_generate(client):
    first, second = ask(client, [raw(PROMPTS[0])]), ask(client, [raw(PROMPTS[0])])
    ids = prompt_ids(client, PROMPTS[0])
    expected = client.lm.generate(
        ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=12
    )
    completion = expected[0, ids.shape[1] :]
    assert first[0].text == second[0].text == client.tokenizer.decode(completion, skip_special_tokens=True)
    assert (first[0].prompt_tokens, first[0].completion_tokens) == (ids.shape[1], len(completion))
    assert first[0].cached_tokens == 0 and first[0].finish_reason in ("stop", "length")


def test_batched_equals_one_at_a_time(client, monkeypatch):
    sizes = []
    batch = client.generate_batch
    monkeypatch.setattr(
        client, "generate_batch", lambda prompts, p: sizes.append(len(prompts)) or batch(prompts, p)
    )
    requests = [raw(text, logprobs=3) for text in PROMPTS]
    together = ask(client, requests)
    alone = [ask(client, [request])[0] for request in requests]
    assert sizes == [len(PROMPTS)] + [1] * len(PROMPTS)
    for a, b in zip(together, alone, strict=True):
        assert a.text == b.text and [t.token for t in a.logprobs] == [t.token for t in b.logprobs]
        assert [t.logprob for t in a.logprobs] == pytest.approx([t.logprob for t in b.logprobs], abs=1e-4)


def test_logprobs_are_log_softmax_of_the_logits(client):
    (response,) = ask(client, [raw(PROMPTS[2], logprobs=5, max_tokens=8)])
    ids = prompt_ids(client, PROMPTS[2])
    full = client.lm.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=8)
    expected = log_softmax(client, full)[ids.shape[1] - 1 : -1]
    generated = full[0, ids.shape[1] :]
    assert len(response.logprobs) == len(generated)
    for step, token in enumerate(response.logprobs):
        assert token.logprob == pytest.approx(expected[step, generated[step]].item(), abs=1e-4)
        allowed = [*expected[step].topk(5).values.tolist(), token.logprob]  # pieces may repeat, e.g. "\ufffd"
        assert max(token.top.values()) == pytest.approx(allowed[0], abs=1e-4)
        assert all(min(abs(value - a) for a in allowed) < 1e-4 for value in token.top.values())
        assert token.top[token.token] == token.logprob


def test_prompt_logprobs_match_a_forward_pass(client):
    (response,) = ask(client, [raw(PROMPTS[2], prompt_logprobs=2, max_tokens=1)])
    ids = prompt_ids(client, PROMPTS[2])
    expected = log_softmax(client, ids)
    assert response.prompt_logprobs[0] is None and len(response.prompt_logprobs) == ids.shape[1]
    for position, entry in enumerate(response.prompt_logprobs[1:], start=1):
        assert entry.logprob == pytest.approx(expected[position - 1, ids[0, position]].item(), abs=1e-4)
        assert 2 <= len(entry.top) <= 3


def test_stop_string_trims_the_text(client):
    (full,) = ask(client, [raw(PROMPTS[1], max_tokens=20)])
    assert len(full.text) >= 6
    stop = full.text[3:5]
    (stopped,) = ask(client, [raw(PROMPTS[1], max_tokens=20, stop=(stop,))])
    assert stopped.text == full.text[: full.text.find(stop)]
    assert stopped.finish_reason == "stop" and stopped.completion_tokens <= full.completion_tokens


def test_seeded_sampling_is_reproducible(client):
    requests = [raw(PROMPTS[3], temperature=1.0, seed=5)] * 2
    first, second = ask(client, requests[:1]), ask(client, requests[1:])
    assert first[0].text == second[0].text


def test_prompt_longer_than_the_context_is_an_item_error(client):
    with pytest.raises(LLMError, match="context"):
        ask(client, [raw("x " * 600)])


def test_render_prompt_uses_the_chat_template(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    chat = LLMRequest((Message("system", "S"), Message("user", "U")))
    prefill = LLMRequest((*chat.messages, Message("assistant", "A")))
    assert render_prompt(tokenizer, chat) == "S\n\nU\n\n"
    assert render_prompt(tokenizer, prefill) == "S\n\nU\n\nA"
    assert render_prompt(tokenizer, raw("as is")) == "as is"
    assert encode_prompt(tokenizer, chat)[0] == tokenizer.bos_token_id
    tokenizer.chat_template = TEMPLATE
    assert render_prompt(tokenizer, chat) == "<|system|>S\n<|user|>U\n<|assistant|>"
    assert render_prompt(tokenizer, prefill) == "<|system|>S\n<|user|>U\n<|assistant|>A"
    assert encode_prompt(tokenizer, chat)[0] != tokenizer.bos_token_id
