"""The composition bound of Haarnoja et al. (2018), estimated in continuous actions.

``Q_w(s,a) >= Q*_w(s,a) >= Q_w(s,a) - C*(s,a)`` where ``C*`` is the fixed point of

    C(s,a) = gamma * E_{s'}[ delta(s') + max_{a'} C(s',a') ],
    delta(s) = sum_i w_i V_i(s) - V_w(s)        (tight form; the paper's D_1/2 form is looser).

Estimation, and where its errors come from (reported with every result):
* ``delta`` by uniform importance sampling with *common random numbers* across ``V_i`` and
  ``V_w`` (``n_value_samples`` per state): exact sign, finite-sample bias in both terms;
* ``C`` by TD on the constituents' stored transitions (only the states the skills saw), with a
  target network and ``max_{a'}`` taken over sampled actions (a lower estimate of the max);
* ``Q_i`` and the jointly trained ``Q_joint`` (standing in for ``Q*_w``) are themselves learned
  approximations, so the upper side ``Q_joint <= Q_w`` can fail by their errors.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from skills.evaluation.diagnostics import (
    Start,
    mean_and_se,
    rollout_steps,
    rollout_values,
    run_rollouts,
    soft_return_estimates,
)
from skills.evaluation.lockstep import EnvPool, Episode, lockstep_episodes
from skills.sql import SoftQNetwork, uniform_actions

from .composition import ComposedQ, Composition
from .td import td_fit


@dataclass(frozen=True)
class BoundConfig:
    """TD fit of the correction ``C``, run long enough to reach its fixed point.

    ``C`` converges like a value: after ``k`` backups (target copies) the initial error is scaled
    by ``gamma^k``. The fit takes ``k = ceil(log(tolerance) / log(gamma))`` backups of
    ``target_update_interval`` updates each (``updates`` overrides this). The default asks for
    ``gamma^k <= 1e-4``, twice the backups of ``1e-2``: early on, the max over sampled actions of a
    still-noisy fit overshoots the fixed point (by 24% at gamma = 0.95 on a constant ``delta``) and
    the overshoot then decays like any error. Measured on a constant ``delta``
    (tests/test_compose.py): within 2% of ``gamma delta / (1 - gamma)`` at gamma = 0.95 and 0.99.
    """

    tolerance: float = 1e-4  # gamma^backups: what is left of the initial error
    updates: int | None = None  # TD gradient steps; None: backups * target_update_interval
    target_update_interval: int = 25  # hard target-network copy every N steps (one backup)
    batch_size: int = 256  # transitions per step
    max_actions: int = 16  # actions sampled (uniformly) for max_{a'} C(s', a')
    n_value_samples: int = 512  # importance samples per state for delta (common random numbers)
    lr: float = 1e-3  # Adam learning rate
    hidden: tuple[int, ...] = (128, 128)  # C network widths
    seed: int = 0  # seeds initialisation and draws

    def backups(self, gamma: float) -> int:
        """Target copies needed for ``gamma^k <= tolerance``."""
        return max(1, math.ceil(math.log(self.tolerance) / math.log(gamma)))

    def total_updates(self, gamma: float) -> int:
        return self.updates if self.updates is not None else self.backups(gamma) * self.target_update_interval

    def to_dict(self) -> dict:
        return asdict(self) | {"hidden": list(self.hidden)}


def gap_on_states(q: ComposedQ, states: np.ndarray, n_samples: int, seed: int, chunk: int = 512) -> np.ndarray:
    """``delta(s)`` for every state (CRN importance sampling), chunked: [M, o] -> [M]."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for start in range(0, len(states), chunk):
            obs = torch.as_tensor(states[start:start + chunk], dtype=torch.float32)
            out.append(q.gap(obs, n_samples, generator))
    return torch.cat(out).numpy()


def correction_td_target(next_gap: torch.Tensor, next_max_c: torch.Tensor, terminated: torch.Tensor,
                         gamma: float) -> torch.Tensor:
    """``C_hat = gamma (1 - terminated) (delta(s') + max_a' C(s', a'))``: [B]."""
    return gamma * (1.0 - terminated) * (next_gap + next_max_c)


