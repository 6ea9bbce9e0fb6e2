"""Bad input at the command line: every case is one line `error: <key or file>: ...` with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from autointerp.cli import app

runner = CliRunner()
BASE = "model: {path: org/model, device: cpu}\nsparse_coder: {path: org/saes}\n"
SECRET = "sk-test-SECRET-0123456789"


def run_cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output.strip()


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "bad.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(BASE + f"out_dir: {tmp_path / 'run'}\n" + text)
    return path


FILE = "<file>"
CASES = [
    # (id, extra YAML or raw bytes, --set overrides, the key the line must start with)
    ("duplicate-section", "cache: {n_tokens: 5}\ncache: {ctx_len: 64}\n", [], FILE),
    ("duplicate-key", "name: a\nname: b\n", [], FILE),
    ("not-yaml", "cache: [unclosed\n", [], FILE),
    ("not-utf8", b"model: {path: org/model}\nname: caf\xe9\n", [], FILE),
    ("not-a-mapping", b"- a\n- b\n", [], FILE),
    ("huge-range", 'latents: {indices: "0:99999999999"}\n', [], "latents.indices"),
    ("empty-range", 'latents: {indices: "10:5"}\n', [], "latents.indices"),
    ("set-not-yaml", "", ["name=[a"], "name"),
    ("set-not-yaml-mapping", "", ["cache={"], "cache"),
    ("seed", "", ["seed=-1"], "seed"),
    ("max-tokens", "", ["explainer.max_tokens=0"], "explainer.max_tokens"),
    ("batch-size", "", ["embedding.batch_size=0"], "embedding.batch_size"),
    ("timeout", "", ["explainer.timeout=0"], "explainer.timeout"),
    ("tensor-parallel", "", ["explainer.tensor_parallel_size=0"], "explainer.tensor_parallel_size"),
    ("nan", "", ["intervention.target_kl=.nan"], "intervention.target_kl"),
    ("duplicate-scorer", "", ["scorers=[detection, detection]"], "scorers"),
    ("name-path", "", ["name=../elsewhere"], "name"),
    ("key-as-env", "", [f"explainer.api_key_env={SECRET}"], "explainer.api_key_env"),
    ("url-credentials", "", [f"explainer.base_url=https://me:{SECRET}@host/v1"], "explainer.base_url"),
    ("url-query-key", "", [f"scorer.base_url=https://host/v1?key={SECRET}"], "scorer.base_url"),
]


@pytest.mark.parametrize(("text", "overrides", "key"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize("command", ["cache", "explain", "score", "run"])
def test_bad_config_is_one_line_with_exit_code_2(tmp_path, command, text, overrides, key):
    config = _write(tmp_path, text)
    code, output = run_cli(command, config, *(a for o in overrides for a in ("--set", o)))
    prefix = f"error: {config}:" if key == FILE else f"error: {key}:"
    assert code == 2, output
    assert "Traceback" not in output and len(output.splitlines()) == 1, output
    assert output.startswith(prefix), output
    assert SECRET not in output and not (tmp_path / "run").exists()


def test_missing_config_file_names_the_file(tmp_path):
    code, output = run_cli("cache", tmp_path / "nope.yaml")
    assert (
        code == 2 and output.startswith(f"error: {tmp_path / 'nope.yaml'}:") and len(output.splitlines()) == 1
    )
