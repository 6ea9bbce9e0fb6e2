"""Load the subject model and its tokenizer from a hub id, a local folder or a `.gguf` file."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from autointerp.config import ModelConfig
from autointerp.errors import ConfigError
from autointerp.modelpath import resolve_model_path

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
    folder = resolve_model_path(cfg.path, "model.path")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        device_map = str(device) if device.type == "cuda" else None  # load straight onto the GPU
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, device_map=device_map)
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            "model.path",
            f"could not load {cfg.path!r} ({reason}); give a local folder, a .gguf file, "
            "or a hub id that is downloaded already (the hub may be offline)",
        ) from None
    model.to(device).eval()
    return Subject(model=model, tokenizer=tokenizer, device=device, dtype=dtype)
