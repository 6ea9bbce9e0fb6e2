"""Sparse coder formats and `load_coders`, which builds one coder per hookpoint.

`sparse_coder.path` is a local folder or HF repo (one subfolder per hookpoint, or one coder), or names
coders: `saelens:<release>/<sae_id>` (sae_id may be a pattern), `hf:<org>/<repo>/<folder>`, or a list of
these. Hookpoints are module paths or TransformerLens hook names; when none are configured they come from
the coders' own hook names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import snapshot_download
from torch import nn

from autointerp.coders import gemmascope, llamascope, neurons, saelens, sparsify
from autointerp.coders.base import HookInfo, SparseActivations, SparseCoder
from autointerp.coders.sources import Source, is_named, named_sources
from autointerp.config import RunConfig, SparseCoderConfig
from autointerp.errors import ConfigError
from autointerp.subject.hooknames import canonical, describe, is_tl_name, tap_for_hf_name, tap_for_tl_name
from autointerp.subject.hooks import Tap, find_module

__all__ = [
    "FORMATS",
    "Format",
    "SparseActivations",
    "SparseCoder",
    "hookpoint_names",
    "load_coders",
    "load_file_coder",
    "register",
    "with_hookpoints",
]

HOOKPOINTS_KEY = "sparse_coder.hookpoints"


@dataclass(frozen=True)
class Format:
    """A coder format: file formats load `(folder, hookpoint, source)`, others `(model, hookpoint, k)`."""

    name: str
    load: Callable[..., SparseCoder]
    detect: Callable[[Path], bool] | None = None
    """Whether a folder holds this format's files; None for formats built from the model itself."""
    files: str = ""
    """The identifying files, for error messages."""
    hook: Callable[[Path, Source], HookInfo] | None = None
    """The hook the files record, read without the weights; None when the format records none."""


FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> None:
    """Add a format to the registry; names are unique."""
    if fmt.name in FORMATS:
        raise ValueError(f"sparse coder format {fmt.name!r} is registered twice")
    FORMATS[fmt.name] = fmt


def _load_saelens(folder: Path, hookpoint: str, source: Source) -> SparseCoder:
    return saelens.load(folder, hookpoint, source.scaling_factor, source.model_kwargs)


def _load_gemmascope(folder: Path, hookpoint: str, source: Source) -> SparseCoder:
    return gemmascope.load(folder, hookpoint, source.location)


def _load_llamascope(folder: Path, hookpoint: str, source: Source) -> SparseCoder:
    return llamascope.load(folder, hookpoint, source.scaling_factor)


def _load_sparsify(folder: Path, hookpoint: str, source: Source) -> SparseCoder:
    return sparsify.load(folder, hookpoint)


register(Format("sparsify", _load_sparsify, sparsify.detect, "cfg.json + sae.safetensors"))
register(
    Format(
        "saelens",
        _load_saelens,
        saelens.detect,
        "cfg.json + sae_weights.safetensors",
        lambda folder, _source: saelens.hook_info(saelens.read_cfg(folder)),
    )
)
register(
    Format(
        "gemmascope",
        _load_gemmascope,
        gemmascope.detect,
        "params.npz or params.safetensors",
        lambda folder, source: gemmascope.hook_info(folder, source.location),
    )
)
register(
    Format(
        "llamascope",
        _load_llamascope,
        llamascope.detect,
        "hyperparams.json + checkpoints/final.safetensors",
        lambda folder, _source: llamascope.hook_info(folder),
    )
)
register(Format("neurons", neurons.load_all))
register(Format("topk-neurons", neurons.load_topk))


@dataclass(frozen=True)
class _Entry:
    hookpoint: str | None
    """The configured hookpoint; None = named after the coder's hook."""
    source: Source


def load_coders(cfg: SparseCoderConfig, base_model: nn.Module) -> dict[str, SparseCoder]:
    """One coder per hookpoint, in order; each reads the tap its hookpoint (or its own hook name) maps to."""
    fmt = FORMATS.get(cfg.format)
    if fmt is not None and fmt.detect is None:
        return {hp: fmt.load(base_model, hp, cfg.k) for hp in _required_hookpoints(cfg)}
    coders: dict[str, SparseCoder] = {}
    for entry in _entries(cfg):
        coder = _load_entry(cfg, entry)
        _attach(coder, entry, base_model)
        if coder.hookpoint in coders:
            raise ConfigError(
                HOOKPOINTS_KEY,
                f"two coders read {coder.hookpoint}: give each its own run, or list distinct hookpoints",
            )
        coders[coder.hookpoint] = coder
    return coders


