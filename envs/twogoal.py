"""Two goals, one choice: where averaging skills must fail (after Hunt et al. 2019, Fig. 1).

The point mass of ``multigoal`` (``s' = clip(s + a, -7, 7)``, ``a`` in ``[-1, 1]^2``, start near
the origin) with two goals, west ``(-4, 0)`` and east ``(4, 0)``; reaching within distance 1 of
*either* ends the episode in every task (the dynamics are shared). Every task pays the same
per-step cost (``-0.5`` per step and ``-0.5 |a|^2``); they differ only in the bonus at the goal:

* ``west``: +20 on reaching the west goal (0 at the east one);
* ``east``: +20 on reaching the east goal;
* ``west+east``: the mean, +10 at either goal. Its optimal policy picks one goal and goes
  straight there. Success is reaching either goal.

The averaged Q-function ``(Q_west + Q_east) / 2`` is highest for neither direction at the start,
so ``pi ∝ exp(Q_w/alpha)`` hesitates; divergence correction, GPI and soft-OR commit
(``compose.operators``). Soft-OR's exactness conditions hold here apart from the discount: the
transitions are deterministic and the tasks differ only in their rewards at the absorbing goals.
"""

from __future__ import annotations

import numpy as np

from .core import Family, Task
from .multigoal import GOAL_RADIUS, MultiGoalEnv, action_cost_term, goal_distances

GOALS = np.array([[-4.0, 0.0], [4.0, 0.0]])  # west, east
GOAL_BONUS = 20.0  # each constituent's bonus at its own goal


def time_cost_term(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """``-1`` every step: [B] (weight 0.5 in every task)."""
    return -np.ones(len(next_obs))


def at_goal(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Within ``GOAL_RADIUS`` of either goal (the episode ends): [B] bool."""
    return np.min(goal_distances(next_obs, GOALS), axis=-1) < GOAL_RADIUS


def at_west(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Within ``GOAL_RADIUS`` of the west goal: [B] bool; as a reward term, 0/1."""
    return goal_distances(next_obs, GOALS)[:, 0] < GOAL_RADIUS


def at_east(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Within ``GOAL_RADIUS`` of the east goal: [B] bool; as a reward term, 0/1."""
    return goal_distances(next_obs, GOALS)[:, 1] < GOAL_RADIUS


def west_bonus_term(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    return at_west(next_obs, action).astype(np.float64)


def east_bonus_term(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    return at_east(next_obs, action).astype(np.float64)


FAMILY = Family(
    name="twogoal",
    terms={"time_cost": time_cost_term, "action_cost": action_cost_term,
           "west_bonus": west_bonus_term, "east_bonus": east_bonus_term},
    success_checks={"at_goal": at_goal, "at_west": at_west, "at_east": at_east},
    every_step=frozenset(),
    gamma=0.95,
    horizon=30,
    term_ranges={"time_cost": (-1.0, -1.0), "action_cost": (-2.0, 0.0), "west_bonus": (0.0, 1.0),
                 "east_bonus": (0.0, 1.0)},
    plane=lambda obs: obs[..., :2], plane_marks=lambda obs: GOALS, plane_label="position (x, y); marks: west and east goals",
)
SHARED = {"time_cost": 0.5, "action_cost": 0.5}
WEST = Task("west", FAMILY, SHARED | {"west_bonus": GOAL_BONUS}, success=("at_west",))
EAST = Task("east", FAMILY, SHARED | {"east_bonus": GOAL_BONUS}, success=("at_east",))
# Registered by hand, not with COMBINED's mean_task: its success is *either* goal, not both.
WEST_EAST = Task("west+east", FAMILY, SHARED | {"west_bonus": GOAL_BONUS / 2, "east_bonus": GOAL_BONUS / 2},
                 success=("at_goal",), parts=("west", "east"))
TASKS = [WEST, EAST, WEST_EAST]


class TwoGoalEnv(MultiGoalEnv):
    """The multigoal point mass with the two goals ``GOALS``; ``info["goal"]``: 0 west, 1 east, -1 none."""

    GOALS = GOALS

    def __init__(self, task: Task = WEST_EAST, **kwargs):
        super().__init__(task, **kwargs)
