"""Turn a configured model path into something transformers (and vLLM) can load.

Accepted: an HF hub id, a local model folder, a `.gguf` file (dequantised once into a cached folder,
since GGUF loading is slow), or `package:<name>` for a model shipped inside an installed PyPI package.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
from pathlib import Path

import torch

from autointerp.errors import ConfigError
from autointerp.rundir import atomic_dir

PACKAGE_PREFIX = "package:"
MODEL_FILE_PATTERNS = (
    "*.json",
    "*.safetensors",
    "*.bin",
    "*.gguf",
    "*.pt",
    "*.model",
    "*.tiktoken",
    "merges.txt",
    "vocab.txt",
)
"""The files of a local model folder that define the model: configs, weights and tokenizer files."""


def resolve_model_path(path: str, key: str) -> str:
    """A local folder or hub id for `path`; `key` names the config key in error messages."""
    if path.startswith(PACKAGE_PREFIX):
        return resolve_model_path(str(packaged_model(path.removeprefix(PACKAGE_PREFIX), key)), key)
    local = Path(path).expanduser()
    if path.endswith(".gguf"):
        if not local.is_file():
            raise ConfigError(key, f"GGUF file {path!r} not found; check the path")
        return str(convert_gguf(local))
    if local.exists():
        if not (local / "config.json").is_file():
            raise ConfigError(key, f"{path!r} has no config.json; point it at a transformers model folder")
        return str(local)
    if path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise ConfigError(key, f"{path!r} does not exist; give an existing folder, .gguf file or hub id")
    return path


def local_model_files(path: str) -> list[Path]:
    """The files that define a configured local model, sorted: a folder's config, weight and tokenizer
    files, or a .gguf file; none for hub ids and packaged models (named by their id and package)."""
    if path.startswith(PACKAGE_PREFIX):
        return []
    local = Path(path).expanduser()
    if local.is_file():
        return [local]
    if not local.is_dir():
        return []
    return sorted({file for pattern in MODEL_FILE_PATTERNS for file in local.glob(pattern) if file.is_file()})


def packaged_model(package: str, key: str) -> Path:
    """The model shipped in an installed package: its one .gguf file or model folder, found without importing
    it, else what its `assemble()` or `get_model_path()` returns."""
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(key, f"package {package!r} is not installed; pip install {package}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.rglob("*.gguf")) + sorted(p.parent for p in folder.rglob("config.json"))
    if len(found) == 1:
        return found[0]
    module = importlib.import_module(spec.name)
    for accessor in ("assemble", "get_model_path"):
        if hasattr(module, accessor):
            return Path(getattr(module, accessor)())
    raise ConfigError(key, f"package {package!r} holds {len(found)} models; give the path of one")


def gguf_cache_root() -> Path:
    """Where converted GGUF models live: $AUTOINTERP_CACHE/gguf, default ~/.cache/autointerp/gguf."""
    return Path(os.environ.get("AUTOINTERP_CACHE", Path.home() / ".cache" / "autointerp")) / "gguf"


def convert_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF file into a float32 transformers folder, once, and return the folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stat = gguf.stat()
    ident = f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    target = gguf_cache_root() / f"{gguf.stem}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"
    if (target / "config.json").is_file():
        return target
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # weights are dequantised already; this lets save_pretrained write them
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target
