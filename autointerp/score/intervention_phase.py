"""The intervention scorer's phase of `autointerp score`: steer each latent, score its explanation against
the steered text, a random-latent control, and (optionally) an output-side explanation from the explainer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from autointerp.coders import load_coders
from autointerp.coders.base import SparseCoder
from autointerp.config import RunConfig
from autointerp.errors import UserError
from autointerp.examples.selection import rng_for
from autointerp.explain.explainer import Explainer, ParseError
from autointerp.llm import LLMClient, make_client
from autointerp.llm.types import LLMError, LLMFatalError, LLMRequest, LLMResponse
from autointerp.rundir import ShardSpec
from autointerp.score.base import Outcome, Target
from autointerp.score.intervention import Steering, SteeringEffect
from autointerp.score.phases import ExampleSource
from autointerp.score.writer import ScoreWriter
from autointerp.subject import Subject, load_subject

KL_MISS_FACTOR = 1.5
"""A latent whose KL is off its target by more than this factor, either way, is flagged `kl_missed`."""


def kl_missed(kl: float, target: float) -> bool:
    """Whether the strength search ended far from the target KL (a capped or non-monotone latent)."""
    return not target / KL_MISS_FACTOR <= kl <= target * KL_MISS_FACTOR


@dataclass(frozen=True)
class _Steerings:
    score: Steering
    """The scored prompts: the explanation's likelihood after their clean vs steered continuations."""
    explain: Steering | None
    """Other prompts, shown to the output-side explainer (None without output explanations)."""


@dataclass
class _Steered:
    target: Target
    effect: SteeringEffect
    outcome: Outcome


def run_intervention(
    config: RunConfig, targets: list[Target], source: ExampleSource, writer: ScoreWriter, shard: ShardSpec
) -> None:
    """Steer and score every target, each record written as soon as it is complete (with output-side
    explanations: when the explainer's answer for that latent arrives)."""
    run = _InterventionRun(config, source, writer)
    asyncio.run(run.all(targets))
    if run.fatal:
        raise UserError(
            f"explainer (output-side explanations): {run.fatal}; the intervention scores are recorded "
            "without them: fix the explainer and rerun with --force to add them"
        )


