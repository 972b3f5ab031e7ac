"""Check an arm before training or composing on it:  python -m envs.check_arm ARM --ee-site SITE [--workspace-origin auto]

``ARM`` is an MJCF file or ``jaco`` (dm_control's Kinova Jaco with its hand). The command builds the env as
``envs.make`` does (so every check that refuses a bad arm runs here too) and reports:

* the actuation found for each joint that moves the end effector (position, velocity or torque);
* the workspace origin and how it was chosen (given, home or auto);
* reachability of the task box: IK from the start pose to its origin and 8 corners, with the residuals;
* self-contacts at the poses that reach the corners;
* the tracking error of random end-effector moves (how far each step lands from ``0.05 m * action``);
* a straight-line controller's success on ``reach`` (full speed at the target), a ceiling for any skill;

and saves a rendered frame of the first episode. Exit status 2 with one line when the arm is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

import envs
from envs.cli import BAD_INPUT, accept_negative_lists, positive_int, run_command, workspace_origin

from .arm import MAX_DISPLACEMENT, TARGET_REL, ArmTaskEnv
from .files import atomic_write_bytes

if TYPE_CHECKING:
    from .arms.custom import CustomArm

TRACKING_EPISODES, TRACKING_STEPS = 5, 20


def tracking_errors(arm, actions: np.ndarray) -> np.ndarray:
    """``|p_after - p_before - MAX_DISPLACEMENT a|`` (m) of every move: actions [episodes, steps, 3], each episode from
    ``arm.reset()`` -> [episodes * steps]."""
    errors = []
    for episode in actions:
        arm.reset()
        for action in episode:
            before = arm.ee_position()
            arm.move_ee(action)
            errors.append(float(np.linalg.norm(arm.ee_position() - before - MAX_DISPLACEMENT * action)))
    return np.array(errors)


def tracking_error(arm, episodes: int = TRACKING_EPISODES, steps: int = TRACKING_STEPS, seed: int = 0) -> dict:
    """Mean and 95th percentile of ``tracking_errors`` over seeded random actions."""
    errors = tracking_errors(arm, np.random.default_rng(seed).uniform(-1, 1, (episodes, steps, 3)))
    return {"mean_m": float(np.mean(errors)), "p95_m": float(np.percentile(errors, 95)), "moves": len(errors)}


def straight_line(env, episodes: int, seed: int = 10_000) -> dict:
    """``reach`` success of ``clip((target - ee) / MAX_DISPLACEMENT, -1, 1)`` over seeded episodes."""
    reached, lengths = 0, []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        for step in range(1, 51):
            obs, _, _, truncated, info = env.step(np.clip(obs[TARGET_REL] / MAX_DISPLACEMENT, -1, 1))
            if info["checks"]["at_target"]:
                lengths.append(step)
                break
        reached += bool(info["checks"]["at_target"])
    return {"success_rate": reached / episodes, "episodes": episodes,
            "mean_steps_to_target": float(np.mean(lengths)) if lengths else None}


def check(arm: str, ee_site: str | None, origin=None, episodes: int = 20, frame: Path | None = None) -> dict:
    """Build ``reach`` on the arm and measure; the report as a dict (``render_report`` prints it)."""
    kwargs = {"arm": arm, "ee_site": ee_site, "workspace_origin": origin}
    env = envs.make("reach", render_mode="rgb_array" if frame else None, **{k: v for k, v in kwargs.items() if v is not None})
    task_env = env.unwrapped
    assert isinstance(task_env, ArmTaskEnv)  # reach is an arm task
    backend = cast("CustomArm", task_env.arm)  # arm is an MJCF path or jaco: a custom arm
    m = backend.model
    joints = [{"joint": m.joint(j).name, "actuator": m.actuator(a).name, "kind": kind}
              for j, a, kind in zip(backend._joints, backend.drive.actuators, backend.drive.kinds, strict=False)]
    box = [{"point": [round(float(x), 3) for x in point],
            "residual_m": backend._ik(backend._start_qpos[backend._qadr], backend.workspace_origin + point,
                                      backend.controller.solve_iterations)[1]} for point in backend._box_points()]
    report = {"arm": str(arm), "ee_site": backend.ee_site, "joints": joints,
              "workspace_origin": [round(float(x), 4) for x in backend.workspace_origin],
              "workspace_choice": backend.workspace_choice, "workspace_rejected": backend.workspace_rejected,
              "reach_tolerance_m": backend.controller.reach_tolerance,
              "box": box, "self_contacts": backend.self_contacts, "tracking": tracking_error(backend),
              "straight_line_reach": straight_line(env, episodes)}
    if frame is not None:
        from PIL import Image

        env.reset(seed=10_000)
        frame.parent.mkdir(parents=True, exist_ok=True)
        image = env.render()
        assert isinstance(image, np.ndarray)  # render_mode="rgb_array"
        Image.fromarray(image).save(frame)
        report["frame"] = str(frame)
    env.close()
    return report


def render_report(report: dict) -> str:
    lines = [f"arm {report['arm']}, end effector {report['ee_site']}", "actuation:"]
    lines += [f"  {j['joint']:24s} {j['kind']:9s} ({j['actuator']})" for j in report["joints"]]
    origin = ", ".join(f"{x:.3f}" for x in report["workspace_origin"])
    lines.append(f"workspace origin ({origin}) m, chosen: {report['workspace_choice']}")
    rejected = report.get("workspace_rejected", [])
    if rejected:
        lines.append(f"  {len(rejected)} nearer candidate box{'es' if len(rejected) > 1 else ''} rejected: "
                     + "; ".join(rejected))
    worst = max(p["residual_m"] for p in report["box"])
    reached = sum(p["residual_m"] <= report["reach_tolerance_m"] for p in report["box"])
    lines.append(f"task box reachable from the start pose: {reached} of {len(report['box'])} points (worst IK residual "
                 f"{worst * 100:.2f} cm, tolerance {report['reach_tolerance_m'] * 100:.0f} cm)")
    lines.append("self-contacts reaching into the box: " + ("; ".join(report["self_contacts"]) or "none"))
    t = report["tracking"]
    lines.append(f"tracking error of random moves: mean {t['mean_m'] * 100:.2f} cm, 95th percentile {t['p95_m'] * 100:.2f} cm "
                 f"({t['moves']} moves; Fetch's mocap: about 2 cm)")
    s = report["straight_line_reach"]
    steps = f", {s['mean_steps_to_target']:.1f} steps to the target" if s["mean_steps_to_target"] else ""
    lines.append(f"straight-line controller on reach: success {s['success_rate']:.2f} over {s['episodes']} episodes{steps}")
    if "frame" in report:
        lines.append(f"frame: {report['frame']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m envs.check_arm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("arm", help="MJCF file of the arm, or jaco")
    parser.add_argument("--ee-site", help="end-effector site (jaco: jaco_hand/pinchsite)")
    accept_negative_lists(parser)
    parser.add_argument("--workspace-origin", type=workspace_origin, metavar="X,Y,Z|auto",
                        help="world point that becomes the workspace origin, or auto (default: the home pose's end effector)")
    parser.add_argument("--episodes", type=positive_int, default=20, help="straight-line episodes on reach (default 20)")
    parser.add_argument("--frame", type=Path, default=Path("check_arm.png"), help="rendered frame (default check_arm.png)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON")
    args = parser.parse_args(argv)
    if args.arm not in ("jaco",) and not Path(args.arm).is_file():
        print(f"error: no MJCF file at {args.arm!r} (or give jaco)", file=sys.stderr)
        return 2
    if args.arm != "jaco" and args.ee_site is None:
        print("error: --ee-site is needed: the name of the arm's end-effector site", file=sys.stderr)
        return 2

    def body() -> int:
        report = check(args.arm, args.ee_site, args.workspace_origin, args.episodes, args.frame)
        print(render_report(report))
        if args.json:
            atomic_write_bytes(args.json, json.dumps(report, indent=2).encode("utf-8"))
        return 0

    def refused(err: BaseException) -> int:  # a missing file or a builder returning the wrong type: bad input too
        print(f"error: {err}", file=sys.stderr)
        return BAD_INPUT

    return run_command(body, {FileNotFoundError: refused, TypeError: refused})


if __name__ == "__main__":
    sys.exit(main())
