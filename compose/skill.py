"""A composition that acts like a skill: ``compose.load`` gives one.

``ComposedSkill`` is a ``compose.composition.Composition`` (constituents, weights, operator, ``Q_w``) with the calls a
skill answers (``act``, ``sample``, ``q``, ``value``; ``skills.policy.SoftPolicy``), ``build`` (the composed sampler
and the operator's learned parts, from the library cache or trained on first use with no environment samples)
and ``save`` (into the skill library, ``compose.library``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import skills

from .bound import BoundConfig
from .build import Built, build
from .composition import Composition, checked_pair
from .library import reopen, save, save_target, saved_entry
from .operators import Operator, make_operator
from .policy import ComposedPolicy
from .sampling import SamplerConfig


class CheckedEnergy:
    """An operator's energy ``q(obs, act)`` as ``ComposedSkill.q`` gives it: inputs checked (``checked_pair``); tensors
    in, tensors out; numpy in, numpy out."""

    def __init__(self, fn, obs_dim: int, act_dim: int):
        self.fn, self.obs_dim, self.act_dim = fn, obs_dim, act_dim

    def __call__(self, obs, act):
        obs, act = checked_pair(obs, act, self.obs_dim, self.act_dim)
        if isinstance(obs, torch.Tensor) and isinstance(act, torch.Tensor):
            return self.fn(obs, act)
        with torch.no_grad():
            return self.fn(torch.as_tensor(obs), torch.as_tensor(act)).numpy()

    def __getattr__(self, name: str):
        """The energy's own parts (``dc``'s ``correction``, ``gpi``'s evaluations) as the operator defines them."""
        if name == "fn":  # not set yet (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.fn, name)


class ComposedSkill(Composition):
    """A composition of skills that acts like a skill (``act``, ``sample``, ``q``, ``value``).

    The amortized sampler they need is built on first use (a progress bar; no environment samples) or loaded from
    the library cache, where ``compose.run`` and ``build()`` leave it.
    """

    def __init__(self, parts: Sequence[skills.Skill], weights: Sequence[float] | None = None,
                 labels: Sequence[str] | None = None, library: str | None = None, seed: int = 0,
                 operator: str | Operator = "average"):
        super().__init__(parts, weights, labels, library, seed, operator)
        self._policy: ComposedPolicy | None = None
        self.saved: Path | None = None  # the library entry it was reopened from (``load`` of a saved name)

    def build(self, progress: bool = True, sampler_cfg: SamplerConfig | None = None,
              bound_cfg: BoundConfig | None = None) -> Built:
        """Train the composed sampler and what the operator needs (or load them from the library cache); returns
        ``compose.build.Built``. Acting calls this on first use, with the default settings."""
        built = build(self, self.library, progress, sampler_cfg, bound_cfg)
        self._policy = ComposedPolicy(self, built.sampler, self.seed, q_fn=built.q)
        return built

    @property
    def policy(self) -> ComposedPolicy:
        """The composed max-ent policy (``compose.policy.ComposedPolicy``), built on first use."""
        if self._policy is None:
            self.build()
        assert self._policy is not None
        return self._policy

    @property
    def q(self):
        """The composed soft Q-function the policy samples, ``pi ∝ exp(q/alpha)``: ``Q_w`` (``ComposedQ``, with
        ``gap``) for ``average``; the operator's energy otherwise (its learned parts built on first use).
        Callable: tensors in, tensors out (with autograd); numpy in, numpy out."""
        return self.q_w if self.operator.bounded else CheckedEnergy(self.policy.q_fn, self.obs_dim, self.act_dim)

    def act(self, obs, deterministic: bool = False, generators: Sequence[torch.Generator] | None = None) -> np.ndarray:
        """One action per state [o] or [B, o]: a sample of ``pi`` (``deterministic``: the best of 32 under the energy);
        ``generators``: one random stream per row (lockstep evaluation)."""
        return self.policy.act(obs, deterministic, generators)

    def sample(self, obs, n: int):
        """``n`` actions per state from the composed sampler: [B, o] -> [B, n, d]."""
        return self.policy.sample(obs, n)

    def value(self, obs, n_samples: int = 1024):
        """``V(s) = alpha log ∫ exp(Q(s,a)/alpha) da`` of the energy: [B, o] -> [B]."""
        return self.policy.value(obs, n_samples)

    def save(self, name: str | None = None, library: str | Path | None = None, progress: bool = True) -> Path:
        """Write this composition to the skill library as ``<name>/v<N>`` (default name ``"reach+avoid.composed"``,
        default library its constituents'): ``compose.load(name)`` and ``skills.load(name)`` reopen it with no
        rebuild (averaging and ``dc``: an energy of the form ``Q_w + R``). Builds the sampler first if needed. Returns
        the new version's directory."""
        save_target(self, name, library)  # a save that would be refused is refused before the sampler is built
        if self._policy is None:
            self.build(progress=progress)
        sampler = self._policy.sampler if self._policy is not None else None
        return save(self, sampler, name, library)


