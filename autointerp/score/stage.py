"""Stage 3, `autointerp score`: every configured scorer on this task's share of the explained latents.

The held-out examples are rebuilt from the cache with the explain stage's seeds (so they are disjoint from
what the explainer saw). LLM scorers submit every request of every latent at once; a latent's record is
written as soon as its last answer arrives, so a killed run resumes with the latents it had not finished.
Surprisal, embedding and intervention scoring follow, each in its own phase.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autointerp.cache import CacheReader
from autointerp.config import RunConfig, dump_config
from autointerp.embedding import Embedder
from autointerp.errors import ConfigError, UserError
from autointerp.examples import LatentExamples, run_latents
from autointerp.examples.builder import TEST_ONLY_KEYS, explainer_view_digest
from autointerp.examples.selection import rng_for
from autointerp.explain.stage import EXPLANATIONS_DIR, example_builder, explain_key
from autointerp.llm import LLMClient, make_client, resolve_backend, run_requests
from autointerp.llm.types import LLMFatalError, LLMResponse
from autointerp.records import (
    RecordWriter,
    check_config,
    hookpoint_files,
    iter_records,
    read_records,
    records_file,
    remove_hookpoint,
    stale_record,
)
from autointerp.rundir import (
    CONFIG_FILE,
    WHOLE,
    ShardSpec,
    cache_dir,
    changed_keys,
    config_hash,
    write_text_atomic,
)
from autointerp.score.embedding import embedding_outcome
from autointerp.score.items import detection_items, fuzzing_items, intruder_trials
from autointerp.score.metrics import HEADLINE
from autointerp.score.prompts import PROMPT_VERSION
from autointerp.score.simulation import SimulationTask
from autointerp.score.surprisal import SurprisalTask
from autointerp.score.tasks import ClassificationTask, IntruderTask, Outcome, ScoringTask
from autointerp.texts import TokenTexts, load_tokenizer

SCORES_DIR = "scores"
CONTROL = "random_explanation"
LLM_SCORERS = ("detection", "fuzzing", "simulation", "intruder")
EXPLANATION_FREE = ("intruder",)
ProgressFn = Callable[[int, int], None]
"""Called with (latent records just written, total records this task will write)."""


@dataclass
class ScorerTally:
    scored: int = 0
    failed: int = 0
    skipped: int = 0
    already_done: int = 0
    not_explained: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class ScoreReport:
    tallies: dict[tuple[str, str], ScorerTally] = field(default_factory=dict)
    """(scorer directory name, hookpoint) -> tally."""
    phases: dict[str, float] = field(default_factory=dict)
    """Wall seconds of each phase (scorer LLM, surprisal, embedding, intervention), model loading included."""
    seconds: float = 0.0


@dataclass(frozen=True)
class Target:
    """One record to write: a scorer (or its control) on one latent, with the explanation it scores."""

    scorer: str
    control: str | None
    hookpoint: str
    latent: int
    explanation: str | None
    explanation_of: int | None

    @property
    def directory(self) -> str:
        return scorer_dir(self.scorer, self.control)


def scorer_dir(scorer: str, control: str | None) -> str:
    return f"{scorer}.{control}" if control else scorer


def run_score(
    config: RunConfig, shard: ShardSpec = WHOLE, force: bool = False, progress: ProgressFn | None = None
) -> ScoreReport:
    """Score this task's share of the selected latents with every configured scorer."""
    if not config.scorers:
        raise UserError("scorers is empty: list at least one, e.g. scorers: [detection, fuzzing, embedding]")
    plan = _Plan(config, shard, force)
    report = plan.report
    if not plan.targets:
        return report
    write_text_atomic(config.run_dir / CONFIG_FILE, dump_config(config))
    started = time.perf_counter()
    writer = _Writer(config, plan, shard, progress)
    try:
        _run_phases(config, plan, writer, shard)
    finally:
        writer.close()
    report.seconds = time.perf_counter() - started
    return report


_EXPLANATION_FIELDS = ("explanation", "error", "skipped")
_SHOWN = ("explain", "explain_negatives")
_SCORE_FIELDS = ("explanation",)
_EXAMPLE_ONLY_KEYS = TEST_ONLY_KEYS
"""Explain-key fields that only shape the test set: explanations made with other values stay valid."""


