"""Intervention scorer: KL-tuned steering, greedy continuations, explanation likelihood, explainer prompt."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from torch import nn

from autointerp.config import InterventionConfig, ModelConfig
from autointerp.explain.parse import parse_explanation
from autointerp.explain.prompts import ANSWER_MARKER, output_messages
from autointerp.llm.types import Message
from autointerp.score.intervention import (
    MAX_STRENGTH,
    Steering,
    added_to_output,
)
from autointerp.subject import Subject, load_subject

N_PROMPTS, PROMPT_TOKENS = 4, 12


def _subject(model_dir) -> Subject:
    return load_subject(ModelConfig(path=str(model_dir), device="cpu"))


@pytest.fixture(scope="module")
def subject(tiny_model_dir) -> Subject:
    """The tiny random model with a 40x unembedding: near-uniform predictions cap KL at ~0.01 nats."""
    subject = _subject(tiny_model_dir)
    with torch.no_grad():
        subject.model.lm_head.weight.mul_(40)
    return subject


@pytest.fixture(scope="module")
def copying_subject(tiny_model_dir) -> Subject:
    """A model that finds a token likelier after text that repeats it, which random weights do not.

    Layer 0 attends uniformly (zero queries) and copies the first 16 dims of each normalised token
    embedding into the residual; every other attention and MLP writes nothing; the unembedding is the
    embedding, scaled.
    """
    subject = _subject(tiny_model_dir)
    model = subject.model
    with torch.no_grad():
        model.lm_head.weight.copy_(model.model.embed_tokens.weight * 40)
        for layer in model.model.layers:
            layer.mlp.down_proj.weight.zero_()
            layer.self_attn.o_proj.weight.zero_()
        attn = model.model.layers[0].self_attn
        attn.q_proj.weight.zero_()
        attn.v_proj.weight.copy_(torch.eye(16, 32))  # two kv heads of 8 dims
        attn.o_proj.weight[0:8, 0:8] = torch.eye(8)  # query head 0 reads kv head 0
        attn.o_proj.weight[8:16, 16:24] = torch.eye(8)  # query head 2 reads kv head 1
    return subject


def _prompts(subject: Subject) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, len(subject.tokenizer), (N_PROMPTS, PROMPT_TOKENS), generator=generator)
    prompts[:, 0] = subject.tokenizer.bos_token_id
    return prompts


def _directions(n: int = 8, d: int = 32) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(1))


def _steering(subject: Subject, module_path: str = "layers.1", directions=None, **cfg) -> Steering:
    config = InterventionConfig(n_prompts=N_PROMPTS, prompt_tokens=PROMPT_TOKENS, new_tokens=6, **cfg)
    directions = _directions() if directions is None else directions
    return Steering(subject, module_path, directions, config, _prompts(subject))


@pytest.mark.parametrize("module_path", ["layers.1", "layers.0.mlp"])
@pytest.mark.parametrize("target", [0.3, 2.0])
def test_tuned_strength_reaches_the_target_kl(subject, module_path, target):
    steering = _steering(subject, module_path, target_kl=target)
    for latent in (0, 3):
        effect = steering.effect(latent)
        assert effect.kl == pytest.approx(target, rel=0.1)
        assert 0 < effect.strength < MAX_STRENGTH
        assert len(effect.steered) == N_PROMPTS and all(len(row) == 6 for row in effect.steered)


def test_unreachable_target_uses_the_largest_strength(subject):
    effect = _steering(subject, target_kl=1000.0).effect(0)
    assert effect.strength == MAX_STRENGTH
    assert 0 < effect.kl < 1000.0


def test_zero_strength_changes_nothing(subject):
    steering = _steering(subject)
    effect = steering.effect(2, strength=0.0)
    assert effect.steered == effect.clean
    assert effect.kl == pytest.approx(0.0, abs=1e-6)
    assert all(abs(rise) < 1e-5 for _, rise in effect.promoted)
    score, per_prompt = steering.explanation_score(effect, "the keyword is")
    assert score == 0.0 and per_prompt == [0.0] * N_PROMPTS


def _greedy_without_cache(model: nn.Module, prompts: torch.Tensor, n: int, steer=None) -> list[list[int]]:
    """Greedy continuation by full forward passes; `steer()` gives a fresh steering context per pass."""
    ids = prompts
    with torch.inference_mode():
        for _ in range(n):
            with steer() if steer else nullcontext():
                logits = model(input_ids=ids).logits
            ids = torch.cat([ids, logits[:, -1:].argmax(-1)], dim=1)
    return ids[:, prompts.shape[1] :].tolist()


@pytest.mark.parametrize("positions", ["last", "all"])
def test_continuations_are_greedy_and_steered_where_configured(subject, positions):
    """`last`: only the last prompt position is steered; `all`: every position but BOS, generated tokens
    too. The cached generation must match full passes steered at the same absolute positions."""
    steering = _steering(subject, positions=positions)
    assert steering.clean == _greedy_without_cache(subject.model, steering.prompts, 6)
    effect = steering.effect(1, strength=1.5)
    assert effect.steered != effect.clean
    vector = 1.5 * steering.mean_norm * _directions()[1] / _directions()[1].norm()
    length = PROMPT_TOKENS
    start, stop = (length - 1, length) if positions == "last" else (1, None)
    assert steering.steered_positions == (start, stop)

    def steer():
        return added_to_output(steering.module, vector, start, stop)

    assert effect.steered == _greedy_without_cache(subject.model, steering.prompts, 6, steer)


def test_the_hook_adds_only_at_the_given_positions():
    class Identity(nn.Module):
        def forward(self, x):
            return x

    layer = Identity()
    with added_to_output(layer, torch.ones(2), start=2, stop=4):
        first = layer(torch.zeros(1, 3, 2))  # positions 0-2
        second = layer(torch.zeros(1, 1, 2))  # position 3 (a cached generation step)
        third = layer(torch.zeros(1, 1, 2))  # position 4
    assert first[0, :, 0].tolist() == [0.0, 0.0, 1.0]
    assert second[0, :, 0].tolist() == [1.0] and third[0, :, 0].tolist() == [0.0]


def test_hooks_are_removed_even_on_error(subject):
    tokens = _prompts(subject)
    with torch.inference_mode():
        before = subject.model(input_ids=tokens).logits
        steering = _steering(subject)
        steering.effect(0)
        with pytest.raises(RuntimeError), added_to_output(steering.module, torch.ones(32)):
            raise RuntimeError("boom")
        after = subject.model(input_ids=tokens).logits
    assert torch.equal(before, after)
    assert not steering.module._forward_hooks


def test_hook_adds_to_the_hidden_state_of_a_tuple_output():
    class Layer(nn.Module):
        def forward(self, x):
            return x * 2, "cache"

    layer = Layer()
    with added_to_output(layer, torch.ones(3)):
        hidden, extra = layer(torch.zeros(2, 3))
    assert torch.equal(hidden, torch.ones(2, 3)) and extra == "cache"


def _single_token_words(subject: Subject) -> list[tuple[int, str]]:
    """Tokens that are a whole word after a space, so the explanation `word` scores exactly that token."""
    tokenizer = subject.tokenizer
    words = [(token, tokenizer.decode([token]).strip()) for token in range(len(tokenizer))]
    return [
        (token, word)
        for token, word in words
        if len(word) >= 2 and tokenizer.encode(f" {word}", add_special_tokens=False) == [token]
    ]


def test_planted_unembedding_direction_promotes_its_token_and_explanation(copying_subject):
    unembedding = copying_subject.model.lm_head.weight.detach()
    steering = _steering(copying_subject, "layers.2", directions=unembedding, target_kl=1.0)
    words = _single_token_words(copying_subject)
    assert len(words) >= 2
    for token, word in words[:2]:
        effect = steering.effect(token)
        assert effect.kl == pytest.approx(1.0, rel=0.1)
        assert token in [promoted for promoted, _ in effect.promoted[:3]]
        assert sum(row.count(token) for row in effect.steered) > sum(row.count(token) for row in effect.clean)
        planted, per_prompt = steering.explanation_score(effect, word)
        unrelated, _ = steering.explanation_score(effect, "numbers and arithmetic")
        assert planted > unrelated + 1.0
        assert len(per_prompt) == N_PROMPTS


def test_empty_explanation_is_refused(subject):
    steering = _steering(subject)
    with pytest.raises(ValueError, match="empty"):
        steering.explanation_score(steering.effect(0, strength=0.0), "  ")


def test_output_explainer_prompt_shows_continuations_and_promoted_tokens(subject):
    steering = _steering(subject)
    effect = steering.effect(0)
    decode = subject.tokenizer.decode
    prompts_text = [decode(row) for row in steering.prompts.tolist()]
    continuations = [decode(tokens) for tokens in effect.steered]
    promoted = [decode([token]) for token, _ in effect.promoted]
    messages = output_messages(prompts_text, continuations, promoted)
    user = messages[-1].content
    assert [m.role for m in messages] == ["system", "user"]
    for token, _ in effect.promoted:
        assert f'"{decode([token])}"'.replace("\n", "\\n") in user
    assert decode(effect.steered[0]).replace("\n", "\\n") in user
    assert user.endswith(f"{ANSWER_MARKER} <your explanation>")
    assert parse_explanation(f"reasoning\n{ANSWER_MARKER} words about loops") == "words about loops"
    prefilled = output_messages(prompts_text, continuations, promoted, reasoning=False)
    assert prefilled[-1] == Message("assistant", ANSWER_MARKER)
