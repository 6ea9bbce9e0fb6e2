"""The phases of a score run, each loading what its scorers need once: the scorer LLM, the surprisal base
LM, the embedding model, the steered subject model. LLM phases submit every request of every latent at
once; a latent's record is written as soon as its last answer arrives."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass

from autointerp.cache import CacheReader
from autointerp.config import RunConfig
from autointerp.embedding import Embedder
from autointerp.errors import UserError
from autointerp.examples import ExampleBuilder, LatentExamples
from autointerp.examples.recipe import example_builder
from autointerp.llm import LLMClient, make_client, run_requests
from autointerp.llm.types import LLMFatalError, LLMRequest, LLMResponse
from autointerp.rundir import ShardSpec
from autointerp.score.base import Outcome, Result, ScoringTask, Target, TaskInputs
from autointerp.score.plan import Plan
from autointerp.score.registry import PHASES, get_scorer
from autointerp.score.writer import ScoreWriter
from autointerp.texts import TokenTexts, load_tokenizer


def run_phases(config: RunConfig, plan: Plan, writer: ScoreWriter, shard: ShardSpec) -> None:
    """Run every phase that has targets, in order; each phase's wall time goes into the report."""
    source = ExampleSource(config, plan, TokenTexts(load_tokenizer(config.model.path)))
    for phase in PHASES:
        targets = plan.targets_of(phase)
        if not targets:
            continue
        started = time.perf_counter()
        if phase == "scorer_llm":
            run_llm_phase(make_client(config.scorer_llm), targets, source, writer, "scorer")
        elif phase == "surprisal":
            run_llm_phase(make_client(config.surprisal_llm), targets, source, writer, "surprisal")
        elif phase == "embedding":
            run_embedding_phase(config, targets, source, writer)
        else:
            from autointerp.score.intervention_phase import run_intervention

            run_intervention(config, targets, source, writer, shard)
        plan.report.phases[phase] = time.perf_counter() - started


class ExampleSource:
    """Rebuilds a latent's examples with the explain stage's recipe and seeds; one builder per hookpoint."""

    def __init__(self, config: RunConfig, plan: Plan, texts: TokenTexts):
        self.config, self.plan, self.texts = config, plan, texts
        self.readers: dict[str, CacheReader] = plan.readers
        self.builders: dict[str, ExampleBuilder] = {}
        self.last: tuple[tuple[str, int], LatentExamples] | None = None

    def get(self, hookpoint: str, latent: int) -> LatentExamples:
        if self.last and self.last[0] == (hookpoint, latent):
            return self.last[1]
        if hookpoint not in self.builders:
            reader = self.readers[hookpoint]
            self.builders[hookpoint] = example_builder(self.config, hookpoint, reader, self.texts)
        examples = self.builders[hookpoint].build(latent)
        self.last = ((hookpoint, latent), examples)
        return examples

    def scorable(self, target: Target, writer: ScoreWriter) -> LatentExamples | None:
        """The target's examples, or None once the reason it cannot be scored is recorded."""
        examples = self.get(target.hookpoint, target.latent)
        skipped, error = skip_reason(target, examples, self.plan)
        if skipped:
            writer.skip(target, skipped)
        elif error:
            writer.fail(target, error)
        else:
            return examples
        return None

    def inputs(self, target: Target, examples: LatentExamples) -> TaskInputs:
        return TaskInputs(self.config, target, examples, self.texts)


def skip_reason(target: Target, examples: LatentExamples, plan: Plan) -> tuple[str | None, str | None]:
    """(skipped, error) for a target that cannot be scored, else (None, None)."""
    if examples.skipped:
        return examples.skipped, None
    if not get_scorer(target.scorer).needs_explanation:
        return None, None
    record = plan.explanation_record(target)
    if record and record.get("skipped"):
        return f"not explained: {record['skipped']}", None
    if target.control and target.explanation_of is None:
        return "no other explained latent to borrow an explanation from", None
    if not target.explanation:
        return None, f"no explanation: {(record or {}).get('error') or 'the explain stage gave none'}"
    if (
        record
        and not target.control
        and not record.get("source")  # imported: the explainer's examples are unknown
        and record["shown"] != examples.explainer_view_digest()
    ):
        return None, (
            "the explainer saw other examples than this config draws (examples or seed changed since "
            "explain): rerun `autointerp explain --force` so test examples stay disjoint from them"
        )
    return None, None


@dataclass
class _Pending:
    target: Target
    task: ScoringTask
    results: list[Result | None]
    remaining: int


def run_llm_phase(
    client: LLMClient, targets: list[Target], source: ExampleSource, writer: ScoreWriter, role: str
) -> None:
    """Every target's requests through one client; a fatal client error stops the stage, naming the role."""
    try:
        asyncio.run(_llm_phase(client, targets, source, writer))
    except LLMFatalError as exc:
        raise UserError(f"{role}: {exc}") from None


async def _llm_phase(
    client: LLMClient, targets: list[Target], source: ExampleSource, writer: ScoreWriter
) -> None:
    owners: dict[int, tuple[_Pending, int]] = {}  # request index -> its latent's task, while in flight
    indices = itertools.count()

    def requests() -> Iterator[LLMRequest]:
        for target in targets:
            examples = source.scorable(target, writer)
            if examples is None:
                continue
            build = get_scorer(target.scorer).task
            assert build is not None  # the registry refuses LLM-phase scorers without a task
            try:
                task = build(source.inputs(target, examples))
            except Exception as exc:  # recorded for this latent; the run goes on
                writer.fail(target, f"internal error: {exc!r}", "internal")
                continue
            if not task.requests:
                writer.write(target, _finish(task, []))
                continue
            pending = _Pending(target, task, [None] * len(task.requests), len(task.requests))
            for position, request in enumerate(task.requests):
                owners[next(indices)] = (pending, position)
                yield request

    try:
        async for index, result in run_requests(client, requests()):
            pending, position = owners.pop(index)
            pending.results[position] = result
            pending.remaining -= 1
            if pending.remaining == 0:
                results = [r for r in pending.results if r is not None]
                writer.write(pending.target, _finish(pending.task, results), _usage(results))
    finally:
        await client.aclose()


def _finish(task: ScoringTask, results: list[Result]) -> Outcome:
    try:
        return task.finish(results)
    except Exception as exc:  # recorded for this latent; the run goes on
        return Outcome(error=f"internal error: {exc!r}")


def _usage(results: list[Result]) -> dict[str, int | float]:
    responses = [r for r in results if isinstance(r, LLMResponse)]
    return {
        "requests": len(results),
        "failed_requests": len(results) - len(responses),
        "prompt_tokens": sum(r.prompt_tokens for r in responses),
        "cached_tokens": sum(r.cached_tokens for r in responses),
        "completion_tokens": sum(r.completion_tokens for r in responses),
        "seconds": round(sum(r.latency for r in responses), 4),
    }


def run_embedding_phase(
    config: RunConfig, targets: list[Target], source: ExampleSource, writer: ScoreWriter
) -> None:
    """Every target scored with one embedding model."""
    embedder = Embedder(config.embedding.model, batch_size=config.embedding.batch_size)
    for target in targets:
        examples = source.scorable(target, writer)
        if examples is None:
            continue
        embed = get_scorer(target.scorer).embed
        assert embed is not None  # the registry refuses embedding-phase scorers without one
        try:
            outcome = embed(embedder, source.inputs(target, examples))
        except Exception as exc:  # recorded for this latent; the run goes on
            outcome = Outcome(error=f"internal error: {exc!r}")
        writer.write(target, outcome)
