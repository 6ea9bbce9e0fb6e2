"""The `autointerp` command line: thin wrappers that load a config and call one stage."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from autointerp.cli_output import StageProgress, console, show_library_warnings, stdout_console
from autointerp.config import RunConfig, load_config
from autointerp.errors import ConfigError, UserError
from autointerp.rundir import ShardSpec, claim_run_dir, require_run_dir

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Explain and score sparse autoencoder latents with LLMs.",
    pretty_exceptions_enable=False,
)
T = TypeVar("T")

ConfigArg = Annotated[Path, typer.Argument(help="YAML run config.", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key: --set cache.n_tokens=100000 (repeatable)."),
]
ShardOpt = Annotated[
    str | None,
    typer.Option(help="Do task I of N (0-based), e.g. 0/4; default from SLURM_ARRAY_TASK_ID/COUNT."),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace outputs made with a different config.")]
RetryOpt = Annotated[
    bool,
    typer.Option(
        "--retry-unparseable",
        help="Also redo latents whose answers could not be read or whose requests were rejected "
        "(latents that failed for a transient reason are always redone).",
    ),
]


@app.callback()
def _quiet_libraries() -> None:
    """The CLI owns the console: silence the progress bars and info logs of the model libraries."""
    import transformers
    from huggingface_hub.utils import disable_progress_bars

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # read when vLLM is imported, later

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    disable_progress_bars()
    show_library_warnings()


def _error(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True, markup=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a SLURM time limit, scancel, preemption), raised like Ctrl-C so that writes unwind cleanly."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def _quiet_interrupted_tasks() -> None:
    """An interrupt that lands inside an HTTP client's task is recorded on that task too, and asyncio logs
    it with a traceback ("Task exception was never retrieved") when the task is collected, after the stage
    has unwound: the interrupt is already reported, so those logs are dropped."""
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def _guard(action: Callable[[], T]) -> T:
    """Run a stage; bad input becomes a one-line error and exit code 2, SIGTERM exit code 143."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        return action()
    except UserError as exc:
        _error(escape(str(exc)))
        raise typer.Exit(2) from None
    except Terminated:
        _quiet_interrupted_tasks()
        console.print("terminated (SIGTERM); rerun the same command to resume")
        raise typer.Exit(143) from None
    except KeyboardInterrupt:
        _quiet_interrupted_tasks()
        console.print("interrupted; rerun the same command to resume")
        raise typer.Exit(130) from None
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _setup(
    config_path: Path, overrides: list[str] | None, shard: str | None, force: bool
) -> tuple[RunConfig, ShardSpec]:
    """Load the config and the shard; refuse --force in a shard; claim the run directory."""
    config = load_config(config_path, overrides or [])
    if not config.sparse_coder.hookpoints:
        from autointerp.coders import with_hookpoints  # reads the coders' configs: only when needed

        config = with_hookpoints(config)
    spec = ShardSpec.parse(shard) if shard else ShardSpec.from_env()
    if force and not spec.is_whole:
        raise UserError(
            "--force: not allowed with --shard or in a SLURM array task (the tasks would delete each "
            "other's work); run once without --shard (and outside the array) to replace stale outputs"
        )
    claim_run_dir(config.run_dir)
    return config, spec


@app.command()
def cache(config: ConfigArg, set_: SetOpt = None, shard: ShardOpt = None, force: ForceOpt = False) -> None:
    """Cache sparse activations of the subject model over the corpus."""
    from autointerp.cache import run_cache

    def action() -> None:
        cfg, spec = _setup(config, set_, shard, force)
        _train_if_enabled(cfg)
        with StageProgress("cache", "tokens") as progress:
            report = run_cache(cfg, spec, force=force, progress=progress.advance)
        for warning in report.warnings:
            console.print(f"[yellow]warning:[/] {escape(warning)}")
        _print_cache_report(cfg, report)

    _guard(action)


@app.command()
def train(config: ConfigArg, set_: SetOpt = None, force: ForceOpt = False) -> None:
    """Train the missing sparse coders of a config (sparse_coder.train) once; later runs reuse them."""

    def action() -> None:
        cfg = load_config(config, set_ or [])
        _print_train_report(_train_coders(cfg, force))

    _guard(action)


def _train_if_enabled(cfg: RunConfig) -> None:
    """With sparse_coder.train.enabled, train the missing coders before `cache` needs them."""
    if cfg.sparse_coder.train.enabled:
        report = _train_coders(cfg, force=False)
        if report.trained:
            _print_train_report(report)


