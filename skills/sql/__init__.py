"""The SQL algorithm: its equations and networks (``equations``), hand-written backward passes (``backprop``),
the learner that trains one skill (``learner``), N skills' Q-networks in one call (``many_skills``) and S
seeds' updates as one (``many_seeds``).

Importing it loads torch, never MuJoCo or gymnasium: the maths core stays light.

>>> from skills.sql import soft_bellman_target, SoftQNetwork, SoftQLearning, SQLConfig
"""

from __future__ import annotations

from .equations import (
    SamplerNetwork,
    SoftQNetwork,
    estimate_soft_value,
    kernel_width,
    mixture_log_density,
    mixture_proposal,
    mlp,
    project_soft_value,
    q_action_gradient,
    rbf_bandwidth,
    rbf_kernel,
    sampler_log_density,
    sampler_surrogate_gradient,
    sampler_surrogate_loss,
    sampler_svgd_loss,
    soft_bellman_target,
    soft_q_loss,
    soft_q_loss_gradient,
    soft_value_from_samples,
    soft_value_importance,
    squashed_score,
    svgd_direction,
    svgd_step_direction,
    uniform_actions,
)
from .learner import SoftQLearning, SQLConfig, TrainingDiverged, torch_device
from .seeding import seeded

__all__ = [
    "SQLConfig", "SamplerNetwork", "SoftQLearning", "SoftQNetwork", "TrainingDiverged", "estimate_soft_value",
    "kernel_width", "mixture_log_density", "mixture_proposal", "mlp", "project_soft_value", "q_action_gradient",
    "rbf_bandwidth", "rbf_kernel", "sampler_log_density", "sampler_surrogate_gradient", "sampler_surrogate_loss",
    "sampler_svgd_loss", "seeded",
    "soft_bellman_target", "soft_q_loss", "soft_q_loss_gradient", "soft_value_from_samples", "soft_value_importance",
    "squashed_score", "svgd_direction", "svgd_step_direction", "torch_device", "uniform_actions",
]
