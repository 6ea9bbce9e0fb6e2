"""Stage 1, `autointerp cache`: sparse activations of every hookpoint, streamed into CSR shards.

Work is split into parts (contiguous sequence ranges). Each part is computed in one pass over the
model (stopping after the deepest hookpoint), encoded by every coder, and written atomically while the
next part computes. Once all parts exist, they are merged into the latent-range shards of the public
format and the manifest is marked complete. Killed at any point, a rerun redoes only the missing parts.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.numpy import save_file as save_numpy

from autointerp.cache.inputs import as_recorded, cache_inputs
from autointerp.cache.merge import merge_parts
from autointerp.cache.parts import PartBuffer, PartPlan, write_part
from autointerp.cache.tokens import check_tokens, link_or_copy, read_tokens, write_tokens
from autointerp.coders import FORMATS, load_coders, load_file_coder, with_hookpoints
from autointerp.coders.base import SparseCoder
from autointerp.config import RunConfig, dump_config
from autointerp.corpus import iter_documents, iter_sequences, special_token_ids
from autointerp.errors import ConfigError, UserError
from autointerp.fingerprint import Digests, run_digests
from autointerp.rundir import (
    CACHE_DIR,
    CONFIG_FILE,
    FORMAT_VERSION,
    MANIFEST_FILE,
    PARTS_DIR,
    STATS_FILE,
    TOKENS_FILE,
    WHOLE,
    ShardSpec,
    atomic_path,
    cache_dir,
    claim_run_dir,
    config_hash,
    read_json_file,
    refuse_stale,
    sweep_stale_temporaries,
    write_json_atomic,
    write_text_atomic,
)
from autointerp.subject import ActivationReader, Subject, Tap, load_subject

ProgressFn = Callable[[int, int], None]
"""Called with (tokens just processed, total tokens this task will process)."""

VALUE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class CacheReport:
    """What a cache run did, for the CLI to show."""

    status: dict[str, str] = field(default_factory=dict)
    tokens_processed: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class _Hookpoint:
    name: str
    coder: SparseCoder
    dir: Path
    key: dict[str, Any]

    @property
    def tap(self) -> Tap:
        return Tap(self.coder.module_path, self.coder.reads_input)


def run_cache(
    config: RunConfig,
    shard: ShardSpec = WHOLE,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> CacheReport:
    """Cache every hookpoint of `config`; with a partial `shard`, compute only that task's parts.

    A whole run whose hookpoints all have a matching manifest and every part (the merge after a job
    array) merges them without loading the subject model.
    """
    if force and not shard.is_whole:
        raise UserError(
            "--force: not allowed with --shard or in a SLURM array task (the tasks would delete each other's "
            "work); run once without --shard to replace a stale cache"
        )
    claim_run_dir(config.run_dir)
    config = with_hookpoints(config)
    _sweep(config)
    report = CacheReport()
    digests = run_digests(config.run_dir)
    if shard.is_whole and not force and _finish_without_model(config, report, digests):
        return report
    subject = load_subject(config.model)
    _check_context(config, subject)
    coders = load_coders(config.sparse_coder, subject.base_model)
    report.warnings.extend(_training_mismatches(config, subject, coders))
    reader = ActivationReader(
        subject.base_model, [Tap(c.module_path, c.reads_input) for c in coders.values()]
    )
    for coder in coders.values():
        coder.to(subject.device, subject.dtype)
    _check_widths(subject, reader, coders)
    hookpoints = [
        _Hookpoint(
            name,
            coder,
            cache_dir(config.run_dir, name),
            _cache_key(config, name, coder.fingerprint(digests), digests),
        )
        for name, coder in coders.items()
    ]
    todo = []
    for hp in hookpoints:
        state = _existing_state(hp, force)
        if state == "complete":
            shutil.rmtree(hp.dir / PARTS_DIR, ignore_errors=True)  # left by a kill after the manifest
            report.status[hp.name] = "already cached"
        else:
            todo.append(hp)
    if not todo:
        return report
    write_text_atomic(config.run_dir / CONFIG_FILE, dump_config(config))
    created = [hp for hp in todo if not (hp.dir / MANIFEST_FILE).is_file()]
    for hp in created:
        write_json_atomic(hp.dir / MANIFEST_FILE, _manifest(config, hp, num_sequences=None))
    try:
        tokens_path, num_sequences = _ensure_tokens(config, subject, todo, report)
    except Exception:
        _forget_unstarted(created)
        raise
    plan = PartPlan(num_sequences, config.cache.sequences_per_part)
    _warn_if_merge_computes(plan, todo, shard, report)
    started = time.perf_counter()
    report.tokens_processed = _compute_parts(
        config, subject, reader, todo, plan, tokens_path, shard, progress
    )
    report.seconds = time.perf_counter() - started
    for hp in todo:
        if shard.is_whole:
            report.stats[hp.name] = _finalize(config, hp.dir, _manifest(config, hp, None), plan)
            report.status[hp.name] = "cached"
        else:
            report.status[hp.name] = (
                f"parts of shard {shard.index}/{shard.count} cached; run without --shard to merge"
            )
    return report


def _forget_unstarted(hookpoints: list[_Hookpoint]) -> None:
    """Remove the new manifests of caches whose tokenization failed: nothing was made from their inputs, so
    fixing those (filling an empty corpus file) is not a change that a rerun refuses."""
    for hp in hookpoints:
        if not (hp.dir / TOKENS_FILE).exists():
            (hp.dir / MANIFEST_FILE).unlink(missing_ok=True)


def _warn_if_merge_computes(
    plan: PartPlan, todo: list[_Hookpoint], shard: ShardSpec, report: CacheReport
) -> None:
    """A whole run that finds some parts done (by array tasks) but not all computes the rest: say so."""
    done = sum(all(plan.file(hp.dir, part).is_file() for hp in todo) for part in range(plan.num_parts))
    if shard.is_whole and 0 < done < plan.num_parts:
        report.warnings.append(
            f"{plan.num_parts - done} of {plan.num_parts} parts are missing (did array tasks fail?) and are "
            "computed by this run"
        )


def _check_context(config: RunConfig, subject: Subject) -> None:
    """Sequences longer than the model's positions would fail (or go silently wrong) mid-run."""
    limit = getattr(subject.model.config, "max_position_embeddings", None)
    if isinstance(limit, int) and config.cache.ctx_len > limit:
        raise ConfigError(
            "cache.ctx_len",
            f"is {config.cache.ctx_len} but {config.model.path} handles at most {limit} positions; lower it",
        )


