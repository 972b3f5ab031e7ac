"""Train a skill with Soft Q-learning:  python -m skills.train TASK [options]

Every run writes a new version to the library (``<library>/<task>/v<N>``), so nothing that
was saved before is ever overwritten; ``compose.run`` and ``skills.load`` pick the newest
complete version by name. Bare ``python -m skills.train reach`` uses tuned defaults.

``--seeds 0-4`` trains several seeds in one process (``skills.training.seeds``): one stacked SQL update for
all of them, one env process each, one library version each (its seed in the manifest).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import envs
from envs.core import UnknownNameError

from .cli import positive_int, seed_list
from .evaluation.diagnostics import format_report
from .library import SkillError
from .sql import SQLConfig, TrainingDiverged
from .training.defaults import sql_config, train_config
from .training.seeds import MultiSeedTrainer
from .training.trainer import TrainConfig, Trainer, TrainResult


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m skills.train", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", help=f"task to train: {', '.join(envs.TASKS)}")
    parser.add_argument("--steps", type=positive_int, help="environment steps (default: tuned per task)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    seeds.add_argument("--seeds", type=seed_list, help="train several seeds in one process, each saved as its own "
                       "version: N (seeds 0..N-1), a list 0,1,2 or a range 3-7")
    parser.add_argument("--alpha", type=float, help="temperature (default: tuned per task family; "
                        "skills you want to compose must share it)")
    parser.add_argument("--out", help="library directory to write into (default: trained/ or "
                        "$COMPOSABLE_SKILLS_LIBRARY)")
    parser.add_argument("--resume", metavar="SKILL", nargs="?", const="", help="continue training a saved skill "
                        "(name, name@vN or path); the result is saved as a new version. With --seeds: no SKILL; each "
                        "seed continues its newest saved version")
    parser.add_argument("--eval-interval", type=positive_int, help="evaluate and checkpoint every N steps")
    parser.add_argument("--eval-episodes", type=positive_int, help="episodes per periodic evaluation")
    parser.add_argument("--final-eval-episodes", type=positive_int, help="episodes of the final evaluation (default 100)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--no-overlap", action="store_true", help="step the env and update in sequence "
                        "(default: the env steps in a child process while the update runs; same results)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
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

    def configs() -> tuple[str, SQLConfig, TrainConfig]:
        task = envs.get_task(args.task)
        sql = sql_config(task.name, task.family.name, alpha=args.alpha)
        run = train_config(task.name, steps=args.steps, seed=args.seed, eval_interval=args.eval_interval,
                           eval_episodes=args.eval_episodes, final_eval_episodes=args.final_eval_episodes,
                           device=args.device, progress=not args.no_progress,
                           overlap_env_step=not args.no_overlap, convergence=not args.no_convergence)
        return task.name, sql, run

    if args.seeds is not None:
        def make_seeds() -> MultiSeedTrainer:
            task, sql, run = configs()
            return MultiSeedTrainer(task, sql, run, args.seeds, out=args.out, resume=args.resume == "")

        return run_training(make_seeds, lambda t: f"training {args.task!r} for {t.run.steps} steps, seeds {t.seeds} "
                                                  f"stacked (alpha={t.sql.alpha}) -> " + ", ".join(map(str, t.paths)))

    def make_trainer() -> Trainer:
        task, sql, run = configs()
        return Trainer(task, sql, run, out=args.out, resume=args.resume)

    return run_training(make_trainer, lambda t: f"training {t.task.name!r} for {t.run.steps} steps "
                                                 f"(alpha={t.sql.alpha}, seed={t.run.seed}) -> {t.path}")


def run_training(make_trainer: Callable[[], Trainer | MultiSeedTrainer], headline: Callable[[Trainer], str],
                 summary: Callable[[TrainResult], list[str]] | None = None) -> int:
    """Build a trainer (or a ``MultiSeedTrainer``), train, and report as the training CLIs do; returns the exit code.

    2: bad input (unknown names, bad skills or settings); 3: training diverged; 130: Ctrl-C (the last
    checkpoint is kept with status 'training'; earlier versions are untouched). ``summary`` adds lines
    after the saved path.
    """
    trainer = None
    try:
        trainer = make_trainer()
        print(headline(trainer))
        result = trainer.train()
    except (UnknownNameError, SkillError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"error: training diverged: {err}", file=sys.stderr)
        return 3
    except OSError as err:  # a full disk, a read-only library, an --out that is a file
        print(f"error: cannot write the skill: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        members = getattr(trainer, "trainers", [trainer] if trainer is not None else [])
        paths = [str(t.path) for t in members if t.path.exists()]
        if not paths:
            kept = "no checkpoint had been written yet"
        elif isinstance(trainer, MultiSeedTrainer):
            kept = f"each seed's last checkpoint is in {', '.join(paths)} (status 'training'; --resume continues them)"
        else:
            kept = f"its last checkpoint is in {paths[0]} (status 'training')"
        print(f"\ninterrupted: {kept}; earlier versions are untouched", file=sys.stderr)
        return 130
    if isinstance(trainer, MultiSeedTrainer):
        print_seeds(trainer, result)
        return 0
    print(f"saved {result.path}  ({result.env_steps} steps, {result.wall_time_s:.0f} s)")
    for line in summary(result) if summary is not None else []:
        print(line)
    for mode, m in result.metrics.items():
        print(f"final evaluation, {mode:13s} ({m['episodes']} episodes): success {m['success_rate']:.2f}, "
              f"return {m['return_mean']:.2f}, collisions {m['collision_rate']:.2f}")
    if trainer.convergence_record is not None:
        print("convergence of the soft Q-function (Monte Carlo soft returns, skills.evaluation.diagnostics):")
        print("\n".join("  " + line for line in format_report(trainer.convergence_record)))
    return 0


def print_seeds(trainer: MultiSeedTrainer, results: list[TrainResult]) -> None:
    """One line per seed: where it was saved and its final evaluations; then each seed's convergence report."""
    print(f"saved {len(results)} seeds ({results[0].env_steps} steps each, {results[0].wall_time_s:.0f} s in all):")
    for t, r in zip(trainer.trainers, results):
        stoch, det = r.metrics["stochastic"], r.metrics["deterministic"]
        print(f"  seed {t.run.seed}: {r.path}  success {stoch['success_rate']:.2f} (deterministic {det['success_rate']:.2f}), "
              f"return {stoch['return_mean']:.2f}, collisions {stoch['collision_rate']:.2f}")
    for t in trainer.trainers:
        if t.convergence_record is not None:
            print(f"convergence of seed {t.run.seed} (Monte Carlo soft returns, skills.evaluation.diagnostics):")
            print("\n".join("  " + line for line in format_report(t.convergence_record)))

if __name__ == "__main__":
    sys.exit(main())