def _train_coders(cfg: RunConfig, force: bool):
    """Train the missing coders under a progress bar."""
    from autointerp.training import ensure_coders

    with StageProgress("train", "tokens") as progress:
        report = ensure_coders(cfg, force=force, progress=progress.advance)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    return report


def _print_train_report(report) -> None:
    table = Table(title="train: sparse coders")
    columns = ("hookpoint", "status", "latents", "tokens", "FVU init", "FVU train", "FVU held out", "dead")
    for column in columns:
        table.add_column(column)
    for name, status in report.status.items():
        record = report.records.get(name)
        numbers = (
            [
                f"{record['num_latents']:,}",
                f"{record['train_tokens']:,}",
                *(f"{record[key]:.3f}" for key in ("fvu_init", "fvu_train", "fvu_heldout")),
                f"{record['dead_latents']:,}",
            ]
            if record
            else []
        )
        table.add_row(escape(name), escape(status), *numbers)
    stdout_console().print(table)


@app.command()
def explain(
    config: ConfigArg,
    set_: SetOpt = None,
    shard: ShardOpt = None,
    force: ForceOpt = False,
    retry_unparseable: RetryOpt = False,
) -> None:
    """Explain the selected latents with an explainer LLM."""
    from autointerp.explain import run_explain

    def action() -> None:
        cfg, spec = _setup(config, set_, shard, force)
        with StageProgress("explain", "latents", show_tokens=True) as progress:
            report = run_explain(cfg, spec, force, progress.advance, retry_unparseable)
        _print_explain_report(cfg, report)

    _guard(action)


def _print_explain_report(cfg: RunConfig, report) -> None:
    title = f"explain: {cfg.run_dir} ({report.seconds:.0f} s, {report.cache_hits} answers from the cache)"
    table = Table(title=escape(title))
    for column in (
        "hookpoint",
        "explained",
        "failed",
        "skipped",
        "done before",
        "retried",
        "not eligible",
        "prompt tok",
        "cached tok",
        "out tok",
    ):
        table.add_column(column)
    for name, t in report.tallies.items():
        counts = (t.explained, t.failed, t.skipped, t.already_done, t.retried, t.not_eligible)
        tokens = (t.prompt_tokens, t.cached_tokens, t.completion_tokens)
        table.add_row(escape(name), *(f"{v:,}" for v in (*counts, *tokens)))
    stdout_console().print(table)


def _print_cache_report(cfg: RunConfig, report) -> None:
    table = Table(title=escape(f"cache: {cfg.run_dir}"))
    for column in ("hookpoint", "status", "tokens", "mean L0", "dead latents", "bytes/act", "tok/s"):
        table.add_column(column)
    for name, status in report.status.items():
        stats = report.stats.get(name, {})
        table.add_row(
            escape(name),
            escape(status),
            f"{stats['num_tokens']:,}" if stats else "",
            f"{stats['mean_l0']:.1f}" if stats else "",
            f"{stats['dead_latents']:,}" if stats else "",
            f"{stats['bytes_per_activation']:.2f}" if stats else "",
            f"{stats['tokens_per_second']:,.0f}" if stats.get("tokens_per_second") else "",
        )
    stdout_console().print(table)


@app.command()
def score(
    config: ConfigArg,
    set_: SetOpt = None,
    shard: ShardOpt = None,
    force: ForceOpt = False,
    explanations: Annotated[
        Path | None,
        typer.Option(help="Score explanations made elsewhere (file or folder), as <run>/imports/<name>/."),
    ] = None,
    explanations_format: Annotated[
        str | None, typer.Option(help="autointerp, delphi, neuronpedia or table; default: detected.")
    ] = None,
    explanations_name: Annotated[
        str | None, typer.Option(help="Name of the imported set; default: the file's name.")
    ] = None,
    map_hookpoint: Annotated[
        list[str] | None,
        typer.Option(help="Map a hookpoint name of the file onto one of the config: FROM=TO (repeatable)."),
    ] = None,
    retry_unparseable: RetryOpt = False,
) -> None:
    """Score the explanations with every configured scorer; write scores/ and summary.json/.md."""

    def action() -> None:
        cfg, spec = _setup(config, set_, shard, force)
        if explanations is not None:
            cfg = _import(cfg, explanations, explanations_format, explanations_name, map_hookpoint)
        _score(cfg, spec, force, retry_unparseable)

    _guard(action)