class _Plan:
    """What is left to score: targets grouped by scorer, the usable explanations, the cache readers."""

    def __init__(self, config: RunConfig, shard: ShardSpec, force: bool):
        self.config = config
        self.report = ScoreReport()
        self.readers = {
            hp: CacheReader(cache_dir(config.run_dir, hp)) for hp in config.sparse_coder.hookpoints
        }
        self.explanations = {hp: self._explanations(hp) for hp in config.sparse_coder.hookpoints}
        if not any(self.explanations.values()) and set(config.scorers) - set(EXPLANATION_FREE):
            raise UserError(
                f"no explanations in {config.run_dir / EXPLANATIONS_DIR}: run `autointerp explain` first"
            )
        self.keys: dict[tuple[str, str], dict[str, Any]] = {}
        self.targets: dict[str, list[Target]] = {}
        if force and not shard.is_whole:
            raise UserError("--force with --shard would delete other tasks' scores: run with --force alone")
        for hp in config.sparse_coder.hookpoints:
            latents = run_latents(config, self.readers[hp], hp).latents
            mine = [latent for i, latent in enumerate(latents) if shard.owns(i)]
            for scorer in config.scorers:
                controls = [None, CONTROL] if _has_control(config, scorer) else [None]
                for control in controls:
                    self._plan_scorer(hp, scorer, control, mine, force)

    def _explanations(self, hp: str) -> dict[int, dict[str, Any]]:
        """The hookpoint's explanation records, light, refused when made with another explain config."""
        directory = self.config.run_dir / EXPLANATIONS_DIR
        records = _light_explanations(directory, hp)
        key = explain_key(self.config, self.readers[hp])
        expected = config_hash(key)
        if any(r["config_hash"] != expected for r in records.values()):
            stale = stale_record(directory, hp, expected) or {}
            changed = set(changed_keys(stale.get("config_key", {}), key)) - _EXAMPLE_ONLY_KEYS
            if changed or not stale.get("config_key"):
                raise UserError(
                    f"explanations of {hp} were made with a different config ({', '.join(sorted(changed))} "
                    "changed): run `autointerp explain --force` first, or restore the config"
                )
        return records

    def _plan_scorer(self, hp: str, scorer: str, control: str | None, mine: list[int], force: bool) -> None:
        name = scorer_dir(scorer, control)
        directory = self.config.run_dir / SCORES_DIR / name
        key = score_key(self.config, self.readers[hp], scorer, control)
        self.keys[(name, hp)] = key
        done = read_records(directory, hp, _SCORE_FIELDS)
        if any(r["config_hash"] != config_hash(key) for r in done.values()):
            if not force:
                check_config(
                    {0: stale_record(directory, hp, config_hash(key)) or {}},
                    key,
                    config_hash(key),
                    f"{name} scores of {hp}",
                )
            remove_hookpoint(directory, hp)
            done = {}
        tally = self.report.tallies.setdefault((name, hp), ScorerTally())
        swap = _control_explanations(self.explanations[hp], self.config.seed, hp) if control else {}
        for latent in mine:
            target = self._target(hp, scorer, control, latent, swap)
            if target is None:
                tally.not_explained += 1
            elif latent in done and done[latent]["explanation"] == target.explanation:
                tally.already_done += 1
            else:
                self.targets.setdefault(scorer, []).append(target)

    def _target(self, hp: str, scorer: str, control: str | None, latent: int, swap: dict) -> Target | None:
        record = self.explanations[hp].get(latent)
        if scorer in EXPLANATION_FREE:
            return Target(scorer, control, hp, latent, None, None)
        if record is None:
            return None
        if control:
            other = swap.get(latent)
            explanation = self.explanations[hp][other]["explanation"] if other is not None else None
            return Target(scorer, control, hp, latent, explanation, other)
        return Target(scorer, control, hp, latent, record["explanation"], latent)

    def explanation_record(self, target: Target) -> dict[str, Any] | None:
        return self.explanations[target.hookpoint].get(target.latent)


def _light_explanations(directory: Path, hookpoint: str) -> dict[int, dict[str, Any]]:
    """Explanation records without their examples: the windows shown are kept as a digest."""
    records = {}
    for path in hookpoint_files(directory, hookpoint):
        for record in iter_records(path):
            light = {name: record.get(name) for name in _EXPLANATION_FIELDS}
            examples = record.get("examples") or {}
            shown = [[(e["sequence"], e["start"]) for e in examples.get(k) or []] for k in _SHOWN]
            light["shown"] = explainer_view_digest(*shown)
            records[int(record["latent"])] = light | {"config_hash": record.get("config_hash")}
    return records


def _has_control(config: RunConfig, scorer: str) -> bool:
    return config.controls.random_explanation and scorer not in EXPLANATION_FREE + ("intervention",)


