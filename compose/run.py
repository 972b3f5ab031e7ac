"""Compose saved skills and compare against the jointly trained policy:

    python -m compose.run reach+avoid [--render]

Loads the skills named by ``SKILL+SKILL[+...]``, builds ``Q_w = sum_i w_i Q_i`` and samples
``pi_w ∝ exp(Q_w/alpha)`` with SVGD, with **no new environment samples**. It then runs the
composed policy, the jointly trained skill (the library skill named like the spec, e.g.
``reach+avoid``) and each constituent on the same seeded episodes of the combined task, checks
the bound ``Q_w - C <= Q_joint <= Q_w``, and writes report.json, report.md and plots.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

import envs
import skills
from envs._gl import headless
from envs.cli import add_arm_arguments, arm_kwargs
from envs.core import UnknownNameError
from envs.video import VideoWriter, draw_text, overlay_lines
from skills.cli import positive_int, weight_list
from skills.evaluation import run_episodes
from skills.library import SkillError, atomic_write_text
from skills.policy import SoftPolicy
from skills.trainer import EVAL_SEED

from .bound import BoundConfig, MCBoundConfig, check_bound, episode_starts, gap_on_states, mc_bound, mc_soft_q
from .build import Built, build
from .composition import Composition, IncompatibleSkillsError, check_compatible, load
from .plots import plot_comparison, plot_episode_bound, plot_q_slices, q_grid
from .policy import EVAL_PARTICLES, ComposedPolicy
from .sampling import (
    ParticleConfig,
    ParticlePolicy,
    SamplerConfig,
    constituent_init,
    resampled_actions,
)

MAX_BOUND_PAIRS = 5000


def write_json(path: Path, data: dict) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2))


def write_text(path: Path, text: str) -> Path:
    return atomic_write_text(path, text)


SAMPLERS = ("amortized", "particles", "resampling")


def composed_policy(composition: Composition, built: Built, kind: str, seed: int) -> ComposedPolicy:
    """The composed energy policy as a ``SoftPolicy``: the amortized sampler, per-decision SVGD, or
    importance resampling of ``exp(Q_w/alpha)`` (a slow reference with no sampler)."""
    particles = None
    if kind == "particles":
        particles = ParticlePolicy(composition.q, composition.act_dim, composition.alpha, ParticleConfig(), seed,
                                   init=constituent_init([p.agent.sampler for p in composition.parts])).particles
    elif kind == "resampling":
        generator = torch.Generator().manual_seed(seed)

        def particles(obs: torch.Tensor) -> torch.Tensor:
            return resampled_actions(composition.q, obs, EVAL_PARTICLES, composition.alpha, composition.act_dim,
                                     generator=generator)
    elif kind != "amortized":
        raise ValueError(f"unknown sampler {kind!r}; valid: {', '.join(SAMPLERS)}")
    return ComposedPolicy(composition, built.sampler, seed, particles)


def find_joint(composition: Composition, library: str | None, joint: str | None = None) -> tuple[skills.Skill | None, str]:
    """The jointly trained skill for the combined task (``joint``: a given one, e.g. ``"reach+avoid@v3"``), or
    why there is none."""
    name = composition.task.name
    if composition.task.name not in envs.TASKS:
        return None, (f"no jointly trained reference: the combined task {name!r} is not a registered task "
                      f"(registered combinations, such as reach+avoid with equal weights, have one)")
    try:
        joint = skills.load(joint or name, library)
    except (UnknownNameError, SkillError):
        return None, f"no jointly trained {name!r} skill in the library; train one with: python -m skills.train {name}"
    try:
        check_compatible([*composition.parts, joint])
    except IncompatibleSkillsError as err:
        return None, f"the jointly trained {name!r} skill cannot serve as reference: {err}"
    return joint, ""


def record_pairs(policy, store: list | None):
    """Wrap a policy so that every (obs, action) it produces is appended to ``store`` (if any)."""
    if store is None:
        return policy

    def wrapped(obs):
        action = policy(obs)
        store.append((np.asarray(obs, np.float32).copy(), np.asarray(action, np.float32).copy()))
        return action

    return wrapped


def episode_views(target: np.ndarray, lookat: np.ndarray) -> dict[str, dict]:
    """Two cameras that keep target, obstacle and end effector apart: a side view looking across the
    start-to-target line (so an obstacle on that line is not in front of the target), and the other side
    from above (a top view straight down is hidden by the arm itself)."""
    heading = float(np.degrees(np.arctan2(target[1], target[0])))
    centre = np.asarray(lookat, np.float64) + np.asarray(target, np.float64) / 2
    return {"side": {"lookat": centre, "distance": 0.9, "azimuth": heading + 90.0, "elevation": -15.0},
            "other side, from above": {"lookat": centre, "distance": 0.9, "azimuth": heading - 90.0,
                                       "elevation": -50.0}}


def render_episode(composition: Composition, policy, path: Path, seed: int, env_kwargs: dict) -> tuple[Path, int]:
    """An mp4 of one composed episode (preferring one where the obstacle blocks the straight path): a side
    and a top view side by side, the end effector's path drawn, distances in the overlay."""
    env = envs.make_task_env(composition.task, render_mode="rgb_array", **env_kwargs)
    chosen = seed
    for candidate in range(seed, seed + 20):
        _, info = env.reset(seed=candidate)
        if info.get("obstacle_blocks_path", True):
            chosen = candidate
            break
    video = VideoWriter(path, env.metadata.get("render_fps", 25))
    obs, info = env.reset(seed=chosen)
    arm = getattr(env.unwrapped, "arm", None)
    views = episode_views(info["target"], arm.workspace_origin) if arm is not None and "target" in info else {}
    trail = [arm.ee_position()] if arm is not None else []

    def frame(lines: list[str]) -> np.ndarray:
        if not views:
            return draw_text(env.render(), lines)
        images = [env.unwrapped.render_view(camera, np.array(trail)) for camera in views.values()]
        return draw_text(np.concatenate(images, axis=1), lines)

    actions, step = [], 0
    video.add(frame([f"{composition.name} (composed, 0 env samples)", "step 0",
                     "left: side view; right: other side, from above"]))
    while True:
        action = policy(obs)
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        step += 1
        if arm is not None:
            trail.append(arm.ee_position())
        video.add(frame(overlay_lines(info, step)))
        if terminated or truncated:
            break
    env.close()
    if not headless():  # a live window too, replaying the same seeded episode
        try:
            live = envs.make_task_env(composition.task, render_mode="human", **env_kwargs)
            live.reset(seed=chosen)
            for action in actions:
                live.step(action)
            live.close()
        except Exception as err:  # a window is an extra; the video is the product
            print(f"(no live window: {err})")
    return video.close(), chosen