def _import(cfg: RunConfig, path: Path, fmt: str | None, name: str | None, pairs: list[str] | None):
    """Write the imported explanation set; its config is the one to score."""
    from autointerp.interop.hookpoints import parse_mapping
    from autointerp.interop.imports import import_explanations

    result = import_explanations(cfg, path, fmt, name, parse_mapping(pairs or []))
    counts = ", ".join(f"{n:,} on {hp}" for hp, n in result.counts.items())
    console.print(f"imported {result.format} explanations into {result.config.run_dir}: {counts}")
    if result.without_explanation:
        console.print(f"[yellow]note:[/] {result.without_explanation:,} rows had no explanation")
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    return result.config


def _score(cfg: RunConfig, spec: ShardSpec, force: bool, retry_unparseable: bool = False) -> None:
    from autointerp.rundir import SCORES_DIR, SUMMARY_MD
    from autointerp.score import run_score, summary_rows, write_summary

    with StageProgress("score", "records") as progress:
        report = run_score(cfg, spec, force, progress.advance, retry_unparseable)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    _print_score_report(cfg, report)
    if not spec.is_whole:
        console.print("summary.json is written by a run without --shard, once every shard has finished")
        return
    summary = write_summary(cfg, cfg.run_dir / SCORES_DIR)
    _print_rows(f"scores: {cfg.run_dir / SUMMARY_MD}", summary_rows(summary))


def _print_score_report(cfg: RunConfig, report) -> None:
    table = Table(title=escape(f"score: {cfg.run_dir} ({report.seconds:.0f} s)"))
    columns = (
        "scorer",
        "hookpoint",
        "scored",
        "failed",
        "skipped",
        "done before",
        "retried",
        "not explained",
    )
    for column in (*columns, "prompt tok", "cached tok", "out tok"):
        table.add_column(column)
    for (name, hp), t in report.tallies.items():
        counts = (t.scored, t.failed, t.skipped, t.already_done, t.retried, t.not_explained)
        tokens = (t.prompt_tokens, t.cached_tokens, t.completion_tokens)
        table.add_row(escape(name), escape(hp), *(f"{v:,}" for v in (*counts, *tokens)))
    stdout_console().print(table)


def _print_rows(title: str, rows: list[dict[str, str]]) -> None:
    if not rows:
        console.print(f"{escape(title)}: no scores yet")
        return
    columns = ("scorer", "hookpoint", "metric", "mean [95% CI]", "chance", "scored", "failed", "skipped")
    table = Table(title=escape(title))
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(escape(row[column]) for column in columns))
    stdout_console().print(table)


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run directories or YAML configs (two or more runs).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder; default compare/ in the first run.")
    ] = None,
    scorer: Annotated[
        list[str] | None,
        typer.Option("--scorer", help="Compare only these scorers' scores (repeatable); default all found."),
    ] = None,
) -> None:
    """Compare runs through their explanations: latent matching, explanation similarity, scores."""
    from autointerp.compare import headline_tables, run_compare

    def action() -> None:
        with StageProgress("compare", "run pairs") as progress:
            report = run_compare(runs, out, scorers=scorer, progress=progress.advance)
        for note in report.notes + report.interpretability.notes:
            console.print(f"[yellow]note:[/] {escape(note)}")
        for table in headline_tables(report):
            stdout_console().print(table)
        if report.next_commands:
            console.print("next: explain the matched partners, then compare again:")
            for command in report.next_commands:
                stdout_console().print(f"  {command}", markup=False, highlight=False, soft_wrap=True)
        console.print(f"wrote {escape(str(report.out_dir))}")

    _guard(action)


@app.command()
def run(
    config: ConfigArg,
    set_: SetOpt = None,
    shard: ShardOpt = None,
    force: ForceOpt = False,
    retry_unparseable: RetryOpt = False,
) -> None:
    """Run every stage of a config in order: cache, explain, score, then the HTML report."""
    from autointerp.cache import run_cache
    from autointerp.explain import run_explain
    from autointerp.report import write_report

    def action() -> None:
        cfg, spec = _setup(config, set_, shard, force)
        if not cfg.explainer.model:  # checked by explain too, but only after the cache stage
            raise ConfigError(
                "explainer.model", "is required: a hub id, local folder, .gguf file or package:NAME"
            )
        _train_if_enabled(cfg)
        with StageProgress("cache", "tokens") as progress:
            cached = run_cache(cfg, spec, force=force, progress=progress.advance)
        _print_cache_report(cfg, cached)
        if any(status.startswith("parts") for status in cached.status.values()):
            console.print("next: merge the cache with a run without --shard once every shard has finished")
            return
        with StageProgress("explain", "latents", show_tokens=True) as progress:
            explained = run_explain(cfg, spec, force, progress.advance, retry_unparseable)
        _print_explain_report(cfg, explained)
        _score(cfg, spec, force, retry_unparseable)
        if spec.is_whole:
            console.print(f"report: {escape(str(write_report(cfg.run_dir)))}")

    _guard(action)


