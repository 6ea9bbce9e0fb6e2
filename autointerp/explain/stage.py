"""Stage 2, `autointerp explain`: one explanation per selected latent, from an explainer LLM.

Examples are drawn from the cache (seeded, explainer and test sets disjoint), rendered into prompts and
submitted to the LLM all together (the backend batches or throttles). Each answer is written as soon as it
arrives, so a killed run resumes with the latents it had not finished. Failures are recorded per latent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from autointerp.cache import CacheReader
from autointerp.cache.inputs import refuse_other_cache
from autointerp.config import RunConfig, dump_config
from autointerp.errors import UserError
from autointerp.examples import ExampleBuilder, LatentExamples, run_latents
from autointerp.examples.compact import pack
from autointerp.examples.recipe import example_builder
from autointerp.explain.explainer import Explainer, ParseError
from autointerp.heap import frozen_heap
from autointerp.llm import CachedClient, ResponseCache, make_client, resolve_backend, run_requests
from autointerp.llm.types import LLMError, LLMFatalError, LLMRequest, LLMResponse
from autointerp.records import RecordWriter, check_config, read_records, records_file, remove_hookpoint
from autointerp.rundir import (
    CONFIG_FILE,
    EXPLANATIONS_DIR,
    LLM_CACHE_DIR,
    WHOLE,
    ShardSpec,
    cache_dir,
    config_hash,
    explain_stats_file_name,
    write_json_atomic,
    write_text_atomic,
)
from autointerp.texts import TokenTexts, load_tokenizer

ProgressFn = Callable[[int, int, int], None]
"""Called with (latents just finished, total latents this task will do, LLM tokens they took)."""


@dataclass
class HookpointTally:
    explained: int = 0
    failed: int = 0
    skipped: int = 0
    already_done: int = 0
    not_eligible: int = 0
    """Latents the sample passed over: fewer activating windows than latents.min_activations."""
    retried: int = 0
    """Finished latents redone because they had failed (transient failures, or any with retry_unparseable)."""
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0


_RESUME_FIELDS = ("error_kind",)
"""What a rerun reads of each explanation record to know what is done (not the examples)."""


@dataclass
class ExplainReport:
    tallies: dict[str, HookpointTally] = field(default_factory=dict)
    seconds: float = 0.0
    cache_hits: int = 0


@dataclass
class _Job:
    hookpoint: str
    examples: LatentExamples
    request: LLMRequest | None


def run_explain(
    config: RunConfig,
    shard: ShardSpec = WHOLE,
    force: bool = False,
    progress: ProgressFn | None = None,
    retry_unparseable: bool = False,
) -> ExplainReport:
    """Explain this task's share of the selected latents of every hookpoint.

    Latents recorded before are kept, except those whose request failed for a transient reason (redone);
    with `retry_unparseable` also those whose answer could not be read or whose request was rejected.
    """
    if not config.explainer.model:
        raise config.explainer_llm.missing("model", "a hub id, local folder, .gguf file or package:NAME")
    run = _ExplainRun(config, shard, progress, retry_unparseable)
    todo = run.plan(force)
    if not any(todo.values()):
        return run.report
    write_text_atomic(config.run_dir / CONFIG_FILE, dump_config(config))
    started = time.perf_counter()  # the engine's start is part of what the stage costs
    try:
        with frozen_heap():
            asyncio.run(run.explain(todo))
    except LLMFatalError as exc:
        raise UserError(f"explainer: {exc}") from None
    run.report.seconds = time.perf_counter() - started
    run.write_stats()
    return run.report


class _ExplainRun:
    """One task's explain run: what is left to do, the LLM client, the record writers and the tallies."""

    def __init__(
        self, config: RunConfig, shard: ShardSpec, progress: ProgressFn | None, retry_unparseable: bool
    ):
        self.config, self.shard, self.progress = config, shard, progress
        self.retry_unparseable = retry_unparseable
        self.refresh: set[tuple[str, int]] = set()
        """Latents retried for an answer that could not be used: asked again, not answered from the cache."""
        self.explainer = Explainer(config.explainer)
        self.out_dir = config.run_dir / EXPLANATIONS_DIR
        hookpoints = config.sparse_coder.hookpoints
        self.readers = {hp: CacheReader(cache_dir(config.run_dir, hp)) for hp in hookpoints}
        for hp, reader in self.readers.items():
            refuse_other_cache(config, reader, hp)
        self.keys = {hp: Explainer.record_key(config, reader) for hp, reader in self.readers.items()}
        self.backend = resolve_backend(config.explainer.backend)
        """The backend that answers on this machine (the key holds the configured one)."""
        self.report = ExplainReport()
        self.client: CachedClient | None = None
        self.writers: dict[str, RecordWriter] = {}

    def plan(self, force: bool) -> dict[str, list[int]]:
        """Hookpoint -> this task's latents without a record; stale records refused (or, forced, removed)."""
        todo: dict[str, list[int]] = {}
        for hp, reader in self.readers.items():
            key, done = self.keys[hp], read_records(self.out_dir, hp, _RESUME_FIELDS)
            current = Explainer.record_hashes(self.config, reader)
            if force and any(r.get("config_hash") not in current for r in done.values()):
                remove_hookpoint(self.out_dir, hp)
                done = {}
            check_config(self.out_dir, hp, done, key, current, f"explanations of {hp} in {self.out_dir}")
            selection = run_latents(self.config, reader, hp)
            mine = [latent for i, latent in enumerate(selection.latents) if self.shard.owns(i)]
            retry = {latent for latent in mine if latent in done and self._retries(done[latent])}
            self.refresh |= {
                (hp, latent) for latent in retry if done[latent].get("error_kind") != "transient"
            }
            todo[hp] = [latent for latent in mine if latent not in done or latent in retry]
            tally = HookpointTally(
                already_done=len(mine) - len(todo[hp]),
                retried=len(retry),
                not_eligible=selection.not_eligible,
            )
            self.report.tallies[hp] = tally
        return todo

    def _retries(self, record: dict[str, Any]) -> bool:
        kind = record.get("error_kind")
        return kind == "transient" or (self.retry_unparseable and kind in ("rejected", "parse"))

    async def explain(self, todo: dict[str, list[int]]) -> None:
        """Submit every latent's request; record each latent as its answer arrives."""
        texts = TokenTexts(load_tokenizer(self.config.model.path))
        builders = {hp: example_builder(self.config, hp, self.readers[hp], texts) for hp in todo}
        cache = ResponseCache(self.config.run_dir / LLM_CACHE_DIR, self.shard.name)
        settings = self.config.explainer_llm
        endpoint = f"{self.backend}:{settings.base_url or 'local'}"
        self.client = CachedClient(make_client(settings), cache, endpoint)
        self.writers = {hp: RecordWriter(records_file(self.out_dir, hp, self.shard)) for hp in todo}
        total = sum(len(latents) for latents in todo.values())
        jobs: list[_Job | None] = []

        def requests() -> Iterator[LLMRequest]:
            for job in self._jobs(todo, builders, texts):
                if job.request is None:
                    self._record(job, None)
                    self._advance(total, None)
                    continue
                jobs.append(job)
                yield job.request

        try:
            async for index, result in run_requests(self.client, requests()):
                job = jobs[index]
                assert job is not None
                self._record(job, result)
                jobs[index] = None  # release its examples
                self._advance(total, result)
        finally:
            for writer in self.writers.values():
                writer.close()
            await self.client.aclose()
            self.report.cache_hits = self.client.hits

    def _jobs(
        self, todo: dict[str, list[int]], builders: dict[str, ExampleBuilder], texts: TokenTexts
    ) -> Iterator[_Job]:
        for hookpoint, latents in todo.items():
            for latent in latents:
                examples = builders[hookpoint].build(latent, cut_held_out=False)
                request = None if examples.skipped else self.explainer.request(examples, texts)
                if request is not None and self.client is not None and (hookpoint, latent) in self.refresh:
                    self.client.refresh.add(self.client.key(request))
                yield _Job(hookpoint, examples, request)

    def _advance(self, total: int, result: LLMResponse | LLMError | None) -> None:
        if self.progress:
            tokens = result.prompt_tokens + result.completion_tokens if isinstance(result, LLMResponse) else 0
            self.progress(1, total, tokens)

    def _record(self, job: _Job, result: LLMResponse | LLMError | None) -> None:
        """Record one latent: its explanation, or why there is none."""
        explanation, error, error_kind = self._outcome(job, result)
        self._tally(job, result, error)
        key = self.keys[job.hookpoint]
        model = self.client.model if self.client else self.config.explainer.model
        self.writers[job.hookpoint].write(
            {
                "latent": job.examples.latent,
                "hookpoint": job.hookpoint,
                "explanation": explanation,
                "error": error,
                "error_kind": error_kind,
                "skipped": job.examples.skipped,
                "num_activations": job.examples.num_activations,
                "num_windows": job.examples.num_windows,
                "max_activation": job.examples.max_activation,
                "explainer": {**key["explainer"], "backend": self.backend, "model": model},
                "answer": result.text if isinstance(result, LLMResponse) else None,
                "examples": {
                    "explain": pack([e.to_dict() for e in job.examples.explain]),
                    "explain_negatives": pack([e.to_dict() for e in job.examples.explain_negatives]),
                },
                "usage": _usage(result),
                "config_hash": config_hash(key),
                "config_key": key,
            }
        )

    def _outcome(
        self, job: _Job, result: LLMResponse | LLMError | None
    ) -> tuple[str | None, str | None, str | None]:
        """(explanation, error, error kind) of one latent's answer; the kind says what a rerun retries."""
        if job.examples.skipped or result is None:
            return None, None, None
        if isinstance(result, LLMError):
            return None, f"llm error: {result}", str(getattr(result, "kind", "transient"))
        assert job.request is not None
        try:
            return self.explainer.parse(job.request, result), None, None
        except ParseError as exc:
            return None, f"unparseable answer: {exc}", "parse"

    def _tally(self, job: _Job, result: LLMResponse | LLMError | None, error: str | None) -> None:
        tally = self.report.tallies[job.hookpoint]
        if isinstance(result, LLMResponse):
            tally.prompt_tokens += result.prompt_tokens
            tally.cached_tokens += result.cached_tokens
            tally.completion_tokens += result.completion_tokens
        if job.examples.skipped:
            tally.skipped += 1
        elif error:
            tally.failed += 1
        else:
            tally.explained += 1

    def write_stats(self) -> None:
        """What this run cost, per hookpoint, beside the records."""
        stats = {}
        for hp, tally in self.report.tallies.items():
            calls = tally.explained + tally.failed
            stats[hp] = {
                **tally.__dict__,
                "prompt_tokens_per_latent": tally.prompt_tokens / calls if calls else None,
                "cached_token_fraction": tally.cached_tokens / tally.prompt_tokens
                if tally.prompt_tokens
                else None,
            }
        write_json_atomic(
            self.out_dir / explain_stats_file_name(self.shard.suffix),
            {
                "hookpoints": stats,
                "seconds": self.report.seconds,
                "response_cache_hits": self.report.cache_hits,
            },
        )


def _usage(result: LLMResponse | LLMError | None) -> dict[str, object] | None:
    if not isinstance(result, LLMResponse):
        return None
    return {
        "prompt_tokens": result.prompt_tokens,
        "cached_tokens": result.cached_tokens,
        "completion_tokens": result.completion_tokens,
        "finish_reason": result.finish_reason,
        "seconds": round(result.latency, 4),
    }
