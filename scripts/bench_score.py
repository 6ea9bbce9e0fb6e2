"""Benchmark detection + fuzzing scoring: the single-token protocol vs the paper's 5-per-prompt protocol.

Takes a run that is cached and explained (default: `configs/demo.yaml`, run first with `make demo` or
`autointerp cache` + `autointerp explain`). For each (backend, protocol) the explanations are copied into
a fresh run directory (the cache is linked, not copied) and `run_score` scores the same latents and the
same held-out examples, in a fresh subprocess, with scorers [detection, fuzzing]:

* backends: `vllm` (in-process engine, prefix caching on) and `openai` (vLLM's OpenAI server on loopback,
  same engine settings, started and stopped by this script);
* protocols: `examples_per_prompt: 1` (answer read as P(1) from one token's logprobs) and `5` (a list of
  0/1 parsed from text).

Per row it prints: engine start, scoring wall time per latent (engine start excluded), prompt tokens per
latent (total and cached), output tokens, parse failures (examples), and the mean width over latents of
the 95% bootstrap CI (over a latent's examples) of balanced accuracy, and of AUROC where it exists.

    python scripts/bench_score.py --latents 10 --n-test 20
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import benchlib

VARIANTS = (("vllm", 1), ("vllm", 5), ("openai", 1), ("openai", 5))
BOOTSTRAP = 1000


def overrides(
    args: argparse.Namespace, run_dir: Path, backend: str, protocol: int, base_url: str
) -> list[str]:
    out = [
        f"out_dir={run_dir}",
        "scorers=[detection, fuzzing]",
        f"latents.sample={args.latents}",
        f"examples.n_test={args.n_test}",
        f"examples.n_negative={args.n_test}",
        f"scorer.backend={backend}",
        f"scorer.examples_per_prompt={protocol}",
    ]
    return out + ([f"scorer.base_url={base_url}", "scorer.max_retries=0"] if backend == "openai" else [])


def child(args: argparse.Namespace) -> None:
    """One variant in this process: run_score with a timed client start; write the figures as JSON."""
    import autointerp.score.phases as phases
    from autointerp.config import LLMSettings, load_config
    from autointerp.llm import LLMClient
    from autointerp.score.stage import run_score

    spec = json.loads(Path(args.spec).read_text())
    config = load_config(spec["config"], spec["overrides"])
    timing: dict[str, float] = {}
    make_client = phases.make_client

    def timed(settings: LLMSettings) -> LLMClient:
        started = time.perf_counter()
        client = make_client(settings)
        timing["start"] = time.perf_counter() - started
        return client

    phases.make_client = timed  # the scorer LLM phase looks make_client up in its own module
    report = run_score(config)
    Path(args.result).write_text(json.dumps(figures(config, report, timing.get("start", 0.0))))


def figures(config: Any, report: Any, start: float) -> dict[str, Any]:
    from autointerp.records import read_records

    hp = config.sparse_coder.hookpoints[0]
    rows: dict[str, Any] = {"start_s": start, "scoring_s": report.phases["scorer_llm"] - start}
    for scorer in ("detection", "fuzzing"):
        records = [r for r in read_records(config.run_dir / "scores" / scorer, hp).values() if r["examples"]]
        usage = [r["usage"] for r in records if r["usage"]]
        rows[scorer] = {
            "latents": len(records),
            "failed_latents": sum(1 for r in records if r["error"]),
            "parse_failures": sum(1 for r in records for e in r["examples"] if e["error"]),
            "prompt_tokens": sum(u["prompt_tokens"] for u in usage),
            "cached_tokens": sum(u["cached_tokens"] for u in usage),
            "completion_tokens": sum(u["completion_tokens"] for u in usage),
            "ci_width_balanced_accuracy": mean_ci_width(records, "balanced_accuracy"),
            "ci_width_auroc": mean_ci_width(records, "auroc"),
            "mean_balanced_accuracy": _mean([r["metrics"].get("balanced_accuracy") for r in records]),
        }
    return rows


def mean_ci_width(records: list[dict[str, Any]], metric: str) -> float | None:
    """Mean over latents of the 95% bootstrap CI width of `metric`, resampling a latent's examples."""
    import numpy as np

    from autointerp.score.metrics import binary_metrics

    widths = []
    for record in records:
        examples = [e for e in record["examples"] if e["prediction"] is not None]
        if not examples or metric == "auroc" and examples[0]["probability"] is None:
            continue
        rng = np.random.default_rng(0)
        values = []
        for _ in range(BOOTSTRAP):
            sample = [examples[i] for i in rng.integers(len(examples), size=len(examples))]
            labels = [e["label"] for e in sample]
            probs = [e["probability"] for e in sample] if metric == "auroc" else None
            value = binary_metrics(labels, [e["prediction"] for e in sample], probs)[metric]
            if value is not None:
                values.append(value)
        if values:
            low, high = np.percentile(values, [2.5, 97.5])
            widths.append(float(high - low))
    return _mean(widths)


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def prepare(args: argparse.Namespace) -> Path:
    """Cache and explain the source run (skipped when already done); its run directory."""
    for stage in ("cache", "explain"):
        command = [
            sys.executable,
            "-m",
            "autointerp",
            stage,
            str(args.config),
            "--set",
            f"latents.sample={args.latents}",
        ]
        subprocess.run(command, check=True, cwd=benchlib.REPO)
    from autointerp.config import load_config

    return load_config(args.config).run_dir.resolve()


