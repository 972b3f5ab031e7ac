"""Convergence diagnostics of soft Q-functions, checked against ground truth (Monte Carlo soft returns).

For the Boltzmann policy of a learned ``Q``, ``-alpha log pi(a|s) = V(s) - Q(s,a)``, so one rollout's
soft return ``sum_t gamma^t (r_t + alpha H_t)`` has the single-sample estimate

    G = sum_t gamma^t (r_t - Q(s_t, a_t) + V(s_t)).

Telescoping with ``r_t + gamma V(s_{t+1}) = Q(s_t, a_t) + (T Q - Q)(s_t, a_t)`` gives

    E[G] = V(s_0) + E[ sum_t gamma^t (T Q - Q)(s_t, a_t) ],

so the Monte Carlo soft return equals ``V(s_0)`` exactly when ``Q`` is at its soft Bellman fixed point
along the visited states, whatever sampler picked the actions. ``soft_return_gap = E[G] - V(s_0)``
is the discounted Bellman residual accumulated along the skill's own stochastic policy: a measure
of convergence that no other learned function stands in for.

It does not see how far the sampler that acts is from the Boltzmann policy of ``Q``, nor ``Q``'s error at actions
the sampler does not take: the credit ``V - Q`` is that policy's entropy, not the sampler's. So the same rollouts are
also scored with the sampler's own entropy (``skills.evaluation.entropy.acting_entropy``: the change of variables
through its network), ``G_own = sum_t gamma^t (r_t + alpha H_t)``, and ``sampler_soft_return_gap = E[G_own] -
V(s_0)`` is ``soft_return_gap`` minus the sampler's discounted ``alpha KL(sampler || pi_Q)``: the soft return the skill
really gets against the one its ``Q`` promises.

Rollouts restart from a state by replaying its episode (reset seed and the actions before it),
which is exact for deterministic simulators and needs no state-restoring API from the env. They
run past the time limit (training bootstraps through truncation) for ``T`` steps; the tail
beyond ``T`` is at most ``gamma^T max|term| / (1 - gamma)``, reported with every result.

Also here: the analytic bounds of any soft value, ``(r_min + alpha d log 2)/(1 - gamma) <= V <=
(r_max + alpha d log 2)/(1 - gamma)``, which the trainer checks to catch value blow-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import cast

import gymnasium as gym
import numpy as np
import torch
from gymnasium.spaces import Box

from ..policy import Actor, SoftPolicy
from .lockstep import EnvPool, default_width, in_threads, step_all, stream, threads_for


# ---- analytic bounds of soft values -----------------------------------------------------------
def soft_value_bounds(reward_range: tuple[float, float], alpha: float, act_dim: int, gamma: float) -> tuple[float, float]:
    """``(V_min, V_max)`` for any soft value on ``[-1, 1]^d`` with per-step rewards in ``reward_range``.

    ``alpha d log 2`` is the largest entropy bonus of any density on the box (the uniform one), and
    the uniform policy's value is the least the soft-optimal value can be, so the soft Bellman
    operator maps ``[V_min, V_max]`` into itself:
    ``V_min = (r_min + alpha d log 2)/(1 - gamma)``, ``V_max = (r_max + alpha d log 2)/(1 - gamma)``,
    each widened to include 0 (a terminal state's value).
    """
    bonus = alpha * act_dim * math.log(2.0)
    low, high = (reward_range[0] + bonus) / (1.0 - gamma), (reward_range[1] + bonus) / (1.0 - gamma)
    return min(low, 0.0), max(high, 0.0)


def value_bound_violation(values: np.ndarray, reward_range: tuple[float, float], alpha: float, act_dim: int,
                          gamma: float, margin: float = 0.1) -> str | None:
    """A message naming the bound and the value when any of ``values`` leaves the analytic bounds
    by more than ``margin`` times their width (estimation noise), else ``None``."""
    low, high = soft_value_bounds(reward_range, alpha, act_dim, gamma)
    slack = margin * (high - low)
    values = np.asarray(values, np.float64)
    if not np.all(np.isfinite(values)):
        return f"a soft value is not finite ({values[~np.isfinite(values)][0]})"
    r_min, r_max = reward_range
    if values.max() > high + slack:
        return (f"soft value {values.max():.4g} exceeds the analytic bound V <= (r_max + alpha d log 2)/(1 - gamma) = "
                f"({r_max:g} + {alpha:g}*{act_dim}*log 2)/(1 - {gamma:g}) = {high:.4g} (+{slack:.3g} margin)")
    if values.min() < low - slack:
        return (f"soft value {values.min():.4g} is below the analytic bound V >= (r_min + alpha d log 2)/(1 - gamma) = "
                f"({r_min:g} + {alpha:g}*{act_dim}*log 2)/(1 - {gamma:g}) = {low:.4g} (-{slack:.3g} margin)")
    return None


# ---- Monte Carlo soft returns -----------------------------------------------------------------
@dataclass(frozen=True)
class Start:
    """Where rollouts begin: ``env.reset(seed=seed)``, then ``prefix`` actions replayed; the first
    rollout action is ``action`` when given (for ``Q^pi(s, a)``), else the policy's."""

    seed: int
    prefix: tuple = ()
    action: np.ndarray | None = None


@dataclass
class Rollouts:
    """Rollouts from one start, ``n`` in lockstep for ``T`` steps: arrays [n, T, ...]."""

    obs: np.ndarray  # [n, T, o] s_t
    action: np.ndarray  # [n, T, d] a_t
    reward: np.ndarray  # [n, T] r_t
    next_obs: np.ndarray  # [n, T, o] s_{t+1}
    terminated: np.ndarray  # [n, T] 1.0 where s_{t+1} is terminal
    alive: np.ndarray  # [n, T] 1.0 while the episode runs (0 after termination)


def rollout_steps(reward_range: tuple[float, float], alpha: float, act_dim: int, gamma: float,
                  tail: float = 0.01, max_steps: int = 2000) -> int:
    """``T`` with ``gamma^T M / (1 - gamma) <= tail``, ``M = max|r| + alpha d log 2`` (the per-step
    scale of the soft return's terms)."""
    scale = max(abs(reward_range[0]), abs(reward_range[1])) + alpha * act_dim * math.log(2.0)
    steps = math.ceil(math.log(tail * (1.0 - gamma) / scale) / math.log(gamma))
    return int(min(max(steps, 1), max_steps))


def run_rollouts(pool: EnvPool, policy: Actor, starts: Sequence[Start], per_start: int, steps: int,
                 key: int = 0, width: int | None = None) -> Rollouts:
    """``per_start`` rollouts of ``policy``'s stochastic actions from each start, ``steps`` long, all stepped in
    lockstep (``width`` envs at a time): arrays [S * per_start, T, ...], start-major. Rollout ``j`` of start ``k``
    draws from its own stream ``stream(key, k, j)``.

    The pool's envs must be unwrapped (no time limit): rollouts go past it. Each env is reset with its start's seed
    and replays the start's prefix, so the rollouts of a start all begin in the same state.
    """
    rows = [(k, j) for k in range(len(starts)) for j in range(per_start)]
    width = width or default_width()
    parts = []
    for first in range(0, len(rows), width):
        chunk = rows[first:first + width]
        envs = pool.take(len(chunk), unwrapped=True)
        parts.append(_rollout_chunk(envs, policy, [starts[k] for k, _ in chunk], [stream(key, k, j) for k, j in chunk],
                                    steps))
    return Rollouts(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Rollouts)))


