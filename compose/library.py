"""A composition as a skill-library entry: ``ComposedSkill.save()``, finding and reopening the entry, and the SQL
agent it holds (``composed_agent``, where ``compose.adapt`` starts too).

A saved composition is an ordinary skill directory (``skills.library``: safetensors + JSON, checksums)
whose Q-network is ``skills.sql.many_skills.ComposedSoftQNetwork``: the constituents' frozen Q-networks, the
weights, and a residual that is exactly 0; its sampler is the composed amortized sampler. So
``skills.load("reach+avoid.composed")`` acts with ``pi_w`` with no rebuild, and ``compose.load`` of the
same name gives the ``Composition`` back (constituents, weights, bound). The manifest's
``composed_from`` names each constituent (as it was asked for, and the version and weight checksum it
resolved to); a constituent retrained since makes the entry stale, and both loaders refuse it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

import envs
import skills
from skills.library import (
    CorruptSkillError,
    Manifest,
    check_fresh,
    claim_version_dir,
    constituents_library,
    default_library,
    inside_library,
    library_versions,
    load_manifest,
    read_skill,
    release_claim,
    write_skill,
)
from skills.library.manifest import NAME, ComposedFrom
from skills.sql import SamplerNetwork, SoftQNetwork
from skills.sql.backprop import linear_layers
from skills.sql.learner import SoftQLearning, SQLConfig
from skills.sql.many_skills import ComposedSoftQNetwork

from .composition import Composition
from .operators import OPERATORS, Operator, OperatorError, make_operator

SUFFIX = ".composed"  # saved compositions are named "<spec>.composed" beside the jointly trained "<spec>"


def savable_operators() -> list[str]:
    """The operators whose energy is ``Q_w + R`` (``Operator.saves_as_residual``): those a composition can be saved
    with."""
    return [name for name, cls in OPERATORS.items() if cls.saves_as_residual]


def operator_tag(composition: Composition) -> str:
    """``""`` for averaging, ``".dc"`` for another operator: what sets its saved or adapted entry's name apart."""
    return "" if composition.operator.bounded else f".{composition.operator.name}"


def default_name(composition: Composition) -> str:
    """``"reach+avoid.composed"``: the constituents' names (without pinned versions) and ``SUFFIX``; another operator
    than averaging adds its name: ``"puck-x+puck-y.dc.composed"``."""
    return composition.skill_names + operator_tag(composition) + SUFFIX


def composed_agent(composition: Composition, sampler: SamplerNetwork, seed: int = 0,
                   config: SQLConfig | None = None, residual: nn.Module | None = None) -> SoftQLearning:
    """A SQL agent whose Q is ``Q_w + R`` and whose sampler is the composed ``sampler``, so it acts as the
    composition does; the start of ``compose.adapt`` and the content of a saved composition. ``residual``: ``R``
    (the operator's, ``Operator.residual``; ``dc``: ``-C_w``), by default 0.
    ``config``: its SQL settings (default: the first constituent's, with the sampler's widths)."""
    hidden = tuple(layer.out_features for layer in linear_layers(sampler.net)[:-1])
    config = config or replace(composition.parts[0].agent.config, hidden=hidden)
    mismatch = {k: (getattr(config, k), v) for k, v in (("hidden", hidden), ("alpha", composition.alpha),
                                                         ("gamma", composition.gamma)) if getattr(config, k) != v}
    if mismatch:
        raise ValueError("SQL settings do not fit the composition: " + ", ".join(
            f"{k} {mine} (settings) against {theirs} (composition)" for k, (mine, theirs) in mismatch.items()))
    if residual is not None and not isinstance(residual, SoftQNetwork):
        raise TypeError(f"the residual R of Q_w + R must be a SoftQNetwork, got {type(residual).__name__}")
    q = ComposedSoftQNetwork.compose([p.agent.q for p in composition.parts], composition.weights.tolist(),
                                     hidden, seed=seed, residual=residual)
    agent = SoftQLearning(composition.obs_dim, composition.act_dim, config, q=q)
    agent.sampler.load_state_dict(sampler.state_dict())
    return agent


def provenance(composition: Composition, library: Path) -> dict:
    """What a composition was made from: each constituent as asked for and as resolved, the weights, and the
    constituents' library when it is not ``library`` (a record only: a saved composition's is always its own,
    ``check_beside``)."""
    constituents = [{"spec": label, "name": p.name, "version": p.info.version, "weights_sha256": p.info.weights_sha256}
                    for label, p in zip(composition.labels, composition.parts, strict=False)]
    own = Path(composition.library) if composition.library is not None else default_library()
    return {"constituents": constituents, "weights": composition.weights.tolist(),
            "library": None if own.resolve() == library.resolve() else str(own.resolve()),
            "operator": composition.operator.settings(), "env_steps_used": 0}


