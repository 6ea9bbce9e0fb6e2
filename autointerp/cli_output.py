"""What the CLI prints: consoles that suit terminals and log files, stage progress, library warnings.

SLURM and CI logs are not terminals: there tables are printed at their full width (never cut at 80
columns), messages are never wrapped, and progress is one plain line every PLAIN_PROGRESS_SECONDS.
"""

from __future__ import annotations

import logging
import time

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

LOG_WIDTH = 100_000
"""Console width when the output is not a terminal: tables take the width their cells need."""
PLAIN_PROGRESS_SECONDS = 10.0
"""Seconds between progress lines when stderr is not a terminal."""

console = Console(stderr=True, soft_wrap=True)
"""Messages, warnings, errors and progress (stderr)."""


def stdout_console() -> Console:
    """A console for results on stdout: the terminal's width, or unlimited in a log file or pipe."""
    out = Console()
    return out if out.is_terminal else Console(width=LOG_WIDTH)


class _ConsoleLogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        label = "[yellow]warning:[/]" if record.levelno >= logging.WARNING else "note:"
        console.print(f"{label} {escape(record.getMessage())}", highlight=False)


def show_library_warnings() -> None:
    """Print the warnings that autointerp's modules log (server waits, missing logprobs) as one line each."""
    logger = logging.getLogger("autointerp")
    if not any(isinstance(h, _ConsoleLogHandler) for h in logger.handlers):
        logger.addHandler(_ConsoleLogHandler(logging.WARNING))


class StageProgress:
    """Progress of one stage: a rich bar on a terminal, else a plain line every few seconds.

    The display starts with the first unit of work, so that setup errors stay one line.
    """

    def __init__(self, description: str, unit: str, show_tokens: bool = False):
        self.description, self.unit, self.show_tokens = description, unit, show_tokens
        self.tokens = self.done = self.total = 0
        self.started: float | None = None
        self.last_line = 0.0
        self.pending = False
        self.progress: Progress | None = None
        if console.is_terminal:
            columns = [
                TextColumn(f"[bold]{escape(description)}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(unit),
                TaskProgressColumn(),
                TextColumn(f"{{task.fields[rate]}} {unit}/s"),
            ]
            if show_tokens:
                columns.append(TextColumn("{task.fields[token_rate]} LLM tok/s"))
            self.progress = Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console)
            self.task = self.progress.add_task(description, total=None, rate="-", token_rate="-")

    def advance(self, amount: int, total: int, tokens: int = 0) -> None:
        """Count `amount` units done of `total`; `tokens` LLM tokens (prompt + completion) they took."""
        now = time.monotonic()
        if self.started is None:
            self.started = self.last_line = now
        self.done, self.total = self.done + amount, total
        self.tokens += tokens
        if self.progress is not None:
            self._update_bar()
            return
        self.pending = True
        if now - self.last_line >= PLAIN_PROGRESS_SECONDS:
            self._print_line(now)

    def _update_bar(self) -> None:
        assert self.progress is not None
        self.progress.start()
        self.progress.update(self.task, advance=0, completed=self.done, total=self.total)
        task = self.progress.tasks[self.task]
        elapsed = task.elapsed or 0.0
        token_rate = f"{self.tokens / elapsed:,.0f}" if elapsed and self.tokens else "-"
        self.progress.update(
            self.task, rate=f"{task.speed:,.1f}" if task.speed else "-", token_rate=token_rate
        )

    def _print_line(self, now: float) -> None:
        elapsed = now - (self.started or now)
        rate = self.done / elapsed if elapsed > 0 else 0.0
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.description}: {self.done:,}/{self.total:,} {self.unit}{share}"]
        parts.append(f"{rate:,.1f} {self.unit}/s" if rate else f"- {self.unit}/s")
        if self.show_tokens and elapsed > 0:
            parts.append(f"{self.tokens / elapsed:,.0f} LLM tok/s")
        parts.append(f"elapsed {_clock(elapsed)}")
        if rate and self.total > self.done:
            parts.append(f"left {_clock((self.total - self.done) / rate)}")
        console.print(", ".join(parts), markup=False, highlight=False)
        self.last_line, self.pending = now, False

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
        elif self.pending:
            self._print_line(time.monotonic())


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