def _control_explanations(records: dict[int, dict[str, Any]], seed: int, hookpoint: str) -> dict[int, int]:
    """Each explained latent -> another explained latent whose explanation it is scored with (a seeded
    derangement: nobody keeps their own)."""
    explained = sorted(latent for latent, r in records.items() if r.get("explanation"))
    if len(explained) < 2:
        return {}
    order = rng_for(seed, hookpoint, "control-explanations").permutation(len(explained))
    shifted = np.roll(order, 1)
    return {explained[a]: explained[b] for a, b in zip(order, shifted, strict=True)}


def score_key(config: RunConfig, reader: CacheReader, scorer: str, control: str | None) -> dict[str, Any]:
    """What defines a score record: the explanations it scores (through their key) and the scorer's setup."""
    settings: dict[str, Any] = {"prompt_version": PROMPT_VERSION}
    if scorer in LLM_SCORERS:
        scorer_cfg = scorer_llm_config(config)
        settings |= {"backend": resolve_backend(scorer_cfg.backend), "model": scorer_cfg.model}
    if scorer in ("detection", "fuzzing"):
        settings["examples_per_prompt"] = config.scorer.examples_per_prompt
        if config.scorer.examples_per_prompt > 1:
            settings["max_tokens"] = config.scorer.max_tokens
    if scorer == "fuzzing":
        settings["fuzzing_mode"] = config.scorer.fuzzing_mode
    if scorer == "simulation":
        settings["simulation_logprobs"] = config.scorer.simulation_logprobs
    if scorer == "intruder":
        settings["intruder_size"] = config.scorer.intruder_size
    if scorer == "embedding":
        settings["embedding_model"] = config.embedding.model
    if scorer == "surprisal":
        settings["surprisal"] = config.to_dict()["surprisal"] | {"dtype": config.model.dtype}
    if scorer == "intervention":
        settings["intervention"] = config.to_dict()["intervention"] | {"dtype": config.model.dtype}
    return {
        "explanations": config_hash(explain_key(config, reader)),
        "scorer": scorer,
        "control": control,
        "settings": settings,
    }


def scorer_llm_config(config: RunConfig) -> Any:
    """The explainer's LLM settings with the scorer's backend, model and endpoint where given."""
    scorer = config.scorer
    same_backend = scorer.backend is None or scorer.backend == config.explainer.backend
    backend = scorer.backend or config.explainer.backend
    base_url = scorer.base_url or (config.explainer.base_url if same_backend else None)
    model = scorer.model or config.explainer.model
    if backend == "openai" and not base_url:
        raise ConfigError(
            "scorer.base_url", "is required for the openai backend, e.g. http://127.0.0.1:8000/v1"
        )
    if not model:
        raise ConfigError(
            "scorer.model", "is required (or explainer.model): a hub id, folder, .gguf or package:NAME"
        )
    return dataclasses.replace(
        config.explainer, backend=backend, model=model, base_url=base_url, temperature=0.0
    )


