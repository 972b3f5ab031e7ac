"""Compose maximum-entropy skills without new training.

>>> import compose
>>> c = compose.load("reach+avoid")            # checks compatibility; equal weights by default
>>> c.q(obs, act)                               # Q_w = sum_i w_i Q_i, all skills in one batched call
>>> c.q.gap(obs)                                # delta(s) = sum_i w_i V_i(s) - V_w(s) >= 0
>>> c.act(obs)                                  # a sample of pi_w ∝ exp(Q_w/alpha), like a skill
>>> c.save()                                    # trained/reach+avoid.composed/v1; skills.load reopens it
>>> d = compose.load("west+east", operator="dc") # other operators: dc, gpi, or, priority (order=[...])

Run ``python -m compose.run reach+avoid --render`` for the full report, ``python -m compose.adapt
reach+avoid`` to improve a composition with experience (``Q = Q_w + R``), and
``python -m compose.tabular`` for the exact theory on finite MDPs. The layers, each importing only those
below it: ``composition`` (the data), ``operators``, ``policy``, ``sampling``, ``bound``, ``cache``, ``build``,
``library`` (saved compositions), ``skill`` (``ComposedSkill``, ``load``); ``run``, ``adaptation``, ``study`` on top.
"""

from .composition import (
    ComposedQ,
    Composition,
    IncompatibleSkillsError,
    StackedQ,
    check_compatible,
    check_weights,
    combined_task,
)
from .operators import OPERATORS, Operator, OperatorError, make_operator
from .policy import ComposedPolicy
from .skill import ComposedSkill, load

__all__ = ["OPERATORS", "ComposedPolicy", "ComposedQ", "ComposedSkill", "Composition", "IncompatibleSkillsError",
           "Operator", "OperatorError", "StackedQ", "check_compatible", "check_weights", "combined_task", "load",
           "make_operator"]
