"""Cache of what a composition builds (its sampler and its bound correction) in the skill library.

``<library>/.composed/<names>-<key>/`` holds ``networks.safetensors`` and ``manifest.json``.
The key hashes the constituents' weight checksums, the weights and the build settings, so a
retrained skill or a new setting gets a new entry and nothing stale is ever reused. An entry is read as the skill
library reads a skill (``envs.files``: regular files inside the entry, sizes bounded before reading), and one that
is damaged, forged or malformed (a missing field included) is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors

from envs.files import read_bounded
from skills.library import CorruptSkillError, default_library, inside_library, sha256_file
from skills.library.files import MAX_MANIFEST_BYTES, MAX_WEIGHTS_BYTES, save_tensors
from skills.library.store import publish_directory, staging_directory

from .composition import Composition

CACHE_DIR = ".composed"
CACHE_FORMAT_VERSION = 1
NETWORKS = "networks.safetensors"


def cache_key(composition: Composition, settings: dict) -> str:
    """Hash of the constituents' weights, the composition weights and ``settings``."""
    record = {
        "format": CACHE_FORMAT_VERSION,
        "skills": [p.info.weights_sha256 for p in composition.parts],
        "weights": [round(float(w), 12) for w in composition.weights],
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def cache_path(composition: Composition, settings: dict, library: str | Path | None = None) -> Path:
    root = Path(library) if library is not None else default_library()
    return root / CACHE_DIR / f"{composition.skill_names}-{cache_key(composition, settings)}"


def constituent_checksums(composition: Composition) -> list[str]:
    return [p.info.weights_sha256 for p in composition.parts]


def load_cached(path: Path, modules: dict[str, torch.nn.Module], composition: Composition | None = None,
                required: tuple[str, ...] = ("sampler_wall_time_s",)) -> dict | None:
    """Fill ``modules`` from a cache entry; ``None`` when there is none.

    The entry is checked before use: both files regular, inside the library's cache folder and bounded in size; its
    manifest's fields (``check_cache_manifest``, ``required`` among them); its networks file against its recorded
    checksum; the constituents it was built for against ``composition``'s; every weight finite. Any failure raises
    ``CorruptSkillError`` saying why (``build`` then rebuilds the entry).
    """
    if not (path / "manifest.json").exists():
        return None
    try:
        cache = path.parent  # an entry linked out of <library>/.composed is refused with its files,
        inside_library(cache, cache.parent, "the composition cache folder")  # and a cache folder linked out of the library
        manifest = check_cache_manifest(json.loads(read_bounded(path / "manifest.json", MAX_MANIFEST_BYTES, inside=cache,
                                                                what="cache manifest")), required)
        networks = read_bounded(path / NETWORKS, MAX_WEIGHTS_BYTES, inside=cache, what="cache networks")
        if hashlib.sha256(networks).hexdigest() != manifest.get("networks_sha256"):
            raise ValueError(f"{NETWORKS} does not match its recorded checksum")
        if composition is not None and manifest.get("constituents_sha256") != constituent_checksums(composition):
            raise ValueError("it was built for other constituents")
        tensors = load_tensors(networks)
        bad = [k for k, v in tensors.items() if not bool(torch.isfinite(v).all())]
        if bad:
            raise ValueError(f"non-finite weights in {bad[:3]}")
        for prefix, module in modules.items():
            module.load_state_dict({k[len(prefix) + 1:]: v for k, v in tensors.items()
                                    if k.startswith(prefix + ".")}, strict=True)
    except (ValueError, OSError, SafetensorError, RuntimeError, RecursionError) as err:
        raise CorruptSkillError(f"composition cache {path} cannot be used: {err}") from err
    return manifest


def check_cache_manifest(manifest: object, required: tuple[str, ...] = ("sampler_wall_time_s",)) -> dict:
    """A cache manifest's fields that a build reads: a JSON object with finite wall times >= 0
    (``sampler_wall_time_s``, ``operator_wall_time_s``, ``correction_wall_time_s``; those in ``required`` must be
    there), objects for ``gap`` and ``operator_fit``. A ``ValueError`` naming the field otherwise."""
    if not isinstance(manifest, dict):
        raise ValueError("the manifest is not a JSON object")
    for key in ("sampler_wall_time_s", "operator_wall_time_s", "correction_wall_time_s"):
        value = manifest.get(key, None if key in required else 0.0)
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0):
            raise ValueError(f"its manifest's {key} must be a finite number >= 0, got {value!r}")
    for key in ("gap", "operator_fit"):
        if not isinstance(manifest.get(key, {}), dict):
            raise ValueError(f"its manifest's {key} must be a JSON object, got {manifest[key]!r}")
    return manifest


def save_cached(path: Path, modules: dict[str, torch.nn.Module], manifest: dict, composition: Composition) -> None:
    """Write a cache entry atomically, with its networks' and its constituents' checksums."""
    stage = staging_directory(path)
    try:
        tensors = {f"{prefix}.{k}": v.detach().cpu().contiguous().clone()
                   for prefix, module in modules.items() for k, v in module.state_dict().items()}
        save_tensors(tensors, stage / NETWORKS)
        manifest = manifest | {"networks_sha256": sha256_file(stage / NETWORKS),
                               "constituents_sha256": constituent_checksums(composition)}
        (stage / "manifest.json").write_text(json.dumps(manifest, indent=2))
        publish_directory(stage, path)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
