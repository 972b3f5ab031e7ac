"""Any fixed-base MJCF arm with joint position actuators as an ``Arm`` backend.

``envs.make("reach+avoid", arm=<MJCF path or dm_control.mjcf.RootElement>, ee_site="<site>")``

Scene (``dm_control.mjcf``): a floor, a shadow-casting light and the task's target and obstacle
sites (``arm.MARKERS``, visual only), with a copy of the user's arm attached at the world origin
under the prefix ``arm/``. The arm's own ``<option>`` (timestep, integrator) is kept.

Control, once per 0.04 s step (25 Hz, as Fetch): the goal is ``p_des = p_ee + MAX_DISPLACEMENT * a``
from the *current* end-effector position (Fetch's mocap rule). Damped least squares,

    dq = J^T (J J^T + lambda^2 I)^-1 (p_des - p(q)),    J = d p_ee / d q  [3, n],

iterated on a scratch ``MjData``, gives joint targets ``q_des`` [n] (clipped to the joint and
control ranges) for the position actuators (``ctrl = gear * q_des``); the physics then runs one
control period. Orientation is free. MuJoCo's body gravity compensation (``gravcomp``) is on for
the arm's bodies, so the position servos hold a pose without sagging.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import mujoco
import numpy as np
from dm_control import mjcf

from .arm import LAYOUT, MARKER_START, MARKERS, MAX_DISPLACEMENT, OBSTACLE_MARKER, SHADOW_SIZE, TARGET_MARKER

ARM_PREFIX = "arm"  # the attached arm's namespace: its site "ee" becomes "arm/ee"
_REACH_HINT = "pass a different workspace_origin=(x, y, z) (world frame, metres) or a larger arm"


@dataclass(frozen=True)
class ControllerConfig:
    """Constants of the Cartesian controller (metres, radians, seconds)."""

    control_period: float = 0.04  # s of physics per env step: 25 Hz, as Fetch
    damping: float = 0.02  # lambda of the DLS step: larger is steadier near singularities, less exact
    step_iterations: int = 4  # DLS iterations per control step (the goal is at most ~9 cm away)
    tolerance: float = 1e-4  # stop iterating once the end effector is this close to the goal
    max_joint_step: float = 0.3  # cap on max |dq| of one DLS iteration (rad or m)
    solve_iterations: int = 300  # DLS iterations for far goals: start pose, reachability check
    reach_tolerance: float = 0.01  # a point is reachable when IK gets this close to it
    gravity_compensation: bool = True  # set gravcomp = 1 on the arm's bodies


CONTROLLER = ControllerConfig()


def _load_arm(arm: str | os.PathLike | mjcf.RootElement) -> mjcf.RootElement:
    """A private copy of the user's arm: a path is parsed, an element is deep-copied (never mutated)."""
    if isinstance(arm, (str, os.PathLike)):
        path = Path(arm)
        if not path.is_file():
            raise FileNotFoundError(f"no MJCF file at {str(path)!r} for the custom arm")
        return mjcf.from_path(str(path))
    if isinstance(arm, mjcf.RootElement):
        return copy.deepcopy(arm)
    raise TypeError(f"arm must be an MJCF path or a dm_control.mjcf.RootElement, got {type(arm).__name__}")


def _find_site(arm: mjcf.RootElement, ee_site: str) -> mjcf.Element:
    """The arm's site called ``ee_site``, plain ("ee") or prefixed ("arm/ee", "<model>/ee")."""
    names = [ee_site]
    for prefix in (f"{ARM_PREFIX}/", f"{arm.model}/"):
        if ee_site.startswith(prefix):
            names.append(ee_site[len(prefix):])
    for name in names:
        try:
            site = arm.find("site", name)
        except (KeyError, ValueError):
            site = None
        if site is not None:
            return site
    available = [s.full_identifier for s in arm.find_all("site") if s.name is not None]
    raise ValueError(f"the arm {arm.model!r} has no site {ee_site!r}; available sites: {available or 'none'} "
                     "(add a <site> at the end effector)")