def _check_widths(subject: Subject, reader: ActivationReader, coders: dict[str, SparseCoder]) -> None:
    probe_id = subject.tokenizer.bos_token_id or subject.tokenizer.eos_token_id or 0
    captured = reader(torch.full((1, 4), probe_id, device=subject.device))
    for name, coder in coders.items():
        width = captured[Tap(coder.module_path, coder.reads_input)].shape[-1]
        if width != coder.d_in:
            side = "input" if coder.reads_input else "output"
            raise ConfigError(
                "sparse_coder.hookpoints",
                f"{name}: the coder expects width {coder.d_in} but the {side} of {coder.module_path!r} "
                f"has width {width}; check the hookpoint or the sparse coder",
            )


def _training_mismatches(config: RunConfig, subject: Subject, coders: dict[str, SparseCoder]) -> list[str]:
    """Where a coder's recorded training context differs from this cache's, plus its loading notes."""
    prepends_bos = subject.tokenizer.bos_token_id is not None
    found = []
    for name, coder in coders.items():
        hook = coder.hook
        if hook is None:
            continue
        if hook.context_size is not None and hook.context_size != config.cache.ctx_len:
            found.append(
                f"{name}: the coder was trained on {hook.context_size}-token contexts but cache.ctx_len is "
                f"{config.cache.ctx_len}; its activations may be off-distribution"
            )
        if hook.prepend_bos is not None and hook.prepend_bos != prepends_bos:
            found.append(
                f"{name}: the coder was trained {'with' if hook.prepend_bos else 'without'} a BOS token "
                f"but the cache's sequences {'start with' if prepends_bos else 'have'} "
                f"{'BOS' if prepends_bos else 'none'}"
            )
        found.extend(hook.notes)
    return found


