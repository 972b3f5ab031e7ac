"""Does a pusher setting bring its skills to their soft fixed point?  One round of the sweep behind docs/skills.md:

    python -m bench.pusher_sweep [--task push-x] [--seeds 0,4] [--variants current,gamma-0.99+random-0.3] [--steps N]

Each variant trains ``--task`` from the family's current defaults (``skills.training.defaults.sql_config``) with
its changes, the seeds stacked (``skills.train --seeds``), into a temporary library, and reads each seed's
convergence report (Monte Carlo soft return of the skill's own stochastic policy against ``V(s0)``, Bellman
residuals; ``skills.evaluation.diagnostics``) and its final stochastic success from the manifest. A seed meets the
gap goal when ``|gap| <= 0.05 |V0| + 0.05 + 3 se``. The rounds, their rule and results, each written before
the round ran: ``bench/results/pusher_fixed_point_sweep.md``. Its rounds 1 and 2 ran on the family's discount of
that time, 0.99: ``--variants gamma-0.99+random-0.3,gamma-0.99+q-lr-1e-4`` repeats round 1,
``--variants gamma-0.99+random-0.3 --steps 60000`` and ``--variants gamma-0.99+random-0.3+copy-300`` round 2,
``--variants random-0.3,current`` round 3 (``current`` is its adopted gamma 0.95).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from typing import Any

from bench.cli import run_measurement
from skills.cli import at_least, seed_list

VARIANTS: dict[str, dict[str, Any]] = {  # SQLConfig fields to change
    "current": {},
    "gamma-0.99": {"gamma": 0.99},  # the family's discount before the sweep
    "random-0.3": {"random_episodes": 0.3},  # uniform-action episodes: unvisited actions stay in the data
    "q-lr-1e-4": {"q_lr": 1e-4},  # a slower Q-network
    "copy-300": {"target_update_interval": 300},  # a slower target
}


def trial(task: str, seeds: list[int], changes: dict[str, Any], steps: int | None) -> list[dict]:
    """Train ``task`` for ``seeds`` (stacked) with ``changes`` to its SQL settings; one row per seed."""
    import skills
    from skills.training import MultiSeedTrainer
    from skills.training.defaults import sql_config, train_config

    sql = replace(sql_config(task, "pusher"), **changes)
    run = replace(train_config(task, steps=steps), progress=False)
    rows = []
    with tempfile.TemporaryDirectory() as library:
        for result in MultiSeedTrainer(task, sql, run, seeds, out=library).train():
            info = skills.load(result.path).info
            record, c = info.record, info.record["convergence"]
            rows.append({"seed": info.seed, "gamma": info.gamma, "gap": c["soft_return_gap"],
                         "gap_se": c["soft_return_gap_se"], "V0": c["V0_mean"], "goal": c["goal"],
                         "residual_stored": c["stored"]["bellman_residual_mean"],
                         "residual_on_policy": c["on_policy"]["bellman_residual_mean"],
                         "success_stochastic": record["metrics"]["stochastic"]["success_rate"],
                         "wall_time_s": result.wall_time_s})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pusher_sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="push-x", help="a pusher task: push-x, push-y or push-x+push-y (default push-x)")
    parser.add_argument("--seeds", type=seed_list, default=[0, 4],
                        help="seeds, stacked: N (0..N-1) or a list such as 0,4 (default 0,4: the worst two before the sweep)")
    parser.add_argument("--variants", default="current,gamma-0.99",
                        help=f"comma-separated, each trained on its own; '+' joins changes (gamma-0.99+random-0.3): "
                             f"{', '.join(VARIANTS)}")
    parser.add_argument("--steps", type=at_least(1), help="training steps (default: the task's tuned budget, 30000)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    import envs

    task = envs.TASKS.get(args.task)
    if task is None or task.family.name != "pusher":
        parser.error(f"--task {args.task!r} is not a pusher task; valid: "
                     f"{', '.join(n for n, t in envs.TASKS.items() if t.family.name == 'pusher')}")
    names = args.variants.split(",")
    unknown = [part for n in names for part in n.split("+") if part not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
    return run_measurement(lambda: sweep(args.task, args.seeds, names, args.steps), args.json)


def sweep(task: str, seeds: list[int], names: list[str], steps: int | None) -> list[dict]:
    """Each variant of ``names`` trained on ``seeds`` and checked, one row per variant (module docstring)."""
    results = []
    for name in names:
        changes = {k: v for part in name.split("+") for k, v in VARIANTS[part].items()}
        rows = trial(task, seeds, changes, steps)
        for r in rows:
            print(f"{name:11s} seed {r['seed']}: gap {r['gap']:+.2f} ± {r['gap_se']:.2f} (V0 {r['V0']:+.2f}), goal "
                  f"{'met' if r['goal']['soft_return_gap'] else 'missed'}; residual {r['residual_stored']:+.4f}; "
                  f"success {r['success_stochastic']:.2f}", flush=True)
        results.append({"variant": name, "changes": changes, "task": task, "seeds": rows})
    return results


if __name__ == "__main__":
    sys.exit(main())
