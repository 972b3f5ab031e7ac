"""Tuned per-task defaults, so that the bare ``python -m skills.train TASK`` trains a good skill.

The temperature ``alpha`` is set per *family*: composing skills needs the same alpha for
every skill (and for the jointly trained reference), so tasks of one family share it.
Measurements behind these values are in docs/skills.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

import envs

from ..sql.learner import SQLConfig
from .config import TrainConfig

FAMILY_SQL: dict[str, SQLConfig] = {
    # K=8 SVGD particles (not 16): 1.66x SAC's training steps/s against 1.16x, and the same steps
    # to 95% success on reach (bench/README.md); multigoal keeps 16 for its four modes.
    "fetch-arm": SQLConfig(alpha=0.05, obs_scale=5.0, particles=8, value_proposal="mixture", value_samples=32,
                           target_update_interval=250),
    # fetch-place, fetch-puck (envs.manipulation): fetch-arm's settings (same robot, action scale and discount), and the
    # soft value target projected onto its analytic interval: puck-y (seed 0, 50k budget) ran away below V_min (-35.9
    # against -27.9 - 3) at update 37,000 without it (docs/manipulation.md). fetch-place's alpha 0.01: place+clear's mean
    # reward halves the place term, so at 0.02 its sampled policy misses the 1.5 cm target (stochastic success 0.05 on
    # 100 validation episodes, seed 0, 100k steps); at 0.01, 0.32 (docs/manipulation.md).
    "fetch-place": SQLConfig(alpha=0.01, obs_scale=5.0, particles=8, value_proposal="mixture", value_samples=32,
                             target_update_interval=250, clip_target_value=True),
    "fetch-puck": SQLConfig(alpha=0.05, obs_scale=5.0, particles=8, value_proposal="mixture", value_samples=32,
                            target_update_interval=250, clip_target_value=True),
    "multigoal": SQLConfig(alpha=10.0, obs_scale=0.2, value_proposal="mixture", value_samples=32,
                           target_update_interval=50),
    # pusher: the arm family's value settings with a target copy every 100 updates; with the family's discount at 0.95
    # (envs/pusher.py) push-x seeds 0 and 4 land within 0.08 and 0.15 of V(s0) (docs/skills.md, "The pusher")
    "pusher": SQLConfig(alpha=0.05, obs_scale=1.0, particles=8, value_proposal="mixture", value_samples=32,
                        target_update_interval=100),
    "twogoal": SQLConfig(alpha=0.2, obs_scale=0.2, value_proposal="mixture", value_samples=32,
                         target_update_interval=50, random_episodes=0.5),
}
TASK_SQL: dict[str, dict] = {
    # avoid's own policy soon stops touching the obstacle, leaving Q_avoid flat exactly where a
    # composed policy crosses it; random episodes (off-policy) keep contact in the data.
    # Measured (docs/skills.md): Q(toward) - Q(sideways) at 10 cm: -0.16 (0%), -0.87 (30%), -0.80 (60%);
    # composed reach+avoid success over 60 episodes: 0.62 (0%), 0.83 (30%), 0.95 (60%).
    # Its reward is 0 away from the obstacle, so its soft values sit at the analytic ceiling (V(s0) 2.06 of 2.08), where an
    # importance-sampled overestimate is bootstrapped into a run-away: 2 of 10 stacked seeds stopped at 4.8 and 7.8 within
    # 3,000 updates without clipping; the target value is projected onto the analytic interval (docs/skills.md).
    "avoid": {"random_episodes": 0.6, "clip_target_value": True},
    # multigoal: with its soft values converged (a target copy every 50 updates), the policy's own data
    # soon favours one goal and Q underestimates the others: goals reached 0/0/0/98 of 100 sampled
    # episodes (0/27/1/72 at 20k steps). Half the episodes uniformly random keep every goal in the
    # data: 28/10/36/26 at 20k steps (docs/skills.md).
    "multigoal": {"random_episodes": 0.5},
    # clear: as avoid, its own policy soon keeps away from the obstacle; random episodes keep contact in the data
    # (avoid's value, measured on avoid; not measured on clear)
    "clear": {"random_episodes": 0.6},
}
TASK_STEPS: dict[str, int] = {
    "reach": 30_000,
    "avoid": 20_000,
    "reach+avoid": 40_000,
    "west": 10_000,  # success 1.00 from 3k steps (a 15k trial; docs/compose.md, "Operators")
    "east": 10_000,
    "west+east": 10_000,
    "multigoal": 20_000,  # 8k left the soft return 10.8 from V(s0) (goal 9.8); 20k: 4.5 (docs/skills.md)
    # envs.manipulation: the budgets of the shipped skills, not tuned further (docs/manipulation.md, "Training settings")
    "place": 100_000,
    "clear": 30_000,
    "place+clear": 100_000,
    "puck-x": 50_000,
    "puck-y": 50_000,
    "puck-x+puck-y": 50_000,
}
DEFAULT_STEPS = 30_000
SQL_FIELDS = {f.name for f in fields(SQLConfig)}


def suggested_training(task: envs.Task) -> Mapping[str, Any]:
    """The training settings a task's family suggests (``Family.training``), checked: each must be an ``SQLConfig``
    field or ``steps``, so a misspelled one is an error naming the valid ones, not a default silently kept."""
    unknown = sorted(set(task.family.training) - SQL_FIELDS - {"steps"})
    if unknown:
        raise envs.UnknownNameError("training setting", unknown[0], sorted(SQL_FIELDS | {"steps"}),
                                    where=f"the settings family {task.family.name!r} suggests (its training=)")
    return task.family.training


def sql_config(task_name: str, family: str, **overrides) -> SQLConfig:
    """SQL hyperparameters for a task: family defaults (the toolkit's, or what a user's family suggests in its
    ``training``; with the family's discount), task defaults, then ``overrides`` (None ignored)."""
    task = envs.get_task(task_name)
    suggested = {k: v for k, v in suggested_training(task).items() if k in SQL_FIELDS}
    base = replace(FAMILY_SQL.get(family, SQLConfig(**suggested)), gamma=task.family.gamma,
                   **TASK_SQL.get(task_name, {}))
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def train_config(task_name: str, **overrides) -> TrainConfig:
    """Run settings for a task: its tuned step budget (or its family's suggested ``steps``), then ``overrides``
    (None values ignored)."""
    suggested = suggested_training(envs.get_task(task_name)).get("steps", DEFAULT_STEPS)
    base = TrainConfig(steps=TASK_STEPS.get(task_name, suggested))
    steps = overrides.get("steps") or base.steps
    base = replace(base, eval_interval=max(1, min(base.eval_interval, steps // 5)))
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
