"""Train a skill with Soft Q-learning:  python -m skills.train TASK [options]

Every run writes a new version to the library (``<library>/<task>/v<N>``), so nothing that
was saved before is ever overwritten; ``compose.run`` and ``skills.load`` pick the newest
complete version by name. Bare ``python -m skills.train reach`` uses tuned defaults.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import envs
from envs.core import UnknownNameError

from .agent import TrainingDiverged
from .cli import positive_int
from .defaults import sql_config, train_config
from .diagnostics import format_report
from .library import SkillError
from .trainer import Trainer, TrainResult


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m skills.train", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", help=f"task to train: {', '.join(envs.TASKS)}")
    parser.add_argument("--steps", type=positive_int, help="environment steps (default: tuned per task)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--alpha", type=float, help="temperature (default: tuned per task family; "
                        "skills you want to compose must share it)")
    parser.add_argument("--out", help="library directory to write into (default: trained/ or "
                        "$COMPOSABLE_SKILLS_LIBRARY)")
    parser.add_argument("--resume", metavar="SKILL", help="continue training a saved skill (name, "
                        "name@vN or path); the result is saved as a new version")
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
    args = build_parser().parse_args(argv)
    def make_trainer() -> Trainer:
        task = envs.get_task(args.task)
        sql = sql_config(task.name, task.family.name, alpha=args.alpha)
        run = train_config(task.name, steps=args.steps, seed=args.seed, eval_interval=args.eval_interval,
                           eval_episodes=args.eval_episodes, final_eval_episodes=args.final_eval_episodes,
                           device=args.device, progress=not args.no_progress,
                           overlap_env_step=not args.no_overlap, convergence=not args.no_convergence)
        return Trainer(task.name, sql, run, out=args.out, resume=args.resume)

    return run_training(make_trainer, lambda t: f"training {t.task.name!r} for {t.run.steps} steps "
                                                 f"(alpha={t.sql.alpha}, seed={t.run.seed}) -> {t.path}")


def run_training(make_trainer: Callable[[], Trainer], headline: Callable[[Trainer], str],
                 summary: Callable[[TrainResult], list[str]] | None = None) -> int:
    """Build a trainer, train, and report as the training CLIs do; returns the exit code.

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
        kept = f"its last checkpoint is in {trainer.path} (status 'training')" \
            if trainer is not None and trainer.path.exists() else "no checkpoint had been written yet"
        print(f"\ninterrupted: {kept}; earlier versions are untouched", file=sys.stderr)
        return 130
    print(f"saved {result.path}  ({result.env_steps} steps, {result.wall_time_s:.0f} s)")
    for line in summary(result) if summary is not None else []:
        print(line)
    for mode, m in result.metrics.items():
        print(f"final evaluation, {mode:13s} ({m['episodes']} episodes): success {m['success_rate']:.2f}, "
              f"return {m['return_mean']:.2f}, collisions {m['collision_rate']:.2f}")
    if trainer.convergence_record is not None:
        print("convergence of the soft Q-function (Monte Carlo soft returns, skills.diagnostics):")
        print("\n".join("  " + line for line in format_report(trainer.convergence_record)))
    return 0

if __name__ == "__main__":
    sys.exit(main())
