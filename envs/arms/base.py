"""The contract every arm backend meets, and what all of them share (geometry, markers, site queries).

Backends (``envs.arms.fetch``, ``envs.arms.custom``) import this module; it imports none of them, and
neither does the task family (``envs.arm``), which reaches backends through ``envs.arms.make_arm``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

MAX_DISPLACEMENT = 0.05  # metres per step at |a| = 1 (the Fetch mocap scale)
MAX_ORIGIN = 100.0  # m: a workspace origin farther than this from the base is refused (1e308 would turn IK into NaN)


@dataclass(frozen=True)
class ArmLayout:
    """Geometry of the arm tasks, in the workspace frame (metres)."""

    target_low: tuple[float, float, float] = (-0.2, -0.2, -0.05)  # target box, lower corner
    target_high: tuple[float, float, float] = (0.2, 0.2, 0.15)  # target box, upper corner
    min_target_distance: float = 0.2  # target at least this far from the start
    success_radius: float = 0.05  # reached: end effector within this of the target
    obstacle_radius: float = 0.05  # drawn radius of the obstacle sphere
    ee_radius: float = 0.02  # end effector treated as a sphere of this radius
    avoid_margin: float = 0.04  # avoid penalty ramps up over this distance before contact
    reach_scale: float = 0.5  # reach penalty saturates at -1 beyond this distance
    blocking_probability: float = 0.5  # chance the obstacle sits on the start-target segment
    blocking_span: tuple[float, float] = (0.4, 0.6)  # where along the segment it sits
    blocking_offset: float = 0.02  # max sideways offset of a blocking obstacle from the segment
    clearance: float = 0.12  # a non-blocking obstacle stays this far from start, target and segment

    @property
    def collision_radius(self) -> float:
        return self.obstacle_radius + self.ee_radius


LAYOUT = ArmLayout()


# ---- drawing, shared by every backend --------------------------------------------------------
@dataclass(frozen=True)
class Marker:
    """A visual-only sphere site that a backend adds to its world body."""

    name: str  # site name in the compiled model
    radius: float  # drawn radius (m)
    rgba: tuple[float, float, float, float]


TARGET_MARKER = Marker("task_target", 0.02, (1.0, 0.8, 0.0, 1.0))
OBSTACLE_MARKER = Marker("task_obstacle", LAYOUT.obstacle_radius, (0.9, 0.15, 0.1, 0.55))
MARKERS = (TARGET_MARKER, OBSTACLE_MARKER)
# Markers start off the world origin: a site compiled at its body's origin is flagged "same
# frame" and MuJoCo would then ignore later changes to ``site_pos``.
MARKER_START = (0.0, 0.0, -1.0)
SHADOW_SIZE = 1024  # shadow-map texels: cheap on CPU renderers, still gives a depth cue


# ---- the contract ----------------------------------------------------------------------------
class Arm(Protocol):
    """What ``envs.arm.ArmTaskEnv`` needs from a robot. Positions are in world coordinates."""

    model: Any  # mujoco.MjModel
    data: Any  # mujoco.MjData
    workspace_origin: np.ndarray  # world position of the end effector at reset
    camera: dict  # free-camera settings (lookat, distance, azimuth, elevation)

    def reset(self) -> None:
        """Put the arm back at its start pose (end effector at ``workspace_origin``)."""

    def move_ee(self, action: np.ndarray) -> None:
        """Command an end-effector displacement ``MAX_DISPLACEMENT * action`` and simulate one step."""

    def ee_position(self) -> np.ndarray:
        """End-effector position, [3]."""

    def ee_velocity(self) -> np.ndarray:
        """End-effector linear velocity, [3]."""

    def place_markers(self, target: np.ndarray, obstacle: np.ndarray) -> None:
        """Move the drawn target and obstacle (world coordinates)."""


class SiteArm:
    """The queries every MuJoCo backend answers the same way, from its end-effector site and the two markers.

    A backend sets ``model``, ``data`` and calls ``_bind_sites(ee_site_name)``.
    """

    model: Any
    data: Any

    def _bind_sites(self, ee_site: str) -> None:
        self._ee_site = self.model.site(ee_site).id
        self._target = self.model.site(TARGET_MARKER.name).id
        self._obstacle = self.model.site(OBSTACLE_MARKER.name).id
        self._velocity = np.zeros(6)  # mj_objectVelocity output: (angular, linear)

    def ee_position(self) -> np.ndarray:
        return self.data.site_xpos[self._ee_site].copy()

    def ee_velocity(self) -> np.ndarray:
        """World-frame linear velocity of the end-effector site, [3]."""
        import mujoco

        mujoco.mj_objectVelocity(self.model, self.data, mujoco.mjtObj.mjOBJ_SITE, self._ee_site, self._velocity, 0)
        return self._velocity[3:].copy()

    def place_markers(self, target: np.ndarray, obstacle: np.ndarray) -> None:
        import mujoco

        self.model.site_pos[self._target] = target
        self.model.site_pos[self._obstacle] = obstacle
        mujoco.mj_kinematics(self.model, self.data)
