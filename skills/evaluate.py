"""Evaluate a saved skill:  python -m skills.evaluate SKILL [--task T] [--episodes N] [--render] [--json PATH]

Prints success rate, mean return (and each reward term), soft return, collision rate and
episode length over seeded episodes of the skill's max-ent policy (one sampler draw per step;
``--deterministic``: the best of 32 sampled actions under Q). ``--task`` runs the skill on another
task of its family (for example the ``reach`` skill on ``reach+avoid``). ``--render`` writes an
mp4 and prints its path.

``--convergence`` checks the soft Q-function against ground truth instead: Monte Carlo soft
returns of its own stochastic policy against ``V(s0)``, and Bellman residuals ``Q - TQ``
(skills.evaluation.diagnostics). It prints them and records them in the skill's manifest (``convergence``).
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch

import envs
from envs.cli import add_arm_arguments, add_task_arguments, arm_kwargs, load_task_modules, run_command
from envs.video import VideoWriter, draw_text, overlay_lines

from .cli import non_negative_int, positive_int
from .evaluation.diagnostics import ConvergenceConfig, convergence_report, format_report
from .evaluation.episodes import EVAL_SEED, collision_text, evaluate
from .evaluation.lockstep import stream
from .library import Skill, atomic_write_text, load, task_of, update_manifest
from .policy import UniformPolicy

RANDOM = "random"  # the uniform random policy, as a baseline


def evaluate_random(task: str | None, episodes: int, seed: int, render: str | Path | None) -> dict:
    """The uniform random policy on ``task`` (seeded episodes, each with its own stream), for baselines such as
    avoid's collision rate."""
    if task is None:
        raise ValueError("the random baseline needs --task")
    env = envs.make(task)
    policy = UniformPolicy(int(np.prod(env.action_space.shape or (1,))))
    env.close()
    metrics = evaluate(policy, lambda: envs.make(task), episodes, seed, soft=False)
    if render:
        metrics["video"] = str(film_episode(policy, envs.make(task, render_mode="rgb_array"), seed, False, render))
    return metrics | {"skill": RANDOM, "task": task, "deterministic": False, "seed": seed}


def evaluate_skill(skill_name: str | Skill, task: str | None = None, episodes: int = 100, seed: int = EVAL_SEED,
                   deterministic: bool = False, render: str | Path | None = None, library: str | None = None,
                   env_kwargs: dict | None = None) -> dict:
    """Metrics of ``skill_name`` (a name, path, or a loaded ``Skill``) on ``task`` (default: its own), its episodes in
    lockstep (``skills.evaluation.episodes.evaluate``); optionally an mp4 of the first episode at ``render``. ``env_kwargs``
    go to ``envs.make`` (a custom arm: ``arm``, ``ee_site``, ``workspace_origin``)."""
    if skill_name == RANDOM:
        return evaluate_random(task, episodes, seed, render)
    torch.manual_seed(seed)  # the soft returns' value estimates draw from torch's global generator
    skill = skill_name if isinstance(skill_name, Skill) else load(skill_name, library)
    task_name = task or task_of(skill.info).name
    if envs.get_task(task_name).family.name != skill.info.family:
        raise ValueError(f"skill {skill.name!r} is for the {skill.info.family!r} family; "
                         f"task {task_name!r} is not in it")
    kwargs = env_kwargs or {}
    metrics = evaluate(skill, lambda: envs.make(task_name, **kwargs), episodes, seed, deterministic=deterministic)
    metrics |= {"skill": str(skill.path), "task": task_name, "deterministic": deterministic, "seed": seed}
    if render:
        env = envs.make(task_name, render_mode="rgb_array", **kwargs)
        metrics["video"] = str(film_episode(skill, env, seed, deterministic, render))
    return metrics


def film_episode(policy, env, seed: int, deterministic: bool, path: str | Path) -> Path:
    """An mp4 of the episode reset with ``seed`` (the evaluation's first), acting from that episode's stream as
    the evaluation did, with the step's distances and rewards in the overlay."""
    generator = stream(seed)
    try:
        with VideoWriter(path, env.metadata.get("render_fps", 25)) as video:  # a whole video or none
            obs, _ = env.reset(seed=seed)
            for step in range(1, 10**6):
                action = np.asarray(policy.act(np.asarray(obs, np.float32)[None], deterministic, [generator]))[0]
                obs, _, terminated, truncated, info = env.step(action)
                video.add(draw_text(env.render(), overlay_lines(info, step)))
                if terminated or truncated:
                    break
    finally:
        env.close()
    return video.path


def skill_convergence(skill_name: str | Skill, library: str | None = None, config: ConvergenceConfig | None = None,
                      record: bool = True, env_kwargs: dict | None = None) -> dict:
    """``skills.evaluation.diagnostics.convergence_report`` of a saved skill on its own task (``env_kwargs``, e.g. the
    arm it was trained on, override what its manifest recorded; ``Skill.make_env``); with ``record``, also written
    into its manifest under ``convergence`` (atomically; the checksummed files are untouched)."""
    config = config or ConvergenceConfig()
    torch.manual_seed(config.seed)
    skill = skill_name if isinstance(skill_name, Skill) else load(skill_name, library)
    task = task_of(skill.info)
    report = convergence_report(skill, partial(skill.make_env, **(env_kwargs or {})), task.reward_range,
                                skill.transitions, config)
    if record:
        update_manifest(skill.path, convergence=report)
    return report | {"skill": str(skill.path)}