def _sweep(config: RunConfig) -> None:
    """Drop temporary files that killed runs left in the run, cache and parts folders."""
    folders = [config.run_dir, config.run_dir / CACHE_DIR]
    for name in config.sparse_coder.hookpoints:
        folders += [cache_dir(config.run_dir, name), cache_dir(config.run_dir, name) / PARTS_DIR]
    for folder in folders:
        sweep_stale_temporaries(folder)


def _finish_without_model(config: RunConfig, report: CacheReport, digests: Digests) -> bool:
    """Report or merge every hookpoint without the subject model, if all are cached or have all parts."""
    dirs = {name: cache_dir(config.run_dir, name) for name in config.sparse_coder.hookpoints}
    manifests = {}
    for name, folder in dirs.items():
        manifest = _read_manifest(folder)
        if manifest is None:
            return False
        manifests[name] = manifest
    pending = {}
    for name, manifest in manifests.items():
        key = _cache_key(config, name, _fingerprint(config, name, digests), digests)
        if not _is_current(manifest, key):
            return False  # the full path reports what changed
        if manifest.get("complete"):
            continue
        tokens = dirs[name] / TOKENS_FILE
        if not tokens.is_file():
            return False
        plan = PartPlan(
            check_tokens(tokens, config.cache.ctx_len, _tokens_key(config, key)),
            config.cache.sequences_per_part,
        )
        if not all(path.is_file() for path in plan.files(dirs[name])):
            return False
        pending[name] = plan
    for name in dirs:
        if name in pending:
            report.stats[name] = _finalize(config, dirs[name], manifests[name], pending[name])
            report.status[name] = "cached (merged)"
        else:
            shutil.rmtree(dirs[name] / PARTS_DIR, ignore_errors=True)  # left by a kill after the manifest
            report.status[name] = "already cached"
    return True


def _fingerprint(config: RunConfig, hookpoint: str, digests: Digests) -> dict[str, object]:
    """The coder's fingerprint from its files; coders built from the model itself have none."""
    fmt = FORMATS.get(config.sparse_coder.format)
    if fmt is not None and fmt.detect is None:
        return {}
    return load_file_coder(config.sparse_coder, hookpoint).fingerprint(digests)


def _is_current(manifest: dict[str, Any], key: dict[str, Any]) -> bool:
    """Whether a manifest was made with `key`; with `dtype: auto`, caches whose key holds the dtype that an
    earlier version resolved `auto` to count as made with `auto`."""
    if manifest.get("config_hash") == config_hash(key):
        return True
    cache_key = manifest.get("cache_key")
    model = cache_key.get("model") if isinstance(cache_key, dict) else None
    stored = model.get("dtype") if isinstance(model, dict) else None
    if key["model"]["dtype"] != "auto" or not isinstance(stored, str) or stored == "auto":
        return False
    legacy = {**key, "model": {**key["model"], "dtype": stored}}
    return manifest.get("config_hash") == config_hash(legacy)


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST_FILE
    if not path.is_file():
        return None
    manifest = read_json_file(path, "pass --force to recompute this cache")
    if not isinstance(manifest, dict):
        raise UserError(f"{path}: is not a manifest (damaged?); pass --force to recompute this cache")
    return manifest


def _cache_key(
    config: RunConfig, hookpoint: str, fingerprint: dict[str, object], digests: Digests
) -> dict[str, Any]:
    """The config values and file contents that define a hookpoint's cache, with the coder's fingerprint;
    any change makes the cache stale (data files deleted since it was made count as the recorded ones)."""
    key = cache_inputs(config, hookpoint, digests)
    key["sparse_coder"] = {**key["sparse_coder"], **fingerprint}
    manifest = _read_manifest(cache_dir(config.run_dir, hookpoint))
    return as_recorded(key, manifest.get("cache_key") if manifest else None)


