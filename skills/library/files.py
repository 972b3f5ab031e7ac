"""A skill directory's files: written atomically, read back checked.

A skill is a directory::

    <library>/<name>/v<N>/
        manifest.json          the manifest (``skills.library.manifest``): format version, task, spaces, alpha,
                               gamma, architecture, hyperparameters, seed, steps, metrics, library versions,
                               sha256 of every file below
        weights.safetensors    q.*, q_target.*, sampler.*, and Adam state (optim.*) for resume
        transitions.npz        <= 10k stored transitions (float32) for composition
        progress.csv           training log;  learning_curve.png  the curve

Saves are atomic (staged, fsynced, then renamed; ``skills.library.store``). Loading reads JSON, safetensors and
``npz`` with ``allow_pickle=False``: it never executes code. The manifest is validated before use, then the
files' checksums, then the network sizes it asks for against what the weight file holds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..sql.learner import SoftQLearning
from ..sql.many_skills import q_network
from .manifest import (
    MANIFEST,
    SKILL_FILES,
    TRANSITIONS,
    WEIGHTS,
    CorruptSkillError,
    Manifest,
    implied_parameters,
)
from .store import atomic_write_text, publish_directory, staging_directory

MAX_MANIFEST_BYTES = 16 << 20  # a manifest is a few hundred KB at most


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


def load_manifest(path: str | Path) -> Manifest:
    """The validated manifest of a skill directory (``skills.library.manifest.Manifest``); files not verified
    (``read_skill`` does that). Raises ``CorruptSkillError`` or ``UnsupportedFormatError``."""
    file = Path(path) / MANIFEST
    try:
        if file.stat().st_size > MAX_MANIFEST_BYTES:
            raise CorruptSkillError(f"{file}: {file.stat().st_size} bytes; a manifest is at most {MAX_MANIFEST_BYTES}")
        raw = json.loads(file.read_text())
    except FileNotFoundError as err:
        raise CorruptSkillError(f"{path}: no {MANIFEST}; not a skill directory or an interrupted save") from err
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise CorruptSkillError(f"{file}: not valid JSON ({err}); the file is truncated or corrupt") from err
    except OSError as err:
        raise CorruptSkillError(f"{file}: cannot be read ({err})") from err
    return Manifest.parse(raw, file)


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


def write_skill(path: Path, agent: SoftQLearning, manifest: Manifest, transitions: dict[str, np.ndarray],
                extra_files: dict[str, Path] | None = None) -> Path:
    """Write a skill directory atomically: stage everything, then swap it into place. The manifest gets the
    written files' checksums."""
    path = Path(path)
    stage = staging_directory(path)
    save_file(agent_tensors(agent), str(stage / WEIGHTS))
    with open(stage / TRANSITIONS, "wb") as f:
        # ignore: mypy checks the ** arrays against numpy's stub keyword allow_pickle (a bool) as well
        np.savez_compressed(f, **{k: np.asarray(v, np.float32) for k, v in transitions.items()})  # type: ignore[arg-type]
    for name, src in (extra_files or {}).items():
        if Path(src).exists():
            shutil.copyfile(src, stage / name)
    manifest = manifest.with_fields(files={name: sha256_file(stage / name) for name in SKILL_FILES})
    (stage / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2))  # the stage is not visible yet
    return publish_directory(stage, path)


def update_manifest(path: Path, **fields: Any) -> Manifest:
    """Set ``fields`` in a skill's manifest (atomic replace; ``Manifest.with_fields``); the checksummed files are
    untouched."""
    manifest = load_manifest(path).with_fields(**fields)
    atomic_write_text(Path(path) / MANIFEST, json.dumps(manifest.to_json(), indent=2))
    return manifest


def _check_files(path: Path, manifest: Manifest) -> None:
    for name in SKILL_FILES:  # the manifest's file names were checked to be exactly these
        digest = manifest.files[name]
        file = path / name
        if not file.exists():
            raise CorruptSkillError(f"{path}: {name} is missing")
        if sha256_file(file) != digest:
            raise CorruptSkillError(f"{file}: checksum mismatch; the file is truncated or was modified")


def read_skill(path: str | Path, device: str | torch.device = "cpu") -> tuple[SoftQLearning, Manifest, dict[str, np.ndarray]]:
    """Agent (with optimizer state), manifest (parsed once, here) and stored transitions of a skill directory.

    Order of checks: the manifest's fields, the files' checksums, the network sizes the manifest asks for
    against what the weight file holds (nothing is allocated beyond the file), then finite weights.
    """
    path = Path(path)
    info = load_manifest(path)
    _check_files(path, info)
    implied = implied_parameters(info)
    held = (path / WEIGHTS).stat().st_size // 4
    if implied > held:
        raise CorruptSkillError(f"{path / MANIFEST}: its networks (hidden {info.hyperparameters.get('hidden')}) need "
                                f"{implied} numbers, but {WEIGHTS} holds at most {held}")
    try:
        tensors = load_file(str(path / WEIGHTS))
        with np.load(path / TRANSITIONS, allow_pickle=False) as data:
            transitions = {k: data[k] for k in data.files}
    except (SafetensorError, OSError, ValueError) as err:
        raise CorruptSkillError(f"{path}: cannot read weights or transitions ({err})") from err
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CorruptSkillError(f"{path / WEIGHTS}: non-finite values in {bad[:4]}{' ...' if len(bad) > 4 else ''}")
    try:
        config = info.sql_config()
        q = q_network(info.architecture, info.obs_dim, info.act_dim, config.hidden,
                      torch.full((info.obs_dim,), float(config.obs_scale)))
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptSkillError(f"{path / MANIFEST}: malformed hyperparameters or architecture ({err})") from err
    agent = SoftQLearning(info.obs_dim, info.act_dim, config, device=device, q=q)
    try:
        for prefix, module in (("q", agent.q), ("q_target", agent.q_target), ("sampler", agent.sampler)):
            state = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
            module.load_state_dict(state, strict=True)
        _load_optimizer("q", agent.q_optimizer, tensors)
        _load_optimizer("sampler", agent.sampler_optimizer, tensors)
    except (RuntimeError, KeyError, ValueError, IndexError) as err:
        raise CorruptSkillError(f"{path / WEIGHTS}: weights do not match the manifest's architecture ({err})") from err
    agent.updates = info.updates
    return agent, info, transitions


def space_record(space: Any) -> dict:
    """A JSON description of a Box space (shape, dtype, finite bounds)."""
    low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
    record: dict[str, Any] = {"shape": list(space.shape), "dtype": str(space.dtype)}
    if np.all(np.isfinite(low)) and np.all(np.isfinite(high)):
        record |= {"low": low.tolist(), "high": high.tolist()}
    return record
