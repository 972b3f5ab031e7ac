"""Monte Carlo soft returns of the policy that acts, scored with that policy's own entropy.

A rollout's soft return on ``r_w`` from a pair ``(s, a)`` is ``G = r_0 + sum_{t>=1} gamma^t (r_t + alpha H_t)``, where
``alpha H_t = -alpha log pi(a_t | s_t)`` belongs to the policy ``pi`` that chose ``a_t``. Crediting the entropy with a
learned ``V - Q`` instead is right only for the Boltzmann policy of that ``Q``: for any other actor the estimate
telescopes to ``Q(s_0, a_0)`` minus the accumulated gaps, whatever the actions (a uniformly random actor then "earns"
``Q_w``). So each actor here brings its own entropy:

* ``uniform_actor``: uniform on ``[-1, 1]^d``, ``alpha H = alpha d log 2``, exact;
* ``sampler_actor``: an amortized sampler (a skill's, the composition's) ``a = tanh(f(s, xi))``: ``H`` of its actions at
  each visited state from ``samples`` draws by the change of variables, ``-log sigma(a|s) = -log N(xi) + log|det
  df/dxi| + sum log(1 - a^2)`` (``skills.sql.sampler_log_density``), exact where ``f(s, .)`` is one-to-one; where it
  folds (the Jacobian's sign changes among the draws), and for a sampler without a network, by the Kozachenko-Leonenko
  nearest-neighbour estimator (``knn_entropy``), which reads low on a smooth density (-0.07 to -0.09 nats at 64 draws
  on the exact ``pi_w`` of ``reach+avoid``, ``bench/sampler_entropy.py``) and high at a fold (+0.36 to +0.44 on the
  Fetch ``place`` samplers, ``bench/fold_entropy.py``);
* ``boltzmann_actor``: the exact ``pi_w ∝ exp(Q_w/alpha)`` by importance resampling, whose ``-alpha log pi_w(a|s)`` is
  ``V_w(s) - Q_w(s, a)`` (given an accurate ``V_w``).

The expected ``-log pi(a_t|s_t)`` over the actor's own draw is ``H(pi(.|s_t))``, so a state's entropy estimate
stands in for the single-sample one (less variance, the same mean).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from skills.evaluation.diagnostics import Rollouts, Start, mean_and_se, run_rollouts
from skills.evaluation.entropy import acting_entropy, particle_policy, sampler_network
from skills.evaluation.lockstep import EnvPool
from skills.policy import Actor, UniformPolicy
from skills.sql.equations import row_noise, row_uniform

Credit = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``credit(obs [N, o], act [N, d]) -> alpha * (-log pi(a|s))`` estimates [N]."""


@dataclass
class ActingPolicy:
    """A policy that acts in the Monte Carlo check, and how its entropy is known."""

    name: str
    policy: Actor  # act(obs, deterministic, generators)
    credit: Credit  # alpha * (-log pi(a|s)) for its own actions
    entropy: str  # how: exact, nearest-neighbour estimate, Boltzmann identity


def uniform_actor(act_dim: int, alpha: float) -> ActingPolicy:
    """The uniformly random actor; ``alpha H = alpha d log 2`` exactly."""
    return ActingPolicy("random", UniformPolicy(act_dim), lambda o, a: np.full(len(o), alpha * act_dim * math.log(2.0)),
                        f"exact: alpha d log 2 = {alpha * act_dim * math.log(2.0):.4g} per step")


def sampler_actor(name: str, policy, alpha: float, samples: int = 64, k: int = 1, seed: int = 0) -> ActingPolicy:
    """An amortized sampler (anything with ``act`` and ``sample(obs, n)``), its entropy at each visited state from
    ``samples`` draws there (``skills.evaluation.entropy.acting_entropy``)."""
    how = (f"nearest-neighbour estimate (Kozachenko-Leonenko, k={k}, in pre-tanh space) on {samples} sampler draws per "
           "visited state")
    if particle_policy(policy) is not None:
        how = ("(V_w(s) - mean Q_w(s, a)) / alpha over one decision's particles per visited state: the Boltzmann "
               "entropy of pi_w, which per-decision particles target (their draws have no density); it reads high by "
               "their KL to pi_w")
    elif sampler_network(policy) is not None:
        how = (f"change of variables through the sampler network on {samples} draws per visited state (exact where "
               f"noise -> action is one-to-one); where it folds, the {how}")
    return ActingPolicy(name, policy, lambda o, a: alpha * acting_entropy(policy, o, samples, k, seed), how)


