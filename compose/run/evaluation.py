"""The policies of a run on the same seeded episodes: each composition (by its operator), the jointly trained
reference and each constituent, every one as a ``skills.policy.SoftPolicy``."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import torch

import envs
import skills
from envs.core import UnknownNameError
from skills.evaluation.episodes import episode_soft_returns, summarise
from skills.evaluation.lockstep import EnvPool, lockstep_episodes
from skills.library import SkillError
from skills.policy import SoftPolicy

from ..build import Built
from ..composition import Composition, IncompatibleSkillsError, check_compatible
from ..policy import EVAL_PARTICLES, ComposedPolicy
from ..sampling import ParticleConfig, ParticlePolicy, constituent_init, resampled_actions
from .settings import EvaluationConfig

Pairs = list[tuple[np.ndarray, np.ndarray]]  # (obs, action) pairs a policy produced
VALUE_SAMPLES = 256  # importance samples per V in the soft returns


def composed_policy(composition: Composition, built: Built, kind: str, seed: int) -> ComposedPolicy:
    """The composed energy policy as a ``SoftPolicy``: the amortized sampler, per-decision SVGD, or
    importance resampling of ``exp(Q/alpha)`` (a slow reference with no sampler)."""
    particles = None
    if kind == "particles":
        assert built.q is not None  # build sets the energy
        particles = ParticlePolicy(built.q, composition.act_dim, composition.alpha, ParticleConfig(), seed,
                                   init=constituent_init([p.agent.sampler for p in composition.parts])).particles
    elif kind == "resampling":
        energy = built.q
        assert energy is not None  # build sets the energy
        generator = torch.Generator().manual_seed(seed)

        def particles(obs: torch.Tensor, generators=None) -> torch.Tensor:
            return resampled_actions(energy, obs, EVAL_PARTICLES, composition.alpha, composition.act_dim,
                                     generator=generator, generators=generators)
    return ComposedPolicy(composition, built.sampler, seed, particles, q_fn=built.q)


def train_command(task: str, library: str | None) -> str:
    """The command that trains a skill for the registered ``task`` into ``library``: with ``--tasks`` for each file of
    the user's that defines a part of it (``Task.user_sources``; not ``__main__``, which no command can load), so it
    runs as printed."""
    files = [src for src in envs.get_task(task).user_sources if src not in ("", "__main__")]
    words = ["python -m skills.train", shlex.quote(task), *(f"--tasks {shlex.quote(f)}" for f in files)]
    return " ".join(words + ([f"--out {shlex.quote(library)}"] if library else []))


def find_joint(composition: Composition, library: str | None, joint: str | None = None) -> tuple[skills.Skill | None, str]:
    """The jointly trained skill for the combined task (``joint``: a given one, e.g. ``"reach+avoid@v3"``), or
    why there is none."""
    name = composition.task.name
    if name not in envs.TASKS:
        return None, (f"no jointly trained reference: the combined task {name!r} is not a registered task "
                      f"(registered combinations, such as reach+avoid with equal weights, have one)")
    try:
        found = skills.load(joint or name, library)
    except (UnknownNameError, SkillError):
        return None, f"no jointly trained {name!r} skill in the library; train one with: {train_command(name, library)}"
    if any(Path(found.path).resolve() == Path(part.path).resolve() for part in composition.parts):
        return None, f"no jointly trained reference: the newest {name!r} skill ({found.path}) is one of the constituents"
    try:
        check_compatible([*composition.parts, found])
    except IncompatibleSkillsError as err:
        return None, f"the jointly trained {name!r} skill cannot serve as reference: {err}"
    return found, ""


def evaluate_row(name: str, policy: SoftPolicy, pool: EnvPool, evaluation: EvaluationConfig, cost: tuple[int, float],
                 pairs: Pairs | None = None) -> dict:
    """Seeded episodes of ``policy`` on the combined task, in lockstep, each with its own random stream; the soft
    return too when it samples. ``cost``: the environment steps and wall time the policy took to make; ``pairs``
    gets every (obs, action) it took. Torch's global generator (which skills' value estimates draw from) is
    reseeded for every row, so each row's numbers are the same whatever ran before it."""
    torch.manual_seed(evaluation.seed)
    seeds = [evaluation.seed + i for i in range(evaluation.episodes)]
    traced = not evaluation.deterministic or pairs is not None
    done = lockstep_episodes(pool, policy, seeds, evaluation.deterministic, keep_trace=traced)
    metrics = summarise(done)
    if evaluation.deterministic:
        metrics |= {"soft_return_mean": None, "soft_return_note": "deterministic actions have no soft return"}
    else:
        soft = episode_soft_returns(policy, done, VALUE_SAMPLES)
        metrics = {k: v for k, v in soft.items() if k != "soft_returns"} | metrics
    metrics["per_episode"] = {"seeds": seeds, "success": [bool(e.success) for e in done],
                              "return": [float(e.total) for e in done]}
    if not evaluation.deterministic:
        metrics["per_episode"]["soft_return"] = [float(x) for x in soft["soft_returns"]]
    if pairs is not None:
        pairs.extend((o, a) for e in done for o, a in zip(e.obs, e.actions, strict=True))
    env_steps, wall = cost
    return {"policy": name, **metrics, "env_steps_used": int(env_steps), "build_wall_time_s": round(float(wall), 2)}


def skill_cost(skill: skills.Skill) -> tuple[int, float]:
    """The environment steps and wall time a trained skill took."""
    return skill.info.env_steps, skill.info.wall_time_s or 0.0


def trajectories(policy: SoftPolicy, pool: EnvPool, episodes: int, evaluation: EvaluationConfig,
                 family: envs.Family) -> tuple[list, list, list]:
    """The first ``episodes`` seeded episodes of ``policy`` in the family's top view: (paths [T, 2], marks [K, 2]
    of each episode's first observation, success flags); the table's first episodes, each from its own stream."""
    assert family.plane is not None
    done = lockstep_episodes(pool, policy, [evaluation.seed + i for i in range(episodes)], evaluation.deterministic,
                             keep_trace=True)
    paths = [family.plane(e.path()) for e in done]
    marks = [family.plane_marks(e.path()[0]) if family.plane_marks is not None else np.zeros((0, 2)) for e in done]
    return paths, marks, [e.success for e in done]
