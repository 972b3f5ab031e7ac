"""The arm task family: move an end effector to a target while keeping off an obstacle.

Dynamics (``Arm`` backends) and task logic (this module's ``ArmTaskEnv``) are separate, so the
Fetch robot and any custom arm give the same observation and action contract:

* action: 3-D in ``[-1, 1]``, a Cartesian end-effector displacement of ``0.05 * a`` metres
  per step (25 Hz); the gripper stays fixed.
* observation (12-D, float32, metres and m/s, **workspace frame**: origin at the
  end effector's start position, axes along the world's):

  ====== =================================================
  0:3    end-effector position
  3:6    end-effector linear velocity
  6:9    target position minus end-effector position
  9:12   obstacle centre minus end-effector position
  ====== =================================================

The obstacle is a keep-out sphere: it does not push the arm (so every task has the same
dynamics); the end effector *collides* when it comes within ``collision_radius`` of its
centre. Horizon 50 with time-limit truncation; no termination.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from .arms import make_arm
from .arms.base import LAYOUT, MAX_DISPLACEMENT, Arm, ArmLayout  # noqa: F401 - the task's geometry and scale
from .core import EpisodeTracker, Family, Task, checked_action
from .rendering import MujocoRendering

EE_POS = slice(0, 3)
EE_VEL = slice(3, 6)
TARGET_REL = slice(6, 9)
OBSTACLE_REL = slice(9, 12)
OBS_DIM = 12
ACTION_DIM = 3
# ---- reward terms and success checks: batched, from observations alone -------------------
def reach_term(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """``-min(|target - ee|, reach_scale) / reach_scale`` in [-1, 0]. Shapes: [B, 12] -> [B]."""
    dist = np.linalg.norm(next_obs[:, TARGET_REL], axis=-1)
    return -np.minimum(dist, LAYOUT.reach_scale) / LAYOUT.reach_scale


def avoid_term(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """``-clip((r_c + margin - |obstacle - ee|) / margin, 0, 1)`` in [-1, 0]: -1 in contact."""
    dist = np.linalg.norm(next_obs[:, OBSTACLE_REL], axis=-1)
    depth = (LAYOUT.collision_radius + LAYOUT.avoid_margin - dist) / LAYOUT.avoid_margin
    return -np.clip(depth, 0.0, 1.0)


def at_target(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """End effector within ``success_radius`` of the target. [B, 12] -> [B] bool."""
    return np.linalg.norm(next_obs[:, TARGET_REL], axis=-1) < LAYOUT.success_radius


def collision_free(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """End effector outside the obstacle's collision radius. [B, 12] -> [B] bool."""
    return np.linalg.norm(next_obs[:, OBSTACLE_REL], axis=-1) >= LAYOUT.collision_radius


FAMILY = Family(
    name="fetch-arm",
    terms={"reach": reach_term, "avoid": avoid_term},
    success_checks={"at_target": at_target, "no_collision": collision_free},
    every_step=frozenset({"no_collision"}),
    gamma=0.95,  # effective horizon 1/(1-gamma) = 20 steps: a reach takes <= 10 (docs/skills.md, "Discount")
    horizon=50,
    term_ranges={"reach": (-1.0, 0.0), "avoid": (-1.0, 0.0)},
    plane=lambda obs: -obs[..., TARGET_REL][..., :2],  # end effector relative to the target, top view
    plane_marks=lambda obs: np.stack([np.zeros(2), (obs[OBSTACLE_REL] - obs[TARGET_REL])[:2]]),  # target, obstacle
    plane_label="end effector - target (x, y), m; marks: target (0, 0) and the obstacle",
)

REACH = Task("reach", FAMILY, {"reach": 1.0}, success=("at_target",))
AVOID = Task("avoid", FAMILY, {"avoid": 1.0}, success=("no_collision",))


