"""Preemption: SIGTERM (SLURM time limit, scancel) or kill -9 at a random moment of `explain` or `score`,
then the same command again, ends with the records an uninterrupted run writes."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from openai_stub import StubServer
from test_retry import HP, answer, cached_run, copy_run, outcomes  # noqa: F401 - fixture

from autointerp.config import load_config
from autointerp.explain import run_explain
from autointerp.rundir import EXPLANATIONS_DIR, SCORES_DIR


def slow_answer(messages: list[dict]) -> str:
    time.sleep(0.05)
    return answer(messages)


def command(stage: str, config: Path, stub: StubServer) -> list[str]:
    overrides = [
        f"explainer.base_url={stub.base_url}",
        "explainer.max_concurrency=1",
        "scorers=[detection]",
        "scorer.max_concurrency=1",
    ]
    return [
        sys.executable,
        "-m",
        "autointerp",
        stage,
        str(config),
        *(a for o in overrides for a in ("--set", o)),
    ]


def lines(folder: Path) -> int:
    return sum(p.read_text().count("\n") for p in folder.glob("*.jsonl")) if folder.is_dir() else 0


def interrupt(stage: str, config: Path, stub: StubServer, sig: signal.Signals, after: int) -> int:
    """Run the stage in a subprocess and send `sig` once `after` records are written; its exit code."""
    run_dir = load_config(config).run_dir
    folder = run_dir / (EXPLANATIONS_DIR if stage == "explain" else f"{SCORES_DIR}/detection")
    process = subprocess.Popen(command(stage, config, stub), stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and lines(folder) < after:
        time.sleep(0.01)
    assert process.poll() is None, process.stderr.read() if process.stderr else ""
    process.send_signal(sig)
    process.wait(timeout=60)
    stderr = process.stderr.read() if process.stderr else ""
    assert "Traceback" not in stderr, stderr
    return process.returncode


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
@pytest.mark.parametrize("stage", ["explain", "score"])
def test_an_interrupted_stage_resumes_to_the_uninterrupted_result(cached_run, tmp_path, stage, sig):  # noqa: F811
    with StubServer(slow_answer) as stub:
        whole = copy_run(cached_run, tmp_path / "whole")
        for name in ("explain", "score"):
            subprocess.run(command(name, whole, stub), check=True, capture_output=True, timeout=300)
        expected = outcomes(load_config(whole))

        cut = copy_run(cached_run, tmp_path / "cut")
        if stage == "score":
            subprocess.run(command("explain", cut, stub), check=True, capture_output=True, timeout=300)
        after = random.Random(f"{stage}{sig}").randint(1, 5)  # a seeded random moment
        code = interrupt(stage, cut, stub, sig, after)
        assert code == (143 if sig == signal.SIGTERM else -9)
        for name in ("explain", "score"):
            resumed = subprocess.run(command(name, cut, stub), capture_output=True, text=True, timeout=300)
            assert resumed.returncode == 0, resumed.stderr
    assert outcomes(load_config(cut)) == expected
    assert load_config(cut).run_dir != load_config(whole).run_dir


def test_no_record_is_written_twice_by_a_resumed_explain(cached_run, tmp_path):  # noqa: F811
    """A resumed run appends only the latents it had not finished."""
    path = copy_run(cached_run, tmp_path / "run")
    with StubServer(answer) as stub:
        config = load_config(path, [f"explainer.base_url={stub.base_url}"])
        run_explain(config)
        again = run_explain(config)
    assert all(t.explained == 0 for t in again.tallies.values())
    text = (config.run_dir / EXPLANATIONS_DIR / f"{HP}.jsonl").read_text().splitlines()
    assert len(text) == len({line.split(",")[0] for line in text})


def test_a_sigterm_inside_a_client_task_is_reported_once_without_a_traceback(caplog, capsys):
    """SIGTERM can land while an HTTP client's own task runs: the stage unwinds (exit 143), and asyncio's
    later log of the exception that task kept is not shown."""
    import asyncio
    import gc
    import logging

    import typer

    from autointerp import cli

    async def stage() -> None:
        async def client_write() -> None:
            raise cli.Terminated  # where the signal handler raised

        asyncio.ensure_future(client_write())
        await asyncio.sleep(5)

    level = logging.getLogger("asyncio").level
    try:
        with pytest.raises(typer.Exit) as stopped:
            cli._guard(lambda: asyncio.run(stage()))
        code = stopped.value.exit_code
        del stopped  # it holds the task, through the interrupt's traceback
        gc.collect()  # the task goes, and asyncio logs what it kept
    finally:
        logging.getLogger("asyncio").setLevel(level)
    assert code == 143
    shown = caplog.text + capsys.readouterr().err
    assert "never retrieved" not in shown and "Traceback" not in shown