class _InterventionRun:
    """The subject model, its coders and steerings, and the output-side explainer of one phase."""

    def __init__(self, config: RunConfig, source: ExampleSource, writer: ScoreWriter):
        self.config, self.source, self.writer = config, source, writer
        self.subject: Subject = load_subject(config.model)
        self.coders: dict[str, SparseCoder] = load_coders(config.sparse_coder, self.subject.base_model)
        self.steerings: dict[str, _Steerings] = {}
        self.explainer = Explainer(config.explainer)
        self.client: LLMClient | None = (
            make_client(config.explainer_llm) if config.intervention.output_explanations else None
        )
        self.fatal: str | None = None
        """The explainer's fatal error, once it has had one (later latents are not asked)."""

    async def all(self, targets: list[Target]) -> None:
        try:
            await self._steer_all(targets)
        finally:
            if self.client is not None:
                await self.client.aclose()

    async def _steer_all(self, targets: list[Target]) -> None:
        asked: set[asyncio.Task] = set()
        for target in targets:
            examples = self.source.scorable(target, self.writer)
            if examples is None:
                continue
            steerings = self._steerings(target.hookpoint)
            try:
                item = self._score_latent(steerings.score, target)
            except Exception as exc:  # recorded for this latent; the run goes on
                self.writer.fail(target, f"internal error: {exc!r}", "internal")
                continue
            if self.client is None:
                self.writer.write(target, item.outcome)
                continue
            task = asyncio.ensure_future(self._explain_output(self.client, item, steerings))
            asked.add(task)
            task.add_done_callback(asked.discard)
            await asyncio.sleep(0)  # let finished answers be written while the next latent is steered
        if asked:
            await asyncio.gather(*asked)

    def _steerings(self, hookpoint: str) -> _Steerings:
        """The hookpoint's scored prompts and, apart from them, the output-side explainer's prompts."""
        if hookpoint in self.steerings:
            return self.steerings[hookpoint]
        coder = self.coders[hookpoint]
        directions = coder.decoder_directions()
        if directions is None:
            raise UserError(f"intervention: the coder at {hookpoint} has no decoder directions to steer with")
        cfg = self.config.intervention
        tokens = self.source.readers[hookpoint].tokens()
        n_explain = cfg.n_explain_prompts if self.client is not None else 0
        if tokens.shape[0] < cfg.n_prompts + n_explain:
            raise UserError(
                f"intervention: the cache of {hookpoint} holds {tokens.shape[0]} sequences, fewer than "
                f"intervention.n_prompts + n_explain_prompts = {cfg.n_prompts + n_explain}: lower them"
            )
        rng = rng_for(self.config.seed, hookpoint, "intervention-prompts")
        rows = rng.choice(tokens.shape[0], size=cfg.n_prompts + n_explain, replace=False)
        scored, explained = np.sort(rows[: cfg.n_prompts]), np.sort(rows[cfg.n_prompts :])
        prompts = tokens[:, : cfg.prompt_tokens].long()
        score = Steering(self.subject, coder.module_path, directions, cfg, prompts[torch.as_tensor(scored)])
        explain = None
        if n_explain:
            explain_prompts = prompts[torch.as_tensor(explained)]
            explain = Steering(
                self.subject, coder.module_path, directions, cfg, explain_prompts, score.mean_norm
            )
        self.steerings[hookpoint] = _Steerings(score, explain)
        return self.steerings[hookpoint]

    def _score_latent(self, steering: Steering, target: Target) -> _Steered:
        explanation = target.explanation or ""
        effect = steering.effect(target.latent)
        score, per_prompt = steering.explanation_score(effect, explanation)
        rng = rng_for(self.config.seed, target.hookpoint, target.latent, "intervention-control")
        other = int(rng.integers(steering.directions.shape[0] - 1))
        other += other >= target.latent
        control = steering.explanation_score(steering.effect(other), explanation)[0]
        metrics: dict[str, Any] = {
            "score_gain": score - control,
            "score": score,
            "control_score": control,
            "kl": effect.kl,
            "strength": effect.strength,
        }
        text = self.source.texts.text
        examples = [
            {
                "kind": "steered",
                "prompt": text(prompt.tolist()),
                "clean": text(clean),
                "steered": text(steered),
                "value": delta,
            }
            for prompt, clean, steered, delta in zip(
                steering.prompts, effect.clean, effect.steered, per_prompt, strict=True
            )
        ]
        promoted = [{"token": text([token]), "rise": rise} for token, rise in effect.promoted]
        flags = ["kl_missed"] if kl_missed(effect.kl, self.config.intervention.target_kl) else []
        extra = {"promoted": promoted, "control_latent": other}
        return _Steered(target, effect, Outcome(metrics, examples, extra=extra, flags=flags))

    async def _explain_output(self, client: LLMClient, item: _Steered, steerings: _Steerings) -> None:
        """Ask the explainer what the latent makes the model write, from the steered continuations of the
        explain prompts (never the scored ones); score its answer on the scored prompts; write the record."""
        assert steerings.explain is not None  # made whenever there is an explainer client
        shown = steerings.explain.effect(item.target.latent, strength=item.effect.strength)
        text = self.source.texts.text
        prompts = [text(row.tolist()) for row in steerings.explain.prompts]
        continuations = [text(tokens) for tokens in shown.steered]
        request = self.explainer.output_request(
            prompts, continuations, [text([token]) for token, _ in shown.promoted]
        )
        extra = item.outcome.extra
        extra["output_explainer_shown"] = [
            {"prompt": prompt, "steered": steered}
            for prompt, steered in zip(prompts, continuations, strict=True)
        ]
        if self.fatal:
            extra["output_explanation_error"] = f"explainer unavailable: {self.fatal}"
        else:
            try:
                result = await client.generate(request)
                self._add_output_explanation(item, request, result, steerings.score)
            except LLMFatalError as exc:
                self.fatal = self.fatal or str(exc)
                extra["output_explanation_error"] = f"explainer unavailable: {exc}"
            except LLMError as exc:
                extra["output_explanation_error"] = f"llm error: {exc}"
        self.writer.write(item.target, item.outcome)

    def _add_output_explanation(
        self, item: _Steered, request: LLMRequest, result: LLMResponse, steering: Steering
    ) -> None:
        try:
            explanation = self.explainer.parse(request, result)
        except ParseError as exc:
            item.outcome.extra["output_explanation_error"] = f"unparseable answer: {exc}"
            return
        item.outcome.extra["output_explanation"] = explanation
        score = steering.explanation_score(item.effect, explanation)[0]
        item.outcome.metrics["output_explanation_score"] = score
