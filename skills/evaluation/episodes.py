"""Seeded evaluation episodes: success, returns per reward term, collisions, lengths."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

from ..policy import SoftPolicy

EVAL_SEED = 10_000  # first seed of evaluation episodes (training uses 0.., convergence checks 100_000..)

Policy = Callable[[np.ndarray], np.ndarray]
"""``obs [obs_dim] -> action [act_dim]``."""


def episode_soft_returns(soft: SoftPolicy, trace: list[tuple], value_samples: int) -> dict:
    """Discounted soft returns of recorded episodes: ``trace`` rows (obs, action, step, reward); an
    episode starts at each step 0. Q and V of every visited state in one batched call."""
    obs = np.stack([row[0] for row in trace])
    act = np.stack([row[1] for row in trace])
    step = np.array([row[2] for row in trace])
    reward = np.array([row[3] for row in trace])
    q = np.asarray(soft.q(obs, act), np.float64)
    v = np.asarray(soft.value(obs, n_samples=value_samples), np.float64)
    terms = soft.gamma**step * (reward + v - q)
    episode = np.cumsum(step == 0) - 1
    g = np.bincount(episode, weights=terms)
    return {"soft_return_mean": float(g.mean()), "soft_return_std": float(g.std()),
            "entropy_term_mean": float(np.mean(v - q))}


def run_episodes(env: gym.Env, policy: Policy, episodes: int, seed: int = 0,
                 on_step: Callable[[gym.Env, dict], None] | None = None, soft: SoftPolicy | None = None,
                 value_samples: int = 256) -> dict:
    """Roll out ``policy`` for ``episodes`` episodes seeded ``seed, seed+1, ...``.

    Returns ``success_rate`` (final ``is_success``), ``return_mean``/``return_std``,
    ``term_returns`` (mean undiscounted return of each reward term), ``collision_rate``
    (share of episodes with any collision; arm tasks), ``episode_length``, ``episodes``, and for families
    that define measures (the pusher's puck-goal distances) ``final_measures``: their mean at the last step.
    With ``soft`` (the ``SoftPolicy`` whose samples ``policy`` draws) also ``soft_return_mean`` and
    ``soft_return_std``: the discounted soft return over the episode, ``sum_t gamma^t (r_t + alpha H_t)``
    with ``alpha H_t = -alpha log pi(a_t|s_t) = V(s_t) - Q(s_t, a_t)`` (Boltzmann policy of its Q).
    """
    returns, successes, collided, lengths = [], [], [], []
    final_measures: dict[str, list[float]] = {}
    term_returns: dict[str, list[float]] = {}
    trace: list[tuple[np.ndarray, np.ndarray, int, float]] = []  # (obs, action, step, reward)
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        total, length, hit = 0.0, 0, False
        terms: dict[str, float] = {}
        while True:
            action = policy(obs)
            previous = obs
            obs, reward, terminated, truncated, info = env.step(action)
            if soft is not None:
                trace.append((np.asarray(previous, np.float32), np.asarray(action, np.float32), length, float(reward)))
            total += float(reward)
            length += 1
            hit |= bool(info.get("collision", False))
            for k, v in info["reward_terms"].items():
                terms[k] = terms.get(k, 0.0) + v
            if on_step is not None:
                on_step(env, info)
            if terminated or truncated:
                break
        returns.append(total)
        successes.append(bool(info["is_success"]))
        collided.append(hit)
        lengths.append(length)
        for k, v in info.get("measures", {}).items():
            final_measures.setdefault(k, []).append(v)
        for k, v in terms.items():
            term_returns.setdefault(k, []).append(v)
    soft_stats = {} if soft is None else episode_soft_returns(soft, trace, value_samples)
    return soft_stats | {
        "episodes": episodes,
        "success_rate": float(np.mean(successes)),
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "term_returns": {k: float(np.mean(v)) for k, v in term_returns.items()},
        "collision_rate": float(np.mean(collided)),
        "episode_length": float(np.mean(lengths)),
        **({"final_measures": {k: float(np.mean(v)) for k, v in final_measures.items()}} if final_measures else {}),
    }