def _build_scene(arm: mjcf.RootElement, gravity_compensation: bool) -> mjcf.RootElement:
    """Floor, light, markers and the arm (renamed ``ARM_PREFIX``, attached at the world origin)."""
    root = mjcf.RootElement(model="custom_arm_scene")
    root.option.timestep = 0.002  # defaults: an <option> of the arm overrides them
    root.option.integrator = "implicitfast"
    root.visual.quality.shadowsize = SHADOW_SIZE
    root.visual.headlight.ambient = (0.3, 0.3, 0.3)
    root.visual.headlight.diffuse = (0.4, 0.4, 0.4)
    root.visual.headlight.specular = (0.1, 0.1, 0.1)
    root.asset.add("texture", name="grid", type="2d", builtin="checker", rgb1=(0.62, 0.62, 0.6),
                   rgb2=(0.54, 0.54, 0.52), width=256, height=256)
    root.asset.add("material", name="floor", texture="grid", texrepeat=(8, 8), reflectance=0.0)
    root.asset.add("texture", name="sky", type="skybox", builtin="gradient", rgb1=(0.55, 0.65, 0.8),
                   rgb2=(0.15, 0.15, 0.2), width=64, height=64)
    root.worldbody.add("light", name="key", pos=(0.4, -0.6, 2.0), dir=(-0.1, 0.3, -1.0), directional=True,
                       castshadow=True, diffuse=(0.55, 0.55, 0.55))
    root.worldbody.add("geom", name="floor", type="plane", size=(2.0, 2.0, 0.05), material="floor")
    for marker in MARKERS:
        root.worldbody.add("site", name=marker.name, type="sphere", pos=MARKER_START, size=(marker.radius,),
                           rgba=marker.rgba)
    if gravity_compensation:
        for body in arm.find_all("body"):
            body.gravcomp = 1.0
    arm.model = ARM_PREFIX
    root.attach(arm)
    return root


def _is_position_servo(model: mujoco.MjModel, actuator: int) -> bool:
    """``force = kp * (ctrl - length)`` on a joint: MJCF ``<position>`` (any kv, timeconst)."""
    kp = model.actuator_gainprm[actuator, 0]
    return (int(model.actuator_trntype[actuator]) == int(mujoco.mjtTrn.mjTRN_JOINT)
            and int(model.actuator_gaintype[actuator]) == int(mujoco.mjtGain.mjGAIN_FIXED)
            and int(model.actuator_biastype[actuator]) == int(mujoco.mjtBias.mjBIAS_AFFINE)
            and kp > 0 and model.actuator_biasprm[actuator, 0] == 0
            and np.isclose(model.actuator_biasprm[actuator, 1], -kp))


