"""A skill directory's files: written atomically, read back checked.

A skill is a directory::

    <library>/<name>/v<N>/
        manifest.json          the manifest (``skills.library.manifest``): format version, task, spaces, alpha,
                               gamma, architecture, hyperparameters, seed, steps, metrics, library versions,
                               sha256 of every file below
        weights.safetensors    q.*, q_target.*, sampler.*, and Adam state (optim.*) for resume
        transitions.npz        <= 10k stored transitions (float32) for composition
        progress.csv           training log;  learning_curve.png  the curve

Saves are atomic (staged, fsynced, then renamed; ``skills.library.store``); a write that fails (a full disk)
leaves nothing behind and is an ``OSError`` naming the file. Loading reads JSON, safetensors and ``npz`` with
``allow_pickle=False``: it never executes code. Every file is read through ``envs.files.open_regular``: a regular
file inside the skill's directory (no device, FIFO, socket, or link out of it), its size bounded before a byte is
read (``MAX_MANIFEST_BYTES``, ``MAX_WEIGHTS_BYTES``, ``MAX_TRANSITIONS_BYTES``). Then, in order: the manifest's
fields, the files' checksums (of the very bytes that are then parsed), the network sizes the manifest asks for
against what the weight file holds (both ways), and the stored transitions' arrays (names, types, shapes, equal
lengths, uncompressed sizes; ``check_transitions``) before any of them is decompressed.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save_file

from envs.files import UnsafeFileError, open_regular, read_bounded

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
MAX_WEIGHTS_BYTES = 1 << 30  # the shipped skills' weights are about 0.5 MB
MAX_TRANSITIONS_BYTES = 256 << 20  # stored transitions, compressed and uncompressed (10,000 of reach: 1.2 MB)
MAX_STORED_ROWS = 1_000_000  # transitions in one file (a skill keeps 10,000; a saved composition its parts')
MAX_ARRAYS = 16  # arrays in transitions.npz (obs, action, reward, next_obs, terminated)
HEADER_SLACK = 1 << 20  # bytes of a weight file beyond its numbers: the safetensors header, Adam's step counts


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


def load_manifest(path: str | Path, inside: str | Path | None = None) -> Manifest:
    """The validated manifest of a skill directory (``skills.library.manifest.Manifest``), read only from inside
    ``inside`` (default: the directory); files not verified (``read_skill`` does that). Raises ``CorruptSkillError`` or
    ``UnsupportedFormatError``."""
    file = Path(path) / MANIFEST
    try:
        raw = json.loads(read_bounded(file, MAX_MANIFEST_BYTES, inside=inside or path, what="manifest"))
    except FileNotFoundError as err:
        raise CorruptSkillError(f"{path}: no {MANIFEST}; not a skill directory or an interrupted save") from err
    except UnsafeFileError as err:
        raise CorruptSkillError(str(err)) from err
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise CorruptSkillError(f"{file}: not valid JSON ({err}); the file is truncated or corrupt") from err
    except OSError as err:
        raise CorruptSkillError(f"{file}: cannot be read ({err})") from err
    return Manifest.parse(raw, file)


def sha256_file(path: Path, inside: str | Path | None = None) -> str:
    """sha256 of a regular file (``envs.files.open_regular``: inside ``inside`` when given)."""
    digest = hashlib.sha256()
    with open_regular(path, inside) as f:
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
    written files' checksums. A write that fails removes the stage and raises ``OSError`` (safetensors' own error
    on a full disk included)."""
    path = Path(path)
    stage = staging_directory(path)
    try:
        save_tensors(agent_tensors(agent), stage / WEIGHTS)
        with open(stage / TRANSITIONS, "wb") as f:
            # ignore: mypy checks the ** arrays against numpy's stub keyword allow_pickle (a bool) as well
            np.savez_compressed(f, **{k: np.asarray(v, np.float32) for k, v in transitions.items()})  # type: ignore[arg-type]
        for name, src in (extra_files or {}).items():
            if Path(src).exists():
                shutil.copyfile(src, stage / name)
        manifest = manifest.with_fields(files={name: sha256_file(stage / name) for name in SKILL_FILES})
        (stage / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2))  # the stage is not visible yet
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return publish_directory(stage, path)


def save_tensors(tensors: dict[str, torch.Tensor], file: Path) -> None:
    """``safetensors.torch.save_file``, its own error (e.g. a full disk) raised as the ``OSError`` it is."""
    try:
        save_file(tensors, str(file))
    except SafetensorError as err:
        raise OSError(f"cannot write {file}: {err}") from err


def update_manifest(path: Path, **fields: Any) -> Manifest:
    """Set ``fields`` in a skill's manifest (atomic replace; ``Manifest.with_fields``); the checksummed files are
    untouched."""
    manifest = load_manifest(path).with_fields(**fields)
    atomic_write_text(Path(path) / MANIFEST, json.dumps(manifest.to_json(), indent=2))
    return manifest


def read_checked(path: Path, name: str, digest: str, limit: int, inside: str | Path | None = None) -> bytes:
    """A skill file's bytes (regular, inside ``inside``, by default the skill's directory, at most ``limit``), checked
    against ``digest``."""
    file = path / name
    try:
        data = read_bounded(file, limit, inside=inside or path, what=name)
    except FileNotFoundError as err:
        raise CorruptSkillError(f"{path}: {name} is missing") from err
    except UnsafeFileError as err:
        raise CorruptSkillError(str(err)) from err
    except OSError as err:
        raise CorruptSkillError(f"{file}: cannot be read ({err})") from err
    if hashlib.sha256(data).hexdigest() != digest:
        raise CorruptSkillError(f"{file}: checksum mismatch; the file is truncated or was modified")
    return data


