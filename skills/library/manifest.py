"""The skill manifest, in one typed home: written from a ``Manifest`` (``to_json``) and read back through
``Manifest.parse``, once per load; each fact is stored once (alpha and gamma at the top level only).

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..sql.learner import SQLConfig

FORMAT = "composable-skills/skill"
FORMAT_VERSION = 2  # 2: alpha and gamma stored once, at the top level; 1 repeated them in hyperparameters
MANIFEST, WEIGHTS, TRANSITIONS = "manifest.json", "weights.safetensors", "transitions.npz"
SKILL_FILES = (WEIGHTS, TRANSITIONS)  # the checksummed files; nothing else is opened by name
STATUSES = ("training", "complete", "diverged")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]{0,127}$")  # no '/', no '@', no leading dot
SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_DIM = 4096  # observation / action dimensions a manifest may declare


class SkillError(ValueError):
    """Base class of skill loading and saving errors: bad input (a name, a file), so a ``ValueError``."""


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

    def to_json(self) -> dict:
        bounds = {"low": list(self.low), "high": list(self.high)} if self.low is not None and self.high is not None else {}
        return {"shape": list(self.shape), "dtype": self.dtype, **bounds}

    @classmethod
    def from_json(cls, record: dict) -> "Space":
        """A space from its JSON record, checked as a manifest's are."""
        return _Checker("space record").space({"space": record}, "space")


@dataclass(frozen=True)
class Constituent:
    """One skill a composition was made from: as asked for (``spec``) and as it resolved."""

    spec: str
    name: str
    version: int
    weights_sha256: str


@dataclass(frozen=True)
class ComposedFrom:
    """``composed_from`` / ``adapted_from``: the constituents, the weights and where they live; ``extra`` keeps
    what else the record says (e.g. ``env_steps_used``), written back as it was."""

    constituents: tuple[Constituent, ...]
    weights: tuple[float, ...]
    library: str | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"constituents": [dict(vars(c)) for c in self.constituents], "weights": list(self.weights),
                "library": self.library, **self.extra}

    @property
    def operator_name(self) -> str:
        """The operator the record names (``compose`` checks it on reopening); ``"average"`` where it names none."""
        recorded = self.extra.get("operator")
        name = recorded.get("name") if isinstance(recorded, dict) else None
        return name if isinstance(name, str) and name.isidentifier() else "average"

    @classmethod
    def from_json(cls, record: dict) -> "ComposedFrom":
        """A provenance record from its JSON, checked as a manifest's are."""
        parsed = _Checker("provenance record").provenance({"record": record}, "record")
        assert parsed is not None
        return parsed


# the fields of the model, in the order they are written; anything else is the manifest's ``record``
FIELDS = ("name", "version", "status", "task", "task_kwargs", "task_definition", "family", "observation_space",
          "action_space", "alpha", "gamma", "architecture", "hyperparameters", "seed", "env_steps", "updates", "wall_time_s",
          "composed_from", "adapted_from")
STORED_ONCE = ("alpha", "gamma")  # top-level facts that format 1 also kept inside hyperparameters


