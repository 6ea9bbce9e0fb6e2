"""Foreign layer and hookpoint names (TransformerLens hooks, Neuronpedia source ids, HF module paths) mapped
onto a config's hookpoints."""

from __future__ import annotations

import re
from collections.abc import Iterable

from autointerp.errors import UserError

Site = tuple[int, str]
"""(layer, kind) with kind one of res (a block's output), mlp (MLP output), attn (attention output)."""

_MODULE = re.compile(
    r"^(?:model\.|transformer\.|gpt_neox\.|language_model\.)*(?:layers|h|blocks)\.(\d+)"
    r"(?:\.(mlp|self_attn|attn|attention))?$"
)
_TL_HOOK = re.compile(r"^blocks\.(\d+)\.hook_(resid_post|resid_pre|mlp_out|attn_out)$")
_NEURONPEDIA = re.compile(r"^(\d+)-(.+)$")
_KINDS = {"mlp": "mlp", "self_attn": "attn", "attn": "attn", "attention": "attn"}


def site(name: str) -> Site | None:
    """The (layer, kind) a hookpoint name denotes, or None when it is not recognised."""
    name = name.strip()
    if match := _MODULE.match(name):
        return int(match[1]), _KINDS.get(match[2] or "", "res")
    if match := _TL_HOOK.match(name):
        layer, hook = int(match[1]), match[2]
        if hook == "resid_pre":
            return (layer - 1, "res") if layer > 0 else None
        return layer, {"resid_post": "res", "mlp_out": "mlp", "attn_out": "attn"}[hook]
    if match := _NEURONPEDIA.match(name):
        words = set(re.split(r"[-_]", match[2].lower()))
        kinds = {kind for word, kind in (("res", "res"), ("mlp", "mlp"), ("att", "attn")) if word in words}
        return (int(match[1]), kinds.pop()) if len(kinds) == 1 else None
    return None


def parse_mapping(pairs: Iterable[str]) -> dict[str, str]:
    """`FROM=TO` strings (from --map-hookpoint) as a dict."""
    mapping = {}
    for pair in pairs:
        source, sep, target = pair.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise UserError(f"--map-hookpoint: expected FROM=TO (e.g. 6-res-jb=layers.6), got {pair!r}")
        mapping[source.strip()] = target.strip()
    return mapping


class HookpointMapper:
    """Maps foreign names onto `hookpoints`: an explicit mapping first, then the same name, then the same
    (layer, kind) site when exactly one configured hookpoint has it."""

    def __init__(self, hookpoints: Iterable[str], explicit: dict[str, str] | None = None):
        self.hookpoints = list(hookpoints)
        self.explicit = explicit or {}
        for source, target in self.explicit.items():
            if target not in self.hookpoints:
                raise UserError(
                    f"--map-hookpoint {source}={target}: {target} is not a hookpoint of this config "
                    f"({', '.join(self.hookpoints)})"
                )
        self.sites: dict[Site, list[str]] = {}
        for hookpoint in self.hookpoints:
            if (where := site(hookpoint)) is not None:
                self.sites.setdefault(where, []).append(hookpoint)

    def map(self, name: str | None) -> str | None:
        """The configured hookpoint for `name`, or None when it does not map. A missing name maps onto the
        only hookpoint of a one-hookpoint config."""
        if name is None or name == "":
            return self.hookpoints[0] if len(self.hookpoints) == 1 else None
        if name in self.explicit:
            return self.explicit[name]
        if name in self.hookpoints:
            return name
        where = site(name)
        matches = self.sites.get(where, []) if where is not None else []
        return matches[0] if len(matches) == 1 else None
