"""Seeded evaluation episodes: success, returns per reward term, collisions, lengths."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

Policy = Callable[[np.ndarray], np.ndarray]
"""``obs [obs_dim] -> action [act_dim]``."""


def run_episodes(env: gym.Env, policy: Policy, episodes: int, seed: int = 0,
                 on_step: Callable[[gym.Env, dict], None] | None = None) -> dict:
    """Roll out ``policy`` for ``episodes`` episodes seeded ``seed, seed+1, ...``.

    Returns ``success_rate`` (final ``is_success``), ``return_mean``/``return_std``,
    ``term_returns`` (mean undiscounted return of each reward term), ``collision_rate``
    (share of episodes with any collision; arm tasks), ``episode_length``, ``episodes``.
    """
    returns, successes, collided, lengths = [], [], [], []
    term_returns: dict[str, list[float]] = {}
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        total, length, hit = 0.0, 0, False
        terms: dict[str, float] = {}
        while True:
            obs, reward, terminated, truncated, info = env.step(policy(obs))
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
        for k, v in terms.items():
            term_returns.setdefault(k, []).append(v)
    return {
        "episodes": episodes,
        "success_rate": float(np.mean(successes)),
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "term_returns": {k: float(np.mean(v)) for k, v in term_returns.items()},
        "collision_rate": float(np.mean(collided)),
        "episode_length": float(np.mean(lengths)),
    }
