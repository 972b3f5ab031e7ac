"""Polish a trained skill:  python -m skills.polish SKILL [--updates N] [--library DIR]

More soft Q-iteration on the skill's stored transitions, with no new environment samples: a target copy every 50
updates, V_target from 1024 importance samples, and a learning rate decayed to 0 over the second half
(skills.training.polish says why each). It brings a finished skill's soft Q-function closer to its fixed point (the
Bellman residual that ``python -m skills.evaluate SKILL --convergence`` reports). The result is saved as a new version
of the skill, with a fresh final evaluation and convergence report; the version it came from is untouched and named in
the new manifest's ``polished_from``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from envs.cli import add_task_arguments, load_task_modules, run_command

from .cli import non_negative_int, positive_float, positive_int
from .evaluation.diagnostics import format_report
from .evaluation.episodes import collision_text
from .library import load_manifest
from .training.polish import PolishConfig, polish_skill


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m skills.polish", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("skill", help="skill name (newest version), name@vN, or a skill directory")
    parser.add_argument("--library", help="library to find SKILL in (default: trained/); the new version goes beside "
                        "the one it polishes")
    parser.add_argument("--updates", type=positive_int, default=PolishConfig.updates,
                        help=f"SQL updates on the stored transitions (default {PolishConfig.updates})")
    parser.add_argument("--lr", type=positive_float, default=PolishConfig.lr,
                        help=f"learning rate of the first half, then linearly to 0 (default {PolishConfig.lr:g})")
    parser.add_argument("--target-update-interval", type=positive_int, default=PolishConfig.target_update_interval,
                        help=f"copy Q into the target network every N updates (default {PolishConfig.target_update_interval})")
    parser.add_argument("--value-samples", type=positive_int, default=PolishConfig.value_samples,
                        help=f"importance samples for V_target(s') (default {PolishConfig.value_samples})")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the batches (default 0)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default 1, as training)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_task_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        load_task_modules(args.tasks)
        torch.set_num_threads(args.threads)
        config = PolishConfig(updates=args.updates, lr=args.lr, target_update_interval=args.target_update_interval,
                              value_samples=args.value_samples, seed=args.seed, progress=not args.no_progress)
        path = polish_skill(args.skill, args.library, config)
        print(report_lines(load_manifest(path).to_json(), path))
        return 0

    return run_command(body)


def report_lines(manifest: dict, path: Path) -> str:
    """What a polish prints: where the new version went, what it came from, its evaluation and convergence."""
    source, polish, metrics = manifest["polished_from"], manifest["polish"], manifest["metrics"]
    lines = [f"saved {path} (polished from v{source['version']}: {polish['updates']} updates on "
             f"{polish['transitions']} stored transitions, {polish['wall_time_s']:.0f} s)",
             *(f"  {mode:13s} success {m['success_rate']:.2f}  return {m['return_mean']:.2f}  "
               f"collisions {collision_text(m)}" for mode, m in metrics.items()),
             "  convergence of the soft Q-function:", *("    " + line for line in format_report(manifest["convergence"]))]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
