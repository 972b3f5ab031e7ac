"""The policy protocol: what a skill and a composition both answer.

Evaluation, the convergence diagnostics and the Monte Carlo bound take any ``SoftPolicy``:
a maximum-entropy policy ``pi(a|s) ∝ exp(Q(s,a)/alpha)`` with its soft Q-function and value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor
VALUE_ROWS = 65536  # Q evaluations per chunk when valuing many states (states x importance samples)
MAX_VALUE_SAMPLES = 1 << 20  # importance samples per state for a soft value
MAX_SAMPLES = 1 << 16  # sampler actions per state


def check_count(n: object, what: str, high: int) -> int:
    """``n`` as a whole number in ``[1, high]`` (``n_samples``, ``n``): a clear ``ValueError`` otherwise, instead of
    a division by zero or an allocation the size of the request."""
    if type(n) is not int or not 1 <= n <= high:
        raise ValueError(f"{what} must be a whole number in [1, {high}], got {n!r}")
    return n


def as_tensor(x: ArrayLike, device: torch.device | str = "cpu") -> torch.Tensor:
    """float32 tensor on ``device`` from numpy or torch input."""
    return x.to(device, torch.float32) if isinstance(x, torch.Tensor) else torch.as_tensor(
        np.asarray(x, np.float32), device=device)


def checked(x: ArrayLike, dim: int, what: str = "observation", device: torch.device | str = "cpu") -> torch.Tensor:
    """``as_tensor(x)`` after checking that its last axis has ``dim`` entries and every entry is finite:
    [..., dim]. A clear ``ValueError`` otherwise, instead of a silent reshape or NaN actions."""
    t = as_tensor(x, device)
    if t.dim() == 0 or t.shape[-1] != dim:
        raise ValueError(f"{what} must have shape [{dim}] or [batch, {dim}], got {list(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} must be finite; got NaN or inf in {what}s of shape {list(t.shape)}")
    return t


def like(value: torch.Tensor, template: ArrayLike) -> ArrayLike:
    """``value`` as the caller passed ``template``: a tensor for torch input, numpy otherwise."""
    return value if isinstance(template, torch.Tensor) else value.detach().cpu().numpy()


def value_in_chunks(value_fn: Callable[[torch.Tensor], torch.Tensor], obs: torch.Tensor, n_samples: int) -> torch.Tensor:
    """``value_fn`` over obs [B, o] in chunks of at most ``VALUE_ROWS`` Q evaluations: -> [B]. ``n_samples`` is
    checked (``check_count``, at most ``MAX_VALUE_SAMPLES``)."""
    check_count(n_samples, "n_samples", MAX_VALUE_SAMPLES)
    if not len(obs):
        return obs.new_zeros(0)
    return torch.cat([value_fn(chunk) for chunk in obs.split(max(1, VALUE_ROWS // n_samples))])


@runtime_checkable
class Actor(Protocol):
    """What acts in an evaluation: one action per row of observations, each row from its own random stream."""

    def act(self, obs: np.ndarray, deterministic: bool = False,
            generators: Sequence[torch.Generator] | None = None) -> np.ndarray:
        """obs [B, o] -> actions [B, d]; row ``b``'s randomness from ``generators[b]`` when given."""
        ...


@runtime_checkable
class SoftPolicy(Protocol):
    """A maximum-entropy policy and its soft Q-function. Numpy in, numpy out; torch in, torch out."""

    name: str
    alpha: float  # temperature
    gamma: float  # discount
    obs_dim: int
    act_dim: int

    def act(self, obs: ArrayLike, deterministic: bool = False,
            generators: Sequence[torch.Generator] | None = None) -> np.ndarray:
        """One action per state, obs [o] or [B, o]: a sample of ``pi`` (``deterministic``: best of N under Q).
        ``generators``: one random stream per row, so that each row acts as it would alone (lockstep evaluation)."""

    def sample(self, obs: ArrayLike, n: int) -> ArrayLike:
        """``n`` actions per state from the sampler: [B, o] -> [B, n, d]."""

    def q(self, obs: ArrayLike, act: ArrayLike) -> ArrayLike:
        """Soft Q-values ``Q(s, a)``: [..., o], [..., d] -> [...]."""

    def value(self, obs: ArrayLike, n_samples: int = 1024) -> ArrayLike:
        """Soft value ``V(s) = alpha log ∫ exp(Q(s,a)/alpha) da``: [B, o] -> [B]."""


class UniformPolicy:
    """Uniform random actions on ``[-1, 1]^d`` (the random baseline and control), row ``b`` from ``generators[b]``."""

    def __init__(self, act_dim: int):
        self.act_dim = act_dim

    def act(self, obs: np.ndarray, deterministic: bool = False,
            generators: Sequence[torch.Generator] | None = None) -> np.ndarray:
        rows = np.atleast_2d(obs).shape[0]
        if generators is None:
            return (torch.rand(rows, self.act_dim) * 2.0 - 1.0).numpy()
        return np.stack([(torch.rand(self.act_dim, generator=g) * 2.0 - 1.0).numpy() for g in generators])

    def sample(self, obs: np.ndarray, n: int) -> np.ndarray:
        """``n`` uniform actions per state (torch's global stream): [B, n, d]."""
        return (torch.rand(np.atleast_2d(obs).shape[0], n, self.act_dim) * 2.0 - 1.0).numpy()
