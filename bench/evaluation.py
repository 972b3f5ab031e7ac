"""Evaluation in lockstep against one episode at a time, side by side in one run:  python -m bench.evaluation

1. **Profile**: where ``compose.run reach+avoid`` (no render, shipped cache) spends its time, per phase (build,
   evaluation rows, the Monte Carlo bound, the bound's episode figure, the Q slices, the rest) and per kind of work
   (environment steps, policy calls, Q and V estimates, making environments, rendering).
2. **compose.run** without render and **skills.evaluate** (100 episodes), each run one episode at a time (lockstep
   width 1 on one thread: what the toolkit did before lockstep), in lockstep on one thread (before step threads), and
   in lockstep with the envs stepped by ``default_threads()`` threads, in turn; wall time and the reported numbers.
3. **Twins**: the same 100 seeded episodes of the composed policy one at a time and in lockstep: how many part, and
   how far (the actions' largest difference, the returns').

``--quick`` is a smoke run (few episodes, no Monte Carlo check). ``--json PATH`` writes the results.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

import compose
import envs
from compose.run import orchestrate
from compose.run import run as compose_run
from compose.run.settings import BuildConfig, EvaluationConfig, Sources
from skills import evaluate as evaluate_cli
from skills.evaluation import EVAL_SEED
from skills.evaluation.lockstep import EnvPool, default_threads, lockstep_episodes, lockstep_width, step_threads

from . import cli
from .cli import write_json

SPEC = "reach+avoid"
PHASES = {"build (cache)": (orchestrate, "build"), "evaluation rows": (orchestrate, "evaluate_all"),
          "Monte Carlo bound": (orchestrate, "bound_checks"), "bound episode figure": (orchestrate, "episode_bound"),
          "Q slices figure": (orchestrate, "q_slices_figure"), "comparison figure": (orchestrate, "plot_comparison"),
          "video": (orchestrate, "render_episode")}


class Timers:
    """Seconds spent inside patched functions, by label (nested calls of one label count once)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.depth: dict[str, int] = defaultdict(int)

    @contextmanager
    def patch(self, owner: object, name: str, label: str) -> Iterator[None]:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            self.calls[label] += 1
            self.depth[label] += 1
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.depth[label] -= 1
                if self.depth[label] == 0:
                    self.seconds[label] += time.perf_counter() - start

        setattr(owner, name, timed)
        try:
            yield
        finally:
            setattr(owner, name, original)


def kinds() -> dict[str, list[tuple[object, str]]]:
    """Where each kind of work happens: every family's env ``step``, policies' ``act``, Q and V estimates, env making
    and rendering."""
    from envs.rendering import MujocoRendering
    from skills.library import Skill

    env_classes = {factory for _, factory in envs.FAMILIES.values() if isinstance(factory, type)}
    return {"env steps": [(cls, "step") for cls in env_classes],
            "policy calls (act)": [(Skill, "act"), (compose.ComposedPolicy, "act")],
            "Q and V estimates": [(Skill, "q"), (Skill, "value"), (compose.ComposedPolicy, "q"),
                                  (compose.ComposedPolicy, "value")],
            "making envs": [(envs, "make_task_env"), (envs, "make")],
            "rendering": [(MujocoRendering, "render"), (MujocoRendering, "render_view")]}


def run_compose(episodes: int, mc: bool, out: Path, render: bool = False) -> dict:
    evaluation = EvaluationConfig(episodes=episodes, mc=None if not mc else EvaluationConfig().mc, render=render)
    report = compose_run(SPEC, evaluation=evaluation, build_config=BuildConfig(progress=False),
                         sources=Sources(out=out))
    return report.to_json() | {"wall_time_s": report.wall_time_s}


def profile(episodes: int, mc: bool, out: Path) -> dict:
    """Phase 1: one ``compose.run`` with timers on its phases and on each kind of work, its envs stepped on one thread
    (the timers count nested calls of one thread; with two threads stepping, env time would count twice)."""
    timers = Timers()
    with ExitStack() as stack:
        stack.enter_context(step_threads(1))
        for label, (phase_owner, name) in PHASES.items():
            stack.enter_context(timers.patch(phase_owner, name, label))
        for label, places in kinds().items():
            for owner, name in places:
                stack.enter_context(timers.patch(owner, name, label))
        start = time.perf_counter()
        run_compose(episodes, mc, out)
        total = time.perf_counter() - start
    phases = {k: round(timers.seconds[k], 2) for k in PHASES}
    return {"total_s": round(total, 2), "phases_s": phases | {"other": round(total - sum(phases.values()), 2)},
            "kinds_s": {k: round(timers.seconds[k], 2) for k in kinds()},
            "calls": {k: timers.calls[k] for k in kinds()}}


