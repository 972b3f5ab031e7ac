"""Improve a composition with experience:  python -m compose.adapt SPEC [--steps N] [--out LIB]

Soft Q-learning on the combined task's reward ``r_w = sum_i w_i r_i``, starting *from* the composition
instead of from scratch (as PSQD's "zero-shot, then adapted"):

    Q(s, a) = Q_w(s, a) + R(s, a),    Q_w = sum_i w_i Q_i frozen,  R trained, R = 0 at the start

(with ``--operator dc``, or from a saved ``SPEC.dc.composed``, R = -C_w at the start: dc's own energy), with the
sampler started from the composed amortized sampler and the replay buffer started from the constituents' stored
transitions, their rewards recomputed for ``r_w`` (no new environment samples; on a custom ``--arm`` the buffer
starts empty, as those transitions are another robot's).
Before the first update the adapted skill acts exactly as the composition does. Training is the
ordinary trainer (``skills.training``: progress bar, CSV, learning curve, checkpoints, a new library
version named ``SPEC.adapted``, resume, Ctrl-C keeps the last checkpoint); the manifest's
``adapted_from`` names the constituents. ``python -m bench.adaptation`` compares adapted against
from-scratch joint training (docs/compose.md).
"""

from __future__ import annotations

import argparse
import sys

import envs
import skills
from envs.cli import add_arm_arguments, add_task_arguments, arm_kwargs, load_task_modules
from skills.cli import add_weights_argument, non_negative_int, positive_int
from skills.train import run_training
from skills.training import MultiSeedTrainer, Trainer, TrainResult, rest_of_budget

from .adaptation import ADAPT_SHARE, EVAL_INTERVAL, adapt_configs, adapted_trainer, build_unless_saved, check_adaptable
from .library import savable_operators
from .run.cli import add_operator_setting_argument
from .skill import load


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m compose.adapt", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="composition to adapt, e.g. reach+avoid (skill names joined by '+', one with a '+' in "
                        "parentheses), or a "
                        "saved composition such as reach+avoid.composed")
    add_weights_argument(parser)
    parser.add_argument("--operator", choices=savable_operators(), default="average",
                        help="the composition to start from (default: average, R = 0); dc: Q_w - C_w, R = -C_w at the "
                             "start (its correction from the library cache, or fitted offline first)")
    add_operator_setting_argument(parser, "the same settings reuse the library cache's fit")
    parser.add_argument("--steps", type=positive_int,
                        help=f"environment steps (default: {ADAPT_SHARE * 100:.0f}%% of the joint skill's tuned budget)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    parser.add_argument("--library", help="library to load the skills from (default: trained/ or "
                        "$COMPOSABLE_SKILLS_LIBRARY)")
    parser.add_argument("--out", help="library to write the adapted skill into (default: the skills' library)")
    parser.add_argument("--resume", metavar="SKILL", help="continue adapting a saved adapted skill (name, name@vN "
                        "or path); saved as a new version. Without --steps, an interrupted run (status 'training') runs "
                        "the rest of its budget; --steps N is always N more")
    parser.add_argument("--eval-interval", type=positive_int,
                        help=f"evaluate and checkpoint every N steps (default {EVAL_INTERVAL})")
    parser.add_argument("--eval-episodes", type=positive_int, help="episodes per periodic evaluation (default 20)")
    parser.add_argument("--final-eval-episodes", type=positive_int, help="episodes of the final evaluation (default 100)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--no-convergence", action="store_true", help="skip the final convergence report")
    add_arm_arguments(parser)
    add_task_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {"eval_interval": args.eval_interval, "eval_episodes": args.eval_episodes,
                 "final_eval_episodes": args.final_eval_episodes, "progress": not args.no_progress,
                 "convergence": not args.no_convergence}
    names: list[str] = []
    starts: list[str] = []  # what R is before the first update (0 from averaging, -C_w from a saved dc composition)

    def make_trainer() -> MultiSeedTrainer:
        load_task_modules(args.tasks)
        try:
            composition = load(args.spec, weights=args.weights, library=args.library, seed=args.seed,
                               operator=args.operator, **dict(args.operator_setting))
        except (envs.UnknownNameError, skills.SkillError) as err:
            if not args.resume:
                raise
            raise skills.SkillError(f"{err} (resuming: --library is where the constituents live, default trained/; the "
                                    "adapted skill is looked up in --out, or in --library without --out)") from err
        names.append(composition.name)
        starts.append(f"{composition.operator.residual_form} at the start")
        task = check_adaptable(composition)  # refuse before building anything
        if args.resume:  # the saved adapted skill holds everything: nothing to build
            sql, run = adapt_configs(task, args.steps, seed=args.seed, **overrides)
            if args.steps is None:  # an interrupted run finishes its budget
                run = rest_of_budget(run, [args.resume], args.out or args.library)
            return Trainer(task, sql, run, out=args.out or args.library, resume=args.resume, env_kwargs=arm_kwargs(args))
        build_unless_saved(composition, progress=not args.no_progress)
        return adapted_trainer(composition, steps=args.steps, seed=args.seed, out=args.out or args.library,
                               env_kwargs=arm_kwargs(args), **overrides)

    def zero_shot(result: TrainResult) -> list[str]:
        start, after = result.history[0], result.history[1:4]
        if not after:
            return []
        return [f"zero-shot composition (step 0): return {start['return_mean']:.2f}, success "
                f"{start['success_rate']:.2f} (stochastic); lowest of the next {len(after)} evaluations "
                f"{min(h['return_mean'] for h in after):.2f}"]

    def headline(t: MultiSeedTrainer) -> str:
        run = t.trainers[0]
        start = f"from {args.resume}" if args.resume else starts[0]
        return (f"adapting {names[0]} on {run.task.name!r} for {run.run.steps} steps (Q = Q_w + R, {start}; "
                f"seed {run.run.seed}) -> {run.path}")

    return run_training(make_trainer, headline, zero_shot, resume_command=f"python -m compose.adapt {args.spec}")


if __name__ == "__main__":
    sys.exit(main())
