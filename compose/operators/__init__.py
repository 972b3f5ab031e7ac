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

One module per operator: its equations (one small function each), the energy the composed sampler is trained
on (``compose.sampling``), and the operator class (settings, applicability, learned parts and fits, energy;
``compose.operators.base.Operator``). ``OPERATORS`` maps names to classes; ``make_operator`` is the one place a
name becomes an operator.
"""

from __future__ import annotations

from .average import Average
from .base import (
    OPERATORS,
    Energy,
    FittedOperator,
    NumpyOrTorch,
    OfflineData,
    Operator,
    OperatorError,
    average,
    flat_states,
    make_operator,
    operator_setting,
)
from .divergence import (
    CorrectionNetwork,
    DivergenceCorrectedQ,
    DivergenceCorrection,
    dc_td_target,
    divergence_corrected,
    fit_divergence_correction,
)
from .gpi import GPI, GPIQ, fit_policy_evaluations, gpi, soft_evaluation_td_target
from .priority import Priority, PriorityQ, priority_energy
from .soft_or import SoftOr, SoftOrQ, soft_or

OPERATORS.update({cls.name: cls for cls in (Average, DivergenceCorrection, GPI, SoftOr, Priority)})

__all__ = [
    "GPI", "GPIQ", "OPERATORS", "Average", "CorrectionNetwork", "DivergenceCorrectedQ", "DivergenceCorrection", "Energy",
    "FittedOperator", "NumpyOrTorch", "OfflineData", "Operator", "OperatorError", "Priority", "PriorityQ", "SoftOr",
    "SoftOrQ", "average", "dc_td_target", "divergence_corrected", "fit_divergence_correction", "fit_policy_evaluations",
    "flat_states", "gpi", "make_operator", "operator_setting", "priority_energy", "soft_evaluation_td_target", "soft_or",
]