class _Writer:
    """Per (scorer directory, hookpoint) record writers, tallies and progress."""

    def __init__(self, config: RunConfig, plan: _Plan, shard: ShardSpec, progress: ProgressFn | None):
        self.config, self.plan, self.shard, self.progress = config, plan, shard, progress
        self.total = sum(len(targets) for targets in plan.targets.values())
        self.writers: dict[tuple[str, str], RecordWriter] = {}

    def write(self, target: Target, outcome: Outcome | None, skipped: str | None, usage: dict | None) -> None:
        name = target.directory
        tally = self.plan.report.tallies[(name, target.hookpoint)]
        error = outcome.error if outcome else None
        metrics = outcome.metrics if outcome else {}
        headline = metrics.get(HEADLINE[target.scorer])
        if outcome and not error and not skipped and headline is None:
            error = metrics.get("undefined") or f"{HEADLINE[target.scorer]} is undefined for this latent"
        if skipped:
            tally.skipped += 1
        elif error:
            tally.failed += 1
        else:
            tally.scored += 1
        if usage:
            tally.prompt_tokens += usage["prompt_tokens"]
            tally.cached_tokens += usage["cached_tokens"]
            tally.completion_tokens += usage["completion_tokens"]
        key = self.plan.keys[(name, target.hookpoint)]
        record = {
            "latent": target.latent,
            "hookpoint": target.hookpoint,
            "scorer": target.scorer,
            "control": target.control,
            "explanation": target.explanation,
            "explanation_of": target.explanation_of,
            "score": None if error or skipped else headline,
            "metrics": metrics,
            "examples": outcome.examples if outcome else [],
            "usage": usage,
            "error": None if skipped else error,
            "skipped": skipped,
            "config_hash": config_hash(key),
            "config_key": key,
        }
        record |= outcome.extra if outcome else {}
        self._writer(name, target.hookpoint).write(record)
        if self.progress:
            self.progress(1, self.total)

    def _writer(self, name: str, hookpoint: str) -> RecordWriter:
        if (name, hookpoint) not in self.writers:
            path = records_file(self.config.run_dir / SCORES_DIR / name, hookpoint, self.shard)
            self.writers[(name, hookpoint)] = RecordWriter(path)
        return self.writers[(name, hookpoint)]

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def _run_phases(config: RunConfig, plan: _Plan, writer: _Writer, shard: ShardSpec) -> None:
    texts = TokenTexts(load_tokenizer(config.model.path))
    examples = _ExampleSource(config, plan, texts)
    phases = plan.report.phases
    llm_targets = [t for scorer in LLM_SCORERS for t in plan.targets.get(scorer, [])]
    llm_targets.sort(key=lambda t: (t.hookpoint, t.latent))  # consecutive targets share their examples
    if llm_targets:
        started = time.perf_counter()
        client = make_client(scorer_llm_config(config))
        _run_llm_phase(client, llm_targets, examples, writer, "scorer")
        phases["scorer_llm"] = time.perf_counter() - started
    if plan.targets.get("surprisal"):
        started = time.perf_counter()
        surprisal = dataclasses.replace(
            config.explainer,
            backend=config.surprisal.backend,
            model=config.surprisal.model or config.model.path,
            base_url=config.explainer.base_url if config.surprisal.backend == "openai" else None,
        )
        targets = sorted(plan.targets["surprisal"], key=lambda t: (t.hookpoint, t.latent))
        _run_llm_phase(make_client(surprisal), targets, examples, writer, "surprisal")
        phases["surprisal"] = time.perf_counter() - started
    if plan.targets.get("embedding"):
        started = time.perf_counter()
        targets = sorted(plan.targets["embedding"], key=lambda t: (t.hookpoint, t.latent))
        _run_embedding(config, targets, examples, writer)
        phases["embedding"] = time.perf_counter() - started
    if plan.targets.get("intervention"):
        from autointerp.score.intervention_phase import run_intervention

        started = time.perf_counter()
        run_intervention(config, plan.targets["intervention"], examples, writer, shard)
        phases["intervention"] = time.perf_counter() - started


class _ExampleSource:
    """Rebuilds a latent's examples with the explain stage's seeds; one builder per hookpoint."""

    def __init__(self, config: RunConfig, plan: _Plan, texts: TokenTexts):
        self.config, self.plan, self.texts = config, plan, texts
        self.builders: dict[str, Any] = {}
        self.last: tuple[tuple[str, int], LatentExamples] | None = None

    def get(self, hookpoint: str, latent: int) -> LatentExamples:
        if self.last and self.last[0] == (hookpoint, latent):
            return self.last[1]
        if hookpoint not in self.builders:
            reader = self.plan.readers[hookpoint]
            self.builders[hookpoint] = example_builder(self.config, hookpoint, reader, self.texts)
        examples = self.builders[hookpoint].build(latent)
        self.last = ((hookpoint, latent), examples)
        return examples

    def scorable(self, target: Target, writer: _Writer) -> LatentExamples | None:
        """The target's examples, or None once the reason it cannot be scored is recorded."""
        examples = self.get(target.hookpoint, target.latent)
        skipped, error = skip_reason(target, examples, self.plan)
        if skipped or error:
            writer.write(target, Outcome(error=error) if error else None, skipped, None)
            return None
        return examples

    def rng(self, target: Target, purpose: str) -> np.random.Generator:
        """Seeded by scorer, not by control: a control sees the same items, only the explanation differs."""
        return rng_for(self.config.seed, target.hookpoint, target.latent, target.scorer, purpose)


def skip_reason(target: Target, examples: LatentExamples, plan: _Plan) -> tuple[str | None, str | None]:
    """(skipped, error) for a target that cannot be scored, else (None, None)."""
    if examples.skipped:
        return examples.skipped, None
    if target.scorer in EXPLANATION_FREE:
        return None, None
    record = plan.explanation_record(target)
    if record and record.get("skipped"):
        return f"not explained: {record['skipped']}", None
    if target.control and target.explanation_of is None:
        return "no other explained latent to borrow an explanation from", None
    if not target.explanation:
        return None, f"no explanation: {(record or {}).get('error') or 'the explain stage gave none'}"
    if record and not target.control and record["shown"] != examples.explainer_view_digest():
        return None, (
            "the explainer saw other examples than this config draws (examples or seed changed since "
            "explain): rerun `autointerp explain --force` so test examples stay disjoint from them"
        )
    return None, None


