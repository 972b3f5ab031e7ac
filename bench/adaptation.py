"""Adapted composition against joint training from scratch, same seeds and evaluation protocol:

    python -m bench.adaptation [--spec reach+avoid] [--seeds 0,1,2] [--joint-steps 40000] [--adapt-steps 8000]

For each seed, trains the combined task from scratch (``skills.train``'s tuned settings) and adapts the
composition of the library's constituents (``compose.adapt``: ``Q = Q_w + R``, ``R = 0`` at the start),
both into a temporary library, both evaluated every ``--eval-interval`` steps on the same seeded
episodes (seeds 10000 onward), stochastic (the max-ent policy) and deterministic (best of 32 under Q).

Steps to 95%: the joint run's final return ``R_end`` (mean of its last three evaluations) and its
untrained return ``R_0`` define the threshold ``R_0 + 0.95 (R_end - R_0)``; each run's figure is the
first evaluation at or above it. Because the zero-shot composition may start at or near that threshold, a stricter
one is reported beside it: at least ``3`` standard errors of one evaluation above the zero-shot return (``strict``).
The area under each curve over the adaptation's steps (``auc``: the mean of ``(R - R_0) / (R_end - R_0)`` over the
evaluations up to the adaptation's last step; 1 is the joint's final level) compares the whole curves, not one
crossing. Sample counts are given with and without the constituents' own training steps (which the composition
reuses, and which a user who has them does not pay again). The dip is the zero-shot composition's return minus the
lowest of the adapted run's next three evaluations, against the standard error of one evaluation. Writes JSON
and a PNG of both learning curves (docs/compose.md). The constituents are the library's (one seed);
the seeds vary the trainings.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from envs.cli import run_command
from envs.files import read_bounded
from skills.cli import at_least

from .cli import write_json

SAVED_LIMIT = 64 * 2**20  # bytes of an earlier --json read back with --from-json

MODES = {"stochastic": "return_mean", "deterministic": "det_return_mean"}
STD = {"stochastic": "return_std", "deterministic": "det_return_std"}
THRESHOLD = 0.95
STRICT_SE = 3.0  # the strict threshold: this many standard errors of one evaluation above the zero-shot return


def trial(kind: str, spec: str, seed: int, steps: int, eval_interval: int, eval_episodes: int,
          library: str | None) -> dict:
    """One training run (``kind`` "joint" or "adapted") into a temporary library: its evaluation history."""
    import torch

    import compose
    import envs
    from compose.adapt import adapted_trainer
    from skills.training import Trainer
    from skills.training.defaults import sql_config, train_config

    torch.set_num_threads(1)
    overrides: dict[str, Any] = {"eval_interval": eval_interval, "eval_episodes": eval_episodes, "final_eval_episodes": 1,
                                 "progress": False, "convergence": False, "overlap_env_step": False}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        if kind == "joint":
            task = envs.get_task(compose.load(spec, library=library).task.name)
            run = replace(train_config(task.name, steps=steps, seed=seed, **overrides), deterministic_curve=True)
            trainer = Trainer(task.name, sql_config(task.name, task.family.name), run, out=out)
        else:
            composition = compose.load(spec, library=library, seed=seed)
            composition.build(progress=False)
            trainer = adapted_trainer(composition, steps=steps, seed=seed, out=out, **overrides)
        result = trainer.train()
    return {"kind": kind, "seed": seed, "steps": steps, "wall_time_s": round(time.perf_counter() - start, 1),
            "history": result.history}


def steps_to(history: list[dict], key: str, threshold: float) -> int | None:
    """Env steps of the first evaluation whose ``key`` is at or above ``threshold`` (None: never)."""
    return next((h["env_steps"] for h in history if h[key] >= threshold), None)


def auc(history: list[dict], key: str, start: float, end: float, last_step: int) -> float:
    """Mean of ``(R - start) / (end - start)`` over the evaluations at or before ``last_step``."""
    values = [(h[key] - start) / (end - start) for h in history if h["env_steps"] <= last_step]
    return float(np.mean(values))


def summarise(runs: list[dict], eval_episodes: int, constituent_steps: int | None = None) -> dict:
    """Per seed and mode: threshold, steps to it (joint, adapted), their ratio, the strict threshold and steps to it,
    the area under each curve over the adaptation's steps, zero-shot return and dip. ``constituent_steps``: the
    environment steps the constituents were trained with (counted in ``ratio_with_constituents``)."""
    seeds = sorted({r["seed"] for r in runs})
    by = {(r["kind"], r["seed"]): r["history"] for r in runs}
    out: dict = {"per_seed": [], "modes": {}}
    for mode, key in MODES.items():
        rows = []
        for seed in seeds:
            joint, adapted = by[("joint", seed)], by[("adapted", seed)]
            r0, r_end = joint[0][key], float(np.mean([h[key] for h in joint[-3:]]))
            threshold = r0 + THRESHOLD * (r_end - r0)
            j_steps, a_steps = steps_to(joint, key, threshold), steps_to(adapted, key, threshold)
            zero_shot = adapted[0][key]
            dip = zero_shot - min(h[key] for h in adapted[1:4])
            last = adapted[-1]["env_steps"]
            row = {"seed": seed, "mode": mode, "joint_start": r0, "joint_final": r_end, "threshold": threshold,
                   "joint_steps": j_steps, "adapted_steps": a_steps,
                   "ratio": (a_steps / j_steps) if (a_steps is not None and j_steps) else None,
                   "zero_shot": zero_shot, "adapted_final": float(np.mean([h[key] for h in adapted[-3:]])),
                   "dip": dip, "auc_adapted": auc(adapted, key, r0, r_end, last),
                   "auc_joint": auc(joint, key, r0, r_end, last), "auc_steps": last}
            if STD[mode] in adapted[0]:  # runs before det_return_std was logged lack it
                se = adapted[0][STD[mode]] / np.sqrt(eval_episodes)
                strict = max(threshold, zero_shot + STRICT_SE * se)
                js, adapted_strict = steps_to(joint, key, strict), steps_to(adapted, key, strict)
                row |= {"eval_se": se, "dip_beyond_noise": bool(dip > 2 * se), "strict_threshold": strict,
                        "joint_steps_strict": js, "adapted_steps_strict": adapted_strict}
            if constituent_steps is not None and a_steps is not None and j_steps:
                row["ratio_with_constituents"] = (a_steps + constituent_steps) / j_steps
            rows.append(row)
        out["per_seed"] += rows
        ratios = [r["ratio"] for r in rows]
        out["modes"][mode] = {
            "ratio_mean": float(np.mean(ratios)) if None not in ratios else None,
            "ratio_max": max(ratios) if None not in ratios else None,
            "goal_met": bool(None not in ratios and max(ratios) <= 0.2),
            "joint_steps": [r["joint_steps"] for r in rows], "adapted_steps": [r["adapted_steps"] for r in rows],
            "zero_shot_mean": float(np.mean([r["zero_shot"] for r in rows])),
            "joint_final_mean": float(np.mean([r["joint_final"] for r in rows])),
            "adapted_final_mean": float(np.mean([r["adapted_final"] for r in rows])),
            "dip_max": float(max(r["dip"] for r in rows)),
            "auc_adapted_mean": float(np.mean([r["auc_adapted"] for r in rows])),
            "auc_joint_mean": float(np.mean([r["auc_joint"] for r in rows])),
            "adapted_steps_strict": [r.get("adapted_steps_strict") for r in rows],
            "joint_steps_strict": [r.get("joint_steps_strict") for r in rows],
            "constituent_steps": constituent_steps,
        }
    out["wall_time_s"] = {kind: [r["wall_time_s"] for r in runs if r["kind"] == kind] for kind in ("joint", "adapted")}
    return out


def plot(runs: list[dict], summary: dict, path: Path, spec: str) -> None:
    from skills.evaluation.plots import _pyplot, save_figure

    plt = _pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    colours = {"joint": "tab:gray", "adapted": "tab:blue"}
    labels = {"joint": "joint SQL from scratch", "adapted": "adapted from the composition"}
    for ax, (mode, key) in zip(axes, MODES.items(), strict=False):
        for kind in ("joint", "adapted"):
            mine = [r for r in runs if r["kind"] == kind]
            steps = [h["env_steps"] for h in mine[0]["history"]]
            curves = np.array([[h[key] for h in r["history"]] for r in mine])
            for c in curves:
                ax.plot(steps, c, color=colours[kind], alpha=0.25, lw=0.8)
            ax.plot(steps, curves.mean(0), color=colours[kind], lw=2, label=f"{labels[kind]} (mean of {len(mine)} seeds)")
        thresholds = [r["threshold"] for r in summary["per_seed"] if r["mode"] == mode]
        ax.axhline(np.mean(thresholds), color="k", ls="--", lw=1, label="95% of the joint's final return")
        m = summary["modes"][mode]
        ax.set_title(f"{spec}, {mode} policy\nsteps to 95%: adapted {m['adapted_steps']}, joint {m['joint_steps']}",
                     fontsize=9)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("episode return (combined task)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=110)


def format_summary(summary: dict) -> list[str]:
    lines = ["seed  mode           threshold  joint steps  adapted steps  ratio  zero-shot  joint end  adapted end   dip"]
    for r in summary["per_seed"]:
        ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else "  -  "
        lines.append(f"{r['seed']:>4}  {r['mode']:13s}  {r['threshold']:9.2f}  {str(r['joint_steps']):>11}  "
                     f"{str(r['adapted_steps']):>13}  {ratio}  {r['zero_shot']:9.2f}  {r['joint_final']:9.2f}  "
                     f"{r['adapted_final']:11.2f}  {r['dip']:+.2f}"
                     + (f" (SE {r['eval_se']:.2f})" if "eval_se" in r else ""))
    for mode, m in summary["modes"].items():
        lines.append(f"{mode}: adapted/joint steps to 95%: mean {m['ratio_mean']}, max {m['ratio_max']} "
                     f"(goal <= 0.2: {'met' if m['goal_met'] else 'not met'})")
        lines.append(f"  strict threshold (>= {STRICT_SE:g} SE above zero-shot): adapted steps {m['adapted_steps_strict']}, "
                     f"joint steps {m['joint_steps_strict']}")
        lines.append(f"  area under the curve over the adaptation's steps (1 = the joint's final level): adapted "
                     f"{m['auc_adapted_mean']:.2f}, joint {m['auc_joint_mean']:.2f}")
        if m["constituent_steps"] is not None:
            ratios = [r.get("ratio_with_constituents") for r in summary["per_seed"] if r["mode"] == mode]
            lines.append(f"  counting the constituents' {m['constituent_steps']} training steps: adapted/joint "
                         f"{', '.join('-' if x is None else f'{x:.2f}' for x in ratios)}")
    return lines


def constituents_env_steps(spec: str, library: str | None) -> int:
    """The environment steps the composition's constituents were trained with."""
    import compose

    return int(sum(p.info.env_steps for p in compose.load(spec, library=library).parts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.adaptation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="reach+avoid", help="composition with a registered combined task")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default 0,1,2)")
    parser.add_argument("--joint-steps", type=at_least(1), default=40_000, help="joint training steps (default 40000)")
    parser.add_argument("--adapt-steps", type=at_least(1), default=8_000, help="adaptation steps (default 8000)")
    parser.add_argument("--eval-interval", type=at_least(1), default=1_000, help="steps between evaluations (default 1000)")
    parser.add_argument("--eval-episodes", type=at_least(1), default=30, help="episodes per evaluation and mode (default 30)")
    parser.add_argument("--library", help="library holding the constituents (default: trained/)")
    parser.add_argument("--workers", type=at_least(1), default=2, help="trainings run at once (default 2: one per core)")
    parser.add_argument("--json", metavar="PATH", help="write runs and summary as JSON")
    parser.add_argument("--plot", metavar="PNG", help="write both learning curves as a PNG")
    parser.add_argument("--from-json", metavar="PATH", help="summarise and plot the runs of an earlier --json "
                        "instead of training")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    return run_command(lambda: summarise_saved(args) if args.from_json else train_and_summarise(args, seeds))


