"""Lockstep episodes with their envs stepped by one thread and by two, family by family, side by side in one run:
python -m bench.step_threads

For each task, the shipped joint skill runs the same ``--episodes`` seeded episodes (stochastic, lockstep width 64)
with ``step_threads(1)`` and ``step_threads(2)``, in turn, ``--repeats`` times on a warm pool; the best wall time of
each side is compared, and the episodes' returns must agree exactly (``identical``). MuJoCo releases the GIL inside
``mj_step``, so the gain follows how much of a step is physics in one call (the arm: 20 substeps in one call; the
Fetch manipulation tasks: one substep per call, with contact checks in Python between them; the point mass: no
MuJoCo at all). ``--quick`` is a smoke run (two tasks, a few episodes). ``--json PATH`` writes the results.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import envs
import skills
from skills.evaluation import EVAL_SEED
from skills.evaluation.lockstep import EnvPool, lockstep_episodes, step_threads

from . import cli
from .cli import write_json

# the arm, the Fetch with objects, the point mass
TASKS = ("reach+avoid", "place+clear", "puck-x+puck-y", "plane-upper+plane-lower")


def one_task(spec: str, episodes: int, repeats: int) -> dict:
    """The joint skill of ``spec`` on ``episodes`` episodes, one thread against two: best wall times, the speed-up and
    whether the returns are identical."""
    policy = skills.load(spec)
    seeds = [EVAL_SEED + i for i in range(episodes)]
    times: dict[int, list[float]] = {1: [], 2: []}
    totals: dict[int, list[float]] = {}
    with EnvPool(lambda: envs.make(spec)) as pool:
        lockstep_episodes(pool, policy, seeds[:2])  # warm: the pool's first envs and the policy's first call
        for _ in range(repeats):
            for threads in (1, 2):
                with step_threads(threads):
                    start = time.perf_counter()
                    done = lockstep_episodes(pool, policy, seeds)
                    times[threads].append(time.perf_counter() - start)
                totals[threads] = [e.total for e in done]
    one, two = min(times[1]), min(times[2])
    return {"episodes": episodes, "wall_s": {"one thread": times[1], "two threads": times[2]},
            "speedup": round(one / two, 2), "identical": bool(np.array_equal(totals[1], totals[2]))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.step_threads", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=100, help="episodes per side (default 100)")
    parser.add_argument("--repeats", type=int, default=3, help="alternations of the two sides (default 3)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: two tasks, 4 episodes, one repeat")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = cli.parse(parser, argv)
    if args.episodes < 1 or args.repeats < 1:
        parser.error(f"--episodes and --repeats must be at least 1, got {args.episodes} and {args.repeats}")
    tasks, episodes, repeats = (TASKS[::3], 4, 1) if args.quick else (TASKS, args.episodes, args.repeats)
    result = {}
    for spec in tasks:
        result[spec] = one_task(spec, episodes, repeats)
        r = result[spec]
        print(f"{spec:26s} one thread {min(r['wall_s']['one thread']):6.2f} s  two threads "
              f"{min(r['wall_s']['two threads']):6.2f} s  speed-up {r['speedup']:.2f}x  identical {r['identical']}",
              flush=True)
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
