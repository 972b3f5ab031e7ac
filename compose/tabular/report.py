"""Run every composition operator on one MDP and measure it against the optimum."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .core import (
    Array,
    CompositionBound,
    composed_q,
    composition_bound,
    divergence_correction_term,
    gpi,
    policy_return,
    soft_policy,
)

OPERATORS = ("CO", "GPI", "DC", "optimal")


@dataclass(frozen=True)
class OperatorResult:
    """One operator on one task. ``Q`` is the operator's own value estimate, ``policy`` the
    Boltzmann policy it acts with; ``J`` is that policy's exact max-ent return on ``r_w``
    from the start distribution, ``ret`` its entropy-free return."""

    Q: Array
    policy: Array
    J: float
    ret: float
    value_error: float  # max |Q - Q*| over all (s, a)


def compare_operators(
    P: Array, rewards: Array, weights: Array, gamma: float, alpha: float, start: Array
) -> tuple[dict[str, OperatorResult], CompositionBound]:
    """CO = averaging (``sum_i w_i Q_i``, Haarnoja et al. 2018), GPI = max-ent GPI,
    DC = divergence correction, optimal = soft Q-iteration on ``r_w``. Returns the results
    per operator and the ``composition_bound`` dict."""
    bound = composition_bound(P, rewards, weights, gamma, alpha)
    R_w = composed_q(np.asarray(rewards, dtype=np.float64), np.asarray(weights, dtype=np.float64))
    Q_star = bound["Q_optimal"]
    Q_dc = bound["Q_composed"] - divergence_correction_term(P, bound["Q_skills"], weights, gamma, alpha)
    Qs = {"CO": bound["Q_composed"], "GPI": gpi(P, rewards, weights, gamma, alpha)["Q"], "DC": Q_dc, "optimal": Q_star}
    out = {}
    for name, Q in Qs.items():
        pi = soft_policy(Q, alpha)
        out[name] = OperatorResult(
            Q=Q, policy=pi,
            J=policy_return(P, R_w, pi, gamma, start, alpha),
            ret=policy_return(P, R_w, pi, gamma, start, 0.0),
            value_error=float(np.max(np.abs(Q - Q_star))),
        )
    return out, bound


def tightness(bound: CompositionBound, floor: float = 1e-6) -> float:
    """Largest measured ``(Q_composed - Q_optimal) / C`` over pairs with ``C > floor``."""
    gap, C = bound["Q_composed"] - bound["Q_optimal"], bound["C"]
    mask = C > floor
    return float(np.max(gap[mask] / C[mask])) if mask.any() else float("nan")
