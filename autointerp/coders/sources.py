"""Where coders come from: `saelens:<release>/<sae_id>` names, `hf:<org>/<repo>/<folder>` and local folders.

Release names are looked up in `pretrained_saes.yaml`, the release directory shipped inside the `sae-lens`
package (read as a file; SAE Lens itself is not imported). Files are fetched with `hf_hub_download`, so a
coder downloaded once is read from the HF hub cache, also offline (`HF_HUB_OFFLINE=1`).
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

from autointerp.errors import ConfigError

SAELENS_PREFIX = "saelens:"
HF_PREFIX = "hf:"
DIRECTORY_FILE = "sae_lens/pretrained_saes.yaml"
CONVERSIONS = {None: "saelens", "gemma_2": "gemmascope", "gemma_3": "gemmascope", "llama_scope": "llamascope"}
"""SAE Lens `conversion_func` of a release -> the format that reads its files."""
FILES = {
    "saelens": (("cfg.json", "sae_weights.safetensors"), ()),
    "sparsify": (("cfg.json", "sae.safetensors"), ()),
    "gemmascope": (("params.safetensors",), ("config.json",)),
    "gemmascope-npz": (("params.npz",), ()),
    "llamascope": (("hyperparams.json", "checkpoints/final.safetensors"), ()),
}
"""Per format: (required files, optional files) of one coder folder."""
KEY = "sparse_coder.path"


@dataclass(frozen=True)
class Source:
    """One coder: a local folder, or a folder of a hub repo fetched on first use."""

    label: str
    """How the user named it, for messages."""
    local: Path | None = None
    repo_id: str | None = None
    subfolder: str = ""
    format: str | None = None
    """Format fixed by a release's conversion function; None = detect from the files."""
    scaling_factor: float | None = None
    """The release's `norm_scaling_factor` (folded when the coder uses expected_average_only_in)."""
    model_kwargs: dict[str, Any] | None = None
    """The release's `model_from_pretrained_kwargs`: TransformerLens processing the coder was trained with."""

    @property
    def location(self) -> str:
        """`<repo_id>/<subfolder>` or the local folder: Gemma Scope reads its hook from these names."""
        return f"{self.repo_id}/{self.subfolder}" if self.repo_id else str(self.local)

    def folder(self) -> Path:
        """The coder's folder on disk, downloading (or reading from the hub cache) when needed."""
        if self.local is not None:
            return self.local
        names = [self.format] if self.format else list(FILES)
        if self.format == "gemmascope":
            names.append("gemmascope-npz")
        for name in names:
            folder = self._fetch(*FILES[name])
            if folder is not None:
                return folder
        if _offline():
            raise ConfigError(
                KEY,
                f"{self.label} is not in the local HF hub cache ({self.repo_id}/{self.subfolder}) and "
                "HF_HUB_OFFLINE is set: download it once online, or unset HF_HUB_OFFLINE",
            )
        raise ConfigError(
            KEY,
            f"{self.label}: {self.repo_id}/{self.subfolder} holds no coder files "
            f"(looked for {'; '.join(' + '.join(FILES[n][0]) for n in names)})",
        )

    def _fetch(self, required: tuple[str, ...], optional: tuple[str, ...]) -> Path | None:
        paths = []
        for name in required:
            path = self._download(name)
            if path is None:
                return None
            paths.append(path)
        for name in optional:
            self._download(name)
        return paths[0].parents[len(Path(required[0]).parts) - 1]

    def _download(self, name: str) -> Path | None:
        """The cached file, or None when the repo (or, offline, the cache) does not hold it."""
        filename = f"{self.subfolder}/{name}" if self.subfolder else name
        assert self.repo_id is not None  # only hub sources download
        try:
            return Path(hf_hub_download(self.repo_id, filename))
        except (EntryNotFoundError, LocalEntryNotFoundError):
            return None
        except Exception as exc:  # hub and validation errors come in many types; all mean "unusable"
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(KEY, f"{self.label} could not be fetched from the HF hub: {reason}") from None


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def is_named(path: str) -> bool:
    """Whether `path` names coders (`saelens:` / `hf:`) rather than a folder or repo of hookpoint folders."""
    return path.startswith((SAELENS_PREFIX, HF_PREFIX))