def fit_correction(transitions: dict[str, np.ndarray], next_gap: np.ndarray, gamma: float,
                   obs_scale: torch.Tensor, config: BoundConfig = BoundConfig()) -> tuple[SoftQNetwork, dict]:
    """Learn ``C(s, a)`` by TD on stored transitions, given ``delta(s')`` at every next state.

    transitions: ``obs [M, o]``, ``action [M, d]``, ``next_obs [M, o]``, ``terminated [M]``;
    next_gap: ``delta(next_obs)`` [M]. No environment samples.
    """
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    obs = torch.as_tensor(transitions["obs"], dtype=torch.float32)
    act = torch.as_tensor(transitions["action"], dtype=torch.float32)
    next_obs = torch.as_tensor(transitions["next_obs"], dtype=torch.float32)
    terminated = torch.as_tensor(transitions["terminated"], dtype=torch.float32)
    gap = torch.as_tensor(next_gap, dtype=torch.float32)
    obs_dim, act_dim = obs.shape[1], act.shape[1]
    c_net = SoftQNetwork(obs_dim, act_dim, config.hidden, obs_scale)

    def td_pair(idx, c_net, c_target):
        with torch.no_grad():
            candidates = uniform_actions(config.batch_size, config.max_actions, act_dim, generator)
            next_max = c_target(next_obs[idx].unsqueeze(1), candidates).max(dim=1).values
            target = correction_td_target(gap[idx], next_max, terminated[idx], gamma)
        return c_net(obs[idx], act[idx]), target

    total = config.total_updates(gamma)
    fit = td_fit(c_net, td_pair, len(obs), updates=total, config=config, generator=generator, desc="bound C")
    with torch.no_grad():
        probe = torch.randperm(len(obs), generator=generator)[:2048]
        c_probe = c_net(obs[probe], act[probe])
    return c_net, {"gap_mean": float(gap.mean()), "gap_max": float(gap.max()),
                   "td_loss_last": fit["td_loss_last"] if fit["td_loss_last"] is not None else float("nan"),
                   "updates": total, "backups": fit["backups"], "gamma": gamma,
                   "C_mean_on_stored": float(c_probe.mean()),
                   "C_constant_delta_reference": float(gamma * gap.mean() / (1.0 - gamma))}


def fit_composition_correction(composition: Composition, config: BoundConfig = BoundConfig()) -> tuple[SoftQNetwork, dict]:
    """``fit_correction`` on the constituents' stored transitions, with ``delta`` by CRN sampling."""
    data = composition.transitions()
    next_gap = gap_on_states(composition.q_w, data["next_obs"], config.n_value_samples, config.seed)
    return fit_correction(data, next_gap, composition.gamma, composition.parts[0].agent.q.obs_scale, config)


def check_bound(q_w: np.ndarray, c: np.ndarray, q_joint: np.ndarray) -> dict:
    """How often ``Q_w - C <= Q_joint <= Q_w`` holds on sampled pairs, and by how much it fails.

    Returns ``holds_fraction``, per-side failure fractions and mean violations, the mean slack
    of each side, ``mean_C`` and ``mean_gap`` (= mean of ``Q_w - Q_joint``, the measured gap).
    """
    upper_ok = q_joint <= q_w
    lower_ok = q_joint >= q_w - c
    upper_excess = np.maximum(q_joint - q_w, 0.0)
    lower_excess = np.maximum((q_w - c) - q_joint, 0.0)
    return {
        "pairs": int(len(q_w)),
        "holds_fraction": float(np.mean(upper_ok & lower_ok)),
        "upper_holds_fraction": float(np.mean(upper_ok)),
        "lower_holds_fraction": float(np.mean(lower_ok)),
        "upper_violation_mean": float(upper_excess[~upper_ok].mean()) if (~upper_ok).any() else 0.0,
        "lower_violation_mean": float(lower_excess[~lower_ok].mean()) if (~lower_ok).any() else 0.0,
        "upper_slack_mean": float(np.mean(q_w - q_joint)),
        "lower_slack_mean": float(np.mean(q_joint - (q_w - c))),
        "mean_C": float(np.mean(c)),
        "mean_gap": float(np.mean(q_w - q_joint)),
        "mean_Q_w": float(np.mean(q_w)),
        "mean_Q_joint": float(np.mean(q_joint)),
    }


