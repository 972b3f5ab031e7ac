"""Multi-goal point mass (Haarnoja et al. 2017, Sec. 6.1): pure numpy, four goals.

``s' = clip(s + a, -7, 7)`` with ``a`` in ``[-1, 1]^2``; start near the origin; goals at
``(+-5, 0)`` and ``(0, +-5)``. Reward ``-30 |a|^2 - min_g |s' - g|^2``, plus 10 and termination
within distance 1 of a goal. A maximum-entropy policy keeps all four goals in play.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from .core import EpisodeTracker, Family, Task, checked_action

GOALS = np.array([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0], [0.0, -5.0]])
BOUND = 7.0  # positions are clipped to [-BOUND, BOUND]^2
GOAL_RADIUS = 1.0  # reaching within this distance of a goal ends the episode
INIT_STD = 0.1  # start position ~ N(0, INIT_STD^2 I)


def goal_distances(next_obs: np.ndarray, goals: np.ndarray = GOALS) -> np.ndarray:
    """Distance to every goal: [B, 2], goals [G, 2] -> [B, G]."""
    return np.linalg.norm(next_obs[:, None, :2] - goals[None], axis=-1)


def action_cost_term(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """``-|a|^2``: [B] (weight 30 in the task)."""
    return -np.sum(np.square(action), axis=-1)


def goal_distance_term(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """``-min_g |s' - g|^2``: [B]."""
    return -np.min(goal_distances(next_obs), axis=-1) ** 2


def at_goal(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Within ``GOAL_RADIUS`` of any goal: [B] bool. Also the goal bonus term (as 0/1)."""
    return np.min(goal_distances(next_obs), axis=-1) < GOAL_RADIUS


def goal_bonus_term(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """1 within ``GOAL_RADIUS`` of a goal, else 0: [B] (weight 10 in the task)."""
    return at_goal(next_obs, action).astype(np.float64)


FAMILY = Family(
    name="multigoal",
    terms={"action_cost": action_cost_term, "goal_distance": goal_distance_term, "goal_bonus": goal_bonus_term},
    success_checks={"at_goal": at_goal},
    every_step=frozenset(),
    gamma=0.95,  # effective horizon 20 steps; a goal is 4-6 steps away (docs/skills.md, "Discount")
    horizon=30,
    # |a|^2 <= 2 on [-1, 1]^2; min_g |s - g|^2 <= 53 on [-7, 7]^2 (at the corners)
    term_ranges={"action_cost": (-2.0, 0.0), "goal_distance": (-53.0, 0.0), "goal_bonus": (0.0, 1.0)},
    plane=lambda obs: obs[..., :2], plane_marks=lambda obs: GOALS, plane_label="position (x, y); marks: goals",
)
MULTIGOAL = Task("multigoal", FAMILY, {"action_cost": 30.0, "goal_distance": 1.0, "goal_bonus": 10.0},
                 success=("at_goal",))
TASKS = [MULTIGOAL]


class MultiGoalEnv(gym.Env):
    """2-D point mass with four goals (``GOALS``; subclasses set others). An episode ends at any goal."""

    GOALS = GOALS
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, task: Task = MULTIGOAL, render_mode: str | None = None, width: int = 400, height: int = 400):
        self.task = task
        self.tracker = EpisodeTracker(task)
        self.render_mode = render_mode
        self.size = (width, height)
        self.observation_space = gym.spaces.Box(-BOUND, BOUND, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.position = np.zeros(2)
        self.path: list[np.ndarray] = []

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.position = np.clip(self.np_random.normal(0.0, INIT_STD, size=2), -BOUND, BOUND)
        self.tracker.reset()
        self.path = [self.position.copy()]
        return self.position.astype(np.float32), {}

    def step(self, action):
        action = checked_action(action, 2)
        self.position = np.clip(self.position + action, -BOUND, BOUND)
        self.path.append(self.position.copy())
        obs = self.position.astype(np.float32)
        reward, info = self.tracker.step_info(obs, action)
        terminated = info["checks"]["at_goal"]
        info["goal"] = int(np.argmin(goal_distances(obs[None], self.GOALS)[0])) if terminated else -1
        return obs, reward, terminated, False, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        import cv2

        w, h = self.size
        img = np.full((h, w, 3), 255, np.uint8)
        side = min(w, h)  # a square view of [-BOUND, BOUND]^2, centred
        scale = (side - 1) / (2 * BOUND)

        def to_px(p: np.ndarray) -> tuple[int, int]:
            return int((w - side) / 2 + (p[0] + BOUND) * scale), int((h - side) / 2 + (BOUND - p[1]) * scale)

        radius = int(GOAL_RADIUS * scale)
        for goal in self.GOALS:
            cv2.circle(img, to_px(goal), radius, (60, 170, 60), -1)
        for a, b in zip(self.path[:-1], self.path[1:], strict=False):
            cv2.line(img, to_px(a), to_px(b), (40, 40, 200), 2)
        cv2.circle(img, to_px(self.position), 5, (200, 40, 40), -1)
        return img