def hookpoint_names(cfg: SparseCoderConfig) -> tuple[str, ...]:
    """The hookpoints of `cfg`: the configured ones, else each coder's hook name (reads configs only)."""
    if cfg.hookpoints:
        return cfg.hookpoints
    fmt = FORMATS.get(cfg.format)
    if fmt is not None and fmt.detect is None:
        return _required_hookpoints(cfg)
    names = tuple(_inferred_name(cfg, entry.source) for entry in _entries(cfg))
    if len(set(names)) != len(names):
        raise ConfigError(
            HOOKPOINTS_KEY, f"two coders read the same hook ({', '.join(names)}): list hookpoints"
        )
    return names


def with_hookpoints(config: RunConfig) -> RunConfig:
    """`config` with `sparse_coder.hookpoints` filled in from the coders when it was left empty."""
    if config.sparse_coder.hookpoints:
        return config
    coder_cfg = dataclasses.replace(config.sparse_coder, hookpoints=hookpoint_names(config.sparse_coder))
    return dataclasses.replace(config, sparse_coder=coder_cfg)


def load_file_coder(cfg: SparseCoderConfig, hookpoint: str) -> SparseCoder:
    """A coder read from its files alone (no subject model), e.g. for its decoder directions."""
    fmt = FORMATS.get(cfg.format)
    if fmt is not None and fmt.detect is None:
        raise ConfigError("sparse_coder.format", f"{fmt.name} is built from the model, not read from files")
    names = hookpoint_names(cfg)
    if hookpoint not in names:
        raise ConfigError(HOOKPOINTS_KEY, f"{hookpoint!r} is not one of {', '.join(names)}")
    entries = _entries(dataclasses.replace(cfg, hookpoints=names))
    coder = _load_entry(cfg, entries[names.index(hookpoint)])
    coder.hookpoint = hookpoint
    return coder


def _required_hookpoints(cfg: SparseCoderConfig) -> tuple[str, ...]:
    if not cfg.hookpoints:
        raise ConfigError(
            HOOKPOINTS_KEY, f"is required for format {cfg.format}: list modules, e.g. [layers.6.mlp]"
        )
    return cfg.hookpoints


def _paths(cfg: SparseCoderConfig) -> tuple[str, ...]:
    return (cfg.path,) if isinstance(cfg.path, str) else cfg.path


def _entries(cfg: SparseCoderConfig) -> list[_Entry]:
    """Pair configured hookpoints with coder sources; without hookpoints every source names itself."""
    paths = _paths(cfg)
    if len(paths) == 1 and not is_named(paths[0]):
        return _folder_entries(cfg, paths[0])
    sources = [source for path in paths for source in _sources_of(path)]
    if not cfg.hookpoints:
        return [_Entry(None, source) for source in sources]
    if len(cfg.hookpoints) != len(sources):
        raise ConfigError(
            HOOKPOINTS_KEY,
            f"lists {len(cfg.hookpoints)} hookpoints for {len(sources)} coders "
            f"({', '.join(s.label for s in sources)}): give one per coder in order, or leave it unset",
        )
    return [_Entry(hp, source) for hp, source in zip(cfg.hookpoints, sources, strict=True)]


def _sources_of(path: str) -> list[Source]:
    if is_named(path):
        return named_sources(path)
    folder = Path(path).expanduser()
    if not any(f.detect(folder) for f in FORMATS.values() if f.detect):
        raise ConfigError(
            "sparse_coder.path",
            f"{path!r} in a list must be saelens:..., hf:... or a folder holding one coder",
        )
    return [Source(label=path, local=folder)]


def _folder_entries(cfg: SparseCoderConfig, path: str) -> list[_Entry]:
    """A folder (or HF repo) holding one coder, or one subfolder per hookpoint."""
    root = Path(path).expanduser()
    if not cfg.hookpoints:
        if root.is_dir() and _holds_coder(root):
            return [_Entry(None, Source(label=path, local=root))]
        subfolders = (
            sorted(p for p in root.iterdir() if p.is_dir() and _holds_coder(p)) if root.is_dir() else []
        )
        if not subfolders:
            raise ConfigError(
                HOOKPOINTS_KEY,
                f"is not set and {path!r} is no local folder of coders to infer it from: list the hookpoints",
            )
        return [_Entry(p.name, Source(label=str(p), local=p)) for p in subfolders]
    return [_Entry(hp, Source(label=path, local=_coder_folder(cfg, root, hp))) for hp in cfg.hookpoints]