def plot_trajectories(skill_name: str, library: str | None, episodes: int, seed: int, deterministic: bool,
                      path: str | Path) -> Path:
    """Trajectories of a multigoal skill over the four goals (PNG), with per-goal counts."""
    from .evaluation.plots import multigoal_rollouts, plot_multigoal

    torch.manual_seed(seed)
    skill = load(skill_name, library)
    if skill.info.family != "multigoal":
        raise ValueError("--plot draws multigoal trajectories; this skill is not a multigoal skill")
    paths, goals = multigoal_rollouts(lambda o: skill.act(o, deterministic), episodes, seed)
    mode = "best of 32 samples" if deterministic else "sampled actions"
    plot_multigoal(paths, goals, path, f"{skill.name}: {episodes} episodes, {mode}")
    return Path(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m skills.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("skill", help="skill name (newest version), name@vN, a skill directory, or 'random' "
                        "(uniform random actions; needs --task)")
    parser.add_argument("--task", help="task to run it on (default: the skill's own)")
    parser.add_argument("--episodes", type=positive_int, default=100, help="episodes (default: 100)")
    parser.add_argument("--seed", type=non_negative_int, default=EVAL_SEED, help=f"first episode seed (default: {EVAL_SEED})")
    parser.add_argument("--deterministic", action="store_true", help="act with the best of 32 sampled actions "
                        "under Q instead of one sampler draw (the max-ent policy)")
    parser.add_argument("--convergence", action="store_true", help="check the soft Q-function against Monte Carlo "
                        "soft returns and Bellman residuals; print and record them in the manifest")
    parser.add_argument("--start-states", type=positive_int, default=ConvergenceConfig.start_states,
                        help=f"--convergence: start states (default {ConvergenceConfig.start_states})")
    parser.add_argument("--rollouts", type=positive_int, default=ConvergenceConfig.rollouts,
                        help=f"--convergence: rollouts per start state (default {ConvergenceConfig.rollouts})")
    parser.add_argument("--render", nargs="?", const="auto", metavar="MP4",
                        help="write a video (default path: runs/eval/<skill>-<task>.mp4, <task> 'own' without --task)")
    parser.add_argument("--library", help="library directory (default: trained/)")
    parser.add_argument("--json", metavar="PATH", help="also write the metrics as JSON")
    add_arm_arguments(parser)
    add_task_arguments(parser)
    parser.add_argument("--allow-changed-task", action="store_true", help="use a skill whose task has been defined "
                        "differently since it was trained (refused by default, with both definitions shown)")
    parser.add_argument("--plot", metavar="PNG", help="multigoal skills: plot the evaluated trajectories and the "
                        "goal each reached")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    render = args.render
    if render == "auto":
        render = Path("runs/eval") / f"{Path(args.skill).name.replace('@', '-')}-{args.task or 'own'}.mp4"

    def body() -> int:
        load_task_modules(args.tasks)
        # a name is loaded by the evaluation itself (after it seeds torch, so its draws are those of earlier runs)
        skill = load(args.skill, args.library, allow_changed_task=True) if args.allow_changed_task else args.skill
        if args.convergence:
            report = skill_convergence(skill, args.library,
                                       ConvergenceConfig(start_states=args.start_states, rollouts=args.rollouts),
                                       env_kwargs=arm_kwargs(args))
            print("\n".join(convergence_lines(report)))
            result = report
        else:
            result = evaluate_skill(skill, args.task, args.episodes, args.seed, args.deterministic, render, args.library,
                                    env_kwargs=arm_kwargs(args))
            print("\n".join(metrics_lines(result)))
            if args.plot:
                plot = plot_trajectories(args.skill, args.library, args.episodes, args.seed, args.deterministic, args.plot)
                print(f"plot: {plot}")
        if args.json:
            atomic_write_text(args.json, json.dumps(result, indent=2))
            print(f"wrote {args.json}")
        return 0

    return run_command(body)


def metrics_lines(m: dict) -> list[str]:
    """An evaluation's metrics, as printed."""
    mode = ("uniform random actions" if m["skill"] == RANDOM else "deterministic: best of 32 sampled actions"
            if m["deterministic"] else "stochastic: sampler draws")
    lines = [f"{m['skill']} on {m['task']} ({m['episodes']} episodes from seed {m['seed']}, {mode}):",
             f"  success rate     {m['success_rate']:.3f}",
             f"  return (mean)    {m['return_mean']:.3f} ± {m['return_std']:.3f}"]
    if m.get("soft_return_mean") is not None:
        lines.append(f"  soft return      {m['soft_return_mean']:.3f} ± {m['soft_return_std']:.3f}  (discounted, "
                     "each step credited with the policy's own entropy)")
    lines += [f"    {k:14s} {v:.3f}" for k, v in m["term_returns"].items()]
    collisions = collision_text(m, ".3f") + ("" if m.get("collisions_checked", True) else "  (no collision check here)")
    lines += [f"  collision rate   {collisions}", f"  episode length   {m['episode_length']:.1f}"]
    return lines + ([f"video: {m['video']}"] if "video" in m else [])


def convergence_lines(report: dict) -> list[str]:
    """A convergence report, as printed."""
    return [f"{report['skill']}: convergence of the soft Q-function (gamma {report['gamma']}, alpha {report['alpha']})",
            *("  " + line for line in format_report(report)),
            f"recorded in {report['skill']}/manifest.json under 'convergence'"]


if __name__ == "__main__":
    sys.exit(main())
