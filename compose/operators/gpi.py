"""Maximum-entropy GPI (Hunt et al. 2019, Thm 3.1): ``max_i Q^{pi_i}_w``, each constituent's policy evaluated on
``r_w`` offline by soft TD. It improves on every constituent; it is not exact for ``r_w`` in general."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from skills.sql import SoftQNetwork, seeded
from skills.sql.many_skills import StackedQ

from ..td import td_fit
from .base import ComposedParts, Energy, FittedOperator, NumpyOrTorch, OfflineData, tensors


def gpi(g_all: torch.Tensor) -> torch.Tensor:
    """``Q_GPI = max_i Q^{pi_i}_w`` (max-ent GPI, Hunt et al. 2019, Thm 3.1): [N, ...] -> [...]."""
    return g_all.max(dim=0).values


def soft_evaluation_td_target(reward: torch.Tensor, terminated: torch.Tensor, next_g: torch.Tensor,
                              next_q: torch.Tensor, next_v: torch.Tensor, gamma: float) -> torch.Tensor:
    """``Q^{pi_i}_w(s,a) = r_w + gamma (1 - done) E_{a' ~ pi_i}[Q^{pi_i}_w(s',a') - alpha log pi_i(a'|s')]`` with
    ``-alpha log pi_i = V_i - Q_i`` (``pi_i`` is the Boltzmann policy of ``Q_i``): reward, terminated [B],
    next_g, next_q [B, K] at ``a' ~ pi_i``, next_v [B] -> [B]."""
    return reward + gamma * (1.0 - terminated) * ((next_g - next_q).mean(-1) + next_v)


class GPIQ(NumpyOrTorch):
    """``max_i Q^{pi_i}_w`` over the constituents' evaluations on ``r_w`` (a ``StackedQ`` of them)."""

    def __init__(self, evaluations: StackedQ):
        self.evaluations = evaluations

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return gpi(self.evaluations(obs, act))


@dataclass(frozen=True)
class GPI(FittedOperator):
    """``max_i Q^{pi_i}_w``: improves on every constituent (Barreto et al. 2017; Hunt et al. 2019)."""

    name = "gpi"
    summary = "max_i Q^{pi_i}_w, each constituent evaluated on r_w offline (max-ent GPI, Hunt et al. 2019)"
    next_actions: int = 8  # sampler actions per next state for E_{a' ~ pi_i}

    def settings(self) -> dict:
        return super().settings() | {"next_actions": self.next_actions}

    def modules(self, composition: ComposedParts) -> dict[str, nn.Module]:
        widths = [composition.obs_dim + composition.act_dim, *self.hidden, 1]
        shapes = list(zip(widths[:-1], widths[1:], strict=True))
        return {"gpi": StackedQ.empty(len(composition.parts), shapes, composition.obs_dim)}

    def fit(self, composition: ComposedParts, progress: bool = False) -> tuple[dict[str, nn.Module], dict]:
        transitions = composition.relabelled_transitions()
        generator = torch.Generator().manual_seed(self.seed)  # V_i drawn the same whatever ran before
        values = [np.asarray(p.value(transitions["next_obs"], 4 * self.value_samples, generator=generator))
                  for p in composition.parts]
        stacked, info = fit_policy_evaluations(OfflineData.of(composition, transitions, values=values), self, progress)
        return {"gpi": stacked}, info

    def energy(self, composition: ComposedParts, modules: dict[str, nn.Module]) -> Energy:
        evaluations = modules["gpi"]
        assert isinstance(evaluations, StackedQ)
        return GPIQ(evaluations)


def fit_policy_evaluations(data: OfflineData, config: GPI, progress: bool = False) -> tuple[StackedQ, dict]:
    """``Q^{pi_i}_w`` for every constituent ``i`` by soft TD (``soft_evaluation_td_target``) on ``data.transitions``,
    whose ``reward`` is ``r_w``; ``data.values[i]``: ``V_i`` at every stored next state. Returns them stacked."""
    generator = torch.Generator().manual_seed(config.seed)
    batch = tensors(data.transitions)
    obs_dim, act_dim = batch["obs"].shape[1], batch["action"].shape[1]
    assert data.values is not None, "fit_policy_evaluations needs V_i at the stored next states (OfflineData.values)"
    networks, info = [], {}
    for i, sampler in enumerate(data.samplers):
        next_v = torch.as_tensor(np.asarray(data.values[i]), dtype=torch.float32)
        with seeded(config.seed + i):
            net = SoftQNetwork(obs_dim, act_dim, config.hidden, data.obs_scale)

        def td_pair(idx, net, target, i=i, sampler=sampler, next_v=next_v):
            with torch.no_grad():
                s1 = batch["next_obs"][idx]
                a1 = sampler.sample(s1, config.next_actions, generator=generator)  # [B, K, d]
                next_g = target(s1.unsqueeze(1), a1)
                next_q = data.stacked(s1.unsqueeze(1), a1)[i]
                y = soft_evaluation_td_target(batch["reward"][idx], batch["terminated"][idx], next_g, next_q,
                                              next_v[idx], data.gamma)
            return net(batch["obs"][idx], batch["action"][idx]), y

        info[str(i)] = td_fit(net, td_pair, len(batch["obs"]), updates=config.updates(data.gamma), config=config,
                              generator=generator, progress=progress, desc=f"evaluating constituent {i + 1} on r_w")
        networks.append(net)
    return StackedQ(networks), info
