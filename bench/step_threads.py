"""Lockstep episodes with their envs stepped by one thread and by two, family by family, side by side in one run:
python -m bench.step_threads

For each task, the shipped joint skill runs the same ``--episodes`` seeded episodes (stochastic, lockstep width 64)
with ``step_threads(1)`` and ``step_threads(2)``, in turn, ``--repeats`` times on a warm pool; the best wall time of
each side is compared, and the episodes' returns must agree exactly (``identical``). MuJoCo releases the GIL inside
``mj_step``, so the gain follows how much of a step is physics in one call (the arm: 20 substeps in one call; the
Fetch manipulation tasks: one substep per call, with contact checks in Python between them; the point mass: no
MuJoCo at all). ``--quick`` is a smoke run (two tasks, a few episodes). ``--json PATH`` writes the results.

``--processes N`` runs the same comparison in N processes at once, each side started together behind a barrier (as
``compose.study --workers N`` runs trials): whether each process's helper threads still pay when the processes
already share the cores. The wall time of a side is then the slowest process's.
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import time
from collections.abc import Callable

import numpy as np

import envs
import skills
from skills.evaluation import EVAL_SEED
from skills.evaluation.lockstep import EnvPool, lockstep_episodes, step_threads

from . import cli
from .cli import write_json

# the arm, the Fetch with objects, the point mass
TASKS = ("reach+avoid", "place+clear", "puck-x+puck-y", "plane-upper+plane-lower")


def timed_sides(spec: str, episodes: int, repeats: int, together: Callable[[], object] = lambda: None) -> tuple[dict, dict]:
    """The joint skill of ``spec`` on ``episodes`` episodes with one thread and with two, ``repeats`` times in turn:
    the wall times and the last returns of each side. ``together()`` is called before each timed side (a barrier
    where several processes run this at once)."""
    policy = skills.load(spec)
    seeds = [EVAL_SEED + i for i in range(episodes)]
    times: dict[int, list[float]] = {1: [], 2: []}
    totals: dict[int, list[float]] = {}
    with EnvPool(lambda: envs.make(spec)) as pool:
        lockstep_episodes(pool, policy, seeds[:2])  # warm: the pool's first envs and the policy's first call
        for _ in range(repeats):
            for threads in (1, 2):
                together()
                with step_threads(threads):
                    start = time.perf_counter()
                    done = lockstep_episodes(pool, policy, seeds)
                    times[threads].append(time.perf_counter() - start)
                totals[threads] = [e.total for e in done]
    return times, totals


BARRIER_TIMEOUT_S = 600  # the longest a process waits for the others at a side's start


def _in_process(spec: str, episodes: int, repeats: int, barrier, results) -> None:
    """One of the concurrent processes: its sides' times and returns, or its error (and the barrier broken, so that
    the others stop waiting for it)."""
    try:
        results.put(("ok", timed_sides(spec, episodes, repeats, together=lambda: barrier.wait(BARRIER_TIMEOUT_S))))
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which raises it
        barrier.abort()
        results.put(("error", f"{type(err).__name__}: {err}"))


def concurrent_sides(spec: str, episodes: int, repeats: int, processes: int) -> tuple[dict, dict]:
    """``timed_sides`` in ``processes`` forked processes at once, each side started together: per side and repeat, the
    slowest process's wall time; the returns of one process (every process runs the same episodes). A process that
    fails (or dies) fails the run at once, with its error."""
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_in_process, args=(spec, episodes, repeats, barrier, results))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    outcomes: list[tuple[dict, dict]] = []
    try:
        while len(outcomes) < processes:
            try:
                status, outcome = results.get(timeout=1.0)
            except queue.Empty:
                dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"{spec}: a benchmark process died (exit code {dead[0]})") from None
                continue
            if status != "ok":
                raise RuntimeError(f"{spec}: a benchmark process failed: {outcome}")
            outcomes.append(outcome)
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
    if any(outcome[1] != outcomes[0][1] for outcome in outcomes):
        raise RuntimeError(f"{spec}: processes running the same episodes disagree")
    times = {side: [max(outcome[0][side][i] for outcome in outcomes) for i in range(repeats)] for side in (1, 2)}
    return times, outcomes[0][1]


def one_task(spec: str, episodes: int, repeats: int, processes: int = 1) -> dict:
    """The joint skill of ``spec`` on ``episodes`` episodes, one thread against two (in each of ``processes`` processes
    at once): best wall times, the speed-up and whether the returns are identical."""
    if processes == 1:
        times, totals = timed_sides(spec, episodes, repeats)
    else:
        times, totals = concurrent_sides(spec, episodes, repeats, processes)
    one, two = min(times[1]), min(times[2])
    return {"episodes": episodes, "processes": processes, "wall_s": {"one thread": times[1], "two threads": times[2]},
            "speedup": round(one / two, 2), "identical": bool(np.array_equal(totals[1], totals[2]))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.step_threads", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=100, help="episodes per side (default 100)")
    parser.add_argument("--repeats", type=int, default=3, help="alternations of the two sides (default 3)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: two tasks, 4 episodes, one repeat")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--processes", type=int, default=1,
                        help="run the comparison in this many processes at once, as study workers do (default 1)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = cli.parse(parser, argv)
    if min(args.episodes, args.repeats, args.processes) < 1:
        parser.error(f"--episodes, --repeats and --processes must be at least 1, got {args.episodes}, {args.repeats} "
                     f"and {args.processes}")
    tasks, episodes, repeats = (TASKS[::3], 4, 1) if args.quick else (TASKS, args.episodes, args.repeats)
    result = {}
    for spec in tasks:
        result[spec] = one_task(spec, episodes, repeats, args.processes)
        r = result[spec]
        print(f"{spec:26s} one thread {min(r['wall_s']['one thread']):6.2f} s  two threads "
              f"{min(r['wall_s']['two threads']):6.2f} s  speed-up {r['speedup']:.2f}x  identical {r['identical']}",
              flush=True)
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
