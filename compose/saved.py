"""Composed skills in the library: ``Composition.save()`` and reopening the entry.

A saved composition is an ordinary skill directory (``skills.library``: safetensors + JSON, checksums)
whose Q-network is ``skills.sql.many_skills.ComposedSoftQNetwork``: the constituents' frozen Q-networks, the
weights, and a residual that is exactly 0; its sampler is the composed amortized sampler. So
``skills.load("reach+avoid.composed")`` acts with ``pi_w`` with no rebuild, and ``compose.load`` of the
same name gives the ``Composition`` back (constituents, weights, bound). The manifest's
``composed_from`` names each constituent (as it was asked for, and the version and weight checksum it
resolved to); a constituent retrained since makes the entry stale, and both loaders refuse it.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import envs
import skills
from skills.sql.learner import SoftQLearning, SQLConfig
from skills.sql.backprop import linear_layers
from skills.library import CorruptSkillError, check_fresh, claim_version_dir, default_library, library_versions, load_manifest, read_skill, release_claim, write_skill
from skills.library.manifest import NAME
from skills.sql.many_skills import ComposedSoftQNetwork

from .composition import Composition
from .policy import ComposedPolicy

SUFFIX = ".composed"  # saved compositions are named "<spec>.composed" beside the jointly trained "<spec>"


def default_name(composition: Composition) -> str:
    """``"reach+avoid.composed"``: the constituents' names (without pinned versions) and ``SUFFIX``."""
    return composition.skill_names + SUFFIX


def relabelled_transitions(composition: Composition) -> dict[str, np.ndarray]:
    """The constituents' stored transitions with the combined task's reward ``r_w = sum_i w_i r_i``
    recomputed from each batch (rewards are functions of ``(s', a)``, ``envs.core``)."""
    data = composition.transitions()
    data["reward"] = np.asarray(composition.task.reward(data["next_obs"], data["action"]), np.float32)
    return data


def composed_agent(composition: Composition, seed: int = 0, config: SQLConfig | None = None) -> SoftQLearning:
    """A SQL agent whose Q is ``Q_w + R`` (``R`` = 0) and whose sampler is the composed sampler, so it acts
    as the composition does; the start of ``compose.adapt`` and the content of a saved composition.
    ``config``: its SQL settings (default: the first constituent's, with the sampler's widths)."""
    sampler = composition.policy.sampler
    hidden = tuple(layer.out_features for layer in linear_layers(sampler.net)[:-1])
    config = config or replace(composition.parts[0].agent.config, hidden=hidden)
    mismatch = {k: (getattr(config, k), v) for k, v in (("hidden", hidden), ("alpha", composition.alpha),
                                                         ("gamma", composition.gamma)) if getattr(config, k) != v}
    if mismatch:
        raise ValueError("SQL settings do not fit the composition: " + ", ".join(
            f"{k} {mine} (settings) against {theirs} (composition)" for k, (mine, theirs) in mismatch.items()))
    q = ComposedSoftQNetwork.compose([p.agent.q for p in composition.parts], composition.weights.tolist(),
                                     hidden, seed=seed)
    agent = SoftQLearning(composition.obs_dim, composition.act_dim, config, q=q)
    agent.sampler.load_state_dict(sampler.state_dict())
    return agent


def provenance(composition: Composition, library: Path) -> dict:
    """What a composition was made from: each constituent as asked for and as resolved, and the weights."""
    constituents = [{"spec": label, "name": p.name, "version": p.info.version, "weights_sha256": p.info.weights_sha256}
                    for label, p in zip(composition.labels, composition.parts)]
    own = Path(composition.library) if composition.library is not None else default_library()
    return {"constituents": constituents, "weights": composition.weights.tolist(),
            "library": None if own.resolve() == library.resolve() else str(own.resolve()),
            "env_steps_used": 0}


def save(composition: Composition, name: str | None = None, library: str | Path | None = None,
         progress: bool = True) -> Path:
    """Write the composition as a new library version ``<library>/<name>/v<N>`` (never overwrites)."""
    root = Path(library) if library is not None else (Path(composition.library) if composition.library is not None
                                                       else default_library())
    if composition.operator.name != "average":
        raise ValueError(f"saving a composition is supported for operator 'average' only (its Q-network is "
                         f"sum_i w_i Q_i + R); {composition.operator.name!r} is rebuilt from the library cache instead")
    name = name or default_name(composition)
    if not NAME.match(name):
        raise ValueError(f"invalid skill name {name!r}: letters, digits, '_', '.', '+', '-'; no '/' or '@'")
    if composition._policy is None:
        composition.build(progress=progress)
    agent = composed_agent(composition, composition.seed)
    path = claim_version_dir(name, root)
    first = composition.parts[0].manifest  # spaces are copied as recorded
    manifest = {
        "name": name, "version": int(path.name[1:]), "status": "complete",
        "task": composition.task.name, "task_kwargs": {}, "family": first["family"],
        "observation_space": first["observation_space"], "action_space": first["action_space"],
        "alpha": composition.alpha, "gamma": composition.gamma,
        "architecture": {"sampler": "mlp, a = tanh(f(s, xi)), xi ~ N(0, I); the composed sampler (compose.sampling)",
                         "hidden": list(agent.config.hidden), "activation": "relu",
                         "noise_dim": composition.act_dim, **agent.q.architecture()},
        "hyperparameters": agent.config.to_dict(), "seed": composition.seed, "env_steps": 0, "updates": 0,
        "metrics": {}, "composed_from": provenance(composition, root),
        "library_versions": library_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        return write_skill(path, agent, manifest, relabelled_transitions(composition))
    except BaseException:
        release_claim(path)
        raise


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


def reopen(path: Path, library: str | None = None, seed: int = 0, allow_stale: bool = False) -> Composition:
    """The ``Composition`` a saved entry holds: its constituents (the versions it was made from, checked
    against its checksums), its weights, and its sampler, with no rebuild."""
    agent, manifest, _ = read_skill(path)
    if not allow_stale:
        check_fresh(path, manifest)
    record = load_manifest(path).composed_from
    own = Path(record.library) if record.library else path.resolve().parent.parent
    parts = []
    for part in record.constituents:
        skill = skills.load(f"{part.name}@v{part.version}", own)
        if skill.info.weights_sha256 != part.weights_sha256:
            raise CorruptSkillError(f"{skill.path}: its weights are not those {path} was composed from "
                                    f"({skill.info.weights_sha256[:12]} against {part.weights_sha256[:12]})")
        parts.append(skill)
    composition = Composition(parts, list(record.weights), labels=[p.spec for p in record.constituents],
                              library=library if library is not None else str(own), seed=seed)
    composition._policy = ComposedPolicy(composition, agent.sampler, seed)
    composition.saved = path
    return composition