@app.command()
def calibrate(
    config: ConfigArg,
    set_: SetOpt = None,
    force: ForceOpt = False,
    hookpoint: Annotated[
        str | None, typer.Option(help="Hookpoint to plant latents at; default the first configured one.")
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated built-in token classes to plant (default all), e.g. digits,comma."
        ),
    ] = None,
    noise: Annotated[int, typer.Option(help="Random-direction noise latents planted beside the probes.")] = 4,
    fit_fraction: Annotated[
        float,
        typer.Option(help="Fraction of the cached sequences the probes are fitted on (the rest check them)."),
    ] = 0.25,
) -> None:
    """Check the configured scorers and explainer on planted latents whose true explanation is known."""
    from autointerp.calibrate import PlantSettings, classes_named, run_calibrate, scorer_rows

    def action() -> None:
        cfg = load_config(config, set_ or [])
        names = [name.strip() for name in classes.split(",") if name.strip()] if classes else None
        settings = PlantSettings(
            hookpoint or cfg.sparse_coder.hookpoints[0], classes_named(names), noise, fit_fraction
        )
        with _Steps() as steps:
            report = run_calibrate(cfg, settings, force=force, step=steps)
        columns = (
            "scorer",
            "metric",
            "chance",
            "true explanations",
            "shuffled true explanations",
            "explainer's explanations",
            "true - shuffled",
            "significant",
        )
        table = Table(title=escape(f"calibrate: {report.directory / 'calibration.md'}"))
        for column in columns:
            table.add_column(column)
        for row in scorer_rows(report.result):
            table.add_row(*(row[column] for column in columns))
        stdout_console().print(table)
        for line in report.result["headline"]:
            style = "yellow" if "CANNOT" in line or "NOT" in line else "green"
            console.print(f"[{style}]{escape(line)}[/]")
        console.print(f"report: {escape(str(report.directory / 'calibration.html'))}")

    _guard(action)


class _Steps:
    """One progress bar per calibration step, each closed when the next one starts."""

    UNITS = {"cache": "tokens", "explain": "latents"}

    def __init__(self) -> None:
        self.current: StageProgress | None = None

    def __call__(self, name: str) -> Callable[..., None] | None:
        self.close()
        if name == "plant":
            console.print("calibrate: fitting the planted probes (or reusing them)")
            return None
        self.current = StageProgress(name, self.UNITS.get(name, "records"), show_tokens=name == "explain")
        return self.current.advance

    def close(self) -> None:
        if self.current is not None:
            self.current.__exit__()
            self.current = None

    def __enter__(self) -> _Steps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory.")],
    max_pages: Annotated[
        int,
        typer.Option(
            help="Latents with a page of their own: all up to this many, else the best and worst per scorer."
        ),
    ] = 2000,
) -> None:
    """Render the static HTML report of a run: paged latent table, summary, plots, per-latent pages."""
    from autointerp.report import write_report

    def action() -> Path:
        require_run_dir(run_dir)
        return write_report(run_dir, max_pages)

    index = _guard(action)
    stdout_console().print(f"report: {index}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory, or an imported set <run>/imports/<name>.")],
    format_: Annotated[
        str, typer.Option("--format", help="neuronpedia, hf, saebench or delphi.", show_default=False)
    ],
    out: Annotated[Path | None, typer.Option(help="Output folder; default <run>/export/<format>.")] = None,
    model_id: Annotated[
        str | None, typer.Option(help="neuronpedia: model id; default: the subject model's name.")
    ] = None,
    source_set: Annotated[
        str, typer.Option(help="neuronpedia: source set; source ids are <layer>-<kind>-<set>.")
    ] = "autointerp",
    creator_id: Annotated[str, typer.Option(help="neuronpedia: creatorId / authorId.")] = "autointerp",
) -> None:
    """Export a run's explanations and scores for Neuronpedia, a Hugging Face dataset, SAEBench or delphi."""
    from autointerp.interop.export import ExportOptions, run_export

    options = ExportOptions(model_id=model_id, source_set=source_set, creator_id=creator_id)
    folder = _guard(lambda: run_export(run_dir, format_, out, options))
    stdout_console().print(f"export: {folder}", markup=False, highlight=False, soft_wrap=True)


def main() -> None:
    app(prog_name="autointerp", args=sys.argv[1:])


if __name__ == "__main__":
    main()
