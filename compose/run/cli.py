"""Compose saved skills and compare against the jointly trained policy:

    python -m compose.run reach+avoid [--render]

Loads the skills named by ``SKILL+SKILL[+...]``, builds ``Q_w = sum_i w_i Q_i`` and samples
``pi_w ∝ exp(Q_w/alpha)`` with SVGD, with **no new environment samples**. It then runs the
composed policy, the jointly trained skill (the library skill named like the spec, e.g.
``reach+avoid``) and each constituent on the same seeded episodes of the combined task, checks
the bound ``Q_w - C <= Q^pi <= Q_w`` with Monte Carlo soft returns, and writes report.json, report.md and plots.
``--operator`` combines the skills another way; ``--operator all`` compares every applicable one.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from envs.cli import add_arm_arguments, add_task_arguments, arm_kwargs, load_task_modules, run_command
from skills.cli import add_weights_argument, non_negative_int, positive_int
from skills.evaluation import EVAL_SEED
from skills.library import atomic_write_text

from ..mc_check import MCBoundConfig
from ..operators import OPERATORS, Operator, make_operator, operator_setting
from .orchestrate import run
from .selection import VALIDATION_EPISODES, VALIDATION_SEED, Candidates, select
from .settings import SAMPLERS, BuildConfig, EvaluationConfig, Sources


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m compose.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="skills to compose, joined by '+', e.g. reach+avoid; one whose name or path has a "
                        "'+' in parentheses, e.g. '(reach+avoid)+stay_low'")
    add_weights_argument(parser)
    parser.add_argument("--operator", choices=[*OPERATORS, "all"], default="average",
                        help="how the skills' soft Q-functions combine: "
                        + "; ".join(f"{k}: {cls.summary}" for k, cls in OPERATORS.items())
                        + "; all: every applicable operator on the same episodes, one table and one trajectory figure "
                          "(default: average)")
    parser.add_argument("--order", type=lambda s: [x for x in s.split(",") if x],
                        help="priority: the skills, highest priority first, e.g. avoid,reach")
    parser.add_argument("--epsilon", type=float, help="priority: indifference margin in Q units "
                        "(default: compose.operators.Priority.epsilon)")
    add_operator_setting_argument(parser, "the composition is cached per setting")
    parser.add_argument("--select", metavar="SETTING=V1,V2,...", type=candidates_argument,
                        help="choose an operator setting, or the amortized sampler's (sampler.updates, sampler.lr, ...), "
                             "on validation episodes before the run, e.g. epsilon=0.1,0.3,0.6: each value is evaluated "
                             "on --validation-episodes episodes from --validation-seed (disjoint from the reported ones), "
                             "the rule in compose.run.selection picks one, and the report says how")
    parser.add_argument("--validation-seed", type=non_negative_int, default=VALIDATION_SEED,
                        help=f"first validation episode seed for --select (default: {VALIDATION_SEED})")
    parser.add_argument("--validation-episodes", type=positive_int, default=VALIDATION_EPISODES,
                        help=f"validation episodes per candidate for --select (default: {VALIDATION_EPISODES})")
    parser.add_argument("--sampler", choices=SAMPLERS, default="amortized",
                        help="amortized: a fresh sampler network trained on Q_w (cached); "
                             "particles: SVGD on action particles at each step; resampling: importance resampling "
                             "of exp(Q_w/alpha) from 8192 uniform actions per step (slow; no sampler in the way) "
                             "(default: amortized)")
    parser.add_argument("--episodes", type=positive_int, default=100, help="evaluation episodes per policy (default: 100)")
    parser.add_argument("--seed", type=non_negative_int, default=EVAL_SEED, help=f"first episode seed (default: {EVAL_SEED})")
    parser.add_argument("--deterministic", action="store_true", help="every policy takes the best of 32 sampled "
                        "actions under its Q (default: one sampler draw per step, the max-ent policy the theory is about)")
    parser.add_argument("--no-mc", action="store_true", help="skip the Monte Carlo bound check (bound.mc)")
    parser.add_argument("--render", action="store_true", help="write an mp4 of the composed policy (and a live "
                        "window when a display exists)")
    parser.add_argument("--out", help="output directory (default: runs/compose/<spec>-<time>)")
    parser.add_argument("--json", metavar="PATH", help="also copy report.json here")
    parser.add_argument("--library", help="skill library (default: trained/ or $COMPOSABLE_SKILLS_LIBRARY)")
    add_arm_arguments(parser)
    add_task_arguments(parser)
    parser.add_argument("--allow-changed-task", action="store_true", help="compose skills whose task has been defined "
                        "differently since they were trained (refused by default, with both definitions shown)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default: 1; see docs/skills.md)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def operators_asked(args: argparse.Namespace) -> list[Operator]:
    """The operator objects the command line asks for: one, or every registered one for ``all`` (the priority
    settings go to priority alone; ``--operator-setting`` needs one operator)."""
    priority = {"order": args.order, "epsilon": args.epsilon}
    if args.operator == "all":
        if args.operator_setting:
            raise ValueError("--operator-setting sets one operator's setting; give --operator NAME, not all")
        return [make_operator(name, **(priority if name == "priority" else {})) for name in OPERATORS]
    return [make_operator(args.operator, **priority, **dict(args.operator_setting))]


def add_operator_setting_argument(parser: argparse.ArgumentParser, note: str) -> None:
    """``--operator-setting KEY=NUMBER`` (repeatable), one home for every command that takes it; ``note`` says what
    the command does with it."""
    parser.add_argument("--operator-setting", metavar="KEY=NUMBER", type=setting_argument, action="append", default=[],
                        help="one setting of the operator, e.g. --operator dc --operator-setting target_update_interval=100 "
                             f"(repeatable; the operator's fields: compose/operators; {note})")


def setting_argument(text: str) -> tuple[str, float]:
    """``--operator-setting``'s value, with the reason in argparse's message when it is refused."""
    try:
        return operator_setting(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def candidates_argument(text: str) -> Candidates:
    """``--select``'s value, with the reason in argparse's message when it is refused."""
    try:
        return Candidates.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)

    def body() -> int:
        load_task_modules(args.tasks)
        evaluation = EvaluationConfig(episodes=args.episodes, seed=args.seed, deterministic=args.deterministic,
                                      sampler=args.sampler, mc=None if args.no_mc else MCBoundConfig(),
                                      render=args.render, env_kwargs=arm_kwargs(args))
        build_config = BuildConfig(progress=not args.no_progress)
        sources = Sources(library=args.library, out=args.out, allow_changed_task=args.allow_changed_task)
        operators, chosen = operators_asked(args), None
        if args.select is not None:
            if len(operators) != 1:
                raise ValueError("--select chooses a setting of one operator; give --operator NAME, not all")
            validation = replace(evaluation, seed=args.validation_seed, episodes=args.validation_episodes, mc=None,
                                 render=False)
            chosen = select(args.spec, operators[0], args.select, test=evaluation, validation=validation,
                            build_config=build_config, sources=sources)
            operators = [chosen.operator]
            build_config = chosen.build_config or build_config
        report = run(args.spec, operators, weights=args.weights, evaluation=evaluation, build_config=build_config,
                     sources=sources, selection=chosen.record if chosen is not None else None)
        print("\n".join(report.console()))
        if args.json:
            atomic_write_text(Path(args.json), json.dumps(report.to_json(), indent=2))
        return 0

    return run_command(body)
