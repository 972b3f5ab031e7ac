"""The skill format and the skill library.

A skill is a directory::

    <library>/<name>/v<N>/
        manifest.json          format version, task, spaces, alpha, gamma, architecture,
                               hyperparameters, seed, steps, wall time, metrics, versions,
                               sha256 of every file below
        weights.safetensors    q.*, q_target.*, sampler.*, and Adam state (optim.*) for resume
        transitions.npz        <= 10k stored transitions (float32) for composition
        progress.csv           training log;  learning_curve.png  the curve

Names resolve in the library (``trained/`` by default, or ``$COMPOSABLE_SKILLS_LIBRARY``), never in
the working directory: ``"reach"`` is the newest *complete* version, ``"reach@v1"`` a given one, and
a path (``./x``, ``/x``, a ``Path``) is used as is. Training never overwrites: every run claims the
next version when it starts (``skills.store``: safe under concurrent writers and crashes), and a
complete version is never replaced. Saves are atomic (staged, fsynced, then renamed). The manifest
is validated before use (``skills.manifest``). Loading reads JSON, safetensors and ``npz`` with
``allow_pickle=False``: it never executes code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from envs.core import UnknownNameError

from .agent import SoftQLearning, SQLConfig
from .manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    NAME,
    SKILL_FILES,
    TRANSITIONS,
    WEIGHTS,
    CorruptSkillError,
    Manifest,
    SkillError,
    UnsupportedFormatError,
    implied_parameters,
)
from .stacked import q_network
from .store import (
    atomic_write_text,
    claim_version,
    is_claim_only,
    publish_directory,
    release_claim,
    staging_directory,
)

__all__ = ["CorruptSkillError", "SkillError", "StaleSkillError", "UnsupportedFormatError", "atomic_write_text",
           "claim_version", "publish_directory", "release_claim", "staging_directory"]

_VERSION_DIR = re.compile(r"^v(\d+)$")
MAX_MANIFEST_BYTES = 16 << 20  # a manifest is a few hundred KB at most


class StaleSkillError(SkillError):
    """A saved composition whose constituents, resolved by the names it was made from, have changed."""


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
    manifest: dict  # the JSON object, validated (``info`` is its typed form)
    info: Manifest

    @property
    def complete(self) -> bool:
        return self.info.complete


def load_manifest(path: str | Path) -> Manifest:
    """The validated manifest of a skill directory (``skills.manifest.Manifest``); files not verified
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


def _library_root(library: str | Path | None) -> Path:
    return Path(library) if library is not None else default_library()


def list_skills(library: str | Path | None = None, problems: list[str] | None = None) -> list[SkillEntry]:
    """Every readable skill version in the library, sorted by name then version. Unreadable ones are left
    out of the list and described in ``problems`` when it is given (runs still starting are not problems)."""
    root = _library_root(library)
    entries = []
    if not root.is_dir():
        return entries
    for skill_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for vdir in skill_dir.iterdir():
            match = _VERSION_DIR.match(vdir.name)
            if not (match and vdir.is_dir()) or is_claim_only(vdir):
                continue
            try:
                entries.append(_entry(skill_dir.name, int(match.group(1)), vdir))
            except SkillError as err:
                if problems is not None:
                    problems.append(str(err))
    return sorted(entries, key=lambda e: (e.name, e.version))


def _entry(name: str, version: int, path: Path) -> SkillEntry:
    """A version directory's entry, checked to hold *this* skill (not a copy or a link to another)."""
    info = load_manifest(path)
    if info.name != name or info.version != version:
        raise CorruptSkillError(f"{path} holds skill {info.name!r} v{info.version}, not {name!r} v{version}; "
                                "load it by its path if that is intended")
    return SkillEntry(name, version, path, info.raw, info)


def is_path(name_or_path: str | Path) -> bool:
    """A path is a ``Path``, or text with a directory separator or a leading '.' or '~'; anything else is a
    name, resolved in the library only (never in the working directory)."""
    if isinstance(name_or_path, Path):
        return True
    text = str(name_or_path)
    return "/" in text or os.sep in text or text.startswith((".", "~"))


