"""Training skills: the run's settings (``config``) and tuned defaults (``defaults``), one seed's run and its phases
(``seed_run``), the one training loop for one or many seeds (``loop``), the training env (``envs``), the replay
buffer (``buffer``) and the progress bar (``progress``)."""

from __future__ import annotations

from .config import TrainConfig, TrainResult, check_seeds
from .loop import MultiSeedTrainer, Trainer, newest_of_seed, rest_of_budget
from .seed_run import SeedRun, StartFrom

__all__ = ["MultiSeedTrainer", "SeedRun", "StartFrom", "TrainConfig", "TrainResult", "Trainer", "check_seeds",
           "newest_of_seed", "rest_of_budget"]