MODES = {"one at a time": (1, 1), "lockstep, one thread": (None, 1), "lockstep, threads": (None, None)}  # width, threads


def side_by_side(name: str, job: Callable[[Path], dict], out: Path, repeats: int) -> dict:
    """``job`` in each of ``MODES`` in turn, ``repeats`` times: wall times (the best of each is compared), the
    speed-ups and the last results."""
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    results = {}
    for r in range(repeats):
        for mode, (width, threads) in MODES.items():
            start = time.perf_counter()
            with lockstep_width(width) if width else ExitStack(), step_threads(threads) if threads else ExitStack():
                results[mode] = job(out / f"{name}-{mode.replace(' ', '-').replace(',', '')}-{r}")
            times[mode].append(time.perf_counter() - start)
    best = {mode: min(t) for mode, t in times.items()}
    return {"wall_s": times, "threads": default_threads(),
            "speedup": round(best["one at a time"] / best["lockstep, threads"], 2),
            "speedup_lockstep_one_thread": round(best["one at a time"] / best["lockstep, one thread"], 2),
            "speedup_of_threads": round(best["lockstep, one thread"] / best["lockstep, threads"], 2), "results": results}


def compose_numbers(result: dict) -> dict:
    rows = {"composed": result["composed"], **({"joint": result["joint"]} if "success_rate" in result["joint"] else {}),
            **result["constituents"]}
    mc = result["bound"].get("mc", {})
    return {name: {k: row.get(k) for k in ("success_rate", "return_mean", "soft_return_mean", "return_std")}
            for name, row in rows.items()} | {"mc": {k: mc.get(k) for k in ("upper_falsified_fraction",
                                                                            "lower_holds_fraction", "suboptimality_mean")}}


def twins(episodes: int) -> dict:
    """Phase 3: the composed policy's seeded episodes one at a time and in lockstep."""
    composition = compose.load(SPEC)
    composition.build(progress=False)
    seeds = [EVAL_SEED + i for i in range(episodes)]
    with EnvPool(lambda: envs.make(SPEC)) as pool:
        alone = lockstep_episodes(pool, composition.policy, seeds, width=1, keep_trace=True)
        together = lockstep_episodes(pool, composition.policy, seeds, keep_trace=True)
    gaps = np.array([max(float(np.max(np.abs(a - b))) for a, b in zip(x.actions, y.actions, strict=True))
                     for x, y in zip(alone, together, strict=True)])
    returns = np.abs(np.array([x.total - y.total for x, y in zip(alone, together, strict=True)]))
    return {"episodes": episodes, "parted_above_1e-5": int(np.sum(gaps > 1e-5)), "largest_action_gap": float(gaps.max()),
            "median_action_gap": float(np.median(gaps)), "largest_return_gap": float(returns.max()),
            "success_differs": int(sum(x.success != y.success for x, y in zip(alone, together, strict=True)))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.evaluation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: few episodes, no Monte Carlo check")
    parser.add_argument("--repeats", type=int, default=1, help="alternations of each side-by-side pair (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = cli.parse(parser, argv)
    episodes, mc = (4, False) if args.quick else (100, True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        print("profile of compose.run (lockstep) ...", flush=True)
        result = {"profile": profile(episodes, mc, out / "profile")}
        print("compose.run, one episode at a time, in lockstep, and in lockstep with step threads ...", flush=True)
        runs = side_by_side("compose", lambda o: run_compose(episodes, mc, o), out, args.repeats)
        result["compose_run"] = {k: v for k, v in runs.items() if k != "results"} | {
            "numbers": {mode: compose_numbers(r) for mode, r in runs["results"].items()}}
        print("skills.evaluate, one episode at a time, in lockstep, and in lockstep with step threads ...", flush=True)
        evals = side_by_side("evaluate", lambda o: evaluate_cli.evaluate_skill(SPEC, episodes=episodes), out, args.repeats)
        result["skills_evaluate"] = {k: v for k, v in evals.items() if k != "results"} | {
            "numbers": {mode: {k: r[k] for k in ("success_rate", "return_mean", "soft_return_mean")}
                        for mode, r in evals["results"].items()}}
        print("twin episodes ...", flush=True)
        result["twins"] = twins(episodes)
    print(json.dumps({k: v for k, v in result.items()}, indent=1))
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
