"""The pusher family (Haarnoja et al. 2018): a 3-DoF planar arm pushes a puck on a table.

The arm's base is at the world origin; it moves in the table plane (hinges about z). The puck
slides on two damped slide joints (x, y), so it stops soon after it is no longer pushed.

* action: 3-D in ``[-1, 1]``, joint velocity targets ``max_joint_speed * a`` (rad/s) for
  velocity actuators; one step is ``frame_skip * timestep`` = 0.05 s.
* observation (17-D, float32, world frame, metres, radians, per second):

  ======= =================================================
  0:3     cos of the joint angles
  3:6     sin of the joint angles
  6:9     joint velocities
  9:11    fingertip xy
  11:13   puck xy
  13:15   puck xy minus fingertip xy
  15:17   puck velocity xy
  ======= =================================================

Tasks: ``push-x`` moves the puck to the line ``x = goal_x`` (any y), ``push-y`` to the line
``y = goal_y`` (any x), and ``push-x+push-y`` (their mean) to the lines' crossing. The puck
starts near ``puck_start``: push-x pushes it away from the base (+x), push-y sideways (+y), and
the combined task needs a diagonal push. Horizon 50, gamma 0.95, no termination.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np

if TYPE_CHECKING:
    import mujoco

from .core import EpisodeTracker, Family, Task, checked_action
from .rendering import MujocoRendering

JOINT_COS = slice(0, 3)
JOINT_SIN = slice(3, 6)
JOINT_VEL = slice(6, 9)
TIP_POS = slice(9, 11)
PUCK_POS = slice(11, 13)
PUCK_REL = slice(13, 15)
PUCK_VEL = slice(15, 17)
OBS_DIM = 17
ACTION_DIM = 3


@dataclass(frozen=True)
class PusherLayout:
    """Geometry, dynamics and goals of the pusher family (metres, radians, seconds, kg)."""

    link_lengths: tuple[float, float, float] = (0.3, 0.25, 0.2)
    link_radius: float = 0.02  # capsule radius of the links
    tip_radius: float = 0.025  # fingertip sphere
    puck_radius: float = 0.05
    puck_half_height: float = 0.02
    puck_mass: float = 0.2
    puck_damping: float = 3.0  # N s/m on each slide joint: stops within ~0.1 s
    puck_frictionloss: float = 0.05  # N of dry friction on each slide joint: stops it completely
    height: float = 0.04  # z of the arm and puck centres above the table top (z = 0)
    table_low: tuple[float, float] = (-0.4, -0.85)  # table corner (x, y); the puck stays on the table
    table_high: tuple[float, float] = (1.05, 0.85)  # opposite corner
    arm_start: tuple[float, float, float] = (-1.5, 1.2, 1.9)  # joint angles at reset: tip near (0.25, -0.17)
    arm_start_noise: float = 0.05  # uniform +- on each joint angle
    joint_limit: float = 2.6  # |q2|, |q3| <= this (links do not collide with each other)
    puck_start: tuple[float, float] = (0.45, 0.0)
    puck_start_noise: float = 0.03  # uniform +- on each puck coordinate
    goal_x: float = 0.6  # push-x: puck x to here
    goal_y: float = 0.15  # push-y: puck y to here
    success_tolerance: float = 0.05  # |puck coordinate - goal| below this counts as there
    goal_scale: float = 0.3  # goal terms saturate at -1 beyond this distance
    reach_scale: float = 0.5  # shaping term saturates at -1 beyond this gap
    max_joint_speed: float = 2.0  # rad/s at |a| = 1
    actuator_gain: float = 4.0  # kv of the velocity actuators, N m s/rad
    max_torque: float = 6.0  # N m
    timestep: float = 0.01
    frame_skip: int = 5

    @property
    def dt(self) -> float:
        return self.timestep * self.frame_skip

    @property
    def contact_distance(self) -> float:
        """Puck-to-fingertip centre distance when they touch."""
        return self.puck_radius + self.tip_radius


LAYOUT = PusherLayout()
GOAL_RGBA = "0.15 0.75 0.25 1"
DIMMED_ALPHA = 0.15  # goal lines a task does not reward are drawn this faint
SHADOW_SIZE = 1024  # shadow-map texels, as for Fetch: cheap, still a depth cue
# looking along +y from above: +x to the right of the frame, +y up it
CAMERA = {"lookat": np.array([0.32, -0.03, 0.0]), "distance": 1.45, "azimuth": 90.0, "elevation": -70.0}


# ---- reward terms and success checks: batched, from observations alone (float64) -------
GOAL = np.array([LAYOUT.goal_x, LAYOUT.goal_y])


def puck_goal_offset(next_obs: np.ndarray) -> np.ndarray:
    """``|puck - (goal_x, goal_y)|`` per coordinate: [B, 17] -> [B, 2]."""
    return np.abs(np.asarray(next_obs[:, PUCK_POS], dtype=np.float64) - GOAL)


def puck_x_term(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """``-min(|puck_x - goal_x|, goal_scale) / goal_scale`` in [-1, 0]. [B, 17] -> [B]."""
    return -np.minimum(puck_goal_offset(next_obs)[:, 0], LAYOUT.goal_scale) / LAYOUT.goal_scale


def puck_y_term(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """``-min(|puck_y - goal_y|, goal_scale) / goal_scale`` in [-1, 0]. [B, 17] -> [B]."""
    return -np.minimum(puck_goal_offset(next_obs)[:, 1], LAYOUT.goal_scale) / LAYOUT.goal_scale


def fingertip_to_puck_term(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Shaping: ``-clip(|puck - tip| - contact_distance, 0, reach_scale) / reach_scale`` in [-1, 0]; 0 in contact."""
    gap = np.linalg.norm(np.asarray(next_obs[:, PUCK_REL], dtype=np.float64), axis=-1) - LAYOUT.contact_distance
    return -np.clip(gap, 0.0, LAYOUT.reach_scale) / LAYOUT.reach_scale


