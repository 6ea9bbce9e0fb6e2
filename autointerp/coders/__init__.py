"""Sparse coder formats and `load_coders`, which builds one coder per configured hookpoint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import snapshot_download
from torch import nn

from autointerp.coders import gemmascope, neurons, saelens, sparsify
from autointerp.coders.base import SparseActivations, SparseCoder
from autointerp.config import SparseCoderConfig
from autointerp.errors import ConfigError
from autointerp.subject.hooks import find_module

__all__ = [
    "FORMATS",
    "Format",
    "SparseActivations",
    "SparseCoder",
    "load_coders",
    "load_file_coder",
    "register",
]


@dataclass(frozen=True)
class Format:
    """A coder format: file formats load `(folder, hookpoint)`, model formats `(base_model, hookpoint, k)`."""

    name: str
    load: Callable[..., SparseCoder]
    detect: Callable[[Path], bool] | None = None
    """Whether a folder holds this format's files; None for formats built from the model itself."""
    files: str = ""
    """The identifying files, for error messages."""


FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> None:
    """Add a format to the registry; names are unique."""
    if fmt.name in FORMATS:
        raise ValueError(f"sparse coder format {fmt.name!r} is registered twice")
    FORMATS[fmt.name] = fmt


register(Format("sparsify", sparsify.load, sparsify.detect, "cfg.json + sae.safetensors"))
register(Format("saelens", saelens.load, saelens.detect, "cfg.json + sae_weights.safetensors"))
register(Format("gemmascope", gemmascope.load, gemmascope.detect, "params.npz"))
register(Format("neurons", neurons.load_all))
register(Format("topk-neurons", neurons.load_topk))


def load_coders(cfg: SparseCoderConfig, base_model: nn.Module) -> dict[str, SparseCoder]:
    """One coder per hookpoint, in `cfg.hookpoints` order; hookpoints are module paths of `base_model`."""
    return {hookpoint: _load_one(cfg, base_model, hookpoint) for hookpoint in cfg.hookpoints}


def _load_one(cfg: SparseCoderConfig, base_model: nn.Module, hookpoint: str) -> SparseCoder:
    fmt = FORMATS.get(cfg.format)
    if fmt is not None and fmt.detect is None:
        return fmt.load(base_model, hookpoint, cfg.k)
    coder = load_file_coder(cfg, hookpoint)
    find_module(base_model, coder.module_path)
    return coder


def load_file_coder(cfg: SparseCoderConfig, hookpoint: str) -> SparseCoder:
    """A coder read from its files alone (no subject model), e.g. for its decoder directions."""
    fmt = FORMATS.get(cfg.format)
    if fmt is not None and fmt.detect is None:
        raise ConfigError("sparse_coder.format", f"{fmt.name} is built from the model, not read from files")
    folder = _coder_folder(cfg, hookpoint)
    fmt = fmt or _detect_format(folder)
    if fmt.detect is None or not fmt.detect(folder):
        raise ConfigError(
            "sparse_coder.format",
            f"is {fmt.name} but {folder} lacks its files ({fmt.files}); found {_listing(folder)}: "
            "fix the path or set format: auto",
        )
    return fmt.load(folder, hookpoint)


def _coder_folder(cfg: SparseCoderConfig, hookpoint: str) -> Path:
    """`<path>/<hookpoint>`, else `<path>` for a single hookpoint, else the hookpoint's folder on the hub."""
    root = Path(cfg.path).expanduser()
    if not root.exists():
        root = _download(cfg.path, hookpoint)
    if (root / hookpoint).is_dir():
        return root / hookpoint
    if len(cfg.hookpoints) == 1 and any(f.detect(root) for f in FORMATS.values() if f.detect):
        return root
    subfolders = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    raise ConfigError(
        "sparse_coder.hookpoints",
        f"no coder for {hookpoint!r} in {root}; its subfolders are: {', '.join(subfolders) or 'none'}",
    )


def _download(repo_id: str, hookpoint: str) -> Path:
    try:
        return Path(snapshot_download(repo_id, allow_patterns=[f"{hookpoint}/*"]))
    except Exception as exc:  # hub and validation errors come in many types; all mean "unusable"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            "sparse_coder.path",
            f"{repo_id!r} is not a local folder and could not be fetched from the HF hub (offline?): "
            f"{reason}",
        ) from None


def _detect_format(folder: Path) -> Format:
    for fmt in FORMATS.values():
        if fmt.detect is not None and fmt.detect(folder):
            return fmt
    expected = "; ".join(f"{f.files} ({f.name})" for f in FORMATS.values() if f.files)
    raise ConfigError(
        "sparse_coder.path",
        f"{folder} holds no known coder files; expected {expected}; found {_listing(folder)}",
    )


def _listing(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir())[:10] if folder.is_dir() else []
    return ", ".join(names) or "nothing"