# ---- the Monte Carlo bound check: ground truth, no learned stand-in for Q* -----------------------
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_critical_95(df: int) -> float:
    """Two-sided 95% Student-t critical value (table to df 30, then ``1.96 + 2.37/df``)."""
    if df < 1:
        return math.inf
    return T_975[df - 1] if df <= len(T_975) else 1.959964 + 2.37 / df


@dataclass(frozen=True)
class MCBoundConfig:
    """Monte Carlo soft returns from (s, a) pairs on the composed policy's own episodes."""

    pairs: int = 20  # (s, a) pairs: one per episode (seeds seed, seed+1, ...), at a random step
    rollouts: int = 8  # rollouts per pair and policy, in lockstep
    tail: float = 0.05  # rollout length T: gamma^T (max|r| + alpha d log 2)/(1 - gamma) <= tail
    value_samples: int = 128  # importance samples (mixture proposal) for each V in the entropy terms
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def pair_starts(composed, make_env, config: MCBoundConfig, horizon: int) -> list:
    """One (s, a) pair per episode of the composed policy (seeds ``config.seed + p``, in lockstep), at a random
    step: ``(Start, obs, step)``."""
    rng = np.random.default_rng(config.seed)
    steps = [int(rng.integers(0, horizon)) for _ in range(config.pairs)]
    episodes = traced_episodes(composed, make_env, [config.seed + p for p in range(config.pairs)], horizon)
    return [starts_in(e, [t])[0] for e, t in zip(episodes, steps, strict=True)]


def episode_starts(composed, make_env, seed: int, steps: list[int]) -> list:
    """``(Start, obs, step)`` at the given steps of one seeded episode of the composed policy; each
    ``Start`` replays the episode's actions up to its step and then takes the policy's action there."""
    return starts_in(traced_episodes(composed, make_env, [seed], max(steps) + 1)[0], steps)


def traced_episodes(policy, make_env, seeds: list[int], steps: int) -> list[Episode]:
    """Episodes of ``policy`` (stochastic, in lockstep, each from its own stream), traced, ``steps`` long at most."""
    with EnvPool(lambda: gym.wrappers.TimeLimit(make_env().unwrapped, max_episode_steps=steps)) as pool:
        return lockstep_episodes(pool, policy, seeds, keep_trace=True)


def starts_in(episode: Episode, steps: list[int]) -> list:
    """``(Start, obs, step)`` at each of ``steps`` of a traced episode (a step past its end: its last step)."""
    out = []
    for t in steps:
        t = min(t, episode.length - 1)
        out.append((Start(episode.seed, tuple(episode.actions[:t]), episode.actions[t]), episode.obs[t], t))
    return out


def mc_soft_q(composed, joint, correction: torch.nn.Module, make_env, reward_range: tuple[float, float], starts: list,
              config: MCBoundConfig) -> tuple[list[dict], int, float]:
    """``G^pi(s, a)`` of the composed and the joint policy from each start, with ``Q_w`` and ``C`` there.

    ``G^pi(s, a) = r_0 + sum_{t>=1} gamma^t (r_t - Q(s_t,a_t) + V(s_t))`` estimates ``Q^pi(s, a)`` on ``r_w``
    (``Q = Q_w`` for the composed policy, the joint skill's own ``Q`` for the joint one); 95% Student-t
    CIs over ``config.rollouts`` rollouts. Every start's rollouts step in lockstep (``run_rollouts``).
    Returns per-pair rows, ``T`` and the tail bound.
    """
    gamma = composed.gamma
    steps = rollout_steps(reward_range, composed.alpha, composed.act_dim, gamma, config.tail)
    obs = torch.as_tensor(np.stack([o for _, o, _ in starts]))
    act = torch.as_tensor(np.stack([np.asarray(start.action, np.float32) for start, _, _ in starts]))
    with torch.no_grad():
        q_w, c = np.asarray(composed.q(obs, act), np.float64), correction(obs, act).numpy()
    per_pair = [{"seed": start.seed, "step": t, "Q_w": float(q_w[i]), "C": float(c[i])}
                for i, (start, _, t) in enumerate(starts)]
    policies = {"composed": composed} | ({"joint": joint} if joint is not None else {})
    term_max = 0.0
    with EnvPool(make_env, unwrapped=True) as pool:
        for key, (name, policy) in enumerate(policies.items()):
            rollouts = run_rollouts(pool, policy, [s for s, _, _ in starts], config.rollouts, steps,
                                    key=config.seed * 10 + key)
            q, v = rollout_values(policy, rollouts, config.value_samples)
            g = soft_return_estimates(rollouts, q, v, gamma, from_action=True).reshape(len(starts), config.rollouts)
            term_max = max(term_max, float(np.max(np.abs(rollouts.alive * (rollouts.reward - q + v))[:, 1:])))
            for row, g_pair in zip(per_pair, g, strict=True):
                mean, se = mean_and_se(g_pair)
                half = t_critical_95(len(g_pair) - 1) * se
                row[name] = {"mean": mean, "se": se, "ci": [mean - half, mean + half]}
    return per_pair, steps, float(gamma**steps * term_max / (1.0 - gamma))


