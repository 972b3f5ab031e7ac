"""Improve a composition with experience (``python -m compose.adapt``): SQL on the combined task's reward
``r_w = sum_i w_i r_i``, starting *from* the composition instead of from scratch (as PSQD's "zero-shot, then
adapted"):

    Q(s, a) = Q_w(s, a) + R(s, a),    Q_w = sum_i w_i Q_i frozen,  R trained, R = 0 at the start

(``R = -C_w`` at the start for a saved ``dc`` composition: it starts from its own energy), with the sampler started
from the composed amortized sampler and the replay buffer started from the constituents' stored transitions, their
rewards recomputed for ``r_w`` (no new environment samples; on a custom arm the buffer starts empty, as those
transitions are another robot's). Training is the ordinary trainer (``skills.training``), into a new library version
named ``SPEC.adapted`` whose manifest's ``adapted_from`` names the constituents.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import envs
import skills
from skills.sql.learner import SQLConfig
from skills.training import StartFrom, TrainConfig, Trainer, TrainResult
from skills.training.defaults import TASK_STEPS, sql_config, train_config

from .composition import Composition
from .library import composed_agent, operator_residual, operator_tag, provenance, savable_operators
from .operators import Operator
from .skill import ComposedSkill, load

SUFFIX = ".adapted"
ADAPT_SHARE = 0.2  # default budget: this share of the joint skill's tuned training steps
EVAL_INTERVAL = 1_000


def combined_task_name(composition: Composition) -> str:
    """The registered task whose reward is the composition's ``r_w``; adaptation trains on it."""
    name = composition.task.name
    if name not in envs.TASKS:
        combined = [n for n, t in envs.TASKS.items() if t.parts]
        raise ValueError(f"{composition.name} with weights {composition.weights.tolist()} has no registered combined "
                         f"task ({name!r}) to adapt on; combined tasks: {', '.join(combined)}")
    return name


def check_adaptable(composition: Composition) -> str:
    """The registered combined task adaptation trains on (``combined_task_name``), after checking that the
    composition's energy is ``Q_w + R`` (``Operator.saves_as_residual``: averaging, ``dc``), where adaptation starts."""
    if not composition.operator.saves_as_residual:
        raise ValueError(f"adaptation starts from Q = Q_w + R and trains R; operator {composition.operator.name!r}'s "
                         f"energy is not of that form (adaptable: {', '.join(savable_operators())})")
    return combined_task_name(composition)


def adapt_configs(task: str, steps: int | None = None, **run_overrides) -> tuple[SQLConfig, TrainConfig]:
    """The joint task's tuned SQL settings with no random warm-up (the buffer starts full), and a run of
    ``ADAPT_SHARE`` of its joint budget, evaluated every ``EVAL_INTERVAL`` steps in both modes."""
    family = envs.get_task(task).family.name
    sql = replace(sql_config(task, family), warmup_steps=0)
    budget = steps or int(ADAPT_SHARE * TASK_STEPS.get(task, 30_000))
    run = train_config(task, steps=budget, **run_overrides)
    if run_overrides.get("eval_interval") is None:
        run = replace(run, eval_interval=min(EVAL_INTERVAL, budget))
    return sql, replace(run, deterministic_curve=True)


def build_unless_saved(composition: ComposedSkill, progress: bool) -> None:
    """Build the composition's sampler and learned parts (or load them from the cache); a saved entry starts from
    what it holds (its sampler and ``Q_w + R``), not from a rebuild."""
    if composition.saved is None:
        composition.build(progress=progress)


def adapted_trainer(composition: ComposedSkill, *, steps: int | None = None, seed: int = 0,
                    out: str | Path | None = None, name: str | None = None, env_kwargs: dict | None = None,
                    **run_overrides: Any) -> Trainer:
    """A ``Trainer`` on the combined task whose agent is the composition (``Q_w + R``, ``R`` the operator's: 0 for
    averaging, ``-C_w`` for ``dc``; the composed sampler) and whose buffer holds the constituents' transitions
    relabelled with ``r_w``."""
    task = check_adaptable(composition)
    sql, run = adapt_configs(task, steps, seed=seed, **run_overrides)
    agent = composed_agent(composition, composition.policy.sampler, seed, config=sql,
                           residual=operator_residual(composition))
    root = Path(out) if out is not None else (Path(composition.library) if composition.library else None)
    record = provenance(composition, root if root is not None else skills.default_library())
    if composition.saved is not None:
        record["saved_composition"] = str(composition.saved)
    # The stored transitions are the constituents' own robot's: a start for the same robot, off-dynamics data for
    # another arm, where the buffer starts empty (the composition acts from the first step; updates wait for a batch).
    other_arm = bool(env_kwargs and env_kwargs.get("arm"))
    record["replay_seeded_with_constituent_transitions"] = not other_arm
    start = StartFrom(agent=agent, transitions=None if other_arm else composition.relabelled_transitions(),
                      provenance={"adapted_from": record},
                      name=name or composition.name.replace("@", "_") + operator_tag(composition) + SUFFIX)
    return Trainer(task, sql, run, out=root, start=start, env_kwargs=env_kwargs)


def adapt(spec: str, *, weights: list[float] | None = None, library: str | None = None, out: str | None = None,
          seed: int = 0, env_kwargs: dict | None = None, operator: str | Operator = "average",
          **run_overrides: Any) -> TrainResult:
    """Load (or reopen) the composition ``spec`` and adapt it; returns the trainer's result. ``operator``: averaging
    or ``dc`` (a name, or ``make_operator("dc", target_update_interval=100)`` for its settings), whose start is
    ``Q_w - C_w``. ``run_overrides``: ``steps`` and ``TrainConfig`` fields (``progress``, ``eval_interval``...)."""
    composition = load(spec, weights=weights, library=library, seed=seed, operator=operator)
    check_adaptable(composition)  # refuse before building anything
    build_unless_saved(composition, progress=run_overrides.get("progress", True))
    return adapted_trainer(composition, seed=seed, out=out, env_kwargs=env_kwargs, **run_overrides).train()
