"""What every composition operator is: an object that checks its own settings, says whether it applies to the
skills being composed, builds and fits its learned parts offline, and gives the energy ``Q_op`` that the composed
sampler samples (``pi ∝ exp(Q_op/alpha)``). The registry (``OPERATORS``, ``make_operator``) is the one place an
operator is found by name.

``Q_i``, ``V_i`` and ``pi_i`` are constituent ``i``'s soft Q-function, soft value and Boltzmann policy
``exp((Q_i - V_i)/alpha)``; ``w`` the weights (sum 1).
"""

from __future__ import annotations

import difflib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from skills.sql.many_skills import StackedQ

Energy = Callable[[Any, Any], Any]
"""``Q_op(obs [..., o], act [..., d]) -> [...]``: tensors in, tensors out (with autograd, for SVGD); numpy in,
numpy out."""


class OperatorError(ValueError):
    """An operator that does not exist or does not apply: unknown name, weights it does not take, no order."""


class ComposedParts(Protocol):
    """What an operator reads of a composition (``compose.composition.Composition`` answers it); read-only."""

    @property
    def parts(self) -> Sequence[Any]: ...  # the constituent skills (``skills.Skill``)

    @property
    def labels(self) -> Sequence[str]: ...

    @property
    def weights(self) -> np.ndarray: ...

    @property
    def alpha(self) -> float: ...

    @property
    def gamma(self) -> float: ...

    @property
    def obs_dim(self) -> int: ...

    @property
    def act_dim(self) -> int: ...

    @property
    def q_w(self) -> Any: ...  # ``compose.composition.ComposedQ``: its ``stacked`` Q-networks and ``weights``

    def transitions(self) -> dict[str, np.ndarray]: ...

    def relabelled_transitions(self) -> dict[str, np.ndarray]: ...


class NumpyOrTorch:
    """An energy callable with tensors (autograd kept) or with numpy arrays (no gradient, numpy out)."""

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, obs, act):
        if isinstance(obs, torch.Tensor) and isinstance(act, torch.Tensor):
            return self.forward(obs, act)
        with torch.no_grad():
            return self.forward(torch.as_tensor(np.asarray(obs, np.float32)),
                                torch.as_tensor(np.asarray(act, np.float32))).numpy()


