"""Content digests of a run's input files: the whole file is hashed, once per run directory (memoised by path,
size and mtime), and a changed byte of a corpus file, of a local model's weights or of a coder makes the cache
stale, whatever its position in the file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import HIDDEN, write_config
from test_cli import assert_one_line_error, invoke

from autointerp import fingerprint
from autointerp.cache import CacheReader
from autointerp.cache.inputs import refuse_other_cache
from autointerp.coders import sparsify
from autointerp.config import load_config
from autointerp.fingerprint import Digests

MIB = 1 << 20
EXPLAINER = ("--set", "explainer.backend=openai", "--set", "explainer.model=stub")
EXPLAINER += ("--set", "explainer.base_url=http://127.0.0.1:9/v1")


def change_byte(path: Path, offset: int) -> None:
    """Flip one byte in place: same path, same size, another content."""
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 1]))


def write_corpus(path: Path) -> Path:
    lines = [
        json.dumps({"text": f"Document {i}: the quick brown fox jumps over the lazy dog."})
        for i in range(300)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def counted(monkeypatch) -> list[Path]:
    """The files hashed (read) from here on."""
    reads: list[Path] = []
    real = fingerprint.sha256_file

    def counting(path: Path) -> str:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(fingerprint, "sha256_file", counting)
    return reads


def test_a_digest_is_the_whole_files_sha256_read_once_until_the_file_is_touched(tmp_path, counted):
    path = tmp_path / "weights.bin"
    path.write_bytes(os.urandom(2 * fingerprint.BLOCK_BYTES + 123))
    index = tmp_path / "run" / "digests.json"
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert Digests(index).file(path) == expected
    assert (
        Digests(index).file(tmp_path / "run" / ".." / "weights.bin") == expected
    )  # another process, same file
    assert counted == [path]
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert Digests(index).file(path) == expected
    assert len(counted) == 2, "a touched file is hashed again"


def test_a_damaged_memo_is_ignored_and_rebuilt(tmp_path, counted):
    path = tmp_path / "data.jsonl"
    path.write_text("{}\n")
    index = tmp_path / "digests.json"
    index.write_text('{"torn": ')
    assert Digests(index).file(path) == hashlib.sha256(b"{}\n").hexdigest()
    assert str(path.resolve()) in json.loads(index.read_text())
    Digests(index).file(path)
    assert len(counted) == 1


def test_a_coder_byte_past_the_first_mib_changes_the_fingerprint(tmp_path):
    """A bias (or JumpReLU threshold) stored after a MiB of decoder weights is part of the fingerprint."""
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(0)
    coder = SparseCoder(HIDDEN, SparseCoderConfig(num_latents=16384, k=4))
    folder = tmp_path / "layers.1"
    coder.save_to_disk(folder)
    weights = folder / sparsify.WEIGHTS_FILE
    before, first = weights.read_bytes(), sparsify.load(folder, "layers.1").fingerprint()
    with torch.no_grad():
        coder.encoder.bias[0] += 1.0
    coder.save_to_disk(folder)
    after = weights.read_bytes()
    assert len(after) == len(before) > 2 * MIB
    assert next(i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b) > MIB
    assert sparsify.load(folder, "layers.1").fingerprint() != first


def test_a_changed_data_file_makes_the_cache_stale(tmp_path, tiny_config, monkeypatch):
    """Corpus files are hashed by content: the same file named relative or absolute is the same corpus, a
    changed byte at the same path and size is another one, and a deleted one is not needed to read the
    cache."""
    data = write_corpus(tmp_path / "docs.jsonl")
    monkeypatch.chdir(tmp_path)
    common = ("--set", "dataset.path=json", "--set", "cache.n_tokens=512")
    relative = (*common, "--set", "dataset.data_files=[docs.jsonl]")
    absolute = (*common, "--set", f"dataset.data_files=[{data}]")
    code, output = invoke("cache", tiny_config, *relative)
    assert code == 0, output
    code, output = invoke("cache", tiny_config, *absolute)
    assert code == 0 and "already cached" in output, output
    size = data.stat().st_size
    data.write_text(data.read_text().replace("quick", "quack", 1))
    assert data.stat().st_size == size
    assert_one_line_error(*invoke("cache", tiny_config, *absolute), "dataset.data_files changed", "--force")
    assert_one_line_error(
        *invoke("explain", tiny_config, *absolute, *EXPLAINER),
        "dataset.data_files changed",
        "autointerp cache",
    )
    data.unlink()
    config = load_config(tiny_config, [arg for arg in absolute if arg != "--set"])
    for hookpoint in config.sparse_coder.hookpoints:
        refuse_other_cache(config, CacheReader(config.run_dir / "cache" / hookpoint), hookpoint)


def test_a_changed_model_weights_file_makes_the_cache_stale(tmp_path, tiny_model_dir, sparsify_coders_dir):
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    config = write_config(tmp_path / "config.yaml", model, sparsify_coders_dir, cache={"n_tokens": 512})
    code, output = invoke("cache", config)
    assert code == 0, output
    weights = model / "model.safetensors"
    change_byte(weights, weights.stat().st_size - 5)  # inside the last tensor's data
    changed = "model.files.model.safetensors changed"
    assert_one_line_error(*invoke("cache", config), changed, "--force")
    assert_one_line_error(*invoke("explain", config, *EXPLAINER), changed, "autointerp cache")
    assert invoke("cache", config, "--force")[0] == 0


def test_a_cache_keyed_by_an_earlier_version_is_refused_naming_the_fix(tiny_config):
    """A cache whose key holds paths and a coder's first-MiB hash (no file digests) is one clear error."""
    from autointerp.rundir import config_hash

    assert invoke("cache", tiny_config, "--set", "cache.n_tokens=512")[0] == 0
    for manifest_path in (load_config(tiny_config).run_dir / "cache").glob("*/manifest.json"):
        manifest = json.loads(manifest_path.read_text())
        key = manifest["cache_key"]
        del key["model"]["files"], key["sparse_coder"]["files"]
        key["sparse_coder"] |= {"cfg_sha256": "0" * 64, "weights_bytes": 1, "weights_head_sha256": "0" * 64}
        manifest["config_hash"] = config_hash(key)
        manifest_path.write_text(json.dumps(manifest))
    args = ("--set", "cache.n_tokens=512")
    not_recorded = "model.files, sparse_coder.files not recorded when it was made"
    assert_one_line_error(*invoke("cache", tiny_config, *args), not_recorded, "--force")
    assert_one_line_error(
        *invoke("explain", tiny_config, *args, *EXPLAINER), "model.files not recorded", "autointerp cache"
    )
    assert invoke("cache", tiny_config, *args, "--force")[0] == 0
