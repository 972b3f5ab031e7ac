"""A loaded skill: soft Q-function, sampler, soft value and the transitions it saw."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import envs
from envs.arms import BUILTIN as BUILTIN_ARMS
from envs.tasks import definition_changes

from ..policy import MAX_SAMPLES, ArrayLike, check_count, checked, like, value_in_chunks
from ..sql.learner import SoftQLearning
from .catalog import check_fresh, inside_library, is_path, library_root, resolve
from .files import load_manifest, read_skill
from .manifest import MANIFEST, NAME, Manifest, SkillError


class TaskChangedError(SkillError):
    """A skill whose task's definition (terms, ranges, weights, checks, code) has changed since it was trained."""


def task_of(info: Manifest) -> envs.Task:
    """The registered task a skill was trained on; if it is not registered (a user's task whose module was not
    loaded), a ``SkillError`` says where it was defined and how to load it."""
    try:
        return envs.get_task(info.task)
    except envs.UnknownNameError as err:
        source = (info.task_definition or {}).get("source")
        hint = f"; it was defined in {source}: load it with --tasks {source} (envs.load_tasks)" if source else ""
        raise SkillError(f"skill {info.name!r} v{info.version}: its task {info.task!r} is not registered{hint}") from err


def registered_task(name: str, library: str | Path | None = None) -> envs.Task:
    """``envs.get_task(name)``; when the name (or a part of a combined one) is not registered but ``library`` holds a
    skill of that name trained on a user's task, the error says which file defines it (``--tasks FILE``)."""
    try:
        return envs.get_task(name)
    except envs.UnknownNameError as err:
        for part in dict.fromkeys([name, *name.split("+")]):
            source = user_task_source(part, library)
            if source:
                raise err.hinted(f" The library's skill {part!r} was trained on a task defined in {source}: "
                                 f"load it with --tasks {source}") from None
        raise


def user_task_source(name: str, library: str | Path | None = None) -> str | None:
    """Where a user defined the task of the library's skill ``name`` (its manifest's record), or None."""
    if not NAME.match(name):
        return None
    try:
        source = (load_manifest(resolve(name, library)).task_definition or {}).get("source")
    except (SkillError, envs.UnknownNameError, OSError, ValueError):
        return None
    return source if isinstance(source, str) and source else None


def check_task_definition(path: Path, info: Manifest) -> None:
    """Refuse a skill whose task, as registered now, is defined differently from when it was trained (both
    definitions shown). Skills with no recorded definition, or whose task is not registered, are not checked:
    loading never imports a user's module to find out."""
    recorded = info.task_definition
    if recorded is None:
        return
    try:
        task = envs.get_task(info.task)
    except envs.UnknownNameError:
        return
    changes = definition_changes(recorded, envs.definition(task))
    if changes:
        raise TaskChangedError(f"{path}: task {info.task!r} has changed since this skill was trained "
                               f"(defined in {recorded.get('source') or '?'} then, {task.source or '?'} now): "
                               + "; ".join(changes) + ". Retrain it, or pass allow_changed_task=True "
                               "(--allow-changed-task) to use it knowingly")