def evaluate_row(name: str, policy: SoftPolicy, make_env, episodes: int, seed: int, deterministic: bool,
                 env_steps: int, wall: float, pairs: list | None = None) -> dict:
    """Seeded episodes of ``policy`` on the combined task; the soft return too when it samples.

    Skills sample from torch's global generator, so it is reseeded for every row: each row's draws
    are the same whatever ran before it (a cached build or not, other rows or not)."""
    torch.manual_seed(seed)
    act = record_pairs(lambda o: policy.act(o, deterministic), pairs)
    env = make_env()
    try:
        metrics = run_episodes(env, act, episodes, seed, soft=None if deterministic else policy)
    finally:
        env.close()
    if deterministic:
        metrics |= {"soft_return_mean": None, "soft_return_note": "deterministic actions have no soft return"}
    return {"policy": name, **metrics, "env_steps_used": int(env_steps), "build_wall_time_s": round(float(wall), 2)}


def evaluate_policies(*, composition: Composition, composed: ComposedPolicy, joint: skills.Skill | None,
                      build_time: float, make_env, episodes: int, seed: int, deterministic: bool) -> tuple[dict, list]:
    """Phase 2: composed, joint and each constituent on the same seeded episodes of the combined task.
    Returns the rows and the composed policy's (s, a) pairs."""
    pairs: list = []
    rows = {"composed": evaluate_row("composed", composed, make_env, episodes, seed, deterministic, 0, build_time, pairs)}
    if joint is not None:
        rows["joint"] = evaluate_row("joint", joint, make_env, episodes, seed, deterministic,
                                     joint.info.env_steps, joint.info.wall_time_s)
    for label, part in zip(composition.labels, composition.parts):
        rows[label] = evaluate_row(label, part, make_env, episodes, seed, deterministic,
                                   part.info.env_steps, part.info.wall_time_s)
    return rows, pairs


