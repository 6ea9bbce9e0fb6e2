"""The built-in default end to end, reduced: `autointerp run` on configs/demo.yaml with real small models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from autointerp.records import read_records

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_reduced_demo_runs_every_stage_offline(tmp_path):
    """Trains the demo SAE on Gemma 3 270M, caches it, explains with SmolLM2, scores with three scorers and
    writes the report: the whole pipeline, offline, in one command (the demo config with smaller numbers)."""
    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    config["out_dir"] = str(tmp_path / "run")
    config["sparse_coder"]["path"] = str(tmp_path / "sae")
    config["sparse_coder"]["train"] |= {"n_tokens": 4096, "num_latents": 512, "epochs": 1, "batch_size": 256}
    config["cache"] |= {"n_tokens": 8192, "ctx_len": 128}
    config["latents"] |= {"sample": 4, "min_activations": 10}
    config["examples"] |= {"n_explain": 8, "n_test": 6, "n_negative": 6}
    config["explainer"]["backend"] = "transformers"  # no engine start: the quickest path on CPU
    config["scorers"] = ["detection", "fuzzing", "embedding"]
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [sys.executable, "-m", "autointerp", "run", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    run = tmp_path / "run"
    assert (tmp_path / "sae" / "layers.6" / "sae.safetensors").is_file(), "the demo SAE is trained first"
    explanations = read_records(run / "explanations", "layers.6")
    assert len(explanations) == 4
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["scorers"]) == {"detection", "fuzzing", "embedding"}
    for scorer in summary["scorers"].values():
        counts = scorer["layers.6"]
        assert counts["scored"] + counts["skipped"] + counts["failed"] == 4 and counts["pending"] == 0
    assert (run / "report" / "index.html").is_file()
    rows = (run / "report" / "rows" / "rows-00000.js").read_text()  # the latent table's data
    for latent in explanations:
        assert f'["layers.6",{latent},' in rows.replace(", ", ",")
        assert (run / "report" / "latents" / "layers.6" / f"{latent}.html").is_file()
