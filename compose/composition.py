"""A composition's data: its constituent skills, weights, operator, combined task, and ``Q_w(s, a) = sum_i w_i
Q_i(s, a)`` with every Q evaluated in one batched call.

This module imports nothing above it in ``compose``: building (``compose.build``), caching (``compose.cache``),
saving (``compose.library``) and acting (``compose.skill``) depend on it, not the reverse."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

import envs
import skills
from envs.core import Task, weighted_task
from skills.library import task_of
from skills.sql import soft_value_from_samples, uniform_actions
from skills.sql.many_skills import ComposedSoftQNetwork, StackedQ

from .operators import Operator, make_operator


class IncompatibleSkillsError(ValueError):
    """Skills that do not share one MDP (family, spaces, gamma) and one temperature."""


def check_weights(weights: Sequence[float] | None, n: int) -> np.ndarray:
    """Weights for ``n`` skills: equal by default; otherwise non-negative and summing to 1.

    Weights are refused rather than silently normalised: they define the combined task
    ``r_w = sum_i w_i r_i``, and rescaling them would change its reward scale (temperature).
    """
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64)
    shown = [float(x) for x in w.ravel()]  # plain numbers in the messages
    if w.shape != (n,):
        raise ValueError(f"need one weight per skill ({n}), got {len(shown)}: {shown}")
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError(f"weights must be finite and non-negative, got {shown}")
    if abs(w.sum() - 1.0) > 1e-6:
        hint = ",".join(f"{x / w.sum():.3g}" for x in w) if w.sum() > 0 else ""
        raise ValueError(f"weights must sum to 1 (they define r_w = sum_i w_i r_i), got {shown} "
                         f"summing to {w.sum():g}" + (f"; normalised they would be {hint}" if hint else ""))
    return w


def check_compatible(parts: Sequence[skills.Skill]) -> None:
    """Refuse skills that do not live in the same MDP with the same temperature, and composed ones."""
    nested = [s.name for s in parts if isinstance(s.agent.q, ComposedSoftQNetwork)]
    if nested:
        raise IncompatibleSkillsError(f"{', '.join(nested)}: already composed (Q = sum_i w_i Q_i + R); compose the "
                                      "skills it was made from instead (its manifest's composed_from or adapted_from)")
    fields = {
        "task family": lambda s: s.info.family,
        "observation space shape": lambda s: s.info.observation_space.shape,
        "action space shape": lambda s: s.info.action_space.shape,
        "action space bounds": lambda s: (s.info.action_space.low, s.info.action_space.high),
        "gamma": lambda s: s.gamma,
        "alpha": lambda s: s.alpha,
    }
    for label, get in fields.items():
        values = [(s.name, get(s)) for s in parts]  # a list: two versions of one skill share a name
        if len({value for _, value in values}) > 1:
            detail = ", ".join(f"{name}: {value}" for name, value in values)
            raise IncompatibleSkillsError(f"cannot compose skills with different {label} ({detail})")
    depths = [(s.name, len(s.agent.config.hidden)) for s in parts]
    if len({depth for _, depth in depths}) > 1:
        raise IncompatibleSkillsError(f"cannot batch Q-networks of different depth: {depths}")


@dataclass
class ComposedQ:
    """``Q_w = sum_i w_i Q_i`` over a ``StackedQ``; all tensors."""

    stacked: StackedQ
    weights: torch.Tensor  # [N]
    alpha: float
    act_dim: int
    obs_dim: int | None = None  # checked on every call when given (a composition gives it)

    def __call__(self, obs, act):
        """``Q_w(s, a)``: [...]. Tensors in, tensors out (with autograd, for SVGD); numpy in, numpy out. Inputs are
        checked (``checked_pair``): the wrong width or a NaN is a ``ValueError``, not a raw error or NaN values."""
        obs, act = checked_pair(obs, act, self.obs_dim, self.act_dim)
        if isinstance(obs, torch.Tensor) and isinstance(act, torch.Tensor):
            return torch.tensordot(self.weights, self.stacked(obs, act), dims=1)
        with torch.no_grad():
            return self(torch.as_tensor(obs), torch.as_tensor(act)).numpy()

    def soft_values(self, obs: torch.Tensor, n_samples: int = 1024,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(V_i [N, B], V_w [B])`` from the *same* uniform importance samples (common random numbers).

        With shared samples the estimate of ``delta = sum_i w_i V_i - V_w`` is >= 0 exactly,
        as Hölder's inequality says of the true values (logsumexp is convex).
        """
        a = uniform_actions(len(obs), n_samples, self.act_dim, generator=generator, device=obs.device)
        q_all = self.stacked(obs.unsqueeze(1), a)  # [N, B, M]
        v_i = soft_value_from_samples(q_all, self.alpha, self.act_dim)
        v_w = soft_value_from_samples(torch.tensordot(self.weights, q_all, dims=1), self.alpha, self.act_dim)
        return v_i, v_w

    def gap(self, obs, n_samples: int = 1024, generator: torch.Generator | None = None):
        """Per-state gap ``delta(s) = sum_i w_i V_i(s) - V_w(s) >= 0``: [B] -> [B]. Tensors in, tensors out; numpy
        (or a list; one state [o] or a batch) in, numpy out, checked like ``Q_w``'s inputs."""
        if not isinstance(obs, torch.Tensor):
            o, _ = checked_pair(obs, np.zeros(self.act_dim, np.float32), self.obs_dim, self.act_dim)
            with torch.no_grad():
                out = self.gap(torch.as_tensor(o).reshape(-1, np.shape(o)[-1]), n_samples, generator).numpy()
            return out[0] if np.ndim(o) == 1 else out
        v_i, v_w = self.soft_values(obs, n_samples, generator)
        return torch.tensordot(self.weights, v_i, dims=1) - v_w


