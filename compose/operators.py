"""Composition operators: how N soft Q-functions become one energy ``Q_op`` and one policy ``pi ∝ exp(Q_op/alpha)``.

Every operator uses zero environment samples; the learned ones (``dc``, ``gpi``) fit networks offline
on the constituents' stored transitions. ``Q_i``, ``V_i`` and ``pi_i`` are constituent ``i``'s soft
Q-function, soft value and Boltzmann policy ``exp((Q_i - V_i)/alpha)``; ``w`` the weights (sum 1).

=========  ===================================================  =================================================
operator   ``Q_op(s, a)``                                       exact for ``r_w = sum_i w_i r_i`` when
=========  ===================================================  =================================================
average    ``sum_i w_i Q_i`` (Haarnoja et al. 2018)             the policies agree; else within the bound ``C``
dc         ``sum_i w_i Q_i - C_w``, ``C_w`` by TD (Hunt et      always (up to the fit): ``C_w`` is the divergence
           al. 2019, Thm 3.3), no reward needed                 of the constituents' policies, propagated
gpi        ``max_i Q^{pi_i}_w``, each ``pi_i`` evaluated on     never in general; improves on every ``pi_i``
           ``r_w`` by soft TD (Hunt et al. 2019, Thm 3.1)       (Barreto et al. 2017; Hunt et al. 2019)
or         ``alpha log sum_i exp(Q_i/alpha)`` (van Niekerk      deterministic transitions, tasks that differ only
           et al. 2019); takes no weights                       at absorbing goals, undiscounted; it solves the
                                                                task "reach any goal", not ``r_w``
priority   the lowest-priority skill's ``Q`` on the higher      a lexicographic task, not ``r_w``: each skill
           ones' indifference sets ``Q_k >= max Q_k - eps``     acts only where those above it are (nearly)
           (after PSQD, Rietz et al. 2024, zero-shot)           indifferent
=========  ===================================================  =================================================

The equations are one small function each below; the ``*Q`` classes are the energies the composed
sampler is trained on (``compose.sampling``), the fits build the learned parts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn

from skills.sql import SoftQNetwork, kernel_width, mixture_log_density, mixture_proposal, soft_value_importance
from skills.sql.many_skills import StackedQ

from .td import td_fit

OPERATORS: dict[str, str] = {
    "average": "Q_w = sum_i w_i Q_i (Haarnoja et al. 2018)",
    "dc": "Q_w - C_w, divergence correction learned offline (Hunt et al. 2019)",
    "gpi": "max_i Q^{pi_i}_w, each constituent evaluated on r_w offline (max-ent GPI, Hunt et al. 2019)",
    "or": "alpha log sum_i exp(Q_i/alpha), soft-OR (van Niekerk et al. 2019); no weights",
    "priority": "lowest-priority Q within the higher ones' eps-indifference sets (after PSQD); no weights, an order",
}
WEIGHTED = frozenset({"average", "dc", "gpi"})  # operators whose weights define the task r_w


class OperatorError(ValueError):
    """An operator that does not exist or does not apply: unknown name, weights it does not take, no order."""


@dataclass(frozen=True)
class OperatorConfig:
    """Which operator, its parameters, and how its learned parts (``dc``, ``gpi``) are fitted."""

    name: str = "average"
    order: tuple[str, ...] | None = None  # priority: the skills' labels, highest priority first
    epsilon: float = 0.6  # priority: indifference margin, in Q units (docs/compose.md, "Choosing an operator")
    slope: float = 20.0  # priority: energy lost per Q unit outside an indifference set (a steep wall)
    max_candidates: int = 32  # priority: sampler actions whose best estimates max_a Q_k(s, a)
    tolerance: float = 1e-2  # dc, gpi: gamma^backups, what is left of the TD fit's initial error
    target_update_interval: int = 25  # dc, gpi: updates per backup (hard target copy)
    batch_size: int = 256  # dc, gpi: transitions per update
    value_samples: int = 64  # dc, gpi: importance samples per next state for soft values (a mixture around
    # sampler actions; gpi asks each constituent's V_i at every stored next state once, with 4x as many)
    next_actions: int = 8  # gpi: sampler actions per next state for E_{a' ~ pi_i}
    lr: float = 1e-3  # dc, gpi: Adam learning rate
    hidden: tuple[int, ...] = (128, 128)  # dc, gpi: network widths
    seed: int = 0  # dc, gpi: initialisation and draws

    def backups(self, gamma: float) -> int:
        """Target copies for ``gamma^k <= tolerance``."""
        return max(1, math.ceil(math.log(self.tolerance) / math.log(gamma)))

    def updates(self, gamma: float) -> int:
        return self.backups(gamma) * self.target_update_interval

    def settings(self) -> dict:
        """What the built networks depend on (the cache key): only the chosen operator's parameters."""
        if self.name == "average":
            return {"name": "average"}
        if self.name == "or":
            return {"name": "or"}
        if self.name == "priority":
            return {"name": "priority", "order": list(self.order or ()), "epsilon": self.epsilon, "slope": self.slope,
                    "max_candidates": self.max_candidates}
        fit = asdict(self) | {"hidden": list(self.hidden)}
        keep = ("tolerance", "target_update_interval", "batch_size", "lr", "hidden", "seed", "value_samples",
                *(("next_actions",) if self.name == "gpi" else ()))
        return {"name": self.name} | {k: fit[k] for k in keep}


