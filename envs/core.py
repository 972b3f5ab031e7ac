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
import math
import numbers
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike

TermFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(next_obs[B, obs_dim], action[B, act_dim]) -> value[B]``."""
RANGE_TOLERANCE = 1e-6  # a term may exceed its declared (min, max) by this much (float rounding)


class TermError(ValueError):
    """A reward term or success check that broke its contract: wrong shape, NaN or inf, or outside its range."""


@dataclass(frozen=True)
class Term:
    """A reward term a user declares: ``fn(next_obs [B, o], action [B, d]) -> [B]``, from observations and actions
    alone (so rewards can be recomputed on stored batches), within ``range = (min, max)`` per step."""

    name: str
    fn: TermFn
    range: tuple[float, float]

    def __post_init__(self) -> None:
        low, high = (float(x) for x in self.range)
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ValueError(f"term {self.name!r}: range must be two finite numbers (min, max) with min <= max, "
                             f"got {self.range}")
        if not callable(self.fn):
            raise ValueError(f"term {self.name!r}: fn must be a function of (next_obs, action), got {self.fn!r}")
        object.__setattr__(self, "range", (low, high))


@dataclass(frozen=True)
class Check:
    """A success criterion a user declares: ``fn(next_obs [B, o], action [B, d]) -> [B] bool``; ``every_step``: it
    must hold at every step of the episode (else at the last one)."""

    name: str
    fn: TermFn
    every_step: bool = False


class UnknownNameError(KeyError, ValueError):
    """An unknown task, skill or family name. The message lists the valid names. A ``KeyError`` (a lookup that
    failed) and a ``ValueError`` (bad input), so the command lines report it like any other bad input."""

    def __init__(self, kind: str, name: str, valid: list[str], where: str = ""):
        self.kind, self.name, self.valid, self.where = kind, name, sorted(valid), where
        close = difflib.get_close_matches(name, self.valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        place = f" in {where}" if where else ""
        listing = ", ".join(self.valid) if self.valid else "(none)"
        plural = kind[:-1] + "ies" if kind.endswith("y") else kind + "s"
        super().__init__(f"unknown {kind} {name!r}{place}.{hint} Valid {plural}: {listing}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]

    def __reduce__(self):  # picklable (an error raised in a worker process reaches the parent whole)
        return _unknown_name_error, (self.kind, self.name, self.valid, self.where, self.args[0])

    def hinted(self, hint: str) -> "UnknownNameError":
        """The same error with ``hint`` after its message (a caller that knows more, e.g. where a user's task lives)."""
        return _unknown_name_error(self.kind, self.name, self.valid, self.where, self.args[0] + hint)


def _unknown_name_error(kind: str, name: str, valid: list[str], where: str, message: str) -> UnknownNameError:
    err = UnknownNameError(kind, name, valid, where)
    err.args = (message,)
    return err


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
    # training settings a family suggests (SQLConfig fields such as alpha, and "steps"); the toolkit's own families
    # keep theirs in skills.training.defaults
    training: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = set(self.terms) - set(self.term_ranges)
        if missing:
            raise ValueError(f"family {self.name!r}: no (min, max) range for reward terms {sorted(missing)}")
        object.__setattr__(self, "terms", MappingProxyType(dict(self.terms)))
        object.__setattr__(self, "success_checks", MappingProxyType(dict(self.success_checks)))
        object.__setattr__(self, "term_ranges", MappingProxyType(dict(self.term_ranges)))

    def extended(self, terms: Sequence[Term] = (), checks: Sequence[Check] = ()) -> "Family":
        """This family (same MDP, same name) with more reward terms and success checks. A name that the family
        already defines is refused unless it is the very same definition (as when a combined task gathers its
        parts' terms)."""
        new_terms, ranges = dict(self.terms), dict(self.term_ranges)
        new_checks, every = dict(self.success_checks), set(self.every_step)
        for term in terms:
            if term.name in new_terms and (new_terms[term.name] is not term.fn or ranges[term.name] != term.range):
                raise ValueError(f"reward term {term.name!r} collides with a term family {self.name!r} already defines "
                                 f"(terms: {', '.join(sorted(new_terms))}); give yours another name")
            new_terms[term.name], ranges[term.name] = term.fn, term.range
        for check in checks:
            if check.name in new_checks and (new_checks[check.name] is not check.fn or
                                             (check.name in every) != check.every_step):
                raise ValueError(f"success check {check.name!r} collides with a check family {self.name!r} already "
                                 f"defines (checks: {', '.join(sorted(new_checks))}); give yours another name")
            new_checks[check.name] = check.fn
            if check.every_step:
                every.add(check.name)
        return replace(self, terms=new_terms, term_ranges=ranges, success_checks=new_checks, every_step=frozenset(every))

    def merged(self, other: "Family") -> "Family":
        """This family with ``other``'s terms and checks (the same MDP, as two tasks of it may define different
        user terms); a name the two define differently is refused."""
        if other.name != self.name:
            raise ValueError(f"cannot combine tasks of different families: {self.name!r} and {other.name!r}")
        terms = [Term(k, fn, other.term_ranges[k]) for k, fn in other.terms.items()]
        checks = [Check(k, fn, k in other.every_step) for k, fn in other.success_checks.items()]
        return self.extended(terms, checks)


@dataclass(frozen=True)
class Task:
    """A reward on a family: ``r = sum_k weights[k] * term_k``."""

    name: str  # registry name, e.g. "reach+avoid"
    family: Family  # the shared MDP
    weights: Mapping[str, float]  # term name -> weight
    success: tuple[str, ...]  # success criteria that must all hold (names in family.success_checks)
    parts: tuple[str, ...] = field(default=())  # constituent task names for a combined task
    source: str = ""  # where the task is defined: a module name, or the file a user's tasks were loaded from

    @property
    def user_sources(self) -> list[str]:
        """The parts of ``source`` outside the toolkit's own modules: the user's files or modules it comes from."""
        return [part.strip() for part in self.source.split(",") if not part.strip().startswith("envs.")]

    @property
    def user_defined(self) -> bool:
        """Defined (in part) outside the toolkit's own modules: a user's objective."""
        return bool(self.user_sources)

    def __post_init__(self) -> None:
        if not self.weights:
            raise ValueError(f"task {self.name!r}: no weights; a task weighs at least one reward term of family "
                             f"{self.family.name!r} (its terms: {', '.join(sorted(self.family.terms))})")
        for term, w in self.weights.items():
            if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w):
                raise ValueError(f"task {self.name!r}: the weight of term {term!r} must be a finite number, got {w!r}")
        unknown = set(self.weights) - set(self.family.terms)
        if unknown:
            raise ValueError(f"task {self.name!r}: no such reward terms {sorted(unknown)} in family "
                             f"{self.family.name!r} (its terms: {', '.join(sorted(self.family.terms))})")
        missing = set(self.success) - set(self.family.success_checks)
        if missing:
            raise ValueError(f"task {self.name!r}: no such success checks {sorted(missing)} in family "
                             f"{self.family.name!r} (its checks: {', '.join(sorted(self.family.success_checks))})")
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
        """Every term of the family on a batch: ``{name: [B]}``, each checked (``checked_term``)."""
        next_obs, action = np.atleast_2d(next_obs), np.atleast_2d(action)
        return {name: checked_term(name, called(name, fn, next_obs, action), next_obs, self.family.term_ranges[name])
                for name, fn in self.family.terms.items()}

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
        return {k: checked_term(k, called(k, fn, next_obs, action), next_obs, None)
                for k, fn in self.family.success_checks.items()}


