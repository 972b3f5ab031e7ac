"""Improve a composition with experience:  python -m compose.adapt SPEC [--steps N] [--out LIB]

Soft Q-learning on the combined task's reward ``r_w = sum_i w_i r_i``, starting *from* the composition
instead of from scratch (as PSQD's "zero-shot, then adapted"):

    Q(s, a) = Q_w(s, a) + R(s, a),    Q_w = sum_i w_i Q_i frozen,  R trained, R = 0 at the start

with the sampler started from the composed amortized sampler and the replay buffer started from the
constituents' stored transitions, their rewards recomputed for ``r_w`` (no new environment samples; on a
custom ``--arm`` the buffer starts empty, as those transitions are another robot's).
Before the first update the adapted skill acts exactly as the composition does. Training is the
ordinary trainer (``skills.training.trainer``: progress bar, CSV, learning curve, checkpoints, a new library
version named ``SPEC.adapted``, resume, Ctrl-C keeps the last checkpoint); the manifest's
``adapted_from`` names the constituents. ``python -m bench.adaptation`` compares adapted against
from-scratch joint training (docs/compose.md).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import envs
import skills
from envs.cli import add_arm_arguments, arm_kwargs
from skills.sql.learner import SQLConfig
from skills.cli import positive_int, weight_list
from skills.training.defaults import TASK_STEPS, sql_config, train_config
from skills.train import run_training
from skills.training.trainer import TrainConfig, Trainer, TrainResult

from .composition import Composition, load
from .saved import composed_agent, provenance, relabelled_transitions

SUFFIX = ".adapted"
ADAPT_SHARE = 0.2  # default budget: this share of the joint skill's tuned training steps
EVAL_INTERVAL = 1_000


def combined_task_name(composition: Composition) -> str:
    """The registered task whose reward is the composition's ``r_w``; adaptation trains on it."""
    name = composition.task.name
    if name not in envs.TASKS:
        combined = [n for n, t in envs.TASKS.items() if t.parts]
        raise ValueError(f"{composition.name} with weights {composition.weights.tolist()} has no registered combined "
                         f"task ({name!r}) to adapt on; combined tasks: {', '.join(combined)}")
    return name


def adapt_configs(task: str, steps: int | None = None, **run_overrides) -> tuple[SQLConfig, TrainConfig]:
    """The joint task's tuned SQL settings with no random warm-up (the buffer starts full), and a run of
    ``ADAPT_SHARE`` of its joint budget, evaluated every ``EVAL_INTERVAL`` steps in both modes."""
    family = envs.get_task(task).family.name
    sql = replace(sql_config(task, family), warmup_steps=0)
    budget = steps or int(ADAPT_SHARE * TASK_STEPS.get(task, 30_000))
    run = train_config(task, steps=budget, **run_overrides)
    if run_overrides.get("eval_interval") is None:
        run = replace(run, eval_interval=min(EVAL_INTERVAL, budget))
    return sql, replace(run, deterministic_curve=True)


def adapted_trainer(composition: Composition, *, steps: int | None = None, seed: int = 0, out: str | Path | None = None,
                    name: str | None = None, env_kwargs: dict | None = None, **run_overrides) -> Trainer:
    """A ``Trainer`` on the combined task whose agent is the composition (``Q_w + R``, ``R = 0``; the composed
    sampler) and whose buffer holds the constituents' transitions relabelled with ``r_w``."""
    task = combined_task_name(composition)
    sql, run = adapt_configs(task, steps, seed=seed, **run_overrides)
    agent = composed_agent(composition, seed, config=sql)
    root = Path(out) if out is not None else (Path(composition.library) if composition.library else None)
    record = provenance(composition, root if root is not None else skills.default_library())
    if composition.saved is not None:
        record["saved_composition"] = str(composition.saved)
    # The stored transitions are the constituents' own robot's: a start for the same robot, off-dynamics data for
    # another arm, where the buffer starts empty (the composition acts from the first step; updates wait for a batch).
    other_arm = bool(env_kwargs and env_kwargs.get("arm"))
    record["replay_seeded_with_constituent_transitions"] = not other_arm
    return Trainer(task, sql, run, out=root, name=name or composition.name.replace("@", "_") + SUFFIX, agent=agent,
                   transitions=None if other_arm else relabelled_transitions(composition),
                   provenance={"adapted_from": record}, env_kwargs=env_kwargs)


