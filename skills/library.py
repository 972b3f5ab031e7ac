"""The skill format and the skill library.

A skill is a directory::

    <library>/<name>/v<N>/
        manifest.json          format version, task, spaces, alpha, gamma, architecture,
                               hyperparameters, seed, steps, wall time, metrics, versions,
                               sha256 of every file below
        weights.safetensors    q.*, q_target.*, sampler.*, and Adam state (optim.*) for resume
        transitions.npz        <= 10k stored transitions (float32) for composition
        progress.csv           training log;  learning_curve.png  the curve

Names resolve in the library (``trained/`` by default, or ``$COMPOSABLE_SKILLS_LIBRARY``):
``"reach"`` is the newest *complete* version, ``"reach@v1"`` a given one, and a path is used as
is. Training never overwrites: every run writes the next version. Saves are atomic (staged in
a temporary directory, then renamed). Loading reads JSON, safetensors and ``npz`` with
``allow_pickle=False``: it never executes code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from envs.core import UnknownNameError

from .agent import SoftQLearning, SQLConfig
from .stacked import q_network

FORMAT = "composable-skills/skill"
FORMAT_VERSION = 1
MANIFEST, WEIGHTS, TRANSITIONS = "manifest.json", "weights.safetensors", "transitions.npz"
_VERSION_DIR = re.compile(r"^v(\d+)$")


class SkillError(Exception):
    """Base class of skill loading and saving errors."""


class CorruptSkillError(SkillError):
    """A skill directory is incomplete, truncated or fails its checksums."""


class StaleSkillError(SkillError):
    """A saved composition whose constituents, resolved by the names it was made from, have changed."""


class UnsupportedFormatError(SkillError):
    """The manifest was written by a newer format version than this toolkit reads."""


def default_library() -> Path:
    """``$COMPOSABLE_SKILLS_LIBRARY`` or the repository's ``trained/`` directory."""
    env = os.environ.get("COMPOSABLE_SKILLS_LIBRARY")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "trained"


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a skill's numbers (recorded in every manifest)."""
    from importlib import metadata

    out = {}
    for dist in ("composable-skills", "torch", "mujoco", "gymnasium", "gymnasium-robotics", "numpy", "dm-control"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


# ---- resolving names ----------------------------------------------------------------------
@dataclass(frozen=True)
class SkillEntry:
    """One version of one skill in a library."""

    name: str
    version: int
    path: Path
    manifest: dict

    @property
    def complete(self) -> bool:
        return self.manifest.get("status") == "complete"


def _read_manifest(path: Path) -> dict:
    file = path / MANIFEST
    try:
        manifest = json.loads(file.read_text())
    except FileNotFoundError as err:
        raise CorruptSkillError(f"{path}: no {MANIFEST}; not a skill directory or an interrupted save") from err
    except (ValueError, UnicodeDecodeError) as err:
        raise CorruptSkillError(f"{file}: not valid JSON ({err}); the file is truncated or corrupt") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CorruptSkillError(f"{file}: not a composable-skills manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"{file}: skill format version {version!r} is newer than this toolkit reads "
            f"(<= {FORMAT_VERSION}); upgrade composable-skills to load it")
    return manifest


def read_manifest(path: str | Path) -> dict:
    """The manifest of a skill directory, format-checked (files not verified: ``read_skill`` does that)."""
    return _read_manifest(Path(path))


def list_skills(library: str | Path | None = None) -> list[SkillEntry]:
    """Every skill version in the library, sorted by name then version. Unreadable ones are skipped."""
    root = Path(library) if library is not None else default_library()
    entries = []
    if not root.is_dir():
        return entries
    for skill_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for vdir in skill_dir.iterdir():
            match = _VERSION_DIR.match(vdir.name)
            if match and vdir.is_dir():
                try:
                    entries.append(SkillEntry(skill_dir.name, int(match.group(1)), vdir, _read_manifest(vdir)))
                except SkillError:
                    continue
    return sorted(entries, key=lambda e: (e.name, e.version))


def resolve(name_or_path: str | Path, library: str | Path | None = None) -> Path:
    """The directory of ``"name"`` (newest complete version), ``"name@vN"``, or a path."""
    path = Path(name_or_path)
    if path.is_dir() and (path / MANIFEST).exists():
        return path
    text = str(name_or_path)
    name, _, version = text.partition("@")
    entries = [e for e in list_skills(library) if e.name == name]
    if not entries:
        available = sorted({e.name for e in list_skills(library)})
        root = Path(library) if library is not None else default_library()
        raise UnknownNameError("skill", text, available, where=str(root))
    if version:
        wanted = [e for e in entries if f"v{e.version}" == version]
        if not wanted:
            raise UnknownNameError(f"version of skill {name!r}", version, [f"v{e.version}" for e in entries])
        return wanted[0].path
    complete = [e for e in entries if e.complete]
    if not complete:
        raise SkillError(f"skill {name!r} has no complete version (training unfinished or diverged): "
                         + ", ".join(f"{e.path} [{e.manifest.get('status')}]" for e in entries))
    return complete[-1].path


def next_version_dir(name: str, library: str | Path | None = None) -> Path:
    """``<library>/<name>/v<N+1>``: where a new training run of ``name`` goes."""
    root = Path(library) if library is not None else default_library()
    taken = [int(m.group(1)) for p in (root / name).glob("v*") if (m := _VERSION_DIR.match(p.name))]
    return root / name / f"v{max(taken, default=0) + 1}"


# ---- writing --------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _optimizer_tensors(prefix: str, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for i, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            out[f"optim.{prefix}.{i}.{key}"] = torch.as_tensor(value).detach().cpu().clone()
    return out


def _load_optimizer(prefix: str, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state_dict = optimizer.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        parts = key.split(".")
        if parts[:2] == ["optim", prefix]:
            state.setdefault(int(parts[2]), {})[parts[3]] = value
    if state:
        state_dict["state"] = state
        optimizer.load_state_dict(state_dict)


def agent_tensors(agent: SoftQLearning, with_optimizer: bool = True) -> dict[str, torch.Tensor]:
    """Every tensor of an agent, flat and contiguous, for safetensors."""
    tensors = {}
    for prefix, module in (("q", agent.q), ("q_target", agent.q_target), ("sampler", agent.sampler)):
        for key, value in module.state_dict().items():
            tensors[f"{prefix}.{key}"] = value.detach().cpu().contiguous().clone()
    if with_optimizer:
        tensors |= _optimizer_tensors("q", agent.q_optimizer)
        tensors |= _optimizer_tensors("sampler", agent.sampler_optimizer)
    return tensors


def write_skill(path: Path, agent: SoftQLearning, manifest: dict, transitions: dict[str, np.ndarray],
                extra_files: dict[str, Path] | None = None) -> Path:
    """Write a skill directory atomically: stage everything, then swap it into place."""
    path = Path(path)
    stage = staging_directory(path)
    save_file(agent_tensors(agent), str(stage / WEIGHTS))
    with open(stage / TRANSITIONS, "wb") as f:
        np.savez_compressed(f, **{k: np.asarray(v, np.float32) for k, v in transitions.items()})
    for name, src in (extra_files or {}).items():
        if Path(src).exists():
            shutil.copyfile(src, stage / name)
    manifest = dict(manifest, format=FORMAT, format_version=FORMAT_VERSION,
                    files={name: sha256_file(stage / name) for name in (WEIGHTS, TRANSITIONS)})
    (stage / MANIFEST).write_text(json.dumps(manifest, indent=2))  # the stage is not visible yet
    return publish_directory(stage, path)


def staging_directory(path: Path) -> Path:
    """A fresh, empty hidden directory beside ``path`` to write into before ``publish_directory``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    return stage


def publish_directory(stage: Path, path: Path) -> Path:
    """Make a fully written ``stage`` directory appear at ``path`` (fsync, then rename swap)."""
    for file in stage.iterdir():
        with open(file, "rb") as f:
            os.fsync(f.fileno())
    if path.exists():
        retired = path.parent / f".{path.name}.old-{os.getpid()}-{time.monotonic_ns()}"
        os.rename(path, retired)
        os.rename(stage, path)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.rename(stage, path)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically: a temporary file beside it, fsynced, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def update_manifest(path: Path, **fields) -> dict:
    """Set ``fields`` in a skill's manifest (atomic replace); the checksummed files are untouched."""
    manifest = _read_manifest(Path(path)) | fields
    atomic_write_text(Path(path) / MANIFEST, json.dumps(manifest, indent=2))
    return manifest


# ---- reading --------------------------------------------------------------------------------
def _check_files(path: Path, manifest: dict) -> None:
    for name, digest in manifest.get("files", {}).items():
        file = path / name
        if not file.exists():
            raise CorruptSkillError(f"{path}: {name} is missing")
        if sha256_file(file) != digest:
            raise CorruptSkillError(f"{file}: checksum mismatch; the file is truncated or was modified")


def read_skill(path: str | Path, device: str | torch.device = "cpu") -> tuple[SoftQLearning, dict, dict[str, np.ndarray]]:
    """Agent (with optimizer state), manifest and stored transitions of a skill directory."""
    path = Path(path)
    manifest = _read_manifest(path)
    _check_files(path, manifest)
    try:
        tensors = load_file(str(path / WEIGHTS))
        with np.load(path / TRANSITIONS, allow_pickle=False) as data:
            transitions = {k: data[k] for k in data.files}
    except (SafetensorError, OSError, ValueError) as err:
        raise CorruptSkillError(f"{path}: cannot read weights or transitions ({err})") from err
    try:
        config = SQLConfig.from_dict(manifest["hyperparameters"])
        obs_dim = int(manifest["observation_space"]["shape"][0])
        act_dim = int(manifest["action_space"]["shape"][0])
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptSkillError(f"{path / MANIFEST}: missing or malformed field ({err})") from err
    try:
        q = q_network(manifest.get("architecture", {}), obs_dim, act_dim, config.hidden,
                      torch.full((obs_dim,), float(config.obs_scale)))
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptSkillError(f"{path / MANIFEST}: malformed architecture record ({err})") from err
    agent = SoftQLearning(obs_dim, act_dim, config, device=device, q=q)
    try:
        for prefix, module in (("q", agent.q), ("q_target", agent.q_target), ("sampler", agent.sampler)):
            state = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
            module.load_state_dict(state, strict=True)
        _load_optimizer("q", agent.q_optimizer, tensors)
        _load_optimizer("sampler", agent.sampler_optimizer, tensors)
    except (RuntimeError, KeyError, ValueError) as err:
        raise CorruptSkillError(f"{path / WEIGHTS}: weights do not match the manifest's architecture ({err})") from err
    agent.updates = int(manifest.get("updates", 0))
    return agent, manifest, transitions


def stale_constituents(path: str | Path, manifest: dict) -> list[str]:
    """Why a saved composition (``manifest["composed_from"]``) no longer matches what its constituents'
    names resolve to today; ``[]`` when it does, or when the skill is not a saved composition.

    A composition is made from names (``"reach"`` is the newest complete version); retraining a
    constituent publishes a new version, and the saved ``Q_w`` then no longer composes what the name
    means. Pinned names (``"reach@v1"``) never go stale.
    """
    record = manifest.get("composed_from")
    if not record:
        return []
    library = Path(record["library"]) if record.get("library") else Path(path).resolve().parent.parent
    problems = []
    for part in record["constituents"]:
        try:
            now = resolve(part["spec"], library)
            digest = _read_manifest(now)["files"][WEIGHTS]
        except (SkillError, KeyError) as err:
            problems.append(f"{part['spec']!r} cannot be checked in {library}: {err}")
            continue
        if digest != part["weights_sha256"]:
            problems.append(f"{part['spec']!r} now resolves to {now} (weights {digest[:12]}), not to "
                            f"{part['name']} v{part['version']} (weights {part['weights_sha256'][:12]}) it was composed from")
    return problems


def check_fresh(path: str | Path, manifest: dict) -> None:
    """Raise ``StaleSkillError`` when ``stale_constituents`` finds anything."""
    problems = stale_constituents(path, manifest)
    if problems:
        specs = "+".join(p["spec"] for p in manifest["composed_from"]["constituents"])
        raise StaleSkillError(f"saved composition {path} is stale: " + "; ".join(problems)
                              + f". Compose again (compose.load({specs!r}).save()), or pass allow_stale=True "
                                "to use the old one knowingly")


def space_record(space: Any) -> dict:
    """A JSON description of a Box space (shape, dtype, finite bounds)."""
    low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
    record: dict[str, Any] = {"shape": list(space.shape), "dtype": str(space.dtype)}
    if np.all(np.isfinite(low)) and np.all(np.isfinite(high)):
        record |= {"low": low.tolist(), "high": high.tolist()}
    return record