def operator_config(operator: str | OperatorConfig | None, labels: Sequence[str], weighted: bool,
                    order: Sequence[str] | None = None, epsilon: float | None = None) -> OperatorConfig:
    """Check that ``operator`` applies to skills ``labels`` (``weighted``: the user gave weights) and return its
    config. Clear errors: unknown names (listing the valid ones), weights for operators that take none, a
    priority without a complete order, an order for other operators."""
    config = operator if isinstance(operator, OperatorConfig) else OperatorConfig(name=operator or "average")
    if order is not None:
        config = replace(config, order=tuple(order))
    if epsilon is not None:
        config = replace(config, epsilon=float(epsilon))
    if config.name not in OPERATORS:
        raise OperatorError(f"unknown operator {config.name!r}; valid operators: {', '.join(OPERATORS)}")
    if weighted and config.name not in WEIGHTED:
        raise OperatorError(f"operator {config.name!r} takes no weights (weights define r_w for "
                            f"{', '.join(sorted(WEIGHTED))} only); drop --weights")
    if config.name == "priority":
        if not config.order:
            raise OperatorError(f"operator 'priority' needs an order, highest priority first, e.g. "
                                f"order={list(reversed(list(labels)))} (--order {','.join(reversed(list(labels)))})")
        if sorted(config.order) != sorted(labels):
            raise OperatorError(f"priority order {list(config.order)} must list each composed skill once: {list(labels)}")
        if not (config.epsilon >= 0 and math.isfinite(config.epsilon)):
            raise OperatorError(f"priority epsilon must be finite and >= 0, got {config.epsilon}")
    elif config.order is not None:
        raise OperatorError(f"an order applies to operator 'priority' only, not {config.name!r}")
    return config