def adapt(spec: str, *, weights: list[float] | None = None, library: str | None = None, out: str | None = None,
          steps: int | None = None, seed: int = 0, progress: bool = True, env_kwargs: dict | None = None,
          **run_overrides) -> TrainResult:
    """Load (or reopen) the composition ``spec`` and adapt it; returns the trainer's result."""
    composition = load(spec, weights=weights, library=library, seed=seed)
    combined_task_name(composition)  # refuse before building anything
    composition.build(progress=progress)
    trainer = adapted_trainer(composition, steps=steps, seed=seed, out=out, env_kwargs=env_kwargs,
                              progress=progress, **run_overrides)
    return trainer.train()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m compose.adapt", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="composition to adapt, e.g. reach+avoid (skill names joined by '+'), or a "
                        "saved composition such as reach+avoid.composed")
    parser.add_argument("--weights", type=weight_list, help="comma-separated weights summing to 1 (default: equal)")
    parser.add_argument("--steps", type=positive_int,
                        help=f"environment steps (default: {ADAPT_SHARE * 100:.0f}%% of the joint skill's tuned budget)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--library", help="library to load the skills from (default: trained/ or "
                        "$COMPOSABLE_SKILLS_LIBRARY)")
    parser.add_argument("--out", help="library to write the adapted skill into (default: the skills' library)")
    parser.add_argument("--resume", metavar="SKILL", help="continue adapting a saved adapted skill (name, name@vN "
                        "or path); saved as a new version")
    parser.add_argument("--eval-interval", type=positive_int,
                        help=f"evaluate and checkpoint every N steps (default {EVAL_INTERVAL})")
    parser.add_argument("--eval-episodes", type=positive_int, help="episodes per periodic evaluation (default 20)")
    parser.add_argument("--final-eval-episodes", type=positive_int, help="episodes of the final evaluation (default 100)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--no-convergence", action="store_true", help="skip the final convergence report")
    add_arm_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    composition: list[Composition] = []

    def make_trainer() -> Trainer:
        weights = args.weights
        composition.append(load(args.spec, weights=weights, library=args.library, seed=args.seed))
        task = combined_task_name(composition[0])  # refuse before building anything
        composition[0].build(progress=not args.no_progress)
        overrides = {"eval_interval": args.eval_interval, "eval_episodes": args.eval_episodes,
                     "final_eval_episodes": args.final_eval_episodes, "progress": not args.no_progress,
                     "convergence": not args.no_convergence}
        if args.resume:
            sql, run = adapt_configs(task, args.steps, seed=args.seed, **overrides)
            return Trainer(task, sql, run, out=args.out or args.library, resume=args.resume, env_kwargs=arm_kwargs(args))
        return adapted_trainer(composition[0], steps=args.steps, seed=args.seed, out=args.out or args.library,
                               env_kwargs=arm_kwargs(args), **overrides)

    def zero_shot(result: TrainResult) -> list[str]:
        start, after = result.history[0], result.history[1:4]
        if not after:
            return []
        return [f"zero-shot composition (step 0): return {start['return_mean']:.2f}, success "
                f"{start['success_rate']:.2f} (stochastic); lowest of the next {len(after)} evaluations "
                f"{min(h['return_mean'] for h in after):.2f}"]

    return run_training(make_trainer, lambda t: f"adapting {composition[0].name} on {t.task.name!r} for {t.run.steps} "
                        f"steps (Q = Q_w + R, R = 0 at the start; seed {t.run.seed}) -> {t.path}", zero_shot)

if __name__ == "__main__":
    sys.exit(main())
