"""Tuned per-task defaults, so that the bare ``python -m skills.train TASK`` trains a good skill.

The temperature ``alpha`` is set per *family*: composing skills needs the same alpha for
every skill (and for the jointly trained reference), so tasks of one family share it.
Measurements behind these values are in docs/skills.md.
"""

from __future__ import annotations

from dataclasses import replace

from .agent import SQLConfig
from .trainer import TrainConfig

FAMILY_SQL: dict[str, SQLConfig] = {
    "fetch-arm": SQLConfig(alpha=0.05, obs_scale=5.0),
    "multigoal": SQLConfig(alpha=10.0, obs_scale=0.2),
    "pusher": SQLConfig(alpha=0.05, obs_scale=1.0),
}
TASK_STEPS: dict[str, int] = {
    "reach": 30_000,
    "avoid": 20_000,
    "reach+avoid": 40_000,
    "multigoal": 8_000,
}
DEFAULT_STEPS = 30_000


def sql_config(task_name: str, family: str, **overrides) -> SQLConfig:
    """SQL hyperparameters for a task: family defaults, then ``overrides`` (None values ignored)."""
    base = FAMILY_SQL.get(family, SQLConfig())
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def train_config(task_name: str, **overrides) -> TrainConfig:
    """Run settings for a task: its tuned step budget, then ``overrides`` (None values ignored)."""
    base = TrainConfig(steps=TASK_STEPS.get(task_name, DEFAULT_STEPS))
    steps = overrides.get("steps") or base.steps
    base = replace(base, eval_interval=max(1, min(base.eval_interval, steps // 5)))
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
