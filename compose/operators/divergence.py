"""Divergence correction (Hunt, Barreto, Lillicrap, Heess, ICML 2019, Thm 3.3): ``Q*_w = sum_i w_i Q_i - C_w``,
exact for ``r_w``, with ``C_w`` learned by TD from transitions alone (no reward)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from skills.sql import SoftQNetwork, kernel_width, mixture_log_density, mixture_proposal, seeded, soft_value_importance
from skills.sql.backprop import linear_layers
from skills.sql.many_skills import ComposedSoftQNetwork, StackedQ

from ..td import td_fit
from .base import ComposedParts, Energy, FittedOperator, NumpyOrTorch, OfflineData, average, tensors


def divergence_corrected(q_w: torch.Tensor, correction: torch.Tensor) -> torch.Tensor:
    """``Q*_w = Q_w - C_w`` (Hunt et al. 2019, Thm 3.3): [...], [...] -> [...]."""
    return q_w - correction


def dc_td_target(next_mixed_value: torch.Tensor, next_corrected_value: torch.Tensor, terminated: torch.Tensor,
                 gamma: float) -> torch.Tensor:
    """``C_w(s, a) = gamma (1 - done) (sum_i w_i V_i(s') - alpha log ∫ exp((Q_w - C_w)(s', a')/alpha) da')``: [B].

    This is Hunt et al.'s ``C_b = -alpha gamma E log ∫ prod_i pi_i^{w_i} exp(-C_b/alpha)`` with
    ``alpha log prod_i pi_i^{w_i} = Q_w - sum_i w_i V_i`` taken out of the integral; at ``C = 0`` it is
    ``gamma delta(s')``, the bound's gap."""
    return gamma * (1.0 - terminated) * (next_mixed_value - next_corrected_value)


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


class DivergenceCorrectedQ(NumpyOrTorch):
    """``sum_i w_i Q_i - C_w`` at the composition's weights."""

    def __init__(self, stacked: StackedQ, weights: torch.Tensor, correction: CorrectionNetwork):
        self.stacked, self.weights, self.correction = stacked, weights, correction

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return divergence_corrected(average(self.stacked(obs, act), self.weights), self.correction(obs, act, self.weights))


@torch.no_grad()
def minus_correction(correction: CorrectionNetwork, weights: torch.Tensor) -> SoftQNetwork:
    """``R(s, a) = -C_w(s, a)`` at fixed weights ``w`` [N] as a plain network on ``(s, a)``, so that
    ``Q_w - C_w = Q_w + R`` saves and adapts as a composed skill: the first layer's ``w`` columns folded into its
    bias (``b + W_w w``), the last layer negated. Equal to ``-C_w`` up to float rounding."""
    net = correction.net
    obs_dim = net.obs_scale.shape[0] - correction.n
    first, last = cast(nn.Linear, net.net[0]), cast(nn.Linear, net.net[-1])
    hidden = tuple(layer.out_features for layer in linear_layers(net.net)[:-1])
    residual = SoftQNetwork(obs_dim, first.in_features - obs_dim - correction.n, hidden, net.obs_scale[:obs_dim])
    for mine, theirs in list(zip(linear_layers(residual.net), linear_layers(net.net), strict=True))[1:]:
        mine.weight.copy_(theirs.weight)
        mine.bias.copy_(theirs.bias)
    folded = cast(nn.Linear, residual.net[0])
    w_obs, w_mix, w_act = first.weight.split([obs_dim, correction.n, folded.in_features - obs_dim], dim=1)
    folded.weight.copy_(torch.cat([w_obs, w_act], dim=1))
    folded.bias.copy_(first.bias + w_mix @ weights.float())
    out = cast(nn.Linear, residual.net[-1])
    out.weight.copy_(-last.weight)
    out.bias.copy_(-last.bias)
    return residual


@dataclass(frozen=True)
class DivergenceCorrection(FittedOperator):
    """``sum_i w_i Q_i - C_w``: exact for ``r_w`` in theory (up to the fit), whatever the skills disagree on."""

    name = "dc"
    summary = "Q_w - C_w, divergence correction learned offline (Hunt et al. 2019)"
    saves_as_residual = True
    residual_form = "R = -C_w"

    def modules(self, composition: ComposedParts) -> dict[str, nn.Module]:
        obs_scale = composition.parts[0].agent.q.obs_scale
        return {"dc": CorrectionNetwork(composition.obs_dim, composition.act_dim, len(composition.parts), self.hidden,
                                        obs_scale)}

    def fit(self, composition: ComposedParts, progress: bool = False) -> tuple[dict[str, nn.Module], dict]:
        data = OfflineData.of(composition, composition.transitions(), weights=composition.weights)
        net, info = fit_divergence_correction(data, self, progress)
        return {"dc": net}, info

    def energy(self, composition: ComposedParts, modules: dict[str, nn.Module]) -> Energy:
        correction = modules["dc"]
        assert isinstance(correction, CorrectionNetwork)
        return DivergenceCorrectedQ(composition.q_w.stacked, composition.q_w.weights, correction)

    def residual(self, energy: Energy) -> nn.Module | None:
        """``-C_w`` (``minus_correction``); a saved composition's energy is already ``Q_w + R``: its ``R``."""
        if isinstance(energy, ComposedSoftQNetwork):
            return energy.residual
        assert isinstance(energy, DivergenceCorrectedQ)
        return minus_correction(energy.correction, energy.weights)


def fit_divergence_correction(data: OfflineData, config: DivergenceCorrection,
                              progress: bool = False) -> tuple[CorrectionNetwork, dict]:
    """Learn ``C_w(s, a)`` by TD (``dc_td_target``) from ``data.transitions`` alone (no reward), for weights drawn
    uniformly from the simplex in half of each batch and ``data.weights`` in the other half.

    The integrals over ``a'`` are importance-sampled with common random numbers (the same actions for every
    ``V_i`` and for the corrected value) from a defensive mixture around the constituents' sampler actions."""
    generator = torch.Generator().manual_seed(config.seed)
    batch = tensors(data.transitions)
    stacked, n, act_dim = data.stacked, data.stacked.n, batch["action"].shape[1]
    with seeded(config.seed):
        net = CorrectionNetwork(batch["obs"].shape[1], act_dim, n, config.hidden, data.obs_scale)
    own = torch.as_tensor(data.weights, dtype=torch.float32)
    centres_each = max(1, 16 // n)

    def td_pair(idx, net, target):
        b = len(idx)
        w = torch.distributions.Dirichlet(torch.ones(n)).sample((b,)) if n > 1 else torch.ones(b, 1)
        w[: b // 2] = own
        with torch.no_grad():
            s1 = batch["next_obs"][idx]
            centres = torch.cat([s.sample(s1, centres_each, generator=generator) for s in data.samplers], dim=1)
            width = kernel_width(centres)
            a1 = mixture_proposal(centres, config.value_samples, width, 0.1, generator)
            log_q = mixture_log_density(a1, centres, width, 0.1)
            q_all = stacked(s1.unsqueeze(1), a1)  # [N, B, M]
            v_i = soft_value_importance(q_all, log_q, a1, data.alpha)  # [N, B]
            q_w = torch.einsum("bn,nbm->bm", w, q_all)
            v_corrected = soft_value_importance(q_w - target(s1.unsqueeze(1), a1, w.unsqueeze(1)), log_q, a1, data.alpha)
            y = dc_td_target((w.T * v_i).sum(0), v_corrected, batch["terminated"][idx], data.gamma)
        return net(batch["obs"][idx], batch["action"][idx], w), y

    with seeded(config.seed + 1):  # the Dirichlet draws
        info = td_fit(net, td_pair, len(batch["obs"]), updates=config.updates(data.gamma), config=config,
                      generator=generator, progress=progress, desc="divergence correction")
    with torch.no_grad():
        probe = torch.randperm(len(batch["obs"]), generator=generator)[:2048]
        c = net(batch["obs"][probe], batch["action"][probe], own)
    return net, info | {"C_mean_on_stored": float(c.mean()), "C_min_on_stored": float(c.min()),
                        "C_max_on_stored": float(c.max())}