def resolve(name_or_path: str | Path, library: str | Path | None = None, fallback: bool = False) -> Path:
    """The directory of ``"name"`` (newest complete version), ``"name@vN"``, or a path.

    A newer version that cannot be read (corrupt, or a newer format) is an error that names it and
    the older versions, not a silent step back; ``fallback=True`` skips it knowingly. Versions still
    training, or diverged, are skipped as before.
    """
    if is_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not (path / MANIFEST).is_file():
            raise CorruptSkillError(f"{path}: not a skill directory (no {MANIFEST})")
        return path
    text = str(name_or_path)
    name, _, version = text.partition("@")
    root = _library_root(library)
    versions = sorted(((int(m.group(1)), p) for p in (root / name).iterdir() if (m := _VERSION_DIR.match(p.name))
                       and p.is_dir() and not is_claim_only(p)), reverse=True) \
        if NAME.match(name) and (root / name).is_dir() else []
    if not versions:
        available = sorted({e.name for e in list_skills(library)})
        raise UnknownNameError("skill", text, available, where=str(root))
    if version:
        wanted = [p for n, p in versions if f"v{n}" == version]
        if not wanted:
            raise UnknownNameError(f"version of skill {name!r}", version, [f"v{n}" for n, _ in reversed(versions)])
        _entry(name, int(version[1:]), wanted[0])
        return wanted[0]
    skipped = []
    for number, path in versions:
        try:
            entry = _entry(name, number, path)
        except SkillError as err:
            if fallback:
                continue
            older = ", ".join(f"v{n}" for n, _ in versions if n < number) or "none"
            raise CorruptSkillError(f"the newest version of {name!r}, {path}, cannot be loaded: {err}. Older versions: "
                                    f"{older}; load one as {name}@vN, repair or remove {path}, or pass "
                                    "fallback=True to skip it") from err
        if entry.complete:
            return path
        skipped.append(f"{path} [{entry.info.status}]")
    raise SkillError(f"skill {name!r} has no complete version (training unfinished or diverged): " + ", ".join(skipped))


def claim_version_dir(name: str, library: str | Path | None = None) -> Path:
    """Claim ``<library>/<name>/v<N+1>`` for a new run or save: created at once, atomically, so concurrent
    writers of one name get different versions (``skills.store.claim_version``)."""
    if not NAME.match(name):
        raise ValueError(f"invalid skill name {name!r}: letters, digits, '_', '.', '+', '-'; no '/' or '@'")
    return claim_version(_library_root(library) / name)


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


def update_manifest(path: Path, **fields) -> dict:
    """Set ``fields`` in a skill's manifest (atomic replace); the checksummed files are untouched."""
    manifest = load_manifest(path).raw | fields
    atomic_write_text(Path(path) / MANIFEST, json.dumps(manifest, indent=2))
    return manifest


# ---- reading --------------------------------------------------------------------------------
def _check_files(path: Path, manifest: Manifest) -> None:
    for name in SKILL_FILES:  # the manifest's file names were checked to be exactly these
        digest = manifest.files[name]
        file = path / name
        if not file.exists():
            raise CorruptSkillError(f"{path}: {name} is missing")
        if sha256_file(file) != digest:
            raise CorruptSkillError(f"{file}: checksum mismatch; the file is truncated or was modified")


def read_skill(path: str | Path, device: str | torch.device = "cpu") -> tuple[SoftQLearning, dict, dict[str, np.ndarray]]:
    """Agent (with optimizer state), manifest (validated JSON) and stored transitions of a skill directory.

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
        config = SQLConfig.from_dict(info.hyperparameters)
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
    return agent, info.raw, transitions


def stale_constituents(path: str | Path, manifest: dict | Manifest) -> list[str]:
    """Why a saved composition (its manifest's ``composed_from``) no longer matches what its constituents'
    names resolve to today; ``[]`` when it does, or when the skill is not a saved composition.

    A composition is made from names (``"reach"`` is the newest complete version); retraining a
    constituent publishes a new version, and the saved ``Q_w`` then no longer composes what the name
    means. Pinned names (``"reach@v1"``) never go stale.
    """
    info = manifest if isinstance(manifest, Manifest) else Manifest.parse(manifest, Path(path) / MANIFEST)
    record = info.composed_from
    if record is None:
        return []
    library = Path(record.library) if record.library else Path(path).resolve().parent.parent
    problems = []
    for part in record.constituents:
        try:
            now = resolve(part.spec, library)
            digest = load_manifest(now).weights_sha256
        except SkillError as err:
            problems.append(f"{part.spec!r} cannot be checked in {library}: {err}")
            continue
        if digest != part.weights_sha256:
            problems.append(f"{part.spec!r} now resolves to {now} (weights {digest[:12]}), not to "
                            f"{part.name} v{part.version} (weights {part.weights_sha256[:12]}) it was composed from")
    return problems


def check_fresh(path: str | Path, manifest: dict) -> None:
    """Raise ``StaleSkillError`` when ``stale_constituents`` finds anything."""
    problems = stale_constituents(path, manifest)
    if problems:
        specs = "+".join(p["spec"] for p in manifest["composed_from"]["constituents"])  # validated above
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