def _rollout_chunk(envs: Sequence[gym.Env], policy: Actor, starts: Sequence[Start],
                   generators: Sequence[torch.Generator], steps: int) -> Rollouts:
    """One lockstep batch of rollouts, env ``i`` from ``starts[i]`` with ``generators[i]``: arrays [n, T, ...]."""
    n = len(envs)
    obs = np.stack(in_threads(_replay, list(zip(envs, starts, strict=True)), threads_for(envs))).astype(np.float32)
    o_dim, a_dim = obs.shape[1], cast(Box, envs[0].action_space).shape[0]  # the tasks' action spaces are boxes
    out = Rollouts(np.zeros((n, steps, o_dim), np.float32), np.zeros((n, steps, a_dim), np.float32),
                   np.zeros((n, steps), np.float64), np.zeros((n, steps, o_dim), np.float32),
                   np.zeros((n, steps)), np.zeros((n, steps)))
    alive = np.ones(n, bool)
    for t in range(steps):
        rows = [int(i) for i in np.flatnonzero(alive)]
        actions = np.zeros((n, a_dim), np.float32)
        actions[rows] = np.asarray(policy.act(obs[rows], False, [generators[i] for i in rows]), np.float32).reshape(-1, a_dim)
        if t == 0:
            for i, start in enumerate(starts):
                if start.action is not None:
                    actions[i] = np.asarray(start.action, np.float32)
        out.obs[:, t], out.action[:, t], out.alive[:, t] = obs, actions, alive
        stepped = step_all([envs[i] for i in rows], actions[rows])
        for i, (next_o, r, terminated, _, _) in zip(rows, stepped, strict=True):
            out.reward[i, t], out.next_obs[i, t], out.terminated[i, t] = r, next_o, float(terminated)
            obs[i] = next_o
            alive[i] = not terminated
        if not alive.any():
            break
    return out


