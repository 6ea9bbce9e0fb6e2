"""Console output in log files (not terminals): tables at full width, progress one line every few seconds."""

from __future__ import annotations

from typer.testing import CliRunner

from autointerp import cli_output
from autointerp.cli import app


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_prints_a_line_every_few_seconds(monkeypatch, capsys):
    clock = Clock()
    monkeypatch.setattr(cli_output.time, "monotonic", clock)
    monkeypatch.setattr(cli_output, "PLAIN_PROGRESS_SECONDS", 5.0)
    with cli_output.StageProgress("explain", "latents", show_tokens=True) as progress:
        progress.advance(0, 100)  # the clock starts with the first report
        for _ in range(100):  # 100 latents over 20 s: 0.2 s each
            clock.now += 0.2
            progress.advance(1, 100, tokens=50)
    lines = capsys.readouterr().err.splitlines()
    assert 4 <= len(lines) <= 5, lines  # at 5, 10, 15 s, and the last one at 20 s
    assert lines[-1].startswith("explain: 100/100 latents (100%), 5.0 latents/s, 250 LLM tok/s")
    assert "left" in lines[0] and "\x1b" not in "".join(lines)


def test_tables_are_not_cut_in_logs_and_paths_are_not_markup(tiny_config, tmp_path):
    out = tmp_path / "odd[/x]name[bold]"
    result = CliRunner().invoke(
        app,
        [
            "cache",
            str(tiny_config),
            "--shard",
            "0/2",
            "--set",
            "cache.n_tokens=512",
            "--set",
            f"out_dir={out}",
        ],
    )
    assert result.exit_code == 0, result.output
    status = "parts of shard 0/2 cached; run without --shard to merge"
    lines = result.output.splitlines()
    assert any("layers.0.mlp" in line and status in line for line in lines), result.output
    assert any(f"cache: {out}" in line for line in lines), result.output
