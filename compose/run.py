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
from skills.evaluation.episodes import EVAL_SEED

from .bound import BoundConfig, MCBoundConfig, check_bound, episode_starts, gap_on_states, mc_bound, mc_soft_q
from .build import Built, build
from .composition import Composition, IncompatibleSkillsError, check_compatible, load
from .operators import OPERATORS, WEIGHTED, OperatorConfig
from .plots import plot_comparison, plot_episode_bound, plot_q_slices, plot_trajectories, q_grid
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
        particles = ParticlePolicy(built.q, composition.act_dim, composition.alpha, ParticleConfig(), seed,
                                   init=constituent_init([p.agent.sampler for p in composition.parts])).particles
    elif kind == "resampling":
        generator = torch.Generator().manual_seed(seed)

        def particles(obs: torch.Tensor) -> torch.Tensor:
            return resampled_actions(built.q, obs, EVAL_PARTICLES, composition.alpha, composition.act_dim,
                                     generator=generator)
    elif kind != "amortized":
        raise ValueError(f"unknown sampler {kind!r}; valid: {', '.join(SAMPLERS)}")
    return ComposedPolicy(composition, built.sampler, seed, particles, q_fn=built.q)


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
        q_w = composition.q_w(obs, act).numpy()
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
        e_qw = composition.q_w(torch.as_tensor(e_obs), torch.as_tensor(e_act)).numpy()
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
    gaps = gap_on_states(composition.q_w, obs, 256, seed)
    state = obs[int(np.argmax(gaps))]
    panels = {f"Q_{label}": q_grid(p.agent.q, state, composition.act_dim)
              for label, p in zip(composition.labels, composition.parts)}
    panels["Q_w (composed)"] = q_grid(composition.q_w, state, composition.act_dim)
    sampled = "Q_w (composed)"  # the energy the composed sampler samples: its dots go there
    if composition.operator.name != "average":
        sampled = f"Q_{composition.operator.name} (composed)"
        panels[sampled] = q_grid(built.q, state, composition.act_dim)
    if joint is not None:
        panels["Q_joint"] = q_grid(joint.agent.q, state, composition.act_dim)
    with torch.no_grad():
        samples = torch.tanh(built.sampler(torch.as_tensor(state)[None], torch.randn(1, 200, composition.act_dim)))[0]
    plot_q_slices(panels, 1.0, path,
                  f"{composition.name}: Q over (a_0, a_1) at the visited state with the largest gap delta "
                  f"(other action dims 0); dots: composed sampler", samples.numpy(), samples_panel=sampled)


def output_directory(out: str | Path | None, name: str) -> Path:
    """``out`` (default ``runs/compose/<name>-<time>``), created and checked writable now, not after minutes of work."""
    out = Path(out) if out else Path("runs") / "compose" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    (out / ".write-test").write_text("")
    (out / ".write-test").unlink()
    return out


