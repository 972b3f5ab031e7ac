"""What a composition builds from its constituents, with no environment samples: the amortized
sampler of ``pi_w ∝ exp(Q_w/alpha)`` and the bound's correction ``C``; trained once, then loaded
from the library cache (``compose.cache``)."""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from skills.library import CorruptSkillError
from skills.sql import SamplerNetwork, SoftQNetwork

from .bound import BoundConfig, PolicyGapConfig, fit_composition_correction, fit_policy_gap
from .cache import cache_path, load_cached, save_cached
from .composition import Composition
from .sampling import SamplerConfig, train_amortized_sampler


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


def build(composition: Composition, library: str | None, progress: bool, sampler_cfg: SamplerConfig | None = None,
          bound_cfg: BoundConfig | None = None) -> Built:
    """Train (or load from the library cache) the composed sampler and what the operator needs: its learned parts
    (fitted first: the sampler samples the energy they make), and for a bounded operator (``average``) the bound's
    ``C``."""
    sampler_cfg, bound_cfg = sampler_cfg or SamplerConfig(), bound_cfg or BoundConfig()
    op = composition.operator
    obs_scale = composition.parts[0].agent.q.obs_scale
    modules: dict[str, torch.nn.Module] = {
        "sampler": SamplerNetwork(composition.obs_dim, composition.act_dim, sampler_cfg.hidden, obs_scale),
        **op.modules(composition)}
    if op.bounded:
        modules["C"] = SoftQNetwork(composition.obs_dim, composition.act_dim, bound_cfg.hidden, obs_scale)
    path = cache_path(composition, op.cache_settings(sampler_cfg.to_dict(), bound_cfg.to_dict()), library)
    start = time.perf_counter()
    try:
        manifest = load_cached(path, modules, composition)
    except CorruptSkillError as err:
        warnings.warn(f"{err}; rebuilding it", stacklevel=2)
        manifest = None
    if manifest is not None:
        return Built(*built_networks(modules), True, manifest["sampler_wall_time_s"],
                     time.perf_counter() - start, manifest | {"cache": str(path)}, q=op.energy(composition, modules))
    modules, manifest, energy = fit_and_train(composition, modules, sampler_cfg, bound_cfg, progress)
    try:
        save_cached(path, modules, manifest, composition)
        where: dict[str, str | None] = {"cache": str(path)}
    except (OSError, ValueError) as err:  # a read-only or full library, a hostile lock file: the build is still good,
        # it just is not kept
        warnings.warn(f"could not cache the composition in {path} ({err}); it will be rebuilt next time", stacklevel=2)
        where = {"cache": None, "cache_error": str(err)}
    return Built(*built_networks(modules), False, manifest["sampler_wall_time_s"], 0.0, manifest | where,
                 q=energy)


def built_networks(modules: dict[str, torch.nn.Module]) -> tuple[SamplerNetwork, SoftQNetwork | None]:
    """The composed sampler and (bounded operators) the bound's ``C`` among the built modules."""
    sampler, correction = modules["sampler"], modules.get("C")
    assert isinstance(sampler, SamplerNetwork) and (correction is None or isinstance(correction, SoftQNetwork))
    return sampler, correction


def fit_and_train(composition: Composition, modules: dict[str, torch.nn.Module], sampler_cfg: SamplerConfig,
                  bound_cfg: BoundConfig, progress: bool) -> tuple[dict[str, torch.nn.Module], dict, Callable]:
    """The build itself, with no environment samples: the operator's offline fits, the amortized sampler on the
    energy they make, and (bounded operators) the bound's ``C``. Returns the modules, the cache manifest and the
    energy."""
    op = composition.operator
    o_start = time.perf_counter()
    fitted, o_info = op.fit(composition, progress)
    modules = modules | fitted
    operator_time = time.perf_counter() - o_start
    energy = op.energy(composition, modules)
    obs_scale = composition.parts[0].agent.q.obs_scale
    modules["sampler"], s_info = train_amortized_sampler(energy, composition.states(), composition.act_dim,
                                                         composition.alpha, obs_scale, sampler_cfg, progress)
    manifest = {
        "constituents": [str(p.path) for p in composition.parts], "weights": composition.weights.tolist(),
        "operator": op.settings(), "sampler": sampler_cfg.to_dict(),
        "sampler_wall_time_s": s_info["wall_time_s"], "operator_wall_time_s": operator_time,
        "operator_fit": o_info, "env_steps_used": 0,
    }
    if op.bounded:
        c_start = time.perf_counter()
        modules["C"], c_info = fit_composition_correction(composition, bound_cfg)
        manifest |= {"bound": bound_cfg.to_dict(), "correction_wall_time_s": time.perf_counter() - c_start,
                     "gap": c_info}
    return modules, manifest, energy


def module_sha256(module: torch.nn.Module) -> str:
    """A checksum of a module's weights (names, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def build_policy_gap(composition: Composition, built: Built, library: str | None, bound_cfg: BoundConfig | None = None,
                     gap_cfg: PolicyGapConfig = PolicyGapConfig()) -> tuple[SoftQNetwork, dict]:
    """The composed policy's own gap ``D`` (``compose.bound.fit_policy_gap``; bounded operators), loaded from the
    library cache or fitted with no environment samples and cached. Its entry is keyed by the constituents, the
    settings and the composed sampler's weights (the resampling is centred on its actions)."""
    bound_cfg = bound_cfg or BoundConfig()
    net = SoftQNetwork(composition.obs_dim, composition.act_dim, bound_cfg.hidden, composition.parts[0].agent.q.obs_scale)
    settings = {"policy_gap": gap_cfg.to_dict(), "bound": bound_cfg.to_dict(), "sampler_sha256": module_sha256(built.sampler)}
    path = cache_path(composition, settings, library)
    try:
        manifest = load_cached(path, {"D": net}, composition, required=("correction_wall_time_s",))
    except CorruptSkillError as err:
        warnings.warn(f"{err}; refitting it", stacklevel=2)
        manifest = None
    if manifest is not None:
        return net, manifest["gap"] | {"cache": str(path), "cached": True}
    net, info = fit_policy_gap(composition, built.sampler, bound_cfg, gap_cfg)
    manifest = {"kind": "policy_gap", "settings": settings, "correction_wall_time_s": info["wall_s"], "gap": info,
                "env_steps_used": 0}
    try:
        save_cached(path, {"D": net}, manifest, composition)
    except (OSError, ValueError) as err:
        warnings.warn(f"could not cache the policy gap in {path} ({err}); it will be refitted next time", stacklevel=2)
    return net, info | {"cache": str(path), "cached": False}
