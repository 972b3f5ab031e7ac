"""The policies of a run on the same seeded episodes: each composition (by its operator), the jointly trained
reference and each constituent, every one as a ``skills.policy.SoftPolicy``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

import envs
import skills
from envs.core import UnknownNameError
from skills.evaluation import run_episodes
from skills.library import SkillError
from skills.policy import SoftPolicy

from ..build import Built
from ..composition import Composition, IncompatibleSkillsError, check_compatible
from ..policy import EVAL_PARTICLES, ComposedPolicy
from ..sampling import ParticleConfig, ParticlePolicy, constituent_init, resampled_actions
from .settings import EvaluationConfig

Pairs = list[tuple[np.ndarray, np.ndarray]]  # (obs, action) pairs a policy produced


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

        def particles(obs: torch.Tensor) -> torch.Tensor:
            return resampled_actions(energy, obs, EVAL_PARTICLES, composition.alpha, composition.act_dim,
                                     generator=generator)
    return ComposedPolicy(composition, built.sampler, seed, particles, q_fn=built.q)


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
        return None, f"no jointly trained {name!r} skill in the library; train one with: python -m skills.train {name}"
    try:
        check_compatible([*composition.parts, found])
    except IncompatibleSkillsError as err:
        return None, f"the jointly trained {name!r} skill cannot serve as reference: {err}"
    return found, ""


def record_pairs(policy: Callable[[np.ndarray], np.ndarray], store: Pairs | None) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a policy so that every (obs, action) it produces is appended to ``store`` (if any)."""
    if store is None:
        return policy

    def wrapped(obs):
        action = policy(obs)
        store.append((np.asarray(obs, np.float32).copy(), np.asarray(action, np.float32).copy()))
        return action

    return wrapped


def evaluate_row(name: str, policy: SoftPolicy, make_env: Callable, evaluation: EvaluationConfig, cost: tuple[int, float],
                 pairs: Pairs | None = None) -> dict:
    """Seeded episodes of ``policy`` on the combined task; the soft return too when it samples. ``cost``: the
    environment steps and wall time the policy took to make.

    Skills sample from torch's global generator, so it is reseeded for every row: each row's draws
    are the same whatever ran before it (a cached build or not, other rows or not)."""
    torch.manual_seed(evaluation.seed)
    act = record_pairs(lambda o: policy.act(o, evaluation.deterministic), pairs)
    env = make_env()
    try:
        metrics = run_episodes(env, act, evaluation.episodes, evaluation.seed,
                               soft=None if evaluation.deterministic else policy)
    finally:
        env.close()
    if evaluation.deterministic:
        metrics |= {"soft_return_mean": None, "soft_return_note": "deterministic actions have no soft return"}
    env_steps, wall = cost
    return {"policy": name, **metrics, "env_steps_used": int(env_steps), "build_wall_time_s": round(float(wall), 2)}


def skill_cost(skill: skills.Skill) -> tuple[int, float]:
    """The environment steps and wall time a trained skill took."""
    return skill.info.env_steps, skill.info.wall_time_s or 0.0


def trajectories(policy: SoftPolicy, make_env: Callable, episodes: int, evaluation: EvaluationConfig,
                 family: envs.Family) -> tuple[list, list, list]:
    """The first ``episodes`` seeded episodes of ``policy`` in the family's top view: (paths [T, 2], marks [K, 2]
    of each episode's first observation, success flags). Torch's generator is reseeded as in ``evaluate_row``."""
    assert family.plane is not None
    torch.manual_seed(evaluation.seed)
    env = make_env()
    paths, marks, successes = [], [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=evaluation.seed + episode)
        seen = [obs]
        while True:
            obs, _, terminated, truncated, info = env.step(policy.act(obs, evaluation.deterministic))
            seen.append(obs)
            if terminated or truncated:
                break
        path = np.stack(seen)
        paths.append(family.plane(path))
        marks.append(family.plane_marks(path[0]) if family.plane_marks is not None else np.zeros((0, 2)))
        successes.append(bool(info.get("is_success", False)))
    env.close()
    return paths, marks, successes
