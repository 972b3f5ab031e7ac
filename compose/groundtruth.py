"""Ground truth on a continuous task:  python -m compose.groundtruth [--library DIR] [--json PATH] [--figure PATH]

The ``plane`` family (``envs.plane``: a point on ``[-1, 1]^2``, ``s' = clip(s + 0.1 a, -1, 1)``, deterministic, two
goals) is small enough to solve. On a grid whose spacing divides the step (``Grid``), every quadrature action moves a
grid state exactly onto a grid state, so soft value iteration there is the continuous task's own Bellman equation
with one approximation: the action integral ``∫ exp(Q(s, a)/alpha) da`` by the midpoint rule. Its error is measured
by refining the rule (``refinement``). Against that truth:

* the composition theorem with the exact ``Q_i``: ``Q_w - C* <= Q*_w <= Q_w`` everywhere on the grid, how much of
  ``C*`` the real gap uses, and the exact ``pi_w``'s soft value against the optimum ``V*_w``;
* the Monte Carlo machinery of ``compose.run``'s bound check (``compose.soft_returns``): the random actor's estimated
  soft value against its exact one, and a control without the entropy credit that must miss;
* with the shipped ``plane`` skills (``--library``): SQL's learned ``Q`` against ``Q*``, the learned ``Q_w`` and the
  fitted ``C`` against the true gap ``Q_w - Q*_w``, and the soft values the amortized samplers (composed and joint)
  really achieve against ``V*_w``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import envs
from envs.cli import run_command
from envs.plane import STEP
from skills.evaluation.diagnostics import Start
from skills.library import atomic_write_text

from .soft_returns import ActingPolicy, actor_returns, sampler_actor, uniform_actor

Reward = Callable[[np.ndarray], np.ndarray]  # next positions [..., 2] -> rewards [...]
TOLERANCE = 1e-9  # fixed-point iterations stop when no value moves by more than this
PARTS, JOINT = ("plane-upper", "plane-lower"), "plane-upper+plane-lower"


# ---- the grid -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Grid:
    """``actions`` x ``actions`` quadrature actions at the midpoints of equal cells of ``[-1, 1]^2`` (weight
    ``(2/actions)^2`` each; ``actions`` odd), and states on a grid with spacing ``STEP / actions``, so that
    ``s + STEP a`` of a grid state and a quadrature action is a grid state (clipping included: the walls are on it)."""

    actions: int = 7

    def __post_init__(self) -> None:
        if self.actions < 1 or self.actions % 2 == 0:
            raise ValueError(f"Grid.actions must be odd and positive, got {self.actions}")

    @property
    def states(self) -> int:
        """Grid points per axis: ``2 / (STEP / actions) + 1``."""
        return int(round(2.0 * self.actions / STEP)) + 1

    @property
    def xs(self) -> np.ndarray:
        return np.linspace(-1.0, 1.0, self.states)

    @property
    def positions(self) -> np.ndarray:
        """[S, 2] grid states, row-major (index ``i * states + j`` is ``(xs[i], xs[j])``)."""
        x, y = np.meshgrid(self.xs, self.xs, indexing="ij")
        return np.stack([x.ravel(), y.ravel()], axis=-1)

    @property
    def shifts(self) -> np.ndarray:
        """[A] grid steps each quadrature action coordinate moves: ``2k + 1 - actions`` (``STEP a / spacing``)."""
        return 2 * np.arange(self.actions) + 1 - self.actions

    @property
    def action_points(self) -> np.ndarray:
        """[A, 2] quadrature actions (A = actions^2), in the order of ``next_index``'s columns."""
        a = self.shifts / self.actions
        ax, ay = np.meshgrid(a, a, indexing="ij")
        return np.stack([ax.ravel(), ay.ravel()], axis=-1)

    @property
    def log_weight(self) -> float:
        """log of each quadrature action's weight (the action box's area 4 over A)."""
        return math.log(4.0 / self.actions**2)

    def next_index(self) -> np.ndarray:
        """[S, A] flat index of ``clip(s + STEP a)`` for every grid state and quadrature action."""
        n, i = self.states, np.arange(self.states)
        moved = np.clip(i[:, None] + self.shifts[None, :], 0, n - 1)  # [n, actions] per axis
        rows = moved[:, None, :, None] * n + moved[None, :, None, :]  # [i, j, kx, ky]
        return rows.reshape(n * n, self.actions**2)


