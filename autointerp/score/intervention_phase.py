"""The intervention scorer's phase of `autointerp score`: steer each latent, score its explanation against
the steered text, a random-latent control, and (optionally) an output-side explanation from the explainer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from autointerp.coders import load_coders
from autointerp.config import RunConfig
from autointerp.errors import UserError
from autointerp.examples.selection import rng_for
from autointerp.explain.parse import NEW_TURN, ParseError, parse_explanation
from autointerp.explain.prompts import ANSWER_MARKER
from autointerp.explain.stage import LLM_CACHE_DIR
from autointerp.llm import CachedClient, ResponseCache, make_client, run_requests
from autointerp.llm.types import LLMFatalError, LLMRequest, LLMResponse, SamplingParams
from autointerp.rundir import ShardSpec
from autointerp.score.intervention import Steering, SteeringEffect, output_explainer_messages
from autointerp.score.tasks import Outcome
from autointerp.subject import load_subject


@dataclass
class _Steered:
    target: Any
    effect: SteeringEffect
    outcome: Outcome
    request: LLMRequest | None = None


def run_intervention(config: RunConfig, targets: list, source: Any, writer: Any, shard: ShardSpec) -> None:
    """Steer and score every target; output-side explanations are asked for all at once at the end."""
    from autointerp.score.stage import skip_reason

    subject = load_subject(config.model)
    coders = load_coders(config.sparse_coder, subject.base_model)
    steered: list[_Steered] = []
    steerings: dict[str, Steering] = {}
    for target in targets:
        examples = source.get(target.hookpoint, target.latent)
        skipped, error = skip_reason(target, examples, source.plan)
        if skipped or error:
            writer.write(target, Outcome(error=error) if error else None, skipped, None)
            continue
        if target.hookpoint not in steerings:
            steerings[target.hookpoint] = _steering(config, subject, coders[target.hookpoint], source)
        steering = steerings[target.hookpoint]
        item = _score_latent(config, steering, target, source)
        if config.intervention.output_explanations:
            messages = output_explainer_messages(
                item.effect, source.texts.text, _prompt_texts(steering, source), config.explainer.reasoning
            )
            item.request = LLMRequest(tuple(messages), _output_params(config))
            steered.append(item)
        else:
            writer.write(target, item.outcome, None, None)
    if steered:
        _output_explanations(config, steered, steerings, writer, shard)


def _steering(config: RunConfig, subject: Any, coder: Any, source: Any) -> Steering:
    directions = coder.decoder_directions()
    if directions is None:
        raise UserError(
            f"intervention: the coder at {coder.hookpoint} has no decoder directions to steer with"
        )
    tokens = source.plan.readers[coder.hookpoint].tokens()
    rng = rng_for(config.seed, coder.hookpoint, "intervention-prompts")
    count = min(config.intervention.n_prompts, tokens.shape[0])
    rows = np.sort(rng.choice(tokens.shape[0], size=count, replace=False))
    prompts = tokens[torch.as_tensor(rows), : config.intervention.prompt_tokens].long()
    return Steering(subject, coder.module_path, directions, config.intervention, prompts)


def _prompt_texts(steering: Steering, source: Any) -> list[str]:
    return [source.texts.text(row.tolist()) for row in steering.prompts]


def _score_latent(config: RunConfig, steering: Steering, target: Any, source: Any) -> _Steered:
    effect = steering.effect(target.latent)
    score, per_prompt = steering.explanation_score(effect, target.explanation)
    metrics: dict[str, Any] = {"score": score, "kl": effect.kl, "strength": effect.strength}
    if config.intervention.random_latent_control:
        rng = rng_for(config.seed, target.hookpoint, target.latent, "intervention-control")
        other = int(rng.integers(steering.directions.shape[0] - 1))
        other += other >= target.latent
        control = steering.effect(other)
        metrics["control_score"] = steering.explanation_score(control, target.explanation)[0]
        metrics["control_latent"] = other
    texts = source.texts
    examples = [
        {
            "kind": "steered",
            "prompt": texts.text(prompt.tolist()),
            "clean": texts.text(clean),
            "steered": texts.text(steered),
            "value": delta,
        }
        for prompt, clean, steered, delta in zip(
            steering.prompts, effect.clean, effect.steered, per_prompt, strict=True
        )
    ]
    promoted = [{"token": texts.text([token]), "rise": rise} for token, rise in effect.promoted]
    return _Steered(target, effect, Outcome(metrics, examples, extra={"promoted": promoted}))


def _output_params(config: RunConfig) -> SamplingParams:
    stop = (NEW_TURN,) if config.explainer.reasoning else ("\n",)
    return SamplingParams(
        temperature=config.explainer.temperature, max_tokens=config.explainer.max_tokens, stop=stop
    )


def _output_explanations(
    config: RunConfig, steered: list[_Steered], steerings, writer, shard: ShardSpec
) -> None:
    name = "whole" if shard.is_whole else f"shard-{shard.index}-of-{shard.count}"
    client = CachedClient(
        make_client(config.explainer), ResponseCache(config.run_dir / LLM_CACHE_DIR / "score-output", name)
    )
    results: dict[int, Any] = {}

    async def ask() -> None:
        try:
            async for index, result in run_requests(client, [item.request for item in steered]):
                results[index] = result
        finally:
            await client.aclose()

    try:
        asyncio.run(ask())
    except LLMFatalError as exc:
        raise UserError(f"explainer (output-side explanations): {exc}") from None
    for index, item in enumerate(steered):
        _add_output_explanation(item, results[index], steerings[item.target.hookpoint], config)
        writer.write(item.target, item.outcome, None, None)


def _add_output_explanation(item: _Steered, result: Any, steering: Steering, config: RunConfig) -> None:
    extra = item.outcome.extra
    if not isinstance(result, LLMResponse):
        extra["output_explanation_error"] = f"llm error: {result}"
        return
    answer = result.text if config.explainer.reasoning else ANSWER_MARKER + result.text
    try:
        explanation = parse_explanation(answer, truncated=result.finish_reason == "length")
    except ParseError as exc:
        extra["output_explanation_error"] = f"unparseable answer: {exc}"
        return
    extra["output_explanation"] = explanation
    item.outcome.metrics["output_explanation_score"] = steering.explanation_score(item.effect, explanation)[0]