class CustomArm:
    """A user's MJCF arm, its end effector driven in Cartesian space by DLS IK on position servos.

    ``workspace_origin``: world point that becomes the workspace-frame origin (the end effector at
    reset); default: the end effector at the home pose (keyframe "home", else the first keyframe,
    else ``qpos0``). Construction checks that IK reaches the origin and the corners of the task's
    target box around it (``LAYOUT.target_low`` .. ``target_high``) within ``reach_tolerance``.
    """

    def __init__(
        self,
        arm: str | os.PathLike | mjcf.RootElement,
        ee_site: str,
        width: int = 480,
        height: int = 480,
        workspace_origin: Sequence[float] | None = None,
        controller: ControllerConfig = CONTROLLER,
    ):
        self.controller = controller
        arm_model = _load_arm(arm)
        site = _find_site(arm_model, ee_site)
        arm_name = arm_model.model
        scene = _build_scene(arm_model, controller.gravity_compensation)
        self.model = mujoco.MjModel.from_xml_string(scene.to_xml_string(), assets=scene.get_assets())
        self.model.vis.global_.offwidth = max(int(self.model.vis.global_.offwidth), width)
        self.model.vis.global_.offheight = max(int(self.model.vis.global_.offheight), height)
        self.data = mujoco.MjData(self.model)
        self._scratch = mujoco.MjData(self.model)  # IK workspace
        self._jacp = np.zeros((3, self.model.nv))  # site position Jacobian, all dofs
        self._velocity = np.zeros(6)  # mj_objectVelocity output: (angular, linear)
        self.ee_site = site.full_identifier
        self._site = self.model.site(self.ee_site).id
        self._target = self.model.site(TARGET_MARKER.name).id
        self._obstacle = self.model.site(OBSTACLE_MARKER.name).id

        n_substeps = round(controller.control_period / self.model.opt.timestep)
        if n_substeps < 1 or abs(n_substeps * self.model.opt.timestep - controller.control_period) > 1e-9:
            raise ValueError(f"the arm's timestep {self.model.opt.timestep} s does not divide the "
                             f"{controller.control_period} s control period; set <option timestep=...> "
                             "to e.g. 0.002 or 0.001")
        self._n_substeps = n_substeps
        self._setup_servos(arm_name)

        home = self._home_qpos()
        self._scratch.qpos[:] = home
        home_ee = self._site_position(home[self._qadr])
        self._start_qpos = home.copy()
        if workspace_origin is None:
            self.workspace_origin = home_ee
        else:
            origin = np.asarray(workspace_origin, dtype=np.float64)
            if origin.size != 3 or not np.all(np.isfinite(origin)):
                raise ValueError(f"workspace_origin must be three finite numbers (x, y, z, metres), "
                                 f"got {workspace_origin!r}")
            self.workspace_origin = origin.reshape(3).copy()
            q, residual = self._ik(home[self._qadr], self.workspace_origin, controller.solve_iterations)
            if residual > controller.reach_tolerance:
                raise ValueError(f"the arm's end effector cannot reach workspace_origin="
                                 f"{tuple(np.round(self.workspace_origin, 3))} (IK stops {residual * 100:.1f} cm "
                                 f"away; at the home pose it is at {tuple(np.round(home_ee, 3))}); "
                                 + _REACH_HINT)
            self._start_qpos[self._qadr] = q
        self._start_ctrl = self._servo_ctrl(self._start_qpos, self._home_ctrl())
        self._check_reachable()
        self.camera = self._default_camera()
        self.reset()

    # ---- set-up -------------------------------------------------------------------------------
    def _setup_servos(self, arm_name: str) -> None:
        """Find the joints that move the EE site and their position actuators; raise if any lacks one."""
        m = self.model
        servo_of_joint = {int(m.actuator_trnid[a, 0]): a for a in range(m.nu) if _is_position_servo(m, a)}
        chain, body = [], int(m.site_bodyid[self._site])
        while body != 0:
            chain.extend(int(j) for j in np.flatnonzero(m.jnt_bodyid == body))
            body = int(m.body_parentid[body])
        chain.sort()
        if not chain:
            raise ValueError(f"no joint moves site {self.ee_site!r} of arm {arm_name!r}: it is welded to the world")
        bad = [m.joint(j).name for j in chain if int(m.jnt_type[j]) not in
               (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))]
        if bad:
            raise ValueError(f"arm {arm_name!r} must be fixed-base with hinge/slide joints; {bad} are free/ball joints")
        missing = [m.joint(j).name for j in chain if j not in servo_of_joint]
        if missing:
            actuators = [m.actuator(a).name for a in range(m.nu)]
            raise ValueError(f"arm {arm_name!r}: joints {missing} move the end effector but have no joint "
                             f"position actuator (<position joint=... kp=...>); actuators found: {actuators or 'none'}")
        self._joints = np.array(chain)
        self._qadr = m.jnt_qposadr[self._joints]  # [n] joint angles in qpos
        self._dofadr = m.jnt_dofadr[self._joints]  # [n] columns of the Jacobian
        self._servos = np.array([servo_of_joint[j] for j in chain])  # [n] actuator ids
        self._gear = m.actuator_gear[self._servos, 0]  # [n] ctrl = gear * q
        low = np.where(m.jnt_limited[self._joints], m.jnt_range[self._joints, 0], -np.inf)
        high = np.where(m.jnt_limited[self._joints], m.jnt_range[self._joints, 1], np.inf)
        ctrl_limited = m.actuator_ctrllimited[self._servos].astype(bool)
        bounds = np.sort(m.actuator_ctrlrange[self._servos] / self._gear[:, None], axis=1)
        self._q_low = np.where(ctrl_limited, np.maximum(low, bounds[:, 0]), low)  # [n]
        self._q_high = np.where(ctrl_limited, np.minimum(high, bounds[:, 1]), high)  # [n]
        # other position servos (e.g. fingers) hold their joint where it starts
        self._other_servos = [(a, j) for j, a in servo_of_joint.items() if j not in chain]

    def _home_qpos(self) -> np.ndarray:
        """qpos [nq] of keyframe ``arm/home``, else the first keyframe, else ``qpos0``."""
        key = self._home_key()
        return (self.model.qpos0 if key is None else self.model.key_qpos[key]).copy()

    def _home_ctrl(self) -> np.ndarray:
        key = self._home_key()
        return np.zeros(self.model.nu) if key is None else self.model.key_ctrl[key].copy()

    def _home_key(self) -> int | None:
        names = [self.model.key(k).name for k in range(self.model.nkey)]
        if f"{ARM_PREFIX}/home" in names:
            return names.index(f"{ARM_PREFIX}/home")
        return 0 if names else None

    def _servo_ctrl(self, qpos: np.ndarray, ctrl: np.ndarray) -> np.ndarray:
        """``ctrl`` with every position servo set to hold its joint at ``qpos``."""
        ctrl = ctrl.copy()
        ctrl[self._servos] = self._gear * qpos[self._qadr]
        for actuator, joint in self._other_servos:
            ctrl[actuator] = self.model.actuator_gear[actuator, 0] * qpos[self.model.jnt_qposadr[joint]]
        return ctrl

    def _check_reachable(self) -> None:
        """IK from the start pose must reach the origin and the target box's 8 corners."""
        low, high = np.array(LAYOUT.target_low), np.array(LAYOUT.target_high)
        points = [np.zeros(3)] + [np.array(c) for c in product(*zip(low, high))]
        q_start = self._start_qpos[self._qadr]
        misses = []
        for point in points:
            _, residual = self._ik(q_start, self.workspace_origin + point, self.controller.solve_iterations)
            if residual > self.controller.reach_tolerance:
                misses.append(f"{tuple(np.round(point, 3))} ({residual * 100:.1f} cm short)")
        if misses:
            raise ValueError(
                f"the arm cannot reach the task workspace around workspace_origin="
                f"{tuple(np.round(self.workspace_origin, 3))}: {len(misses)} of {len(points)} required points "
                f"(workspace frame: the origin and the corners of the target box {LAYOUT.target_low}.."
                f"{LAYOUT.target_high}) are out of reach: {', '.join(misses)}; " + _REACH_HINT)

    def _default_camera(self) -> dict:
        """From the arm's front left, framing its base (the world origin) and the workspace box."""
        lookat = 0.5 * self.workspace_origin + np.array([0.1, 0.0, 0.0])
        lookat[2] = self.workspace_origin[2] + 0.05
        span = float(np.linalg.norm(self.workspace_origin[:2]))
        return {"lookat": lookat, "distance": max(1.4, 3.0 * span), "azimuth": 115.0, "elevation": -28.0}

    # ---- inverse kinematics ---------------------------------------------------------------
    def _site_position(self, q: np.ndarray) -> np.ndarray:
        """EE position [3] at joint angles ``q`` [n] (scratch data; other joints as last set)."""
        self._scratch.qpos[self._qadr] = q
        mujoco.mj_kinematics(self.model, self._scratch)
        return self._scratch.site_xpos[self._site].copy()

    def _ik(self, q: np.ndarray, goal: np.ndarray, iterations: int) -> tuple[np.ndarray, float]:
        """Joint angles [n] from ``q`` [n] towards EE ``goal`` [3] by DLS steps, and the residual (m).

        Each iteration: ``dq = J^T (J J^T + lambda^2 I)^-1 (goal - p(q))``, ``J`` [3, n] from
        ``mj_jacSite``; max |dq| capped at ``max_joint_step``; ``q`` clipped to the joint limits.
        """
        cfg, m, s = self.controller, self.model, self._scratch
        damping = cfg.damping**2 * np.eye(3)
        q = np.clip(q, self._q_low, self._q_high)
        for iteration in range(iterations + 1):
            s.qpos[self._qadr] = q
            mujoco.mj_kinematics(m, s)
            error = goal - s.site_xpos[self._site]
            residual = float(np.linalg.norm(error))
            if residual < cfg.tolerance or iteration == iterations:
                break
            mujoco.mj_comPos(m, s)
            mujoco.mj_jacSite(m, s, self._jacp, None, self._site)
            jac = self._jacp[:, self._dofadr]
            dq = jac.T @ np.linalg.solve(jac @ jac.T + damping, error)
            dq *= min(1.0, cfg.max_joint_step / max(float(np.abs(dq).max()), 1e-12))
            q = np.clip(q + dq, self._q_low, self._q_high)
        return q, residual

    # ---- the Arm protocol -------------------------------------------------------------------
    def reset(self) -> None:
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = self._start_qpos
        self.data.ctrl[:] = self._start_ctrl
        mujoco.mj_forward(self.model, self.data)

    def move_ee(self, action: np.ndarray) -> None:
        """Servo targets for EE goal ``p_ee + MAX_DISPLACEMENT * action`` [3], then one control period."""
        goal = self.ee_position() + MAX_DISPLACEMENT * np.asarray(action, dtype=np.float64)
        q, _ = self._ik(self.data.qpos[self._qadr], goal, self.controller.step_iterations)
        self.data.ctrl[self._servos] = self._gear * q
        mujoco.mj_step(self.model, self.data, nstep=self._n_substeps)
        mujoco.mj_forward(self.model, self.data)  # positions and velocities of the final state

    def ee_position(self) -> np.ndarray:
        return self.data.site_xpos[self._site].copy()

    def ee_velocity(self) -> np.ndarray:
        mujoco.mj_objectVelocity(self.model, self.data, mujoco.mjtObj.mjOBJ_SITE, self._site, self._velocity, 0)
        return self._velocity[3:].copy()

    def place_markers(self, target: np.ndarray, obstacle: np.ndarray) -> None:
        self.model.site_pos[self._target] = target
        self.model.site_pos[self._obstacle] = obstacle
        mujoco.mj_kinematics(self.model, self.data)
