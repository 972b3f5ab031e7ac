"""The registry of task families and tasks: built-in ones (``envs.arm``, ``envs.pusher``, ...) and those a user
defines (``envs.tasks``). A family is registered with the env class (or factory) that runs its tasks; a task by
name. ``"a+b"`` of registered tasks of one family resolves to their mean, registered on first use.

Every task is also registered with Gymnasium as ``task.gym_id`` (``envs.make`` goes through ``gymnasium.make``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import gymnasium as gym

from .core import Family, Task, UnknownNameError, mean_task

EnvFactory = Callable[..., gym.Env]
"""``factory(task, **kwargs) -> gym.Env`` without a time limit (``make_task_env`` adds the family's horizon)."""

_TASKS: dict[str, Task] = {}
_FAMILIES: dict[str, tuple[Family, EnvFactory]] = {}
_BUILT_IN: set[str] = set()  # task names that come with the toolkit (never unregistered)
TASKS: Mapping[str, Task] = MappingProxyType(_TASKS)
"""Every registered task by name. Iterate for the names; ``TASKS[name]`` gives its reward and family."""
FAMILIES: Mapping[str, tuple[Family, EnvFactory]] = MappingProxyType(_FAMILIES)
"""Every registered family by name: the family and the env factory that runs its tasks."""


def register_family(family: Family, factory: EnvFactory) -> Family:
    """Register a family and the env factory that runs its tasks. A name already taken is refused."""
    if family.name in _FAMILIES:
        raise ValueError(f"family {family.name!r} is registered already; registered families: {', '.join(_FAMILIES)}")
    _FAMILIES[family.name] = (family, factory)
    return family


def family(name: str) -> Family:
    """The registered family called ``name``; an unknown name lists the valid ones."""
    if name not in _FAMILIES:
        raise UnknownNameError("task family", name, list(_FAMILIES))
    return _FAMILIES[name][0]


def register_task(task: Task, built_in: bool = False) -> Task:
    """Register ``task`` (and its Gymnasium id). Its family must be registered; a name already taken by another
    definition is refused (re-registering the same definition is a no-op, as when a module is loaded twice)."""
    if task.family.name not in _FAMILIES:
        raise UnknownNameError("task family", task.family.name, list(_FAMILIES))
    if task.name in _TASKS and _TASKS[task.name] != task:
        where = "a built-in task" if task.name in _BUILT_IN else f"the task defined in {_TASKS[task.name].source or '?'}"
        raise ValueError(f"task name {task.name!r} is taken by {where}; give yours another name")
    _TASKS[task.name] = task
    if built_in:
        _BUILT_IN.add(task.name)
    if task.gym_id not in gym.registry:
        gym.register(id=task.gym_id, entry_point=_create, kwargs={"task": task.name},  # type: ignore[arg-type]
                     max_episode_steps=task.family.horizon)
    return task


def unregister_task(name: str) -> None:
    """Remove a user-defined task (tests, notebooks redefining one); built-in tasks stay."""
    if name in _BUILT_IN:
        raise ValueError(f"{name!r} is a built-in task; it cannot be unregistered")
    task = _TASKS.pop(name, None)
    if task is not None and task.gym_id in gym.registry:
        del gym.registry[task.gym_id]


def get_task(name: str) -> Task:
    """The task called ``name``, or the mean of distinct registered tasks ``"a+b[+...]"`` (of one family), registered
    on first use; an unknown name raises ``UnknownNameError`` listing the valid ones."""
    if name in _TASKS:
        return _TASKS[name]
    parts = name.split("+")
    if len(parts) > 1 and len(set(parts)) == len(parts) and all(p in _TASKS for p in parts):
        return register_task(mean_task(name, [_TASKS[p] for p in parts]))
    unknown = [p for p in parts if p not in _TASKS]
    if len(parts) > 1 and unknown:  # say which part of a combined name is unknown
        raise UnknownNameError("task", unknown[0], list(_TASKS), where=repr(name))
    raise UnknownNameError("task", name, list(_TASKS))


def _create(task: str, **kwargs: Any) -> gym.Env:
    return factory_of(get_task(task))(get_task(task), **kwargs)


def factory_of(task: Task) -> EnvFactory:
    """The env factory of a task's family."""
    if task.family.name not in _FAMILIES:
        raise UnknownNameError("task family", task.family.name, list(_FAMILIES))
    return _FAMILIES[task.family.name][1]


def make_task_env(task: Task, **kwargs: Any) -> gym.Env:
    """An env for any ``Task`` object (e.g. a weighted combination), with its family's time limit."""
    return gym.wrappers.TimeLimit(factory_of(task)(task, **kwargs), max_episode_steps=task.family.horizon)


def make(name: str, **kwargs: Any) -> gym.Env:
    """Create the task ``name`` (with its time limit). Keyword arguments go to the env class.

    Arm tasks take ``arm=<MJCF path or dm_control.mjcf element>, ee_site="<site>"`` to run on a
    custom arm, and ``render_mode="rgb_array"`` (headless) or ``"human"`` (needs a display).
    """
    return gym.make(get_task(name).gym_id, **kwargs)
