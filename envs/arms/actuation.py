"""How a custom arm's joints follow the joint targets of the Cartesian controller (``envs.arms.custom``).

Every joint that moves the end effector is driven by one joint actuator of one of three kinds, told
apart by MuJoCo's actuator parameters (never by names):

=========  =========================================  ==============================================
kind       MuJoCo force                               what the controller writes, per control period
=========  =========================================  ==============================================
position   ``kp (ctrl - q)`` (``<position>``)         ``ctrl = gear q_des`` once
velocity   ``kv (ctrl - qdot)`` (``<velocity>``)      every substep: ``ctrl = gear (q_des - q) / t``,
                                                      ``t`` the time left (at least a quarter period)
motor      ``gear ctrl`` (``<motor>``, torque)        every substep, joint-space PD scaled by the
                                                      joint's inertia: ``tau = M_jj (w^2 (q_des - q)
                                                      - 2 w qdot)``, critically damped
=========  =========================================  ==============================================

Gravity is compensated by MuJoCo (``gravcomp`` on the arm's bodies), so no kind sags. Commands are
clipped to the actuator's control range. An arm whose joints are all position servos steps its
physics in one call per period, as before; the other kinds step substep by substep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import mujoco
import numpy as np

KINDS = ("position", "velocity", "motor")
MOTOR_BANDWIDTH = 4.0  # w = MOTOR_BANDWIDTH / control_period: a joint target settles within about one period
VELOCITY_MIN_HORIZON = 0.25  # of the control period: the velocity command never aims closer in time than this


def actuator_kind(model: mujoco.MjModel, actuator: int) -> str | None:
    """``"position"``, ``"velocity"`` or ``"motor"`` for a joint actuator of that kind, else None.

    A position servo may have activation dynamics (``timeconst``: it still settles on ``ctrl``); the velocity
    servo and the motor must act at once (no activation state), as the controller commands them every substep.
    """
    if int(model.actuator_trntype[actuator]) != int(mujoco.mjtTrn.mjTRN_JOINT):
        return None
    if int(model.actuator_gaintype[actuator]) != int(mujoco.mjtGain.mjGAIN_FIXED):
        return None
    gain = model.actuator_gainprm[actuator, 0]
    bias_type, bias = int(model.actuator_biastype[actuator]), model.actuator_biasprm[actuator]
    stateless = int(model.actuator_dyntype[actuator]) == int(mujoco.mjtDyn.mjDYN_NONE)
    if bias_type == int(mujoco.mjtBias.mjBIAS_NONE):
        return "motor" if gain != 0 and stateless else None
    if bias_type != int(mujoco.mjtBias.mjBIAS_AFFINE) or gain <= 0 or bias[0] != 0:
        return None
    if np.isclose(bias[1], -gain):
        return "position"  # force = kp ctrl - kp q (- kv qdot)
    if bias[1] == 0 and np.isclose(bias[2], -gain) and stateless:
        return "velocity"  # force = kv ctrl - kv qdot
    return None


def describe_actuator(model: mujoco.MjModel, actuator: int) -> str:
    """A short description of an actuator MuJoCo-wise, for error messages."""
    trn = mujoco.mjtTrn(int(model.actuator_trntype[actuator])).name
    gain = mujoco.mjtGain(int(model.actuator_gaintype[actuator])).name
    bias = mujoco.mjtBias(int(model.actuator_biastype[actuator])).name
    dyn = mujoco.mjtDyn(int(model.actuator_dyntype[actuator])).name
    return f"{model.actuator(actuator).name or actuator} ({trn}, {dyn}, {gain}, {bias})"


@dataclass
class JointDrive:
    """The actuators of the chain's joints and how to drive them to joint targets.

    ``kinds``, ``actuators``, ``gear``, ``qadr``, ``dofadr``: [n] per joint of the chain, in chain order.
    """

    kinds: tuple[str, ...]
    actuators: np.ndarray
    gear: np.ndarray
    qadr: np.ndarray
    dofadr: np.ndarray
    ctrl_low: np.ndarray  # [n] control bounds (-inf/inf where the actuator is not ctrllimited)
    ctrl_high: np.ndarray

    @classmethod
    def build(cls, model: mujoco.MjModel, joints: np.ndarray, actuator_of_joint: dict[int, int]) -> "JointDrive":
        actuators = np.array([actuator_of_joint[j] for j in joints])
        limited = model.actuator_ctrllimited[actuators].astype(bool)
        low = np.where(limited, model.actuator_ctrlrange[actuators, 0], -np.inf)
        high = np.where(limited, model.actuator_ctrlrange[actuators, 1], np.inf)
        kinds = tuple(cast(str, actuator_kind(model, a)) for a in actuators)  # servos only: each has a kind
        return cls(kinds=kinds, actuators=actuators,
                   gear=model.actuator_gear[actuators, 0].copy(), qadr=model.jnt_qposadr[joints].copy(),
                   dofadr=model.jnt_dofadr[joints].copy(), ctrl_low=low, ctrl_high=high)

    @property
    def all_position(self) -> bool:
        return all(k == "position" for k in self.kinds)

    def summary(self) -> dict[str, int]:
        """How many joints of each kind, e.g. ``{"velocity": 6}``."""
        return {k: self.kinds.count(k) for k in KINDS if k in self.kinds}

    def position_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Joint-angle bounds [n] that position servos' control ranges impose (``ctrl = gear q``); others unbounded."""
        low, high = np.full(len(self.kinds), -np.inf), np.full(len(self.kinds), np.inf)
        for i, kind in enumerate(self.kinds):
            if kind == "position":
                a, b = sorted((self.ctrl_low[i] / self.gear[i], self.ctrl_high[i] / self.gear[i]))
                low[i], high[i] = a, b
        return low, high

    def hold(self, ctrl: np.ndarray, qpos: np.ndarray) -> np.ndarray:
        """``ctrl`` [nu] that holds the chain at ``qpos``: position servos at their joint, the others at rest."""
        ctrl = ctrl.copy()
        for i, (kind, a) in enumerate(zip(self.kinds, self.actuators, strict=False)):
            ctrl[a] = self.gear[i] * qpos[self.qadr[i]] if kind == "position" else 0.0
        return ctrl

    def _command(self, model: mujoco.MjModel, data: mujoco.MjData, q_des: np.ndarray, time_left: float,
                 period: float) -> None:
        """Write the substep's controls of the velocity and motor joints."""
        q, qdot = data.qpos[self.qadr], data.qvel[self.dofadr]
        error = q_des - q
        ctrl = data.ctrl[self.actuators].copy()
        velocity = [i for i, k in enumerate(self.kinds) if k == "velocity"]
        ctrl[velocity] = self.gear[velocity] * error[velocity] / max(time_left, VELOCITY_MIN_HORIZON * period)
        motors = [i for i, k in enumerate(self.kinds) if k == "motor"]
        if motors:
            inertia = np.zeros((model.nv, model.nv))  # joint-space inertia M(q)
            mujoco.mj_fullM(model, data, inertia)
            dofs = self.dofadr[motors]
            omega = MOTOR_BANDWIDTH / period
            # computed torque on the motor joints: M (w^2 e - 2 w qdot), plus the joints' own damping
            torque = inertia[np.ix_(dofs, dofs)] @ (omega**2 * error[motors] - 2.0 * omega * qdot[motors])
            ctrl[motors] = (torque + model.dof_damping[dofs] * qdot[motors]) / self.gear[motors]
        data.ctrl[self.actuators] = np.clip(ctrl, self.ctrl_low, self.ctrl_high)

    def run(self, model: mujoco.MjModel, data: mujoco.MjData, q_des: np.ndarray, n_substeps: int) -> None:
        """Drive the chain towards ``q_des`` [n] for one control period of ``n_substeps`` physics steps."""
        for i, kind in enumerate(self.kinds):
            if kind == "position":
                data.ctrl[self.actuators[i]] = self.gear[i] * q_des[i]
        if self.all_position:
            mujoco.mj_step(model, data, nstep=n_substeps)
            return
        dt = model.opt.timestep
        period = n_substeps * dt
        for k in range(n_substeps):
            self._command(model, data, q_des, (n_substeps - k) * dt, period)
            mujoco.mj_step(model, data)
