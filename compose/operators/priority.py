"""Priority (after PSQD, Rietz et al. 2024, zero-shot): the lowest-priority skill's ``Q`` on the higher ones'
indifference sets ``{a : Q_k(s, a) >= max_a' Q_k(s, a') - eps}``. A lexicographic task, not ``r_w``: each skill acts
only where those above it are (nearly) indifferent."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from skills.sql import SamplerNetwork
from skills.sql.many_skills import StackedQ

from .base import ComposedParts, Energy, NumpyOrTorch, Operator, OperatorError, flat_states, stacked_of


def priority_energy(q_last: torch.Tensor, q_higher: torch.Tensor, max_higher: torch.Tensor, epsilon: float,
                    slope: float) -> torch.Tensor:
    """``Q_last - slope sum_k relu(max_a Q_k - eps - Q_k)``: the lowest-priority skill's Q, with a steep wall
    outside each higher skill's indifference set ``{a : Q_k(s, a) >= max_a' Q_k(s, a') - eps}``.
    q_last [...], q_higher [K, ...], max_higher [K, ...] -> [...]."""
    return q_last - slope * torch.relu(max_higher - epsilon - q_higher).sum(dim=0)


@dataclass(frozen=True)
class Priority(Operator):
    """Skills in ``order``, highest priority first; ``epsilon`` is in the higher skills' Q units."""

    name = "priority"
    summary = "lowest-priority Q within the higher ones' eps-indifference sets (after PSQD); no weights, an order"
    takes_weights = False
    order: tuple[str, ...] | None = None  # the skills' labels, highest priority first
    epsilon: float = 0.6  # indifference margin in Q units (chosen on validation episodes: docs/compose.md)
    slope: float = 20.0  # energy lost per Q unit outside an indifference set (a steep wall, so SVGD has gradients)
    max_candidates: int = 32  # sampler actions whose best estimates max_a Q_k(s, a)
    seed: int = 0  # the candidates' draws

    def __post_init__(self) -> None:
        if self.order is not None:
            object.__setattr__(self, "order", tuple(self.order))
        if not (isinstance(self.epsilon, (int, float)) and self.epsilon >= 0 and math.isfinite(self.epsilon)):
            raise OperatorError(f"priority epsilon must be finite and >= 0, got {self.epsilon}")
        if self.max_candidates < 1 or not (self.slope > 0 and math.isfinite(self.slope)):
            raise OperatorError(f"priority: max_candidates must be >= 1 and slope finite and > 0, got "
                                f"{self.max_candidates} and {self.slope}")

    def why_not(self, labels: Sequence[str], weighted: bool) -> str | None:
        why = super().why_not(labels, weighted)
        if why is not None:
            return why
        if not self.order:
            return (f"needs an order, highest priority first, e.g. order={list(reversed(list(labels)))} "
                    f"(--order {','.join(reversed(list(labels)))})")
        if sorted(self.order) != sorted(labels):
            return f"order {list(self.order)} must list each composed skill once: {list(labels)}"
        return None

    def settings(self) -> dict:
        return {"name": self.name, "order": list(self.order or ()), "epsilon": self.epsilon, "slope": self.slope,
                "max_candidates": self.max_candidates}

    def energy(self, composition: ComposedParts, modules: dict[str, nn.Module]) -> Energy:
        rank = [list(composition.labels).index(label) for label in self.order or ()]
        return PriorityQ(stacked_of(composition), [p.agent.sampler for p in composition.parts], rank, self)


class PriorityQ(NumpyOrTorch):
    """The lowest-priority skill's ``Q`` on the higher ones' indifference sets (``priority_energy``).

    ``max_a Q_k(s, a)`` is estimated per state as the best of ``max_candidates`` actions from skill ``k``'s own
    sampler (no gradient; drawn from this energy's generator)."""

    def __init__(self, stacked: StackedQ, samplers: Sequence[SamplerNetwork], rank: Sequence[int], config: Priority):
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
