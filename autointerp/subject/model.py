"""Load the subject model and its tokenizer from a hub id, a local folder or a `.gguf` file."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from autointerp.config import ModelConfig
from autointerp.errors import ConfigError
from autointerp.rundir import atomic_dir

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Subject:
    """The subject model, its tokenizer, and where it runs."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    dtype: torch.dtype

    @property
    def base_model(self) -> nn.Module:
        """The decoder stack (`model.model` for *ForCausalLM); hookpoints are relative to it."""
        return self.model.base_model


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("model.device", f"is {device!r} but no CUDA GPU is visible; use auto or cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return DTYPES[dtype]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_subject(cfg: ModelConfig) -> Subject:
    """Load model and tokenizer; the model is in eval mode on the configured device."""
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    folder = hf_folder(cfg.path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            "model.path",
            f"could not load {cfg.path!r} ({reason}); give a local folder, a .gguf file, "
            "or a hub id that is downloaded already (the hub may be offline)",
        ) from None
    model.to(device).eval()
    return Subject(model=model, tokenizer=tokenizer, device=device, dtype=dtype)


def hf_folder(path: str) -> str:
    """A folder or hub id transformers can load; a `.gguf` file is converted once and cached."""
    if path.endswith(".gguf"):
        gguf = Path(path).expanduser()
        if not gguf.is_file():
            raise ConfigError("model.path", f"GGUF file {path!r} not found; check the path")
        return str(convert_gguf(gguf))
    local = Path(path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ConfigError(
                "model.path", f"{path!r} has no config.json; point it at a transformers model folder"
            )
        return str(local)
    if path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise ConfigError(
            "model.path", f"{path!r} does not exist; give an existing folder, .gguf file or hub id"
        )
    return path


def gguf_cache_root() -> Path:
    return Path(os.environ.get("AUTOINTERP_CACHE", Path.home() / ".cache" / "autointerp")) / "gguf"


def convert_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF file into a float32 transformers folder, once (GGUF loading is slow)."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = gguf_cache_root() / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target
