"""Fetch with real objects and contact: place a held block past a solid obstacle, or push a puck.

Both families run on gymnasium-robotics' Fetch ``pick_and_place.xml`` scene (robot, table, the
two-finger gripper), loaded with ``mujoco.MjSpec`` and extended there, like ``envs.arms.fetch``.
The gripper is driven by Fetch's mocap weld, as in ``envs.arms.fetch``:

* action: 3-D in ``[-1, 1]``; the mocap moves to the gripper's current position plus ``0.05 * a``
  metres (Fetch's own scale), then 20 substeps of 2 ms (one step = 0.04 s, 25 Hz). The commanded
  grip-site position is clamped to a workspace box (``grip_low``/``grip_high`` of each layout): it keeps
  the arm where it tracks with the gripper vertical and stops it ramming the table (below ``grip_low[2]``),
  which would press the held block out of the fingers. Both finger actuators are commanded closed
  (``ctrl = 0``) every step.
* workspace frame: origin on the table top below Fetch's home grip position, world point
  ``(1.34, 0.75, 0.40)``; world axes (+x away from the robot, +z up). Heights are heights above the
  table. Unlike ``envs.arm`` the gripper's start is sampled, so the origin cannot be the gripper's start.

``fetch-place`` (tasks ``place``, ``clear``, ``place+clear``)
------------------------------------------------------------
The gripper starts *holding* Fetch's block (``object0``: a 5 cm cube, 2 kg, friction 1, free joint)
in a friction grasp; a solid cylinder (radius 4 cm, 12 cm tall, a static geom of the world body)
stands on the table, and a target spot (visual only) is drawn on the table. Every reset samples the
block's start (in hand, 10 to 15 cm up), the target and the obstacle; in half the episodes the
obstacle stands on the straight path from the block to the target, tall enough that carrying the block
straight at low height hits it. Observation (29-D, float32, metres and m/s, workspace frame):

  ======= ===================================================================
  0:3     grip-site position (between the fingertips)          ``GRIP_POS``
  3:6     grip-site linear velocity                            ``GRIP_VEL``
  6:9     block centre minus grip site                         ``BLOCK_REL``
  9:12    block linear velocity                                ``BLOCK_VEL``
  12:15   block z-axis in world coordinates                    ``BLOCK_ZAXIS``
  15:18   block x-axis in world coordinates                    ``BLOCK_XAXIS``
  18:21   target point minus block centre                      ``TARGET_REL``
  21:24   obstacle centre minus grip site                      ``OBSTACLE_REL_GRIP``
  24:27   obstacle centre minus block centre                   ``OBSTACLE_REL_BLOCK``
  27      1.0 if the robot (fingers, gripper, arm) touched the obstacle this step ``HAND_CONTACT``
  28      1.0 if the block touched the obstacle this step     ``BLOCK_CONTACT``
  ======= ===================================================================

The *target point* is where the block's centre is when it rests on the target spot (``block_half``
above the table), so ``TARGET_REL`` says both how far and how high. The *obstacle centre* is the
cylinder's centre (half its height up); its size is fixed, so the centre gives the whole shape.
Orientation: two columns of the block's rotation matrix (its z- and x-axes) give the rotation
exactly (the third is their cross product), with no quaternion sign flip and no Euler wrap-around;
the z-axis says whether it stands flat, which resting on the table needs. Contact flags come from
MuJoCo's contacts at every substep of the step and at its final state (a contact is any pair MuJoCo
generates between the obstacle and a robot or block geom: touching or within the robot geoms' 1 mm margin),
so collisions are computable from observations.

Terms (``place_term``, ``clear_term``; ranges per step):

* ``place`` in [-1, 0]: ``-(0.55 min(d, 0.5)/0.5 + 0.3 min(d, 0.03)/0.03 + 0.15 g min(|v|, 0.5)/0.5)``,
  ``d = |TARGET_REL|``, ``v`` = ``BLOCK_VEL``, ``g = 1 - min(d, 0.05)/0.05``: a long slope that leads the block
  to the target, a steep one over the last 3 cm (the success tolerance is 1.5 cm) and a small resting
  component that, near the target only, asks for the block to be still.
* ``clear`` in [-1, 0]: ``-1`` if a contact flag is set, else ``-clip((margin - gap)/margin, 0, 1)``, margin
  5 cm, with ``gap`` the clearance between the obstacle cylinder and three axis-aligned boxes: the block's
  bounding box (from its observed axes), the fingers holding it and the gripper body (``obstacle_gap``).

Success: ``placed`` at the episode's end (block within 1.5 cm of the target in xy, its lowest corner
within 5 mm of the table top, block speed under 0.1 m/s); ``no_collision`` at every step (neither flag).
``place`` succeeds on ``placed``, ``clear`` on ``no_collision``, ``place+clear`` on both. ``measures``:
the final block-target xy distance. The tasks differ only in their weights (no shaping term).

``fetch-puck`` (tasks ``puck-x``, ``puck-y``, ``puck-x+puck-y``)
---------------------------------------------------------------
The SQL paper's pusher on the Fetch: the gripper, closed and empty, pushes a puck (a cylinder,
radius 5 cm, 4 cm tall, 0.2 kg, free joint, friction 1 with the table, so it stops within a few
centimetres once let go) to the line ``x = goal_x`` (``puck-x``), ``y = goal_y`` (``puck-y``) or their
crossing (the mean task). The gripper starts at pushing height beside the puck, on a random side, so each
task first goes round to its own side (-x, -y, or the diagonal between them for the combined task); the
goal lines are 18 and 20 cm from the puck's nominal start, and a constituent alone leaves the puck far
from the other line. No obstacle:
no task of the family rewards or penalises one, so it would only be a wall in the way of every task; the
puck family is the pusher's composition test (two goals) with real contact. Observation (21-D, float32, workspace frame):

  ======= ===================================================================
  0:3     grip-site position                                    ``P_GRIP_POS``
  3:6     grip-site linear velocity                             ``P_GRIP_VEL``
  6:9     puck centre                                           ``PUCK_POS``
  9:12    puck centre minus grip site                           ``PUCK_REL``
  12:15   puck linear velocity                                  ``PUCK_VEL``
  15:18   puck axis (its z-axis) in world coordinates           ``PUCK_AXIS``
  18:21   puck angular velocity (world) times its radius, m/s ``PUCK_SPIN``
  ======= ===================================================================

Terms as in ``envs.pusher``: ``puck_x`` and ``puck_y`` in [-1, 0] (``-min(|puck - goal|, 0.3)/0.3`` per
coordinate) and the shaping term ``grip_to_puck`` in [-1, 0] (the grip-puck gap beyond contact,
saturating at 0.5 m), weight 0.5 in every task. Success is our criterion: at the episode's last step
the puck is within 5 cm of each rewarded line. ``measures``: the final puck distances to the crossing
and to each line (metres).

Both families: horizon 50 with time-limit truncation (bootstrapped), no termination, gamma 0.95. They run on Fetch
only: a custom arm (``arm=``, ``ee_site=``, ``workspace_origin=`` of ``envs.make``) has no two-finger gripper and is
refused (``refuse_other_arm``). Registered in ``envs.BUILT_IN_FAMILIES`` with one env class per family.
Measurements and settings: docs/manipulation.md.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import gymnasium as gym
import numpy as np

from .core import EpisodeTracker, Family, Task, checked_action
from .rendering import MujocoRendering

if TYPE_CHECKING:
    import mujoco

ACTION_DIM = 3
MAX_DISPLACEMENT = 0.05  # metres per step at |a| = 1 (Fetch's mocap scale)
N_SUBSTEPS = 20  # 2 ms each: one step is 0.04 s
WORKSPACE_ORIGIN = np.array([1.34, 0.75, 0.40])  # world point: table top below Fetch's home grip position
GRIPPER_QUAT = np.array([1.0, 0.0, 1.0, 0.0]) / np.sqrt(2.0)  # gripper pointing down (Fetch's rot_ctrl)
TABLE_LOW, TABLE_HIGH = (-0.29, -0.35), (0.21, 0.35)  # Fetch's table top (x, y) in the workspace frame
RIM_HEIGHT, RIM_THICKNESS = 0.03, 0.01  # a low rim along the table's edges keeps knocked objects on the table
SHADOW_SIZE = 1024
# Contact time constant of the finger pads and the block (MuJoCo's default 0.02 s; Fetch's fingers 0.01 s): the
# shortest MuJoCo keeps stable at the 2 ms timestep. With the defaults a soft-contact creep walks the held block
# along the pads by 1.3 to 1.6 cm over 50 full-speed random steps, and out of the hand under bang-bang actions,
# whatever the friction (noslip, elliptic cones, impratio 100), finger force (3k to 30k N/m), block mass
# (0.2 to 2 kg) or pad width; with 0.004 s it stays under 2.5 mm (7 mm bang-bang). docs/manipulation.md.
GRASP_SOLREF = (0.004, 1.0)
# Finger position-servo gain (Fetch's: 30000 N/m, about 720 N of squeeze on the 5 cm block). Fetch's mocap weld is a
# stiff position controller: the hand or block rammed into the obstacle meets 25 to 48 kN, which knocked the block
# out of the fingers in 4 of 13 straight carries into a blocking obstacle at 3e5 and made the knocked-out states
# destabilise training; at 1e6 (about 24 kN of squeeze) none of 13 lost it. docs/manipulation.md.
FINGER_KP = 1.0e6

# ---- observation layout, fetch-place ------------------------------------------------------------
GRIP_POS = slice(0, 3)
GRIP_VEL = slice(3, 6)
BLOCK_REL = slice(6, 9)
BLOCK_VEL = slice(9, 12)
BLOCK_ZAXIS = slice(12, 15)
BLOCK_XAXIS = slice(15, 18)
TARGET_REL = slice(18, 21)
OBSTACLE_REL_GRIP = slice(21, 24)
OBSTACLE_REL_BLOCK = slice(24, 27)
HAND_CONTACT = 27
BLOCK_CONTACT = 28
PLACE_OBS_DIM = 29

# ---- observation layout, fetch-puck -------------------------------------------------------------
P_GRIP_POS = slice(0, 3)
P_GRIP_VEL = slice(3, 6)
PUCK_POS = slice(6, 9)
PUCK_REL = slice(9, 12)
PUCK_VEL = slice(12, 15)
PUCK_AXIS = slice(15, 18)
PUCK_SPIN = slice(18, 21)  # angular velocity x radius: the rim's speed (a glancing hit spins it at 25 rad/s)
PUCK_OBS_DIM = 21


@dataclass(frozen=True)
class PlaceLayout:
    """Geometry of ``fetch-place`` in the workspace frame (metres; table top at z = 0)."""

    block_half: float = 0.025  # Fetch's object0: a 5 cm cube (2 kg, friction 1; the asset's values)
    obstacle_radius: float = 0.04  # solid cylinder standing on the table
    obstacle_height: float = 0.12
    target_radius: float = 0.015  # drawn target spot (= success_xy)
    success_xy: float = 0.015  # placed: block centre within this of the target, in xy
    rest_height: float = 0.005  # placed: the block's lowest corner within this of the table top
    rest_speed: float = 0.1  # placed: block speed below this (m/s)
    start_height: tuple[float, float] = (0.10, 0.15)  # grip-site (= block centre) height at the start
    table_low: tuple[float, float] = (-0.25, -0.30)  # xy region sampled for start, target and obstacle
    table_high: tuple[float, float] = (0.17, 0.30)
    reach_low: tuple[float, float] = (-0.20, -0.25)  # where the gripper stays vertical (tilt <= 2 deg) at
    reach_high: tuple[float, float] = (0.10, 0.25)  # table height: start and target outside are resampled
    # commanded grip site clamped to this box. Its floor presses a held block at most 5 mm into the table: 1 to
    # 2.5 cm let full-speed random actions strip the block from the fingers in 2 to 5 of 12 episodes (table
    # friction under a hard press beats the fingers' lateral stiffness); 5 mm in none (docs/manipulation.md)
    grip_low: tuple[float, float, float] = (-0.23, -0.28, 0.02)
    grip_high: tuple[float, float, float] = (0.13, 0.28, 0.30)
    min_distance: float = 0.22  # start-target xy distance at least this
    blocking_probability: float = 0.5  # chance that the obstacle stands on the straight path
    blocking_span: tuple[float, float] = (0.4, 0.6)  # where along the start-target segment (xy) it stands
    blocking_offset: float = 0.02  # its largest sideways offset from that segment
    clearance: float = 0.13  # a non-blocking obstacle keeps its centre this far from the start-target segment
    layout_clearance: float = 0.01  # start and target proxies at least this clear of the obstacle
    clear_margin: float = 0.05  # the clear penalty ramps up over this gap
    finger_half: tuple[float, float] = (0.0135, 0.039)  # fingers holding the block: x, y half-extents about the grip
    finger_span: tuple[float, float] = (-0.0185, 0.0585)  # fingers' z extent relative to the grip site
    gripper_half: tuple[float, float] = (0.040, 0.063)  # gripper body (mesh bounds): x, y half-extents
    gripper_span: tuple[float, float] = (0.052, 0.176)  # its z extent relative to the grip site
    far_scale: float = 0.5  # place term: a long slope saturating here ...
    near_scale: float = 0.03  # ... a steep one over the last 3 cm ...
    near_weight: float = 0.3
    rest_scale: float = 0.5  # ... and a block-speed penalty (saturating at this speed), faded in over the last
    rest_weight: float = 0.15  # rest_zone of the target: it rewards holding the block still once there
    rest_zone: float = 0.05
    lost_distance: float = 0.03  # block centre this far from the grip site: knocked out of the hand (place = -1)

    @property
    def obstacle_centre_z(self) -> float:
        return self.obstacle_height / 2


@dataclass(frozen=True)
class PuckLayout:
    """Geometry of ``fetch-puck`` in the workspace frame (metres; table top at z = 0)."""

    puck_radius: float = 0.05
    puck_half_height: float = 0.02
    puck_mass: float = 0.2
    puck_start: tuple[float, float] = (-0.06, -0.08)
    puck_start_noise: float = 0.03  # uniform +- on each coordinate
    # grip start: at pushing height, grip_distance +- noise from the puck's centre (1.6 to 4.1 cm from touching
    # it) at a uniformly random angle around it. From a fixed side the constituents pushed the puck along the
    # other axis as a side effect: from (-8.5, -8.5) cm both pushed diagonally (ending 4 to 6 cm from the other
    # line); from the -y side puck-x still moved it 15 cm toward +y and alone solved the combined task in 26 of 50.
    grip_height: float = 0.03
    grip_distance: float = 0.0925
    grip_distance_noise: float = 0.0125
    goal_x: float = 0.12  # puck-x: the line x = goal_x (18 cm from the puck's nominal start)
    goal_y: float = 0.12  # puck-y: the line y = goal_y (20 cm)
    success_tolerance: float = 0.05
    goal_scale: float = 0.3
    reach_scale: float = 0.5
    finger_half: float = 0.014  # closed fingers' horizontal half-extent
    grip_low: tuple[float, float, float] = (-0.23, -0.28, 0.022)  # fingertips stay 3.5 mm above the table
    grip_high: tuple[float, float, float] = (0.13, 0.28, 0.30)

    @property
    def contact_distance(self) -> float:
        """Grip-site to puck-centre distance when the fingers touch the puck's side."""
        return self.puck_radius + self.finger_half


