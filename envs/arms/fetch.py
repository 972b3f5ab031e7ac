"""The Fetch robot of gymnasium-robotics as an ``Arm`` backend (mocap-driven gripper)."""

from __future__ import annotations

import contextlib
import io
import os

import mujoco
import numpy as np

with contextlib.redirect_stderr(io.StringIO()):  # its import prints a notice about Adroit envs
    from gymnasium_robotics.envs import robot_env
    from gymnasium_robotics.envs.fetch.fetch_env import MujocoFetchEnv

from .base import LAYOUT, MARKER_START, MARKERS, MAX_DISPLACEMENT, SHADOW_SIZE, SiteArm

_REACH_XML = os.path.join(os.path.dirname(robot_env.__file__), "assets", "fetch", "reach.xml")
_INITIAL_QPOS = {"robot0:slide0": 0.4049, "robot0:slide1": 0.48, "robot0:slide2": 0.0}


def add_markers(worldbody) -> None:
    """Add the target and obstacle sites (``base.MARKERS``, visual only) to an ``MjSpec`` worldbody."""
    for marker in MARKERS:
        worldbody.add_site(name=marker.name, type=mujoco.mjtGeom.mjGEOM_SPHERE, pos=list(MARKER_START),
                           size=[marker.radius, 0, 0], rgba=marker.rgba)


class _FetchScene(MujocoFetchEnv):
    """Fetch reach scene (robot, table) with our target and obstacle, and a shadow-casting light."""

    def __init__(self, width: int, height: int):
        super().__init__(
            model_path=_REACH_XML, has_object=False, block_gripper=True, n_substeps=20,
            gripper_extra_height=0.2, target_in_the_air=True, target_offset=0.0, obj_range=0.15,
            target_range=0.15, distance_threshold=LAYOUT.success_radius, initial_qpos=_INITIAL_QPOS,
            reward_type="dense", width=width, height=height,
        )

    def _initialize_simulation(self):
        spec = mujoco.MjSpec.from_file(self.fullpath)
        add_markers(spec.worldbody)
        for light in spec.lights:
            light.castshadow = True
        spec.visual.quality.shadowsize = SHADOW_SIZE
        self.model = spec.compile()
        self.model.site_rgba[self.model.site("target0").id, 3] = 0.0  # Fetch's own goal marker
        mocap_body = self.model.body("robot0:mocap").id
        self.model.geom_rgba[self.model.geom_bodyid == mocap_body, 3] = 0.0  # mocap crosshair
        self.data = mujoco.MjData(self.model)
        self._model_names = self._utils.MujocoModelNames(self.model)
        self.model.vis.global_.offwidth = self.width
        self.model.vis.global_.offheight = self.height
        self._env_setup(initial_qpos=self.initial_qpos)
        self.initial_time = self.data.time
        self.initial_qpos = np.copy(self.data.qpos)
        self.initial_qvel = np.copy(self.data.qvel)


class FetchArm(SiteArm):
    """Fetch's gripper driven in Cartesian space by its mocap weld, fingers blocked."""

    def __init__(self, width: int = 480, height: int = 480):
        self._scene = _FetchScene(width, height)
        self.model, self.data = self._scene.model, self._scene.data
        self.workspace_origin = self._scene.initial_gripper_xpos.copy()
        self.camera = {"lookat": self.workspace_origin + np.array([0.0, 0.0, -0.05]),
                       "distance": 1.3, "azimuth": 60.0, "elevation": -35.0}
        self._bind_sites("robot0:grip")
        self._action = np.zeros(4)

    def reset(self) -> None:
        self._scene._reset_sim()

    def move_ee(self, action: np.ndarray) -> None:
        self._action[:3] = action  # Fetch scales by 0.05 m itself
        self._scene._set_action(self._action)  # moves the mocap target
        self._scene._mujoco_step(self._action)
        self._scene._step_callback()


assert abs(MAX_DISPLACEMENT - 0.05) < 1e-12, "FetchArm relies on Fetch's own 0.05 m action scale"