def _check_sizes(path: Path, info: Manifest, weights: bytes) -> None:
    """The networks the manifest asks for against the numbers the weight file holds: no more than it holds (nothing
    is allocated beyond the file), and the file no larger than they and their optimizer state need."""
    implied = implied_parameters(info)
    held = len(weights) // 4
    if implied > held:
        raise CorruptSkillError(f"{path / MANIFEST}: its networks (hidden {info.hyperparameters.get('hidden')}) need "
                                f"{implied} numbers, but {WEIGHTS} holds at most {held}")
    if len(weights) > 4 * 3 * implied + HEADER_SLACK:  # Q, target Q, sampler and Adam's two moments: < 3x
        raise CorruptSkillError(f"{path / WEIGHTS}: {len(weights)} bytes, more than the networks of its manifest and "
                                f"their optimizer state can hold ({implied} numbers)")


def check_transitions(data: bytes, info: Manifest, where: Path | str) -> None:
    """Check a ``transitions.npz`` before any array is decompressed: at most ``MAX_ARRAYS`` uncompressed ``.npy``
    members, each a numeric array of 1 or 2 dimensions whose header agrees with its uncompressed size, all of one
    length (at most ``MAX_STORED_ROWS``), observations and actions as wide as the manifest says, and at most
    ``MAX_TRANSITIONS_BYTES`` in all. ``CorruptSkillError`` naming the array otherwise."""
    widths = {"obs": info.obs_dim, "next_obs": info.obs_dim, "action": info.act_dim}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            names = [m.filename for m in members]
            if len(members) > MAX_ARRAYS or len(set(names)) != len(names):
                raise ValueError(f"{len(members)} members {names[:MAX_ARRAYS]}; at most {MAX_ARRAYS} distinct arrays")
            rows = {m.filename: _array_rows(archive, m, widths) for m in members}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, RuntimeError, NotImplementedError) as err:
        raise CorruptSkillError(f"{where}: not the stored transitions this toolkit writes ({err})") from err
    if len(set(rows.values())) > 1:
        raise CorruptSkillError(f"{where}: its arrays differ in length: {rows}")
    total = sum(m.file_size for m in members)
    if total > MAX_TRANSITIONS_BYTES:
        raise CorruptSkillError(f"{where}: {total} bytes uncompressed; at most {MAX_TRANSITIONS_BYTES}")


def _array_rows(archive: zipfile.ZipFile, member: zipfile.ZipInfo, widths: dict[str, int]) -> int:
    """The length of one ``.npy`` member, from its header (a few hundred bytes decompressed), checked."""
    key = member.filename.removesuffix(".npy")
    if not member.filename.endswith(".npy") or not key.isidentifier():
        raise ValueError(f"member {member.filename!r} is not a named .npy array")
    with archive.open(member) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"{key}: npy format {version}")
        header = f.tell()
    if dtype.hasobject or dtype.kind not in "fiub" or len(shape) not in (1, 2):
        raise ValueError(f"{key}: a {dtype} array of shape {shape}; expected numbers in 1 or 2 dimensions")
    if not 0 <= shape[0] <= MAX_STORED_ROWS or (key in widths and shape[1:] != (widths[key],)):
        raise ValueError(f"{key}: shape {shape}; expected at most {MAX_STORED_ROWS} rows"
                         + (f" of {widths[key]}" if key in widths else ""))
    if member.file_size != header + math.prod(shape) * dtype.itemsize:
        raise ValueError(f"{key}: {member.file_size} bytes uncompressed, but its header says {shape} {dtype}")
    return int(shape[0])


def read_skill(path: str | Path, device: str | torch.device = "cpu",
               inside: str | Path | None = None) -> tuple[SoftQLearning, Manifest, dict[str, np.ndarray]]:
    """Agent (with optimizer state), manifest (parsed once, here) and stored transitions of a skill directory, every
    file read only from inside ``inside`` (default: the directory; a library's root for a skill found by name, so that
    a version folder swapped for a link out of the library after it was resolved is refused, not read).

    Order of checks: the manifest's fields, each file (regular, inside the directory, bounded) and its checksum, the
    network sizes the manifest asks for against what the weight file holds (nothing is allocated beyond the file),
    the stored transitions' arrays (before decompressing them), then finite weights.
    """
    path = Path(path)
    info = load_manifest(path, inside)
    weights = read_checked(path, WEIGHTS, info.files[WEIGHTS], MAX_WEIGHTS_BYTES, inside)
    stored = read_checked(path, TRANSITIONS, info.files[TRANSITIONS], MAX_TRANSITIONS_BYTES, inside)
    _check_sizes(path, info, weights)
    check_transitions(stored, info, path / TRANSITIONS)
    try:
        tensors = load_tensors(weights)
        with np.load(io.BytesIO(stored), allow_pickle=False) as data:
            transitions = {k: data[k] for k in data.files}
    except (SafetensorError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise CorruptSkillError(f"{path}: cannot read weights or transitions ({err})") from err
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CorruptSkillError(f"{path / WEIGHTS}: non-finite values in {bad[:4]}{' ...' if len(bad) > 4 else ''}")
    return _agent(path, info, tensors, device), info, transitions


def _agent(path: Path, info: Manifest, tensors: dict[str, torch.Tensor], device: str | torch.device) -> SoftQLearning:
    """The SQL agent a manifest describes, its networks and optimizer state filled from ``tensors``."""
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
    return agent


def space_record(space: Any) -> dict:
    """A JSON description of a Box space (shape, dtype, finite bounds)."""
    low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
    record: dict[str, Any] = {"shape": list(space.shape), "dtype": str(space.dtype)}
    if np.all(np.isfinite(low)) and np.all(np.isfinite(high)):
        record |= {"low": low.tolist(), "high": high.tolist()}
    return record
