"""How many of the four multigoal goals the sampled policy keeps, for variants of its settings:

    python -m bench.multigoal_modes [--steps 20000] [--variants shipped,no-random,slow-copies]

Each variant trains ``multigoal`` from the shipped defaults (``skills.training.defaults.sql_config``) with
one change, seed 0, into a temporary library, then counts the goal each of 100 sampled
episodes (seeds 10000 onward) reaches. Behind the settings in docs/skills.md ("Defaults").
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from typing import Any

import numpy as np
import torch

VARIANTS: dict[str, dict[str, Any]] = {  # SQLConfig fields to change
    "shipped": {},
    "no-random": {"random_episodes": 0.0},  # the policy's own data only
    "slow-copies": {"random_episodes": 0.0, "target_update_interval": 1000},  # the previous release's schedule
}


def goal_counts(variant: str, steps: int, episodes: int = 100) -> dict:
    """Train one variant and count the goals its sampled episodes reach."""
    import skills
    from skills.evaluation.episodes import EVAL_SEED
    from skills.evaluation.plots import multigoal_rollouts
    from skills.training import Trainer
    from skills.training.defaults import sql_config, train_config

    sql = replace(sql_config("multigoal", "multigoal"), **VARIANTS[variant])
    run = replace(train_config("multigoal", steps=steps), progress=False, convergence=False, eval_episodes=5)
    with tempfile.TemporaryDirectory() as library:
        skill = skills.load(Trainer("multigoal", sql, run, out=library).train().path)
        torch.manual_seed(0)
        _, goals = multigoal_rollouts(lambda o: skill.act(o), episodes, EVAL_SEED)
    return {"variant": variant, "changes": VARIANTS[variant], "steps": steps,
            "goals": np.bincount(goals[goals >= 0], minlength=4).tolist(), "success": float(np.mean(goals >= 0))}


def main(argv: list[str] | None = None) -> int:
    from skills.cli import positive_int

    parser = argparse.ArgumentParser(prog="python -m bench.multigoal_modes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=positive_int, default=20_000, help="training steps per variant (default 20000)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        print(f"error: unknown variants {unknown}; valid: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    results = []
    for name in names:
        results.append(goal_counts(name, args.steps))
        r = results[-1]
        print(f"{name:12s} {args.steps} steps: goals reached {'/'.join(map(str, r['goals']))} of 100, "
              f"success {r['success']:.2f}", flush=True)
    if args.json:
        from skills.library import atomic_write_text

        atomic_write_text(args.json, json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
