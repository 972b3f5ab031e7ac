"""Seeded evaluation episodes: success, returns per reward term, soft returns, collisions, lengths.

``evaluate`` runs a ``SoftPolicy`` (a skill, a composition) on N seeded episodes in lockstep
(``skills.evaluation.lockstep``): one batched policy call per step, each episode with its own random stream.
``run_episodes`` steps any ``obs -> action`` function one episode at a time (a scripted controller, a baseline).
Both report the same metrics, from the same per-episode records (``summarise``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from ..policy import Actor, SoftPolicy
from .entropy import acting_entropy
from .lockstep import EnvPool, Episode, lockstep_episodes

EVAL_SEED = 10_000  # first seed of evaluation episodes (training uses 0.., convergence checks 100_000..)

Policy = Callable[[np.ndarray], np.ndarray]
"""``obs [obs_dim] -> action [act_dim]``."""


def episode_soft_returns(soft: SoftPolicy, episodes: Sequence[Episode], value_samples: int) -> dict:
    """Discounted soft returns ``sum_t gamma^t (r_t + alpha H_t)`` of recorded episodes (traced), ``H_t`` the entropy of
    the policy that acted: its sampler's actions at ``s_t`` (``skills.evaluation.entropy.acting_entropy``). Also the same
    return credited with ``V(s_t) - Q(s_t, a_t)`` of the policy's own Q (``soft_return_vq_mean``): right only for the
    exact Boltzmann policy of that Q, it overstates an amortized sampler's soft return by its accumulated
    ``alpha KL(sampler || pi)``, which the difference estimates. States are valued in the order (episode, step)."""
    obs = np.concatenate([np.stack(e.obs) for e in episodes])
    act = np.concatenate([np.stack(e.actions) for e in episodes])
    step = np.concatenate([np.arange(e.length) for e in episodes])
    reward = np.concatenate([np.asarray(e.rewards, np.float64) for e in episodes])
    q = np.asarray(soft.q(obs, act), np.float64)
    v = np.asarray(soft.value(obs, n_samples=value_samples), np.float64)
    entropy = soft.alpha * acting_entropy(soft, obs)
    owner = np.repeat(np.arange(len(episodes)), [e.length for e in episodes])
    g = np.bincount(owner, weights=soft.gamma**step * (reward + entropy))
    g_vq = np.bincount(owner, weights=soft.gamma**step * (reward + v - q))
    return {"soft_return_mean": float(g.mean()), "soft_return_std": float(g.std()),
            "entropy_term_mean": float(np.mean(entropy)), "soft_return_vq_mean": float(g_vq.mean()),
            "entropy_term_vq_mean": float(np.mean(v - q)), "soft_returns": g}


def summarise(episodes: Sequence[Episode]) -> dict:
    """The metrics of finished episodes: ``success_rate`` (final ``is_success``), ``return_mean``/``return_std``,
    ``term_returns`` (mean undiscounted return of each reward term), ``collision_rate`` (share of episodes with any
    collision) and ``collisions_checked`` (whether the task reports collisions at all: arm and manipulation tasks; a
    rate of 0 means nothing where it does not), ``episode_length``, ``episodes``, and for families that define
    measures (the pusher's puck-goal distances) ``final_measures``: their mean at the last step."""
    returns = [e.total for e in episodes]
    terms = list(dict.fromkeys(k for e in episodes for k in e.terms))
    measures = list(episodes[0].measures)
    return {
        "episodes": len(episodes),
        "success_rate": float(np.mean([e.success for e in episodes])),
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "term_returns": {k: float(np.mean([e.terms.get(k, 0.0) for e in episodes])) for k in terms},
        "collision_rate": float(np.mean([e.collided for e in episodes])),
        "collisions_checked": any(e.collision_checked for e in episodes),
        "episode_length": float(np.mean([e.length for e in episodes])),
        **({"final_measures": {k: float(np.mean([e.measures[k] for e in episodes])) for k in measures}}
           if measures else {}),
    }


def collision_text(metrics: Mapping[str, Any], fmt: str = ".2f") -> str:
    """An evaluation's collision rate as text, or a dash where the task reports no collisions (``collisions_checked``
    false: a rate of 0 would claim none happened). Metrics saved before the flag existed show their rate."""
    return format(metrics["collision_rate"], fmt) if metrics.get("collisions_checked", True) else "–"


def evaluate(policy: Actor | SoftPolicy, make_env: Callable[[], gym.Env] | EnvPool, episodes: int, seed: int = EVAL_SEED, *,
             deterministic: bool = False, soft: bool = True, value_samples: int = 256,
             width: int | None = None) -> dict:
    """``policy`` on ``episodes`` episodes seeded ``seed, seed+1, ...``, ``width`` stepped in lockstep (1: one at a
    time, the same episodes), each acting from its own stream. Returns ``summarise``'s metrics and, when the policy
    samples (not ``deterministic``) and ``soft``, ``soft_return_mean``/``soft_return_std``: the discounted soft return
    ``sum_t gamma^t (r_t + alpha H_t)`` with ``H_t`` the acting policy's own entropy (``episode_soft_returns``; the
    ``V - Q`` credit beside it as ``soft_return_vq_mean``)."""
    pool = make_env if isinstance(make_env, EnvPool) else EnvPool(make_env)
    try:
        done = lockstep_episodes(pool, policy, [seed + i for i in range(episodes)], deterministic, width=width,
                                 keep_trace=soft and not deterministic)
    finally:
        if pool is not make_env:
            pool.close()
    if soft and not deterministic:
        assert isinstance(policy, SoftPolicy), "soft returns need the policy's Q and V (a SoftPolicy)"
        stats = episode_soft_returns(policy, done, value_samples)
        stats.pop("soft_returns")
        return stats | summarise(done)
    return summarise(done)


def run_episodes(env: gym.Env, policy: Policy, episodes: int, seed: int = 0,
                 on_step: Callable[[gym.Env, dict], None] | None = None) -> dict:
    """Roll out any ``obs -> action`` function for ``episodes`` episodes seeded ``seed, seed+1, ...``, one at a time
    (``on_step(env, info)`` after every step, e.g. to film it); ``summarise``'s metrics."""
    done = []
    for i in range(episodes):
        episode = Episode(i, seed + i)
        obs, _ = env.reset(seed=seed + i)
        while True:
            action = policy(obs)
            next_obs, reward, terminated, truncated, info = env.step(action)
            episode.record(obs, action, reward, info, keep_trace=False)
            if on_step is not None:
                on_step(env, info)
            obs = next_obs
            if terminated or truncated:
                episode.finish(info, next_obs)
                break
        done.append(episode)
    return summarise(done)