def run(spec: str | Sequence[str], *, weights: list[float] | None = None, sampler: str = "amortized", episodes: int = 100,
        seed: int = EVAL_SEED, render: bool = False, out: str | Path | None = None, library: str | None = None,
        deterministic: bool = False, env_kwargs: dict[str, Any] | None = None, progress: bool = True,
        sampler_cfg: SamplerConfig | None = None, bound_cfg: BoundConfig | None = None,
        mc_cfg: MCBoundConfig | None = MCBoundConfig(), joint: str | None = None, operator: str = "average",
        order: Sequence[str] | None = None, epsilon: float | None = None) -> dict:
    """Build, run and report a composition; returns the report dict (also written to ``out``).

    Every policy acts stochastically (its max-ent policy) unless ``deterministic``; ``mc_cfg=None``
    skips the Monte Carlo bound check; ``joint`` names the reference skill (default: the combined task's newest).
    ``operator`` (``compose.operators``) chooses how the skills combine; the bound checks run for ``average``,
    the operator the bound is about. ``run_operators`` compares every operator in one table.
    """
    started = time.perf_counter()
    torch.manual_seed(seed)  # constituents and the joint skill sample from torch's global generator
    env_kwargs = dict(env_kwargs or {})
    composition = load(spec, weights, library, operator=operator, order=order, epsilon=epsilon)
    averaging = composition.operator.name == "average"
    out = output_directory(out, composition.skill_names)

    def make_env():
        return envs.make_task_env(composition.task, **env_kwargs)

    # phase 1: what the composition needs, and the jointly trained reference
    joint, joint_note = find_joint(composition, library, joint)
    built = build(composition, library, progress, sampler_cfg or SamplerConfig(), bound_cfg or BoundConfig())
    composed = composed_policy(composition, built, sampler, seed)
    # phase 2: the policies on the same seeded episodes
    # the operator's offline fits (dc, gpi), and the amortized sampler (the other samplers train nothing)
    build_time = built.info.get("operator_wall_time_s", 0.0) + (built.build_wall_time_s if sampler == "amortized" else 0.0)
    rows, pairs = evaluate_policies(composition=composition, composed=composed, joint=joint, build_time=build_time,
                                    make_env=make_env, episodes=episodes, seed=seed, deterministic=deterministic)
    rows["composed"]["sampler"] = sampler
    # phase 3: the bound, by Monte Carlo soft returns (the amortized sampler's policy) and by learned functions
    figures = {name: out / f"{name}.png" for name in ("bound_episode", "q_slices", "comparison") if averaging
               or name != "bound_episode"}
    if averaging:
        bound = {"form": "tight: C = gamma E[delta(s') + max_a' C(s',a')], delta = sum_i w_i V_i - V_w",
                 "gap_on_stored_states": built.info.get("gap", {})}
        if mc_cfg is not None:
            mc_policy = ComposedPolicy(composition, built.sampler, seed + 1)
            bound["mc"] = mc_bound(mc_policy, joint, built.correction, make_env, composition.task.reward_range,
                                   composition.task.family.horizon, mc_cfg)
        bound["learned"] = learned_bound(composition=composition, built=built, joint=joint, joint_note=joint_note,
                                         pairs=pairs)
        bound["mc_episode"] = bound_episode_figure(composition=composition, composed=composed, built=built, joint=joint,
                                                   make_env=make_env, seed=seed, mc_cfg=mc_cfg,
                                                   path=figures["bound_episode"])
    else:
        bound = {"note": f"the bound of Haarnoja et al. (2018) is about averaging; operator "
                         f"{composition.operator.name!r} is not checked against it"}
    # phase 4: figures
    q_slices_figure(composition=composition, built=built, joint=joint, pairs=pairs, seed=seed, path=figures["q_slices"])
    mode = "deterministic" if deterministic else "stochastic"
    plot_comparison(rows, figures["comparison"], f"{composition.task.name}: {episodes} seeded episodes, {mode}")
    # phase 5: the report
    report = {
        "spec": composition.name, "task": composition.task.name, "weights": composition.weights.tolist(),
        "operator": composition.operator.settings(),
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


def trajectories(policy, make_env, episodes: int, seed: int, deterministic: bool, plane) -> tuple[list, list, list]:
    """The first ``episodes`` seeded episodes of ``policy`` in the family's top view: (paths [T, 2], marks [K, 2]
    of each episode's first observation, success flags). Torch's generator is reseeded as in ``evaluate_row``."""
    torch.manual_seed(seed)
    env = make_env()
    paths, marks, successes = [], [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        seen = [obs]
        while True:
            obs, _, terminated, truncated, info = env.step(policy.act(obs, deterministic))
            seen.append(obs)
            if terminated or truncated:
                break
        seen = np.stack(seen)
        paths.append(plane.plane(seen))
        marks.append(plane.plane_marks(seen[0]) if plane.plane_marks is not None else np.zeros((0, 2)))
        successes.append(bool(info.get("is_success", False)))
    env.close()
    return paths, marks, successes


def applicable_operators(operators: Sequence[str], weighted: bool, order: Sequence[str] | None) -> tuple[list, dict]:
    """The operators of ``operators`` that apply here, and why each other one does not."""
    run_these, skipped = [], {}
    for name in operators:
        if name not in OPERATORS:
            raise ValueError(f"unknown operator {name!r}; valid operators: {', '.join(OPERATORS)}, all")
        if weighted and name not in WEIGHTED:
            skipped[name] = "takes no weights"
        elif name == "priority" and not order:
            skipped[name] = "needs an order (--order SKILL,SKILL, highest priority first)"
        else:
            run_these.append(name)
    return run_these, skipped


def run_operators(spec: str, *, operators: Sequence[str] | None = None, weights: list[float] | None = None,
                  order: Sequence[str] | None = None, epsilon: float | None = None, episodes: int = 100,
                  seed: int = EVAL_SEED, out: str | Path | None = None, library: str | None = None,
                  deterministic: bool = False, env_kwargs: dict[str, Any] | None = None, progress: bool = True,
                  sampler_cfg: SamplerConfig | None = None, operator_cfg: OperatorConfig | None = None,
                  bound_cfg: BoundConfig | None = None, trajectory_episodes: int = 20, joint: str | None = None) -> dict:
    """Every applicable operator (default: all of ``compose.operators.OPERATORS``) on the same seeded episodes of
    the combined task, with the jointly trained reference and each constituent: one table (report.md), one
    figure of trajectories per policy (trajectories.png) and report.json. Returns the report.
    ``operator_cfg``: the learned operators' fit settings (its ``name`` is ignored); ``bound_cfg``: the bound's
    ``C`` that an averaged composition builds with its sampler (and caches with it)."""
    started = time.perf_counter()
    env_kwargs = dict(env_kwargs or {})
    names = str(spec).split("+")
    run_these, skipped = applicable_operators(list(operators or OPERATORS), weights is not None, order)
    parts = [skills.load(n, library) for n in names]
    base = Composition(parts, weights, labels=names, library=library, seed=seed)
    out = output_directory(out, base.skill_names + "-operators")

    def make_env():
        return envs.make_task_env(base.task, **env_kwargs)

    # phase 1: build every operator (no environment samples), and find the reference
    compositions, builds = {}, {}
    for name in run_these:
        composition = Composition(parts, weights if name in WEIGHTED else None, labels=names, library=library, seed=seed,
                                  operator=replace(operator_cfg or OperatorConfig(), name=name, order=None),
                                  order=order if name == "priority" else None, epsilon=epsilon if name == "priority" else None)
        builds[name] = build(composition, library, progress, sampler_cfg or SamplerConfig(), bound_cfg or BoundConfig())
        compositions[name] = composition
    reference, joint_note = find_joint(base, library, joint)
    # phase 2: every policy on the same seeded episodes
    policies: dict[str, Any] = {name: composed_policy(compositions[name], builds[name], "amortized", seed)
                                for name in run_these}
    rows = {}
    for name, policy in policies.items():
        b = builds[name]
        rows[name] = evaluate_row(name, policy, make_env, episodes, seed, deterministic, 0,
                                  b.build_wall_time_s + b.info.get("operator_wall_time_s", 0.0))
    if reference is not None:
        policies["joint"] = reference
        rows["joint"] = evaluate_row("joint", reference, make_env, episodes, seed, deterministic,
                                     reference.info.env_steps, reference.info.wall_time_s)
    for label, part in zip(names, parts):
        policies[label] = part
        rows[label] = evaluate_row(label, part, make_env, episodes, seed, deterministic, part.info.env_steps,
                                   part.info.wall_time_s)
    # phase 3: the figure
    family = base.task.family
    mode = "deterministic" if deterministic else "stochastic"
    figures = {}
    if family.plane is not None:
        # fresh composed policies: their first episodes draw what the table's first episodes drew
        policies |= {name: composed_policy(compositions[name], builds[name], "amortized", seed) for name in run_these}
        paths, outcomes, marks = {}, {}, []
        for name, policy in policies.items():
            paths[name], marks, outcomes[name] = trajectories(policy, make_env, min(trajectory_episodes, episodes), seed,
                                                              deterministic, family)
        figures["trajectories"] = out / "trajectories.png"
        plot_trajectories(paths, marks, figures["trajectories"],
                          f"{base.task.name}: the first {len(marks)} seeded episodes, {mode} (green: success)",
                          family.plane_label, outcomes)
    # phase 4: the report
    report = {
        "spec": base.name, "task": base.task.name, "weights": base.weights.tolist(), "alpha": base.alpha,
        "gamma": base.gamma, "episodes": episodes, "seed": seed, "mode": mode, "deterministic": deterministic,
        "operators": {name: rows[name] | {"operator": compositions[name].operator.settings(),
                                          "cached": builds[name].cached,
                                          "operator_fit": builds[name].info.get("operator_fit", {})}
                      for name in run_these},
        "skipped": skipped,
        "joint": rows.get("joint", {"note": joint_note}),
        "constituents": {label: rows[label] for label in names},
        "ratios_to_joint": ratio_rows(rows, run_these) if "joint" in rows else {},
        "figures": {k: str(v) for k, v in figures.items()},
        "env_kwargs": {k: str(v) for k, v in env_kwargs.items()},
    }
    report["wall_time_s"] = round(time.perf_counter() - started, 1)
    write_json(out / "report.json", report)
    write_text(out / "report.md", operators_markdown(report, rows))
    report["out"] = str(out)
    return report


def ratio_rows(rows: dict[str, dict], operators: Sequence[str]) -> dict[str, dict]:
    """Each operator's success and return over the joint's (``None`` where the joint's is not positive), and its
    return minus the joint's with the standard error of that difference (independent episodes' spread)."""
    joint = rows["joint"]

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 4) if b > 0 else None

    def se(row: dict) -> float:
        return float(row["return_std"]) / np.sqrt(row["episodes"])

    return {name: {"success": ratio(rows[name]["success_rate"], joint["success_rate"]),
                   "return": ratio(rows[name]["return_mean"], joint["return_mean"]),
                   "return_minus_joint": round(rows[name]["return_mean"] - joint["return_mean"], 4),
                   "return_minus_joint_se": round(float(np.hypot(se(rows[name]), se(joint))), 4)} for name in operators}


def operators_markdown(report: dict, rows: dict[str, dict]) -> str:
    lines = [f"# Composition operators: {report['spec']} on {report['task']}", "",
             f"{report['episodes']} seeded episodes from seed {report['seed']}, {report['mode']}; alpha {report['alpha']}, "
             f"gamma {report['gamma']}; every operator uses 0 environment samples.", "", comparison_table(rows), ""]
    if report["ratios_to_joint"]:
        lines += ["| operator | success / joint | return / joint | return − joint (± se) |", "|---|---|---|---|"]
        for name, r in report["ratios_to_joint"].items():
            cells = ["–" if r[key] is None else f"{r[key]:.2f}" for key in ("success", "return")]
            lines.append(f"| {name} | {cells[0]} | {cells[1]} | {r['return_minus_joint']:+.2f} "
                         f"± {r['return_minus_joint_se']:.2f} |")
        lines.append("")
    lines += [f"- {name}: skipped, {why}" for name, why in report["skipped"].items()]
    lines += [f"![{k}]({Path(v).name})" for k, v in report["figures"].items()]
    return "\n".join(lines) + "\n"


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
    if "note" in bound:
        return [f"- {bound['note']}"]
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
    parser.add_argument("--operator", choices=[*OPERATORS, "all"], default="average",
                        help="how the skills' soft Q-functions combine: "
                        + "; ".join(f"{k}: {v}" for k, v in OPERATORS.items())
                        + "; all: every applicable operator on the same episodes, one table and one trajectory figure "
                          "(default: average)")
    parser.add_argument("--order", type=lambda s: [x for x in s.split(",") if x],
                        help="priority: the skills, highest priority first, e.g. avoid,reach")
    parser.add_argument("--epsilon", type=float, help="priority: indifference margin in Q units "
                        "(default: compose.operators.OperatorConfig.epsilon)")
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
    if args.operator == "all":
        return main_operators(args, env_kwargs)
    try:
        report = run(args.spec, weights=weights, sampler=args.sampler, episodes=args.episodes, seed=args.seed,
                     render=args.render, out=args.out, library=args.library, deterministic=args.deterministic,
                     env_kwargs=env_kwargs, progress=not args.no_progress, mc_cfg=None if args.no_mc else MCBoundConfig(),
                     operator=args.operator, order=args.order, epsilon=args.epsilon)
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


def main_operators(args: argparse.Namespace, env_kwargs: dict) -> int:
    """``--operator all``: every applicable operator in one table and one figure."""
    try:
        report = run_operators(args.spec, weights=args.weights, order=args.order, epsilon=args.epsilon,
                               episodes=args.episodes, seed=args.seed, out=args.out, library=args.library,
                               deterministic=args.deterministic, env_kwargs=env_kwargs, progress=not args.no_progress)
    except (UnknownNameError, SkillError, IncompatibleSkillsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: cannot write: {err}", file=sys.stderr)
        return 1
    rows = {**report["operators"], **({"joint": report["joint"]} if "success_rate" in report["joint"] else {}),
            **report["constituents"]}
    print(f"\n{report['spec']} on {report['task']} ({report['episodes']} episodes, seed {report['seed']}, "
          f"{report['mode']}), every operator with 0 environment samples:\n")
    print(comparison_table(rows))
    for name, why in report["skipped"].items():
        print(f"{name}: skipped, {why}")
    if "note" in report["joint"]:
        print(f"\nnote: {report['joint']['note']}")
    print(f"\nreport: {report['out']}/report.md  ({report['wall_time_s']:.0f} s)")
    if args.json:
        write_json(Path(args.json), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