# ---- the operators' equations -----------------------------------------------------------------------------
def average(q_all: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``Q_w = sum_i w_i Q_i`` (Haarnoja et al. 2018, Eq. 2): q_all [N, ...], weights [N] -> [...]."""
    return torch.tensordot(weights, q_all, dims=1)


def soft_or(q_all: torch.Tensor, alpha: float) -> torch.Tensor:
    """``Q_OR = alpha log sum_i exp(Q_i/alpha)`` (van Niekerk et al. 2019, Thm 2): [N, ...] -> [...].
    Of a skill with itself: ``Q + alpha log 2``."""
    return alpha * torch.logsumexp(q_all / alpha, dim=0)


def gpi(g_all: torch.Tensor) -> torch.Tensor:
    """``Q_GPI = max_i Q^{pi_i}_w`` (max-ent GPI, Hunt et al. 2019, Thm 3.1): [N, ...] -> [...]."""
    return g_all.max(dim=0).values


def divergence_corrected(q_w: torch.Tensor, correction: torch.Tensor) -> torch.Tensor:
    """``Q*_w = Q_w - C_w`` (Hunt et al. 2019, Thm 3.3): [...], [...] -> [...]."""
    return q_w - correction


def priority_energy(q_last: torch.Tensor, q_higher: torch.Tensor, max_higher: torch.Tensor, epsilon: float,
                    slope: float) -> torch.Tensor:
    """``Q_last - slope sum_k relu(max_a Q_k - eps - Q_k)``: the lowest-priority skill's Q, with a steep wall
    outside each higher skill's indifference set ``{a : Q_k(s, a) >= max_a' Q_k(s, a') - eps}``.
    q_last [...], q_higher [K, ...], max_higher [K, ...] -> [...]."""
    return q_last - slope * torch.relu(max_higher - epsilon - q_higher).sum(dim=0)


def dc_td_target(next_mixed_value: torch.Tensor, next_corrected_value: torch.Tensor, terminated: torch.Tensor,
                 gamma: float) -> torch.Tensor:
    """``C_w(s, a) = gamma (1 - done) (sum_i w_i V_i(s') - alpha log ∫ exp((Q_w - C_w)(s', a')/alpha) da')``: [B].

    This is Hunt et al.'s ``C_b = -alpha gamma E log ∫ prod_i pi_i^{w_i} exp(-C_b/alpha)`` with
    ``alpha log prod_i pi_i^{w_i} = Q_w - sum_i w_i V_i`` taken out of the integral; at ``C = 0`` it is
    ``gamma delta(s')``, the bound's gap."""
    return gamma * (1.0 - terminated) * (next_mixed_value - next_corrected_value)


def soft_evaluation_td_target(reward: torch.Tensor, terminated: torch.Tensor, next_g: torch.Tensor,
                              next_q: torch.Tensor, next_v: torch.Tensor, gamma: float) -> torch.Tensor:
    """``Q^{pi_i}_w(s,a) = r_w + gamma (1 - done) E_{a' ~ pi_i}[Q^{pi_i}_w(s',a') - alpha log pi_i(a'|s')]`` with
    ``-alpha log pi_i = V_i - Q_i`` (``pi_i`` is the Boltzmann policy of ``Q_i``): reward, terminated [B],
    next_g, next_q [B, K] at ``a' ~ pi_i``, next_v [B] -> [B]."""
    return reward + gamma * (1.0 - terminated) * ((next_g - next_q).mean(-1) + next_v)


# ---- the energies the composed sampler is trained on ------------------------------------------------------
def flat_states(obs: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """obs [..., o] -> ([M, o], its leading shape)."""
    return obs.reshape(-1, obs.shape[-1]), tuple(obs.shape[:-1])


class Energy:
    """An operator's ``Q_op``: obs [..., o], act [..., d] -> [...]. Tensors in, tensors out (with autograd, for
    SVGD); numpy in, numpy out (as ``ComposedQ``)."""

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, obs, act):
        if isinstance(obs, torch.Tensor) and isinstance(act, torch.Tensor):
            return self.forward(obs, act)
        with torch.no_grad():
            return self.forward(torch.as_tensor(np.asarray(obs, np.float32)),
                                torch.as_tensor(np.asarray(act, np.float32))).numpy()


class SoftOrQ(Energy):
    """``alpha log sum_i exp(Q_i/alpha)`` over a ``StackedQ``: obs [..., o], act [..., d] -> [...]."""

    def __init__(self, stacked: StackedQ, alpha: float):
        self.stacked, self.alpha = stacked, alpha

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return soft_or(self.stacked(obs, act), self.alpha)


class GPIQ(Energy):
    """``max_i Q^{pi_i}_w`` over the constituents' evaluations on ``r_w`` (a ``StackedQ`` of them)."""

    def __init__(self, evaluations: StackedQ):
        self.evaluations = evaluations

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return gpi(self.evaluations(obs, act))


class CorrectionNetwork(nn.Module):
    """``C_w(s, a)``, conditioned on the weights ``w`` so that one network serves every weighting:
    an MLP on ``(s, w, a)``. obs [..., o], act [..., d], weights [..., N] or [N] -> [...]."""

    def __init__(self, obs_dim: int, act_dim: int, n: int, hidden: tuple[int, ...], obs_scale: torch.Tensor):
        super().__init__()
        self.n = n
        self.net = SoftQNetwork(obs_dim + n, act_dim, hidden, torch.cat([obs_scale.float(), torch.ones(n)]))

    def forward(self, obs: torch.Tensor, act: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        weights = weights.expand(*obs.shape[:-1], self.n)
        return self.net(torch.cat([obs, weights], dim=-1), act)


class DivergenceCorrectedQ(Energy):
    """``sum_i w_i Q_i - C_w`` at the composition's weights."""

    def __init__(self, stacked: StackedQ, weights: torch.Tensor, correction: CorrectionNetwork):
        self.stacked, self.weights, self.correction = stacked, weights, correction

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return divergence_corrected(average(self.stacked(obs, act), self.weights), self.correction(obs, act, self.weights))


class PriorityQ(Energy):
    """The lowest-priority skill's ``Q`` on the higher ones' indifference sets (``priority_energy``).

    ``max_a Q_k(s, a)`` is estimated per state as the best of ``max_candidates`` actions from skill ``k``'s own
    sampler (no gradient; drawn from this energy's generator)."""

    def __init__(self, stacked: StackedQ, samplers: Sequence[nn.Module], rank: Sequence[int], config: OperatorConfig):
        """``rank``: the constituents' indices, highest priority first."""
        self.stacked, self.samplers, self.rank, self.config = stacked, list(samplers), list(rank), config
        self.generator = torch.Generator().manual_seed(config.seed)

    @torch.no_grad()
    def best_values(self, obs: torch.Tensor) -> torch.Tensor:
        """``max_a Q_k(s, a)`` for every higher-priority ``k``: obs [..., o] -> [K, ...]."""
        states, shape = flat_states(obs)
        out = []
        for k in self.rank[:-1]:
            candidates = self.samplers[k].sample(states, self.config.max_candidates, generator=self.generator)
            out.append(self.stacked(states.unsqueeze(1), candidates)[k].max(dim=-1).values)
        return torch.stack(out).reshape(len(out), *shape)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        q_all = self.stacked(obs, act)  # [N, ...]
        higher = q_all[self.rank[:-1]]
        best = self.best_values(obs)
        best = best.reshape(best.shape[0], *best.shape[1:], *([1] * (higher.dim() - best.dim())))
        return priority_energy(q_all[self.rank[-1]], higher, best, self.config.epsilon, self.config.slope)


# ---- fitting the learned parts offline (TD on stored transitions, no environment samples) ---------------
def tensors(data: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in data.items()}


def fit_divergence_correction(*, stacked: StackedQ, samplers: Sequence[nn.Module], transitions: dict[str, np.ndarray],
                              weights: np.ndarray, alpha: float, gamma: float, obs_scale: torch.Tensor,
                              config: OperatorConfig, progress: bool = False) -> tuple[CorrectionNetwork, dict]:
    """Learn ``C_w(s, a)`` by TD (``dc_td_target``) from transitions alone (no reward), for weights drawn
    uniformly from the simplex in half of each batch and the composition's ``weights`` in the other half.

    The integrals over ``a'`` are importance-sampled with common random numbers (the same actions for every
    ``V_i`` and for the corrected value) from a defensive mixture around the constituents' sampler actions."""
    generator = torch.Generator().manual_seed(config.seed)
    data = tensors(transitions)
    n, act_dim = stacked.n, data["action"].shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = CorrectionNetwork(data["obs"].shape[1], act_dim, n, config.hidden, obs_scale)
    own = torch.as_tensor(weights, dtype=torch.float32)
    centres_each = max(1, 16 // n)

    def td_pair(idx, net, target):
        b = len(idx)
        w = torch.distributions.Dirichlet(torch.ones(n)).sample((b,)) if n > 1 else torch.ones(b, 1)
        w[: b // 2] = own
        with torch.no_grad():
            s1 = data["next_obs"][idx]
            centres = torch.cat([s.sample(s1, centres_each, generator=generator) for s in samplers], dim=1)
            width = kernel_width(centres)
            a1 = mixture_proposal(centres, config.value_samples, width, 0.1, generator)
            log_q = mixture_log_density(a1, centres, width, 0.1)
            q_all = stacked(s1.unsqueeze(1), a1)  # [N, B, M]
            v_i = soft_value_importance(q_all, log_q, a1, alpha)  # [N, B]
            q_w = torch.einsum("bn,nbm->bm", w, q_all)
            v_corrected = soft_value_importance(q_w - target(s1.unsqueeze(1), a1, w.unsqueeze(1)), log_q, a1, alpha)
            y = dc_td_target((w.T * v_i).sum(0), v_corrected, data["terminated"][idx], gamma)
        return net(data["obs"][idx], data["action"][idx], w), y

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + 1)  # the Dirichlet draws
        info = td_fit(net, td_pair, len(data["obs"]), updates=config.updates(gamma), config=config,
                      generator=generator, progress=progress, desc="divergence correction")
    with torch.no_grad():
        probe = torch.randperm(len(data["obs"]), generator=generator)[:2048]
        c = net(data["obs"][probe], data["action"][probe], own)
    return net, info | {"C_mean_on_stored": float(c.mean()), "C_min_on_stored": float(c.min()),
                        "C_max_on_stored": float(c.max())}


def fit_policy_evaluations(*, stacked: StackedQ, samplers: Sequence[nn.Module], values: Sequence[np.ndarray],
                           transitions: dict[str, np.ndarray], gamma: float, obs_scale: torch.Tensor,
                           config: OperatorConfig, progress: bool = False) -> tuple[StackedQ, dict]:
    """``Q^{pi_i}_w`` for every constituent ``i`` by soft TD (``soft_evaluation_td_target``) on transitions whose
    ``reward`` is ``r_w``; ``values[i]``: ``V_i`` at every stored next state. Returns them stacked."""
    generator = torch.Generator().manual_seed(config.seed)
    data = tensors(transitions)
    obs_dim, act_dim = data["obs"].shape[1], data["action"].shape[1]
    networks, info = [], {}
    for i, sampler in enumerate(samplers):
        next_v = torch.as_tensor(np.asarray(values[i]), dtype=torch.float32)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed + i)
            net = SoftQNetwork(obs_dim, act_dim, config.hidden, obs_scale)

        def td_pair(idx, net, target, i=i, sampler=sampler, next_v=next_v):
            with torch.no_grad():
                s1 = data["next_obs"][idx]
                a1 = sampler.sample(s1, config.next_actions, generator=generator)  # [B, K, d]
                next_g = target(s1.unsqueeze(1), a1)
                next_q = stacked(s1.unsqueeze(1), a1)[i]
                y = soft_evaluation_td_target(data["reward"][idx], data["terminated"][idx], next_g, next_q,
                                              next_v[idx], gamma)
            return net(data["obs"][idx], data["action"][idx]), y

        info[str(i)] = td_fit(net, td_pair, len(data["obs"]), updates=config.updates(gamma), config=config,
                              generator=generator, progress=progress, desc=f"evaluating constituent {i + 1} on r_w")
        networks.append(net)
    return StackedQ(networks), info
