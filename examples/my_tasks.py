"""An objective of your own on the arm family: keep the end effector low.

    python -m skills.train stay_low --tasks examples/my_tasks.py            # train it as a skill
    python -m skills.train reach+stay_low --tasks examples/my_tasks.py      # the jointly trained reference
    python -m compose.run reach+stay_low --tasks examples/my_tasks.py       # compose it with the shipped reach

Observations are the arm family's (``envs.arm``): the end effector's position in the workspace frame is
``obs[:, 0:3]`` (origin at its start), so its height above the start is ``obs[:, 2]``.
"""

import numpy as np

import envs

CEILING = 0.12  # metres above the start: never go higher
SLOPE = 0.04  # the penalty ramps from CEILING - SLOPE to CEILING


def below_ceiling(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """0 while the end effector is low, falling to -1 at the ceiling and above: [B, 12], [B, 3] -> [B]."""
    return -np.clip((next_obs[:, 2] - (CEILING - SLOPE)) / SLOPE, 0.0, 1.0)


def under_ceiling(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """The end effector is under the ceiling: [B] bool."""
    return next_obs[:, 2] < CEILING


stay_low = envs.task("stay_low", "fetch-arm", weights={"low": 1.0},
                     terms=[envs.Term("low", below_ceiling, range=(-1.0, 0.0))],
                     success=[envs.Check("under_ceiling", under_ceiling, every_step=True)])