PLACE = PlaceLayout()
PUCK = PuckLayout()


# ---- geometry from observations (batched, float64) ----------------------------------------------
def box_cylinder_gap(rel: np.ndarray, half_xy: np.ndarray, span: np.ndarray, layout: PlaceLayout = PLACE) -> np.ndarray:
    """Clearance between the obstacle cylinder and an axis-aligned box: [B, 3] -> [B] (0 where they overlap).

    ``rel`` is the obstacle centre minus the box's reference point; the box spans ``+-half_xy`` [B, 2] (or [2])
    around that point in x and y and ``span`` [B, 2] (or [2]) in z. Both shapes are products of a plane set
    and a z interval, so the distance is exactly ``hypot(plane distance, z-interval distance)``.
    """
    rel = np.asarray(rel, np.float64)
    half_xy, span = np.broadcast_to(half_xy, (len(rel), 2)), np.broadcast_to(span, (len(rel), 2))
    outside = np.maximum(np.abs(rel[:, :2]) - half_xy, 0.0)  # cylinder axis to the box's rectangle, per axis
    horizontal = np.maximum(np.linalg.norm(outside, axis=-1) - layout.obstacle_radius, 0.0)
    half = layout.obstacle_height / 2
    vertical = np.maximum(np.maximum(span[:, 0] - (rel[:, 2] + half), (rel[:, 2] - half) - span[:, 1]), 0.0)
    return np.hypot(horizontal, vertical)


