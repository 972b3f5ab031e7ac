"""What a composition builds from its constituents, with no environment samples: the amortized
sampler of ``pi_w ∝ exp(Q_w/alpha)`` and the bound's correction ``C``; trained once, then loaded
from the library cache (``compose.cache``)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from skills.library import CorruptSkillError
from skills.sql import SamplerNetwork, SoftQNetwork
from skills.sql.many_skills import StackedQ

from .bound import BoundConfig, fit_composition_correction
from .cache import cache_path, load_cached, save_cached
from .composition import Composition
from .operators import (
    GPIQ,
    CorrectionNetwork,
    DivergenceCorrectedQ,
    PriorityQ,
    SoftOrQ,
    fit_divergence_correction,
    fit_policy_evaluations,
)
from .sampling import SamplerConfig, train_amortized_sampler
from .saved import relabelled_transitions


@dataclass
class Built:
    """What the composition built (or loaded from the cache), and what it cost."""

    sampler: SamplerNetwork
    correction: SoftQNetwork | None  # the bound's C (operator "average" only)
    cached: bool
    build_wall_time_s: float  # time to build the composed sampler (first build, even when cached)
    load_wall_time_s: float
    info: dict = field(default_factory=dict)
    q: Callable | None = None  # the energy the sampler samples (Q_w, or the operator's), obs, act -> Q


def operator_modules(composition: Composition) -> dict[str, torch.nn.Module]:
    """Empty modules for an operator's learned parts (filled by a fit or from the cache)."""
    op, n = composition.operator, len(composition.parts)
    obs_scale = composition.parts[0].agent.q.obs_scale
    if op.name == "dc":
        return {"dc": CorrectionNetwork(composition.obs_dim, composition.act_dim, n, op.hidden, obs_scale)}
    if op.name == "gpi":
        widths = [composition.obs_dim + composition.act_dim, *op.hidden, 1]
        return {"gpi": StackedQ.empty(n, list(zip(widths[:-1], widths[1:])), composition.obs_dim)}
    return {}


def fit_operator(composition: Composition, progress: bool) -> tuple[dict[str, torch.nn.Module], dict]:
    """Fit an operator's learned parts offline on the constituents' stored transitions (no environment samples)."""
    op = composition.operator
    common = dict(stacked=composition.q_w.stacked, samplers=[p.agent.sampler for p in composition.parts],
                  gamma=composition.gamma, obs_scale=composition.parts[0].agent.q.obs_scale, config=op,
                  progress=progress)
    if op.name == "dc":
        net, info = fit_divergence_correction(transitions=composition.transitions(), weights=composition.weights,
                                              alpha=composition.alpha, **common)
        return {"dc": net}, info
    if op.name == "gpi":
        data = relabelled_transitions(composition)
        generator = torch.Generator().manual_seed(op.seed)  # V_i drawn the same whatever ran before
        values = [np.asarray(p.value(data["next_obs"], 4 * op.value_samples, generator=generator))
                  for p in composition.parts]
        stacked, info = fit_policy_evaluations(values=values, transitions=data, **common)
        return {"gpi": stacked}, info
    return {}, {}


def operator_energy(composition: Composition, modules: dict[str, torch.nn.Module]) -> Callable:
    """The energy ``Q_op`` the composed sampler samples, from the operator and its (fitted or loaded) parts."""
    op, q_w = composition.operator, composition.q_w
    if op.name == "average":
        return q_w
    if op.name == "or":
        return SoftOrQ(q_w.stacked, composition.alpha)
    if op.name == "dc":
        return DivergenceCorrectedQ(q_w.stacked, q_w.weights, modules["dc"])
    if op.name == "gpi":
        return GPIQ(modules["gpi"])
    rank = [composition.labels.index(label) for label in op.order]
    return PriorityQ(q_w.stacked, [p.agent.sampler for p in composition.parts], rank, op)


def build(composition: Composition, library: str | None, progress: bool, sampler_cfg: SamplerConfig | None = None,
          bound_cfg: BoundConfig | None = None) -> Built:
    """Train (or load from the library cache) the composed sampler and what the operator needs: for ``average``
    the bound's ``C``; for ``dc`` and ``gpi`` their learned parts (fitted first: the sampler samples them)."""
    sampler_cfg, bound_cfg = sampler_cfg or SamplerConfig(), bound_cfg or BoundConfig()
    averaging = composition.operator.name == "average"
    obs_scale = composition.parts[0].agent.q.obs_scale
    sampler = SamplerNetwork(composition.obs_dim, composition.act_dim, sampler_cfg.hidden, obs_scale)
    modules: dict[str, torch.nn.Module] = {"sampler": sampler}
    if averaging:  # the cache key of an averaged composition is what it was before operators existed
        modules["C"] = SoftQNetwork(composition.obs_dim, composition.act_dim, bound_cfg.hidden, obs_scale)
        settings = {"sampler": sampler_cfg.to_dict(), "bound": bound_cfg.to_dict()}
    else:
        modules |= operator_modules(composition)
        settings = {"sampler": sampler_cfg.to_dict(), "operator": composition.operator.settings()}
    path = cache_path(composition, settings, library)
    start = time.perf_counter()
    try:
        manifest = load_cached(path, modules, composition)
    except CorruptSkillError as err:
        warnings.warn(f"{err}; rebuilding it", stacklevel=2)
        manifest = None
    if manifest is not None:
        return Built(sampler, modules.get("C"), True, manifest["sampler_wall_time_s"], time.perf_counter() - start,
                     manifest | {"cache": str(path)}, q=operator_energy(composition, modules))
    o_start = time.perf_counter()
    fitted, o_info = fit_operator(composition, progress)
    modules |= fitted
    operator_time = time.perf_counter() - o_start
    energy = operator_energy(composition, modules)
    sampler, s_info = train_amortized_sampler(energy, composition.states(), composition.act_dim,
                                              composition.alpha, obs_scale, sampler_cfg, progress)
    modules["sampler"] = sampler
    manifest = {
        "constituents": [str(p.path) for p in composition.parts], "weights": composition.weights.tolist(),
        "operator": composition.operator.settings(), "sampler": sampler_cfg.to_dict(),
        "sampler_wall_time_s": s_info["wall_time_s"], "operator_wall_time_s": operator_time,
        "operator_fit": o_info, "env_steps_used": 0,
    }
    if averaging:
        c_start = time.perf_counter()
        modules["C"], c_info = fit_composition_correction(composition, bound_cfg)
        manifest |= {"bound": bound_cfg.to_dict(), "correction_wall_time_s": time.perf_counter() - c_start,
                     "gap": c_info}
    try:
        save_cached(path, modules, manifest, composition)
        where = {"cache": str(path)}
    except OSError as err:  # a read-only or full library: the build is still good, it just is not kept
        warnings.warn(f"could not cache the composition in {path} ({err}); it will be rebuilt next time", stacklevel=2)
        where = {"cache": None, "cache_error": str(err)}
    return Built(sampler, modules.get("C"), False, s_info["wall_time_s"], 0.0, manifest | where, q=energy)
