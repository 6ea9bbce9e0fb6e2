"""Benchmark what the pipeline itself costs per latent and per LLM request, with an LLM that costs nothing.

The LLM is `scripts/instant_llm.py`, an OpenAI-compatible server on loopback (its own process) that
answers every request at once, so what is measured is autointerp's own work: the process CPU time of the
stage (the server's CPU is in another process and shown apart) and its wall time. Setup (once): a tiny
random-weight Llama (hidden 32, 3 layers, a 300-token BPE tokenizer), a random TopK sparsify coder of
`--num-latents` latents on `layers.1`, and a cache over `--tokens` tokens of `builtin:python-docs`.
Each figure is taken in a fresh child process, one after another:

1. explain: `run_explain` (openai backend, default example counts) on a fifth of `--explain-latents`
   latents (a seeded sample of those that fire at least 200 times, `latents.min_activations`), which pays the
   imports and the first start, then on two fifths (one fifth more), then on all of them (the other three
   fifths): CPU ms per latent of the last call and latents/s; per further latent, the difference of the
   last two calls' CPU over the difference of their latents (each call's start cancels); and the first
   call's per latent.
2. score: `run_score` with [detection, fuzzing] on the first `--latents` of them; CPU ms per LLM request, and
   beside it the bare client loop: `OpenAIClient` (aiohttp underneath) through `autointerp.llm.run_requests`
   sending as many copies of a real scorer request to the same server (the floor of the openai backend),
   and for comparison the same bodies posted with aiohttp directly (the transport alone: no retries,
   no checks of the answer beyond parsing its JSON).
3. record bytes per latent on disk: explanations and each scorer's score records.
4. report: `write_report` on that run; seconds and files per latent.
5. summary and report at scale: a synthetic run directory of N scored latents (`--sizes`), written by
   repeating the run's own explanation and score records (latent ids changed) in the current record
   format, with a cache manifest and stats for N latents; peak RSS (ru_maxrss) and wall time of
   `autointerp.score.write_summary` and `autointerp.report.write_report`, each in its own child. A child
   whose process tree passes `--max-rss-gib` is stopped and shown as such; a size whose records would
   pass `--max-disk-gib` is not written.

With `--profile`, explain and score run once more under cProfile (on fresh copies of the run) and the
functions with the most own time are printed, with their share of the profiled time.

    python scripts/bench_pipeline.py                 # the issue's setting: 16,384 latents, 300k tokens
    python scripts/bench_pipeline.py --quick --profile
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import benchlib

HOOKPOINT = "layers.1"
HIDDEN = 32
SCORERS = ("detection", "fuzzing")
SERVED = "instant"
POLL = 0.2


# --- setup (child) -------------------------------------------------------------------------------------


def build_model(folder: Path) -> None:
    """The tests' tiny Llama: random weights, a 300-token BPE tokenizer."""
    sys.path.insert(0, str(benchlib.REPO / "tests"))
    from tokenizer_factory import save_tiny_llama

    save_tiny_llama(folder, HIDDEN)