def checked_pair(obs, act, obs_dim: int | None, act_dim: int):
    """Observations [..., obs_dim] and actions [..., act_dim] for a soft Q-function, checked: numpy (or lists) as
    float32 arrays, finite; tensors by shape, and finite unless they carry gradients (SVGD's particles, where a check
    would cost a sync per step); ``obs_dim`` None: any width. A ``ValueError`` naming the expected shape otherwise."""
    out: list[torch.Tensor | np.ndarray] = []
    for x, dim, what in ((obs, obs_dim, "observation"), (act, act_dim, "action")):
        if isinstance(x, torch.Tensor):
            if x.dim() == 0 or dim is not None and x.shape[-1] != dim:
                raise ValueError(f"{what} must have shape [..., {dim}], got {list(x.shape)}")
            if not x.requires_grad and not bool(torch.isfinite(x).all()):
                raise ValueError(f"{what} must be finite; got NaN or inf")
            out.append(x)
            continue
        try:
            array = np.asarray(x, np.float32)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{what} must be numbers of shape [..., {dim}] ({err})") from None
        if array.ndim == 0 or dim is not None and array.shape[-1] != dim:
            raise ValueError(f"{what} must have shape [..., {dim}], got {list(array.shape)}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{what} must be finite; got NaN or inf")
        out.append(array)
    return out[0], out[1]


def combined_task(parts: Sequence[skills.Skill], weights: np.ndarray) -> Task:
    """The task whose reward is ``r_w = sum_i w_i r_i`` over the parts' own tasks: the registered task with exactly
    that reward where there is one (e.g. ``reach+avoid``, also for two runs of each skill, with its own success
    checks), else a weighted task named after its parts (``0.7*reach+0.3*avoid``, ``0.5*(reach+avoid)+0.5*low``)."""
    tasks = [task_of(s.info) for s in parts]
    combined = weighted_task(combined_name(tasks, weights), tasks, list(weights))
    registered = registered_with_reward(combined, tasks, weights)
    return registered if registered is not None else combined


def combined_name(tasks: Sequence[Task], weights: np.ndarray) -> str:
    """``a+b`` for equal weights of plain tasks, else each part with its weight, a combined part in parentheses."""
    if np.allclose(weights, weights[0]) and not any("+" in t.name for t in tasks):
        return "+".join(t.name for t in tasks)
    return "+".join(f"{w:.3g}*" + (f"({t.name})" if "+" in t.name else t.name) for w, t in zip(weights, tasks, strict=True))


