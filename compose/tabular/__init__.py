"""Exact maximum-entropy theory on finite MDPs: soft Q-iteration, soft policy
evaluation/iteration, the composition bound of Haarnoja et al. 2018 (tight form),
divergence correction (Hunt et al. 2019), max-ent GPI and soft-OR (van Niekerk et al. 2019).

Run ``python -m compose.tabular`` for the table and figure; see docs/tabular.md."""

from .core import (
    ConvergenceError,
    check_weights,
    composed_q,
    composition_bound,
    composition_gap,
    divergence_correction,
    divergence_correction_term,
    entropy,
    fixed_point,
    gpi,
    hard_max_correction,
    logsumexp,
    occupancy,
    policy_return,
    policy_soft_value,
    renyi_half_divergence,
    soft_bellman_backup,
    soft_bellman_optimality_backup,
    soft_or,
    soft_or_reward,
    soft_policy,
    soft_policy_evaluation,
    soft_policy_evaluation_exact,
    soft_policy_iteration,
    soft_q_iteration,
    soft_value,
)
from .grids import Grid, hunt_grid, random_mdp, reach_probability, soft_or_grid

__all__ = [
    "ConvergenceError", "Grid", "check_weights", "composed_q", "composition_bound",
    "composition_gap", "divergence_correction", "divergence_correction_term", "entropy",
    "fixed_point", "gpi", "hard_max_correction", "hunt_grid", "logsumexp", "occupancy",
    "policy_return", "policy_soft_value", "random_mdp", "reach_probability",
    "renyi_half_divergence", "soft_bellman_backup", "soft_bellman_optimality_backup",
    "soft_or", "soft_or_grid", "soft_or_reward", "soft_policy", "soft_policy_evaluation",
    "soft_policy_evaluation_exact", "soft_policy_iteration", "soft_q_iteration", "soft_value",
]