def check_beside(composition: Composition, root: Path) -> None:
    """A saved composition reopens its constituents from its own library only (a path in a manifest is never
    followed out of it), so each constituent must be the version of its name in ``root``."""
    for part in composition.parts:
        try:
            here = inside_library(part.path, root)
        except CorruptSkillError:
            here = None
        if here is None or here != (root / part.name / f"v{part.info.version}").resolve():
            raise ValueError(f"cannot save into {root}: constituent {part.name} v{part.info.version} lives in "
                             f"{part.path}, not in that library; a saved composition reopens its constituents from its "
                             "own library, so save it there (--out) or copy the constituents into it first")


def save_target(composition: Composition, name: str | None = None, library: str | Path | None = None) -> tuple[Path, str]:
    """Where ``save`` would write (the library and the entry's name), checked before anything is built: an operator
    that can be saved, a valid name, and a library that holds the constituents."""
    root = Path(library) if library is not None else (Path(composition.library) if composition.library is not None
                                                       else default_library())
    if not composition.operator.saves_as_residual:
        savable = ", ".join(repr(name) for name in savable_operators())
        raise ValueError(f"saving a composition is supported for operators whose energy is sum_i w_i Q_i + R "
                         f"({savable}); {composition.operator.name!r}'s is not, and it is rebuilt from the library "
                         "cache instead (compose.load with the same operator and settings)")
    name = name or default_name(composition)
    if not NAME.match(name):
        raise ValueError(f"invalid skill name {name!r}: letters, digits, '_', '.', '+', '-'; no '/' or '@'")
    check_beside(composition, root)
    return root, name


def save(composition: Composition, sampler: SamplerNetwork | None, name: str | None = None,
         library: str | Path | None = None) -> Path:
    """Write the composition (with its built ``sampler``) as a new library version ``<library>/<name>/v<N>``
    (never overwrites; the library must hold its constituents: ``save_target``)."""
    root, name = save_target(composition, name, library)
    if sampler is None:
        raise ValueError("build the composition first: its sampler is what the saved entry acts with")
    agent = composed_agent(composition, sampler, composition.seed, residual=operator_residual(composition))
    path = claim_version_dir(name, root)
    try:
        return write_skill(path, agent, saved_manifest(composition, agent, path, root), composition.relabelled_transitions())
    except BaseException:
        release_claim(path)
        raise


def operator_residual(composition: Composition) -> nn.Module | None:
    """``R`` of the composition's energy as ``Q_w + R`` (``Operator.residual``; None: 0). Builds the operator's parts
    first if needed (a ``ComposedSkill``'s policy)."""
    op = composition.operator
    if op.bounded:  # averaging: R = 0, nothing to build
        return op.residual(composition.q_w)
    policy = getattr(composition, "policy", None)
    if policy is None:
        raise ValueError(f"operator {op.name!r}: build the composition first (its energy's learned parts)")
    return op.residual(policy.q_fn)


