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
from autointerp.llm import make_client
from autointerp.llm.types import LLMError, LLMFatalError, LLMRequest, LLMResponse, SamplingParams
from autointerp.rundir import ShardSpec
from autointerp.score.intervention import Steering, SteeringEffect, output_explainer_messages
from autointerp.score.tasks import Outcome
from autointerp.subject import load_subject


@dataclass
class _Steered:
    target: Any
    effect: SteeringEffect
    outcome: Outcome


def run_intervention(config: RunConfig, targets: list, source: Any, writer: Any, shard: ShardSpec) -> None:
    """Steer and score every target, each record written as soon as it is complete (with output-side
    explanations: when the explainer's answer for that latent arrives)."""
    subject = load_subject(config.model)
    coders = load_coders(config.sparse_coder, subject.base_model)
    client = make_client(config.explainer) if config.intervention.output_explanations else None
    fatal: list[str] = []
    asyncio.run(_intervene(config, targets, source, writer, subject, coders, client, fatal))
    if fatal:
        raise UserError(
            f"explainer (output-side explanations): {fatal[0]}; the intervention scores are recorded "
            "without them: fix the explainer and rerun with --force to add them"
        )


async def _intervene(config, targets, source, writer, subject, coders, client, fatal: list[str]) -> None:
    try:
        await _steer_all(config, targets, source, writer, subject, coders, client, fatal)
    finally:
        if client is not None:
            await client.aclose()


async def _steer_all(config, targets, source, writer, subject, coders, client, fatal: list[str]) -> None:
    steerings: dict[str, Steering] = {}
    asked: set[asyncio.Task] = set()
    for target in targets:
        examples = source.scorable(target, writer)
        if examples is None:
            continue
        if target.hookpoint not in steerings:
            steerings[target.hookpoint] = _steering(config, subject, coders[target.hookpoint], source)
        steering = steerings[target.hookpoint]
        try:
            item = _score_latent(config, steering, target, source)
        except Exception as exc:  # recorded for this latent; the run goes on
            writer.write(target, Outcome(error=f"internal error: {exc!r}"), None, None)
            continue
        if client is None:
            writer.write(target, item.outcome, None, None)
            continue
        task = asyncio.ensure_future(_explain_output(config, client, item, steering, source, writer, fatal))
        asked.add(task)
        task.add_done_callback(asked.discard)
        await asyncio.sleep(0)  # let finished answers be written while the next latent is steered
    if asked:
        await asyncio.gather(*asked)


async def _explain_output(config, client, item: _Steered, steering: Steering, source, writer, fatal) -> None:
    """Ask the explainer for the output-side explanation of one steered latent, score it, write the record."""
    messages = output_explainer_messages(
        item.effect, source.texts.text, _prompt_texts(steering, source), config.explainer.reasoning
    )
    if fatal:
        item.outcome.extra["output_explanation_error"] = f"explainer unavailable: {fatal[0]}"
    else:
        try:
            result = await client.generate(LLMRequest(tuple(messages), _output_params(config)))
            _add_output_explanation(item, result, steering, config)
        except LLMFatalError as exc:
            fatal.append(str(exc))
            item.outcome.extra["output_explanation_error"] = f"explainer unavailable: {exc}"
        except LLMError as exc:
            item.outcome.extra["output_explanation_error"] = f"llm error: {exc}"
    writer.write(item.target, item.outcome, None, None)


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
    extra = {
        "promoted": promoted,
        "control_latent": other if config.intervention.random_latent_control else None,
    }
    return _Steered(target, effect, Outcome(metrics, examples, extra=extra))


def _output_params(config: RunConfig) -> SamplingParams:
    stop = (NEW_TURN,) if config.explainer.reasoning else ("\n",)
    return SamplingParams(
        temperature=config.explainer.temperature, max_tokens=config.explainer.max_tokens, stop=stop
    )


def _add_output_explanation(
    item: _Steered, result: LLMResponse, steering: Steering, config: RunConfig
) -> None:
    extra = item.outcome.extra
    answer = result.text if config.explainer.reasoning else ANSWER_MARKER + result.text
    try:
        explanation = parse_explanation(answer, truncated=result.finish_reason == "length")
    except ParseError as exc:
        extra["output_explanation_error"] = f"unparseable answer: {exc}"
        return
    extra["output_explanation"] = explanation
    item.outcome.metrics["output_explanation_score"] = steering.explanation_score(item.effect, explanation)[0]
