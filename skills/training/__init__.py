"""Training skills: the run's settings and tuned defaults (``defaults``), the training loop for one or many seeds
(``trainer``, ``seeds``), the replay buffer (``buffer``) and the progress bar (``progress``)."""

from __future__ import annotations

from .trainer import TrainConfig, Trainer, TrainResult

__all__ = ["TrainConfig", "TrainResult", "Trainer"]
