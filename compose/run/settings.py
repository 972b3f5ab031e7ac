"""What a composition run is given: how to evaluate (``EvaluationConfig``), how to build (``BuildConfig``), and
where things come from and go (``Sources``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skills.evaluation import EVAL_SEED

from ..bound import BoundConfig
from ..mc_check import MCBoundConfig
from ..sampling import SamplerConfig

SAMPLERS = ("amortized", "particles", "resampling")


@dataclass(frozen=True)
class EvaluationConfig:
    """How every policy is evaluated: the same seeded episodes of the combined task for all of them."""

    episodes: int = 100  # evaluation episodes per policy (seeds seed, seed + 1, ...)
    seed: int = EVAL_SEED
    deterministic: bool = False  # every policy takes the best of 32 sampled actions under its Q (else its max-ent policy)
    sampler: str = "amortized"  # how the composed policy draws: amortized, particles (SVGD per step), resampling
    mc: MCBoundConfig | None = MCBoundConfig()  # the Monte Carlo bound check (None: skipped)
    render: bool = False  # an mp4 of the composed policy (one operator)
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # envs.make options, e.g. a custom arm
    trajectory_episodes: int = 20  # episodes drawn in the operators' trajectory figure

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; valid: {', '.join(SAMPLERS)}")
        if self.episodes < 1 or self.trajectory_episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes} (trajectory_episodes {self.trajectory_episodes})")

    @property
    def mode(self) -> str:
        return "deterministic" if self.deterministic else "stochastic"


@dataclass(frozen=True)
class BuildConfig:
    """How each composition's parts are built (or found in the library cache)."""

    sampler: SamplerConfig = SamplerConfig()
    bound: BoundConfig = BoundConfig()
    progress: bool = True


@dataclass(frozen=True)
class Sources:
    """Where the skills come from and the report goes."""

    library: str | None = None  # skill library (default: trained/ or $COMPOSABLE_SKILLS_LIBRARY)
    out: str | Path | None = None  # output directory (default: runs/compose/<spec>-<time>)
    joint: str | None = None  # the jointly trained reference (default: the combined task's newest skill)
    allow_changed_task: bool = False  # use skills whose task has been defined differently since they were trained