class Skill:
    """A trained maximum-entropy skill. Numpy in, numpy out; torch in, torch out (no gradient)."""

    def __init__(self, agent: SoftQLearning, info: Manifest, transitions: dict[str, np.ndarray], path: Path):
        """``info``: the skill's manifest (``skills.library.manifest.Manifest``); ``manifest`` is its JSON."""
        self.agent, self.info, self.transitions, self.path = agent, info, transitions, path
        self.name, self.task = info.name, info.task
        self.alpha, self.gamma = info.alpha, info.gamma
        self.obs_dim, self.act_dim = info.obs_dim, info.act_dim

    @property
    def manifest(self) -> dict:
        """The manifest as JSON (``info`` is its typed form)."""
        return self.info.to_json()

    def __repr__(self) -> str:
        return (f"Skill({self.name!r} v{self.info.version}, task={self.task!r}, alpha={self.alpha}, "
                f"steps={self.info.env_steps}, path={str(self.path)!r})")

    @property
    def device(self) -> torch.device:
        return self.agent.device

    @torch.no_grad()
    def q(self, obs: ArrayLike, act: ArrayLike) -> ArrayLike:
        """Soft Q-values: obs [..., obs_dim], act [..., act_dim] (broadcast) -> [...]."""
        return like(self.agent.q(checked(obs, self.obs_dim, device=self.device),
                                 checked(act, self.act_dim, "action", self.device)), act)

    @torch.no_grad()
    def sample(self, obs: ArrayLike, n: int) -> ArrayLike:
        """``n`` actions per state from the sampler: obs [B, obs_dim] -> [B, n, act_dim]."""
        o = checked(obs, self.obs_dim, device=self.device)
        return like(self.agent.sampler.sample(o.reshape(-1, self.obs_dim), check_count(n, "n", MAX_SAMPLES)), obs)

    def act(self, obs: ArrayLike, deterministic: bool = False,
            generators: Sequence[torch.Generator] | None = None) -> np.ndarray:
        """An action for one state [obs_dim] (or a batch; ``generators``: one random stream per row); see
        ``SoftQLearning.act``."""
        o = checked(obs, self.obs_dim).numpy()
        return self.agent.act(o, deterministic, generators)

    @torch.no_grad()
    def value(self, obs: ArrayLike, n_samples: int = 1024, generator: torch.Generator | None = None,
              proposal: str = "mixture") -> ArrayLike:
        """Soft value ``V(s) = alpha log ∫ exp(Q(s,a)/alpha) da`` by importance sampling.

        obs [B, obs_dim] -> [B]. ``proposal="mixture"`` (default) draws around the skill's own sampler
        actions plus a uniform share, which is unbiased and about 64x more sample-efficient than
        ``"uniform"`` on peaked Q-functions (tests/test_sql.py); 1024 samples by default.
        """
        o = checked(obs, self.obs_dim, device=self.device).reshape(-1, self.obs_dim)
        v = value_in_chunks(lambda chunk: self.agent.soft_value(self.agent.q, chunk, n_samples, generator, proposal),
                            o, n_samples)
        return like(v, obs)

    def make_env(self, **kwargs: Any) -> gym.Env:
        """The skill's own task (kwargs such as ``arm=``, ``render_mode=`` go to ``envs.make``), with the settings its
        manifest recorded (``task_kwargs``, ``recorded_env_kwargs``) where ``kwargs`` do not say otherwise."""
        return envs.make(task_of(self.info).name, **{**recorded_env_kwargs(self.info, self.path, kwargs), **kwargs})


def recorded_env_kwargs(info: Manifest, path: Path, given: dict) -> dict:
    """The ``envs.make`` settings a skill's manifest records (``task_kwargs``), checked, for those ``given`` leaves
    open. A recorded ``arm`` is a built-in name, or a path inside the skill's library (a path out of it is refused:
    a received manifest never makes the toolkit read elsewhere; pass ``arm=`` yourself to use that arm)."""
    recorded = {k: v for k, v in info.task_kwargs.items() if k not in given}
    arm = recorded.get("arm")
    if arm is None or (isinstance(arm, str) and arm in BUILTIN_ARMS):
        return recorded
    where = f"{path / MANIFEST}: task_kwargs.arm"
    if not isinstance(arm, str):
        raise SkillError(f"{where} must be a built-in arm name or an MJCF path, got {type(arm).__name__}")
    library = path.resolve().parent.parent
    try:
        recorded["arm"] = str(inside_library(library / arm, library, where))
    except SkillError as err:
        raise SkillError(f"{err}; pass the arm yourself (arm=..., --arm) to run skill {info.name!r} on it") from None
    return recorded


def load(name_or_path: str | Path, library: str | Path | None = None, device: str = "cpu",
         allow_stale: bool = False, allow_changed_task: bool = False) -> Skill:
    """Load a skill by name (``"reach"``, newest complete version), ``"reach@v2"``, or directory path.

    A saved composition (``compose.ComposedSkill.save``) loads as a skill whose Q is ``Q_w + R`` (``Q_w`` for
    averaging, ``Q_w - C_w`` for divergence correction); it is
    refused (``StaleSkillError``) when a constituent has been retrained since, unless ``allow_stale``.
    A skill whose task is defined differently now than when it was trained is refused (``TaskChangedError``,
    both definitions shown) unless ``allow_changed_task``.
    """
    path = resolve(name_or_path, library)
    # a name is read only from inside its library, whatever its version folder has become since it was resolved
    inside = None if is_path(name_or_path) else library_root(library)
    agent, info, transitions = read_skill(path, device=device, inside=inside)
    if not allow_stale:
        check_fresh(path, info)
    if not allow_changed_task:
        check_task_definition(path, info)
    return Skill(agent, info, transitions, path)