def build_coder(folder: Path, model_dir: Path, num_latents: int, k: int) -> None:
    """A seeded random TopK sparsify SAE whose latents all fire: random unit directions in the whitened
    space of the model's `layers.1` activations (mean as b_dec), so no few latents win every TopK."""
    import torch
    from sparsify import SparseCoder, SparseCoderConfig
    from transformers import AutoTokenizer, LlamaForCausalLM

    sys.path.insert(0, str(benchlib.REPO / "tests"))
    from tokenizer_factory import training_lines

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = LlamaForCausalLM.from_pretrained(model_dir)
    ids = tokenizer("\n".join(training_lines(2000)), return_tensors="pt").input_ids[:, :8192]
    with torch.no_grad():
        rows = ids[:, : ids.shape[1] // 256 * 256].reshape(-1, 256)
        x = model(rows, output_hidden_states=True).hidden_states[2].reshape(-1, HIDDEN).double()
    mean = x.mean(0)
    values, vectors = torch.linalg.eigh(torch.cov((x - mean).T))
    whiten = vectors @ torch.diag(values.clamp_min(1e-8).rsqrt()) @ vectors.T
    torch.manual_seed(1)
    coder = SparseCoder(HIDDEN, SparseCoderConfig(num_latents=num_latents, k=k))
    directions = torch.nn.functional.normalize(torch.randn(num_latents, HIDDEN, dtype=torch.double), dim=1)
    with torch.no_grad():
        coder.encoder.weight.copy_(directions @ whiten)
        coder.encoder.bias.zero_()
        coder.b_dec.copy_(mean)
    coder.save_to_disk(folder / HOOKPOINT)


def run_config(spec: dict[str, Any], run_dir: Path, base_url: str) -> dict[str, Any]:
    return {
        "name": "bench-pipeline",
        "out_dir": str(run_dir),
        "seed": 0,
        "model": {"path": spec["model_dir"], "device": "cpu"},
        "sparse_coder": {"path": spec["coders_dir"], "hookpoints": [HOOKPOINT]},
        "dataset": {"path": "builtin:python-docs"},
        "cache": {"n_tokens": spec["tokens"], "ctx_len": spec["ctx_len"], "batch_size": 16},
        "latents": {"indices": spec["indices"][: spec["latents"]], "sample": None} if spec["indices"] else {},
        "explainer": {"backend": "openai", "model": SERVED, "base_url": base_url, "max_retries": 0},
        "scorers": list(SCORERS),
    }


def child_setup(spec: dict[str, Any]) -> dict[str, Any]:
    from autointerp.cache import run_cache
    from autointerp.config import config_from_dict

    work = Path(spec["work"])
    build_model(Path(spec["model_dir"]))
    build_coder(Path(spec["coders_dir"]), Path(spec["model_dir"]), spec["num_latents"], spec["k"])
    started = time.perf_counter()
    run_cache(config_from_dict(run_config(spec, work / "base", spec["base_url"])))
    return {"cache_s": time.perf_counter() - started}


# --- stages (children) ---------------------------------------------------------------------------------


def served(base_url: str, what: str = "stats") -> Any:
    with urllib.request.urlopen(f"{base_url}/{what}", timeout=10) as answer:
        return json.loads(answer.read())


def stage_figures(spec: dict[str, Any], stage: Any) -> dict[str, Any]:
    """Run `stage()` and measure this process's CPU, wall time and the server's requests and CPU."""
    before = served(spec["base_url"])
    cpu, wall = time.process_time(), time.perf_counter()
    result = stage()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    after = served(spec["base_url"])
    return {
        "result": result,
        "cpu_s": cpu,
        "wall_s": wall,
        "requests": {k: after[k] - before[k] for k in ("explain", "score")},
        "server_cpu_s": after["cpu_s"] - before["cpu_s"],
        "maxrss_mib": benchlib.maxrss_mib(),
    }


def profiled(spec: dict[str, Any], stage: Any) -> Any:
    """`stage()`, under cProfile when the spec names a `profile` file (the stats are dumped there)."""
    if not spec.get("profile"):
        return stage()
    import cProfile

    profile = cProfile.Profile()
    try:
        return profile.runcall(stage)
    finally:
        profile.dump_stats(spec["profile"])


def child_explain(spec: dict[str, Any]) -> dict[str, Any]:
    from autointerp.config import config_from_dict
    from autointerp.explain.stage import run_explain

    run_dir = Path(spec["run_dir"])

    def explain_up_to(latents: int, profile: bool = False) -> dict[str, Any]:
        config = config_from_dict(run_config({**spec, "latents": latents}, run_dir, spec["base_url"]))
        out = stage_figures(
            spec, lambda: profiled(spec, lambda: run_explain(config)) if profile else run_explain(config)
        )
        return out | {"explained": out.pop("result").tallies[HOOKPOINT].explained}

    n = spec["explain_latents"]
    first = explain_up_to(max(1, n // 5))  # imports, first start
    second = explain_up_to(max(2, 2 * n // 5))  # a fifth more
    third = explain_up_to(n, profile=True)  # the other three fifths
    marginal = (third["cpu_s"] - second["cpu_s"]) / max(third["explained"] - second["explained"], 1)
    return third | {
        "first_cpu_s": first["cpu_s"],
        "first_explained": first["explained"],
        "marginal_cpu_s": marginal,
    }


def child_score(spec: dict[str, Any]) -> dict[str, Any]:
    from autointerp.config import config_from_dict
    from autointerp.records import read_records
    from autointerp.score.stage import run_score

    config = config_from_dict(run_config(spec, Path(spec["run_dir"]), spec["base_url"]))
    out = stage_figures(spec, lambda: profiled(spec, lambda: run_score(config)))
    out.pop("result")
    scores_dir = Path(spec["run_dir"]) / "scores"
    records = {s: read_records(scores_dir / s, HOOKPOINT).values() for s in SCORERS}
    out["scored"] = {s: sum(r.get("score") is not None for r in rs) for s, rs in records.items()}
    return out


def child_bare(spec: dict[str, Any]) -> dict[str, Any]:
    """The openai client alone: `n` copies of a real scorer request through `run_requests`."""
    import asyncio

    from autointerp.config import config_from_dict
    from autointerp.llm import LLMRequest, Message, SamplingParams, run_requests
    from autointerp.llm.openai_backend import OpenAIClient

    config = config_from_dict(run_config(spec, Path(spec["run_dir"]), spec["base_url"]))
    body = served(spec["base_url"], "sample/score")
    request = LLMRequest(
        messages=tuple(Message(m["role"], m["content"]) for m in body["messages"]),
        params=SamplingParams(
            temperature=body["temperature"], max_tokens=body["max_tokens"], logprobs=body["top_logprobs"]
        ),
    )

    async def loop() -> int:
        client = OpenAIClient(config.scorer_llm)
        answered = 0
        try:
            async for _, result in run_requests(client, (request for _ in range(spec["n"]))):
                answered += not isinstance(result, Exception)
        finally:
            await client.aclose()
        return answered

    out = stage_figures(spec, lambda: asyncio.run(loop()))
    return out | {"answered": out.pop("result")}


def child_aiohttp(spec: dict[str, Any]) -> dict[str, Any]:
    """For comparison, the transport alone: aiohttp posting the same scorer body `n` times, as many in
    flight as the openai backend allows, each answer's JSON parsed."""
    import asyncio

    import aiohttp

    from autointerp.config import ExplainerConfig

    body = served(spec["base_url"], "sample/score")
    url, in_flight = f"{spec['base_url']}/chat/completions", ExplainerConfig().max_concurrency

    async def loop() -> int:
        semaphore = asyncio.Semaphore(in_flight)
        connector = aiohttp.TCPConnector(limit=in_flight)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one() -> int:
                async with semaphore, session.post(url, json=body) as answer:
                    return int("choices" in await answer.json())

            return sum(await asyncio.gather(*(one() for _ in range(spec["n"]))))

    out = stage_figures(spec, lambda: asyncio.run(loop()))
    return out | {"answered": out.pop("result")}


def child_report(spec: dict[str, Any]) -> tuple[dict[str, Any], float]:
    from autointerp.report import write_report

    run_dir = Path(spec["run_dir"])
    base = benchlib.maxrss_mib()
    cpu, wall = time.process_time(), time.perf_counter()
    write_report(run_dir)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    files = sum(1 for p in (run_dir / "report").rglob("*") if p.is_file())
    pages = sum(1 for _ in (run_dir / "report" / "latents").rglob("*.html"))
    return {"cpu_s": cpu, "wall_s": wall, "files": files, "pages": pages}, base


def child_summary(spec: dict[str, Any]) -> tuple[dict[str, Any], float]:
    from autointerp.config import load_config
    from autointerp.score import write_summary

    run_dir = Path(spec["run_dir"])
    config = load_config(run_dir / "config.yaml")
    base = benchlib.maxrss_mib()
    cpu, wall = time.process_time(), time.perf_counter()
    write_summary(config, run_dir / "scores")
    return {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}, base


def child_measured(spec: dict[str, Any], which: str) -> dict[str, Any]:
    """summary or report on a run directory: figures plus ru_maxrss before the call and at the end."""
    out, base = (child_summary if which == "summary" else child_report)(spec)
    return out | {"import_rss_mib": base, "maxrss_mib": benchlib.maxrss_mib()}


def child_synthetic(spec: dict[str, Any]) -> dict[str, Any]:
    """A run directory of `n` scored latents, each record a copy of the source run's record of its kind."""
    import numpy as np
    import yaml
    from safetensors.numpy import load_file, save_file

    from autointerp.records import iter_records

    source, target, n = Path(spec["source"]), Path(spec["run_dir"]), spec["n"]
    started = time.perf_counter()
    config = yaml.safe_load((source / "config.yaml").read_text())
    config["out_dir"] = str(target)
    config["latents"] = {**config.get("latents", {}), "sample": None, "indices": None}
    (target / "cache" / HOOKPOINT).mkdir(parents=True)
    (target / "config.yaml").write_text(yaml.safe_dump(config))
    cache = source / "cache" / HOOKPOINT
    manifest = json.loads((cache / "manifest.json").read_text())
    for shard in manifest["shards"]:
        os.link(cache / shard["file"], target / "cache" / HOOKPOINT / shard["file"])
    manifest = {**manifest, "num_latents": n, "shards": repeated_shards(manifest, n)}
    (target / "cache" / HOOKPOINT / "manifest.json").write_text(json.dumps(manifest))
    stats = {key: np.resize(value, n) for key, value in load_file(cache / "stats.safetensors").items()}
    save_file(stats, str(target / "cache" / HOOKPOINT / "stats.safetensors"))
    shutil.copy(cache / "tokens.safetensors", target / "cache" / HOOKPOINT / "tokens.safetensors")
    kinds = [("explanations", "explanation")] + [(f"scores/{s}", "score") for s in SCORERS]
    for folder, field in kinds:
        template = next(
            r for r in iter_records(source / folder / f"{HOOKPOINT}.jsonl") if r.get(field) is not None
        )
        write_copies(target / folder / f"{HOOKPOINT}.jsonl", template, n)
    size = sum(p.stat().st_size for p in target.rglob("*.jsonl"))
    return {"write_s": time.perf_counter() - started, "records_bytes": size}


def repeated_shards(manifest: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """The source cache's shard list repeated to cover `n` latents (latent i reads source latent i mod
    the source's count), the last entry cut at `n`."""
    shards, start, size = [], 0, manifest["num_latents"]
    while start < n:
        for shard in manifest["shards"]:
            begin = start + shard["start"]
            if begin >= n:
                break
            shards.append({"file": shard["file"], "start": begin, "end": min(n, start + shard["end"])})
        start += size
    return shards


def write_copies(path: Path, template: dict[str, Any], n: int) -> None:
    """`n` copies of `template`, latent 0 .. n-1, one JSON line each (the line is serialised once)."""
    from autointerp.records import record_line

    marker = -987654321
    head, tail = record_line({**template, "latent": marker}).rstrip("\n").split(str(marker), 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for latent in range(n):
            f.write(f"{head}{latent}{tail}\n")


CHILDREN = {
    "setup": child_setup,
    "explain": child_explain,
    "score": child_score,
    "bare": child_bare,
    "aiohttp": child_aiohttp,
    "report": lambda spec: child_measured(spec, "report"),
    "summary": lambda spec: child_measured(spec, "summary"),
    "synthetic": child_synthetic,
}


# --- the parent: server, children, tables ----------------------------------------------------------------


def start_instant_server(port: int, log_file: Path) -> subprocess.Popen:
    """`instant_llm.py` on 127.0.0.1:`port` in its own process group, once it answers GET /v1/models."""
    script = Path(__file__).with_name("instant_llm.py")
    with open(log_file, "w") as log:
        process = subprocess.Popen(
            [sys.executable, str(script), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            served(f"http://127.0.0.1:{port}/v1", "models")
            return process
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    benchlib.stop_group(process)
    raise SystemExit(f"the instant LLM server did not start; log {log_file}")


def run_child(kind: str, spec: dict[str, Any], work: Path, max_rss_mib: float) -> dict[str, Any] | None:
    """One child in its own process group; its JSON figures plus the peak RSS of its process tree, or
    `{"stopped": ...}` when the tree passed `max_rss_mib`, or None when it failed (its log is shown)."""
    import psutil

    spec_file, result_file, log_file = (work / f"{kind}.{ext}" for ext in ("spec.json", "json", "log"))
    spec_file.write_text(json.dumps(spec))
    result_file.unlink(missing_ok=True)
    with open(log_file, "w") as log:
        process = subprocess.Popen(
            [sys.executable, __file__, "--child", kind, str(spec_file), str(result_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    peak, stopped = 0, False
    try:
        while process.poll() is None:
            try:
                root = psutil.Process(process.pid)
                peak = max(peak, sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]))
            except psutil.Error:
                pass
            if peak > max_rss_mib * 2**20:
                stopped = True
                break
            time.sleep(POLL)
    finally:
        benchlib.stop_group(process)
    if stopped:
        return {"stopped": f"stopped at {peak / 2**20:,.0f} MiB RSS (limit {max_rss_mib:,.0f})"}
    if process.returncode != 0 or not result_file.is_file():
        lines = log_file.read_text(errors="replace").splitlines()[-20:]
        print(f"  {kind} failed (exit {process.returncode}); log {log_file}:\n    " + "\n    ".join(lines))
        return None
    return json.loads(result_file.read_text()) | {"tree_peak_rss_mib": peak / 2**20}


def jsonl_bytes(folder: Path, field: str) -> tuple[int, int]:
    """(bytes, records) of the hookpoint's records in `folder` whose `field` is set (explained or scored
    latents; a skipped latent's record is short)."""
    size = count = 0
    for path in sorted(folder.glob(f"{HOOKPOINT}*.jsonl")):
        with open(path, "rb") as f:
            for line in f:
                if json.loads(line).get(field) is not None:
                    size, count = size + len(line), count + 1
    return size, count


def prepare(args: argparse.Namespace, work: Path, base_url: str) -> dict[str, Any]:
    """The spec every child shares; the model, coder and cache are built unless `--reuse` finds them."""
    spec = {
        "work": str(work),
        "model_dir": str(work / "model"),
        "coders_dir": str(work / "coders"),
        "num_latents": args.num_latents,
        "k": args.k,
        "tokens": args.tokens,
        "ctx_len": args.ctx_len,
        "latents": args.latents,
        "explain_latents": max(args.explain_latents, args.latents),
        "base_url": base_url,
    }
    setup_key = {k: spec[k] for k in ("num_latents", "k", "tokens", "ctx_len")}
    marker = work / "setup-key.json"
    if not (args.reuse and marker.is_file() and json.loads(marker.read_text()) == setup_key):
        build(args, spec, work)
        marker.write_text(json.dumps(setup_key))
    return spec | {"indices": alive_latents(work / "base", spec["explain_latents"])}


def build(args: argparse.Namespace, spec: dict[str, Any], work: Path) -> None:
    for name in ("model", "coders", "base"):
        shutil.rmtree(work / name, ignore_errors=True)
    print(
        f"setup: tiny Llama, {args.num_latents:,}-latent coder (k={args.k}), cache of {args.tokens:,} tokens"
    )
    if run_child("setup", {**spec, "indices": []}, work, args.max_rss_gib * 1024) is None:
        raise SystemExit("setup failed")


def alive_latents(run_dir: Path, n: int) -> list[int]:
    """A seeded sample of `n` latents that fire at least `latents.min_activations` times (the default, 200):
    a random coder has many that fire less, and a skipped latent costs the pipeline next to nothing."""
    import numpy as np
    from safetensors.numpy import load_file

    from autointerp.config import LatentsConfig

    counts = load_file(run_dir / "cache" / HOOKPOINT / "stats.safetensors")["firing_count"]
    alive = np.flatnonzero(counts >= LatentsConfig().min_activations)
    if len(alive) < n:
        raise SystemExit(
            f"only {len(alive)} latents fire often enough; lower --explain-latents and --latents, or raise "
            "--tokens"
        )
    return sorted(int(i) for i in np.random.default_rng(0).choice(alive, n, replace=False))


def fresh_run(work: Path, name: str) -> Path:
    """A copy of the cached base run (no explanations, scores or report yet)."""
    run_dir = work / name
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(work / "base", run_dir)
    return run_dir


def pipeline(args: argparse.Namespace, spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """Explain, score, the bare client loop, record sizes and the report on one run."""
    limit = args.max_rss_gib * 1024
    run_dir = fresh_run(work, "run")
    spec = {**spec, "run_dir": str(run_dir)}
    figures: dict[str, Any] = {}
    for kind in ("explain", "score"):
        print(f"{kind}: {spec['explain_latents' if kind == 'explain' else 'latents']} latents")
        figures[kind] = run_child(kind, spec, work, limit)
        if figures[kind] is None:
            raise SystemExit(f"{kind} failed")
    n = figures["score"]["requests"]["score"]
    print(f"bare client loop: {n:,} requests")
    figures["bare"] = run_child("bare", {**spec, "n": n}, work, limit)
    figures["aiohttp"] = run_child("aiohttp", {**spec, "n": n}, work, limit)
    figures["bytes"] = {"explanations": jsonl_bytes(run_dir / "explanations", "explanation")}
    figures["bytes"] |= {s: jsonl_bytes(run_dir / "scores" / s, "score") for s in SCORERS}
    print("report")
    figures["report"] = run_child("report", spec, work, limit)
    return figures


def at_scale(args: argparse.Namespace, work: Path, source: Path, per_latent_bytes: float) -> list[dict]:
    """summary and report on synthetic run directories of each size in `--sizes`."""
    rows = []
    for n in args.sizes:
        need_gib = n * per_latent_bytes / 2**30
        row: dict[str, Any] = {"n": n, "records_gib": need_gib}
        if need_gib > args.max_disk_gib:
            rows.append(row | {"skipped": f"needs {need_gib:.1f} GiB of records (> --max-disk-gib)"})
            continue
        run_dir = work / f"synthetic-{n}"
        shutil.rmtree(run_dir, ignore_errors=True)
        print(f"synthetic run of {n:,} scored latents ({need_gib:.2f} GiB of records)")
        spec = {"source": str(source), "run_dir": str(run_dir), "n": n}
        try:
            made = run_child("synthetic", spec, work, args.max_rss_gib * 1024)
            if made is None:
                rows.append(row | {"skipped": "could not write it"})
                continue
            row["records_gib"] = made["records_bytes"] / 2**30
            for kind in ("summary", "report"):
                print(f"  {kind}")
                row[kind] = run_child(kind, spec, work, args.max_rss_gib * 1024)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        rows.append(row)
    return rows


def profiles(args: argparse.Namespace, spec: dict[str, Any], work: Path) -> None:
    """explain and score once more under cProfile on a fresh run; the top functions of each."""
    import pstats

    run_dir = fresh_run(work, "profiled")
    latents = args.profile_latents
    spec = {**spec, "run_dir": str(run_dir), "latents": latents, "explain_latents": latents}
    for kind in ("explain", "score"):
        profile = work / f"{kind}.prof"
        if run_child(kind, {**spec, "profile": str(profile)}, work, args.max_rss_gib * 1024) is None:
            continue
        stats = pstats.Stats(str(profile))
        total = stats.total_tt  # type: ignore[attr-defined]
        rows = stats.stats  # type: ignore[attr-defined]
        print(f"\nprofile of {kind} ({args.profile_latents} latents, {total:.2f} s profiled)")
        for title, key in (("own time", 2), ("cumulative time, autointerp functions", 3)):
            print(f"  top by {title}:")
            chosen = sorted(rows.items(), key=lambda item: -item[1][key])
            if key == 3:
                chosen = [item for item in chosen if "/autointerp/" in item[0][0]]
            table = [
                [f"{short(func)}", f"{100 * v[2] / total:.1f}%", f"{100 * v[3] / total:.1f}%", f"{v[1]:,}"]
                for func, v in chosen[: args.profile_top]
            ]
            benchlib.print_aligned(["function", "own", "cumulative", "calls"], table)


def short(func: tuple[str, int, str]) -> str:
    path, line, name = func
    if path == "~":
        return name
    parts = Path(path).parts
    tail = "/".join(parts[parts.index("autointerp") :] if "autointerp" in parts else parts[-2:])
    return f"{tail}:{line}:{name}"


def print_figures(args: argparse.Namespace, figures: dict[str, Any], scale: list[dict[str, Any]]) -> None:
    explain, score, bare, report = (figures[k] for k in ("explain", "score", "bare", "report"))
    explained = max(explain["explained"], 1)
    requests = max(score["requests"]["score"], 1)
    scored = max(score["scored"].values())
    first = max(explain["first_explained"], 1)
    rows = [
        [
            "explain, pipeline CPU per latent",
            f"{1000 * explain['cpu_s'] / explained:.1f} ms ({explained / explain['wall_s']:.0f} latents/s)",
            f"{explain['cpu_s'] / explained * 1e6 / 3600:.1f} CPU-hours",
        ],
        [
            "explain, pipeline CPU per further latent (a stage's start left out)",
            f"{1000 * explain['marginal_cpu_s']:.1f} ms",
            f"{explain['marginal_cpu_s'] * 1e6 / 3600:.1f} CPU-hours",
        ],
        [
            "explain, first call of the process (imports and start included)",
            f"{1000 * explain['first_cpu_s'] / first:.1f} ms per latent over {first} latents",
            "",
        ],
        [
            "score (detection + fuzzing), pipeline CPU per LLM request",
            f"{1000 * score['cpu_s'] / requests:.2f} ms ({score['cpu_s'] / scored:.2f} s per latent "
            f"for {requests / scored:.0f} requests; {requests / score['wall_s']:.0f} requests/s)",
            f"{score['cpu_s'] / scored * 1e6 / 3600:.0f} CPU-hours",
        ],
    ]
    for name, loop in (("bare openai client loop", bare), ("aiohttp loop", figures["aiohttp"])):
        if loop is None:
            continue
        loop_ms = 1000 * loop["cpu_s"] / max(loop["answered"], 1)
        rows.append(
            [
                f"{name}, CPU per request",
                f"{loop_ms:.2f} ms ({loop['answered'] / loop['wall_s']:.0f} requests/s)",
                f"score / this loop: {1000 * score['cpu_s'] / requests / loop_ms:.2f}x",
            ]
        )
    for name, (size, count) in figures["bytes"].items():
        what = "explanation record" if name == "explanations" else f"score record ({name})"
        per = size / max(count, 1)
        rows.append([f"{what} on disk", f"{per / 1024:.1f} KB per latent", f"{per * 1e6 / 1e9:.0f} GB"])
    if report is not None:
        pages = max(report["pages"], 1)
        ms, files = 1000 * report["wall_s"] / pages, report["files"] / pages
        bounded = "pages are bounded (--max-pages): see the synthetic runs below"
        rows.append(
            [
                "report of this run (a page per latent)",
                f"{ms:.1f} ms and {files:.2f} files per latent",
                bounded,
            ]
        )
    rows += growth_rows(scale)
    print(f"\n{benchlib.machine()}")
    server_ms = score["server_cpu_s"] / requests * 1000
    print(
        f"{args.num_latents:,}-latent coder over {args.tokens:,} tokens; explain: "
        f"{max(args.explain_latents, args.latents)} "
        f"latents, {explained} explained in the last call; score: {args.latents} latents, {scored} scored; "
        f"server CPU {server_ms:.2f} ms per score request\n"
    )
    benchlib.print_markdown(["what", "measured", "at a million latents"], rows)
    print()
    scale_rows = []
    for row in scale:
        cells: list[str] = [f"{row['n']:,}", f"{row['records_gib']:.2f}"]
        for kind in ("summary", "report"):
            result = row.get(kind)
            if row.get("skipped"):
                cells += [row["skipped"], ""]
            elif result is None:
                cells += ["failed", ""]
            elif "stopped" in result:
                cells += [result["stopped"], ""]
            else:
                cells += [f"{result['wall_s']:.1f} s", f"{result['maxrss_mib']:,.0f} MiB"]
        scale_rows.append(cells)
    header = ["scored latents", "records GiB", "summary time", "summary peak RSS", "report time"]
    benchlib.print_markdown([*header, "report peak RSS"], scale_rows)
    print(f"\n(peak RSS is ru_maxrss of the child; after imports alone it is {import_rss(scale)} MiB)")


def growth_rows(scale: list[dict[str, Any]]) -> list[list[str]]:
    """Time and peak RSS per scored latent of summary and report, from the smallest and largest measured
    sizes (the slope, so the interpreter's fixed cost drops out), and what that makes at a million."""
    rows = []
    for kind in ("summary", "report"):
        done = [(r["n"], r[kind]) for r in scale if isinstance(r.get(kind), dict) and "wall_s" in r[kind]]
        if len(done) < 2:
            continue
        (n0, a), (n1, b) = done[0], done[-1]
        seconds = (b["wall_s"] - a["wall_s"]) / (n1 - n0)
        mib = (b["maxrss_mib"] - a["maxrss_mib"]) / (n1 - n0)
        largest = f"{b['wall_s'] / 60:.1f} min, {b['maxrss_mib']:,.0f} MiB peak RSS at {n1:,}"
        rows.append(
            [
                f"{kind} on {n0:,} .. {n1:,} scored latents",
                f"{1000 * seconds:.2f} ms and {2**20 * mib:,.0f} bytes of peak RSS per further latent",
                largest if n1 >= 1_000_000 else f"{seconds * 1e6 / 3600:.1f} hours (linear)",
            ]
        )
    return rows


def import_rss(scale: list[dict[str, Any]]) -> str:
    values = [
        f"{row[k]['import_rss_mib']:,.0f}"
        for row in scale
        for k in ("summary", "report")
        if isinstance(row.get(k), dict) and "import_rss_mib" in row[k]
    ]
    return values[0] if values else "-"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-latents", type=int, default=16384, help="latents of the coder")
    parser.add_argument("--k", type=int, default=32, help="TopK of the coder")
    parser.add_argument("--tokens", type=int, default=300_032, help="tokens cached")
    parser.add_argument("--ctx-len", type=int, default=256)
    parser.add_argument(
        "--latents",
        type=int,
        default=100,
        help="latents scored (the first of those explained)",
    )
    parser.add_argument(
        "--explain-latents",
        type=int,
        default=1000,
        help="latents explained, a seeded sample of those firing >= 200 times",
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[1000, 2500, 5000],
        help="scored latents of the synthetic runs",
    )
    parser.add_argument("--max-disk-gib", type=float, default=10.0, help="largest synthetic run to write")
    parser.add_argument("--max-rss-gib", type=float, default=8.0, help="stop a child whose tree passes this")
    parser.add_argument("--profile", action="store_true", help="also profile explain and score (cProfile)")
    parser.add_argument("--profile-latents", type=int, default=20)
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument("--quick", action="store_true", help="a small setting that finishes in minutes")
    parser.add_argument("--work", type=Path, default=Path("/tmp/autointerp-bench-pipeline"))
    parser.add_argument("--reuse", action="store_true", help="keep the model, coder and cache of a last run")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "SPEC", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.num_latents, args.tokens, args.latents, args.sizes = 2048, 65_536, 20, [500, 1000]
        args.explain_latents = 100
        args.profile_latents = min(args.profile_latents, 10)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        kind, spec_file, result_file = args.child
        result = CHILDREN[kind](json.loads(Path(spec_file).read_text()))
        Path(result_file).write_text(json.dumps(result))
        return
    benchlib.exit_on_termination()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    port = benchlib.free_port()
    server = start_instant_server(port, work / "server.log")
    try:
        spec = prepare(args, work, f"http://127.0.0.1:{port}/v1")
        figures = pipeline(args, spec, work)
        per_latent = sum(size / max(count, 1) for size, count in figures["bytes"].values())
        scale = at_scale(args, work, work / "run", per_latent)
        print_figures(args, figures, scale)
        if args.profile:
            profiles(args, spec, work)
    finally:
        benchlib.stop_group(server)


if __name__ == "__main__":
    main()
