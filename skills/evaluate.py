"""Evaluate a saved skill:  python -m skills.evaluate SKILL [--task T] [--episodes N] [--render] [--json PATH]

Prints success rate, mean return (and each reward term), collision rate and episode length
over seeded episodes. ``--task`` runs the skill on another task of its family (for example
the ``reach`` skill on ``reach+avoid``). ``--render`` writes an mp4 and prints its path.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import envs
from envs.core import UnknownNameError
from envs.video import VideoWriter, draw_text, overlay_lines

from .library import SkillError
from .skill import load
from .trainer import EVAL_SEED


RANDOM = "random"  # the uniform random policy, as a baseline


def evaluate_random(task: str | None, episodes: int, seed: int, render: str | Path | None) -> dict:
    """The uniform random policy on ``task`` (seeded), for baselines such as avoid's collision rate."""
    from .evaluation import run_episodes

    if task is None:
        raise ValueError("the random baseline needs --task")
    env = envs.make(task)
    env.action_space.seed(seed)
    metrics = run_episodes(env, lambda o: env.action_space.sample(), episodes, seed)
    env.close()
    return metrics | {"skill": RANDOM, "task": task, "deterministic": False, "seed": seed}


def evaluate_skill(skill_name: str, task: str | None = None, episodes: int = 100, seed: int = EVAL_SEED,
                   deterministic: bool = True, render: str | Path | None = None, library: str | None = None) -> dict:
    """Metrics of ``skill_name`` on ``task`` (default: its own); optionally an mp4 at ``render``."""
    from .evaluation import run_episodes

    if skill_name == RANDOM:
        return evaluate_random(task, episodes, seed, render)
    torch.manual_seed(seed)  # sampler draws come from torch's global generator
    skill = load(skill_name, library)
    task_name = task or skill.task
    if envs.get_task(task_name).family.name != skill.manifest["family"]:
        raise ValueError(f"skill {skill.name!r} is for the {skill.manifest['family']!r} family; "
                         f"task {task_name!r} is not in it")
    env = envs.make(task_name, render_mode="rgb_array" if render else None)
    video = VideoWriter(render, env.metadata.get("render_fps", 25)) if render else None
    step_count = [0]

    def record(e, info):
        step_count[0] += 1
        video.add(draw_text(e.render(), overlay_lines(info, step_count[0])))

    metrics = run_episodes(env, lambda o: skill.act(o, deterministic), episodes, seed,
                           on_step=record if video else None)
    env.close()
    metrics |= {"skill": str(skill.path), "task": task_name, "deterministic": deterministic, "seed": seed}
    if video:
        metrics["video"] = str(video.close())
    return metrics


def plot_trajectories(skill_name: str, library: str | None, episodes: int, seed: int, deterministic: bool,
                      path: str | Path) -> Path:
    """Trajectories of a multigoal skill over the four goals (PNG), with per-goal counts."""
    from .plots import multigoal_rollouts, plot_multigoal

    torch.manual_seed(seed)
    skill = load(skill_name, library)
    if skill.manifest["family"] != "multigoal":
        raise ValueError("--plot draws multigoal trajectories; this skill is not a multigoal skill")
    paths, goals = multigoal_rollouts(lambda o: skill.act(o, deterministic), episodes, seed)
    mode = "best of 32 samples" if deterministic else "sampled actions"
    plot_multigoal(paths, goals, path, f"{skill.name}: {episodes} episodes, {mode}")
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skills.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("skill", help="skill name (newest version), name@vN, a skill directory, or 'random' "
                        "(uniform random actions; needs --task)")
    parser.add_argument("--task", help="task to run it on (default: the skill's own)")
    parser.add_argument("--episodes", type=int, default=100, help="episodes (default: 100)")
    parser.add_argument("--seed", type=int, default=EVAL_SEED, help=f"first episode seed (default: {EVAL_SEED})")
    parser.add_argument("--stochastic", action="store_true", help="act with one sampler draw (the max-ent "
                        "policy) instead of the best of 32 sampled actions under Q")
    parser.add_argument("--render", nargs="?", const="auto", metavar="MP4",
                        help="write a video (default path: runs/eval/<skill>-<task>.mp4)")
    parser.add_argument("--library", help="library directory (default: trained/)")
    parser.add_argument("--json", metavar="PATH", help="also write the metrics as JSON")
    parser.add_argument("--plot", metavar="PNG", help="multigoal skills: plot the evaluated trajectories and the "
                        "goal each reached")
    args = parser.parse_args(argv)
    render = args.render
    if render == "auto":
        render = Path("runs/eval") / f"{Path(args.skill).name.replace('@', '-')}-{args.task or 'own'}.mp4"
    try:
        m = evaluate_skill(args.skill, args.task, args.episodes, args.seed, not args.stochastic, render, args.library)
    except (UnknownNameError, SkillError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    mode = ("uniform random actions" if m["skill"] == RANDOM else "deterministic: best of 32 sampled actions"
            if m["deterministic"] else "stochastic: sampler draws")
    print(f"{m['skill']} on {m['task']} ({m['episodes']} episodes from seed {m['seed']}, {mode}):")
    print(f"  success rate     {m['success_rate']:.3f}")
    print(f"  return (mean)    {m['return_mean']:.3f} ± {m['return_std']:.3f}")
    for k, v in m["term_returns"].items():
        print(f"    {k:14s} {v:.3f}")
    print(f"  collision rate   {m['collision_rate']:.3f}")
    print(f"  episode length   {m['episode_length']:.1f}")
    if "video" in m:
        print(f"video: {m['video']}")
    if args.plot:
        print(f"plot: {plot_trajectories(args.skill, args.library, args.episodes, args.seed, not args.stochastic, args.plot)}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(m, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