def _existing_state(hp: _Hookpoint, force: bool) -> str:
    """`new`, `partial` or `complete`; a cache made with another config is refused unless forced."""
    manifest = _read_manifest(hp.dir)
    if manifest is None:
        leftovers = [p.name for p in (hp.dir / TOKENS_FILE, hp.dir / PARTS_DIR) if p.exists()]
        if leftovers and not force:
            raise UserError(
                f"{hp.dir} holds {' and '.join(leftovers)} but no {MANIFEST_FILE} (deleted by hand?); "
                "they may come from another config: pass --force to recompute this cache"
            )
        if leftovers:
            shutil.rmtree(hp.dir)
        return "new"
    if _is_current(manifest, hp.key):
        return "complete" if manifest.get("complete") else "partial"
    if force:
        shutil.rmtree(hp.dir)
        return "new"
    refuse_stale(
        manifest.get("cache_key"),
        hp.key,
        f"the cache in {hp.dir}",
        "pass --force to replace it, or set another out_dir",
    )
    return "complete" if manifest.get("complete") else "partial"


def _manifest(config: RunConfig, hp: _Hookpoint, num_sequences: int | None, **extra: Any) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "model": config.model.path,
        "coder": {
            "format": hp.key["sparse_coder"].get("format", config.sparse_coder.format),
            "path": config.sparse_coder.path,
            "module_path": hp.coder.module_path,
            "reads_input": hp.coder.reads_input,
        },
        "hookpoint": hp.name,
        "num_latents": hp.coder.num_latents,
        "d_in": hp.coder.d_in,
        "num_sequences": num_sequences,
        "ctx_len": config.cache.ctx_len,
        "activation_dtype": config.cache.activation_dtype,
        "shards": [],
        "config_hash": config_hash(hp.key),
        "cache_key": hp.key,
        "complete": False,
        **extra,
    }


def _tokens_key(config: RunConfig, key: dict[str, Any]) -> str:
    """What the token sequences are made from, the model and the corpus of the cache `key` (stored in the
    tokens file and checked on reuse)."""
    cache = config.cache
    return config_hash(
        {
            "model": config.model.path,
            "dataset": key["dataset"],
            "ctx_len": cache.ctx_len,
            "n": cache.n_tokens,
        }
    )


