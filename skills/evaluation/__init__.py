"""Evaluating a maximum-entropy policy (a skill or a composition, ``skills.policy.SoftPolicy``): seeded episodes
(``episodes``), convergence diagnostics against Monte Carlo soft returns (``diagnostics``), and figures (``plots``).
"""

from __future__ import annotations

from .episodes import EVAL_SEED, run_episodes

__all__ = ["EVAL_SEED", "run_episodes"]
