"""Task families for composable skills: one entry point, ``envs.make(name, **kwargs)``.

>>> import envs
>>> list(envs.TASKS)            # every task name
>>> env = envs.make("reach+avoid", render_mode="rgb_array")

Your own objectives: ``envs.task`` (a task of weights over reward terms, yours among them: ``envs.Term``,
``envs.Check``), ``envs.load_tasks("my_tasks.py")``, and ``envs.gym_family`` for any Gymnasium env (``envs.tasks``).
Each task is also registered with Gymnasium as ``envs.TASKS[name].gym_id``.
"""

from __future__ import annotations

from ._gl import choose_backend

choose_backend()  # must run before anything imports mujoco

import importlib  # noqa: E402
from dataclasses import replace  # noqa: E402

from .core import Check, Family, Task, Term, TermError, UnknownNameError, mean_task, weighted_task  # noqa: E402
from .gym_family import gym_family  # noqa: E402
from .registry import (  # noqa: E402
    FAMILIES,
    TASKS,
    family,
    get_task,
    make,
    make_task_env,
    register_family,
    register_task,
    unregister_task,
)
from .tasks import TaskModuleError, definition, load_tasks, task  # noqa: E402

# family module -> the gymnasium.Env class that runs its tasks (a module with several families, such as
# manipulation's fetch-place and fetch-puck: family name -> class)
BUILT_IN_FAMILIES: dict[str, str | dict[str, str]] = {
    "arm": "ArmTaskEnv", "multigoal": "MultiGoalEnv", "plane": "PlaneEnv", "pusher": "PusherEnv",
    "twogoal": "TwoGoalEnv", "manipulation": {"fetch-place": "FetchPlaceEnv", "fetch-puck": "FetchPuckEnv"},
}


def _register_built_ins() -> None:
    for module_name, classes in BUILT_IN_FAMILIES.items():
        module = importlib.import_module(f".{module_name}", __name__)
        families = {t.family.name: t.family for t in module.TASKS}
        for family_name, class_name in (classes.items() if isinstance(classes, dict)
                                        else [(module.FAMILY.name, classes)]):
            register_family(families[family_name], getattr(module, class_name))
        family_tasks = {t.name: t for t in module.TASKS}
        for name, parts in getattr(module, "COMBINED", []):
            family_tasks[name] = mean_task(name, [family_tasks[p] for p in parts])
        for built in family_tasks.values():
            register_task(replace(built, source=built.source or module.__name__), built_in=True)


_register_built_ins()

__all__ = ["FAMILIES", "TASKS", "Check", "Family", "Task", "TaskModuleError", "Term", "TermError", "UnknownNameError",
           "definition", "family", "get_task", "gym_family", "load_tasks", "make", "make_task_env", "mean_task",
           "register_family", "register_task", "task", "unregister_task", "weighted_task"]