def variant_dir(source: Path, work: Path, name: str) -> Path:
    run_dir = work / name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    (run_dir / "cache").symlink_to(source / "cache")
    shutil.copytree(source / "explanations", run_dir / "explanations")
    return run_dir


def run_variant(args, source: Path, work: Path, backend: str, protocol: int, base_url: str) -> dict | None:
    name = f"{backend}-{protocol}"
    run_dir = variant_dir(source, work, name)
    spec = {"config": str(args.config), "overrides": overrides(args, run_dir, backend, protocol, base_url)}
    (run_dir / "spec.json").write_text(json.dumps(spec))
    result = run_dir / "result.json"
    arguments = [__file__, "--child", "--spec", str(run_dir / "spec.json"), "--result", str(result)]
    print(f"running {name} ...", flush=True)
    measured = benchlib.run_child(arguments, result, run_dir / "log.txt", name)
    return None if measured is None else {"backend": backend, "protocol": protocol, **measured}


def print_table(rows: list[dict[str, Any]]) -> None:
    header = ["backend", "per prompt", "scorer", "latents", "start s", "s/latent", "prompt tok/latent"]
    header += ["cached", "out tok/latent", "parse failures", "CI width bal.acc", "CI width AUROC", "bal.acc"]
    table = []
    for row in rows:
        for scorer in ("detection", "fuzzing"):
            s = row[scorer]
            n = max(s["latents"], 1)
            cells = [row["backend"], row["protocol"], scorer, s["latents"], f"{row['start_s']:.1f}"]
            cells += [f"{row['scoring_s'] / n / 2:.2f}", f"{s['prompt_tokens'] / n:,.0f}"]
            cells += [
                f"{s['cached_tokens'] / max(s['prompt_tokens'], 1):.0%}",
                f"{s['completion_tokens'] / n:.1f}",
            ]
            cells += [s["parse_failures"]]
            cells += [benchlib.fmt(s[key], ".3f") for key in ("ci_width_balanced_accuracy", "ci_width_auroc")]
            cells += [benchlib.fmt(s["mean_balanced_accuracy"], ".3f")]
            table.append(cells)
    benchlib.print_markdown(header, table)
    print(
        "\ns/latent: scoring wall time (both scorers share the engine) / latents / 2, engine start excluded."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=benchlib.REPO / "configs" / "demo.yaml")
    parser.add_argument(
        "--latents", type=int, default=10, help="latents sampled (the demo's sample is reused)"
    )
    parser.add_argument("--n-test", type=int, default=20, help="activating and non-activating examples each")
    parser.add_argument("--work", type=Path, default=benchlib.REPO / "runs" / "bench-score")
    parser.add_argument("--variants", nargs="+", default=[f"{b}-{p}" for b, p in VARIANTS])
    parser.add_argument("--kv-cache-gib", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    benchlib.exit_on_termination()
    machine = benchlib.machine(benchlib.vllm())
    print(f"machine: {machine}")
    source = prepare(args)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    wanted = [tuple(v.split("-")) for v in args.variants]
    for backend in ("vllm", "openai"):
        protocols = [int(p) for b, p in wanted if b == backend]
        if not protocols:
            continue
        server, base_url = None, ""
        if backend == "openai":
            from autointerp.config import load_config
            from autointerp.modelpath import resolve_model_path

            model = load_config(args.config).scorer_llm.model
            port = benchlib.free_port()
            server, seconds = benchlib.start_server(
                resolve_model_path(model, "scorer.model"),
                model,
                port,
                args.kv_cache_gib,
                args.work / "server.log",
            )
            print(f"vLLM server ready in {seconds:.1f} s")
            base_url = f"http://127.0.0.1:{port}/v1"
        try:
            rows += [
                r for p in protocols if (r := run_variant(args, source, args.work, backend, p, base_url))
            ]
        finally:
            if server is not None:
                benchlib.stop_group(server)
    print_table(rows)
    (args.work / "results.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
