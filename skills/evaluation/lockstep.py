"""Many episodes (or rollouts) stepped together: one batched policy call per step for every live one.

A network call on 100 rows costs about what it costs on one, so stepping N episodes in lockstep turns N policy
calls into one. Each episode keeps its own random stream (``stream``), from which the policy draws that episode's
actions (``SoftPolicy.act(..., generators=...)``): an episode run in lockstep is the same episode as run alone, up to
the rounding of batched matrix products (tests/test_lockstep.py measures how often and how far they part).

The environments come from an ``EnvPool``: made once, reused episode after episode (``reset(seed=...)`` starts an
episode afresh), so a run pays for ``width`` envs, not one per episode.

The envs of one lockstep step are stepped by a few threads (``in_threads``; ``step_threads``): MuJoCo releases the
GIL inside ``mj_step``, so on the arm tasks, where the physics is most of a run, two cores step two envs at once. Each
env is stepped by one thread at a time and owns its state, so the toolkit's episodes are the same whatever the thread
count (tests/test_lockstep.py checks it bit for bit). An env of your own, or a reward term, that keeps state shared
between envs (a module-level cache, the global ``np.random``) would not be: step it with ``step_threads(1)``.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import SupportsFloat, TypeVar

import gymnasium as gym
import numpy as np
import torch

from ..policy import Actor

LOCKSTEP_WIDTH = 64  # envs stepped together by default: the batched policy call stays cheap well past this
_WIDTH: ContextVar[int] = ContextVar("lockstep_width", default=LOCKSTEP_WIDTH)
STEP_THREADS = 4  # at most this many threads step a lockstep batch's envs (fewer where fewer cores are available)
_THREADS: ContextVar[int | None] = ContextVar("step_threads", default=None)
T = TypeVar("T")
R = TypeVar("R")


@contextmanager
def _positive_setting(var: ContextVar, value: int, what: str) -> Iterator[None]:
    """``var`` set to ``value`` (at least 1) within the block."""
    if value < 1:
        raise ValueError(f"{what} must be >= 1, got {value}")
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


def lockstep_width(width: int) -> AbstractContextManager[None]:
    """Within the block, evaluations step ``width`` episodes (or rollouts) together unless told otherwise; 1 runs
    them one at a time, as the toolkit did before lockstep (the same episodes: ``bench.evaluation`` compares)."""
    return _positive_setting(_WIDTH, width, "lockstep width")


def default_width() -> int:
    """The lockstep width in force (``lockstep_width``; ``LOCKSTEP_WIDTH`` by default)."""
    return _WIDTH.get()


def available_cores() -> int:
    """CPU cores this process may run on (its affinity where the platform tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def step_threads(threads: int) -> AbstractContextManager[None]:
    """Within the block, a lockstep batch's envs are stepped by at most ``threads`` threads (1: one after the other in
    the calling thread, as before threads; ``bench.evaluation`` compares)."""
    return _positive_setting(_THREADS, threads, "step threads")


def share_cores(processes: int) -> None:
    """This process is one of ``processes`` that run at once on the same cores (``compose.study``'s workers): from now
    on, in this thread's context, step with ``available_cores() // processes`` threads (at least 1; ``step_threads``
    still overrides it). Measured with two processes on two cores: their second threads do not pay
    (``python -m bench.step_threads --processes 2``)."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    _THREADS.set(max(1, min(STEP_THREADS, available_cores() // processes)))


def default_threads() -> int:
    """The thread count in force (``step_threads``; else ``min(STEP_THREADS, available_cores())``)."""
    threads = _THREADS.get()
    return threads if threads is not None else max(1, min(STEP_THREADS, available_cores()))


_EXECUTOR: tuple[int, ThreadPoolExecutor] | None = None  # (the pid that made it, the executor)
_EXECUTOR_LOCK = threading.Lock()
_HELPER = threading.local()  # .active in a helper thread: an ``in_threads`` there runs inline (no deadlock on itself)


def _executor(workers: int) -> ThreadPoolExecutor:
    """The process's helper threads (made on first use, remade in a forked child, whose copy has no threads, and when
    more are needed; the old one finishes what it was given)."""
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None or _EXECUTOR[0] != os.getpid() or _EXECUTOR[1]._max_workers < workers:
            if _EXECUTOR is not None and _EXECUTOR[0] == os.getpid():
                _EXECUTOR[1].shutdown(wait=False)
            _EXECUTOR = (os.getpid(), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lockstep-step"))
        return _EXECUTOR[1]


def in_threads(fn: Callable[[T], R], items: Sequence[T], threads: int | None = None) -> list[R]:
    """``[fn(x) for x in items]``, the items split into at most ``threads`` contiguous runs (``default_threads()``), one
    run in the calling thread and each other in a helper thread. Every run finishes before this returns, also when one
    raises (the first error, in item order, is raised). Called from inside a helper thread, it runs inline. Worth it
    only where ``fn`` releases the GIL for much of its time, as a MuJoCo step does."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    n = max(1, min(threads or default_threads(), len(items)))
    if n == 1 or getattr(_HELPER, "active", False):
        return [fn(x) for x in items]
    bounds = [round(k * len(items) / n) for k in range(n + 1)]
    runs = [items[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]

    def run(part: Sequence[T]) -> list[R]:
        return [fn(x) for x in part]

    def helper(part: Sequence[T]) -> list[R]:
        _HELPER.active = True
        try:
            return run(part)
        finally:
            _HELPER.active = False

    executor = _executor(n - 1)
    futures: list[Future[list[R]]] = [executor.submit(helper, part) for part in runs[1:]]
    try:
        first = run(runs[0])
    finally:
        wait(futures)  # every helper finishes, whatever happened here
    return first + [r for f in futures for r in f.result()]


def step_all(envs: Sequence[gym.Env], actions: Sequence[np.ndarray] | np.ndarray) -> list[tuple]:
    """``env.step(action)`` for each pair, in ``in_threads``: the five-tuples in order. Envs that render to a window
    (``render_mode="human"``) step in the calling thread: a window belongs to the thread that opened it."""
    return in_threads(_step, list(zip(envs, actions, strict=True)), threads=threads_for(envs))


def threads_for(envs: Sequence[gym.Env]) -> int | None:
    """1 where any of ``envs`` renders to a window (``render_mode="human"``), else None (``default_threads()``)."""
    return 1 if any(getattr(env, "render_mode", None) == "human" for env in envs) else None


def _step(pair: tuple[gym.Env, np.ndarray]) -> tuple:
    return pair[0].step(pair[1])


def stream(*keys: int) -> torch.Generator:
    """The random stream named by ``keys`` (e.g. an episode's seed; a start and a rollout index), well mixed
    (``numpy.random.SeedSequence``): the same keys give the same stream in any run, any batch, any order."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0] ^ (state[1] >> np.uint64(1))) & (2**63 - 1))


class EnvPool:
    """Environments made on demand by ``make_env`` and reused; ``unwrapped`` ones for rollouts past the time limit
    (``take(n, unwrapped=True)`` asks for them from any pool: the same envs, so one pool serves a run's episodes and
    its rollouts)."""

    def __init__(self, make_env: Callable[[], gym.Env], unwrapped: bool = False):
        self.make_env, self.unwrapped = make_env, unwrapped
        self.envs: list[gym.Env] = []

    def take(self, n: int, unwrapped: bool | None = None) -> list[gym.Env]:
        """``n`` environments (made now if the pool has fewer); ``unwrapped`` (default: the pool's) without their
        wrappers."""
        while len(self.envs) < n:
            self.envs.append(self.make_env())
        bare = self.unwrapped if unwrapped is None else unwrapped
        return [env.unwrapped if bare else env for env in self.envs[:n]]

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
    collision_checked: bool = False  # the env reports collisions (``info["collision"]``): arm and manipulation tasks
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
        self.collision_checked |= "collision" in info
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
        actions = actions.reshape(len(slots), -1)
        stepped = step_all([envs[slot] for slot in slots], actions)
        for slot, action, result in zip(slots, actions, stepped, strict=True):
            i, obs = live[slot]
            next_obs, reward, terminated, truncated, info = result
            episodes[i].record(obs, action, reward, info, keep_trace)
            if terminated or truncated:
                episodes[i].finish(info, next_obs)
                del live[slot]
            else:
                live[slot] = (i, next_obs)
    return episodes