@dataclass(frozen=True)
class Manifest:
    """A skill's manifest: the fields every reader relies on, typed and validated, and ``record``, the rest of what
    the toolkit writes about the skill (metrics, history, evaluation, convergence, versions...) as plain JSON."""

    name: str
    version: int
    status: str
    task: str
    family: str
    observation_space: Space
    action_space: Space
    alpha: float
    gamma: float
    hyperparameters: dict  # SQLConfig's fields except alpha and gamma (``sql_config`` puts them together)
    architecture: dict = field(default_factory=dict)
    task_kwargs: dict = field(default_factory=dict)
    task_definition: dict | None = None  # what defined the task's reward when the skill was trained (envs.definition)
    seed: int | None = None
    env_steps: int = 0
    updates: int = 0
    wall_time_s: float | None = None
    composed_from: ComposedFrom | None = None
    adapted_from: ComposedFrom | None = None
    files: dict = field(default_factory=dict)  # file name -> sha256; empty until written
    record: dict = field(default_factory=dict)

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
    def steps_left(self) -> int:
        """Environment steps an interrupted run (status 'training') had left of its budget: ``training.until_env_steps``
        (or, for a run that did not itself resume, ``training.steps``) minus ``env_steps``; 0 for a finished or diverged
        skill, or when the manifest records no budget."""
        training = self.record.get("training")
        if self.status != "training" or not isinstance(training, dict):
            return 0
        until = training.get("until_env_steps", None if self.record.get("resumed_from") else training.get("steps"))
        return max(0, until - self.env_steps) if isinstance(until, int) and not isinstance(until, bool) else 0

    @property
    def trained_together(self) -> list[int] | None:
        """The seeds, in order, whose updates were stacked with this one's (``training.trained_together``; ``[seed]``
        for a seed trained alone); None for manifests written before it was recorded. A seed reproduces bit for bit
        only in the same stack (docs/skills.md, "Many seeds in one process")."""
        training = self.record.get("training")
        together = training.get("trained_together") if isinstance(training, dict) else None
        if not isinstance(together, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in together):
            return None
        return list(together)

    @property
    def weights_sha256(self) -> str:
        return self.files[WEIGHTS]

    @property
    def raw(self) -> dict:
        """The manifest as JSON (``to_json``)."""
        return self.to_json()

    def sql_config(self) -> SQLConfig:
        """The ``skills.sql.SQLConfig`` the skill was trained with: its hyperparameters with alpha and gamma, every one
        checked (``SQLConfig``: types, and bounds on each count); ``CorruptSkillError`` naming the field otherwise."""
        try:
            return SQLConfig.from_dict({**self.hyperparameters, "alpha": self.alpha, "gamma": self.gamma})
        except KeyError as err:
            raise CorruptSkillError(f"{self.name} v{self.version}: hyperparameters lack {err}") from err
        except (TypeError, ValueError) as err:
            raise CorruptSkillError(f"{self.name} v{self.version}: malformed hyperparameters ({err})") from err

    def with_fields(self, **fields: Any) -> "Manifest":
        """A copy with ``fields`` set: model fields by name, anything else into ``record``."""
        known = {k: v for k, v in fields.items() if k in FIELDS or k in ("files", "record")}
        record = {**self.record, **{k: v for k, v in fields.items() if k not in known}}
        return replace(self, **known, record=record)

    def to_json(self) -> dict:
        """The JSON object written to ``manifest.json`` (format version ``FORMAT_VERSION``)."""
        out: dict[str, Any] = {}
        for key in FIELDS:
            value = getattr(self, key)
            if key in ("wall_time_s", "composed_from", "adapted_from", "task_definition") and value is None:
                continue
            out[key] = value.to_json() if hasattr(value, "to_json") else value
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **out, **self.record, "files": dict(self.files)}

    @classmethod
    def parse(cls, raw: Any, where: Path | str) -> "Manifest":
        """Check ``raw`` (the parsed JSON) field by field, migrating older formats; ``where`` names the file in errors."""
        check = _Checker(where)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise CorruptSkillError(f"{where}: not a composable-skills manifest (no \"format\": \"{FORMAT}\")")
        version = raw.get("format_version")
        if type(version) is not int or version < 1:
            raise CorruptSkillError(f"{where}: format_version must be a positive integer, got {version!r}")
        if version > FORMAT_VERSION:
            raise UnsupportedFormatError(f"{where}: skill format version {version} is newer than this toolkit reads "
                                         f"(<= {FORMAT_VERSION}); upgrade composable-skills to load it")
        status = check.string(raw, "status")
        if status not in STATUSES:
            raise CorruptSkillError(f"{where}: status must be one of {', '.join(STATUSES)}; got {status!r}")
        manifest = cls(
            name=check.name(raw, "name"), version=check.integer(raw, "version", low=1), status=status,
            task=check.string(raw, "task"), task_kwargs=check.mapping(raw, "task_kwargs", default={}),
            task_definition=check.task_definition(raw),
            family=check.string(raw, "family"), observation_space=check.space(raw, "observation_space"),
            action_space=check.space(raw, "action_space"), alpha=check.number(raw, "alpha", positive=True),
            gamma=check.number(raw, "gamma", low=0.0, high=1.0), architecture=check.mapping(raw, "architecture", default={}),
            hyperparameters=check.hyperparameters(raw, version),
            seed=check.integer(raw, "seed", low=None, optional=True), env_steps=check.integer(raw, "env_steps", low=0),
            updates=check.integer(raw, "updates", low=0, default=0),
            wall_time_s=check.number(raw, "wall_time_s", low=0.0, high=math.inf) if "wall_time_s" in raw else None,
            composed_from=check.provenance(raw, "composed_from"), adapted_from=check.provenance(raw, "adapted_from"),
            files=check.files(raw),
            record={k: v for k, v in raw.items() if k not in FIELDS and k not in ("format", "format_version", "files")})
        try:
            manifest.sql_config()  # every hyperparameter typed and bounded (SQLConfig), before anything is sized by them
        except CorruptSkillError as err:
            raise CorruptSkillError(f"{where}: {err}") from None
        return manifest


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

    def files(self, raw: dict) -> dict[str, str]:
        files = self.mapping(raw, "files")
        unknown = sorted(set(files) - set(SKILL_FILES))
        if unknown:
            raise CorruptSkillError(f"{self.where}: files lists {unknown}; a skill's checksummed files are only "
                                    f"{list(SKILL_FILES)}, named without a directory")
        for name in SKILL_FILES:
            if not isinstance(files.get(name), str) or not SHA256.match(files[name]):
                raise CorruptSkillError(f"{self.where}: files[{name!r}] must be a sha256 hex digest, got {files.get(name)!r}")
        return dict(files)

    def task_definition(self, raw: dict) -> dict | None:
        """The recorded definition of the task (``envs.definition``): its digest and terms, when present (skills
        trained before definitions were recorded have none)."""
        value = raw.get("task_definition")
        if value is None:
            return None
        if not (isinstance(value, dict) and isinstance(value.get("digest"), str) and SHA256.match(value["digest"])
                and isinstance(value.get("terms", {}), dict)):
            raise self.fail("task_definition", "an object with a sha256 'digest' and 'terms'", value)
        return value

    def hyperparameters(self, raw: dict, version: int) -> dict:
        """The SQL hyperparameters without alpha and gamma. Format 1 repeated those two inside; the copies are
        checked against the top-level values (which the skill was composed and evaluated with) and dropped."""
        hyper = dict(self.mapping(raw, "hyperparameters"))
        for key in STORED_ONCE:
            if key not in hyper:
                continue
            if version >= 2:
                raise CorruptSkillError(f"{self.where}: {key} is stored twice (top level {raw.get(key)!r}, hyperparameters "
                                        f"{hyper[key]!r}); format {version} keeps it at the top level only")
            if hyper[key] != raw.get(key):
                raise CorruptSkillError(f"{self.where}: the two copies of {key} differ: {raw.get(key)!r} (top level) "
                                        f"against {hyper[key]!r} (hyperparameters)")
            del hyper[key]
        return hyper

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
        extra = {k: v for k, v in value.items() if k not in ("constituents", "weights", "library")}
        return ComposedFrom(tuple(parts), tuple(float(w) for w in weights), library, extra)


def mlp_parameters(sizes: list[int]) -> int:
    """Parameters of an MLP with layer widths ``sizes`` (input first): weights and biases."""
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def implied_parameters(manifest: Manifest) -> int:
    """How many numbers the manifest's networks hold (Q, target Q, sampler), to compare with the weight
    file before anything is allocated: a manifest cannot make the loader allocate more than the file has."""
    o, a = manifest.obs_dim, manifest.act_dim
    hidden: Any = manifest.hyperparameters.get("hidden")  # JSON, checked below
    arch = manifest.architecture
    widths = [hidden] + ([arch.get("residual_hidden")] if arch.get("q") == "composed" else [])
    for w in widths:
        if not isinstance(w, list) or not w or not all(type(h) is int and h > 0 for h in w):
            raise CorruptSkillError(f"{manifest.name}: hidden widths must be positive integers, got {w!r}")
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
