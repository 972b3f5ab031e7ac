"""Cache of what a composition builds (its sampler and its bound correction) in the skill library.

``<library>/.composed/<names>-<key>/`` holds ``networks.safetensors`` and ``manifest.json``.
The key hashes the constituents' weight checksums, the weights and the build settings, so a
retrained skill or a new setting gets a new entry and nothing stale is ever reused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from skills.library import CorruptSkillError, default_library, publish_directory, staging_directory

from .composition import Composition

CACHE_DIR = ".composed"
CACHE_FORMAT_VERSION = 1


def cache_key(composition: Composition, settings: dict) -> str:
    """Hash of the constituents' weights, the composition weights and ``settings``."""
    record = {
        "format": CACHE_FORMAT_VERSION,
        "skills": [p.manifest["files"]["weights.safetensors"] for p in composition.parts],
        "weights": [round(float(w), 12) for w in composition.weights],
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def cache_path(composition: Composition, settings: dict, library: str | Path | None = None) -> Path:
    root = Path(library) if library is not None else default_library()
    names = "+".join(p.name for p in composition.parts)  # "reach@v1" and "reach" share an entry when they are one skill
    return root / CACHE_DIR / f"{names}-{cache_key(composition, settings)}"


def load_cached(path: Path, modules: dict[str, torch.nn.Module]) -> dict | None:
    """Fill ``modules`` from a cache entry; ``None`` when there is none. Corrupt entries raise."""
    if not (path / "manifest.json").exists():
        return None
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        tensors = load_file(str(path / "networks.safetensors"))
        for prefix, module in modules.items():
            module.load_state_dict({k[len(prefix) + 1:]: v for k, v in tensors.items()
                                    if k.startswith(prefix + ".")}, strict=True)
    except (ValueError, OSError, SafetensorError, RuntimeError) as err:
        raise CorruptSkillError(f"composition cache {path} is corrupt ({err}); delete it to rebuild") from err
    return manifest


def save_cached(path: Path, modules: dict[str, torch.nn.Module], manifest: dict) -> None:
    """Write a cache entry atomically."""
    stage = staging_directory(path)
    tensors = {f"{prefix}.{k}": v.detach().cpu().contiguous().clone()
               for prefix, module in modules.items() for k, v in module.state_dict().items()}
    save_file(tensors, str(stage / "networks.safetensors"))
    (stage / "manifest.json").write_text(json.dumps(manifest, indent=2))
    publish_directory(stage, path)