def block_half_extents(next_obs: np.ndarray, layout: PlaceLayout = PLACE) -> np.ndarray:
    """Half-extents of the block's world-axis bounding box, from its observed axes: [B, 29] -> [B, 3]."""
    z_axis = np.asarray(next_obs[:, BLOCK_ZAXIS], np.float64)
    x_axis = np.asarray(next_obs[:, BLOCK_XAXIS], np.float64)
    y_axis = np.cross(z_axis, x_axis)
    return layout.block_half * (np.abs(x_axis) + np.abs(y_axis) + np.abs(z_axis))


def obstacle_gap(next_obs: np.ndarray, layout: PlaceLayout = PLACE) -> np.ndarray:
    """Smallest clearance of the block, the fingers and the gripper body from the obstacle: [B, 29] -> [B] (m).

    Each is an axis-aligned box: the block's bounding box (from its observed axes), the fingers holding it and
    the gripper body's mesh bounds (``PlaceLayout``; the gripper keeps its orientation within a few degrees).
    """
    block_half = block_half_extents(next_obs, layout)
    block = box_cylinder_gap(next_obs[:, OBSTACLE_REL_BLOCK], block_half[:, :2],
                             np.stack([-block_half[:, 2], block_half[:, 2]], axis=-1), layout)
    fingers = box_cylinder_gap(next_obs[:, OBSTACLE_REL_GRIP], np.asarray(layout.finger_half), np.asarray(layout.finger_span),
                               layout)
    gripper = box_cylinder_gap(next_obs[:, OBSTACLE_REL_GRIP], np.asarray(layout.gripper_half),
                               np.asarray(layout.gripper_span), layout)
    return np.minimum(np.minimum(block, fingers), gripper)


def block_position(next_obs: np.ndarray) -> np.ndarray:
    """Block centre in the workspace frame: [B, 29] -> [B, 3]."""
    return np.asarray(next_obs[:, GRIP_POS], np.float64) + np.asarray(next_obs[:, BLOCK_REL], np.float64)


def block_bottom(next_obs: np.ndarray, layout: PlaceLayout = PLACE) -> np.ndarray:
    """Height of the block's lowest corner above the table: [B, 29] -> [B] (exact for any orientation)."""
    return block_position(next_obs)[:, 2] - block_half_extents(next_obs, layout)[:, 2]


