"""Many episodes (or rollouts) stepped together: one batched policy call per step for every live one.

A network call on 100 rows costs about what it costs on one, so stepping N episodes in lockstep turns N policy
calls into one. Each episode keeps its own random stream (``stream``), from which the policy draws that episode's
actions (``SoftPolicy.act(..., generators=...)``): an episode run in lockstep is the same episode as run alone, up to
the rounding of batched matrix products (tests/test_lockstep.py measures how often and how far they part).

The environments come from an ``EnvPool``: made once, reused episode after episode (``reset(seed=...)`` starts an
episode afresh), so a run pays for ``width`` envs, not one per episode.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import SupportsFloat

import gymnasium as gym
import numpy as np
import torch

from ..policy import Actor

LOCKSTEP_WIDTH = 64  # envs stepped together by default: the batched policy call stays cheap well past this
_WIDTH: ContextVar[int] = ContextVar("lockstep_width", default=LOCKSTEP_WIDTH)


@contextmanager
def lockstep_width(width: int) -> Iterator[None]:
    """Within the block, evaluations step ``width`` episodes (or rollouts) together unless told otherwise; 1 runs
    them one at a time, as the toolkit did before lockstep (the same episodes: ``bench.evaluation`` compares)."""
    if width < 1:
        raise ValueError(f"lockstep width must be >= 1, got {width}")
    token = _WIDTH.set(width)
    try:
        yield
    finally:
        _WIDTH.reset(token)


def default_width() -> int:
    """The lockstep width in force (``lockstep_width``; ``LOCKSTEP_WIDTH`` by default)."""
    return _WIDTH.get()


def stream(*keys: int) -> torch.Generator:
    """The random stream named by ``keys`` (e.g. an episode's seed; a start and a rollout index), well mixed
    (``numpy.random.SeedSequence``): the same keys give the same stream in any run, any batch, any order."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0] ^ (state[1] >> np.uint64(1))) & (2**63 - 1))


class EnvPool:
    """Environments made on demand by ``make_env`` and reused; ``unwrapped`` ones for rollouts past the time limit."""

    def __init__(self, make_env: Callable[[], gym.Env], unwrapped: bool = False):
        self.make_env, self.unwrapped = make_env, unwrapped
        self.envs: list[gym.Env] = []

    def take(self, n: int) -> list[gym.Env]:
        """``n`` environments (made now if the pool has fewer)."""
        while len(self.envs) < n:
            env = self.make_env()
            self.envs.append(env.unwrapped if self.unwrapped else env)
        return self.envs[:n]

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Episode:
    """One finished episode: what happened, and (``trace``) every (obs, action, reward) on the way."""

    index: int
    seed: int
    total: float = 0.0
    length: int = 0
    success: bool = False
    collided: bool = False
    terms: dict[str, float] = field(default_factory=dict)
    measures: dict[str, float] = field(default_factory=dict)
    obs: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    first_obs: np.ndarray | None = None
    final_obs: np.ndarray | None = None

    def record(self, obs: np.ndarray, action: np.ndarray, reward: SupportsFloat, info: dict, keep_trace: bool) -> None:
        if keep_trace:
            self.obs.append(np.asarray(obs, np.float32))
            self.actions.append(np.asarray(action, np.float32))
            self.rewards.append(float(reward))
        self.total += float(reward)
        self.length += 1
        self.collided |= bool(info.get("collision", False))
        for k, v in info.get("reward_terms", {}).items():
            self.terms[k] = self.terms.get(k, 0.0) + v

    def finish(self, info: dict, final_obs: np.ndarray) -> None:
        self.success = bool(info.get("is_success", False))
        self.measures = dict(info.get("measures", {}))
        self.final_obs = np.asarray(final_obs, np.float32)

    def path(self) -> np.ndarray:
        """Every observation of a traced episode, the final one included: [T + 1, o]."""
        assert self.final_obs is not None, "the episode has not finished"
        return np.stack([*self.obs, self.final_obs])


def lockstep_episodes(pool: EnvPool, policy: Actor, seeds: Sequence[int], deterministic: bool = False, *,
                      width: int | None = None, keep_trace: bool = False) -> list[Episode]:
    """Run one episode per seed (``env.reset(seed=s)``), ``width`` at a time in lockstep, each drawing its actions
    from its own stream (``stream(s)``); an env that finishes starts the next pending episode. Returns the episodes
    in the order of ``seeds``. ``width`` defaults to ``default_width()``."""
    envs = pool.take(max(1, min(width or default_width(), len(seeds))))
    pending = deque(range(len(seeds)))
    episodes = [Episode(i, s) for i, s in enumerate(seeds)]
    generators = [stream(s) for s in seeds]
    live: dict[int, tuple[int, np.ndarray]] = {}  # env slot -> (episode index, its observation)
    while pending or live:
        for slot in range(len(envs)):
            if slot not in live and pending:
                i = pending.popleft()
                obs, _ = envs[slot].reset(seed=seeds[i])
                episodes[i].first_obs = np.asarray(obs, np.float32)
                live[slot] = (i, obs)
        slots = sorted(live)
        batch = np.stack([np.asarray(live[s][1], np.float32) for s in slots])
        actions = np.asarray(policy.act(batch, deterministic, [generators[live[s][0]] for s in slots]), np.float32)
        for slot, action in zip(slots, actions.reshape(len(slots), -1), strict=True):
            i, obs = live[slot]
            next_obs, reward, terminated, truncated, info = envs[slot].step(action)
            episodes[i].record(obs, action, reward, info, keep_trace)
            if terminated or truncated:
                episodes[i].finish(info, next_obs)
                del live[slot]
            else:
                live[slot] = (i, next_obs)
    return episodes
