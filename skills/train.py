"""Train a skill with Soft Q-learning:  python -m skills.train TASK [options]

Every run writes a new version to the library (``<library>/<task>/v<N>``), so nothing that
was saved before is ever overwritten; ``compose.run`` and ``skills.load`` pick the newest
complete version by name. Bare ``python -m skills.train reach`` uses tuned defaults.

``--seeds 0-4`` trains several seeds in one process (``skills.training.loop``): one stacked SQL update for
all of them, one env process each, one library version each (its seed in the manifest).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import envs
from envs.cli import add_task_arguments, load_task_modules, run_command

from .cli import non_negative_int, positive_float, positive_int, seed_list, sql_setting
from .evaluation.diagnostics import format_report
from .evaluation.episodes import collision_text
from .library import registered_task
from .sql import TrainingDiverged
from .training import MultiSeedTrainer, TrainConfig, Trainer, TrainResult, newest_of_seed, rest_of_budget
from .training.defaults import sql_config, train_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m skills.train", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", help=f"task to train: {', '.join(envs.TASKS)}, a task of yours (--tasks), or a "
                        "combination of registered tasks such as reach+stay_low (their mean)")
    add_task_arguments(parser)
    parser.add_argument("--steps", type=positive_int, help="environment steps (default: tuned per task)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    seeds.add_argument("--seeds", type=seed_list, help="train several seeds in one process, each saved as its own "
                       "version: N (seeds 0..N-1), or seeds and ranges: 0,1,2 or 3-7 or 0,1,3-9")
    parser.add_argument("--alpha", type=positive_float, help="temperature (default: tuned per task family; "
                        "skills you want to compose must share it)")
    parser.add_argument("--set", metavar="NAME=VALUE", type=sql_setting, action="append", default=[],
                        help="change one SQL hyperparameter of a fresh run from the task's defaults, e.g. --set "
                        "random_episodes=0.3 or --set hidden=256,256 (repeatable; recorded in the manifest's hyperparameters)")
    parser.add_argument("--out", help="library directory to write into (default: trained/ or "
                        "$COMPOSABLE_SKILLS_LIBRARY)")
    parser.add_argument("--resume", metavar="SKILL", nargs="?", const="", help="continue training a saved skill "
                        "(name, name@vN or path); the result is saved as a new version. With --seeds: no SKILL; each "
                        "seed continues its newest saved version. Without --steps, an interrupted run (status "
                        "'training') runs the rest of its budget and a finished skill the task's budget more; --steps N "
                        "is always N more")
    parser.add_argument("--eval-interval", type=positive_int, help=f"evaluate and checkpoint every N steps (default "
                        f"{TrainConfig.eval_interval}, or a fifth of the budget when that is less)")
    parser.add_argument("--eval-episodes", type=positive_int,
                        help=f"episodes per periodic evaluation (default {TrainConfig.eval_episodes})")
    parser.add_argument("--final-eval-episodes", type=positive_int,
                        help=f"episodes of the final evaluation (default {TrainConfig.final_eval_episodes})")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--no-overlap", action="store_true", help="step the env and update in sequence "
                        "(default: the env steps in a child process while the update runs; same results)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--polish", type=non_negative_int, default=0, metavar="N",
                        help="after the last step, N updates of skills.polish's settings on the whole replay buffer "
                        "(no new env samples; see python -m skills.polish --help); default 0: none")
    parser.add_argument("--no-convergence", action="store_true", help="skip the final convergence report (Monte Carlo "
                        "soft returns against V(s0), Bellman residuals; about 30 s on the arm tasks)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume == "" and args.seeds is None:
        parser.error("--resume needs the skill to continue (name, name@vN or path), or --seeds")
    if args.resume and args.seeds is not None:
        parser.error(f"--resume {args.resume} with --seeds: give --resume alone; each seed continues its newest version")
    if args.resume is not None and args.set:
        parser.error("--set changes a fresh run's settings; a resumed skill keeps the ones it was trained with")
    settings = dict(args.set)
    if len(settings) < len(args.set):
        twice = sorted({k for k, _ in args.set if [n for n, _ in args.set].count(k) > 1})
        parser.error(f"--set gives {', '.join(twice)} more than once")

    def make_trainer() -> MultiSeedTrainer:
        load_task_modules(args.tasks)
        task = registered_task(args.task, args.out)
        sql = sql_config(task.name, task.family.name, alpha=args.alpha, **settings)
        run = train_config(task.name, steps=args.steps, seed=args.seed, eval_interval=args.eval_interval,
                           eval_episodes=args.eval_episodes, final_eval_episodes=args.final_eval_episodes,
                           device=args.device, progress=not args.no_progress,
                           overlap_env_step=not args.no_overlap, convergence=not args.no_convergence,
                           polish_updates=args.polish)
        if args.resume is None:
            sources = []
        else:  # each seed's newest version, found once; an interrupted one runs the rest of its budget
            sources = [args.resume] if args.seeds is None else [newest_of_seed(task.name, s, args.out) for s in args.seeds]
            run = rest_of_budget(run, sources, args.out) if args.steps is None else run
        if args.seeds is not None:
            resume = dict(zip(args.seeds, sources, strict=True)) if sources else None
            return MultiSeedTrainer(task.name, sql, run, args.seeds, out=args.out, resume=resume)
        return Trainer(task.name, sql, run, out=args.out, resume=args.resume)

    return run_training(make_trainer, headline)


def headline(trainer: MultiSeedTrainer) -> str:
    """The line a training run starts with: what, how long, where to."""
    first = trainer.trainers[0]
    seeds = f"seed={first.run.seed}" if len(trainer.seeds) == 1 else f"seeds {trainer.seeds} stacked"
    where = ", ".join(map(str, trainer.paths))
    steps = f"{first.run.steps} steps" + (f" from step {first.start_steps}" if first.start_steps else "")
    line = f"training {first.task.name!r} for {steps} ({seeds}, alpha={first.sql.alpha}) -> {where}"
    if not first.start_steps and first.run.steps <= first.sql.warmup_steps:
        line += (f"\nnote: the budget ({first.run.steps} steps) ends within the warm-up ({first.sql.warmup_steps} "
                 "random steps before the first update): no update is made, and the skill is saved as initialised "
                 "(a smoke run; --set warmup_steps=N shortens the warm-up)")
    return line


def run_training(make_trainer: Callable[[], MultiSeedTrainer], headline: Callable[[MultiSeedTrainer], str],
                 summary: Callable[[TrainResult], list[str]] | None = None, resume_command: str | None = None) -> int:
    """Build a trainer (one seed or several), train, and report as the training CLIs do; returns the exit code.

    2: bad input (unknown names, bad skills or settings); 3: training diverged; 130: Ctrl-C (the last
    checkpoint is kept with status 'training'; earlier versions are untouched, and the message says how to resume:
    ``resume_command`` followed by ``--resume <name>@v<N>``); 1: cannot write. ``summary`` adds lines after a single
    run's saved path.
    """
    made: list[MultiSeedTrainer] = []

    def body() -> int:
        made.append(make_trainer())
        print(headline(made[0]))
        results = made[0].train()
        print_results(made[0], results if isinstance(results, list) else [results], summary)
        return 0

    def diverged(err: BaseException) -> int:
        print(f"error: training diverged: {err}", file=sys.stderr)
        return 3

    def interrupted(err: BaseException) -> int:
        print(f"\ninterrupted: {checkpoints_kept(made[0] if made else None, resume_command)}; earlier versions are "
              "untouched", file=sys.stderr)
        return 130

    return run_command(body, {TrainingDiverged: diverged, KeyboardInterrupt: interrupted})


def checkpoints_kept(trainer: MultiSeedTrainer | None, resume_command: str | None = None) -> str:
    """Where an interrupted run's checkpoints are, and how to continue: ``resume_command --resume <name>@v<N>``
    (default ``python -m skills.train <task>``)."""
    kept = [t.path for t in (trainer.trainers if trainer is not None else []) if t.path.exists()]
    if not kept:
        return "no checkpoint had been written yet"
    assert trainer is not None  # it wrote the paths
    paths = [str(p) for p in kept]
    if len(trainer.trainers) > 1:
        return f"each seed's last checkpoint is in {', '.join(paths)} (status 'training'; --resume continues them)"
    command = resume_command or f"python -m skills.train {trainer.trainers[0].task.name}"
    return (f"its last checkpoint is in {paths[0]} (status 'training'); continue it with "
            f"{command} --resume {kept[0].parent.name}@{kept[0].name}")


def print_results(trainer: MultiSeedTrainer, results: list[TrainResult],
                  summary: Callable[[TrainResult], list[str]] | None = None) -> None:
    """Where each seed was saved, its final evaluations, then each seed's convergence report."""
    if len(results) > 1:
        print(f"saved {len(results)} seeds ({results[0].env_steps} steps each, {results[0].wall_time_s:.0f} s in all):")
    for t, r in zip(trainer.trainers, results, strict=False):
        stoch, det = r.metrics["stochastic"], r.metrics["deterministic"]
        if len(results) > 1:
            print(f"  seed {t.run.seed}: {r.path}  success {stoch['success_rate']:.2f} (deterministic "
                  f"{det['success_rate']:.2f}), return {stoch['return_mean']:.2f}, collisions {collision_text(stoch)}")
            continue
        print(f"saved {r.path}  ({r.env_steps} steps, {r.wall_time_s:.0f} s)")
        for line in summary(r) if summary is not None else []:
            print(line)
        for mode, m in r.metrics.items():
            print(f"final evaluation, {mode:13s} ({m['episodes']} episodes): success {m['success_rate']:.2f}, "
                  f"return {m['return_mean']:.2f}, collisions {collision_text(m)}")
    for t in trainer.trainers:
        if t.convergence_record is not None:
            label = "" if len(results) == 1 else f" of seed {t.run.seed}"
            print(f"convergence{label} of the soft Q-function (Monte Carlo soft returns, skills.evaluation.diagnostics):")
            print("\n".join("  " + line for line in format_report(t.convergence_record)))


if __name__ == "__main__":
    sys.exit(main())
