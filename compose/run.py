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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import envs
import skills
from envs._gl import headless
from envs.core import UnknownNameError
from envs.video import VideoWriter, draw_text, overlay_lines
from skills.evaluation import run_episodes
from skills.library import SkillError
from skills.sql import SamplerNetwork, SoftQNetwork
from skills.trainer import EVAL_SEED

from .bound import BoundConfig, check_bound, fit_composition_correction, gap_on_states
from .cache import cache_path, load_cached, save_cached
from .composition import Composition, IncompatibleSkillsError, check_compatible, load
from .plots import plot_comparison, plot_episode_bound, plot_q_slices, q_grid
from .sampling import ParticleConfig, ParticlePolicy, SamplerConfig, constituent_init, train_amortized_sampler

MAX_BOUND_PAIRS = 5000


@dataclass
class Built:
    """What the composition built (or loaded from the cache), and what it cost."""

    sampler: SamplerNetwork
    correction: SoftQNetwork
    cached: bool
    build_wall_time_s: float  # time to build the composed sampler (first build, even when cached)
    load_wall_time_s: float
    info: dict = field(default_factory=dict)


def build(composition: Composition, library: str | None, progress: bool,
          sampler_cfg: SamplerConfig = SamplerConfig(), bound_cfg: BoundConfig = BoundConfig()) -> Built:
    """Train (or load from the library cache) the composed sampler and the bound's ``C``."""
    obs_scale = composition.parts[0].agent.q.obs_scale
    sampler = SamplerNetwork(composition.obs_dim, composition.act_dim, sampler_cfg.hidden, obs_scale)
    correction = SoftQNetwork(composition.obs_dim, composition.act_dim, bound_cfg.hidden, obs_scale)
    path = cache_path(composition, {"sampler": sampler_cfg.to_dict(), "bound": bound_cfg.to_dict()}, library)
    start = time.perf_counter()
    manifest = load_cached(path, {"sampler": sampler, "C": correction})
    if manifest is not None:
        return Built(sampler, correction, True, manifest["sampler_wall_time_s"], time.perf_counter() - start,
                     manifest | {"cache": str(path)})
    sampler, s_info = train_amortized_sampler(composition.q, composition.states(), composition.act_dim,
                                              composition.alpha, obs_scale, sampler_cfg, progress)
    c_start = time.perf_counter()
    correction, c_info = fit_composition_correction(composition, bound_cfg)
    manifest = {
        "constituents": [str(p.path) for p in composition.parts], "weights": composition.weights.tolist(),
        "sampler": sampler_cfg.to_dict(), "bound": bound_cfg.to_dict(),
        "sampler_wall_time_s": s_info["wall_time_s"], "correction_wall_time_s": time.perf_counter() - c_start,
        "gap": c_info, "env_steps_used": 0,
    }
    save_cached(path, {"sampler": sampler, "C": correction}, manifest)
    return Built(sampler, correction, False, s_info["wall_time_s"], 0.0, manifest | {"cache": str(path)})


