"""Offscreen frames (any headless machine) and an optional live window (when a display exists)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _gl
from ._gl import RENDER_INSTALL_HINT, headless

if TYPE_CHECKING:
    import mujoco
    from gymnasium.envs.mujoco.mujoco_rendering import MujocoRenderer


class RenderingUnavailable(RuntimeError):
    """No OpenGL backend could be found; the message says which packages to install."""


def check_backend() -> None:
    """Raise ``RenderingUnavailable`` with install instructions if frames cannot be made."""
    if headless() and not os.environ.get("MUJOCO_GL"):
        raise RenderingUnavailable(_gl.UNAVAILABLE_REASON or ("no display and no MUJOCO_GL.\n" + RENDER_INSTALL_HINT))


def free_camera(config: dict):
    """A free ``mujoco.MjvCamera`` from settings (lookat, distance, azimuth, elevation)."""
    import mujoco

    camera = mujoco.MjvCamera()
    camera.type = int(mujoco.mjtCamera.mjCAMERA_FREE)
    for key, value in config.items():
        if key == "lookat":
            camera.lookat[:] = value
        else:
            setattr(camera, key, value)
    return camera


class SceneRenderer:
    """Renders a MuJoCo scene from a free camera: ``rgb_array`` frames or a ``human`` window."""

    def __init__(self, model, data, camera: dict, width: int, height: int):
        check_backend()
        self.model, self.data = model, data
        self.camera_config = dict(camera)
        self.width, self.height = width, height
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), width)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), height)
        self._camera = free_camera(self.camera_config)
        self._offscreen: mujoco.Renderer | None = None
        self._window: MujocoRenderer | None = None

    def render(self, mode: str = "rgb_array", camera: dict | None = None, trail: np.ndarray | None = None,
               trail_rgba: tuple = (0.1, 0.5, 1.0, 0.9)) -> np.ndarray | None:
        """A frame (``rgb_array``) or a window update (``human``). ``camera``: free-camera settings that
        override the default for this frame only (lookat, distance, azimuth, elevation); ``trail``:
        world points [n, 3] drawn as small spheres (e.g. the end effector's path so far)."""
        import mujoco

        if mode == "human":
            if headless():
                raise RenderingUnavailable("render_mode='human' needs a display; use 'rgb_array'.")
            if self._window is None:
                from gymnasium.envs.mujoco.mujoco_rendering import MujocoRenderer

                self._window = MujocoRenderer(self.model, self.data, self.camera_config,
                                              width=self.width, height=self.height)
            self._window.render("human")
            return None
        if self._offscreen is None:
            try:
                self._offscreen = mujoco.Renderer(self.model, self.height, self.width)
            except Exception as err:  # the GL backends raise assorted types
                raise RenderingUnavailable(f"could not create an OpenGL context ({err}).\n"
                                           + RENDER_INSTALL_HINT) from err
        view = free_camera({**self.camera_config, **camera}) if camera else self._camera
        self._offscreen.update_scene(self.data, view)
        scene = self._offscreen.scene
        for point in [] if trail is None else np.asarray(trail)[-(scene.maxgeom - scene.ngeom):]:
            mujoco.mjv_initGeom(scene.geoms[scene.ngeom], int(mujoco.mjtGeom.mjGEOM_SPHERE), np.array([0.004, 0, 0]),
                                np.asarray(point, np.float64), np.eye(3).ravel(), np.asarray(trail_rgba, np.float32))
            scene.ngeom += 1
        return self._offscreen.render().copy()

    def close(self) -> None:
        if self._offscreen is not None:
            self._offscreen.close()
            self._offscreen = None
        if self._window is not None:
            self._window.close()
            self._window = None


class MujocoRendering:
    """``render()`` and ``close()`` for a ``gymnasium.Env`` that draws one MuJoCo scene.

    The env sets ``render_mode`` and ``_size = (width, height)`` and implements ``_scene()``
    returning ``(model, data, camera)``; the renderer is created on the first frame.
    """

    render_mode: str | None
    _size: tuple[int, int]
    _renderer: SceneRenderer | None = None

    def _scene(self) -> tuple[Any, Any, dict]:  # model, data, camera
        raise NotImplementedError

    def render(self):
        if self.render_mode is None:
            import gymnasium as gym

            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array'.")
            return None
        if self._renderer is None:
            self._renderer = SceneRenderer(*self._scene(), *self._size)
        return self._renderer.render(self.render_mode)

    def render_view(self, camera: dict | None = None, trail: np.ndarray | None = None) -> np.ndarray:
        """An ``rgb_array`` frame from another camera (``SceneRenderer.render``), with an optional trail."""
        if self._renderer is None:
            self._renderer = SceneRenderer(*self._scene(), *self._size)
        frame = self._renderer.render("rgb_array", camera=camera, trail=trail)
        assert frame is not None  # rgb_array: always a frame
        return frame

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