def learned_bound(*, composition: Composition, built: Built, joint: skills.Skill | None, joint_note: str,
                  pairs: list) -> dict:
    """Phase 3a: ``Q_w - C <= Q_joint <= Q_w`` point by point on the composed policy's pairs. This compares
    learned functions with each other; it is kept as a diagnostic, not as a test of the theorem."""
    obs = torch.as_tensor(np.stack([p[0] for p in pairs[:MAX_BOUND_PAIRS]]))
    act = torch.as_tensor(np.stack([p[1] for p in pairs[:MAX_BOUND_PAIRS]]))
    with torch.no_grad():
        q_w = composition.q(obs, act).numpy()
        c = built.correction(obs, act).numpy()
    out = {"label": "learned functions compared point by point (Q_joint stands in for Q*_w); a diagnostic, "
                    "not a test: see bound.mc"}
    if joint is None:
        return out | {"holds_fraction": None, "mean_C": float(np.mean(c)), "mean_gap": None,
                      "mean_Q_w": float(np.mean(q_w)), "note": joint_note}
    return out | check_bound(q_w, c, joint.q(obs.numpy(), act.numpy()))


def bound_episode_figure(*, composition: Composition, composed: ComposedPolicy, built: Built,
                         joint: skills.Skill | None, make_env, seed: int, mc_cfg: MCBoundConfig | None,
                         path: Path) -> dict | None:
    """Phase 4a: learned ``Q_w``, ``Q_w - C``, ``Q_joint`` along one composed episode, with Monte Carlo
    soft returns (95% CIs) of both policies at every 5th step. Returns the MC rows, if any."""
    episode: list = []
    env = make_env()
    run_episodes(env, record_pairs(lambda o: composed.act(o), episode), 1, seed)
    env.close()
    e_obs, e_act = (np.stack([p[i] for p in episode]) for i in (0, 1))
    with torch.no_grad():
        e_qw = composition.q(torch.as_tensor(e_obs), torch.as_tensor(e_act)).numpy()
        e_c = built.correction(torch.as_tensor(e_obs), torch.as_tensor(e_act)).numpy()
    e_qj = joint.q(e_obs, e_act) if joint is not None else None
    mc_rows = None
    if mc_cfg is not None:
        mc_cfg = replace(mc_cfg, rollouts=max(2, mc_cfg.rollouts // 2))
        starts = episode_starts(composed, make_env, seed, list(range(0, len(episode), 5)))
        mc_rows, *_ = mc_soft_q(composed, joint, built.correction, make_env, composition.task.reward_range, starts, mc_cfg)
    plot_episode_bound(e_qw, e_c, e_qj, path, f"{composition.name}: one composed episode (seed {seed})", mc_rows)
    return mc_rows


def q_slices_figure(*, composition: Composition, built: Built, joint: skills.Skill | None, pairs: list, seed: int,
                    path: Path) -> None:
    """Phase 4b: Q over two action dimensions at the visited state with the largest gap."""
    obs = np.stack([p[0] for p in pairs[:2000]])
    gaps = gap_on_states(composition.q, obs, 256, seed)
    state = obs[int(np.argmax(gaps))]
    panels = {f"Q_{label}": q_grid(p.agent.q, state, composition.act_dim)
              for label, p in zip(composition.labels, composition.parts)}
    panels["Q_w (composed)"] = q_grid(composition.q, state, composition.act_dim)
    if joint is not None:
        panels["Q_joint"] = q_grid(joint.agent.q, state, composition.act_dim)
    with torch.no_grad():
        samples = torch.tanh(built.sampler(torch.as_tensor(state)[None], torch.randn(1, 200, composition.act_dim)))[0]
    plot_q_slices(panels, 1.0, path,
                  f"{composition.name}: Q over (a_0, a_1) at the visited state with the largest gap delta "
                  f"(other action dims 0); dots: composed sampler", samples.numpy())


def run(spec: str | Sequence[str], *, weights: list[float] | None = None, sampler: str = "amortized", episodes: int = 100,
        seed: int = EVAL_SEED, render: bool = False, out: str | Path | None = None, library: str | None = None,
        deterministic: bool = False, env_kwargs: dict[str, Any] | None = None, progress: bool = True,
        sampler_cfg: SamplerConfig | None = None, bound_cfg: BoundConfig | None = None,
        mc_cfg: MCBoundConfig | None = MCBoundConfig(), joint: str | None = None) -> dict:
    """Build, run and report a composition; returns the report dict (also written to ``out``).

    Every policy acts stochastically (its max-ent policy) unless ``deterministic``; ``mc_cfg=None``
    skips the Monte Carlo bound check; ``joint`` names the reference skill (default: the combined task's newest).
    """
    started = time.perf_counter()
    torch.manual_seed(seed)  # constituents and the joint skill sample from torch's global generator
    env_kwargs = dict(env_kwargs or {})
    composition = load(spec, weights, library)
    out = Path(out) if out else Path("runs") / "compose" / f"{composition.skill_names}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    (out / ".write-test").write_text("")  # fail now, not after minutes of evaluation, if out cannot be written
    (out / ".write-test").unlink()

    def make_env():
        return envs.make_task_env(composition.task, **env_kwargs)

    # phase 1: what the composition needs, and the jointly trained reference
    joint, joint_note = find_joint(composition, library, joint)
    built = build(composition, library, progress, sampler_cfg or SamplerConfig(), bound_cfg or BoundConfig())
    composed = composed_policy(composition, built, sampler, seed)
    # phase 2: the policies on the same seeded episodes
    build_time = 0.0 if sampler != "amortized" else built.build_wall_time_s  # the others train nothing
    rows, pairs = evaluate_policies(composition=composition, composed=composed, joint=joint, build_time=build_time,
                                    make_env=make_env, episodes=episodes, seed=seed, deterministic=deterministic)
    rows["composed"]["sampler"] = sampler
    # phase 3: the bound, by Monte Carlo soft returns (the amortized sampler's policy) and by learned functions
    bound = {"form": "tight: C = gamma E[delta(s') + max_a' C(s',a')], delta = sum_i w_i V_i - V_w",
             "gap_on_stored_states": built.info.get("gap", {})}
    if mc_cfg is not None:
        mc_policy = ComposedPolicy(composition, built.sampler, seed + 1)
        bound["mc"] = mc_bound(mc_policy, joint, built.correction, make_env, composition.task.reward_range,
                               composition.task.family.horizon, mc_cfg)
    bound["learned"] = learned_bound(composition=composition, built=built, joint=joint, joint_note=joint_note,
                                     pairs=pairs)
    # phase 4: figures
    figures = {name: out / f"{name}.png" for name in ("bound_episode", "q_slices", "comparison")}
    bound["mc_episode"] = bound_episode_figure(composition=composition, composed=composed, built=built, joint=joint,
                                               make_env=make_env, seed=seed, mc_cfg=mc_cfg, path=figures["bound_episode"])
    q_slices_figure(composition=composition, built=built, joint=joint, pairs=pairs, seed=seed, path=figures["q_slices"])
    mode = "deterministic" if deterministic else "stochastic"
    plot_comparison(rows, figures["comparison"], f"{composition.task.name}: {episodes} seeded episodes, {mode}")
    # phase 5: the report
    report = {
        "spec": composition.name, "task": composition.task.name, "weights": composition.weights.tolist(),
        "alpha": composition.alpha, "gamma": composition.gamma, "episodes": episodes, "seed": seed,
        "sampler": sampler, "mode": mode, "deterministic": deterministic,
        "mode_note": ("stochastic: every policy draws one sampler action per step (its max-ent policy)" if not deterministic
                      else "deterministic: every policy takes the highest-Q of 32 sampled actions"),
        "composed": rows["composed"],
        "joint": rows.get("joint", {"note": joint_note}),
        "constituents": {label: rows[label] for label in composition.labels},
        "bound": bound,
        "build": {"cached": built.cached, "cache": built.info.get("cache"),
                  "sampler_wall_time_s": round(built.build_wall_time_s, 2),
                  "load_wall_time_s": round(built.load_wall_time_s, 3)},
        "skills": {label: str(p.path) for label, p in zip(composition.labels, composition.parts)}
        | ({"joint": str(joint.path)} if joint else {}),
        "figures": {k: str(v) for k, v in figures.items()},
        "env_kwargs": {k: str(v) for k, v in env_kwargs.items()},
    }
    if render:
        video, video_seed = render_episode(composition, lambda o: composed.act(o, deterministic), out / "composed.mp4",
                                           seed, env_kwargs)
        report["video"] = str(video)
        report["video_seed"] = video_seed
    report["wall_time_s"] = round(time.perf_counter() - started, 1)
    write_json(out / "report.json", report)
    write_text(out / "report.md", report_markdown(report, rows))
    report["out"] = str(out)
    return report


def comparison_table(rows: dict[str, dict]) -> str:
    """The comparison as a Markdown table."""
    terms = list(next(iter(rows.values()))["term_returns"])
    head = ["policy", "success", "return", "soft return", *[f"R[{t}]" for t in terms], "collisions", "env samples",
            "build s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        soft = r.get("soft_return_mean")
        cells = [name, f"{r['success_rate']:.2f}", f"{r['return_mean']:.2f}", "–" if soft is None else f"{soft:.2f}",
                 *[f"{r['term_returns'][t]:.2f}" for t in terms], f"{r['collision_rate']:.2f}",
                 f"{r['env_steps_used']}", f"{r['build_wall_time_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mc_lines(mc: dict) -> list[str]:
    """The Monte Carlo bound check as report lines."""
    lines = [
        f"- {mc['pairs']} (s, a) pairs from the composed policy's episodes, {mc['rollouts_per_pair']} rollouts each, "
        f"T = {mc['rollout_steps']} steps (tail <= {mc['tail_bound']:.2g}), 95% CIs",
        f"- upper side `Q^pi <= Q_w` falsified on {mc['upper_falsified_fraction']:.1%} of checks "
        f"(composed {mc['upper_falsified_fraction_composed']:.1%}"
        + (f", joint {mc['upper_falsified_fraction_joint']:.1%}" if "upper_falsified_fraction_joint" in mc else "")
        + f"); mean slack Q_w - G_composed = {mc['upper_slack_mean_composed']:.3f}",
        f"- lower side `Q^pi_w >= Q_w - C` holds on {mc['lower_holds_fraction']:.1%}; "
        f"mean slack G_composed - (Q_w - C) = {mc['lower_slack_mean']:.3f}; mean C {mc['C_mean']:.3f}",
    ]
    if "suboptimality_mean" in mc:
        lo, hi = mc["suboptimality_ci"]
        lines.append(f"- suboptimality G_joint - G_composed = {mc['suboptimality_mean']:.3f} (95% CI {lo:.3f} to {hi:.3f}) "
                     f"against mean C {mc['C_mean']:.3f}")
    goals = ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in mc["goals"].items())
    return lines + [f"- goals: {goals}"]


def bound_lines(bound: dict) -> list[str]:
    lines = ["Monte Carlo (falsifiable, no learned stand-in for Q*_w):", *mc_lines(bound["mc"])] if "mc" in bound else []
    learned = bound["learned"]
    lines.append("Learned functions compared point by point (a diagnostic, not a test):")
    if learned.get("holds_fraction") is None:
        return lines + [f"- mean Q_w {learned['mean_Q_w']:.3f}, mean C {learned['mean_C']:.3f}",
                        f"- {learned.get('note', '')}"]
    return lines + [
        (f"- `Q_w - C <= Q_joint <= Q_w` holds on {learned['holds_fraction']:.1%} of {learned['pairs']} (s, a) pairs "
         "from the composed policy's rollouts"),
        (f"- upper side `Q_joint <= Q_w`: holds {learned['upper_holds_fraction']:.1%}; mean violation "
         f"{learned['upper_violation_mean']:.3f}; mean slack Q_w - Q_joint = {learned['upper_slack_mean']:.3f}"),
        (f"- lower side `Q_w - C <= Q_joint`: holds {learned['lower_holds_fraction']:.1%}; mean violation "
         f"{learned['lower_violation_mean']:.3f}; mean slack = {learned['lower_slack_mean']:.3f}"),
        f"- mean C {learned['mean_C']:.3f}; measured gap mean(Q_w - Q_joint) {learned['mean_gap']:.3f}",
    ]


def report_markdown(report: dict, rows: dict[str, dict]) -> str:
    lines = [f"# Composition report: {report['spec']} on {report['task']}", "",
             (f"weights {report['weights']}, alpha {report['alpha']}, gamma {report['gamma']}, "
              f"{report['episodes']} episodes from seed {report['seed']}, sampler {report['sampler']}; "
              f"{report['mode_note']}"), "",
             "Soft return: discounted over the episode, sum_t gamma^t (r_t + V(s_t) - Q(s_t, a_t)) with each policy's "
             "own Q and V.", "",
             comparison_table(rows), "", "## Bound (tight form)", "", *bound_lines(report["bound"]), "",
             "Error sources: delta by importance sampling (common random numbers); C by TD on the skills'",
             "stored transitions with a max over sampled actions; Monte Carlo soft returns carry sampling",
             "error (the CIs) and a tail bound; their entropy terms use each policy's own Q and V.", "",
             "## Figures", ""]
    lines += [f"![{k}]({Path(v).name})" for k, v in report["figures"].items()]
    if "video" in report:
        lines += ["", f"Video: {Path(report['video']).name} (seed {report['video_seed']})"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compose.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="skills to compose, joined by '+', e.g. reach+avoid")
    parser.add_argument("--weights", type=weight_list,
                        help="comma-separated weights summing to 1 (default: equal), e.g. 0.7,0.3")
    parser.add_argument("--sampler", choices=SAMPLERS, default="amortized",
                        help="amortized: a fresh sampler network trained on Q_w (cached); "
                             "particles: SVGD on action particles at each step; resampling: importance resampling "
                             "of exp(Q_w/alpha) from 8192 uniform actions per step (slow; no sampler in the way) "
                             "(default: amortized)")
    parser.add_argument("--episodes", type=positive_int, default=100, help="evaluation episodes per policy (default: 100)")
    parser.add_argument("--seed", type=int, default=EVAL_SEED, help=f"first episode seed (default: {EVAL_SEED})")
    parser.add_argument("--deterministic", action="store_true", help="every policy takes the best of 32 sampled "
                        "actions under its Q (default: one sampler draw per step, the max-ent policy the theory is about)")
    parser.add_argument("--no-mc", action="store_true", help="skip the Monte Carlo bound check (bound.mc)")
    parser.add_argument("--render", action="store_true", help="write an mp4 of the composed policy (and a live "
                        "window when a display exists)")
    parser.add_argument("--out", help="output directory (default: runs/compose/<spec>-<time>)")
    parser.add_argument("--json", metavar="PATH", help="also copy report.json here")
    parser.add_argument("--library", help="skill library (default: trained/ or $COMPOSABLE_SKILLS_LIBRARY)")
    add_arm_arguments(parser)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1; see docs/skills.md)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    weights = args.weights
    env_kwargs = arm_kwargs(args)
    try:
        report = run(args.spec, weights=weights, sampler=args.sampler, episodes=args.episodes, seed=args.seed,
                     render=args.render, out=args.out, library=args.library, deterministic=args.deterministic,
                     env_kwargs=env_kwargs, progress=not args.no_progress, mc_cfg=None if args.no_mc else MCBoundConfig())
    except (UnknownNameError, SkillError, IncompatibleSkillsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a read-only library or output directory, a path that is a file
        print(f"error: cannot write: {err}", file=sys.stderr)
        return 1
    rows = {"composed": report["composed"], **({"joint": report["joint"]} if "success_rate" in report["joint"] else {}),
            **report["constituents"]}
    print(f"\n{report['spec']} on {report['task']} ({report['episodes']} episodes, seed {report['seed']}, "
          f"{report['mode']}):\n")
    print(comparison_table(rows))
    print("\nbound (tight form):")
    print("\n".join(bound_lines(report["bound"])))
    if "note" in report["joint"]:
        print(f"\nnote: {report['joint']['note']}")
    if "video" in report:
        print(f"\nvideo: {report['video']}")
    print(f"\nreport: {report['out']}/report.md  ({report['wall_time_s']:.0f} s)")
    if args.json:
        write_json(Path(args.json), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
