"""Read module activations in a forward pass that stops after the last module needed."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from autointerp.errors import ConfigError


@dataclass(frozen=True)
class Tap:
    """Where to read: a module path relative to the base model, and whether its input or output."""

    module_path: str
    reads_input: bool = False


def find_module(base_model: nn.Module, module_path: str) -> nn.Module:
    """The submodule at `module_path`, or a ConfigError that suggests close names."""
    try:
        return base_model.get_submodule(module_path)
    except AttributeError:
        names = [name for name, _ in base_model.named_modules() if name]
        close = difflib.get_close_matches(module_path, names, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else f"e.g. {', '.join(names[:3])}"
        raise ConfigError(
            "sparse_coder.hookpoints", f"{module_path!r} is not a module of the model; {hint}"
        ) from None


class _StopForward(Exception):
    pass


class ActivationReader:
    """Runs the base model and returns the activations at each tap, stopping early.

    The forward pass is interrupted as soon as every tap has been read, so layers after the deepest
    hookpoint (and the unembedding) never run.
    """

    def __init__(self, base_model: nn.Module, taps: Sequence[Tap]):
        self.base_model = base_model
        self.taps = list(dict.fromkeys(taps))
        self.modules = [find_module(base_model, tap.module_path) for tap in self.taps]

    @torch.inference_mode()
    def __call__(self, input_ids: Tensor) -> dict[Tap, Tensor]:
        captured: dict[Tap, Tensor] = {}
        handles = [
            self._register(tap, module, captured) for tap, module in zip(self.taps, self.modules, strict=True)
        ]
        try:
            self.base_model(input_ids=input_ids, use_cache=False)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        missing = [tap.module_path for tap in self.taps if tap not in captured]
        if missing:
            raise RuntimeError(f"modules {missing} did not run in the forward pass")
        return captured

    def _register(self, tap: Tap, module: nn.Module, captured: dict[Tap, Tensor]):
        def store(value: Tensor) -> None:
            captured[tap] = value[0] if isinstance(value, tuple) else value
            if len(captured) == len(self.taps):
                raise _StopForward

        if tap.reads_input:
            return module.register_forward_pre_hook(lambda _m, args: store(args[0]))
        return module.register_forward_hook(lambda _m, _args, output: store(output))