def composed_policy(composition: Composition, built: Built, kind: str, deterministic: bool, seed: int):
    """``obs -> action`` for the composed energy policy (a sample unless ``deterministic``)."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "particles":
        particles = ParticlePolicy(composition.q, composition.act_dim, composition.alpha, ParticleConfig(), seed,
                                   init=constituent_init([p.agent.sampler for p in composition.parts]))
        if not deterministic:
            return particles

        def best_particle(obs):
            o = torch.as_tensor(obs, dtype=torch.float32)[None]
            a = particles.particles(o)
            with torch.no_grad():
                return a[0, composition.q(o.unsqueeze(1), a)[0].argmax()].numpy()

        return best_particle

    def amortized(obs):
        o = torch.as_tensor(obs, dtype=torch.float32)[None]
        n = 32 if deterministic else 1
        with torch.no_grad():
            noise = torch.randn(1, n, composition.act_dim, generator=generator)
            a = torch.tanh(built.sampler(o, noise))
            pick = composition.q(o.unsqueeze(1), a)[0].argmax() if deterministic else 0
        return a[0, pick].numpy()

    return amortized


def find_joint(composition: Composition, library: str | None) -> tuple[skills.Skill | None, str]:
    """The jointly trained skill for the combined task, or why there is none."""
    name = composition.task.name
    if composition.task.name not in envs.TASKS:
        return None, (f"no jointly trained reference: the combined task {name!r} is not a registered task "
                      f"(registered combinations, such as reach+avoid with equal weights, have one)")
    try:
        joint = skills.load(name, library)
    except (UnknownNameError, SkillError):
        return None, f"no jointly trained {name!r} skill in the library; train one with: python -m skills.train {name}"
    try:
        check_compatible([*composition.parts, joint])
    except IncompatibleSkillsError as err:
        return None, f"the jointly trained {name!r} skill cannot serve as reference: {err}"
    return joint, ""


def record_pairs(policy, store: list):
    """Wrap a policy so that every (obs, action) it produces is appended to ``store``."""

    def wrapped(obs):
        action = policy(obs)
        store.append((np.asarray(obs, np.float32).copy(), np.asarray(action, np.float32).copy()))
        return action

    return wrapped


def render_episode(composition: Composition, policy, path: Path, seed: int, env_kwargs: dict) -> tuple[Path, int]:
    """An mp4 of one composed episode (preferring one where the obstacle blocks the straight path)."""
    env = envs.make_task_env(composition.task, render_mode="rgb_array", **env_kwargs)
    chosen = seed
    for candidate in range(seed, seed + 20):
        _, info = env.reset(seed=candidate)
        if info.get("obstacle_blocks_path", True):
            chosen = candidate
            break
    video = VideoWriter(path, env.metadata.get("render_fps", 25))
    obs, _ = env.reset(seed=chosen)
    actions, step = [], 0
    video.add(draw_text(env.render(), [f"{composition.name} (composed, 0 env samples)", "step 0"]))
    while True:
        action = policy(obs)
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        step += 1
        video.add(draw_text(env.render(), overlay_lines(info, step)))
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


def evaluate_row(name: str, policy, env, episodes: int, seed: int, env_steps: int, wall: float) -> dict:
    metrics = run_episodes(env, policy, episodes, seed)
    return {"policy": name, **metrics, "env_steps_used": int(env_steps), "build_wall_time_s": round(float(wall), 2)}


def run(spec: str, weights: list[float] | None = None, sampler: str = "amortized", episodes: int = 100,
        seed: int = EVAL_SEED, render: bool = False, out: str | Path | None = None, library: str | None = None,
        deterministic: bool = True, env_kwargs: dict[str, Any] | None = None, progress: bool = True,
        sampler_cfg: SamplerConfig = SamplerConfig(), bound_cfg: BoundConfig = BoundConfig()) -> dict:
    """Build, run and report a composition; returns the report dict (also written to ``out``)."""
    started = time.perf_counter()
    torch.manual_seed(seed)  # constituents and the joint skill sample from torch's global generator
    env_kwargs = dict(env_kwargs or {})
    composition = load(spec, weights, library)
    out = Path(out) if out else Path("runs") / "compose" / f"{composition.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    joint, joint_note = find_joint(composition, library)
    built = build(composition, library, progress, sampler_cfg, bound_cfg)
    policy = composed_policy(composition, built, sampler, deterministic, seed)
    env = envs.make_task_env(composition.task, **env_kwargs)

    pairs: list = []
    build_time = 0.0 if sampler == "particles" else built.build_wall_time_s  # particles train nothing
    rows = {"composed": evaluate_row("composed", record_pairs(policy, pairs), env, episodes, seed, 0, build_time)}
    rows["composed"]["sampler"] = sampler
    if joint is not None:
        rows["joint"] = evaluate_row("joint", lambda o: joint.act(o, deterministic), env, episodes, seed,
                                     joint.manifest["env_steps"], joint.manifest["wall_time_s"])
    for label, part in zip(composition.labels, composition.parts):
        rows[label] = evaluate_row(label, lambda o, p=part: p.act(o, deterministic), env, episodes, seed,
                                   part.manifest["env_steps"], part.manifest["wall_time_s"])
    env.close()

    # the bound, on the composed policy's own (s, a) pairs
    obs = torch.as_tensor(np.stack([p[0] for p in pairs[:MAX_BOUND_PAIRS]]))
    act = torch.as_tensor(np.stack([p[1] for p in pairs[:MAX_BOUND_PAIRS]]))
    with torch.no_grad():
        q_w = composition.q(obs, act).numpy()
        c = built.correction(obs, act).numpy()
        q_joint = joint.q(obs.numpy(), act.numpy()) if joint is not None else None
    bound = {"form": "tight: C = gamma E[delta(s') + max_a' C(s',a')], delta = sum_i w_i V_i - V_w",
             "gap_on_stored_states": built.info.get("gap", {})}
    if q_joint is not None:
        bound |= check_bound(q_w, c, q_joint)
    else:
        bound |= {"holds_fraction": None, "mean_C": float(np.mean(c)), "mean_gap": None,
                  "mean_Q_w": float(np.mean(q_w)), "note": joint_note}

    # figures
    figures = {"bound_episode": out / "bound_episode.png"}
    episode: list = []
    env = envs.make_task_env(composition.task, **env_kwargs)
    run_episodes(env, record_pairs(policy, episode), 1, seed)
    env.close()
    e_obs, e_act = (np.stack([p[i] for p in episode]) for i in (0, 1))
    with torch.no_grad():
        e_qw = composition.q(torch.as_tensor(e_obs), torch.as_tensor(e_act)).numpy()
        e_c = built.correction(torch.as_tensor(e_obs), torch.as_tensor(e_act)).numpy()
    e_qj = joint.q(e_obs, e_act) if joint is not None else None
    plot_episode_bound(e_qw, e_c, e_qj, figures["bound_episode"], f"{composition.name}: one composed episode (seed {seed})")
    gaps = gap_on_states(composition.q, obs.numpy()[:2000], 256, seed)
    state = obs.numpy()[int(np.argmax(gaps))]
    panels = {f"Q_{label}": q_grid(p.agent.q, state, composition.act_dim)
              for label, p in zip(composition.labels, composition.parts)}
    panels["Q_w (composed)"] = q_grid(composition.q, state, composition.act_dim)
    if joint is not None:
        panels["Q_joint"] = q_grid(joint.agent.q, state, composition.act_dim)
    with torch.no_grad():
        samples = torch.tanh(built.sampler(torch.as_tensor(state)[None], torch.randn(1, 200, composition.act_dim)))[0]
    figures["q_slices"] = out / "q_slices.png"
    plot_q_slices(panels, 1.0, figures["q_slices"],
                  f"{composition.name}: Q over (a_0, a_1) at the visited state with the largest gap delta "
                  f"(other action dims 0); dots: composed sampler", samples.numpy())
    figures["comparison"] = out / "comparison.png"
    plot_comparison(rows, figures["comparison"], f"{composition.task.name}: {episodes} seeded episodes")

    report = {
        "spec": composition.name, "task": composition.task.name, "weights": composition.weights.tolist(),
        "alpha": composition.alpha, "gamma": composition.gamma, "episodes": episodes, "seed": seed,
        "sampler": sampler, "deterministic": deterministic,
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
        video, video_seed = render_episode(composition, policy, out / "composed.mp4", seed, env_kwargs)
        report["video"] = str(video)
        report["video_seed"] = video_seed
    report["wall_time_s"] = round(time.perf_counter() - started, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(report_markdown(report, rows))
    report["out"] = str(out)
    return report


def comparison_table(rows: dict[str, dict]) -> str:
    """The comparison as a Markdown table."""
    terms = list(next(iter(rows.values()))["term_returns"])
    head = ["policy", "success", "return", *[f"R[{t}]" for t in terms], "collisions", "env samples", "build s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        cells = [name, f"{r['success_rate']:.2f}", f"{r['return_mean']:.2f}",
                 *[f"{r['term_returns'][t]:.2f}" for t in terms], f"{r['collision_rate']:.2f}",
                 f"{r['env_steps_used']}", f"{r['build_wall_time_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bound_lines(bound: dict) -> list[str]:
    if bound.get("holds_fraction") is None:
        return [f"- mean Q_w {bound['mean_Q_w']:.3f}, mean C {bound['mean_C']:.3f}", f"- {bound.get('note', '')}"]
    return [
        f"- `Q_w - C <= Q_joint <= Q_w` holds on {bound['holds_fraction']:.1%} of {bound['pairs']} (s, a) pairs "
        "from the composed policy's rollouts",
        f"- upper side `Q_joint <= Q_w`: holds {bound['upper_holds_fraction']:.1%}; mean violation "
        f"{bound['upper_violation_mean']:.3f}; mean slack Q_w - Q_joint = {bound['upper_slack_mean']:.3f}",
        f"- lower side `Q_w - C <= Q_joint`: holds {bound['lower_holds_fraction']:.1%}; mean violation "
        f"{bound['lower_violation_mean']:.3f}; mean slack = {bound['lower_slack_mean']:.3f}",
        f"- mean C {bound['mean_C']:.3f}; measured gap mean(Q_w - Q_joint) {bound['mean_gap']:.3f}",
    ]


def report_markdown(report: dict, rows: dict[str, dict]) -> str:
    lines = [f"# Composition report: {report['spec']} on {report['task']}", "",
             f"weights {report['weights']}, alpha {report['alpha']}, gamma {report['gamma']}, "
             f"{report['episodes']} episodes from seed {report['seed']}, sampler {report['sampler']}"
             f"{', deterministic (best of 32 sampled actions)' if report['deterministic'] else ', stochastic'}", "",
             comparison_table(rows), "", "## Bound (tight form)", "", *bound_lines(report["bound"]), "",
             "Error sources: delta by importance sampling (common random numbers); C by TD on the skills'",
             "stored transitions with a max over sampled actions; Q_i and Q_joint are learned estimates,",
             "and Q_joint only stands in for the optimal Q*_w. See docs/compose.md.", "",
             "## Figures", ""]
    lines += [f"![{k}]({Path(v).name})" for k, v in report["figures"].items()]
    if "video" in report:
        lines += ["", f"Video: {Path(report['video']).name} (seed {report['video_seed']})"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compose.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="skills to compose, joined by '+', e.g. reach+avoid")
    parser.add_argument("--weights", help="comma-separated weights summing to 1 (default: equal), e.g. 0.7,0.3")
    parser.add_argument("--sampler", choices=["amortized", "particles"], default="amortized",
                        help="amortized: a fresh sampler network trained on Q_w (cached); "
                             "particles: SVGD on action particles at each step (default: amortized)")
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes per policy (default: 100)")
    parser.add_argument("--seed", type=int, default=EVAL_SEED, help=f"first episode seed (default: {EVAL_SEED})")
    parser.add_argument("--stochastic", action="store_true", help="every policy acts with one sampler draw (the "
                        "max-ent policy) instead of the best of 32 sampled actions under its Q")
    parser.add_argument("--render", action="store_true", help="write an mp4 of the composed policy (and a live "
                        "window when a display exists)")
    parser.add_argument("--out", help="output directory (default: runs/compose/<spec>-<time>)")
    parser.add_argument("--json", metavar="PATH", help="also copy report.json here")
    parser.add_argument("--library", help="skill library (default: trained/ or $COMPOSABLE_SKILLS_LIBRARY)")
    parser.add_argument("--arm", help="run on a custom arm: MJCF path (arm tasks only)")
    parser.add_argument("--ee-site", help="end-effector site of the custom arm")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1; see docs/skills.md)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    env_kwargs = {k: v for k, v in {"arm": args.arm, "ee_site": args.ee_site}.items() if v}
    try:
        report = run(args.spec, weights, args.sampler, args.episodes, args.seed, args.render, args.out, args.library,
                     not args.stochastic, env_kwargs, not args.no_progress)
    except (UnknownNameError, SkillError, IncompatibleSkillsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = {"composed": report["composed"], **({"joint": report["joint"]} if "success_rate" in report["joint"] else {}),
            **report["constituents"]}
    print(f"\n{report['spec']} on {report['task']} ({report['episodes']} episodes, seed {report['seed']}):\n")
    print(comparison_table(rows))
    print("\nbound (tight form):")
    print("\n".join(bound_lines(report["bound"])))
    if "note" in report["joint"]:
        print(f"\nnote: {report['joint']['note']}")
    if "video" in report:
        print(f"\nvideo: {report['video']}")
    print(f"\nreport: {report['out']}/report.md  ({report['wall_time_s']:.0f} s)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
