"""What a composition builds from its constituents, with no environment samples: the amortized
sampler of ``pi_w ∝ exp(Q_w/alpha)`` and the bound's correction ``C``; trained once, then loaded
from the library cache (``compose.cache``)."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

from skills.library import CorruptSkillError
from skills.sql import SamplerNetwork, SoftQNetwork

from .bound import BoundConfig, fit_composition_correction
from .cache import cache_path, load_cached, save_cached
from .composition import Composition
from .sampling import SamplerConfig, train_amortized_sampler


@dataclass
class Built:
    """What the composition built (or loaded from the cache), and what it cost."""

    sampler: SamplerNetwork
    correction: SoftQNetwork
    cached: bool
    build_wall_time_s: float  # time to build the composed sampler (first build, even when cached)
    load_wall_time_s: float
    info: dict = field(default_factory=dict)


def build(composition: Composition, library: str | None, progress: bool, sampler_cfg: SamplerConfig | None = None,
          bound_cfg: BoundConfig | None = None) -> Built:
    """Train (or load from the library cache) the composed sampler and the bound's ``C``."""
    sampler_cfg, bound_cfg = sampler_cfg or SamplerConfig(), bound_cfg or BoundConfig()
    obs_scale = composition.parts[0].agent.q.obs_scale
    sampler = SamplerNetwork(composition.obs_dim, composition.act_dim, sampler_cfg.hidden, obs_scale)
    correction = SoftQNetwork(composition.obs_dim, composition.act_dim, bound_cfg.hidden, obs_scale)
    path = cache_path(composition, {"sampler": sampler_cfg.to_dict(), "bound": bound_cfg.to_dict()}, library)
    start = time.perf_counter()
    try:
        manifest = load_cached(path, {"sampler": sampler, "C": correction}, composition)
    except CorruptSkillError as err:
        warnings.warn(f"{err}; rebuilding it", stacklevel=2)
        manifest = None
    if manifest is not None:
        return Built(sampler, correction, True, manifest["sampler_wall_time_s"], time.perf_counter() - start,
                     manifest | {"cache": str(path)})
    sampler, s_info = train_amortized_sampler(composition.q, composition.states(), composition.act_dim,
                                              composition.alpha, obs_scale, sampler_cfg, progress)
    c_start = time.perf_counter()
    correction, c_info = fit_composition_correction(composition, bound_cfg)
    manifest = {
        "constituents": [str(p.path) for p in composition.parts], "weights": composition.weights.tolist(),
        "sampler": sampler_cfg.to_dict(), "bound": bound_cfg.to_dict(),
        "sampler_wall_time_s": s_info["wall_time_s"], "correction_wall_time_s": time.perf_counter() - c_start,
        "gap": c_info, "env_steps_used": 0,
    }
    try:
        save_cached(path, {"sampler": sampler, "C": correction}, manifest, composition)
        where = {"cache": str(path)}
    except OSError as err:  # a read-only or full library: the build is still good, it just is not kept
        warnings.warn(f"could not cache the composition in {path} ({err}); it will be rebuilt next time", stacklevel=2)
        where = {"cache": None, "cache_error": str(err)}
    return Built(sampler, correction, False, s_info["wall_time_s"], 0.0, manifest | where)
