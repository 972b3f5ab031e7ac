"""Maximum-entropy skills trained with Soft Q-learning, saved as safetensors + JSON.

>>> import skills
>>> reach = skills.load("reach")               # newest complete version in trained/
>>> reach.q(obs, act), reach.sample(obs, 8), reach.act(obs), reach.value(obs), reach.manifest
>>> skills.list_skills()                         # what is in the library

Train: ``python -m skills.train TASK``.  Evaluate: ``python -m skills.evaluate SKILL``.
"""

from __future__ import annotations

import envs  # noqa: F401  (chooses the OpenGL backend before mujoco is imported)

from .library import (
    CorruptSkillError,
    Skill,
    SkillError,
    StaleSkillError,
    TaskChangedError,
    UnsupportedFormatError,
    default_library,
    list_skills,
    load,
    resolve,
)
from .sql import SoftQLearning, SQLConfig, TrainingDiverged
from .training import TrainConfig, Trainer, TrainResult

__all__ = [
    "CorruptSkillError", "SQLConfig", "Skill", "SkillError", "SoftQLearning", "StaleSkillError", "TaskChangedError",
    "TrainConfig", "TrainResult",
    "Trainer", "TrainingDiverged", "UnsupportedFormatError", "default_library", "list_skills", "load", "resolve",
]