def called(name: str, fn: TermFn, next_obs: np.ndarray, action: np.ndarray):
    """``fn(next_obs, action)``; an exception inside it becomes a ``TermError`` that names the term or check, the
    shapes it was given and the line that raised."""
    try:
        return fn(next_obs, action)
    except Exception as err:  # noqa: BLE001 - a user's function: say which one and where
        last = traceback.extract_tb(err.__traceback__)[-1]
        raise TermError(f"reward term or check {name!r} raised {type(err).__name__}: {err} (given next_obs "
                        f"{list(next_obs.shape)} and action {list(action.shape)}; {last.filename}, line {last.lineno})"
                        ) from err


def checked_term(name: str, values, next_obs: np.ndarray, bounds: tuple[float, float] | None) -> np.ndarray:
    """A term's values on a batch, checked: shape ``[B]``, real numbers (a bool counts as 0 or 1), finite, and within
    ``bounds`` (its declared per-step range, give or take ``RANGE_TOLERANCE``); with ``bounds`` None, a success
    check's: shape ``[B]`` and bool. A ``TermError`` says which term, what was wrong, and where (the row and its
    observation)."""
    batch = len(next_obs)
    out = np.asarray(values)
    if out.shape != (batch,):
        raise TermError(f"reward term or check {name!r} returned shape {out.shape} for a batch of {batch} observations; "
                        f"it must return one value per row: shape ({batch},)")
    if bounds is None:
        if out.dtype != bool:
            raise TermError(f"success check {name!r} returned {out.dtype} values; a check returns one bool per row "
                            "(a comparison, e.g. distance < 0.05)")
        return out
    if out.dtype.kind == "c":
        raise TermError(f"reward term {name!r} returned complex values; a term returns one real number per row")
    try:
        x = out.astype(np.float64)  # for the checks only: the values go on as the term made them
    except (TypeError, ValueError) as err:
        raise TermError(f"reward term or check {name!r} returned {out.dtype} values; numbers are needed ({err})") from None
    bad = ~np.isfinite(x)
    if bounds is not None:
        bad |= (x < bounds[0] - RANGE_TOLERANCE) | (x > bounds[1] + RANGE_TOLERANCE)
    if bad.any():
        row = int(np.argmax(bad))
        where = f"at row {row} (next_obs {np.round(np.asarray(next_obs[row], np.float64), 4).tolist()})"
        what = "a non-finite value" if not np.isfinite(x[row]) else f"{x[row]:.6g}, outside its declared range {bounds}"
        raise TermError(f"reward term {name!r} returned {what} {where}")
    return out


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


def mean_task(name: str, tasks: Sequence[Task]) -> Task:
    """The combined task whose reward is exactly the mean of ``tasks``' rewards."""
    return weighted_task(name, tasks, [1.0 / len(tasks)] * len(tasks))


def weighted_task(name: str, tasks: Sequence[Task], weights: Sequence[float]) -> Task:
    """The combined task whose reward is ``sum_i w_i r_i`` over ``tasks``' rewards, on their family with every
    term and check its parts use (user terms included); success needs every part's criteria."""
    families = {t.family.name for t in tasks}
    if len(families) != 1:
        raise ValueError("cannot combine tasks of different families: "
                         + ", ".join(f"{t.name!r} is {t.family.name!r}" for t in tasks))
    family = tasks[0].family
    for task in tasks[1:]:
        family = family.merged(task.family)
    combined: dict[str, float] = {}
    for w, task in zip(weights, tasks, strict=True):
        for term, tw in task.weights.items():
            combined[term] = combined.get(term, 0.0) + float(w) * tw
    success = tuple(dict.fromkeys(s for t in tasks for s in t.success))
    sources = sorted({t.source for t in tasks if t.source})
    return Task(name, family, combined, success, parts=tuple(t.name for t in tasks), source=", ".join(sources))