# ---- scene randomisation -----------------------------------------------------------------
def distance_to_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance from point ``p`` to segment ``ab`` (all [3])."""
    ab = b - a
    u = np.clip(np.dot(p - a, ab) / np.dot(ab, ab), 0.0, 1.0)
    return float(np.linalg.norm(a + u * ab - p))


def sample_scene(rng: np.random.Generator, layout: ArmLayout = LAYOUT) -> tuple[np.ndarray, np.ndarray, bool]:
    """Target, obstacle centre (workspace frame, start at the origin) and whether it blocks.

    With ``blocking_probability`` the obstacle sits on the straight start-target segment, so a
    straight reach collides; otherwise it stays ``clearance`` away from start, target and path.
    """
    low, high = np.array(layout.target_low), np.array(layout.target_high)
    start = np.zeros(3)
    target = rng.uniform(low, high)
    while np.linalg.norm(target) < layout.min_target_distance:
        target = rng.uniform(low, high)
    blocking = bool(rng.uniform() < layout.blocking_probability)
    if blocking:
        u = rng.uniform(*layout.blocking_span)
        sideways = rng.normal(size=3)
        sideways -= np.dot(sideways, target) / np.dot(target, target) * target
        sideways *= rng.uniform(0.0, layout.blocking_offset) / max(float(np.linalg.norm(sideways)), 1e-9)
        return target, u * target + sideways, True
    while True:
        obstacle = rng.uniform(low, high)
        if (
            distance_to_segment(obstacle, start, target) >= layout.clearance
            and np.linalg.norm(obstacle - target) >= layout.clearance
            and np.linalg.norm(obstacle) >= layout.clearance
        ):
            return target, obstacle, False


class ArmTaskEnv(MujocoRendering, gym.Env):
    """A task of the arm family on any ``Arm`` (Fetch by default)."""

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 25}

    def __init__(
        self,
        task: Task,
        arm: Any = None,
        ee_site: str | None = None,
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
        **arm_kwargs: Any,
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.task = task
        self.tracker = EpisodeTracker(task)
        self.layout = LAYOUT
        self.arm = make_arm(arm, ee_site, width=width, height=height, **arm_kwargs)
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(OBS_DIM,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(ACTION_DIM,), dtype=np.float32)
        self.target = np.zeros(3)
        self.obstacle = np.zeros(3)
        self.obstacle_blocks_path = False
        self._size = (width, height)

    # named queries, workspace frame
    def ee_position(self) -> np.ndarray:
        return self.arm.ee_position() - self.arm.workspace_origin

    def _obs(self) -> np.ndarray:
        ee = self.ee_position()
        obs = np.concatenate([ee, self.arm.ee_velocity(), self.target - ee, self.obstacle - ee])
        return obs.astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.arm.reset()
        self.target, self.obstacle, self.obstacle_blocks_path = sample_scene(self.np_random, self.layout)
        origin = self.arm.workspace_origin
        self.arm.place_markers(origin + self.target, origin + self.obstacle)
        self.tracker.reset()
        obs = self._obs()
        if self.render_mode == "human":
            self.render()
        return obs, {"obstacle_blocks_path": self.obstacle_blocks_path, "target": self.target.copy(),
                     "obstacle": self.obstacle.copy()}

    def step(self, action):
        action = checked_action(action, ACTION_DIM)
        self.arm.move_ee(action)
        obs = self._obs()
        reward, info = self.tracker.step_info(obs, action)
        info["collision"] = not info["checks"]["no_collision"]
        info["distance_to_target"] = float(np.linalg.norm(obs[TARGET_REL]))
        info["distance_to_obstacle"] = float(np.linalg.norm(obs[OBSTACLE_REL]))
        if self.render_mode == "human":
            self.render()
        return obs, reward, False, False, info

    def _scene(self):
        return self.arm.model, self.arm.data, self.arm.camera


TASKS = [REACH, AVOID]
COMBINED = [("reach+avoid", ["reach", "avoid"])]