def spec_names(spec: str) -> list[str]:
    """The skills a spec names: ``reach+avoid`` -> ``["reach", "avoid"]``; a skill whose own name or path has a '+'
    goes in parentheses: ``(reach+avoid)+stay_low`` -> ``["reach+avoid", "stay_low"]``. Unbalanced parentheses or an
    empty name are a ``ValueError`` that shows the spec."""
    names, depth, start = [], 0, 0
    for i, ch in enumerate(spec + "+"):
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            break
        if ch == "+" and depth == 0:
            names.append(spec[start:i])
            start = i + 1
    if depth != 0:
        raise ValueError(f"unbalanced parentheses in {spec!r}: a skill whose name has a '+' goes in one pair, "
                         "e.g. (reach+avoid)+stay_low")
    names = [n[1:-1] if n.startswith("(") and n.endswith(")") else n for n in names]
    if not all(names):
        raise ValueError(f"an empty skill name in {spec!r}: skills are joined by one '+', e.g. reach+avoid")
    return names


def load(spec: str | Sequence[str], weights: Sequence[float] | None = None, library: str | None = None,
         seed: int = 0, allow_stale: bool = False, operator: str | Operator = "average", allow_changed_task: bool = False,
         **settings: Any) -> ComposedSkill:
    """Load ``"reach+avoid"`` (or a list of skill names or paths) from the library and compose them; or reopen a
    saved composition by its name (``"reach+avoid.composed"``, ``ComposedSkill.save``). A skill whose name has a
    '+' goes in parentheses: ``"(reach+avoid)+stay_low"`` (``spec_names``).

    The result acts like a skill (``act``, ``sample``, ``q``, ``value``); its sampler comes from the saved
    entry, the library cache, or is built on first use. ``seed`` seeds its sampling. A saved composition
    whose constituents were retrained since is refused (``skills.StaleSkillError``) unless ``allow_stale``; skills
    whose task has been defined differently since they were trained (``skills.TaskChangedError``) unless
    ``allow_changed_task``.
    ``operator`` picks how the skills combine (an ``compose.operators.Operator``, or its name with its
    ``settings``, e.g. ``operator="priority", order=["avoid", "reach"]``); every operator returns this same
    policy object.
    """
    if isinstance(spec, (str, Path)):
        saved = saved_entry(str(spec), library)
        if saved is not None:
            if weights is not None or settings or make_operator(operator) != make_operator("average"):
                raise ValueError(f"{spec} is a saved composition with its own weights and operator; compose its "
                                 "constituents to choose others")
            return reopened(saved, library, seed, allow_stale)
    names = spec_names(str(spec)) if isinstance(spec, (str, Path)) else list(spec)
    parts = [skills.load(n, library, allow_changed_task=allow_changed_task) for n in names]
    return ComposedSkill(parts, weights, labels=names, library=library, seed=seed,
                         operator=make_operator(operator, **settings))


def reopened(path: Path, library: str | None, seed: int, allow_stale: bool) -> ComposedSkill:
    """The ``ComposedSkill`` a saved entry holds, with its sampler and its energy (``Q_w + R``, the saved Q-network;
    averaging's ``Q_w`` itself): no rebuild."""
    entry = reopen(path, allow_stale)
    composition = ComposedSkill(entry.parts, list(entry.record.weights), labels=[p.spec for p in entry.record.constituents],
                                library=library if library is not None else str(entry.library), seed=seed,
                                operator=entry.operator)
    q_fn = None if entry.operator.bounded else entry.agent.q
    composition._policy = ComposedPolicy(composition, entry.agent.sampler, seed, q_fn=q_fn)
    composition.saved = path
    return composition