def _holds_coder(folder: Path) -> bool:
    return any(f.detect(folder) for f in FORMATS.values() if f.detect)


def _coder_folder(cfg: SparseCoderConfig, root: Path, hookpoint: str) -> Path:
    """`<path>/<hookpoint>`, else `<path>` for a single hookpoint, else the hookpoint's folder on the hub."""
    if not root.exists():
        root = _download(str(cfg.path), hookpoint)
    if (root / hookpoint).is_dir():
        return root / hookpoint
    if len(cfg.hookpoints) == 1 and _holds_coder(root):
        return root
    subfolders = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    raise ConfigError(
        HOOKPOINTS_KEY,
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


def _format_of(cfg: SparseCoderConfig, source: Source, folder: Path) -> Format:
    name = source.format or (cfg.format if cfg.format != "auto" else None)
    fmt = FORMATS[name] if name else _detect_format(folder)
    if fmt.detect is None or not fmt.detect(folder):
        raise ConfigError(
            "sparse_coder.format",
            f"is {fmt.name} but {folder} lacks its files ({fmt.files}); found {_listing(folder)}: "
            "fix the path or set format: auto",
        )
    return fmt


def _load_entry(cfg: SparseCoderConfig, entry: _Entry) -> SparseCoder:
    folder = entry.source.folder()
    return _format_of(cfg, entry.source, folder).load(folder, entry.hookpoint or "", entry.source)


def _inferred_name(cfg: SparseCoderConfig, source: Source) -> str:
    folder = source.folder()
    fmt = _format_of(cfg, source, folder)
    hook = fmt.hook(folder, source) if fmt.hook else None
    name = hook and (hook.hook_name or hook.hf_hook_name)
    if not name:
        raise ConfigError(
            HOOKPOINTS_KEY,
            f"is not set and {source.label} ({fmt.name}) does not record its hook: list the hookpoints",
        )
    return name


def _attach(coder: SparseCoder, entry: _Entry, base_model: nn.Module) -> None:
    """Set the coder's hookpoint and tap; refuse a configured hookpoint that contradicts the coder."""
    own = _coder_tap(coder, base_model, required=entry.hookpoint is None)
    name = entry.hookpoint or (coder.hook.hook_name or coder.hook.hf_hook_name if coder.hook else None) or ""
    tap = _configured_tap(entry.hookpoint, coder, base_model) if entry.hookpoint else own
    assert tap is not None  # without a configured hookpoint the coder's own is required
    if (
        own is not None
        and coder.hook is not None
        and canonical(base_model, own) != canonical(base_model, tap)
    ):
        raise ConfigError(
            HOOKPOINTS_KEY,
            f"{entry.hookpoint} reads {describe(tap)}, but {entry.source.label} was trained on "
            f"{coder.hook.hf_hook_name or coder.hook.hook_name} ({describe(own)}): use "
            f"{coder.hook.hook_name or own.module_path} or leave sparse_coder.hookpoints unset",
        )
    find_module(base_model, tap.module_path)
    coder.hookpoint, coder.module_path, coder.reads_input = name, tap.module_path, tap.reads_input


def _coder_tap(coder: SparseCoder, base_model: nn.Module, required: bool) -> Tap | None:
    """The tap of the coder's own hook name (`hf_hook_name` first), or None when it has none."""
    hook = coder.hook
    if hook is None or not (hook.hf_hook_name or hook.hook_name):
        if required:
            raise ConfigError(HOOKPOINTS_KEY, "is not set and the coder does not record its hook: list them")
        return None
    tap = tap_for_hf_name(base_model, hook.hf_hook_name) if hook.hf_hook_name else None
    if not isinstance(tap, Tap) and hook.hook_name:
        tap = tap_for_tl_name(base_model, hook.hook_name)
    if isinstance(tap, Tap):
        return tap
    if required:
        raise ConfigError(HOOKPOINTS_KEY, f"is not set and the coder's hook cannot be placed: {tap}")
    return None


def _configured_tap(hookpoint: str, coder: SparseCoder, base_model: nn.Module) -> Tap:
    if is_tl_name(hookpoint):
        tap = tap_for_tl_name(base_model, hookpoint)
    elif hookpoint.endswith((".input", ".output")):
        tap = tap_for_hf_name(base_model, hookpoint)
    else:
        return Tap(hookpoint, coder.reads_input)
    if isinstance(tap, str):
        raise ConfigError(HOOKPOINTS_KEY, tap)
    return tap


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