def _make_task(
    config: RunConfig, target: Target, examples: LatentExamples, source: _ExampleSource
) -> ScoringTask:
    texts, explanation = source.texts, target.explanation or ""
    if target.scorer == "detection":
        items = detection_items(examples, texts)
        return _classification(config, target, explanation, items, source)
    if target.scorer == "fuzzing":
        rng, threshold = source.rng(target, "fuzz"), config.explainer.highlight_threshold
        items = fuzzing_items(examples, texts, config.scorer.fuzzing_mode, rng, threshold)
        return _classification(config, target, explanation, items, source)
    if target.scorer == "simulation":
        return SimulationTask(
            explanation, detection_items(examples, texts), texts, config.scorer.simulation_logprobs
        )
    if target.scorer == "intruder":
        rng, threshold = source.rng(target, "intruder"), config.explainer.highlight_threshold
        trials = intruder_trials(examples, texts, config.scorer.intruder_size, rng, threshold)
        return IntruderTask(trials)
    if target.scorer == "surprisal":
        items = detection_items(examples, texts)
        return SurprisalTask(explanation, items, config.surprisal.neutral_prefix, texts)
    raise ValueError(f"{target.scorer} is not an LLM scorer")


def _classification(config, target, explanation, items, source) -> ClassificationTask:
    return ClassificationTask(
        target.scorer,
        explanation,
        items,
        config.scorer.examples_per_prompt,
        source.rng(target, "batches"),
        config.scorer.max_tokens,
    )


@dataclass
class _Pending:
    target: Target
    task: ScoringTask
    results: list[Any]
    remaining: int


def _run_llm_phase(
    client: LLMClient, targets: list[Target], source: _ExampleSource, writer: _Writer, role: str
) -> None:
    try:
        asyncio.run(_llm_phase(client, targets, source, writer))
    except LLMFatalError as exc:
        raise UserError(f"{role}: {exc}") from None


async def _llm_phase(
    client: LLMClient, targets: list[Target], source: _ExampleSource, writer: _Writer
) -> None:
    owners: dict[int, tuple[_Pending, int]] = {}  # request index -> its latent's task, while in flight
    indices = itertools.count()

    def requests() -> Iterator[Any]:
        for target in targets:
            examples = source.scorable(target, writer)
            if examples is None:
                continue
            try:
                task = _make_task(source.config, target, examples, source)
            except Exception as exc:  # recorded for this latent; the run goes on
                writer.write(target, Outcome(error=f"internal error: {exc!r}"), None, None)
                continue
            if not task.requests:
                writer.write(target, _finish(task, []), None, None)
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
                outcome = _finish(pending.task, pending.results)
                writer.write(pending.target, outcome, None, _usage(pending.results))
    finally:
        await client.aclose()


def _finish(task: ScoringTask, results: list[Any]) -> Outcome:
    try:
        return task.finish(results)
    except Exception as exc:  # recorded for this latent; the run goes on
        return Outcome(error=f"internal error: {exc!r}")


def _usage(results: list[Any]) -> dict[str, Any]:
    responses = [r for r in results if isinstance(r, LLMResponse)]
    return {
        "requests": len(results),
        "failed_requests": len(results) - len(responses),
        "prompt_tokens": sum(r.prompt_tokens for r in responses),
        "cached_tokens": sum(r.cached_tokens for r in responses),
        "completion_tokens": sum(r.completion_tokens for r in responses),
        "seconds": round(sum(r.latency for r in responses), 4),
    }


def _run_embedding(config: RunConfig, targets: list[Target], source: _ExampleSource, writer: _Writer) -> None:
    embed = Embedder(config.embedding.model, batch_size=config.embedding.batch_size)
    for target in targets:
        examples = source.scorable(target, writer)
        if examples is None:
            continue
        items = detection_items(examples, source.texts)
        try:
            outcome = embedding_outcome(embed, target.explanation or "", items)
        except Exception as exc:  # recorded for this latent; the run goes on
            outcome = Outcome(error=f"internal error: {exc!r}")
        writer.write(target, outcome, None, None)