def _ensure_tokens(
    config: RunConfig, subject: Subject, todo: list[_Hookpoint], report: CacheReport
) -> tuple[Path, int]:
    """Tokenize the corpus once into the first hookpoint's folder and link it into the others."""
    existing = [hp.dir / TOKENS_FILE for hp in todo if (hp.dir / TOKENS_FILE).is_file()]
    source = existing[0] if existing else todo[0].dir / TOKENS_FILE
    wanted = -(-config.cache.n_tokens // config.cache.ctx_len)
    tokens_key = _tokens_key(config, todo[0].key)
    if not existing:
        sequences = iter_sequences(iter_documents(config.dataset), subject.tokenizer, config.cache.ctx_len)
        written = write_tokens(sequences, wanted, config.cache.ctx_len, source, tokens_key)
        if written == 0:
            raise ConfigError(
                "dataset.path",
                f"{config.dataset.path!r} yields no full sequence of "
                f"{config.cache.ctx_len} tokens; use a larger corpus or a smaller cache.ctx_len",
            )
    found = check_tokens(source, config.cache.ctx_len, tokens_key)
    if found < wanted:
        report.warnings.append(
            f"the corpus holds {found * config.cache.ctx_len:,} tokens, fewer than cache.n_tokens="
            f"{config.cache.n_tokens:,}; caching all of it"
        )
    for hp in todo:
        link_or_copy(source, hp.dir / TOKENS_FILE)
    return source, found


def _compute_parts(
    config: RunConfig,
    subject: Subject,
    reader: ActivationReader,
    todo: list[_Hookpoint],
    plan: PartPlan,
    tokens_path: Path,
    shard: ShardSpec,
    progress: ProgressFn | None,
) -> int:
    """Compute this task's missing parts, writing each in the background while the next computes."""
    missing = [
        part
        for part in range(plan.num_parts)
        if shard.owns(part) and not all(plan.file(hp.dir, part).is_file() for hp in todo)
    ]
    total = sum(end - start for start, end in map(plan.sequence_range, missing)) * config.cache.ctx_len
    special = torch.tensor(special_token_ids(subject.tokenizer), device=subject.device, dtype=torch.long)
    index_dtype = torch.int32 if plan.num_sequences * config.cache.ctx_len < 2**31 else torch.int64
    value_dtype = VALUE_DTYPES[config.cache.activation_dtype]
    done = 0
    with ThreadPoolExecutor(max_workers=1) as writer:
        writing: Future | None = None
        for part in missing:
            started = time.perf_counter()
            buffers = {hp.name: PartBuffer(hp.coder.num_latents, index_dtype, value_dtype) for hp in todo}
            start, end = plan.sequence_range(part)
            tokens = read_tokens(tokens_path, start, end)
            for offset in range(0, end - start, config.cache.batch_size):
                batch = tokens[offset : offset + config.cache.batch_size].to(subject.device, torch.long)
                _encode_batch(reader, todo, buffers, batch, (start + offset) * config.cache.ctx_len, special)
                done += batch.numel()
                if progress:
                    progress(batch.numel(), total)
            seconds = time.perf_counter() - started
            if writing is not None:
                writing.result()
            writing = writer.submit(_write_parts, plan, part, todo, buffers, seconds)
        if writing is not None:
            writing.result()
    return done


def _encode_batch(
    reader: ActivationReader,
    todo: list[_Hookpoint],
    buffers: dict[str, PartBuffer],
    batch: torch.Tensor,
    first_token_index: int,
    special: torch.Tensor,
) -> None:
    """Encode one batch at every hookpoint; special tokens are in the input but never stored."""
    activations = reader(batch)
    keep = ~torch.isin(batch, special).reshape(-1)
    token_index = torch.arange(batch.numel(), device=batch.device)[keep] + first_token_index
    for hp in todo:
        x = activations[hp.tap].reshape(batch.numel(), -1)[keep]
        buffers[hp.name].add(hp.coder.encode(x), token_index)


def _write_parts(
    plan: PartPlan, part: int, todo: list[_Hookpoint], buffers: dict[str, PartBuffer], seconds: float
):
    for hp in todo:
        path = plan.file(hp.dir, part)
        if not path.is_file():
            write_part(path, buffers[hp.name], seconds)


def _finalize(config: RunConfig, folder: Path, base: dict[str, Any], plan: PartPlan) -> dict[str, Any]:
    """Merge the parts into shards, write statistics and the complete manifest, drop the parts.

    `base` is the hookpoint's (incomplete) manifest: everything about the coder comes from it, so that
    merging needs neither the coder nor the subject model.
    """
    index_dtype = torch.int32 if plan.num_sequences * config.cache.ctx_len < 2**31 else torch.int64
    result = merge_parts(
        plan.files(folder),
        folder,
        int(base["num_latents"]),
        config.cache.latents_per_shard,
        index_dtype,
        VALUE_DTYPES[config.cache.activation_dtype],
    )
    with atomic_path(folder / STATS_FILE) as tmp:
        save_numpy({"firing_count": result.firing_count, "max_activation": result.max_activation}, str(tmp))
    num_tokens = plan.num_sequences * config.cache.ctx_len
    nnz = int(result.firing_count.sum())
    shard_bytes = sum((folder / s.file).stat().st_size for s in result.shards)
    stats = {
        "num_tokens": num_tokens,
        "unmasked_tokens": result.unmasked_tokens,
        "nnz": nnz,
        "mean_l0": nnz / max(result.unmasked_tokens, 1),
        "dead_latents": int((result.firing_count == 0).sum()),
        "bytes_per_activation": shard_bytes / max(nnz, 1),
        "compute_seconds": result.seconds,
        "tokens_per_second": num_tokens / result.seconds if result.seconds else None,
        "firing_counts_file": STATS_FILE,
    }
    manifest = {
        **base,
        "num_sequences": plan.num_sequences,
        "shards": [dataclasses.asdict(s) for s in result.shards],
        "token_index_dtype": str(index_dtype).removeprefix("torch."),
        "complete": True,
        "stats": stats,
    }
    write_json_atomic(folder / MANIFEST_FILE, manifest)
    shutil.rmtree(folder / PARTS_DIR, ignore_errors=True)
    return stats
