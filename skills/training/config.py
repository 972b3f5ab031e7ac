"""What a training run does beside the SQL hyperparameters (``TrainConfig``), what it returns (``TrainResult``),
and the seed-list check shared by the command line and the trainer."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

STORED_TRANSITIONS = 10_000  # transitions shipped with a skill for composition
MAX_SEEDS = 1024  # seeds one process may train side by side
POLISH_LIMIT = 1_000_000  # updates of one polish (skills.training.polish): a typo such as 50000000 is refused


@dataclass(frozen=True)
class TrainConfig:
    """What a training run does, beside the SQL hyperparameters."""

    steps: int = 50_000  # environment steps (one SQL update per step after warm-up)
    seed: int = 0  # seeds env, action space, numpy, python and torch
    eval_interval: int = 5_000  # evaluate and checkpoint every N steps
    eval_episodes: int = 20  # episodes per periodic evaluation (seeds 10_000, 10_001, ...)
    final_eval_episodes: int = 100  # episodes of the final evaluation stored in the manifest
    deterministic_eval: bool = False  # periodic evaluations: sampled (max-ent) policy unless True
    deterministic_curve: bool = False  # also evaluate the deterministic policy periodically (det_* columns)
    device: str = "cpu"  # torch device ("cpu", "cuda")
    threads: int = 1  # torch CPU threads; 1 is robust on 2 cores (see docs/skills.md)
    overlap_env_step: bool = True  # step the env in a child process (2nd core) while the SQL update runs
    progress: bool = True  # show a progress bar
    value_check_interval: int = 1000  # check soft values against their analytic bounds every N steps (0: never)
    value_check_patience: int = 2  # stop when the excess over the bound has not shrunk over this many checks in a row
    convergence: bool = True  # final report: Monte Carlo soft returns and Bellman residuals (skills.evaluation.diagnostics)
    polish_updates: int = 0  # after the last step: this many updates of skills.training.polish on the whole buffer (0: none)

    def __post_init__(self) -> None:
        small = {k: getattr(self, k) for k in ("steps", "eval_interval", "eval_episodes", "final_eval_episodes", "threads",
                                               "value_check_patience")
                 if not (isinstance(getattr(self, k), int) and getattr(self, k) >= 1)}
        if not (isinstance(self.value_check_interval, int) and self.value_check_interval >= 0):
            small["value_check_interval"] = self.value_check_interval
        if not (isinstance(self.polish_updates, int) and 0 <= self.polish_updates <= POLISH_LIMIT):
            small["polish_updates"] = self.polish_updates
        if not (isinstance(self.seed, int) and self.seed >= 0):
            small["seed"] = self.seed
        if small:
            raise ValueError(f"TrainConfig: {', '.join(f'{k}={v!r}' for k, v in small.items())}: steps, intervals, "
                             "episodes and threads must be whole numbers >= 1 (value_check_interval, polish_updates "
                             f"and seed >= 0; polish_updates <= {POLISH_LIMIT})")


@dataclass
class TrainResult:
    """Where the skill went and how it did."""

    path: Path
    metrics: dict
    env_steps: int
    wall_time_s: float
    history: list[dict] = field(default_factory=list)


def check_seeds(seeds: Iterable[int]) -> list[int]:
    """The seeds as a list of ints; a ``ValueError`` for none, repeats, negatives or more than ``MAX_SEEDS``."""
    seeds = [int(s) for s in seeds]
    if len(seeds) > MAX_SEEDS:
        raise ValueError(f"{len(seeds)} seeds; one process trains at most {MAX_SEEDS} side by side")
    repeated = sorted({s for s, count in _counts(seeds).items() if count > 1})
    if repeated:
        raise ValueError(f"seed(s) {repeated} given more than once; each seed trains once")
    if not seeds or min(seeds) < 0:
        raise ValueError(f"expected one or more seeds >= 0, got {seeds}")
    return seeds


def _counts(values: list[int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out