def read_saved(path: str) -> dict:
    """An earlier ``--json``: a regular file of at most ``SAVED_LIMIT`` bytes with its ``settings`` and ``runs``."""
    try:
        saved = json.loads(read_bounded(path, SAVED_LIMIT, what="--from-json file"))
        spec, episodes, runs = saved["settings"]["spec"], saved["settings"]["eval_episodes"], saved["runs"]
    except OSError as err:
        raise ValueError(f"--from-json: cannot read {path} ({err.strerror or err})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"--from-json: {path} is not a bench.adaptation --json record ({err!r})") from None
    if not isinstance(spec, str) or not isinstance(episodes, int) or not isinstance(runs, list):
        raise ValueError(f"--from-json: {path} is not a bench.adaptation --json record (settings or runs malformed)")
    return saved


def summarise_saved(args: argparse.Namespace) -> int:
    """Summarise (and plot) the runs of an earlier ``--json`` instead of training."""
    saved = read_saved(args.from_json)
    summary = summarise(saved["runs"], saved["settings"]["eval_episodes"],
                        constituents_env_steps(saved["settings"]["spec"], args.library))
    print("\n".join(format_summary(summary)))
    if args.plot:
        plot(saved["runs"], summary, Path(args.plot), saved["settings"]["spec"])
    return 0


def train_and_summarise(args: argparse.Namespace, seeds: list[int]) -> int:
    """Train the joint skill and adapt the composition on every seed, then summarise, write and plot."""
    constituents = constituents_env_steps(args.spec, args.library)  # the skills and the library checked before training
    jobs = [(kind, args.spec, seed, args.joint_steps if kind == "joint" else args.adapt_steps, args.eval_interval,
             args.eval_episodes, args.library) for seed in seeds for kind in ("joint", "adapted")]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        runs = list(pool.map(trial, *zip(*jobs, strict=False)))
    summary = summarise(runs, args.eval_episodes, constituents)
    print("\n".join(format_summary(summary)))
    settings = {k: getattr(args, k) for k in ("spec", "seeds", "joint_steps", "adapt_steps", "eval_interval",
                                              "eval_episodes")}
    if args.json:
        write_json(args.json, {"settings": settings, "summary": summary, "runs": runs}, indent=1)
    if args.plot:
        plot(runs, summary, Path(args.plot), args.spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
