"""The skill manifest, in one typed home: every reader goes through ``Manifest.parse``.

A manifest is JSON written by this toolkit, but a library is a directory anyone can edit, so a
manifest is checked before anything it says is used: its types and ranges, the file names it
lists (only the skill's own files, by bare name), and the network sizes it asks for, which are
bounded by what the weight file holds (``implied_parameters``) before a tensor is allocated.
Every failure is a ``CorruptSkillError`` (or ``UnsupportedFormatError``) that names the file and
the field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "composable-skills/skill"
FORMAT_VERSION = 1
MANIFEST, WEIGHTS, TRANSITIONS = "manifest.json", "weights.safetensors", "transitions.npz"
SKILL_FILES = (WEIGHTS, TRANSITIONS)  # the checksummed files; nothing else is opened by name
STATUSES = ("training", "complete", "diverged")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]{0,127}$")  # no '/', no '@', no leading dot
SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_DIM = 4096  # observation / action dimensions a manifest may declare


class SkillError(Exception):
    """Base class of skill loading and saving errors."""


class CorruptSkillError(SkillError):
    """A skill directory is incomplete, truncated, fails its checksums, or its manifest is malformed."""


class UnsupportedFormatError(SkillError):
    """The manifest was written by a newer format version than this toolkit reads."""


@dataclass(frozen=True)
class Space:
    """A Box space as the manifest records it."""

    shape: tuple[int, ...]
    dtype: str
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Constituent:
    """One skill a composition was made from: as asked for (``spec``) and as it resolved."""

    spec: str
    name: str
    version: int
    weights_sha256: str


@dataclass(frozen=True)
class ComposedFrom:
    """``composed_from`` / ``adapted_from``: the constituents, the weights and where they live."""

    constituents: tuple[Constituent, ...]
    weights: tuple[float, ...]
    library: str | None = None


@dataclass(frozen=True)
class Manifest:
    """The validated fields of a skill's ``manifest.json``; ``raw`` keeps the whole JSON object."""

    name: str
    version: int
    status: str
    task: str
    task_kwargs: dict
    family: str
    observation_space: Space
    action_space: Space
    alpha: float
    gamma: float
    architecture: dict
    hyperparameters: dict
    seed: int | None
    env_steps: int
    updates: int
    files: dict[str, str]
    wall_time_s: float | None = None
    composed_from: ComposedFrom | None = None
    adapted_from: ComposedFrom | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def obs_dim(self) -> int:
        return self.observation_space.shape[0]

    @property
    def act_dim(self) -> int:
        return self.action_space.shape[0]

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def weights_sha256(self) -> str:
        return self.files[WEIGHTS]

    @classmethod
    def draft(cls, raw: dict, where: Path | str = "manifest being written") -> "Manifest":
        """The typed form of a manifest not yet saved (no ``format`` or ``files``), e.g. a training run's, or a
        ``Skill`` built in memory from name, task, alpha, gamma and spaces (the rest takes neutral defaults)."""
        defaults = {"version": 1, "status": "training", "family": "unknown", "hyperparameters": {}, "env_steps": 0}
        stamped = {"format": FORMAT, "format_version": FORMAT_VERSION, **defaults, **raw,
                   "files": raw.get("files") or {name: "0" * 64 for name in SKILL_FILES}}
        return cls.parse(stamped, where)

    @classmethod
    def parse(cls, raw: Any, where: Path | str) -> "Manifest":
        """Check ``raw`` (the parsed JSON) field by field; ``where`` names the file in errors."""
        check = _Checker(where)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise CorruptSkillError(f"{where}: not a composable-skills manifest (no \"format\": \"{FORMAT}\")")
        version = raw.get("format_version")
        if type(version) is not int or version < 1:
            raise CorruptSkillError(f"{where}: format_version must be a positive integer, got {version!r}")
        if version > FORMAT_VERSION:
            raise UnsupportedFormatError(f"{where}: skill format version {version} is newer than this toolkit reads "
                                         f"(<= {FORMAT_VERSION}); upgrade composable-skills to load it")
        files = check.mapping(raw, "files")
        unknown = sorted(set(files) - set(SKILL_FILES))
        if unknown:
            raise CorruptSkillError(f"{where}: files lists {unknown}; a skill's checksummed files are only "
                                    f"{list(SKILL_FILES)}, named without a directory")
        for name in SKILL_FILES:
            if not isinstance(files.get(name), str) or not SHA256.match(files[name]):
                raise CorruptSkillError(f"{where}: files[{name!r}] must be a sha256 hex digest, got {files.get(name)!r}")
        status = check.string(raw, "status")
        if status not in STATUSES:
            raise CorruptSkillError(f"{where}: status must be one of {', '.join(STATUSES)}; got {status!r}")
        obs, act = check.space(raw, "observation_space"), check.space(raw, "action_space")
        hyper = check.mapping(raw, "hyperparameters")
        return cls(
            name=check.name(raw, "name"), version=check.integer(raw, "version", low=1), status=status,
            task=check.string(raw, "task"), task_kwargs=check.mapping(raw, "task_kwargs", default={}),
            family=check.string(raw, "family"), observation_space=obs, action_space=act,
            alpha=check.number(raw, "alpha", positive=True), gamma=check.number(raw, "gamma", low=0.0, high=1.0),
            architecture=check.mapping(raw, "architecture", default={}), hyperparameters=hyper,
            seed=check.integer(raw, "seed", low=None, optional=True), env_steps=check.integer(raw, "env_steps", low=0),
            updates=check.integer(raw, "updates", low=0, default=0), files=dict(files),
            wall_time_s=check.number(raw, "wall_time_s", low=0.0, high=math.inf) if "wall_time_s" in raw else None,
            composed_from=check.provenance(raw, "composed_from"), adapted_from=check.provenance(raw, "adapted_from"),
            raw=raw)


