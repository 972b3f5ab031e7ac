"""Task families for composable skills: one entry point, ``envs.make(name, **kwargs)``.

>>> import envs
>>> list(envs.TASKS)            # every task name
>>> env = envs.make("reach+avoid", render_mode="rgb_array")

Each task is also registered with Gymnasium as ``envs.TASKS[name].gym_id``.
"""

from __future__ import annotations

from ._gl import choose_backend

choose_backend()  # must run before anything imports mujoco

import importlib  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from types import MappingProxyType  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402

from .core import Family, Task, UnknownNameError, mean_task  # noqa: E402

# family module -> the gymnasium.Env class that runs its tasks
_FAMILIES = {"arm": "ArmTaskEnv", "multigoal": "MultiGoalEnv", "pusher": "PusherEnv", "twogoal": "TwoGoalEnv"}


def _build_registry() -> tuple[dict[str, Task], dict[str, type]]:
    tasks: dict[str, Task] = {}
    env_classes: dict[str, type] = {}
    for module_name, class_name in _FAMILIES.items():
        module = importlib.import_module(f".{module_name}", __name__)
        family_tasks = {t.name: t for t in module.TASKS}
        for name, parts in getattr(module, "COMBINED", []):
            family_tasks[name] = mean_task(name, [family_tasks[p] for p in parts])
        for task in family_tasks.values():
            env_classes[task.name] = getattr(module, class_name)
        tasks.update(family_tasks)
    return tasks, env_classes


_TASKS, _ENV_CLASSES = _build_registry()
TASKS: Mapping[str, Task] = MappingProxyType(_TASKS)
"""Every task by name. Iterate for the names; ``TASKS[name]`` gives its reward and family."""


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown name raises ``UnknownNameError`` listing the valid ones."""
    if name not in TASKS:
        raise UnknownNameError("task", name, list(TASKS))
    return TASKS[name]


def _create(task: str, **kwargs: Any) -> gym.Env:
    return _ENV_CLASSES[task](get_task(task), **kwargs)


def make_task_env(task: Task, **kwargs: Any) -> gym.Env:
    """An env for any ``Task`` object (e.g. a weighted combination), with its family's time limit."""
    family_class = {t.family.name: _ENV_CLASSES[name] for name, t in TASKS.items()}
    if task.family.name not in family_class:
        raise UnknownNameError("task family", task.family.name, list(family_class))
    env = family_class[task.family.name](task, **kwargs)
    return gym.wrappers.TimeLimit(env, max_episode_steps=task.family.horizon)


def make(name: str, **kwargs: Any) -> gym.Env:
    """Create the task ``name`` (with its time limit). Keyword arguments go to the env class.

    Arm tasks take ``arm=<MJCF path or dm_control.mjcf element>, ee_site="<site>"`` to run on a
    custom arm, and ``render_mode="rgb_array"`` (headless) or ``"human"`` (needs a display).
    """
    return gym.make(get_task(name).gym_id, **kwargs)


for _task in TASKS.values():
    if _task.gym_id not in gym.registry:
        # ignore: gymnasium's EnvCreator protocol takes **kwargs only; _create's task comes in kwargs
        gym.register(id=_task.gym_id, entry_point=_create, kwargs={"task": _task.name},  # type: ignore[arg-type]
                     max_episode_steps=_task.family.horizon)

__all__ = ["TASKS", "Family", "Task", "UnknownNameError", "get_task", "make", "make_task_env", "mean_task"]
