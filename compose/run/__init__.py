"""A composition run: compose saved skills (one operator or several), evaluate them beside the jointly trained
skill and the constituents on the same seeded episodes, check the bound, draw the figures, report.

``python -m compose.run SPEC`` (``cli``); ``run()`` (``orchestrate``) is the library function; the phases' rooms:
``settings``, ``evaluation``, ``checks`` (the bound), ``figures``, ``report``.
"""

from __future__ import annotations

from .cli import main
from .orchestrate import run
from .report import CompositionReport, OperatorsReport, RunReport, comparison_table
from .settings import SAMPLERS, BuildConfig, EvaluationConfig, Sources

__all__ = ["SAMPLERS", "BuildConfig", "CompositionReport", "EvaluationConfig", "OperatorsReport", "RunReport", "Sources",
           "comparison_table", "main", "run"]
