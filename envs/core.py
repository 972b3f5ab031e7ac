"""Tasks as weighted reward terms over batches, separate from the dynamics.

A *family* (``fetch-arm``, ``pusher``, ``multigoal``) fixes the MDP: dynamics, observation
layout, action space, discount and termination. A *task* in a family is only a reward:
a weighted sum of the family's named reward terms, plus the success criteria to report.
Combined tasks average their parts, so ``reach+avoid`` is exactly ``(reach + avoid) / 2``.

Every term is a plain function ``term(next_obs[B, obs_dim], action[B, act_dim]) -> [B]``,
so rewards can be recomputed on any batch of states, which composition and evaluation need.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import cast

import numpy as np
from numpy.typing import ArrayLike

TermFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(next_obs[B, obs_dim], action[B, act_dim]) -> value[B]``."""


class UnknownNameError(KeyError, ValueError):
    """An unknown task, skill or family name. The message lists the valid names. A ``KeyError`` (a lookup that
    failed) and a ``ValueError`` (bad input), so the command lines report it like any other bad input."""

    def __init__(self, kind: str, name: str, valid: list[str], where: str = ""):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        close = difflib.get_close_matches(name, self.valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        place = f" in {where}" if where else ""
        listing = ", ".join(self.valid) if self.valid else "(none)"
        super().__init__(f"unknown {kind} {name!r}{place}.{hint} Valid {kind}s: {listing}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


@dataclass(frozen=True)
class Family:
    """One MDP shared by its tasks: the reward terms and success predicates it defines."""

    name: str  # e.g. "fetch-arm"
    terms: Mapping[str, TermFn]  # term name -> batched term function
    success_checks: Mapping[str, TermFn]  # criterion name -> batched bool function of the state
    every_step: frozenset[str]  # criteria that must hold at every step of the episode, not just the last
    gamma: float  # discount shared by every task of the family
    horizon: int  # episode length (time-limit truncation)
    term_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # term -> (min, max) per step
    measures: Mapping[str, TermFn] = field(default_factory=dict)  # reported at an episode's end, not rewarded
    # where to draw trajectories (a top view): obs [T, o] -> [T, 2]; marks: the first obs [o] -> points [K, 2]
    plane: Callable[[np.ndarray], np.ndarray] | None = None
    plane_marks: Callable[[np.ndarray], np.ndarray] | None = None
    plane_label: str = ""

    def __post_init__(self) -> None:
        missing = set(self.terms) - set(self.term_ranges)
        if missing:
            raise ValueError(f"family {self.name!r}: no (min, max) range for reward terms {sorted(missing)}")


@dataclass(frozen=True)
class Task:
    """A reward on a family: ``r = sum_k weights[k] * term_k``."""

    name: str  # registry name, e.g. "reach+avoid"
    family: Family  # the shared MDP
    weights: Mapping[str, float]  # term name -> weight
    success: tuple[str, ...]  # success criteria that must all hold (names in family.success_checks)
    parts: tuple[str, ...] = field(default=())  # constituent task names for a combined task

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(self.family.terms)
        if unknown:
            raise ValueError(f"task {self.name!r}: no such reward terms {sorted(unknown)}")
        object.__setattr__(self, "weights", MappingProxyType(dict(self.weights)))

    @property
    def gym_id(self) -> str:
        """The Gymnasium id this task is registered under."""
        return "composable_skills/" + self.name.replace("+", "_and_") + "-v0"

    @property
    def reward_range(self) -> tuple[float, float]:
        """``(r_min, r_max)``: bounds of one step's reward, from the terms' ranges and the weights."""
        low = high = 0.0
        for term, w in self.weights.items():
            lo, hi = self.family.term_ranges[term]
            low += min(w * lo, w * hi)
            high += max(w * lo, w * hi)
        return low, high

    def reward_terms(self, next_obs: np.ndarray, action: np.ndarray) -> dict[str, np.ndarray]:
        """Every term of the family on a batch: ``{name: [B]}``."""
        next_obs, action = np.atleast_2d(next_obs), np.atleast_2d(action)
        return {name: fn(next_obs, action) for name, fn in self.family.terms.items()}

    def reward(self, next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
        """The task reward on a batch: ``[B]``."""
        return self.combine(self.reward_terms(next_obs, action))

    def combine(self, terms: Mapping[str, ArrayLike]) -> np.ndarray:
        """Weighted sum of already computed terms."""
        total = sum(w * np.asarray(terms[k]) for k, w in self.weights.items())
        return cast(np.ndarray, total)  # a task has weights: never sum's empty 0

    def checks(self, next_obs: np.ndarray, action: np.ndarray) -> dict[str, np.ndarray]:
        """Every success criterion of the family on a batch: ``{name: [B] bool}``."""
        next_obs, action = np.atleast_2d(next_obs), np.atleast_2d(action)
        return {k: np.asarray(fn(next_obs, action), bool) for k, fn in self.family.success_checks.items()}


def checked_action(action, dim: int) -> np.ndarray:
    """An action as the envs take it: ``dim`` finite numbers, clipped to ``[-1, 1]``. A wrong size or a
    NaN/inf is refused with a clear error (a NaN would otherwise poison the state until reset)."""
    a = np.asarray(action, dtype=np.float64)
    if a.size != dim:
        raise ValueError(f"action must have {dim} numbers, got shape {a.shape}")
    a = a.reshape(dim)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action must be finite, got {a.tolist()}")
    return np.clip(a, -1.0, 1.0)


class EpisodeTracker:
    """Turns per-step checks into ``info`` for one episode: reward terms, success, history."""

    def __init__(self, task: Task):
        self.task = task
        self.reset()

    def reset(self) -> None:
        self.held = {name: True for name in self.task.family.every_step}

    def step_info(self, next_obs: np.ndarray, action: np.ndarray) -> tuple[float, dict]:
        """Reward and ``info`` for one transition (unbatched arrays)."""
        terms = {k: float(v[0]) for k, v in self.task.reward_terms(next_obs, action).items()}
        checks = {k: bool(v[0]) for k, v in self.task.checks(next_obs, action).items()}
        for name in self.held:
            self.held[name] &= checks[name]
        success = all(self.held.get(name, checks[name]) for name in self.task.success)
        info = {"reward_terms": terms, "is_success": success, "checks": checks,
                "measures": {k: float(np.asarray(fn(np.atleast_2d(next_obs), np.atleast_2d(action)))[0])
                             for k, fn in self.task.family.measures.items()}}
        return float(self.task.combine(terms)), info


def mean_task(name: str, tasks: list[Task]) -> Task:
    """The combined task whose reward is exactly the mean of ``tasks``' rewards."""
    families = {t.family.name for t in tasks}
    if len(families) != 1:
        raise ValueError(f"cannot combine tasks of different families: {sorted(families)}")
    weights: dict[str, float] = {}
    for task in tasks:
        for term, w in task.weights.items():
            weights[term] = weights.get(term, 0.0) + w / len(tasks)
    success = tuple(dict.fromkeys(s for t in tasks for s in t.success))
    return Task(name, tasks[0].family, weights, success, parts=tuple(t.name for t in tasks))
