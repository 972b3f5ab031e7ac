"""Soft OR (van Niekerk, James, Earle, Rosman, ICML 2019): ``Q_OR = alpha log sum_i exp(Q_i/alpha)``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from skills.sql.many_skills import StackedQ

from .base import ComposedParts, Energy, NumpyOrTorch, Operator, stacked_of


def soft_or(q_all: torch.Tensor, alpha: float) -> torch.Tensor:
    """``Q_OR = alpha log sum_i exp(Q_i/alpha)`` (van Niekerk et al. 2019, Thm 2): [N, ...] -> [...].
    Of a skill with itself: ``Q + alpha log 2``."""
    return alpha * torch.logsumexp(q_all / alpha, dim=0)


class SoftOrQ(NumpyOrTorch):
    """``alpha log sum_i exp(Q_i/alpha)`` over a ``StackedQ``: obs [..., o], act [..., d] -> [...]."""

    def __init__(self, stacked: StackedQ, alpha: float):
        self.stacked, self.alpha = stacked, alpha

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return soft_or(self.stacked(obs, act), self.alpha)


@dataclass(frozen=True)
class SoftOr(Operator):
    """Exact for deterministic transitions and tasks that differ only at absorbing goals (undiscounted); it solves
    "reach any of the goals", not ``r_w``, so it takes no weights."""

    name = "or"
    summary = "alpha log sum_i exp(Q_i/alpha), soft-OR (van Niekerk et al. 2019); no weights"
    takes_weights = False

    def energy(self, composition: ComposedParts, modules: dict[str, nn.Module]) -> Energy:
        return SoftOrQ(stacked_of(composition), composition.alpha)
