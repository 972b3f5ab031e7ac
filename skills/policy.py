"""The policy protocol: what a skill and a composition both answer.

Evaluation, the convergence diagnostics and the Monte Carlo bound take any ``SoftPolicy``:
a maximum-entropy policy ``pi(a|s) ∝ exp(Q(s,a)/alpha)`` with its soft Q-function and value.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


@runtime_checkable
class SoftPolicy(Protocol):
    """A maximum-entropy policy and its soft Q-function. Numpy in, numpy out; torch in, torch out."""

    name: str
    alpha: float  # temperature
    gamma: float  # discount
    obs_dim: int
    act_dim: int

    def act(self, obs: ArrayLike, deterministic: bool = False) -> np.ndarray:
        """One action per state, obs [o] or [B, o]: a sample of ``pi`` (``deterministic``: best of N under Q)."""

    def sample(self, obs: ArrayLike, n: int) -> ArrayLike:
        """``n`` actions per state from the sampler: [B, o] -> [B, n, d]."""

    def q(self, obs: ArrayLike, act: ArrayLike) -> ArrayLike:
        """Soft Q-values ``Q(s, a)``: [..., o], [..., d] -> [...]."""

    def value(self, obs: ArrayLike, n_samples: int = 1024) -> ArrayLike:
        """Soft value ``V(s) = alpha log ∫ exp(Q(s,a)/alpha) da``: [B, o] -> [B]."""
