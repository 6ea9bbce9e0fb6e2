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
from pathlib import Path
from typing import Any

from autointerp.cache import CacheReader
from autointerp.coders import load_file_coder
from autointerp.config import RunConfig, dump_config
from autointerp.embedding import Embedder
from autointerp.errors import ConfigError, UserError
from autointerp.examples import Example, ExampleBuilder, LatentExamples, run_latents
from autointerp.explain.parse import NEW_TURN, ParseError, parse_explanation
from autointerp.explain.prompts import ANSWER_MARKER, PROMPT_VERSION, ShownExample, build_messages
from autointerp.llm import CachedClient, LLMClient, ResponseCache, make_client, resolve_backend, run_requests
from autointerp.llm.types import LLMError, LLMFatalError, LLMRequest, LLMResponse, SamplingParams
from autointerp.records import RecordWriter, check_config, read_records, records_file, remove_hookpoint
from autointerp.rundir import (
    CONFIG_FILE,
    WHOLE,
    ShardSpec,
    cache_dir,
    config_hash,
    write_json_atomic,
    write_text_atomic,
)
from autointerp.texts import TokenTexts, load_tokenizer

EXPLANATIONS_DIR = "explanations"
LLM_CACHE_DIR = "llm_cache"
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
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0


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
    config: RunConfig, shard: ShardSpec = WHOLE, force: bool = False, progress: ProgressFn | None = None
) -> ExplainReport:
    """Explain this task's share of the selected latents of every hookpoint."""
    if not config.explainer.model:
        raise ConfigError(
            "explainer.model", "is required: a hub id, local folder, .gguf file or package:NAME"
        )
    out_dir = config.run_dir / EXPLANATIONS_DIR
    readers = {hp: CacheReader(cache_dir(config.run_dir, hp)) for hp in config.sparse_coder.hookpoints}
    keys = {hp: explain_key(config, reader) for hp, reader in readers.items()}
    todo: dict[str, list[int]] = {}
    report = ExplainReport()
    for hp, reader in readers.items():
        done = read_records(out_dir, hp)
        if force and any(r.get("config_hash") != config_hash(keys[hp]) for r in done.values()):
            remove_hookpoint(out_dir, hp)
            done = {}
        check_config(done, keys[hp], config_hash(keys[hp]), f"explanations of {hp} in {out_dir}")
        selection = run_latents(config, reader, hp)
        mine = [latent for i, latent in enumerate(selection.latents) if shard.owns(i)]
        todo[hp] = [latent for latent in mine if latent not in done]
        report.tallies[hp] = HookpointTally(
            already_done=len(mine) - len(todo[hp]), not_eligible=selection.not_eligible
        )
    if not any(todo.values()):
        return report
    write_text_atomic(config.run_dir / CONFIG_FILE, dump_config(config))
    texts = TokenTexts(load_tokenizer(config.model.path))
    builders = {hp: example_builder(config, hp, readers[hp], texts) for hp in todo}
    shard_name = "whole" if shard.is_whole else f"shard-{shard.index}-of-{shard.count}"
    started = time.perf_counter()  # the engine's start is part of what the stage costs
    client = CachedClient(
        make_client(config.explainer), ResponseCache(config.run_dir / LLM_CACHE_DIR, shard_name)
    )
    try:
        asyncio.run(_explain(config, client, builders, todo, keys, texts, shard, report, progress))
    except LLMFatalError as exc:
        raise UserError(f"explainer: {exc}") from None
    report.seconds = time.perf_counter() - started
    report.cache_hits = client.hits
    _write_stats(out_dir, shard, report)
    return report


def explain_key(config: RunConfig, reader: CacheReader) -> dict[str, Any]:
    """What defines an explanation record; latent selection is not part of it (a sample may grow)."""
    explainer = config.explainer
    return {
        "cache": reader.manifest["config_hash"],
        "seed": config.seed,
        "min_activations": config.latents.min_activations,
        "examples": config.to_dict()["examples"],
        "explainer": {
            "kind": explainer.kind,
            "backend": resolve_backend(explainer.backend),
            "model": explainer.model,
            "temperature": explainer.temperature,
            "max_tokens": explainer.max_tokens,
            "show_activations": explainer.show_activations,
            "reasoning": explainer.reasoning,
            "highlight_threshold": explainer.highlight_threshold,
            "prompt_version": PROMPT_VERSION,
        },
    }


def example_builder(
    config: RunConfig, hookpoint: str, reader: CacheReader, texts: TokenTexts
) -> ExampleBuilder:
    decoder = embed = None
    if config.examples.negatives == "neighbours":
        directions = load_file_coder(config.sparse_coder, hookpoint).decoder_directions()
        if directions is None:
            raise ConfigError("examples.negatives", "neighbours needs a coder with decoder directions")
        decoder = directions.float().numpy()
    if config.examples.negatives == "similar":
        embed = Embedder()
    return ExampleBuilder(
        reader,
        config.examples,
        config.latents.min_activations,
        config.seed,
        hookpoint,
        decoder=decoder,
        embed=embed,
        decode=texts.text,
    )


