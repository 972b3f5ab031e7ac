"""A task family from any Gymnasium env with ``Box`` observations and actions: its dynamics, your reward terms.

>>> import numpy as np, envs
>>> reacher = envs.gym_family("reacher", "Reacher-v5", gamma=0.95, terms=[
...     envs.Term("near", lambda o, a: -np.linalg.norm(o[:, 8:10], axis=-1), range=(-0.5, 0.0)),
...     envs.Term("effort", lambda o, a: -np.sum(a ** 2, axis=-1), range=(-2.0, 0.0))])
>>> near = envs.task("reacher-near", reacher, weights={"near": 1.0})

The env's own reward is replaced by the task's weighted terms of ``(next_obs, action)``; its termination is kept
(a true end), and the family's horizon truncates (``horizon``, by default the env's own time limit). Actions are
the toolkit's ``[-1, 1]^d``, scaled linearly onto the env's action box, and the terms see them in ``[-1, 1]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np

from .core import Check, EpisodeTracker, Family, Task, Term, TermFn, checked_action
from .registry import register_family

EnvSource = str | Callable[..., gym.Env]  # a Gymnasium id, or a function making the env (it takes render_mode)


def make_inner(source: EnvSource, render_mode: str | None = None, **kwargs: Any) -> gym.Env:
    """The Gymnasium env behind a family: ``gym.make(id)`` or ``source()``, with ``render_mode`` when asked."""
    options: dict[str, Any] = {**({"render_mode": render_mode} if render_mode is not None else {}), **kwargs}
    return gym.make(source, **options) if isinstance(source, str) else source(**options)


def box_spaces(env: gym.Env, where: str) -> tuple[gym.spaces.Box, gym.spaces.Box]:
    """The env's observation and action spaces, refused unless both are ``Box``es (1-D) and the actions bounded."""
    obs, act = env.observation_space, env.action_space
    for kind, space in (("observation", obs), ("action", act)):
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"{where}: its {kind} space is {space}; a family needs 1-D Box observations and actions "
                             "(flatten dict or image observations with a wrapper in your env factory)")
    assert isinstance(act, gym.spaces.Box) and isinstance(obs, gym.spaces.Box)
    if not (np.all(np.isfinite(act.low)) and np.all(np.isfinite(act.high))):
        raise ValueError(f"{where}: its action space {act} is unbounded; the toolkit's actions are scaled onto a box")
    return obs, act


class GymTaskEnv(gym.Env):
    """A task of a Gymnasium-env family: the env's dynamics, the task's reward terms, success and ``info``."""

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 25}

    def __init__(self, task: Task, source: EnvSource, render_mode: str | None = None, **kwargs: Any):
        self.task, self.tracker = task, EpisodeTracker(task)
        self.inner = make_inner(source, render_mode, **kwargs)
        obs_space, act_space = box_spaces(self.inner, f"the env of family {task.family.name!r}")
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self.inner.metadata.get("render_fps", 25)}
        self.observation_space = gym.spaces.Box(obs_space.low.astype(np.float32), obs_space.high.astype(np.float32),
                                                dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=act_space.shape, dtype=np.float32)
        self._low, self._high = act_space.low.astype(np.float64), act_space.high.astype(np.float64)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, info = self.inner.reset(seed=seed, options=options)
        self.tracker.reset()
        return np.asarray(obs, np.float32), info

    def step(self, action):
        a = checked_action(action, self.action_space.shape[0])
        obs, _, terminated, _, inner_info = self.inner.step(self._low + (a + 1.0) / 2.0 * (self._high - self._low))
        obs = np.asarray(obs, np.float32)
        reward, info = self.tracker.step_info(obs, a)
        return obs, reward, bool(terminated), False, {**inner_info, **info}

    def render(self):
        return self.inner.render()

    def close(self) -> None:
        self.inner.close()


def gym_family(name: str, env: EnvSource, *, terms: Sequence[Term], checks: Sequence[Check] = (), gamma: float = 0.99,
               horizon: int | None = None, measures: Mapping[str, TermFn] | None = None,
               training: Mapping[str, Any] | None = None) -> Family:
    """Register and return a family whose dynamics are the Gymnasium env ``env`` (an id, or a function making it)
    and whose reward terms are ``terms``. ``horizon`` defaults to the env's own time limit; ``training`` suggests
    training settings for its tasks (``skills.sql.SQLConfig`` fields such as ``alpha``, and ``steps``). Refused: an
    env whose observations or actions are not ``Box``, an unbounded action box, no horizon, a name already taken."""
    probe = make_inner(env)
    try:
        box_spaces(probe, f"env {env!r}")
        limit = horizon or (probe.spec.max_episode_steps if probe.spec is not None else None)
    finally:
        probe.close()
    if not limit or limit < 1:
        raise ValueError(f"env {env!r} has no time limit; give the family a horizon")
    if not (0.0 < gamma < 1.0):
        raise ValueError(f"gamma must be in (0, 1), got {gamma}")
    base = Family(name=name, terms={}, success_checks={}, every_step=frozenset(), gamma=float(gamma), horizon=int(limit),
                  measures=dict(measures or {}), training=dict(training or {}))
    return register_family(base.extended(terms, checks), partial(GymTaskEnv, source=env))