def same_reward(a: Task, b: Task) -> bool:
    """Two tasks of one family whose weighted terms are the same (zero weights ignored)."""
    wa, wb = ({k: v for k, v in t.weights.items() if v != 0.0} for t in (a, b))
    return a.family.name == b.family.name and wa.keys() == wb.keys() and all(np.isclose(wa[k], wb[k]) for k in wa)


def registered_with_reward(combined: Task, tasks: Sequence[Task], weights: np.ndarray) -> Task | None:
    """The registered task whose reward is ``combined``'s: the one the parts' names join to (``reach+avoid``, or the
    mean of distinct registered tasks) when its weights agree, else the only registered combined task with that
    reward (two runs of one plain task stay a composition of that task's runs); None when there is none, or more."""
    if np.allclose(weights, weights[0]):
        try:
            named = envs.get_task("+".join(t.name for t in tasks))
        except envs.UnknownNameError:
            named = None
        if named is not None and same_reward(named, combined):
            return named
    matches = [t for t in envs.TASKS.values() if t.parts and same_reward(t, combined)]
    return matches[0] if len(matches) == 1 else None


class Composition:
    """Loaded, checked constituents, their weights and operator, the combined task and ``Q_w``.

    ``compose.load`` returns a ``compose.skill.ComposedSkill``: this data plus the calls a skill answers
    (``act``, ``sample``, ``q``, ``value``), ``build`` and ``save``.
    """

    def __init__(self, parts: Sequence[skills.Skill], weights: Sequence[float] | None = None,
                 labels: Sequence[str] | None = None, library: str | None = None, seed: int = 0,
                 operator: str | Operator = "average"):
        """``operator``: how the soft Q-functions combine, an ``compose.operators.Operator`` or its name
        (``compose.operators.OPERATORS``); checked to apply to these skills."""
        if len(parts) < 2:
            raise ValueError("composition needs at least two skills")
        on_other_devices = [f"{p.name}: {p.device}" for p in parts if p.device.type != "cpu"]
        if on_other_devices:
            raise ValueError(f"composition runs on the CPU; load its skills with device='cpu' "
                             f"({', '.join(on_other_devices)})")
        check_compatible(parts)
        self.parts = list(parts)
        self.labels = list(labels) if labels is not None else [p.name for p in parts]  # as the user named them
        self.operator = make_operator(operator).checked(self.labels, weights is not None)
        self.weights = check_weights(weights, len(parts))
        self.alpha = parts[0].alpha
        self.gamma = parts[0].gamma
        self.obs_dim, self.act_dim = parts[0].obs_dim, parts[0].act_dim
        self.q_w = ComposedQ(StackedQ([s.agent.q for s in parts]),
                             torch.tensor(self.weights, dtype=torch.float32), self.alpha, self.act_dim, self.obs_dim)
        self.task = combined_task(parts, self.weights)
        self.library, self.seed = library, seed

    @property
    def name(self) -> str:
        return "+".join(self.labels)

    @property
    def skill_names(self) -> str:
        """``"reach+avoid"`` from the constituents' own names (not the spec, which may hold paths or pins):
        what cache entries, reports and saved compositions are named after."""
        return "+".join(p.name for p in self.parts)

    def states(self) -> np.ndarray:
        """The union of the constituents' stored states (obs and next obs): [M, obs_dim]."""
        return np.concatenate([np.concatenate([s.transitions["obs"], s.transitions["next_obs"]])
                               for s in self.parts]).astype(np.float32)

    def transitions(self) -> dict[str, np.ndarray]:
        """The union of the constituents' stored transitions."""
        keys = self.parts[0].transitions.keys()
        return {k: np.concatenate([s.transitions[k] for s in self.parts]) for k in keys}

    def relabelled_transitions(self) -> dict[str, np.ndarray]:
        """The stored transitions with the combined task's reward ``r_w = sum_i w_i r_i`` recomputed from each batch
        (rewards are functions of ``(s', a)``, ``envs.core``)."""
        data = self.transitions()
        data["reward"] = np.asarray(self.task.reward(data["next_obs"], data["action"]), np.float32)
        return data