def _replay(env_and_start: tuple[gym.Env, Start]) -> np.ndarray:
    """Reset the env with the start's seed and replay its prefix: the start's state."""
    env, start = env_and_start
    o, _ = env.reset(seed=start.seed)
    for a in start.prefix:
        o, *_ = env.step(np.asarray(a))
    return o


def soft_return_estimates(rollouts: Rollouts, q: np.ndarray, v: np.ndarray, gamma: float,
                          from_action: bool = False) -> np.ndarray:
    """``G = sum_t gamma^t (r_t - Q(s_t, a_t) + V(s_t))`` per rollout; q, v [n, T] -> [n].

    ``from_action``: the first action was given, not drawn, so its entropy term is left out and
    ``G`` estimates ``Q^pi(s_0, a_0)`` rather than ``V^pi(s_0)``.
    """
    entropy = v - q
    if from_action:
        entropy = entropy.copy()
        entropy[:, 0] = 0.0
    discount = gamma ** np.arange(rollouts.reward.shape[1])
    return np.sum(discount * rollouts.alive * (rollouts.reward + entropy), axis=1)


def rollout_values(policy: SoftPolicy, rollouts: Rollouts, value_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """``Q(s_t, a_t)`` and ``V(s_t)`` of the policy's soft Q-function along rollouts: [n, T] each."""
    n, steps = rollouts.reward.shape
    obs = rollouts.obs.reshape(n * steps, -1)
    act = rollouts.action.reshape(n * steps, -1)
    alive = rollouts.alive.reshape(-1) > 0
    q, v = np.zeros(n * steps), np.zeros(n * steps)
    if alive.any():
        q[alive] = np.asarray(policy.q(obs[alive], act[alive]), np.float64)
        v[alive] = np.asarray(policy.value(obs[alive], n_samples=value_samples), np.float64)
    return q.reshape(n, steps), v.reshape(n, steps)


def mean_and_se(x: np.ndarray) -> tuple[float, float]:
    """Mean and its standard error (0 for one value)."""
    x = np.asarray(x, np.float64)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0


# ---- the convergence report -------------------------------------------------------------------
@dataclass(frozen=True)
class ConvergenceConfig:
    """How a skill's soft Q-function is checked against Monte Carlo soft returns."""

    start_states: int = 16  # reset states (seeds seed, seed+1, ...)
    rollouts: int = 8  # stochastic rollouts per start state, in lockstep
    tail: float = 0.01  # rollout length T: gamma^T (max|r| + alpha d log 2)/(1 - gamma) <= tail
    value_samples: int = 1024  # importance samples for every V (mixture proposal)
    residual_states: int = 4000  # stored transitions for the Bellman residual
    seed: int = 100_000  # first start seed (apart from training and evaluation seeds)
    entropy_samples: int = 32  # sampler draws per visited state for the sampler's own entropy

    def to_dict(self) -> dict:
        return asdict(self)


def bellman_residual(policy: SoftPolicy, obs: np.ndarray, action: np.ndarray, reward: np.ndarray, next_obs: np.ndarray,
                     terminated: np.ndarray, gamma: float, value_samples: int) -> np.ndarray:
    """``Q(s, a) - (r + gamma (1 - terminated) V(s'))`` per transition (``Q - T Q``; ``V`` by importance
    sampling), [M]. For a deterministic simulator one transition gives ``T Q`` exactly."""
    q = np.asarray(policy.q(obs, action), np.float64)
    v_next = np.asarray(policy.value(next_obs, n_samples=value_samples), np.float64)
    return q - (np.asarray(reward, np.float64) + gamma * (1.0 - np.asarray(terminated, np.float64)) * v_next)


RESIDUAL_SETS = ("stored", "on_policy")
NOISE_SE = 2.0  # a residual verdict is decided when the mean lies this many standard errors inside or outside the goal


def residual_inside_noise(records: Sequence[dict], goal: float, met: bool) -> bool:
    """Whether the residual verdict could flip within ``NOISE_SE`` standard errors of the means.

    ``met``: every ``|mean| <= goal``; decided only if every ``|mean| + 2 se <= goal``. Missed: decided if some set has
    ``|mean| - 2 se > goal``. ``records``: the ``stored`` and ``on_policy`` records (mean and se)."""
    margins = [(abs(r["bellman_residual_mean"]), NOISE_SE * float(r.get("bellman_residual_se", 0.0))) for r in records]
    if met:
        return any(m + band > goal for m, band in margins)
    return not any(m - band > goal for m, band in margins)


def convergence_goal(report: dict, alpha: float) -> dict:
    """The goals of a converged skill: ``|gap| <= 0.05 |V0| + 0.05 + 3 se`` and, on both sets of
    transitions, ``|mean Bellman residual| <= 0.1 alpha``; ``bellman_residual_inside_noise`` says whether that
    verdict would flip within 2 standard errors of the means (``residual_inside_noise``).

    ``sampler_soft_return_gap`` (when the report has it): the same tolerance on the gap scored with the sampler's own
    entropy. It is reported beside ``met``, not part of it: the shipped skills' verdicts were recorded without it."""
    def within(gap: float, se: float) -> bool:
        return abs(gap) <= 0.05 * abs(report["V0_mean"]) + 0.05 + 3 * se

    gap_ok = within(report["soft_return_gap"], report["soft_return_gap_se"])
    records = [report[k] for k in RESIDUAL_SETS]
    residual_ok = all(abs(r["bellman_residual_mean"]) <= 0.1 * alpha for r in records)
    goal = {"soft_return_gap": bool(gap_ok), "bellman_residual": bool(residual_ok), "met": bool(gap_ok and residual_ok),
            "bellman_residual_inside_noise": residual_inside_noise(records, 0.1 * alpha, residual_ok)}
    if "sampler_soft_return_gap" in report:
        goal["sampler_soft_return_gap"] = bool(within(report["sampler_soft_return_gap"],
                                                      report["sampler_soft_return_gap_se"]))
    return goal


def convergence_report(policy: SoftPolicy, make_env: Callable[[], gym.Env], reward_range: tuple[float, float],
                       transitions: dict[str, np.ndarray] | None = None,
                       config: ConvergenceConfig = ConvergenceConfig()) -> dict:
    """Monte Carlo soft returns of ``policy``'s own stochastic actions from ``config.start_states``
    reset states, against ``V(s_0)``; Bellman residuals on stored and on on-policy transitions.

    ``make_env()`` gives an env of the skill's task; rollouts use ``env.unwrapped`` (no time limit).
    Returns the manifest's ``convergence`` record (see ``convergence_goal`` for the goals).
    """
    steps = rollout_steps(reward_range, policy.alpha, policy.act_dim, policy.gamma, config.tail)
    report, on_policy = soft_return_gaps(policy, make_env, steps, config)
    sets = {"on_policy": on_policy}
    if transitions is not None:
        rng = np.random.default_rng(config.seed)
        idx = rng.choice(len(transitions["obs"]), size=min(config.residual_states, len(transitions["obs"])), replace=False)
        sets["stored"] = {k: transitions[k][idx] for k in on_policy}
    for name, data in sets.items():
        report[name] = residual_record(policy, data, config)
    report["bellman_residual_mean"] = report.get("stored", report["on_policy"])["bellman_residual_mean"]
    report["bellman_residual_rms"] = report.get("stored", report["on_policy"])["bellman_residual_rms"]
    if "stored" in report:
        report["goal"] = convergence_goal(report, policy.alpha)
    return report


TRANSITION_KEYS = ("obs", "action", "reward", "next_obs", "terminated")


def soft_return_gaps(policy: SoftPolicy, make_env: Callable[[], gym.Env], steps: int,
                     config: ConvergenceConfig) -> tuple[dict, dict[str, np.ndarray]]:
    """The Monte Carlo half of the report: ``config.rollouts`` rollouts of ``steps`` from each start state (all in
    lockstep), their soft returns against ``V(s_0)``; and the on-policy transitions they visited."""
    starts = [Start(config.seed + k) for k in range(config.start_states)]
    with EnvPool(make_env, unwrapped=True) as pool:
        rollouts = run_rollouts(pool, policy, starts, config.rollouts, steps, key=config.seed)
    q, v = rollout_values(policy, rollouts, config.value_samples)
    g = soft_return_estimates(rollouts, q, v, policy.gamma).reshape(config.start_states, config.rollouts)
    v0s = v[:, 0].reshape(config.start_states, config.rollouts)[:, 0]
    gaps = g.mean(axis=1) - v0s
    g_own = own_entropy_returns(policy, rollouts, config).reshape(config.start_states, config.rollouts)
    gaps_own = g_own.mean(axis=1) - v0s
    terms_max = float(np.max(np.abs(rollouts.alive * (rollouts.reward - q + v))))
    live = rollouts.alive > 0
    on_policy = {key: getattr(rollouts, key)[live] for key in TRANSITION_KEYS}
    gap, gap_se = mean_and_se(gaps)
    gap_own, gap_own_se = mean_and_se(gaps_own)
    report = {
        "method": "Monte Carlo soft return sum_t gamma^t (r_t - Q(s_t,a_t) + V(s_t)) of the skill's own stochastic "
                  "policy (one sampler draw per step) against V(s_0); V by importance sampling (mixture proposal)",
        "start_states": config.start_states, "rollouts_per_start": config.rollouts, "rollout_steps": steps,
        "tail_bound": float(policy.gamma**steps * terms_max / (1.0 - policy.gamma)),
        "value_samples": config.value_samples, "gamma": policy.gamma, "alpha": policy.alpha,
        "V0_mean": float(np.mean(v0s)), "soft_return_mean": float(np.mean(g.mean(axis=1))),
        "soft_return_gap": gap, "soft_return_gap_se": gap_se,
        "soft_return_gap_per_start": [float(x) for x in gaps],
        "V0_per_start": [float(x) for x in v0s],
        "soft_return_per_start": [float(r.mean()) for r in g],
        "soft_return_se_per_start": [mean_and_se(r)[1] for r in g],
        "sampler_entropy": f"its own: change of variables through the sampler network, {config.entropy_samples} draws per "
                           "visited state (nearest-neighbour estimate where the map folds or there is no network)",
        "sampler_soft_return_mean": float(np.mean(g_own.mean(axis=1))),
        "sampler_soft_return_gap": gap_own, "sampler_soft_return_gap_se": gap_own_se,
    }
    return report, on_policy


def own_entropy_returns(policy: SoftPolicy, rollouts: Rollouts, config: ConvergenceConfig) -> np.ndarray:
    """``sum_t gamma^t (r_t + alpha H_t)`` per rollout, ``H_t`` the acting policy's own entropy at ``s_t``: [n]."""
    from .entropy import acting_entropy

    live = rollouts.alive > 0
    credit = np.zeros(rollouts.reward.shape)
    if live.any():
        credit[live] = policy.alpha * acting_entropy(policy, rollouts.obs[live], config.entropy_samples, seed=config.seed)
    discount = policy.gamma ** np.arange(rollouts.reward.shape[1])
    return np.sum(discount * rollouts.alive * (rollouts.reward + credit), axis=1)


def residual_record(policy: SoftPolicy, data: dict[str, np.ndarray], config: ConvergenceConfig) -> dict:
    """Bellman residuals on (at most ``config.residual_states`` of) a set of transitions: count, mean, rms, se."""
    if len(data["obs"]) > config.residual_states:
        keep = np.random.default_rng(config.seed + 1).choice(len(data["obs"]), config.residual_states, replace=False)
        data = {k: v[keep] for k, v in data.items()}
    res = bellman_residual(policy, data["obs"], data["action"], data["reward"], data["next_obs"],
                           data["terminated"], policy.gamma, config.value_samples)
    return {"transitions": int(len(res)), "bellman_residual_mean": float(res.mean()),
            "bellman_residual_rms": float(np.sqrt(np.mean(res**2))), "bellman_residual_se": mean_and_se(res)[1]}


def format_report(report: dict) -> list[str]:
    """Human-readable lines of a ``convergence_report``."""
    lines = [
        f"V(s0) mean            {report['V0_mean']:.4f}  ({report['start_states']} start states)",
        f"MC soft return mean   {report['soft_return_mean']:.4f}  ({report['rollouts_per_start']} rollouts each, "
        f"T = {report['rollout_steps']} steps, tail <= {report['tail_bound']:.2g})",
        f"soft return gap       {report['soft_return_gap']:+.4f} ± {report['soft_return_gap_se']:.4f} (se)",
    ]
    if "sampler_soft_return_gap" in report:
        lines.append(f"with its own entropy  {report['sampler_soft_return_gap']:+.4f} ± "
                     f"{report['sampler_soft_return_gap_se']:.4f} (se; the sampler's soft return against V(s0))")
    for name in ("stored", "on_policy"):
        if name in report:
            r = report[name]
            lines.append(f"Bellman residual Q-TQ {r['bellman_residual_mean']:+.5f} mean, {r['bellman_residual_rms']:.4f} rms "
                         f"({name.replace('_', '-')}, {r['transitions']} transitions)")
    if "goal" in report:
        g = report["goal"]
        noise = " (inside the noise: 2 se of a mean reach the goal)" if g.get("bellman_residual_inside_noise") else ""
        lines.append(f"goals                 gap {'met' if g['soft_return_gap'] else 'MISSED'}, "
                     f"residual {'met' if g['bellman_residual'] else 'MISSED'}{noise}  "
                     f"(|gap| <= 0.05|V0| + 0.05 + 3 se; |residual mean| <= 0.1 alpha = {0.1 * report['alpha']:g})")
        if "sampler_soft_return_gap" in g:
            verdict = "met" if g["sampler_soft_return_gap"] else "MISSED"
            lines.append(f"{'':22s}gap with its own entropy {verdict} (same tolerance; reported, not part of the goal yet)")
    return lines