def saved_manifest(composition: Composition, agent: SoftQLearning, path: Path, root: Path) -> Manifest:
    """The manifest of a saved composition: the first constituent's spaces and family, ``composed_from``."""
    first = composition.parts[0].info  # spaces are copied as recorded
    assert isinstance(agent.q, ComposedSoftQNetwork)  # composed_agent's
    hyper = {k: v for k, v in agent.config.to_dict().items() if k not in ("alpha", "gamma")}
    return Manifest(
        name=path.parent.name, version=int(path.name[1:]), status="complete", task=composition.task.name,
        family=first.family, observation_space=first.observation_space, action_space=first.action_space,
        alpha=composition.alpha, gamma=composition.gamma, hyperparameters=hyper,
        architecture={"sampler": "mlp, a = tanh(f(s, xi)), xi ~ N(0, I); the composed sampler (compose.sampling)",
                      "hidden": list(agent.config.hidden), "activation": "relu", "noise_dim": composition.act_dim,
                      **agent.q.architecture()},
        seed=composition.seed, composed_from=ComposedFrom.from_json(provenance(composition, root) | {"library": None}),
        record={"metrics": {}, "library_versions": library_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def saved_entry(spec: str, library: str | None) -> Path | None:
    """The directory of a saved composition that ``spec`` names, or None when it names something else."""
    try:
        path = skills.resolve(spec, library)
    except (skills.SkillError, envs.UnknownNameError):
        return None
    try:
        return path if load_manifest(path).composed_from is not None else None
    except skills.SkillError:
        return None


@dataclass(frozen=True)
class Reopened:
    """What a saved entry holds: its constituents (the versions it was made from), its record (weights, labels), the
    operator it was composed with, its agent (``Q_w + R`` and the composed sampler), and the constituents' library."""

    parts: list[skills.Skill]
    record: ComposedFrom
    operator: Operator
    agent: SoftQLearning
    library: Path


def same_kind(value: object, default: object) -> bool:
    """Whether a recorded setting is the kind of value its default is: a finite number for a number, a tuple of
    positive whole numbers for widths, the same type otherwise."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, int | float):
        return isinstance(value, int | float) and abs(value) < 1e300 and math.isfinite(value) and (
            isinstance(default, float) or value == int(value))
    if isinstance(default, tuple):
        return isinstance(value, tuple) and len(value) > 0 and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**20 for v in value)
    return type(value) is type(default)


def recorded_operator(record: ComposedFrom, where: Path) -> Operator:
    """The operator a saved entry's record names (entries saved before operators were recorded: averaging), checked:
    a known operator with valid settings, one that saves as ``Q_w + R``."""
    recorded = record.extra.get("operator", {"name": "average"})
    try:
        if not isinstance(recorded, dict) or not isinstance(recorded.get("name"), str):
            raise OperatorError(f"expected an object with a 'name', got {recorded!r}")
        settings = {k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items() if k != "name"}
        default = make_operator(recorded["name"])
        for key, value in settings.items():
            if hasattr(default, key) and not same_kind(value, getattr(default, key)):
                raise OperatorError(f"{key} is {value!r}, not a value like its default {getattr(default, key)!r}")
        operator = make_operator(default, **settings)
    except (OperatorError, TypeError, ValueError, OverflowError) as err:
        raise CorruptSkillError(f"{where / 'manifest.json'}: composed_from.operator is not a valid operator ({err})") \
            from None
    if not operator.saves_as_residual:
        raise CorruptSkillError(f"{where / 'manifest.json'}: composed_from.operator {operator.name!r} does not save as "
                                "Q_w + R; no saved composition uses it")
    return operator


def reopen(path: Path, allow_stale: bool = False) -> Reopened:
    """What a saved entry holds (``Reopened``), its constituents checked against the checksums it records."""
    agent, info, _ = read_skill(path)
    if not allow_stale:
        check_fresh(path, info)
    record = info.composed_from
    if record is None:
        raise CorruptSkillError(f"{path}: not a saved composition (no composed_from)")
    own = constituents_library(path, info)
    parts = []
    for part in record.constituents:
        skill = skills.load(f"{part.name}@v{part.version}", own)
        if skill.info.weights_sha256 != part.weights_sha256:
            raise CorruptSkillError(f"{skill.path}: its weights are not those {path} was composed from "
                                    f"({skill.info.weights_sha256[:12]} against {part.weights_sha256[:12]})")
        parts.append(skill)
    operator = recorded_operator(record, path)
    check_energy_record(agent, record, operator, path)
    return Reopened(parts, record, operator, agent, own)


def check_energy_record(agent: SoftQLearning, record: ComposedFrom, operator: Operator, path: Path) -> None:
    """A saved entry's network against its record, so that both loaders give one energy: ``Q_w + R`` with the
    recorded weights, and ``R = 0`` where it records averaging (``compose.load`` then uses ``Q_w`` itself)."""
    q = agent.q
    if not isinstance(q, ComposedSoftQNetwork):
        raise CorruptSkillError(f"{path}: a saved composition's Q-network must be composed (Q_w + R), got "
                                f"{type(q).__name__}")
    mix = [float(w) for w in q.mix]
    if len(mix) != len(record.weights) or any(abs(a - b) > 1e-6 for a, b in zip(mix, record.weights, strict=False)):
        raise CorruptSkillError(f"{path}: its network mixes the constituents with weights {mix}, but its record says "
                                f"{list(record.weights)}")
    out = linear_layers(q.residual.net)[-1]
    if operator.residual(q) is None and bool(out.weight.any() or out.bias.any()):
        raise CorruptSkillError(f"{path}: it records operator {operator.name!r} (R = 0), but its residual R is not 0")