def mc_bound(composed, joint, correction: torch.nn.Module, make_env, reward_range: tuple[float, float], horizon: int,
             config: MCBoundConfig = MCBoundConfig()) -> dict:
    """Falsifiable checks of the composition bound with Monte Carlo soft returns (``bound.mc``).

    * upper side: ``Q^pi <= Q*_w <= Q_w`` for any policy, so a CI of ``G^pi(s, a)`` lying wholly above
      ``Q_w(s, a)`` falsifies it (for the composed and the joint policy);
    * lower side: ``Q^{pi_w} >= Q_w - C*`` for the composed policy itself; it holds unless the CI lies
      wholly below ``Q_w - C``;
    * suboptimality: ``G^joint - G^composed`` per pair, against ``C``.
    """
    starts = pair_starts(composed, make_env, config, horizon)
    return summarise_mc_bound(*mc_soft_q(composed, joint, correction, make_env, reward_range, starts, config), config)


def summarise_mc_bound(per_pair: list[dict], steps: int, tail_bound: float, config: MCBoundConfig) -> dict:
    """The ``bound.mc`` record from per-pair soft returns (see ``mc_bound``)."""
    names = [n for n in ("composed", "joint") if n in per_pair[0]]
    q_w = np.array([r["Q_w"] for r in per_pair])
    c = np.array([r["C"] for r in per_pair])
    falsified = {n: np.array([r[n]["ci"][0] > r["Q_w"] for r in per_pair]) for n in names}
    lower_holds = np.array([r["composed"]["ci"][1] >= r["Q_w"] - r["C"] for r in per_pair])
    g = {n: np.array([r[n]["mean"] for r in per_pair]) for n in names}
    out: dict[str, Any] = {
        "method": "Monte Carlo soft returns G = r_0 + sum_{t>=1} gamma^t (r_t - Q(s_t,a_t) + V(s_t)) from (s, a) pairs on "
                  "the composed policy's own episodes (episode replayed to s, then a, then the policy), on r_w; "
                  "95% Student-t CIs over rollouts",
        "pairs": len(per_pair), "rollouts_per_pair": config.rollouts, "rollout_steps": steps, "tail_bound": tail_bound,
        "value_samples": config.value_samples, "confidence": 0.95,
        "upper_falsified_fraction": float(np.mean(np.concatenate([falsified[n] for n in names]))),
        **{f"upper_falsified_fraction_{n}": float(np.mean(falsified[n])) for n in names},
        **{f"upper_slack_mean_{n}": float(np.mean(q_w - g[n])) for n in names},
        "lower_holds_fraction": float(np.mean(lower_holds)),
        "lower_slack_mean": float(np.mean(g["composed"] - (q_w - c))),
        "Q_w_mean": float(q_w.mean()), "C_mean": float(c.mean()),
        **{f"soft_return_mean_{n}": float(g[n].mean()) for n in names},
        "per_pair": per_pair,
    }
    if "joint" in g:
        mean, se = mean_and_se(g["joint"] - g["composed"])
        half = t_critical_95(len(per_pair) - 1) * se
        out |= {"suboptimality_mean": mean, "suboptimality_ci": [mean - half, mean + half],
                "suboptimality_vs_C": "suboptimality_mean (G_joint - G_composed) against C_mean: the bound says the "
                                      "composed policy loses at most C"}
    out["goals"] = {"upper_falsified_fraction <= 0.05": out["upper_falsified_fraction"] <= 0.05,
                    "lower_holds_fraction >= 0.95": out["lower_holds_fraction"] >= 0.95}
    return out