def _jobs(config: RunConfig, builders, todo, texts: TokenTexts) -> Iterator[_Job]:
    reasoning = config.explainer.reasoning
    params = SamplingParams(
        temperature=config.explainer.temperature,
        max_tokens=config.explainer.max_tokens,
        stop=(NEW_TURN,) if reasoning else ("\n",),
    )
    for hookpoint, latents in todo.items():
        for latent in latents:
            examples = builders[hookpoint].build(latent)
            if examples.skipped:
                yield _Job(hookpoint, examples, None)
                continue
            messages = build_messages(
                [_shown(e, texts) for e in examples.explain],
                examples.max_activation,
                show_activations=config.explainer.show_activations,
                threshold=config.explainer.highlight_threshold,
                negatives=[_shown(e, texts) for e in examples.explain_negatives],
                contrastive=config.explainer.kind == "contrastive",
                reasoning=reasoning,
            )
            yield _Job(hookpoint, examples, LLMRequest(messages, params))


def _shown(example: Example, texts: TokenTexts) -> ShownExample:
    return ShownExample(texts.pieces(example.tokens), example.activations)


async def _explain(config, client: LLMClient, builders, todo, keys, texts, shard, report, progress) -> None:
    out_dir = config.run_dir / EXPLANATIONS_DIR
    total = sum(len(latents) for latents in todo.values())
    writers = {hp: RecordWriter(records_file(out_dir, hp, shard)) for hp in todo}
    jobs: list[_Job | None] = []

    def requests() -> Iterator[LLMRequest]:
        for job in _jobs(config, builders, todo, texts):
            if job.request is None:
                _finish(job, None, writers, keys, client, report)
                if progress:
                    progress(1, total, 0)
                continue
            jobs.append(job)
            yield job.request

    try:
        async for index, result in run_requests(client, requests()):
            _finish(jobs[index], result, writers, keys, client, report)
            jobs[index] = None  # release its examples
            if progress:
                tokens = (
                    result.prompt_tokens + result.completion_tokens if isinstance(result, LLMResponse) else 0
                )
                progress(1, total, tokens)
    finally:
        for writer in writers.values():
            writer.close()
        await client.aclose()


def _finish(job: _Job, result: LLMResponse | LLMError | None, writers, keys, client, report) -> None:
    """Record one latent: its explanation, or why there is none."""
    tally = report.tallies[job.hookpoint]
    explanation, error = None, None
    if job.examples.skipped:
        tally.skipped += 1
    elif isinstance(result, LLMError):
        error = f"llm error: {result}"
    else:
        try:
            answer = result.text if job.request.messages[-1].role == "user" else ANSWER_MARKER + result.text
            explanation = parse_explanation(answer, truncated=result.finish_reason == "length")
        except ParseError as exc:
            error = f"unparseable answer: {exc}"
    if isinstance(result, LLMResponse):
        tally.prompt_tokens += result.prompt_tokens
        tally.cached_tokens += result.cached_tokens
        tally.completion_tokens += result.completion_tokens
    if error:
        tally.failed += 1
    elif not job.examples.skipped:
        tally.explained += 1
    key = keys[job.hookpoint]
    writers[job.hookpoint].write(
        {
            "latent": job.examples.latent,
            "hookpoint": job.hookpoint,
            "explanation": explanation,
            "error": error,
            "skipped": job.examples.skipped,
            "num_activations": job.examples.num_activations,
            "num_windows": job.examples.num_windows,
            "max_activation": job.examples.max_activation,
            "explainer": {**key["explainer"], "model": client.model},
            "answer": result.text if isinstance(result, LLMResponse) else None,
            "examples": {
                "explain": [e.to_dict() for e in job.examples.explain],
                "explain_negatives": [e.to_dict() for e in job.examples.explain_negatives],
            },
            "usage": _usage(result),
            "config_hash": config_hash(key),
            "config_key": key,
        }
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


def _write_stats(out_dir: Path, shard: ShardSpec, report: ExplainReport) -> None:
    """What this run cost, per hookpoint, beside the records."""
    name = "stats.json" if shard.is_whole else f"stats.shard-{shard.index}-of-{shard.count}.json"
    stats = {}
    for hp, tally in report.tallies.items():
        calls = tally.explained + tally.failed
        stats[hp] = {
            **tally.__dict__,
            "prompt_tokens_per_latent": tally.prompt_tokens / calls if calls else None,
            "cached_token_fraction": tally.cached_tokens / tally.prompt_tokens
            if tally.prompt_tokens
            else None,
        }
    write_json_atomic(
        out_dir / name,
        {"hookpoints": stats, "seconds": report.seconds, "response_cache_hits": report.cache_hits},
    )
