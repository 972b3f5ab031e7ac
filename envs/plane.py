"""A continuous task whose soft-optimal values are known: a point on the plane (``compose.groundtruth`` solves it).

``s' = clip(s + STEP a, -1, 1)`` with ``a`` in ``[-1, 1]^2``: deterministic, two-dimensional, so fine-grid soft value
iteration with action quadrature computes ``Q*`` of every task to known accuracy. The start is uniform on the box.
Two goals, ``upper`` at ``(0.5, 0.4)`` and ``lower`` at ``(0.5, -0.4)``:

* ``plane-upper``: ``r = -|s' - g_upper|``; ``plane-lower``: ``r = -|s' - g_lower|``;
* ``plane-upper+plane-lower``: their mean. The two constituents disagree about where to go, so averaging them has a
  real gap ``delta = sum_i w_i V_i - V_w > 0``, which the bound's ``C`` must cover.

Success (ours): within ``SUCCESS_RADIUS`` of the rewarded goal at the episode's end (of the nearer goal for the mean).
Horizon 30 (bootstrapped through), gamma 0.9.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from .core import EpisodeTracker, Family, Task, checked_action

STEP = 0.1  # metres per step at |a| = 1
UPPER, LOWER = np.array([0.5, 0.4]), np.array([0.5, -0.4])
SUCCESS_RADIUS = 0.1
MAX_DISTANCE = float(np.hypot(2.0, 2.0))  # the farthest two points of the box


def upper_term(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """``-|s' - g_upper|``: [B, 2] -> [B] in [-2.83, 0]."""
    return -np.linalg.norm(np.asarray(next_obs, np.float64)[:, :2] - UPPER, axis=-1)


def lower_term(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """``-|s' - g_lower|``: [B, 2] -> [B] in [-2.83, 0]."""
    return -np.linalg.norm(np.asarray(next_obs, np.float64)[:, :2] - LOWER, axis=-1)


def at_upper(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    return -upper_term(next_obs, action) < SUCCESS_RADIUS


def at_lower(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    return -lower_term(next_obs, action) < SUCCESS_RADIUS


def at_either(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    return at_upper(next_obs, action) | at_lower(next_obs, action)


FAMILY = Family(
    name="plane",
    terms={"upper": upper_term, "lower": lower_term},
    success_checks={"at_upper": at_upper, "at_lower": at_lower, "at_either": at_either},
    every_step=frozenset(),
    gamma=0.9,
    horizon=30,
    term_ranges={"upper": (-MAX_DISTANCE, 0.0), "lower": (-MAX_DISTANCE, 0.0)},
    plane=lambda obs: obs[..., :2], plane_marks=lambda obs: np.stack([UPPER, LOWER]),
    plane_label="position (x, y); marks: the two goals",
    # alpha 0.1 (rewards in [-2.8, 0]); value targets from 32 mixture samples, a target copy every 50 updates
    training={"alpha": 0.1, "obs_scale": 1.0, "particles": 8, "value_proposal": "mixture", "value_samples": 32,
              "target_update_interval": 50, "steps": 10_000},
)
PLANE_UPPER = Task("plane-upper", FAMILY, {"upper": 1.0}, success=("at_upper",))
PLANE_LOWER = Task("plane-lower", FAMILY, {"lower": 1.0}, success=("at_lower",))
PLANE_BOTH = Task("plane-upper+plane-lower", FAMILY, {"upper": 0.5, "lower": 0.5}, success=("at_either",),
                  parts=("plane-upper", "plane-lower"))
TASKS = [PLANE_UPPER, PLANE_LOWER, PLANE_BOTH]


class PlaneEnv(gym.Env):
    """A point on ``[-1, 1]^2`` moved by ``STEP`` times the action; no termination (the time limit truncates)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, task: Task = PLANE_UPPER, render_mode: str | None = None, width: int = 300, height: int = 300):
        self.task, self.tracker = task, EpisodeTracker(task)
        self.render_mode, self.size = render_mode, (width, height)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.position = np.zeros(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.position = self.np_random.uniform(-1.0, 1.0, size=2)
        self.tracker.reset()
        return self.position.astype(np.float32), {}

    def step(self, action):
        action = checked_action(action, 2)
        self.position = np.clip(self.position + STEP * action, -1.0, 1.0)
        obs = self.position.astype(np.float32)
        reward, info = self.tracker.step_info(obs, action)
        return obs, reward, False, False, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        import cv2

        w, h = self.size
        img = np.full((h, w, 3), 255, np.uint8)

        def to_px(p: np.ndarray) -> tuple[int, int]:
            return int((p[0] + 1) / 2 * (w - 1)), int((1 - p[1]) / 2 * (h - 1))

        for goal in (UPPER, LOWER):
            cv2.circle(img, to_px(goal), int(SUCCESS_RADIUS / 2 * w), (60, 170, 60), -1)
        cv2.circle(img, to_px(self.position), 5, (200, 40, 40), -1)
        return img