def target_xy_distance(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Block-target distance in the table plane, metres: [B, 29] -> [B]."""
    return np.linalg.norm(np.asarray(next_obs[:, TARGET_REL], np.float64)[:, :2], axis=-1)


# ---- fetch-place terms and checks ---------------------------------------------------------------
def place_term(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """In [-1, 0]: ``-(0.55 min(d, 0.5)/0.5 + 0.3 min(d, 0.03)/0.03 + 0.15 g min(|v|, 0.5)/0.5)`` with
    ``d = |target point - block|``, ``v`` the block's velocity and ``g = 1 - min(d, 0.05)/0.05``. [B, 29] -> [B]."""
    lay = PLACE
    d = np.linalg.norm(np.asarray(next_obs[:, TARGET_REL], np.float64), axis=-1)
    speed = np.linalg.norm(np.asarray(next_obs[:, BLOCK_VEL], np.float64), axis=-1)
    far = np.minimum(d, lay.far_scale) / lay.far_scale
    near = np.minimum(d, lay.near_scale) / lay.near_scale
    rest = (1.0 - np.minimum(d, lay.rest_zone) / lay.rest_zone) * np.minimum(speed, lay.rest_scale) / lay.rest_scale
    far_weight = 1.0 - lay.near_weight - lay.rest_weight
    value = -(far_weight * far + lay.near_weight * near + lay.rest_weight * rest)
    return np.where(block_lost(next_obs), -1.0, value)


def block_lost(next_obs: np.ndarray) -> np.ndarray:
    """The block is out of the hand (its centre over ``lost_distance`` from the grip site). [B, 29] -> [B] bool."""
    return np.linalg.norm(np.asarray(next_obs[:, BLOCK_REL], np.float64), axis=-1) > PLACE.lost_distance


def contact_flag(next_obs: np.ndarray) -> np.ndarray:
    """1.0 where the hand or the block touched the obstacle during the step: [B, 29] -> [B]."""
    obs = np.asarray(next_obs, np.float64)
    return np.maximum(obs[:, HAND_CONTACT], obs[:, BLOCK_CONTACT])


def clear_term(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """``-1`` in contact, else ``-clip((margin - gap)/margin, 0, 1)``; in [-1, 0]. [B, 29] -> [B]."""
    ramp = np.clip((PLACE.clear_margin - obstacle_gap(next_obs)) / PLACE.clear_margin, 0.0, 1.0)
    return -np.maximum(ramp, contact_flag(next_obs))


def placed(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Block within ``success_xy`` of the target (xy), resting on the table, nearly still. [B, 29] -> [B] bool."""
    lay = PLACE
    speed = np.linalg.norm(np.asarray(next_obs[:, BLOCK_VEL], np.float64), axis=-1)
    return ((target_xy_distance(next_obs, action) < lay.success_xy)
            & (np.abs(block_bottom(next_obs)) < lay.rest_height) & (speed < lay.rest_speed))


def no_collision(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Neither the robot nor the block touched the obstacle this step. [B, 29] -> [B] bool."""
    return contact_flag(next_obs) < 0.5


def _place_marks(obs: np.ndarray) -> np.ndarray:
    """Top-view marks relative to the target: the target (0, 0) and the obstacle."""
    return np.stack([np.zeros(2), (obs[OBSTACLE_REL_BLOCK] - obs[TARGET_REL])[:2]])


PLACE_FAMILY = Family(
    name="fetch-place",
    terms={"place": place_term, "clear": clear_term},
    success_checks={"placed": placed, "no_collision": no_collision},
    every_step=frozenset({"no_collision"}),
    gamma=0.95,  # as fetch-arm: a carry is 5 to 15 steps; effective horizon 20 steps
    horizon=50,
    term_ranges={"place": (-1.0, 0.0), "clear": (-1.0, 0.0)},
    measures={"block_target_distance": target_xy_distance},
    plane=lambda obs: -obs[..., TARGET_REL][..., :2],  # block relative to the target, top view
    plane_marks=_place_marks,
    plane_label="block - target (x, y), m; marks: target (0, 0) and the obstacle",
)
PLACE_TASK = Task("place", PLACE_FAMILY, {"place": 1.0}, success=("placed",))
CLEAR_TASK = Task("clear", PLACE_FAMILY, {"clear": 1.0}, success=("no_collision",))


# ---- fetch-puck terms and checks ----------------------------------------------------------------
PUCK_GOAL = np.array([PUCK.goal_x, PUCK.goal_y])


def puck_goal_offset(next_obs: np.ndarray) -> np.ndarray:
    """``|puck - (goal_x, goal_y)|`` per coordinate: [B, 21] -> [B, 2]."""
    return np.abs(np.asarray(next_obs[:, PUCK_POS], np.float64)[:, :2] - PUCK_GOAL)


def puck_x_term(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """``-min(|puck_x - goal_x|, goal_scale)/goal_scale`` in [-1, 0]. [B, 21] -> [B]."""
    return -np.minimum(puck_goal_offset(next_obs)[:, 0], PUCK.goal_scale) / PUCK.goal_scale


def puck_y_term(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """``-min(|puck_y - goal_y|, goal_scale)/goal_scale`` in [-1, 0]. [B, 21] -> [B]."""
    return -np.minimum(puck_goal_offset(next_obs)[:, 1], PUCK.goal_scale) / PUCK.goal_scale


def grip_to_puck_term(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Shaping: ``-clip(|puck - grip| - contact_distance, 0, reach_scale)/reach_scale`` in [-1, 0]; 0 in contact."""
    gap = np.linalg.norm(np.asarray(next_obs[:, PUCK_REL], np.float64), axis=-1) - PUCK.contact_distance
    return -np.clip(gap, 0.0, PUCK.reach_scale) / PUCK.reach_scale


def puck_at_x(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """``|puck_x - goal_x| < success_tolerance``. [B, 21] -> [B] bool."""
    return puck_goal_offset(next_obs)[:, 0] < PUCK.success_tolerance


def puck_at_y(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """``|puck_y - goal_y| < success_tolerance``. [B, 21] -> [B] bool."""
    return puck_goal_offset(next_obs)[:, 1] < PUCK.success_tolerance


def puck_goal_distance(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Puck distance to the lines' crossing, metres. [B, 21] -> [B]."""
    return np.linalg.norm(puck_goal_offset(next_obs), axis=-1)


def puck_x_distance(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """``|puck_x - goal_x|``, metres. [B, 21] -> [B]."""
    return puck_goal_offset(next_obs)[:, 0]


def puck_y_distance(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """``|puck_y - goal_y|``, metres. [B, 21] -> [B]."""
    return puck_goal_offset(next_obs)[:, 1]


PUCK_FAMILY = Family(
    name="fetch-puck",
    terms={"puck_x": puck_x_term, "puck_y": puck_y_term, "grip_to_puck": grip_to_puck_term},
    success_checks={"puck_at_x": puck_at_x, "puck_at_y": puck_at_y},
    every_step=frozenset(),
    gamma=0.95,
    horizon=50,
    term_ranges={"puck_x": (-1.0, 0.0), "puck_y": (-1.0, 0.0), "grip_to_puck": (-1.0, 0.0)},
    measures={"puck_goal_distance": puck_goal_distance, "puck_x_distance": puck_x_distance,
              "puck_y_distance": puck_y_distance},
    plane=lambda obs: obs[..., PUCK_POS][..., :2],  # puck, top view
    plane_marks=lambda obs: np.stack([PUCK_GOAL, np.asarray(PUCK.puck_start)]),
    plane_label="puck (x, y), m; marks: the goal lines' crossing and the puck's nominal start",
)
SHAPING_WEIGHT = 0.5
PUCK_X = Task("puck-x", PUCK_FAMILY, {"puck_x": 1.0, "grip_to_puck": SHAPING_WEIGHT}, success=("puck_at_x",))
PUCK_Y = Task("puck-y", PUCK_FAMILY, {"puck_y": 1.0, "grip_to_puck": SHAPING_WEIGHT}, success=("puck_at_y",))

TASKS = [PLACE_TASK, CLEAR_TASK, PUCK_X, PUCK_Y]
COMBINED = [("place+clear", ["place", "clear"]), ("puck-x+puck-y", ["puck-x", "puck-y"])]


# ---- scene sampling (fetch-place) ---------------------------------------------------------------
class GraspError(RuntimeError):
    """The block is not held between the fingers after the reset's settling."""


def _inside(p: np.ndarray, low, high) -> bool:
    return bool(np.all(p[:2] >= np.asarray(low)) and np.all(p[:2] <= np.asarray(high)))


def _segment_distance_xy(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b[:2] - a[:2]
    u = np.clip(np.dot(p[:2] - a[:2], ab) / max(np.dot(ab, ab), 1e-12), 0.0, 1.0)
    return float(np.linalg.norm(a[:2] + u * ab - p[:2]))


def layout_gap(grip: np.ndarray, obstacle: np.ndarray, layout: PlaceLayout = PLACE) -> float:
    """Clearance from the obstacle of the hand holding the upright block centred at ``grip`` (workspace frame)."""
    obs = np.zeros((1, PLACE_OBS_DIM))
    obs[0, BLOCK_ZAXIS], obs[0, BLOCK_XAXIS] = (0.0, 0.0, 1.0), (1.0, 0.0, 0.0)
    centre = np.array([obstacle[0], obstacle[1], layout.obstacle_centre_z])
    obs[0, OBSTACLE_REL_GRIP] = centre - grip
    obs[0, OBSTACLE_REL_BLOCK] = centre - grip
    return float(obstacle_gap(obs, layout)[0])


@dataclass
class PlaceScene:
    """One sampled layout: grip start (= block centre, 3-D), target spot and obstacle (xy on the table)."""

    start: np.ndarray
    target: np.ndarray
    obstacle: np.ndarray
    blocking: bool
    resamples: dict[str, int]
    forced_rejected: bool = False


def _reject_reason(start: np.ndarray, target: np.ndarray, obstacle: np.ndarray, layout: PlaceLayout) -> str | None:
    """Why a drawn layout is not accepted, or ``None``: out of reach, or start/target inside the obstacle."""
    if not (_inside(start, layout.reach_low, layout.reach_high) and _inside(target, layout.reach_low, layout.reach_high)):
        return "out_of_reach"
    if not _inside(obstacle, layout.table_low, layout.table_high):
        return "obstacle_off_table"
    target_grip = np.array([target[0], target[1], layout.block_half])
    if (layout_gap(start, obstacle, layout) < layout.layout_clearance
            or layout_gap(target_grip, obstacle, layout) < layout.layout_clearance):
        return "in_obstacle"
    return None


def sample_place_scene(rng: np.random.Generator, layout: PlaceLayout = PLACE, forced: dict | None = None,
                       max_draws: int = 10_000) -> PlaceScene:
    """Draw start, target and obstacle until they form a valid layout, counting every rejection by reason.

    ``forced`` (``block_start`` [3], ``target`` [2], ``obstacle`` [2], any subset) fixes the first draw;
    if that draw is rejected the layout is drawn afresh (``forced_rejected``).
    """
    counts = {"out_of_reach": 0, "in_obstacle": 0, "obstacle_off_table": 0, "too_close": 0, "obstacle_on_path": 0}
    low, high = np.array(layout.table_low), np.array(layout.table_high)
    forced_rejected = False
    wants_blocking = bool(rng.uniform() < layout.blocking_probability)  # kept through redraws: no bias from rejections
    for draw in range(max_draws):
        pin = forced if (forced and draw == 0) else {}
        start = np.array(pin["block_start"], np.float64) if "block_start" in pin else np.append(
            rng.uniform(low, high), rng.uniform(*layout.start_height))
        target = np.array(pin["target"], np.float64)[:2] if "target" in pin else rng.uniform(low, high)
        if "obstacle" not in pin and np.linalg.norm(target - start[:2]) < layout.min_distance:
            counts["too_close"] += 1
            continue
        blocking = wants_blocking
        if "obstacle" in pin:
            obstacle = np.array(pin["obstacle"], np.float64)[:2]
            blocking = _segment_distance_xy(obstacle, start, target) < layout.obstacle_radius
        elif blocking:
            u = rng.uniform(*layout.blocking_span)
            direction = (target - start[:2]) / np.linalg.norm(target - start[:2])
            sideways = np.array([-direction[1], direction[0]]) * rng.uniform(-layout.blocking_offset, layout.blocking_offset)
            obstacle = start[:2] + u * (target - start[:2]) + sideways
        else:
            obstacle = rng.uniform(low, high)
            if _segment_distance_xy(obstacle, start, target) < layout.clearance:
                counts["obstacle_on_path"] += 1
                continue
        reason = _reject_reason(start, target, obstacle, layout)
        if reason is None:
            return PlaceScene(start, target, obstacle, blocking, counts, forced_rejected)
        counts[reason] += 1
        forced_rejected |= bool(pin)
    raise RuntimeError(f"no valid fetch-place layout in {max_draws} draws (rejections: {counts}); check PlaceLayout")


# ---- the simulator ------------------------------------------------------------------------------
def pick_and_place_xml() -> str:
    """Path of gymnasium-robotics' Fetch ``pick_and_place.xml`` (found without importing the package)."""
    spec = importlib.util.find_spec("gymnasium_robotics")
    if spec is None or spec.origin is None:
        raise ImportError("gymnasium-robotics is not installed: pip install gymnasium-robotics==1.4.2")
    return os.path.join(os.path.dirname(spec.origin), "envs", "assets", "fetch", "pick_and_place.xml")


def add_rim(world) -> None:
    """A rim (3 cm high, 1 cm thick) just inside the table's edges: a block or puck knocked away stays on the
    table, so no state has it on the floor, 40 cm down (such states made soft values run away in training)."""
    import mujoco

    (x0, y0), (x1, y1) = TABLE_LOW, TABLE_HIGH
    t, h = RIM_THICKNESS / 2, RIM_HEIGHT / 2
    cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    sides = {"rim_far": ([x1 - t, cy], [t, hy]), "rim_near": ([x0 + t, cy], [t, hy]),
             "rim_left": ([cx, y1 - t], [hx, t]), "rim_right": ([cx, y0 + t], [hx, t])}
    for name, (centre, half) in sides.items():
        world.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_BOX, size=[half[0], half[1], h],
                       pos=list(WORKSPACE_ORIGIN + np.array([centre[0], centre[1], h])), rgba=[0.8, 0.8, 0.78, 1.0])


class FetchTable:
    """Fetch's pick-and-place scene with our additions, driven by its mocap; obstacle contacts per substep.

    ``edit(spec)`` adds the family's bodies and markers to the ``MjSpec`` before it is compiled.
    """

    def __init__(self, edit: Callable[[Any], None], grip_low, grip_high, width: int, height: int,
                 obstacle: str | None = None, held: str | None = None):
        import mujoco

        spec = mujoco.MjSpec.from_file(pick_and_place_xml())
        for light in spec.lights:
            light.castshadow = True
        spec.visual.quality.shadowsize = SHADOW_SIZE
        for side in ("l", "r"):
            spec.geom(f"robot0:{side}_gripper_finger_link").solref = list(GRASP_SOLREF)
            actuator = spec.actuator(f"robot0:{side}_gripper_finger_joint")
            actuator.gainprm[0], actuator.biasprm[1] = FINGER_KP, -FINGER_KP
        add_rim(spec.worldbody)
        edit(spec)
        self.model = model = spec.compile()
        self.data = mujoco.MjData(model)
        model.site_rgba[model.site("target0").id, 3] = 0.0  # Fetch's own goal marker
        mocap_body = model.body("robot0:mocap").id
        model.geom_rgba[model.geom_bodyid == mocap_body, 3] = 0.0  # mocap crosshair
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), width)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), height)
        self.grip_low, self.grip_high = np.asarray(grip_low, np.float64), np.asarray(grip_high, np.float64)
        self._grip = model.site("robot0:grip").id
        self._gripper = model.body("robot0:gripper_link").id
        self._fingers = np.array([model.joint(f"robot0:{side}_gripper_finger_joint").qposadr[0] for side in ("l", "r")])
        self._finger_dofs = np.array([model.joint(f"robot0:{side}_gripper_finger_joint").dofadr[0] for side in ("l", "r")])
        self._finger_actuators = np.array([model.actuator(f"robot0:{side}_gripper_finger_joint").id for side in ("l", "r")])
        # geom kinds for contact flags: 1 robot, 2 held object, 4 obstacle; a pair's OR says what touched what
        robot_root = model.body("robot0:base_link").id
        in_robot = np.zeros(model.nbody, bool)
        for b in range(model.nbody):
            a = b
            while a > 0 and a != robot_root:
                a = model.body_parentid[a]
            in_robot[b] = a == robot_root
        self._kind = np.zeros(model.ngeom, np.int8)
        self._kind[in_robot[model.geom_bodyid]] = 1
        if held is not None:
            self._kind[model.geom(held).id] = 2
        self.obstacle_geom = model.geom(obstacle).id if obstacle is not None else None
        if self.obstacle_geom is not None:
            self._kind[self.obstacle_geom] = 4
        self._velocity = np.zeros(6)
        self._go_home()

    # -- positions in the workspace frame
    def grip_position(self) -> np.ndarray:
        return self.data.site_xpos[self._grip] - WORKSPACE_ORIGIN

    def grip_velocity(self) -> np.ndarray:
        import mujoco

        mujoco.mj_objectVelocity(self.model, self.data, int(mujoco.mjtObj.mjOBJ_SITE), self._grip, self._velocity, 0)
        return self._velocity[3:].copy()

    def finger_positions(self) -> np.ndarray:
        """Finger joint openings (l, r), metres from closed."""
        return self.data.qpos[self._fingers].copy()

    def gripper_frame(self) -> np.ndarray:
        """Rotation matrix of the gripper body (columns: its axes in world coordinates)."""
        return self.data.xmat[self._gripper].reshape(3, 3).copy()

    # -- home pose and resets
    def _go_home(self) -> None:
        """Fetch's own start (``MujocoFetchEnv._env_setup``): base slides, mocap weld, gripper lowered."""
        import mujoco

        with contextlib.redirect_stderr(io.StringIO()):  # its first import prints a notice about Adroit envs (as fetch.py)
            from gymnasium_robotics.utils import mujoco_utils

        model, data = self.model, self.data
        for name, value in {"robot0:slide0": 0.4049, "robot0:slide1": 0.48, "robot0:slide2": 0.0}.items():
            mujoco_utils.set_joint_qpos(model, data, name, value)
        mujoco_utils.reset_mocap_welds(model, data)
        mujoco.mj_forward(model, data)
        data.mocap_pos[0] = np.array([-0.498, 0.005, -0.431 + 0.2]) + data.site_xpos[self._grip]
        data.mocap_quat[0] = GRIPPER_QUAT
        data.ctrl[self._finger_actuators] = 0.0
        mujoco.mj_step(model, data, nstep=1000)  # 2 s: the arm comes to rest
        self.home_qpos = data.qpos.copy()

    def reset_to_home(self) -> None:
        import mujoco

        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = self.home_qpos
        self.data.qvel[:] = 0.0
        mujoco.mj_forward(self.model, self.data)
        self.data.mocap_pos[0] = self.data.xpos[self._gripper]
        self.data.mocap_quat[0] = GRIPPER_QUAT

    def move_grip_to(self, target: np.ndarray, fingers: float, max_steps: int = 40, tolerance: float = 0.002) -> float:
        """Walk the grip site to ``target`` (workspace frame) at most 5 cm per 20 substeps with the fingers at
        ``fingers`` (actuator target, m), then settle; returns the remaining distance."""
        import mujoco

        model, data = self.model, self.data
        data.ctrl[self._finger_actuators] = fingers
        for _ in range(max_steps):
            error = target - self.grip_position()
            if np.linalg.norm(error) < tolerance:
                break
            data.mocap_pos[0] = data.xpos[self._gripper] + np.clip(error, -MAX_DISPLACEMENT, MAX_DISPLACEMENT)
            data.mocap_quat[0] = GRIPPER_QUAT
            mujoco.mj_step(model, data, nstep=N_SUBSTEPS)
        data.mocap_pos[0] = data.xpos[self._gripper] + (target - self.grip_position())
        mujoco.mj_step(model, data, nstep=2 * N_SUBSTEPS)
        mujoco.mj_forward(model, data)
        return float(np.linalg.norm(target - self.grip_position()))

    def hold(self, substeps: int) -> None:
        """Keep the mocap where the gripper is and simulate ``substeps`` (fingers commanded closed)."""
        import mujoco

        self.data.ctrl[self._finger_actuators] = 0.0
        self.data.mocap_pos[0] = self.data.xpos[self._gripper]
        self.data.mocap_quat[0] = GRIPPER_QUAT
        mujoco.mj_step(self.model, self.data, nstep=substeps)
        mujoco.mj_forward(self.model, self.data)

    def set_fingers(self, opening: float) -> None:
        self.data.qpos[self._fingers] = opening
        self.data.qvel[self._finger_dofs] = 0.0

    # -- one environment step
    def step(self, action: np.ndarray) -> tuple[bool, bool]:
        """Move the mocap by ``0.05 * action`` from the gripper (grip target clamped to the workspace box), close
        the fingers and simulate one step. Returns (robot touched the obstacle, held object touched it) over
        every substep and the final state."""
        import mujoco

        model, data = self.model, self.data
        grip = self.grip_position()
        target = np.clip(grip + MAX_DISPLACEMENT * action, self.grip_low, self.grip_high)
        data.mocap_pos[0] = data.xpos[self._gripper] + (target - grip)
        data.mocap_quat[0] = data.xquat[self._gripper] + np.array([1.0, 0.0, 1.0, 0.0])  # as Fetch's _set_action
        data.ctrl[self._finger_actuators] = 0.0
        hand = block = False
        for _ in range(N_SUBSTEPS):
            mujoco.mj_step(model, data)
            h, b = self._obstacle_contacts()
            hand, block = hand or h, block or b
        mujoco.mj_forward(model, data)  # positions, velocities and contacts of the final state
        h, b = self._obstacle_contacts()
        return hand or h, block or b

    def _obstacle_contacts(self) -> tuple[bool, bool]:
        if self.obstacle_geom is None or self.data.ncon == 0:
            return False, False
        geom = self.data.contact.geom
        code = self._kind[geom[:, 0]] | self._kind[geom[:, 1]]
        return bool(np.any(code == 5)), bool(np.any(code == 6))

    def contacts_with(self, geom_id: int) -> list[str]:
        """Names of the geoms touching ``geom_id`` in the current state (diagnostics and messages)."""
        import mujoco

        names = []
        for g1, g2 in self.data.contact.geom:
            if geom_id in (g1, g2):
                other = g2 if g1 == geom_id else g1
                names.append(mujoco.mj_id2name(self.model, int(mujoco.mjtObj.mjOBJ_GEOM), other) or f"geom {other}")
        return names


class _FetchTableEnv(MujocoRendering, gym.Env):
    """What both families share: the render contract, the action check, info, the time step."""

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": int(round(1.0 / (N_SUBSTEPS * 0.002)))}
    camera: dict

    def _init_common(self, task: Task, render_mode: str | None, width: int, height: int, obs_dim: int,
                     arm_kwargs: dict[str, Any]) -> None:
        refuse_other_arm(task, arm_kwargs)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.task = task
        self.tracker = EpisodeTracker(task)
        self.render_mode = render_mode
        self._size = (width, height)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(obs_dim,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(ACTION_DIM,), dtype=np.float32)

    def _scene(self):
        return self.sim.model, self.sim.data, self.camera


ARM_OPTIONS = ("arm", "ee_site", "workspace_origin")  # envs.make's custom-arm options (envs.arm)


def refuse_other_arm(task: Task, arm_kwargs: dict[str, Any]) -> None:
    """These families run on Fetch's own scene only: their tasks need its two-finger gripper (the grasp of
    ``fetch-place``, the closed fingers that push the puck), which the custom arms of ``envs.arm`` do not have. A
    custom-arm option is refused with a ``ValueError`` saying so; any other unknown keyword is a ``TypeError``."""
    unknown = sorted(set(arm_kwargs) - set(ARM_OPTIONS))
    if unknown:
        raise TypeError(f"unexpected keyword arguments for task {task.name!r}: {', '.join(unknown)}")
    given = sorted(k for k, v in arm_kwargs.items() if v is not None)
    if given:
        raise ValueError(f"task {task.name!r} (family {task.family.name!r}) runs on Fetch only: it needs Fetch's "
                         f"two-finger gripper, which a custom arm does not have; drop {', '.join(given)} (custom arms "
                         "run the fetch-arm tasks: reach, avoid)")


def _add_visual(body, **kwargs) -> None:
    """A geom that is drawn but never collides."""
    body.add_geom(contype=0, conaffinity=0, **kwargs)


class FetchPlaceEnv(_FetchTableEnv):
    """A task of ``fetch-place``: carry the held block to the target spot, past a solid obstacle."""

    def __init__(self, task: Task = PLACE_TASK, render_mode: str | None = None, width: int = 480, height: int = 480,
                 **arm_kwargs: Any):
        self._init_common(task, render_mode, width, height, PLACE_OBS_DIM, arm_kwargs)
        self.layout = PLACE
        self.sim = FetchTable(self._edit, self.layout.grip_low, self.layout.grip_high, width, height,
                              obstacle="task_obstacle", held="object0")
        model = self.sim.model
        self._block = model.body("object0").id
        self._block_qpos = model.joint("object0:joint").qposadr[0]
        self._block_qvel = model.joint("object0:joint").dofadr[0]
        self._target_site = model.site("task_target").id
        self._obstacle_body = model.body("task_obstacle").id
        self.target = np.zeros(2)
        self.obstacle = np.zeros(2)
        self.obstacle_blocks_path = False
        self.collided = False
        # from the front right, above the table: hand, block, obstacle and target in one view
        self.camera = {"lookat": WORKSPACE_ORIGIN + np.array([-0.03, 0.0, 0.06]), "distance": 1.0,
                       "azimuth": 215.0, "elevation": -30.0}

    def _edit(self, spec) -> None:
        import mujoco

        lay = self.layout
        spec.geom("object0").solref = list(GRASP_SOLREF)
        spec.material("block_mat").rgba = [0.15, 0.35, 0.85, 1.0]  # Fetch's is dark grey: hard to see under the hand
        world = spec.worldbody
        # a cylinder on a body welded to the world (no joint: static, a fixed wall), moved each reset through
        # body_pos. Not a geom of the world body itself: MuJoCo's mid-phase keeps a static bounding-volume tree of
        # the world body's geoms, so a world geom moved after compiling is missed by collision detection.
        obstacle = world.add_body(name="task_obstacle", pos=list(OBSTACLE_PARKED))
        obstacle.add_geom(name="task_obstacle", type=mujoco.mjtGeom.mjGEOM_CYLINDER,
                          size=[lay.obstacle_radius, lay.obstacle_height / 2, 0], rgba=[0.75, 0.2, 0.12, 1.0],
                          condim=3, solref=[0.005, 1.0], solimp=[0.99, 0.999, 0.001, 0.5, 2])
        world.add_site(name="task_target", type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[lay.target_radius, 0.0008, 0],
                       pos=list(WORKSPACE_ORIGIN + np.array([0.0, 0.5, 0.0008])), rgba=[1.0, 0.8, 0.0, 1.0])

    # -- observation
    def _obs(self, hand: bool, block: bool) -> np.ndarray:
        lay, data = self.layout, self.sim.data
        grip = self.sim.grip_position()
        centre = data.xpos[self._block] - WORKSPACE_ORIGIN
        rotation = data.xmat[self._block].reshape(3, 3)
        obstacle = np.array([self.obstacle[0], self.obstacle[1], lay.obstacle_centre_z])
        target = np.array([self.target[0], self.target[1], lay.block_half])
        obs = np.concatenate([grip, self.sim.grip_velocity(), centre - grip, data.qvel[self._block_qvel:self._block_qvel + 3],
                              rotation[:, 2], rotation[:, 0], target - centre, obstacle - grip, obstacle - centre,
                              [float(hand), float(block)]])
        return obs.astype(np.float32)

    # -- reset
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """``options``: ``block_start`` [3], ``target`` [2], ``obstacle`` [2] (workspace frame, any subset) fix the
        first layout draw; a draw that is out of reach or inside the obstacle is drawn again and counted."""
        super().reset(seed=seed)
        forced = {k: v for k, v in (options or {}).items() if k in ("block_start", "target", "obstacle")}
        scene = sample_place_scene(self.np_random, self.layout, forced or None)
        self.target, self.obstacle, self.obstacle_blocks_path = scene.target, scene.obstacle, scene.blocking
        self._place_scene(scene.start)
        self.tracker.reset()
        self.collided = False
        hand, block = self.sim._obstacle_contacts()
        obs = self._obs(hand, block)
        if self.render_mode == "human":
            self.render()
        return obs, {"obstacle_blocks_path": self.obstacle_blocks_path, "target": self.target.copy(),
                     "obstacle": self.obstacle.copy(), "block_start": scene.start.copy(),
                     "resamples": dict(scene.resamples), "resampled": int(sum(scene.resamples.values())),
                     "forced_layout_rejected": scene.forced_rejected, "grasp": self.grasp_state()}

    def _place_scene(self, start: np.ndarray) -> None:
        """Arm to the start with open fingers, block into the hand, fingers closed on it, settle, check."""
        import mujoco

        lay, sim = self.layout, self.sim
        model, data = sim.model, sim.data
        sim.reset_to_home()
        model.body_pos[self._obstacle_body] = OBSTACLE_PARKED  # out of the arm's way while it moves to the start
        data.qpos[self._block_qpos:self._block_qpos + 3] = WORKSPACE_ORIGIN + np.array([0.0, 0.6, -0.3])  # parked
        error = sim.move_grip_to(start, fingers=0.05)
        if error > 0.005:
            raise RuntimeError(f"the gripper did not reach its start {start.round(3).tolist()} (off by {error:.4f} m); "
                               "PlaceLayout.reach_low/high allow a place the arm cannot reach")
        grip_world = data.site_xpos[sim._grip].copy()
        data.qpos[self._block_qpos:self._block_qpos + 3] = grip_world
        data.qpos[self._block_qpos + 3:self._block_qpos + 7] = [1.0, 0.0, 0.0, 0.0]
        data.qvel[self._block_qvel:self._block_qvel + 6] = 0.0
        sim.set_fingers(GRASP_OPENING)
        mujoco.mj_forward(model, data)
        sim.hold(SETTLE_SUBSTEPS)
        model.body_pos[self._obstacle_body] = WORKSPACE_ORIGIN + np.array([self.obstacle[0], self.obstacle[1],
                                                                         lay.obstacle_centre_z])
        model.site_pos[self._target_site] = WORKSPACE_ORIGIN + np.array([self.target[0], self.target[1], 0.0008])
        mujoco.mj_forward(model, data)
        self.check_grasp("at reset")

    def grasp_state(self) -> dict:
        """Finger gap (between the pads, m), block offset from the grip site in the gripper frame (m), and the block's
        tilt relative to the gripper (deg)."""
        data = self.sim.data
        rotation = self.sim.gripper_frame()
        offset = rotation.T @ (data.xpos[self._block] - data.site_xpos[self.sim._grip])
        gap = float(np.sum(self.sim.finger_positions()) + 2 * FINGER_INNER_FACE)
        up = -rotation[:, 0]  # the gripper's x-axis points down, along the fingers
        tilt = float(np.degrees(np.arccos(np.clip(data.xmat[self._block].reshape(3, 3)[:, 2] @ up, -1.0, 1.0))))
        return {"finger_gap": gap, "block_offset": offset.tolist(), "block_tilt_deg": tilt}

    def check_grasp(self, when: str) -> None:
        """Raise ``GraspError`` unless the block sits between the fingers (gap ~ its width, centred, upright)."""
        state = self.grasp_state()
        gap, offset = state["finger_gap"], np.array(state["block_offset"])
        width = 2 * self.layout.block_half
        problems = []
        if abs(gap - width) > GRASP_GAP_TOLERANCE:
            problems.append(f"the finger gap is not the block's width +- {GRASP_GAP_TOLERANCE} m")
        if np.max(np.abs(offset)) > GRASP_OFFSET_TOLERANCE:
            problems.append(f"the block is more than {GRASP_OFFSET_TOLERANCE} m off the grip site")
        if state["block_tilt_deg"] > GRASP_TILT_TOLERANCE:
            problems.append(f"the block is tilted more than {GRASP_TILT_TOLERANCE} deg in the hand")
        if problems:
            raise GraspError(f"block slipped out of the grasp {when}: finger gap {gap:.4f} m (block width {width:.3f} m), "
                             f"block offset {np.round(offset, 4).tolist()} m from the grip site (gripper frame), tilt "
                             f"{state['block_tilt_deg']:.1f} deg: {'; '.join(problems)}. Fingers (l, r) at "
                             f"{np.round(self.sim.finger_positions(), 4).tolist()} m; the block touches "
                             f"{self.sim.contacts_with(self.sim.model.geom('object0').id)}")

    # -- step
    def step(self, action):
        action = checked_action(action, ACTION_DIM)
        hand, block = self.sim.step(action)
        obs = self._obs(hand, block)
        reward, info = self.tracker.step_info(obs, action)
        info["collision"] = bool(hand or block)
        info["hand_contact"], info["block_contact"] = bool(hand), bool(block)
        info["distance_to_target"] = float(np.linalg.norm(obs[TARGET_REL]))
        info["block_target_xy"] = float(np.linalg.norm(obs[TARGET_REL][:2]))
        info["distance_to_obstacle"] = float(obstacle_gap(obs[None].astype(np.float64))[0])
        info["block_height"] = float(block_bottom(obs[None].astype(np.float64))[0])
        if self.render_mode == "human":
            self.render()
        return obs, reward, False, False, info


OBSTACLE_PARKED = WORKSPACE_ORIGIN + np.array([0.0, 0.6, 0.06])  # beside the table, while the arm moves to its start
GRASP_OPENING = 0.0239  # finger joint opening that puts both pads on a 5 cm block (pads 0.9 mm off centre when closed)
FINGER_INNER_FACE = 0.0009  # a closed finger pad's inner face, metres from the gripper's midplane
SETTLE_SUBSTEPS = 50  # 0.1 s with the mocap still, after the block is put between the fingers
GRASP_GAP_TOLERANCE = 0.003
GRASP_OFFSET_TOLERANCE = 0.01
GRASP_TILT_TOLERANCE = 10.0


class FetchPuckEnv(_FetchTableEnv):
    """A task of ``fetch-puck``: push the puck to a line (or the lines' crossing) with the closed gripper."""

    def __init__(self, task: Task = PUCK_X, render_mode: str | None = None, width: int = 480, height: int = 480,
                 **arm_kwargs: Any):
        self._init_common(task, render_mode, width, height, PUCK_OBS_DIM, arm_kwargs)
        self.layout = PUCK
        self.sim = FetchTable(self._edit, self.layout.grip_low, self.layout.grip_high, width, height)
        model = self.sim.model
        self._puck = model.body("puck").id
        self._puck_qpos = model.joint("puck").qposadr[0]
        self._puck_qvel = model.joint("puck").dofadr[0]
        show_goals_of(task, model)
        self.camera = {"lookat": WORKSPACE_ORIGIN + np.array([-0.05, -0.02, 0.0]), "distance": 1.0,
                       "azimuth": 180.0, "elevation": -62.0}

    def _edit(self, spec) -> None:
        import mujoco

        lay = self.layout
        spec.delete(spec.body("object0"))  # Fetch's block is not part of this family
        world = spec.worldbody
        start = WORKSPACE_ORIGIN + np.array([lay.puck_start[0], lay.puck_start[1], lay.puck_half_height])
        puck = world.add_body(name="puck", pos=list(start))
        puck.add_freejoint(name="puck")
        puck.add_geom(name="puck", type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[lay.puck_radius, lay.puck_half_height, 0],
                      mass=lay.puck_mass, condim=3, rgba=[0.8, 0.1, 0.15, 1.0])
        # goal lines and their crossing: visual only, a hair above the table
        (x0, y0), (x1, y1) = TABLE_LOW, TABLE_HIGH
        cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        box, disc = mujoco.mjtGeom.mjGEOM_BOX, mujoco.mjtGeom.mjGEOM_CYLINDER
        _add_visual(world, name="goal_x_line", type=box, size=[0.006, hy, 0.0008],
                    pos=list(WORKSPACE_ORIGIN + [lay.goal_x, cy, 0.0008]), rgba=[0.15, 0.75, 0.25, 1.0])
        _add_visual(world, name="goal_y_line", type=box, size=[hx, 0.006, 0.0008],
                    pos=list(WORKSPACE_ORIGIN + [cx, lay.goal_y, 0.0008]), rgba=[0.15, 0.75, 0.25, 1.0])
        _add_visual(world, name="goal_point", type=disc, size=[lay.success_tolerance, 0.0009, 0],
                    pos=list(WORKSPACE_ORIGIN + [lay.goal_x, lay.goal_y, 0.0009]), rgba=[0.55, 0.85, 0.55, 1.0])

    def _obs(self) -> np.ndarray:
        data = self.sim.data
        grip = self.sim.grip_position()
        puck = data.xpos[self._puck] - WORKSPACE_ORIGIN
        rotation = data.xmat[self._puck].reshape(3, 3)
        qvel = data.qvel[self._puck_qvel:self._puck_qvel + 6]
        spin = rotation @ qvel[3:] * self.layout.puck_radius  # free joint: angular velocity in the body frame
        obs = np.concatenate([grip, self.sim.grip_velocity(), puck, puck - grip, qvel[:3], rotation[:, 2], spin])
        return obs.astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        import mujoco

        super().reset(seed=seed)
        lay, sim = self.layout, self.sim
        model, data = sim.model, sim.data
        sim.reset_to_home()
        puck = np.array(lay.puck_start) + self.np_random.uniform(-lay.puck_start_noise, lay.puck_start_noise, 2)
        angle = self.np_random.uniform(0.0, 2 * np.pi)
        distance = lay.grip_distance + self.np_random.uniform(-lay.grip_distance_noise, lay.grip_distance_noise)
        grip = np.array([puck[0] + distance * np.cos(angle), puck[1] + distance * np.sin(angle), lay.grip_height])
        data.qpos[self._puck_qpos:self._puck_qpos + 3] = WORKSPACE_ORIGIN + np.array([0.0, 0.6, lay.puck_half_height])
        error = sim.move_grip_to(grip, fingers=0.0)
        if error > 0.005:
            raise RuntimeError(f"the gripper did not reach its start {grip.round(3).tolist()} (off by {error:.4f} m)")
        data.qpos[self._puck_qpos:self._puck_qpos + 3] = WORKSPACE_ORIGIN + np.array([puck[0], puck[1], lay.puck_half_height])
        data.qpos[self._puck_qpos + 3:self._puck_qpos + 7] = [1.0, 0.0, 0.0, 0.0]
        data.qvel[self._puck_qvel:self._puck_qvel + 6] = 0.0
        mujoco.mj_forward(model, data)
        sim.hold(SETTLE_SUBSTEPS)
        self.tracker.reset()
        obs = self._obs()
        if self.render_mode == "human":
            self.render()
        return obs, {"puck_start": puck, "grip_start": grip}

    def step(self, action):
        action = checked_action(action, ACTION_DIM)
        self.sim.step(action)
        obs = self._obs()
        reward, info = self.tracker.step_info(obs, action)
        info["puck_goal_distance"] = float(puck_goal_distance(obs[None], action[None])[0])
        info["grip_puck_distance"] = float(np.linalg.norm(obs[PUCK_REL]))
        if self.render_mode == "human":
            self.render()
        return obs, reward, False, False, info


def show_goals_of(task: Task, model: mujoco.MjModel) -> None:
    """Draw the goal lines ``task`` rewards solid, the others faint; the crossing only if both count."""
    rewards_x, rewards_y = task.weights.get("puck_x", 0.0) > 0, task.weights.get("puck_y", 0.0) > 0
    if not rewards_x:
        model.geom("goal_x_line").rgba[3] = 0.15
    if not rewards_y:
        model.geom("goal_y_line").rgba[3] = 0.15
    if not (rewards_x and rewards_y):
        model.geom("goal_point").rgba[3] = 0.0