def reflect(a: torch.Tensor) -> torch.Tensor:
    """Fold values back into ``[-1, 1]`` by reflection at the walls (a symmetric map, so a random-walk proposal
    through it stays symmetric)."""
    y = torch.remainder(a + 1.0, 4.0)
    return torch.where(y > 2.0, 4.0 - y, y) - 1.0


class BoltzmannPolicy:
    """``pi(a|s) ∝ exp(Q(s,a)/alpha)`` on the box, sampled by Metropolis-Hastings: a random walk (reflected at the
    walls, step sizes cycling through ``scales``) started from a draw of ``start`` (the amortized sampler, which only
    has to start the chain near the mass). ``steps`` accept/reject rounds per action; row ``b`` draws from its own
    stream. Its density is known up to ``V``: ``-alpha log pi(a|s) = V(s) - Q(s, a)``."""

    def __init__(self, energy, alpha: float, start: Actor, steps: int = 100, scales: Sequence[float] = (0.02, 0.1, 0.3)):
        self.energy, self.alpha, self.start, self.steps, self.scales = energy, alpha, start, steps, tuple(scales)

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False,
            generators: Sequence[torch.Generator] | None = None) -> np.ndarray:
        o = torch.as_tensor(np.atleast_2d(obs), dtype=torch.float32)
        a = torch.as_tensor(np.asarray(self.start.act(o.numpy(), False, generators)), dtype=torch.float32)
        d = a.shape[-1]
        if generators is None:
            noise, uniform = torch.randn(len(o), self.steps, d), torch.rand(len(o), self.steps)
        else:
            noise, uniform = row_noise(generators, (self.steps, d)), row_uniform(generators, (self.steps,))
        q = self.energy(o, a)
        for t in range(self.steps):
            proposal = reflect(a + self.scales[t % len(self.scales)] * noise[:, t])
            q_new = self.energy(o, proposal)
            accept = torch.log(uniform[:, t].clamp_min(1e-30)) < (q_new - q) / self.alpha
            a = torch.where(accept[:, None], proposal, a)
            q = torch.where(accept, q_new, q)
        return a.numpy()


def boltzmann_actor(energy, value: Callable[[np.ndarray], np.ndarray], alpha: float, start: Actor,
                    steps: int = 100) -> ActingPolicy:
    """The exact Boltzmann policy of ``energy`` (Metropolis-Hastings from ``start``), credited ``V(s) - Q(s, a)``."""
    def credit(obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            q = np.asarray(energy(obs.astype(np.float32), act.astype(np.float32)), np.float64)
        return np.asarray(value(obs), np.float64) - q

    return ActingPolicy("composed (exact pi_w)", BoltzmannPolicy(energy, alpha, start, steps), credit,
                        f"V_w - Q_w (the Boltzmann policy of Q_w by {steps} Metropolis-Hastings steps per action, "
                        "started from the composed sampler)")


def soft_returns(actor: ActingPolicy, rollouts: Rollouts, gamma: float) -> np.ndarray:
    """``G = r_0 + sum_{t>=1} gamma^t (r_t + credit_t)`` per rollout (the first action was given, not the actor's):
    [n]."""
    n, steps = rollouts.reward.shape
    credit = np.zeros((n, steps))
    live = rollouts.alive > 0
    live[:, 0] = False
    if live.any():
        credit[live] = actor.credit(rollouts.obs[live], rollouts.action[live])
    discount = gamma ** np.arange(steps)
    return np.sum(discount * rollouts.alive * (rollouts.reward + credit), axis=1)


def actor_returns(actor: ActingPolicy, envs: EnvPool | Callable[[], gym.Env], starts: Sequence[Start], per_start: int,
                  steps: int, gamma: float, key: int) -> tuple[np.ndarray, Rollouts]:
    """``per_start`` rollouts of ``actor`` from each start (all in lockstep): soft returns [S, per_start] and the
    rollouts. ``envs``: a pool to take the envs from (a run's own, reused), or a maker for a pool of this call's."""
    with nullcontext(envs) if isinstance(envs, EnvPool) else EnvPool(envs) as pool:
        rollouts = run_rollouts(pool, actor.policy, starts, per_start, steps, key=key)
    return soft_returns(actor, rollouts, gamma).reshape(len(starts), per_start), rollouts


def intervals(g: np.ndarray, t_critical: Callable[[int], float]) -> list[dict]:
    """Per pair: mean, standard error and the two-sided 95% Student-t interval over its rollouts. g [S, n]."""
    out = []
    for row in g:
        mean, se = mean_and_se(row)
        half = t_critical(len(row) - 1) * se
        out.append({"mean": mean, "se": se, "ci": [mean - half, mean + half]})
    return out