def named_sources(path: str) -> list[Source]:
    """The coders a `saelens:` or `hf:` path names, in order."""
    if path.startswith(HF_PREFIX):
        return [_hf_source(path)]
    return _saelens_sources(path)


def _hf_source(path: str) -> Source:
    parts = path.removeprefix(HF_PREFIX).strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(KEY, f"{path!r} must be hf:<org>/<repo> or hf:<org>/<repo>/<folder of one coder>")
    return Source(label=path, repo_id="/".join(parts[:2]), subfolder="/".join(parts[2:]))


def _saelens_sources(path: str) -> list[Source]:
    release, _, sae_id = path.removeprefix(SAELENS_PREFIX).partition("/")
    if not release or not sae_id:
        raise ConfigError(KEY, f"{path!r} must be saelens:<release>/<sae_id> (sae_id may be a * pattern)")
    directory = release_directory()
    entry = directory.get(release)
    if entry is None:
        close = difflib.get_close_matches(release, list(directory), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see sae_lens/pretrained_saes.yaml"
        raise ConfigError(KEY, f"{path!r}: {release!r} is not an SAE Lens release; {hint}")
    conversion = entry.get("conversion_func")
    if conversion not in CONVERSIONS:
        supported = ", ".join(str(c) for c in CONVERSIONS if c) + " or none"
        raise ConfigError(
            KEY, f"{path!r}: release {release} uses SAE Lens converter {conversion!r}; supported: {supported}"
        )
    saes = {str(sae["id"]): sae for sae in entry["saes"]}
    ids = _matching_ids(path, release, sae_id, saes)
    return [
        Source(
            label=f"{SAELENS_PREFIX}{release}/{i}",
            repo_id=entry["repo_id"],
            subfolder=str(saes[i]["path"]),
            format=CONVERSIONS[conversion],
            scaling_factor=saes[i].get("norm_scaling_factor"),
            model_kwargs=(entry.get("config_overrides") or {}).get("model_from_pretrained_kwargs"),
        )
        for i in ids
    ]


def _matching_ids(path: str, release: str, sae_id: str, saes: dict[str, Any]) -> list[str]:
    if not any(c in sae_id for c in "*?["):
        if sae_id not in saes:
            close = difflib.get_close_matches(sae_id, list(saes), n=3)
            hint = f"did you mean {', '.join(close)}?" if close else f"e.g. {', '.join(list(saes)[:3])}"
            raise ConfigError(KEY, f"{path!r}: release {release} has no SAE {sae_id!r}; {hint}")
        return [sae_id]
    ids = sorted((i for i in saes if fnmatch.fnmatchcase(i, sae_id)), key=_natural_key)
    if not ids:
        raise ConfigError(
            KEY, f"{path!r}: no SAE of release {release} matches; e.g. {', '.join(list(saes)[:3])}"
        )
    return ids


def _natural_key(text: str) -> list[Any]:
    """`layer_2` before `layer_10`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


@functools.cache
def release_directory() -> dict[str, Any]:
    """`pretrained_saes.yaml` of the installed sae-lens package: release -> repo_id, conversion_func, saes."""
    try:
        location = Path(str(importlib.metadata.distribution("sae-lens").locate_file(DIRECTORY_FILE)))
    except importlib.metadata.PackageNotFoundError:
        location = None
    if location is None or not location.is_file():
        raise ConfigError(
            KEY,
            "saelens: names are looked up in the release directory of the sae-lens package, which is not "
            "installed: pip install sae-lens (or name the folder with hf:<org>/<repo>/<folder>)",
        )
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with location.open() as file:
        return yaml.load(file, Loader=loader)