def interpolate(grid: Grid, values: np.ndarray, points: np.ndarray) -> np.ndarray:
    """A grid function [S] at any ``points`` [..., 2] of the box, bilinearly: [...]."""
    n, h = grid.states, 2.0 / (grid.states - 1)
    u = np.clip((np.asarray(points, np.float64) + 1.0) / h, 0.0, n - 1 - 1e-9)
    i, j = np.floor(u[..., 0]).astype(int), np.floor(u[..., 1]).astype(int)
    fx, fy = u[..., 0] - i, u[..., 1] - j
    return ((1 - fx) * (1 - fy) * values[i * n + j] + fx * (1 - fy) * values[(i + 1) * n + j]
            + (1 - fx) * fy * values[i * n + j + 1] + fx * fy * values[(i + 1) * n + j + 1])


@dataclass
class Transitions:
    """Where every (grid state, quadrature action) leads and what it earns: next indices [S, A], rewards [S, A]."""

    grid: Grid
    reward: Reward
    index: np.ndarray = field(init=False)
    rewards: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.index = self.grid.next_index()
        self.rewards = self.reward(self.grid.positions[self.index])

    def at_next(self, values: np.ndarray) -> np.ndarray:
        """A state function [S] at every next state: [S, A]."""
        return values[self.index]


# ---- the equations --------------------------------------------------------------------------------------------
def soft_max(q: np.ndarray, alpha: float, log_weight: float) -> np.ndarray:
    """``alpha log ∫ exp(Q(s, a)/alpha) da`` by the midpoint rule: [S, A] -> [S]."""
    top = q.max(axis=1)
    return top + alpha * (np.log(np.exp((q - top[:, None]) / alpha).sum(axis=1)) + log_weight)


def fixed_point(update: Callable[[np.ndarray], np.ndarray], size: int, what: str) -> np.ndarray:
    """Iterate ``update`` (a gamma-contraction) from zero until no entry moves by more than ``TOLERANCE``: [size]."""
    v = np.zeros(size)
    for _ in range(100_000):
        new = update(v)
        if np.max(np.abs(new - v)) < TOLERANCE:
            return new
        v = new
    raise RuntimeError(f"{what} did not converge")


def soft_value_iteration(moves: Transitions, alpha: float, gamma: float) -> np.ndarray:
    """``V*(s) = alpha log ∫ exp((r(s') + gamma V*(s'))/alpha) da`` (the soft Bellman optimality equation): [S]."""
    return fixed_point(lambda v: soft_max(moves.rewards + gamma * moves.at_next(v), alpha, moves.grid.log_weight),
                       len(moves.index), "soft value iteration")


def q_values(moves: Transitions, v: np.ndarray, gamma: float) -> np.ndarray:
    """``Q(s, a) = r(s') + gamma V(s')``: [S, A]."""
    return moves.rewards + gamma * moves.at_next(v)


def boltzmann_log_density(q: np.ndarray, alpha: float, log_weight: float) -> np.ndarray:
    """``log pi(a|s)`` of ``pi ∝ exp(Q/alpha)`` (a density on the action box): [S, A]."""
    return (q - soft_max(q, alpha, log_weight)[:, None]) / alpha


def policy_mass(log_pi: np.ndarray, log_weight: float) -> np.ndarray:
    """Each quadrature cell's probability under a policy density ``log pi`` [S, A] (cells of log-area
    ``log_weight``), normalised per state: [S, A]."""
    mass = np.exp(log_pi + log_weight)
    return mass / mass.sum(axis=1, keepdims=True)


def soft_policy_value(moves: Transitions, log_pi: np.ndarray, alpha: float, gamma: float) -> np.ndarray:
    """``V^pi(s) = E_{a~pi}[r(s') + gamma V^pi(s') - alpha log pi(a|s)]`` (soft policy evaluation): [S]."""
    mass = policy_mass(log_pi, moves.grid.log_weight)
    return fixed_point(lambda v: np.sum(mass * (moves.rewards + gamma * moves.at_next(v) - alpha * log_pi), axis=1),
                       len(moves.index), "soft policy evaluation")


def correction_fixed_point(moves: Transitions, delta: np.ndarray, gamma: float) -> np.ndarray:
    """The bound's ``C*(s, a) = gamma (delta(s') + max_a' C*(s', a'))`` for a state gap ``delta`` [S]: [S, A]."""
    c_max = fixed_point(lambda m: (gamma * (moves.at_next(delta) + moves.at_next(m))).max(axis=1), len(delta),
                        "the correction's fixed point")
    return gamma * (moves.at_next(delta) + moves.at_next(c_max))