def puck_at_x(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """``|puck_x - goal_x| < success_tolerance``. [B, 17] -> [B] bool."""
    return puck_goal_offset(next_obs)[:, 0] < LAYOUT.success_tolerance


def puck_at_y(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """``|puck_y - goal_y| < success_tolerance``. [B, 17] -> [B] bool."""
    return puck_goal_offset(next_obs)[:, 1] < LAYOUT.success_tolerance


def puck_goal_distance(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Euclidean distance from the puck to the goal lines' crossing ``(goal_x, goal_y)``, metres. [B, 17] -> [B]."""
    return np.linalg.norm(puck_goal_offset(next_obs), axis=-1)


def puck_x_distance(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """``|puck_x - goal_x|``: distance to push-x's goal line, metres. [B, 17] -> [B]."""
    return puck_goal_offset(next_obs)[:, 0]


def puck_y_distance(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """``|puck_y - goal_y|``: distance to push-y's goal line, metres. [B, 17] -> [B]."""
    return puck_goal_offset(next_obs)[:, 1]


FAMILY = Family(
    name="pusher",
    terms={"puck_x": puck_x_term, "puck_y": puck_y_term, "fingertip_to_puck": fingertip_to_puck_term},
    success_checks={"puck_at_x": puck_at_x, "puck_at_y": puck_at_y},
    every_step=frozenset(),
    # effective horizon 1/(1-gamma) = 20 steps inside the 50-step episode. At 0.99 (100 steps) 61% of V(s0)'s weight
    # lay on states after the time limit, which no stored transition starts from: push-x's values missed their Monte
    # Carlo returns by up to 16 whatever the target schedule, budget or exploration (docs/skills.md, "The pusher")
    gamma=0.95,
    horizon=50,
    term_ranges={"puck_x": (-1.0, 0.0), "puck_y": (-1.0, 0.0), "fingertip_to_puck": (-1.0, 0.0)},
    measures={"puck_goal_distance": puck_goal_distance, "puck_x_distance": puck_x_distance,
              "puck_y_distance": puck_y_distance},
)
SHAPING_WEIGHT = 0.5
PUSH_X = Task("push-x", FAMILY, {"puck_x": 1.0, "fingertip_to_puck": SHAPING_WEIGHT}, success=("puck_at_x",))
PUSH_Y = Task("push-y", FAMILY, {"puck_y": 1.0, "fingertip_to_puck": SHAPING_WEIGHT}, success=("puck_at_y",))
TASKS = [PUSH_X, PUSH_Y]
COMBINED = [("push-x+push-y", ["push-x", "push-y"])]


# ---- the MuJoCo scene ------------------------------------------------------------------------
def pusher_xml(layout: PusherLayout = LAYOUT) -> str:
    """Our MJCF for the arm, puck, table and goal markers.

    Collisions: only arm-puck (arm contype 2 / conaffinity 0, puck contype 1 / conaffinity 2);
    the table and markers are visual only, and the puck has no z joint, so it never falls.
    """
    l1, l2, l3 = layout.link_lengths
    h, r = layout.height, layout.link_radius
    (x0, y0), (x1, y1) = layout.table_low, layout.table_high
    cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    gx, gy = layout.goal_x, layout.goal_y
    (px, py), pr = layout.puck_start, layout.puck_radius
    arm = 'contype="2" conaffinity="0" rgba="0.85 0.55 0.2 1"'
    return f"""
<mujoco model="pusher3dof">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{layout.timestep}" integrator="implicitfast" gravity="0 0 -9.81">
    <flag energy="disable"/>
  </option>
  <visual>
    <quality shadowsize="{SHADOW_SIZE}"/>
    <headlight ambient="0.3 0.3 0.3" diffuse="0.3 0.3 0.3" specular="0.1 0.1 0.1"/>
  </visual>
  <default>
    <joint armature="0.01" damping="0.05"/>
    <geom density="1000" friction="0.8 0.005 0.0001"/>
  </default>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.62 0.62 0.6" rgb2="0.54 0.54 0.52"
             width="256" height="256"/>
    <material name="table" texture="grid" texrepeat="8 8" reflectance="0"/>
    <texture name="sky" type="skybox" builtin="gradient" rgb1="0.55 0.65 0.8" rgb2="0.15 0.15 0.2"
             width="64" height="64"/>
  </asset>
  <worldbody>
    <light name="key" pos="0.3 -0.4 1.5" dir="0.1 0.3 -1" directional="true" castshadow="true"
           diffuse="0.5 0.5 0.5"/>
    <geom name="table" type="box" pos="{cx} {cy} -0.01" size="{hx} {hy} 0.01"
          material="table" contype="0" conaffinity="0"/>
    <geom name="base" type="cylinder" pos="0 0 {h / 2}" size="0.05 {h / 2}" rgba="0.25 0.25 0.3 1"
          contype="0" conaffinity="0"/>
    <geom name="goal_x_line" type="box" pos="{gx} {cy} 0.001" size="0.006 {hy} 0.001" rgba="{GOAL_RGBA}"
          contype="0" conaffinity="0"/>
    <geom name="goal_y_line" type="box" pos="{cx} {gy} 0.001" size="{hx} 0.006 0.001"
          rgba="{GOAL_RGBA}" contype="0" conaffinity="0"/>
    <geom name="goal_point" type="cylinder" pos="{gx} {gy} 0.003" size="{layout.success_tolerance} 0.001"
          rgba="0.55 0.85 0.55 1" contype="0" conaffinity="0"/>
    <body name="link1" pos="0 0 {h}">
      <joint name="shoulder" type="hinge" axis="0 0 1"/>
      <geom name="link1" type="capsule" fromto="0 0 0 {l1} 0 0" size="{r}" {arm}/>
      <body name="link2" pos="{l1} 0 0">
        <joint name="elbow" type="hinge" axis="0 0 1" range="{-layout.joint_limit} {layout.joint_limit}"/>
        <geom name="link2" type="capsule" fromto="0 0 0 {l2} 0 0" size="{r}" {arm}/>
        <body name="link3" pos="{l2} 0 0">
          <joint name="wrist" type="hinge" axis="0 0 1" range="{-layout.joint_limit} {layout.joint_limit}"/>
          <geom name="link3" type="capsule" fromto="0 0 0 {l3} 0 0" size="{r * 0.8}" {arm}/>
          <geom name="fingertip" type="sphere" pos="{l3} 0 0" size="{layout.tip_radius}"
                contype="2" conaffinity="0" rgba="0.2 0.3 0.9 1"/>
          <site name="fingertip" pos="{l3} 0 0" size="0.005"/>
        </body>
      </body>
    </body>
    <body name="puck" pos="{px} {py} {h}">
      <joint name="puck_x" type="slide" axis="1 0 0" damping="{layout.puck_damping}"
             frictionloss="{layout.puck_frictionloss}" armature="0"
             range="{x0 + pr - px} {x1 - pr - px}"/>
      <joint name="puck_y" type="slide" axis="0 1 0" damping="{layout.puck_damping}"
             frictionloss="{layout.puck_frictionloss}" armature="0"
             range="{y0 + pr - py} {y1 - pr - py}"/>
      <geom name="puck" type="cylinder" size="{layout.puck_radius} {layout.puck_half_height}"
            mass="{layout.puck_mass}" contype="1" conaffinity="2" rgba="0.8 0.1 0.15 1"/>
    </body>
  </worldbody>
  <actuator>
    <velocity name="shoulder" joint="shoulder" kv="{layout.actuator_gain}"
              ctrlrange="{-layout.max_joint_speed} {layout.max_joint_speed}"
              forcerange="{-layout.max_torque} {layout.max_torque}"/>
    <velocity name="elbow" joint="elbow" kv="{layout.actuator_gain}"
              ctrlrange="{-layout.max_joint_speed} {layout.max_joint_speed}"
              forcerange="{-layout.max_torque} {layout.max_torque}"/>
    <velocity name="wrist" joint="wrist" kv="{layout.actuator_gain}"
              ctrlrange="{-layout.max_joint_speed} {layout.max_joint_speed}"
              forcerange="{-layout.max_torque} {layout.max_torque}"/>
  </actuator>
</mujoco>
"""


def show_goals_of(task: Task, model: mujoco.MjModel) -> None:
    """Draw the goal lines ``task`` rewards solid, the others faint; the crossing only if both count."""
    rewards_x, rewards_y = task.weights.get("puck_x", 0.0) > 0, task.weights.get("puck_y", 0.0) > 0
    if not rewards_x:
        model.geom("goal_x_line").rgba[3] = DIMMED_ALPHA
    if not rewards_y:
        model.geom("goal_y_line").rgba[3] = DIMMED_ALPHA
    if not (rewards_x and rewards_y):
        model.geom("goal_point").rgba[3] = 0.0


class PusherEnv(MujocoRendering, gym.Env):
    """A task of the pusher family: same arm, puck and dynamics for every task."""

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": int(round(1.0 / LAYOUT.dt))}

    def __init__(self, task: Task = PUSH_X, render_mode: str | None = None, width: int = 480, height: int = 480):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.task = task
        self.tracker = EpisodeTracker(task)
        self.layout = LAYOUT
        self.render_mode = render_mode
        import mujoco  # here, not at the top: importing the task registry (and skills.sql) stays free of MuJoCo

        self.model = mujoco.MjModel.from_xml_string(pusher_xml(self.layout))
        self.data = mujoco.MjData(self.model)
        show_goals_of(task, self.model)
        self._arm_qpos = np.array([self.model.joint(n).qposadr[0] for n in ("shoulder", "elbow", "wrist")])
        self._arm_qvel = np.array([self.model.joint(n).dofadr[0] for n in ("shoulder", "elbow", "wrist")])
        self._puck_qpos = np.array([self.model.joint(n).qposadr[0] for n in ("puck_x", "puck_y")])
        self._puck_qvel = np.array([self.model.joint(n).dofadr[0] for n in ("puck_x", "puck_y")])
        self._tip = self.model.site("fingertip").id
        self._puck = self.model.body("puck").id
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(OBS_DIM,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(ACTION_DIM,), dtype=np.float32)
        self._obs = np.zeros(OBS_DIM)
        self._size = (width, height)

    def _observe(self) -> np.ndarray:
        """Fill the observation (see the module docstring) from the current state."""
        q = self.data.qpos[self._arm_qpos]
        tip = self.data.site_xpos[self._tip, :2]
        puck = self.data.xpos[self._puck, :2]
        obs = self._obs
        obs[JOINT_COS], obs[JOINT_SIN] = np.cos(q), np.sin(q)
        obs[JOINT_VEL] = self.data.qvel[self._arm_qvel]
        obs[TIP_POS], obs[PUCK_POS], obs[PUCK_REL] = tip, puck, puck - tip
        obs[PUCK_VEL] = self.data.qvel[self._puck_qvel]
        return obs.astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        import mujoco

        super().reset(seed=seed)
        layout = self.layout
        mujoco.mj_resetData(self.model, self.data)
        arm_noise = self.np_random.uniform(-layout.arm_start_noise, layout.arm_start_noise, size=3)
        self.data.qpos[self._arm_qpos] = np.array(layout.arm_start) + arm_noise
        self.data.qpos[self._puck_qpos] = self.np_random.uniform(-layout.puck_start_noise, layout.puck_start_noise,
                                                                 size=2)
        mujoco.mj_forward(self.model, self.data)  # positions, and lights for a frame straight after reset
        self.tracker.reset()
        if self.render_mode == "human":
            self.render()
        return self._observe(), {}

    def step(self, action):
        import mujoco  # a dictionary lookup once imported

        action = checked_action(action, ACTION_DIM)
        self.data.ctrl[:] = self.layout.max_joint_speed * action
        mujoco.mj_step(self.model, self.data, nstep=self.layout.frame_skip)
        mujoco.mj_kinematics(self.model, self.data)  # positions of the final state, not the last substep's
        obs = self._observe()
        reward, info = self.tracker.step_info(obs, action)
        if self.render_mode == "human":
            self.render()
        return obs, reward, False, False, info

    def _scene(self):
        return self.model, self.data, CAMERA
