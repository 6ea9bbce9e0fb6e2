"""Gemma Scope folders: JumpReLU SAEs and transcoders that do not subtract `b_dec` from their input.

- Gemma Scope (Gemma 2): `params.npz` with `W_enc [d_in, n]`, `b_enc`, `W_dec [n, d_in]`, `b_dec`,
  `threshold` (Gemma Scope tutorial; SAE Lens `gemma_2_sae_huggingface_loader` also accepts `w_*` names).
- Gemma Scope 2 (Gemma 3, huggingface.co/google/gemma-scope-2-*): `params.safetensors` with `w_enc`,
  `b_enc`, `w_dec`, `b_dec`, `threshold` and, in affine skip transcoders, `affine_skip_connection
  [d_in, d_out]` (used only when decoding), beside a `config.json` holding `hf_hook_point_in` /
  `hf_hook_point_out` and `affine_connection`. Layout and hook rules as read by SAE Lens 6.54
  (`get_gemma_3_config_from_hf`, `_infer_gemma_3_raw_cfg_dict`, `gemma_3_sae_huggingface_loader`).

`acts = relu(pre) * (pre > threshold)` with `pre = x @ W_enc + b_enc`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor

from autointerp.coders.base import CoderFiles, HookInfo
from autointerp.coders.dense import DenseCoder, EncoderSpec

PARAMS_NPZ = "params.npz"
PARAMS_SAFETENSORS = "params.safetensors"
CONFIG_FILE = "config.json"
PARAM_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")
CONTEXT_SIZE = 1024
"""Training context of both Gemma Scope releases (SAE Lens `gemma_2` / `gemma_3` configs)."""


def detect(folder: Path) -> bool:
    return (folder / PARAMS_NPZ).is_file() or (folder / PARAMS_SAFETENSORS).is_file()


def load(folder: Path, hookpoint: str, location: str | None = None) -> DenseCoder:
    """`location` (`<repo_id>/<subfolder>` on the hub, else the folder) names the hook when no config does."""
    if (folder / PARAMS_SAFETENSORS).is_file():
        weights = _rename(load_file(folder / PARAMS_SAFETENSORS))
        files = CoderFiles("gemmascope", folder, (PARAMS_SAFETENSORS,))
    else:
        with np.load(folder / PARAMS_NPZ) as params:
            weights = _rename({name: torch.from_numpy(np.array(params[name])) for name in params.files})
        files = CoderFiles("gemmascope", folder, (PARAMS_NPZ,))
    transcoder = "affine_skip_connection" in weights or _is_transcoder(folder, location)
    spec = EncoderSpec(activation="jumprelu", subtract_b_dec=False, transcoder=transcoder)
    hook = hook_info(folder, location)
    return DenseCoder(hookpoint, {name: weights[name] for name in PARAM_NAMES}, spec, files, hook)


def hook_info(folder: Path, location: str | None = None) -> HookInfo:
    """The hook of a Gemma Scope folder, from its `config.json` or (as SAE Lens does) its names."""
    location = location or folder.as_posix()
    if not (folder / PARAMS_SAFETENSORS).is_file():
        return HookInfo(hook_name=_gemma2_hook_name(location), context_size=CONTEXT_SIZE, prepend_bos=True)
    return _gemma3_hook(location, _raw_config(folder), _is_transcoder(folder, location))


def _raw_config(folder: Path) -> dict[str, object]:
    return json.loads((folder / CONFIG_FILE).read_text()) if (folder / CONFIG_FILE).is_file() else {}


def _is_transcoder(folder: Path, location: str | None) -> bool:
    """Gemma Scope 2 transcoders have `hf_hook_point_out`, or live in `transcoder` / `clt` folders."""
    if not (folder / PARAMS_SAFETENSORS).is_file():
        return False
    name = location or folder.as_posix()
    return "hf_hook_point_out" in _raw_config(folder) or "transcoder" in name or "clt" in name


def _rename(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """`w_enc` -> `W_enc` (Gemma Scope 2 and some npz files use lower case)."""
    return {("W_" + name[2:] if name.startswith("w_") else name): t.float() for name, t in weights.items()}


def _layer(location: str) -> int | None:
    match = re.search(r"layer_(\d+)", location)
    return int(match.group(1)) if match else None


def _gemma3_hook(location: str, raw: dict[str, object], transcoder: bool) -> HookInfo:
    """Hook names of a Gemma Scope 2 folder: from `hf_hook_point_in`, else by SAE Lens's folder-name rules."""
    given = str(raw["hf_hook_point_in"]) if raw.get("hf_hook_point_in") else None
    match = re.search(r"layers\.(\d+)\.", given or "")
    layer = int(match.group(1)) if match else _layer(location)
    hook_name, hf_name = None, given
    for kind, tl_name, hf in _gemma3_kinds(layer) if layer is not None else ():
        by_config = given is not None and (given == hf or (kind == "transcoder" and transcoder))
        by_name = (
            given is None and ((kind == "transcoder") == transcoder) and (transcoder or kind in location)
        )
        if by_config or by_name:
            hook_name, hf_name = tl_name, given or hf
            break
    return HookInfo(hook_name=hook_name, hf_hook_name=hf_name, context_size=CONTEXT_SIZE, prepend_bos=True)


def _gemma3_kinds(layer: int) -> tuple[tuple[str, str, str], ...]:
    """(folder kind, TransformerLens name, HF hook point): SAE Lens `_infer_gemma_3_raw_cfg_dict`."""
    return (
        (
            "transcoder",
            f"blocks.{layer}.ln2.hook_normalized",
            f"model.layers.{layer}.pre_feedforward_layernorm.output",
        ),
        ("resid_post", f"blocks.{layer}.hook_resid_post", f"model.layers.{layer}.output"),
        ("attn_out", f"blocks.{layer}.attn.hook_z", f"model.layers.{layer}.self_attn.o_proj.input"),
        (
            "mlp_out",
            f"blocks.{layer}.hook_mlp_out",
            f"model.layers.{layer}.post_feedforward_layernorm.output",
        ),
    )


def _gemma2_hook_name(location: str) -> str | None:
    """SAE Lens `get_gemma_2_config_from_hf`: the repo name says res / mlp / att."""
    match = re.search(r"gemma-scope-[^/]*?-(res|mlp|att)", location)
    layer = _layer(location)
    if match is None or layer is None:
        return None
    return {
        "res": f"blocks.{layer}.hook_resid_post",
        "mlp": f"blocks.{layer}.hook_mlp_out",
        "att": f"blocks.{layer}.attn.hook_z",
    }[match.group(1)]