def policy_gap_fixed_point(moves: Transitions, delta: np.ndarray, log_pi: np.ndarray, gamma: float) -> np.ndarray:
    """The acting policy's own gap ``D(s, a) = gamma (delta(s') + E_{a'~pi} D(s', a'))`` (``compose.bound``'s
    ``policy_gap_td_target``) for a state gap ``delta`` [S] and a policy density ``log pi`` [S, A]: [S, A]. For the
    Boltzmann ``pi_w`` of the exact ``Q_w``, ``Q_w - D`` is ``Q^{pi_w}`` exactly."""
    mass = policy_mass(log_pi, moves.grid.log_weight)
    d_mean = fixed_point(lambda m: np.sum(mass * gamma * (moves.at_next(delta) + moves.at_next(m)), axis=1), len(delta),
                         "the policy gap's fixed point")
    return gamma * (moves.at_next(delta) + moves.at_next(d_mean))


def q_at(grid: Grid, reward: Reward, v: np.ndarray, gamma: float, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
    """``Q(s, a) = r(s') + gamma V(s')`` at any states and actions (``V`` interpolated): [N, 2], [N, 2] -> [N]."""
    nxt = np.clip(np.asarray(obs, np.float64) + STEP * np.clip(np.asarray(act, np.float64), -1, 1), -1.0, 1.0)
    return reward(nxt) + gamma * interpolate(grid, v, nxt)


def task_reward(name: str) -> Reward:
    """A plane task's reward as a function of next positions (the task's own terms; the action does not enter)."""
    task = envs.get_task(name)

    def reward(next_pos: np.ndarray) -> np.ndarray:
        flat = np.asarray(next_pos, np.float64).reshape(-1, 2)
        return np.asarray(task.reward(flat, np.zeros_like(flat)), np.float64).reshape(np.shape(next_pos)[:-1])

    return reward


# ---- the solution ---------------------------------------------------------------------------------------------
@dataclass
class Solution:
    """The plane tasks solved on a grid: ``V*`` [S] and ``Q*`` [S, A] per task, and for the mean task ``r_w``:
    ``Q_w`` of the exact constituents, its soft value ``V_w``, the gap ``delta``, ``C*``, the soft values of the
    exact ``pi_w ∝ exp(Q_w/alpha)`` and of the uniformly random policy, and ``pi_w``'s own gap ``D`` [S, A] beside
    its soft Q ``Q^{pi_w}`` [S, A]."""

    grid: Grid
    alpha: float
    gamma: float
    v: dict[str, np.ndarray]
    q: dict[str, np.ndarray]
    q_w: np.ndarray
    v_w: np.ndarray
    delta: np.ndarray
    c_star: np.ndarray
    v_pi_w: np.ndarray
    v_uniform: np.ndarray
    d_pi_w: np.ndarray
    q_pi_w: np.ndarray

    def value(self, name: str, obs: np.ndarray) -> np.ndarray:
        """``V*`` of task ``name`` at any states [N, 2] (``"pi_w"``, ``"uniform"``: those policies' soft values
        on ``r_w``): [N]."""
        values = {"pi_w": self.v_pi_w, "uniform": self.v_uniform, **self.v}[name]
        return interpolate(self.grid, values, obs)

    def q_star(self, name: str, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        """``Q*`` of task ``name`` at any states and actions: [N]."""
        return q_at(self.grid, task_reward(name), self.v[name], self.gamma, obs, act)


def solve(alpha: float, grid: Grid = Grid()) -> Solution:
    """Solve the plane tasks at temperature ``alpha`` on ``grid``."""
    gamma = envs.get_task(JOINT).family.gamma
    moves = {name: Transitions(grid, task_reward(name)) for name in (*PARTS, JOINT)}
    v = {name: soft_value_iteration(m, alpha, gamma) for name, m in moves.items()}
    q = {name: q_values(moves[name], v[name], gamma) for name in moves}
    q_w = 0.5 * (q[PARTS[0]] + q[PARTS[1]])
    v_w = soft_max(q_w, alpha, grid.log_weight)
    delta = 0.5 * (v[PARTS[0]] + v[PARTS[1]]) - v_w
    joint = moves[JOINT]
    uniform = np.full_like(q_w, -math.log(4.0))
    log_pi_w = boltzmann_log_density(q_w, alpha, grid.log_weight)
    v_pi_w = soft_policy_value(joint, log_pi_w, alpha, gamma)
    return Solution(grid, alpha, gamma, v, q, q_w, v_w, delta, correction_fixed_point(joint, delta, gamma), v_pi_w,
                    soft_policy_value(joint, uniform, alpha, gamma), policy_gap_fixed_point(joint, delta, log_pi_w, gamma),
                    q_values(joint, v_pi_w, gamma))


# ---- against the truth ----------------------------------------------------------------------------------------
def refinement(a: Solution, b: Solution) -> dict:
    """How much the truth moves when the action rule is refined: max and mean |V(coarse) - V(fine)| on the coarse
    grid's states (``a`` the coarse solution, ``b`` the fine one), per task and for ``pi_w``, with the scale of ``V``.
    The midpoint rule's error falls like ``1/actions^2``, so the fine grid's own error is about
    ``change / ((fine/coarse)^2 - 1)`` (Richardson)."""
    coarse, fine = a.grid, b.grid
    pts = coarse.positions
    pairs = {name: (a.v[name], b.value(name, pts)) for name in a.v}
    pairs["pi_w"] = (a.v_pi_w, b.value("pi_w", pts))
    change = {name: np.abs(x - y) for name, (x, y) in pairs.items()}
    factor = 1.0 / ((fine.actions / coarse.actions) ** 2 - 1.0)
    return {"coarse_actions": coarse.actions, "fine_actions": fine.actions,
            "max_abs_change": {k: float(c.max()) for k, c in change.items()},
            "mean_abs_change": {k: float(c.mean()) for k, c in change.items()},
            "fine_error_estimate_max": float(max(c.max() for c in change.values()) * factor),
            "value_range": float(np.ptp(b.v[JOINT]))}


def exact_theorem(solution: Solution) -> dict:
    """The composition theorem with the exact ``Q_i`` on every grid (state, action): ``Q_w - C* <= Q*_w <= Q_w``,
    the controls that must fail (``C = 0``; ``C*`` halved), and the exact ``pi_w``'s distance from optimal."""
    gap = solution.q_w - solution.q[JOINT]
    subopt = solution.v[JOINT] - solution.v_pi_w
    slack = 1e-8
    return {"pairs": int(gap.size), "upper_holds": bool(np.all(gap >= -slack)),
            "lower_holds": bool(np.all(gap <= solution.c_star + slack)),
            "control_C_zero_lower_holds": bool(np.all(gap <= slack)),
            "control_C_half_lower_holds": bool(np.all(gap <= 0.5 * solution.c_star + slack)),
            "gap_mean": float(gap.mean()), "gap_max": float(gap.max()), "C_star_mean": float(solution.c_star.mean()),
            "C_star_over_gap": float(solution.c_star.mean() / max(float(gap.mean()), 1e-12)),
            "delta_mean": float(solution.delta.mean()),
            "pi_w_suboptimality_mean": float(subopt.mean()), "pi_w_suboptimality_max": float(subopt.max()),
            "pi_w_suboptimality_min": float(subopt.min()),
            "uniform_suboptimality_mean": float(np.mean(solution.v[JOINT] - solution.v_uniform)),
            **policy_gap_theorem(solution, gap, slack)}


def policy_gap_theorem(solution: Solution, gap: np.ndarray, slack: float) -> dict:
    """``pi_w``'s own gap ``D`` with the exact ``Q_i``: the identity ``Q_w - D = Q^{pi_w}`` (its largest error),
    ``Q*_w >= Q_w - D >= Q_w - C*`` on every pair, and the control that must fail (``C*`` in ``D``'s place: the identity
    off by ``C* - D``)."""
    identity = np.abs(solution.q_w - solution.d_pi_w - solution.q_pi_w)
    return {"D_mean": float(solution.d_pi_w.mean()), "D_identity_max_error": float(identity.max()),
            "D_lower_holds": bool(np.all(gap <= solution.d_pi_w + slack)),
            "D_at_most_C_star": bool(np.all(solution.d_pi_w <= solution.c_star + slack)),
            "control_C_star_identity_max_error": float(np.abs(solution.q_w - solution.c_star - solution.q_pi_w).max())}


def start_states(seeds: list[int]) -> np.ndarray:
    """The plane env's start state for each reset seed: [K, 2]."""
    env = envs.make(JOINT).unwrapped
    return np.stack([env.reset(seed=s)[0] for s in seeds]).astype(np.float64)


def value_returns(actor: ActingPolicy, seeds: list[int], per_start: int, steps: int, gamma: float,
                  key: int) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo soft values ``sum_t gamma^t (r_t + alpha H_t)`` from each start (the first action the actor's own,
    so credited too), and the plain returns of the same rollouts (without the entropy credit: a control); each
    [K, per_start]."""
    g, rollouts = actor_returns(actor, lambda: envs.make(JOINT), [Start(s) for s in seeds], per_start, steps, gamma,
                                key=key)
    plain = np.sum(gamma ** np.arange(steps) * rollouts.alive * rollouts.reward, axis=1).reshape(g.shape)
    first = actor.credit(rollouts.obs[:, 0], rollouts.action[:, 0]) * rollouts.alive[:, 0]
    return g + first.reshape(g.shape), plain


def coverage(g: np.ndarray, truth: np.ndarray) -> dict:
    """Per start: does the 95% interval of ``g`` [K, n] cover ``truth`` [K]? With the mean error and its z-score."""
    mean, se = g.mean(axis=1), g.std(axis=1, ddof=1) / math.sqrt(g.shape[1])
    err = mean - truth
    pooled_se = float(np.sqrt(np.sum(se**2)) / len(se))
    return {"starts": int(len(truth)), "rollouts": int(g.shape[1]), "covered": float(np.mean(np.abs(err) <= 1.96 * se)),
            "mean_error": float(err.mean()), "mean_error_se": pooled_se,
            "z": float(err.mean() / max(pooled_se, 1e-12))}


STEPS = 150  # rollout length: gamma^150 * 3 / (1 - gamma) < 1e-5 (gamma 0.9)


def machinery_check(solution: Solution, seeds: list[int], per_start: int = 16) -> dict:
    """``compose.soft_returns`` against the truth: the random actor's Monte Carlo soft value (exact entropy credit)
    against its exact ``V^uniform`` on ``r_w``, and the control that must miss: the same rollouts without the
    entropy credit."""
    actor = uniform_actor(2, solution.alpha)
    truth = solution.value("uniform", start_states(seeds))
    with_credit, without = value_returns(actor, seeds, per_start, STEPS, solution.gamma, key=7)
    real, control = coverage(with_credit, truth), coverage(without, truth)
    return {"random": real, "control_no_entropy": control,
            "passes": abs(real["z"]) < 3.0, "control_fails": abs(control["z"]) >= 3.0}


def learned_q_error(skill, solution: Solution, name: str, n: int = 2000, seed: int = 0) -> dict:
    """A learned skill's ``Q`` and ``V`` against ``Q*`` and ``V*`` on uniform states, with uniform actions and the
    skill's own: mean and max absolute error, and the mean as a share of ``Q*``'s range there."""
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1, 1, size=(n, 2))
    own = np.asarray(skill.act(obs.astype(np.float32)), np.float64)
    out: dict = {}
    for label, act in (("uniform_actions", rng.uniform(-1, 1, size=(n, 2))), ("own_actions", own)):
        truth = solution.q_star(name, obs, act)
        err = np.abs(np.asarray(skill.q(obs.astype(np.float32), act.astype(np.float32)), np.float64) - truth)
        out[label] = {"mean_abs": float(err.mean()), "max_abs": float(err.max()),
                      "share_of_range": float(err.mean() / max(float(np.ptp(truth)), 1e-12))}
    v_err = np.abs(np.asarray(skill.value(obs[:500].astype(np.float32)), np.float64) - solution.value(name, obs[:500]))
    out["value"] = {"mean_abs": float(v_err.mean()), "max_abs": float(v_err.max())}
    return out


def learned_bound(composed, correction, solution: Solution, n: int = 2000, seed: int = 1, policy_gap=None) -> dict:
    """The learned ``Q_w`` and fitted ``C`` against the truth on the composed policy's actions at uniform states:
    does ``Q_w >= Q*_w`` (upper side) and ``C >= Q_w - Q*_w`` (lower side) hold, and how loose is ``C``; with
    ``policy_gap`` (the fitted ``D``), the same for ``D`` and its error against the exact ``pi_w``'s ``D``."""
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    act = np.asarray(composed.act(obs), np.float32)
    with torch.no_grad():
        q_w = np.asarray(composed.q_w(obs, act), np.float64)
        c = correction(torch.as_tensor(obs), torch.as_tensor(act)).numpy().astype(np.float64)
    truth = solution.q_star(JOINT, obs, act)
    exact_q_w = 0.5 * (solution.q_star(PARTS[0], obs, act) + solution.q_star(PARTS[1], obs, act))
    gap = q_w - truth
    out = {"pairs": n, "Q_w_error_mean_abs": float(np.mean(np.abs(q_w - exact_q_w))),
           "upper_holds": float(np.mean(gap >= 0)), "gap_mean": float(gap.mean()),
           "lower_holds": float(np.mean(c >= gap)), "lower_min_margin": float(np.min(c - gap)), "C_mean": float(c.mean()),
           "C_over_gap": float(c.mean() / max(float(gap.mean()), 1e-12))}
    if policy_gap is not None:
        with torch.no_grad():
            d = policy_gap(torch.as_tensor(obs), torch.as_tensor(act)).numpy().astype(np.float64)
        exact_d = policy_gap_at(solution, obs.astype(np.float64), act.astype(np.float64))
        out |= {"D_mean": float(d.mean()), "D_exact_mean": float(exact_d.mean()),
                "D_error_mean_abs": float(np.mean(np.abs(d - exact_d))), "D_lower_holds": float(np.mean(d >= gap)),
                "D_over_gap": float(d.mean() / max(float(gap.mean()), 1e-12))}
    return out


def policy_values(actors: dict[str, ActingPolicy], solution: Solution, seeds: list[int], per_start: int = 8) -> dict:
    """Each learned policy's Monte Carlo soft value on ``r_w`` (its own entropy) from the starts, against ``V*_w``
    there; beside the exact ``pi_w``'s and the random policy's suboptimality on the same starts (grid, exact)."""
    starts = start_states(seeds)
    optimum = solution.value(JOINT, starts)
    out: dict[str, dict] = {"exact pi_w": {"suboptimality": float(np.mean(optimum - solution.value("pi_w", starts)))},
                            "random": {"suboptimality": float(np.mean(optimum - solution.value("uniform", starts)))}}
    for key, (label, actor) in enumerate(actors.items()):
        g, _ = value_returns(actor, seeds, per_start, STEPS, solution.gamma, key=100 + key)
        per_start_gap = optimum - g.mean(axis=1)
        out[label] = {"suboptimality": float(per_start_gap.mean()),
                      "se": float(per_start_gap.std(ddof=1) / math.sqrt(len(seeds))), "entropy": actor.entropy}
    return out


# ---- the figure -----------------------------------------------------------------------------------------------
def line_through_goals(solution: Solution, n: int = 121) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """States on the segment x = 0.5 from y = -1 to 1 (through both goals) with the action 0: obs [n, 2], act [n, 2],
    and the exact ``Q_w - Q*_w`` there [n]."""
    obs = np.stack([np.full(n, 0.5), np.linspace(-1.0, 1.0, n)], axis=-1)
    act = np.zeros_like(obs)
    q_w = 0.5 * (solution.q_star(PARTS[0], obs, act) + solution.q_star(PARTS[1], obs, act))
    return obs, act, q_w - solution.q_star(JOINT, obs, act)


def c_star_at(solution: Solution, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
    """``C*(s, a) = gamma (delta(s') + max_a' C*(s', a'))`` at any states and actions (interpolated): [N]."""
    nxt = np.clip(obs + STEP * act, -1.0, 1.0)
    best = solution.c_star.max(axis=1)
    return solution.gamma * (interpolate(solution.grid, solution.delta, nxt) + interpolate(solution.grid, best, nxt))


def policy_gap_at(solution: Solution, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
    """The exact ``pi_w``'s own gap ``D(s, a) = gamma (delta(s') + E_{a'~pi_w} D(s', a'))`` at any states and actions
    (interpolated): [N]."""
    nxt = np.clip(obs + STEP * act, -1.0, 1.0)
    log_pi = boltzmann_log_density(solution.q_w, solution.alpha, solution.grid.log_weight)
    mean_d = np.sum(policy_mass(log_pi, solution.grid.log_weight) * solution.d_pi_w, axis=1)
    return solution.gamma * (interpolate(solution.grid, solution.delta, nxt) + interpolate(solution.grid, mean_d, nxt))


def figure(solution: Solution, path: Path, learned: dict[str, np.ndarray] | None = None) -> None:
    """Left: ``V*`` of the mean task on the plane, with the goals. Right: along x = 0.5 (action 0), the true gap
    ``Q_w - Q*_w`` against the exact ``C*``, and the learned ``Q_w - Q*_w`` and fitted ``C`` when given."""
    from skills.evaluation.plots import _pyplot, save_figure

    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    n = solution.grid.states
    image = left.imshow(solution.v[JOINT].reshape(n, n).T, origin="lower", extent=(-1, 1, -1, 1), cmap="viridis")
    left.scatter([0.5, 0.5], [0.4, -0.4], c="white", marker="*", s=120, label="goals")
    left.set(title="V* of plane-upper+plane-lower", xlabel="x", ylabel="y")
    left.legend(loc="lower left")
    fig.colorbar(image, ax=left)
    obs, act, gap = line_through_goals(solution)
    y = obs[:, 1]
    right.plot(y, gap, color="black", label="true gap Q_w - Q*_w (exact Q_i)")
    right.plot(y, c_star_at(solution, obs, act), color="black", linestyle="--", label="C* (exact)")
    if learned is not None:
        right.plot(y, learned["gap"], color="tab:blue", label="learned Q_w - Q*_w")
        right.plot(y, learned["C"], color="tab:blue", linestyle="--", label="fitted C")
    right.set(title="the bound along x = 0.5, action 0", xlabel="y", ylabel="value")
    right.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=110)


def learned_line(composed, correction, solution: Solution) -> dict[str, np.ndarray]:
    """The learned ``Q_w - Q*_w`` and the fitted ``C`` along the figure's line."""
    obs, act, _ = line_through_goals(solution)
    o, a = obs.astype(np.float32), act.astype(np.float32)
    with torch.no_grad():
        q_w = np.asarray(composed.q_w(o, a), np.float64)
        c = correction(torch.as_tensor(o), torch.as_tensor(a)).numpy().astype(np.float64)
    return {"gap": q_w - solution.q_star(JOINT, obs, act), "C": c}


# ---- the report -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroundTruthConfig:
    """What ``python -m compose.groundtruth`` computes."""

    actions: int = 9  # the truth's action rule per axis (compared with actions - 2 to measure its error)
    starts: int = 24  # start states for the Monte Carlo soft values
    library: str | None = None  # where the plane skills are (default: the toolkit's library)
    learned: bool = True  # compare the shipped plane skills too (skipped when the library has none)
    figure: Path | None = None  # a PNG of V*_w and the bound along a line through the goals


def learned_section(solution: Solution, config: GroundTruthConfig, seeds: list[int]) -> dict:
    """The shipped plane skills (and their composition) against the truth; None when the library has none."""
    import compose
    import skills

    from .build import build_policy_gap

    try:
        parts = {name: skills.load(name, config.library) for name in (*PARTS, JOINT)}
    except ValueError as exc:
        return {"skipped": str(exc).splitlines()[0]}
    composed = compose.load(list(PARTS), library=config.library)
    built = composed.build(progress=False)
    alpha = solution.alpha
    actors = {"composed sampler": sampler_actor("composed", composed.policy, alpha),
              "joint sampler": sampler_actor("joint", parts[JOINT], alpha)}
    assert built.correction is not None, "averaging fits the bound's C"
    if config.figure is not None:
        figure(solution, config.figure, learned_line(composed, built.correction, solution))
    d_net, _ = build_policy_gap(composed, built, config.library)  # the cached D where the library has it
    return {"q_error": {name: learned_q_error(skill, solution, name) for name, skill in parts.items()},
            "bound": learned_bound(composed, built.correction, solution, policy_gap=d_net),
            "policies": policy_values(actors, solution, seeds)}


def ground_truth(config: GroundTruthConfig = GroundTruthConfig()) -> dict:
    """Everything the module checks, as JSON-ready data."""
    alpha = float(envs.get_task(JOINT).family.training["alpha"])
    grid = Grid(config.actions)
    solution = solve(alpha, grid)
    seeds = list(range(10_000, 10_000 + config.starts))
    report = {"alpha": alpha, "gamma": solution.gamma, "grid": {"actions": grid.actions, "states": grid.states},
              "refinement": refinement(solve(alpha, Grid(max(1, grid.actions - 2))), solution),
              "theorem": exact_theorem(solution), "machinery": machinery_check(solution, seeds)}
    learned = learned_section(solution, config, seeds) if config.learned else None
    if learned is not None:
        report["learned"] = learned
    if config.figure is not None and (learned is None or "skipped" in learned):
        figure(solution, config.figure)
    return report


def markdown(report: dict) -> str:
    """The report for people."""
    t, r, m = report["theorem"], report["refinement"], report["machinery"]
    lines = [f"# Ground truth: the plane tasks (alpha {report['alpha']}, gamma {report['gamma']})", "",
             f"Truth: soft value iteration on a {report['grid']['states']}^2 state grid with "
             f"{report['grid']['actions']}^2 midpoint-rule actions. Refining the rule from {r['coarse_actions']}^2 to "
             f"{r['fine_actions']}^2 actions moves V by at most {max(r['max_abs_change'].values()):.3f} (mean "
             f"{max(r['mean_abs_change'].values()):.4f}; V spans {r['value_range']:.2f}); the rule's error falls like "
             f"1/actions^2, so the truth's own error is about {r['fine_error_estimate_max']:.3f} at most.", "",
             "## The theorem with exact Q_i", "",
             f"- `Q*_w <= Q_w` on all {t['pairs']} grid pairs: {t['upper_holds']}; `Q_w - C* <= Q*_w`: {t['lower_holds']}",
             f"- controls that must fail: C = 0 holds: {t['control_C_zero_lower_holds']}; "
             f"C*/2 holds: {t['control_C_half_lower_holds']}",
             f"- gap Q_w - Q*_w mean {t['gap_mean']:.3f} (max {t['gap_max']:.3f}); C* mean {t['C_star_mean']:.3f} "
             f"({t['C_star_over_gap']:.2f}x the gap)",
             f"- the exact pi_w is {t['pi_w_suboptimality_mean']:.3f} below V*_w on average "
             f"(range {t['pi_w_suboptimality_min']:.3f} to {t['pi_w_suboptimality_max']:.3f}); "
             f"the random policy {t['uniform_suboptimality_mean']:.3f}",
             f"- pi_w's own gap D (mean {t['D_mean']:.3f}): `Q_w - D = Q^pi_w` to {t['D_identity_max_error']:.1e} at "
             f"worst (with C* in its place: {t['control_C_star_identity_max_error']:.3f}); `Q_w - D <= Q*_w` on every "
             f"pair: {t['D_lower_holds']}; `D <= C*`: {t['D_at_most_C_star']}", "",
             "## The Monte Carlo machinery against the truth", "",
             f"- random actor, exact entropy credit: mean error {m['random']['mean_error']:+.3f} "
             f"(SE {m['random']['mean_error_se']:.3f}, z {m['random']['z']:+.2f}); per-start 95% CIs cover the truth "
             f"on {m['random']['covered']:.0%} of {m['random']['starts']} starts -> passes: {m['passes']}",
             f"- control, no entropy credit: mean error {m['control_no_entropy']['mean_error']:+.3f} "
             f"(z {m['control_no_entropy']['z']:+.1f}) -> fails as it must: {m['control_fails']}"]
    learned = report.get("learned")
    if learned and "skipped" in learned:
        lines += ["", f"Learned skills: skipped ({learned['skipped']})"]
    elif learned:
        lines += ["", "## The shipped plane skills against the truth", "",
                  "| skill | mean abs Q error (uniform a) | share of Q* range | (own actions) | mean abs V error |",
                  "|---|---|---|---|---|"]
        for name, e in learned["q_error"].items():
            lines.append(f"| {name} | {e['uniform_actions']['mean_abs']:.3f} | {e['uniform_actions']['share_of_range']:.1%}"
                         f" | {e['own_actions']['mean_abs']:.3f} ({e['own_actions']['share_of_range']:.1%}) "
                         f"| {e['value']['mean_abs']:.3f} |")
        b = learned["bound"]
        lines += ["", f"- learned Q_w against the exact Q_w: mean abs error {b['Q_w_error_mean_abs']:.3f}",
                  f"- upper side `Q*_w <= Q_w` (learned Q_w) holds on {b['upper_holds']:.1%} of {b['pairs']} pairs; "
                  f"gap mean {b['gap_mean']:.3f}",
                  f"- lower side with the fitted C: holds on {b['lower_holds']:.1%} (smallest C - gap "
                  f"{b['lower_min_margin']:+.3f}); C mean {b['C_mean']:.3f} = "
                  f"{b['C_over_gap']:.2f}x the true gap (exact: C* is {t['C_star_over_gap']:.2f}x)",
                  *([f"- the fitted D (pi_w's own gap): mean {b['D_mean']:.3f} against the exact pi_w's "
                     f"{b['D_exact_mean']:.3f} (mean abs error {b['D_error_mean_abs']:.3f}); D >= the true gap on "
                     f"{b['D_lower_holds']:.1%} of pairs; {b['D_over_gap']:.2f}x the gap"] if "D_mean" in b else []), "",
                  "Soft value below the optimum V*_w from the same starts (Monte Carlo with each sampler's own "
                  "entropy; exact on the grid for pi_w and random):", ""]
        for label, p in learned["policies"].items():
            se = f" (SE {p['se']:.3f})" if "se" in p else ""
            lines.append(f"- {label}: {p['suboptimality']:.3f}{se}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m compose.groundtruth", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", default=None, help="skill library with the plane skills (default: trained/)")
    parser.add_argument("--actions", type=int, default=GroundTruthConfig.actions,
                        help="quadrature actions per axis for the truth (odd; default %(default)s)")
    parser.add_argument("--starts", type=int, default=GroundTruthConfig.starts,
                        help="start states for the Monte Carlo soft values (default %(default)s)")
    parser.add_argument("--no-learned", action="store_true", help="only the exact parts (no skills needed)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    parser.add_argument("--figure", type=Path, default=None, help="write a PNG of V*_w and the bound here")
    args = parser.parse_args(argv)

    def go() -> int:
        report = ground_truth(GroundTruthConfig(args.actions, args.starts, args.library, not args.no_learned,
                                                     args.figure))
        if args.json is not None:
            atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
        sys.stdout.write(markdown(report))
        return 0

    code = run_command(go)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
