"""TransformerLens hook names and SAE Lens `hf_hook_name`s as taps (module input or output) of an HF model.

TransformerLens (`blocks.N.*`) names the residual stream between layers; HF models expose modules, so
`hook_resid_pre` of layer N is the *input* of `layers.N` and `hook_resid_post` its output. Models with
norms after attention and MLP (Gemma 2/3: `pre_feedforward_layernorm` + `post_*_layernorm`) write
`hook_attn_out` / `hook_mlp_out` from those norms, as Gemma Scope's `hf_hook_point_in` says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from autointerp.subject.hooks import Tap

TL_NAME = re.compile(r"^blocks\.(\d+)\.(.+)$")
ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")
MLP_NAMES = ("mlp", "feed_forward", "ffn")
OUT_PROJ_NAMES = ("o_proj", "c_proj", "out_proj", "dense")
DOWN_PROJ_NAMES = ("down_proj", "c_proj", "fc2", "dense_4h_to_h")
PRE_MLP_NORMS = ("pre_feedforward_layernorm", "post_attention_layernorm", "ln_2")
"""The norm whose output is the MLP's input; Llama's `post_attention_layernorm` is its ln2."""
INPUT_NORMS = ("input_layernorm", "ln_1")
SUPPORTED = (
    "hook_resid_pre",
    "hook_resid_mid",
    "hook_resid_post",
    "hook_attn_out",
    "hook_mlp_out",
    "hook_mlp_in",
    "ln1.hook_normalized",
    "ln2.hook_normalized",
    "mlp.hook_in",
    "mlp.hook_post",
    "attn.hook_z",
)


@dataclass(frozen=True)
class LayerStack:
    """Where the decoder layers of a base model are, e.g. `layers` (Llama, Gemma) or `h` (GPT-2)."""

    path: str
    layers: nn.ModuleList


def is_tl_name(name: str) -> bool:
    """Whether `name` looks like a TransformerLens hook name (`blocks.N.<hook>`)."""
    return TL_NAME.match(name) is not None


def find_layer_stack(base_model: nn.Module) -> LayerStack | None:
    """The first non-empty ModuleList of the model: its decoder layers."""
    for path, module in base_model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            return LayerStack(path, module)
    return None


def tap_for_tl_name(base_model: nn.Module, name: str) -> Tap | str:
    """The tap reading TransformerLens hook `name`, or why there is none (a message)."""
    match = TL_NAME.match(name)
    stack = find_layer_stack(base_model)
    if match is None or stack is None:
        return f"{name!r} is not a blocks.<layer>.<hook> name of a model with a layer list"
    index, hook = int(match.group(1)), match.group(2)
    if index >= len(stack.layers):
        return f"{name!r} names layer {index} but the model has {len(stack.layers)} layers"
    layer_path = f"{stack.path}.{index}"
    tap = _layer_tap(stack.layers[index], layer_path, hook)
    return tap if tap is not None else f"{name!r}: no module of {layer_path} matches {hook!r}"


def _layer_tap(layer: nn.Module, path: str, hook: str) -> Tap | None:
    attn, mlp = _child(layer, ATTN_NAMES), _child(layer, MLP_NAMES)
    pre_mlp_norm = _child(layer, PRE_MLP_NORMS)
    post_norms = _child(layer, ("pre_feedforward_layernorm",)) is not None
    if hook == "hook_resid_pre":
        return Tap(path, reads_input=True)
    if hook == "hook_resid_post":
        return Tap(path)
    if hook in ("hook_resid_mid", "hook_mlp_in") and pre_mlp_norm:
        return Tap(f"{path}.{pre_mlp_norm}", reads_input=True)
    if hook in ("ln2.hook_normalized", "mlp.hook_in") and mlp:
        return Tap(f"{path}.{mlp}", reads_input=True)
    if hook == "ln1.hook_normalized":
        norm = _child(layer, INPUT_NORMS)
        return Tap(f"{path}.{norm}") if norm else None
    if hook == "hook_attn_out":
        if post_norms and hasattr(layer, "post_attention_layernorm"):
            return Tap(f"{path}.post_attention_layernorm")
        return Tap(f"{path}.{attn}") if attn else None
    if hook == "hook_mlp_out":
        if post_norms and hasattr(layer, "post_feedforward_layernorm"):
            return Tap(f"{path}.post_feedforward_layernorm")
        return Tap(f"{path}.{mlp}") if mlp else None
    if hook == "attn.hook_z" and attn:
        proj = _child(getattr(layer, attn), OUT_PROJ_NAMES)
        return Tap(f"{path}.{attn}.{proj}", reads_input=True) if proj else None
    if hook == "mlp.hook_post" and mlp:
        down = _child(getattr(layer, mlp), DOWN_PROJ_NAMES)
        return Tap(f"{path}.{mlp}.{down}", reads_input=True) if down else None
    return None


def _child(module: nn.Module, names: tuple[str, ...]) -> str | None:
    return next((name for name in names if isinstance(getattr(module, name, None), nn.Module)), None)


def tap_for_hf_name(base_model: nn.Module, name: str) -> Tap | str:
    """`model.layers.6.output` / `...o_proj.input` / `model.layers.6` (output) relative to the base model."""
    reads_input = name.endswith(".input")
    path = name.removesuffix(".input").removesuffix(".output")
    parts = path.split(".")
    for start in range(len(parts)):
        candidate = ".".join(parts[start:])
        try:
            base_model.get_submodule(candidate)
        except AttributeError:
            continue
        return Tap(candidate, reads_input)
    return f"hf_hook_name {name!r} names no module of the model"


def canonical(base_model: nn.Module, tap: Tap) -> Tap:
    """One name for taps that read the same tensor: the input of layer N>0 is the output of layer N-1,
    and the output of the norm before an MLP is the MLP's input."""
    stack = find_layer_stack(base_model)
    if stack is None:
        return tap
    match = re.fullmatch(rf"{re.escape(stack.path)}\.(\d+)(?:\.(\w+))?", tap.module_path)
    if match is None:
        return tap
    index, child = int(match.group(1)), match.group(2)
    if child is None and tap.reads_input and index > 0:
        return Tap(f"{stack.path}.{index - 1}")
    layer = stack.layers[index]
    mlp = _child(layer, MLP_NAMES)
    if child is not None and child == _child(layer, PRE_MLP_NORMS) and not tap.reads_input and mlp:
        return Tap(f"{stack.path}.{index}.{mlp}", reads_input=True)
    return tap


def describe(tap: Tap) -> str:
    """`the input of layers.6` / `the output of layers.6`."""
    return f"the {'input' if tap.reads_input else 'output'} of {tap.module_path}"