class _Checker:
    """Field readers that raise ``CorruptSkillError`` naming the file, the field and what was found."""

    def __init__(self, where: Path | str):
        self.where = where

    def fail(self, key: str, expected: str, value: Any) -> CorruptSkillError:
        shown = repr(value) if len(repr(value)) < 80 else repr(value)[:77] + "..."
        return CorruptSkillError(f"{self.where}: field {key!r} must be {expected}, got {shown}")

    def get(self, raw: dict, key: str, default: Any = ...) -> Any:
        if key not in raw:
            if default is not ...:
                return default
            raise CorruptSkillError(f"{self.where}: missing field {key!r}")
        return raw[key]

    def string(self, raw: dict, key: str) -> str:
        value = self.get(raw, key)
        if not isinstance(value, str) or not value:
            raise self.fail(key, "a non-empty string", value)
        return value

    def name(self, raw: dict, key: str) -> str:
        value = self.string(raw, key)
        if not NAME.match(value):
            raise self.fail(key, "a skill name (letters, digits, '_', '.', '+', '-'; no '/' or '@')", value)
        return value

    def integer(self, raw: dict, key: str, low: int | None = 0, optional: bool = False, default: Any = ...) -> Any:
        value = self.get(raw, key, None if optional else default)
        if value is None and optional:
            return None
        if type(value) is not int or (low is not None and value < low):
            raise self.fail(key, "an integer" + (f" >= {low}" if low is not None else ""), value)
        return value

    def number(self, raw: dict, key: str, positive: bool = False, low: float | None = None,
               high: float | None = None) -> float:
        value = self.get(raw, key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (not positive or value > 0) and (low is None or value >= low) and (high is None or value <= high)
        if not ok:
            bounds = " > 0" if positive else (f" in [{low}, {high}]" if low is not None else "")
            raise self.fail(key, "a finite number" + bounds, value)
        return float(value)

    def mapping(self, raw: dict, key: str, default: Any = ...) -> dict:
        value = self.get(raw, key, default)
        if not isinstance(value, dict):
            raise self.fail(key, "a JSON object", value)
        return value

    def space(self, raw: dict, key: str) -> Space:
        value = self.mapping(raw, key)
        shape = value.get("shape")
        if (not isinstance(shape, list) or len(shape) != 1 or type(shape[0]) is not int
                or not 1 <= shape[0] <= MAX_DIM):
            raise self.fail(f"{key}.shape", f"[n] with 1 <= n <= {MAX_DIM}", shape)
        bounds = []
        for side in ("low", "high"):
            b = value.get(side)
            if b is not None and (not isinstance(b, list) or len(b) != shape[0] or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) for x in b)):
                raise self.fail(f"{key}.{side}", f"a list of {shape[0]} numbers", b)
            bounds.append(tuple(float(x) for x in b) if b is not None else None)
        return Space((shape[0],), str(value.get("dtype", "float32")), *bounds)

    def provenance(self, raw: dict, key: str) -> ComposedFrom | None:
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, dict) or not isinstance(value.get("constituents"), list):
            raise self.fail(key, "an object with a list of constituents", value)
        parts = []
        for i, part in enumerate(value["constituents"]):
            if not (isinstance(part, dict) and all(isinstance(part.get(k), str) for k in ("spec", "name", "weights_sha256"))
                    and type(part.get("version")) is int):
                raise self.fail(f"{key}.constituents[{i}]", "{spec, name, version, weights_sha256}", part)
            parts.append(Constituent(part["spec"], part["name"], part["version"], part["weights_sha256"]))
        weights = value.get("weights")
        if not isinstance(weights, list) or len(weights) != len(parts) or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in weights):
            raise self.fail(f"{key}.weights", f"{len(parts)} finite numbers", weights)
        library = value.get("library")
        if library is not None and not isinstance(library, str):
            raise self.fail(f"{key}.library", "a path or null", library)
        return ComposedFrom(tuple(parts), tuple(float(w) for w in weights), library)


def mlp_parameters(sizes: list[int]) -> int:
    """Parameters of an MLP with layer widths ``sizes`` (input first): weights and biases."""
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def implied_parameters(manifest: Manifest) -> int:
    """How many numbers the manifest's networks hold (Q, target Q, sampler), to compare with the weight
    file before anything is allocated: a manifest cannot make the loader allocate more than the file has."""
    o, a = manifest.obs_dim, manifest.act_dim
    hidden = manifest.hyperparameters.get("hidden")
    arch = manifest.architecture
    widths = [hidden] + ([arch.get("residual_hidden")] if arch.get("q") == "composed" else [])
    for w in widths:
        if not isinstance(w, list) or not w or not all(type(h) is int and h > 0 for h in w):
            raise CorruptSkillError(f"{manifest.raw.get('name', '?')}: hidden widths must be positive integers, got {w!r}")
    sampler = mlp_parameters([o + a, *hidden, a])
    if arch.get("q") == "composed":
        layers = arch.get("constituent_layers")
        n = arch.get("constituents")
        if type(n) is not int or n < 1 or not isinstance(layers, list) or not all(
                isinstance(s, list) and len(s) == 2 and all(type(x) is int and x > 0 for x in s) for s in layers):
            raise CorruptSkillError("composed architecture: constituents and constituent_layers must be positive integers")
        q = n * sum(i * j + j for i, j in layers) + mlp_parameters([o + a, *arch["residual_hidden"], 1])
    else:
        q = mlp_parameters([o + a, *hidden, 1])
    return 2 * q + sampler
