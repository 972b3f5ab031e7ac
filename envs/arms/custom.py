"""Any fixed-base MJCF arm with joint actuators (position, velocity or torque) as an ``Arm`` backend.

``envs.make("reach+avoid", arm=<MJCF path, dm_control.mjcf.RootElement or a function building one>,
ee_site="<site>", workspace_origin=<(x, y, z), "auto" or None>)``; docs/arms.md. A path is read safely
(``envs.arms.mjcf_files``); an element with attached models is flattened through its XML (``flatten``).

Scene (``dm_control.mjcf``): a floor, a shadow-casting light and the task's target and obstacle
sites (``base.MARKERS``, visual only), with a copy of the user's arm attached at the world origin
under the prefix ``arm/``. The arm's own ``<option>`` (timestep, integrator) is kept.

Control, once per 0.04 s step (25 Hz, as Fetch): the goal is ``p_des = p_ee + MAX_DISPLACEMENT * a``
from the *current* end-effector position (Fetch's mocap rule). Damped least squares,

    dq = J^T (J J^T + lambda^2 I)^-1 (p_des - p(q)),    J = d p_ee / d q  [3, n],

iterated on a scratch ``MjData``, gives joint targets ``q_des`` [n] (clipped to the joint and
position-servo control ranges), which the joints' actuators follow for one control period
(``envs.arms.actuation``: position servos, velocity servos or torque motors, found per joint).
Orientation is free. MuJoCo's body gravity compensation (``gravcomp``) is on for the arm's
bodies, so no actuator kind sags under gravity.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import mujoco
import numpy as np
from dm_control import mjcf

from .actuation import JointDrive, actuator_kind, describe_actuator
from .base import LAYOUT, MARKER_START, MARKERS, MAX_DISPLACEMENT, MAX_ORIGIN, SHADOW_SIZE, SiteArm
from .mjcf_files import MAX_BODIES, read_mjcf

ARM_PREFIX = "arm"  # the attached arm's namespace: its site "ee" becomes "arm/ee"


def _box_distance_to_axis(origin: np.ndarray) -> float:
    """Horizontal distance from the vertical axis through the world origin (the arm's base) to the task box."""
    half = np.maximum(np.abs(LAYOUT.target_low[:2]), np.abs(LAYOUT.target_high[:2]))  # the box is symmetric in x, y
    gap = np.maximum(np.abs(origin[:2]) - half, 0.0)
    return float(np.linalg.norm(gap))


def _fmt(point: np.ndarray) -> str:
    """A point for messages: ``(0.45, 0.0, 0.3)``."""
    return "(" + ", ".join(f"{float(x):.3g}" for x in np.asarray(point).reshape(-1)) + ")"
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
    restarts: int = 12  # the start pose: DLS from this many seeded random joint configurations when the first try stalls
    auto_candidates: int = 400  # workspace_origin="auto": candidate origins (EE positions of seeded random poses)
    auto_tries: int = 120  # ... of which at most this many, nearest first, may fail the reachability check
    path_step: float = 0.025  # self-contact check: waypoints this far apart on the straight paths into the box (m)
    floor_clearance: float = 0.05  # "auto": the task box's lowest target stays this far above the floor (z = 0)
    base_clearance: float = 0.12  # "auto": the task box stays this far (horizontally) from the arm's base axis
    gravity_compensation: bool = True  # set gravcomp = 1 on the arm's bodies


CONTROLLER = ControllerConfig()


def _load_arm(arm: str | os.PathLike | mjcf.RootElement | Callable[[], mjcf.RootElement]
              ) -> tuple[mjcf.RootElement, bool]:
    """A private copy of the user's arm, which the scene may change, and whether it was flattened: a path is read
    safely (``envs.arms.mjcf_files``: inside its folder, bounded, no entities) and parsed; an element is deep-copied
    (never mutated), or, when it has attached models (e.g. a hand) that dm_control cannot copy, flattened through
    its XML and assets (``flatten``); a builder function is called for a fresh element."""
    if isinstance(arm, (str, os.PathLike)):
        path = Path(arm)
        if not path.is_file():
            raise FileNotFoundError(f"no MJCF file at {str(path)!r} for the custom arm")
        xml, assets, folder = read_mjcf(path)
        return _parsed(lambda: mjcf.from_xml_string(xml, model_dir=str(folder), assets=assets), str(path)), False
    if isinstance(arm, mjcf.RootElement):
        _check_size(arm)
        try:
            return copy.deepcopy(arm), False
        except NotImplementedError:  # dm_control: "Cannot copy from elements with attachments"
            return flatten(arm), True
    if callable(arm):
        built = arm()
        if not isinstance(built, mjcf.RootElement):
            raise TypeError(f"the arm builder {getattr(arm, '__name__', arm)!r} returned {type(built).__name__}, "
                            "not a dm_control.mjcf.RootElement")
        _check_size(built)
        return built, False
    raise TypeError(f"arm must be an MJCF path, a dm_control.mjcf.RootElement or a function returning one, "
                    f"got {type(arm).__name__}")


def flatten(arm: mjcf.RootElement) -> mjcf.RootElement:
    """A copy of an element with attached models, as one model: its XML (the attached models' names prefixed, e.g.
    ``jaco_hand/pinchsite``) and assets parsed again, the prefixes' '/' escaped as dm_control requires; the scene's
    XML un-escapes them (``_scene_xml``), so the compiled names are those of the element as given."""
    return _parsed(lambda: mjcf.from_xml_string(arm.to_xml_string(), escape_separators=True, assets=arm.get_assets()),
                   f"the element {arm.model!r}")


def _parsed(parse: Callable[[], mjcf.RootElement], where: str) -> mjcf.RootElement:
    """``parse()``, dm_control's errors (unknown elements or attributes, bad references, ...) as one ``ValueError``."""
    try:
        return parse()
    except ValueError:
        raise
    except (AttributeError, KeyError, TypeError, LookupError, SyntaxError, RecursionError) as err:
        raise ValueError(f"{where}: dm_control cannot parse it as MJCF ({type(err).__name__}: {err})") from None


def _check_size(arm: mjcf.RootElement) -> None:
    """Refuse an element with more than ``MAX_BODIES`` bodies (as ``read_mjcf`` refuses such a file)."""
    bodies = len(arm.find_all("body"))
    if bodies > MAX_BODIES:
        raise ValueError(f"the arm {arm.model!r} has {bodies} bodies; at most {MAX_BODIES} (an arm has tens)")


def _scene_xml(scene: mjcf.RootElement, flattened: bool) -> str:
    """The scene's XML for MuJoCo; a flattened arm's escaped separators ('\\') back to '/' (``flatten``)."""
    xml = scene.to_xml_string()
    return xml.replace("\\", "/") if flattened else xml


def _compile(xml: str, assets: dict) -> mujoco.MjModel:
    """MuJoCo's model of the scene; its errors (``ValueError``, ``FatalError``, and the ``RuntimeError`` its bindings
    raise for an exception they cannot name) as one ``ValueError``."""
    try:
        return mujoco.MjModel.from_xml_string(xml, assets=assets)
    except (ValueError, RuntimeError, mujoco.FatalError) as err:
        raise ValueError(f"MuJoCo cannot compile the arm: {str(err).strip().splitlines()[0] if str(err) else err}") from None


def _find_site(arm: mjcf.RootElement, ee_site: str, flattened: bool = False) -> mjcf.Element:
    """The arm's site called ``ee_site``, plain ("ee") or prefixed ("arm/ee", "<model>/ee"); in a flattened element
    (``flatten``) an attached model's site as named in the element given (``jaco_hand/pinchsite``)."""
    names = [ee_site]
    for prefix in (f"{ARM_PREFIX}/", f"{arm.model}/"):
        if ee_site.startswith(prefix):
            names.append(ee_site[len(prefix):])
    if flattened:
        names = [escaped for name in names for escaped in (name.replace("/", "\\"), name)]
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
            try:
                body.gravcomp = 1.0
            except AttributeError:  # an attachment frame; the attached model's own bodies are listed too
                pass
    arm.model = ARM_PREFIX
    root.attach(arm)
    return root


class CustomArm(SiteArm):
    """A user's MJCF arm, its end effector driven in Cartesian space by DLS IK on its joint actuators.

    ``arm``: an MJCF path (read by ``envs.arms.mjcf_files.read_mjcf``: from its own folder, bounded), an element
    (copied; one with attached models is flattened, ``flatten``) or a function building one.

    ``workspace_origin``: world point that becomes the workspace-frame origin (the end effector at
    reset); default: the end effector at the home pose (keyframe "home", else the first keyframe,
    else ``qpos0``, clipped to the joint limits); ``"auto"``: of seeded candidate points, the one
    nearest the home pose's end effector whose whole task box is reachable, above the floor,
    clear of the base, and in which the arm does not touch itself (``_box_contacts``);
    ``workspace_choice`` says which rule chose the origin, ``workspace_rejected`` which boxes were
    refused for self-contact and why. The start pose for a
    given origin comes from IK that restarts from seeded random poses where damped least squares
    stalls (stretched or singular poses). Construction checks that local IK from the start pose, as
    the controller moves, reaches the origin and the corners of the task's target box around it
    (``LAYOUT.target_low`` .. ``target_high``) within ``reach_tolerance``.
    """

    def __init__(
        self,
        arm: str | os.PathLike | mjcf.RootElement | Callable[[], mjcf.RootElement],
        ee_site: str,
        width: int = 480,
        height: int = 480,
        workspace_origin: Sequence[float] | str | None = None,
        controller: ControllerConfig = CONTROLLER,
    ):
        self.controller = controller
        arm_model, flattened = _load_arm(arm)
        site = _find_site(arm_model, ee_site, flattened)
        arm_name = arm_model.model
        scene = _build_scene(arm_model, controller.gravity_compensation)
        self.model = _compile(_scene_xml(scene, flattened), scene.get_assets())
        self.model.vis.global_.offwidth = max(int(self.model.vis.global_.offwidth), width)
        self.model.vis.global_.offheight = max(int(self.model.vis.global_.offheight), height)
        self.data = mujoco.MjData(self.model)
        self._scratch = mujoco.MjData(self.model)  # IK workspace
        self._jacp = np.zeros((3, self.model.nv))  # site position Jacobian, all dofs
        self.ee_site = site.full_identifier.replace("\\", "/") if flattened else site.full_identifier
        self._bind_sites(self.ee_site)

        n_substeps = round(controller.control_period / self.model.opt.timestep)
        if n_substeps < 1 or abs(n_substeps * self.model.opt.timestep - controller.control_period) > 1e-9:
            raise ValueError(f"the arm's timestep {self.model.opt.timestep} s does not divide the "
                             f"{controller.control_period} s control period; set <option timestep=...> "
                             "to e.g. 0.002 or 0.001")
        self._n_substeps = n_substeps
        self._setup_servos(arm_name)

        home = self._home_qpos()
        home[self._qadr] = np.clip(home[self._qadr], self._q_low, self._q_high)  # a pose the arm can take
        self._scratch.qpos[:] = home
        self.home_ee = self._site_position(home[self._qadr])
        self._start_qpos = home.copy()
        self.workspace_origin, q_start, self.workspace_choice = self._choose_workspace(workspace_origin, home[self._qadr])
        self._start_qpos[self._qadr] = q_start
        self._start_ctrl = self._servo_ctrl(self._start_qpos, self._home_ctrl())
        self._check_reachable()
        self.self_contacts = self._check_self_contacts()
        self.camera = self._default_camera()
        self.reset()

    # ---- set-up -------------------------------------------------------------------------------
    def _setup_servos(self, arm_name: str) -> None:
        """Find the joints that move the EE site and their actuators (``envs.arms.actuation``); raise if any lacks one."""
        m = self.model
        kinds = {a: actuator_kind(m, a) for a in range(m.nu)}
        servo_of_joint = {int(m.actuator_trnid[a, 0]): a for a in range(m.nu) if kinds[a] is not None}
        chain: list[int] = []
        body = int(m.site_bodyid[self._ee_site])
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
            on_joints = {int(m.actuator_trnid[a, 0]): a for a in range(m.nu)
                         if int(m.actuator_trntype[a]) == int(mujoco.mjtTrn.mjTRN_JOINT)}
            unsupported = [describe_actuator(m, on_joints[j]) for j in chain if j not in servo_of_joint and j in on_joints]
            actuators = [m.actuator(a).name for a in range(m.nu)]
            raise ValueError(
                f"arm {arm_name!r}: joints {missing} move the end effector but have no supported joint actuator "
                "(<position kp=...>, <velocity kv=...> or <motor>, one per joint)"
                + (f"; unsupported: {unsupported}" if unsupported else "") + f"; actuators found: {actuators or 'none'}")
        self._joints = np.array(chain)
        self._qadr = m.jnt_qposadr[self._joints]  # [n] joint angles in qpos
        self._dofadr = m.jnt_dofadr[self._joints]  # [n] columns of the Jacobian
        self.drive = JointDrive.build(m, self._joints, servo_of_joint)
        low = np.where(m.jnt_limited[self._joints], m.jnt_range[self._joints, 0], -np.inf)
        high = np.where(m.jnt_limited[self._joints], m.jnt_range[self._joints, 1], np.inf)
        servo_low, servo_high = self.drive.position_bounds()
        self._q_low, self._q_high = np.maximum(low, servo_low), np.minimum(high, servo_high)  # [n]
        # other actuated joints (e.g. fingers) hold where they start: position servos at their joint, the rest at 0
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
        """``ctrl`` that holds every actuated joint at ``qpos`` (position servos at their joint, the others at rest)."""
        ctrl = self.drive.hold(ctrl, qpos)
        for actuator, joint in self._other_servos:
            held = actuator_kind(self.model, actuator) == "position"
            ctrl[actuator] = self.model.actuator_gear[actuator, 0] * qpos[self.model.jnt_qposadr[joint]] if held else 0.0
        return ctrl

    # ---- the workspace ------------------------------------------------------------------------
    def _choose_workspace(self, requested: Sequence[float] | str | None, q_home: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray, str]:
        """(origin [3], start joint angles [n], how it was chosen) for ``workspace_origin=requested``."""
        self.workspace_rejected: list[str] = []  # "auto": the candidate boxes refused because the arm touches itself
        if requested is None:
            return self.home_ee.copy(), q_home, "home"
        if isinstance(requested, str):
            if requested != "auto":
                raise ValueError(f"workspace_origin must be 'auto', None or (x, y, z) in metres, got {requested!r}")
            found = self._search_origin(q_home, near=self.home_ee)
            if found is None:
                raise ValueError(f"workspace_origin='auto': none of the {self.controller.auto_tries} candidate origins "
                                 f"nearest the home pose's end effector {_fmt(self.home_ee)} has its whole task box "
                                 f"({LAYOUT.target_low}..{LAYOUT.target_high} around it) within reach; the arm may be "
                                 "too small for the task, or its joint limits too tight")
            self.workspace_rejected = found[2]
            return found[0], found[1], "auto"
        origin = np.asarray(requested, dtype=np.float64)
        if origin.size != 3 or not np.all(np.isfinite(origin)) or np.abs(origin).max() > MAX_ORIGIN:
            raise ValueError(f"workspace_origin must be three finite numbers (x, y, z, metres, each within "
                             f"{MAX_ORIGIN:g} m of the base), got {requested!r}")
        origin = origin.reshape(3).copy()
        q, residual = self._solve(q_home, origin)
        if not residual <= self.controller.reach_tolerance:  # also NaN, which no comparison passes
            raise ValueError(f"the arm's end effector cannot reach workspace_origin={_fmt(origin)} (IK stops "
                             f"{residual * 100:.1f} cm away; at the home pose it is at {_fmt(self.home_ee)}); "
                             + self._suggestion(q_home, origin))
        return origin, q, "given"

    def _box_points(self) -> list[np.ndarray]:
        """The origin and the 8 corners of the target box, workspace frame."""
        low, high = np.array(LAYOUT.target_low), np.array(LAYOUT.target_high)
        return [np.zeros(3)] + [np.array(c) for c in product(*zip(low, high, strict=False))]

    def _box_misses(self, q_start: np.ndarray, origin: np.ndarray) -> list[str]:
        """The task-box points around ``origin`` that IK from ``q_start`` cannot reach, described. No restarts: the
        controller moves by local DLS steps from the start pose, so that is what must reach the box."""
        misses = []
        for point in self._box_points():
            _, residual = self._ik(q_start, origin + point, self.controller.solve_iterations)
            if not residual <= self.controller.reach_tolerance:  # NaN is a miss too
                misses.append(f"{_fmt(point)} ({residual * 100:.1f} cm short)")
        return misses

    def _box_reachable(self, q_start: np.ndarray, origin: np.ndarray) -> bool:
        """``not _box_misses(q_start, origin)``, stopping at the first miss (the points farthest from the base
        first, as they fail most often): the quick test of a candidate."""
        points = sorted(self._box_points(), key=lambda p: -float(np.linalg.norm(origin + p)))
        for point in points:
            _, residual = self._ik(q_start, origin + point, self.controller.solve_iterations)
            if not residual <= self.controller.reach_tolerance:
                return False
        return True

    def _path_points(self) -> list[np.ndarray]:
        """Where the self-contact check sends the end effector, workspace frame: the 26 points of the target box's
        3 x 3 x 3 grid other than its centre (the 8 corners, 12 edge midpoints and 6 face centres)."""
        low, high = np.array(LAYOUT.target_low), np.array(LAYOUT.target_high)
        grid = [np.array(c) for c in product(*zip(low, (low + high) / 2, high, strict=False))]
        return [g for g in grid if not np.allclose(g, (low + high) / 2)]

    def _box_contacts(self, q_start: np.ndarray, origin: np.ndarray, first: bool = True) -> list[str]:
        """Self-contacts of the arm at the start pose and along straight paths from the origin to each of
        ``_path_points``, moved as the controller moves (waypoints ``path_step`` apart, a few DLS steps each from the
        last pose), then at the IK pose of the point; each contact with where it happens, sorted. Empty:
        contact-free. ``first``: stop at the first path (or start pose) with a contact."""
        cfg = self.controller
        found = {c: "at the start pose" for c in self.contacts_at(q_start)}
        for point in self._path_points():
            if found and first:
                break
            q = q_start
            steps = max(1, int(np.ceil(np.linalg.norm(point) / cfg.path_step)))
            for k in range(1, steps + 1):
                q, _ = self._ik(q, origin + point * k / steps, cfg.step_iterations if k < steps else cfg.solve_iterations)
                found |= {c: f"on the way to {_fmt(point)}" for c in self.contacts_at(q) if c not in found}
        return [f"{c} {where}" for c, where in sorted(found.items())]

    def _search_origin(self, q_home: np.ndarray, near: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
        """The candidate origin nearest ``near`` whose task box is reachable and free of self-contact
        (``_box_contacts``), its joint angles, and the candidates refused for self-contact (described); None if no
        box is reachable. Should every reachable box make the arm touch itself, the nearest is returned with that
        said (construction then warns, as for a given origin).

        Candidates: the end effector at the home pose and at ``auto_candidates`` seeded random poses within the
        joint limits, keeping the box ``floor_clearance`` above the floor and ``base_clearance`` from the base
        axis; at most ``auto_tries`` of them may fail the reachability check (a refusal for self-contact does not
        count). Deterministic.
        """
        cfg = self.controller
        rng = np.random.default_rng(0)
        low, high = self._sampling_bounds()
        poses = [q_home] + [rng.uniform(low, high) for _ in range(cfg.auto_candidates)]
        lowest = LAYOUT.target_low[2] - LAYOUT.ee_radius
        candidates = [(self._site_position(q), q) for q in poses]
        candidates = [(p, q) for p, q in candidates if p[2] + lowest >= cfg.floor_clearance
                      and _box_distance_to_axis(p) >= cfg.base_clearance]
        candidates.sort(key=lambda c: float(np.linalg.norm(c[0] - near)))
        rejected: list[str] = []
        first: tuple[np.ndarray, np.ndarray] | None = None
        misses = 0
        for origin, q in candidates:
            if misses >= cfg.auto_tries:
                break
            if not self._box_reachable(q, origin):
                misses += 1
                continue
            contacts = self._box_contacts(q, origin)
            if not contacts:
                return origin, q, rejected
            rejected.append(f"{_fmt(origin)}: the arm touches itself, {contacts[0]}")
            first = first or (origin, q)
        if first is None:
            return None
        return first[0], first[1], rejected + [f"every reachable box makes the arm touch itself; kept {_fmt(first[0])}"]

    def _suggestion(self, q_home: np.ndarray, wanted: np.ndarray) -> str:
        """The nearest reachable origin to ``wanted``, as advice for an error message."""
        found = self._search_origin(q_home, near=wanted)
        if found is None:
            return _REACH_HINT
        return f"the nearest origin whose task box is reachable is workspace_origin={_fmt(found[0])} (or pass 'auto')"

    def _check_reachable(self) -> None:
        """IK from the start pose must reach the origin and the target box's 8 corners."""
        misses = self._box_misses(self._start_qpos[self._qadr], self.workspace_origin)
        if misses:
            raise ValueError(
                f"the arm cannot reach the task workspace around workspace_origin={_fmt(self.workspace_origin)}: "
                f"{len(misses)} of {len(self._box_points())} required points (workspace frame: the origin and the corners "
                f"of the target box {LAYOUT.target_low}..{LAYOUT.target_high}) are out of reach: {', '.join(misses)}; "
                + self._suggestion(self._start_qpos[self._qadr], self.workspace_origin))

    # ---- self-contact ------------------------------------------------------------------------------
    def contacts_at(self, q: np.ndarray) -> list[str]:
        """The arm's contacts with itself at joint angles ``q`` [n] (other joints at the start pose), as
        ``"geom A - geom B (blocks joint J, ...)"``: the joints named are those between the two bodies, which the
        contact resists."""
        m = self.model
        if getattr(self, "_contact_data", None) is None:
            self._contact_data = mujoco.MjData(m)
        data = self._contact_data
        data.qpos[:] = self._start_qpos
        data.qpos[self._qadr] = q
        mujoco.mj_kinematics(m, data)  # geometry only: collision needs positions, not dynamics
        mujoco.mj_collision(m, data)
        found = []
        for contact in data.contact[: data.ncon]:
            bodies = [int(m.geom_bodyid[g]) for g in (contact.geom1, contact.geom2)]
            if 0 in bodies or contact.dist > 0:  # the floor or the world; a near miss inside the margin
                continue
            names = [m.geom(g).name or f"geom {g}" for g in (contact.geom1, contact.geom2)]
            joints = self._joints_between(*bodies)
            found.append(f"{names[0]} - {names[1]} (blocks joint {', '.join(joints)})" if joints
                         else f"{names[0]} - {names[1]}")
        return sorted(set(found))

    def _joints_between(self, a: int, b: int) -> list[str]:
        """Names of the chain joints on the kinematic path between bodies ``a`` and ``b``."""
        def ancestors(body: int) -> list[int]:
            out = []
            while body != 0:
                out.append(body)
                body = int(self.model.body_parentid[body])
            return out

        path = set(ancestors(a)) ^ set(ancestors(b))  # bodies below the lowest common ancestor
        return [self.model.joint(j).name for j in self._joints if int(self.model.jnt_bodyid[j]) in path]

    def _check_self_contacts(self) -> list[str]:
        """Refuse an arm that touches itself at the start pose (it would be jammed); warn about self-contacts on the
        way into the task box (``_box_contacts``: straight paths to its corners, edge midpoints and face centres).
        Returns the latter, as ``"pair (blocks joint ...)"``. (``"auto"`` chooses a box without them where one is
        reachable: ``_search_origin``.)"""
        q_start = self._start_qpos[self._qadr]
        start = self.contacts_at(q_start)
        if start:
            raise ValueError(f"the arm touches itself at its start pose: {'; '.join(start)}. MuJoCo does not filter "
                             "contacts with a body welded to the world, nor between bodies two joints apart; exclude the "
                             "pair (<contact><exclude body1=... body2=.../></contact>) or give one geom contype=0 "
                             "conaffinity=0")
        moves = sorted({c.split(" on the way to ")[0] for c in self._box_contacts(q_start, self.workspace_origin, False)})
        if moves:
            warnings.warn(f"the arm touches itself when it reaches into the task box: {'; '.join(moves)}; "
                          "it may stall there", stacklevel=4)
        return moves

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
        return self._scratch.site_xpos[self._ee_site].copy()

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
            error = goal - s.site_xpos[self._ee_site]
            residual = float(np.linalg.norm(error))
            if residual < cfg.tolerance or iteration == iterations:
                break
            mujoco.mj_comPos(m, s)
            mujoco.mj_jacSite(m, s, self._jacp, None, self._ee_site)
            jac = self._jacp[:, self._dofadr]
            dq = jac.T @ np.linalg.solve(jac @ jac.T + damping, error)
            dq *= min(1.0, cfg.max_joint_step / max(float(np.abs(dq).max()), 1e-12))
            q = np.clip(q + dq, self._q_low, self._q_high)
        return q, residual

    def _sampling_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Joint bounds [n] for random poses: the limits, or +-pi (slides: +-1 m) where a joint is unlimited."""
        slide = self.model.jnt_type[self._joints] == int(mujoco.mjtJoint.mjJNT_SLIDE)
        span = np.where(slide, 1.0, np.pi)
        return np.where(np.isfinite(self._q_low), self._q_low, -span), np.where(np.isfinite(self._q_high), self._q_high, span)

    def _solve(self, q: np.ndarray, goal: np.ndarray) -> tuple[np.ndarray, float]:
        """IK for a far goal: DLS from ``q``, and where it stalls (a stretched or singular pose, a joint limit) from
        up to ``restarts`` seeded random poses; the closest result. Deterministic for a goal."""
        cfg = self.controller
        best = self._ik(q, goal, cfg.solve_iterations)
        if best[1] <= cfg.reach_tolerance:
            return best
        rng = np.random.default_rng(0)
        low, high = self._sampling_bounds()
        for _ in range(cfg.restarts):
            found = self._ik(rng.uniform(low, high), goal, cfg.solve_iterations)
            if found[1] < best[1]:
                best = found
            if best[1] <= cfg.reach_tolerance:
                break
        return best

    # ---- the Arm protocol -------------------------------------------------------------------
    def reset(self) -> None:
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = self._start_qpos
        self.data.ctrl[:] = self._start_ctrl
        mujoco.mj_forward(self.model, self.data)

    def move_ee(self, action: np.ndarray) -> None:
        """Joint targets for EE goal ``p_ee + MAX_DISPLACEMENT * action`` [3], followed for one control period."""
        goal = self.ee_position() + MAX_DISPLACEMENT * np.asarray(action, dtype=np.float64)
        q, _ = self._ik(self.data.qpos[self._qadr], goal, self.controller.step_iterations)
        self.drive.run(self.model, self.data, q, self._n_substeps)
        mujoco.mj_forward(self.model, self.data)  # positions and velocities of the final state