def average(q_all: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``Q_w = sum_i w_i Q_i`` (Haarnoja et al. 2018, Eq. 2): q_all [N, ...], weights [N] -> [...]."""
    return torch.tensordot(weights, q_all, dims=1)


def flat_states(obs: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """obs [..., o] -> ([M, o], its leading shape)."""
    return obs.reshape(-1, obs.shape[-1]), tuple(obs.shape[:-1])


def tensors(data: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """float32 tensors of a dict of arrays."""
    return {k: torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in data.items()}


@dataclass(frozen=True)
class Operator(ABC):
    """One way of combining N soft Q-functions into one energy. Subclasses are frozen dataclasses whose fields are
    the operator's settings; ``name`` is its registry name."""

    name: ClassVar[str]
    summary: ClassVar[str]
    takes_weights: ClassVar[bool] = True  # the weights define the combined task r_w = sum_i w_i r_i
    bounded: ClassVar[bool] = False  # the bound of Haarnoja et al. (2018) is about this operator
    # its energy has the form Q_w + R (R a network on (s, a)): it saves as a composed skill that any loader reopens,
    # and adaptation starts from it (``residual``)
    saves_as_residual: ClassVar[bool] = False
    residual_form: ClassVar[str] = ""  # what R is, for the operators that save as Q_w + R ("R = 0", "R = -C_w")

    def why_not(self, labels: Sequence[str], weighted: bool) -> str | None:
        """Why this operator does not apply to skills ``labels`` (``weighted``: the user gave weights), or None."""
        if weighted and not self.takes_weights:
            takers = ", ".join(n for n, cls in OPERATORS.items() if cls.takes_weights)
            return f"takes no weights (weights define r_w for {takers} only); drop --weights"
        return None

    def checked(self, labels: Sequence[str], weighted: bool) -> "Operator":
        """This operator, or an ``OperatorError`` saying why it does not apply."""
        why = self.why_not(labels, weighted)
        if why is not None:
            raise OperatorError(f"operator {self.name!r} {why}")
        return self

    def settings(self) -> dict:
        """What the built networks depend on (part of the cache key)."""
        return {"name": self.name}

    def cache_settings(self, sampler: dict, bound: dict) -> dict:
        """Everything a cached build depends on beside the constituents and weights: the sampler's settings and
        this operator's."""
        return {"sampler": sampler, "operator": self.settings()}

    def modules(self, composition: ComposedParts) -> dict[str, nn.Module]:
        """Empty modules for the learned parts (filled by ``fit`` or from the cache)."""
        return {}

    def fit(self, composition: ComposedParts, progress: bool = False) -> tuple[dict[str, nn.Module], dict]:
        """Fit the learned parts offline on the constituents' stored transitions (no environment samples)."""
        return {}, {}

    @abstractmethod
    def energy(self, composition: ComposedParts, modules: dict[str, nn.Module]) -> Energy:
        """``Q_op``, from the composition and the (fitted or loaded) learned parts."""

    def residual(self, energy: Energy) -> nn.Module | None:
        """``R`` of this operator's ``energy`` written as ``Q_w + R`` (None: ``R = 0``); only operators that
        ``saves_as_residual`` answer it."""
        raise OperatorError(f"operator {self.name!r}'s energy is not of the form Q_w + R")


@dataclass(frozen=True)
class FittedOperator(Operator):
    """An operator with networks fitted offline by TD on stored transitions (``compose.td``), run until
    ``gamma^backups <= tolerance``."""

    tolerance: float = 1e-2  # gamma^backups, what is left of the TD fit's initial error
    target_update_interval: int = 25  # updates per backup (hard target copy)
    batch_size: int = 256  # transitions per update
    value_samples: int = 64  # importance samples per next state for soft values (a mixture around sampler actions)
    lr: float = 1e-3  # Adam learning rate
    hidden: tuple[int, ...] = (128, 128)  # network widths
    seed: int = 0  # initialisation and draws

    def __post_init__(self) -> None:
        if not (0 < self.tolerance < 1):
            raise OperatorError(f"{self.name}: tolerance must be in (0, 1), got {self.tolerance}")
        small = [k for k in ("target_update_interval", "batch_size", "value_samples") if getattr(self, k) < 1]
        if small:
            raise OperatorError(f"{self.name}: {', '.join(small)} must be >= 1")
        if not self.hidden or any(int(width) < 1 for width in self.hidden):
            raise OperatorError(f"{self.name}: hidden must name one or more positive layer widths, got {self.hidden}")

    def backups(self, gamma: float) -> int:
        """Target copies for ``gamma^k <= tolerance``."""
        return max(1, math.ceil(math.log(self.tolerance) / math.log(gamma)))

    def updates(self, gamma: float) -> int:
        return self.backups(gamma) * self.target_update_interval

    def settings(self) -> dict:
        keep = ("tolerance", "target_update_interval", "batch_size", "lr", "hidden", "seed", "value_samples")
        return {"name": self.name} | {k: list(v) if k == "hidden" else v for k, v in vars(self).items() if k in keep}


OPERATORS: dict[str, type[Operator]] = {}
"""Every operator class by name; ``compose.operators`` fills it, in the order the docs list them."""


def make_operator(spec: "str | Operator" = "average", **settings: Any) -> Operator:
    """The operator ``spec`` names (or ``spec`` itself) with ``settings`` (None values ignored). Clear errors for an
    unknown name (listing the valid ones) and for a setting the operator does not take (naming those that do)."""
    settings = {k: v for k, v in settings.items() if v is not None}
    if not isinstance(spec, Operator) and spec not in OPERATORS:
        raise OperatorError(f"unknown operator {spec!r}; valid operators: {', '.join(OPERATORS)}")
    cls = type(spec) if isinstance(spec, Operator) else OPERATORS[spec]
    types = {f.name: f.type for f in fields(cls)}
    for key in settings:
        if key not in types:
            takers = [n for n, c in OPERATORS.items() if key in {f.name for f in fields(c)}]
            where = f"operator{'s' if len(takers) > 1 else ''} {', '.join(repr(t) for t in takers)} only" if takers \
                else "no operator"
            close = difflib.get_close_matches(key, list(types), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise OperatorError(f"setting {key!r} applies to {where}, not {cls.name!r}.{hint} "
                                f"{cls.name}'s settings: {', '.join(sorted(types))}")
    numbers = sorted(k for k, t in types.items() if str(t) in ("int", "float"))
    for key, value in settings.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and key not in numbers:
            raise OperatorError(f"{cls.name}'s {key} is not a number setting; numbers: {', '.join(numbers)}")
    settings = {k: whole_number(k, v) if str(types[k]) == "int" else v for k, v in settings.items()}
    if isinstance(spec, Operator):
        return replace(spec, **settings) if settings else spec
    return cls(**settings)


def whole_number(key: str, value: Any) -> Any:
    """A whole-number setting given as a number (``target_update_interval=100`` read from a command line as 100.0):
    the int, or ``OperatorError`` when it is not whole. Anything else is passed on for the operator to check."""
    if isinstance(value, float):
        if not value.is_integer():
            raise OperatorError(f"setting {key!r} takes a whole number, got {value:g}")
        return int(value)
    return value


def operator_setting(text: str) -> tuple[str, float]:
    """``KEY=NUMBER`` (``target_update_interval=100``), as a command line gives one operator setting; ``ValueError``
    saying what it expects otherwise (``make_operator`` checks the name and the type)."""
    key, sep, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not sep or not key.strip() or not math.isfinite(number):
        raise ValueError(f"an operator setting is KEY=NUMBER, e.g. target_update_interval=100, got {text!r}")
    return key.strip(), number


@dataclass(frozen=True)
class OfflineData:
    """What an offline fit reads: the constituents' Q-networks (stacked) and samplers, stored transitions, and the
    MDP's ``gamma``, ``alpha`` and observation scale; ``weights`` (dc) or ``values`` (gpi: ``V_i`` at every stored
    next state) where the fit needs them."""

    stacked: StackedQ
    samplers: Sequence[nn.Module]
    transitions: dict[str, np.ndarray]
    gamma: float
    obs_scale: torch.Tensor
    alpha: float = 1.0
    weights: np.ndarray | None = None
    values: Sequence[np.ndarray] | None = None

    @classmethod
    def of(cls, composition: ComposedParts, transitions: dict[str, np.ndarray], **extra: Any) -> "OfflineData":
        return cls(stacked=stacked_of(composition), samplers=[p.agent.sampler for p in composition.parts],
                   transitions=transitions, gamma=composition.gamma, alpha=composition.alpha,
                   obs_scale=composition.parts[0].agent.q.obs_scale, **extra)


def stacked_of(composition: ComposedParts) -> StackedQ:
    """The constituents' Q-networks as one batched ``StackedQ``."""
    return composition.q_w.stacked
