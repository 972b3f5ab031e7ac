"""Evidence across seeds:  python -m compose.study SPEC [SPEC ...] --seeds N [--steps S] [--ray [ADDRESS]]

For every seed: train each constituent and the joint skill (reusing any complete skill of that task,
seed, budget and settings already in the study library or the default one), compose them, and run
``compose.run``, stochastic (the max-ent policies, with the Monte Carlo
bound check) and deterministic, each seed on its own episodes. Then aggregate across seeds: the
interquartile mean (IQM; Agarwal et al. 2021) with a 95% hierarchical bootstrap interval over (seed,
episode) (``compose.stats``; each spec on its own) of success, return, soft return and the composed/joint
success ratio, the bound figures, learning curves with CI bands, and a per-seed table. Writes ``study.json``,
``study.md`` and plots under ``--out``.

Trials are plain functions. By default they run in a local process pool sized to the cores (one torch
thread each); ``--ray`` starts a local Ray and runs them as Ray tasks, ``--ray ADDRESS`` joins a cluster
(give a ``--library`` and ``--out`` on shared storage). Ray is the optional extra ``.[cluster]``.
A study is resumable: each finished trial leaves ``<out>/trials/<trial>.json`` and is not run again, and a seed
whose training was interrupted finishes from its last checkpoint (one whose run is dead and whose budget is the
study's) instead of starting over; a failed trial is reported and does not stop the others. A record is checked
when it is read back (``compose.trial_records``): one that is unreadable, malformed, out of range or names a skill
outside the study's libraries is named (a warning, and ``rerun`` in study.json) and its trial runs again. Each
invocation's wall time goes into ``<out>/invocations.json``, so study.json gives a resumed study's whole cost. Local
workers end with the study: each exits when the study's process dies (a parent-death signal, and a watch on its
parent as a fallback), taking its own child processes with it.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

import envs
import skills
from envs.cli import add_arm_arguments, add_task_arguments, arm_kwargs, load_task_modules, run_command
from skills.cli import positive_int, seed_list
from skills.evaluation import EVAL_SEED
from skills.evaluation.lockstep import share_cores, step_threads
from skills.library import atomic_write_text, registered_task
from skills.training import MultiSeedTrainer, Trainer, rest_of_budget
from skills.training.defaults import sql_config, train_config

from .bound import BoundConfig
from .mc_check import MCBoundConfig
from .operators import OPERATORS, FittedOperator, make_operator
from .run import BuildConfig, CompositionReport, EvaluationConfig, Sources, run
from .run.cli import add_operator_setting_argument
from .sampling import SamplerConfig
from .stats import aggregate as aggregate_seeds
from .stats import episode_seed, mean_over_seeds
from .trial_records import COLLISIONS, METRICS, BadRecord, clean_numbers, read_invocations, read_record

POLICIES_FIXED = ("composed", "joint")
BOUND_FIGURES = ("suboptimality_mean", "upper_falsified_fraction", "lower_holds_fraction")


# ---- trials -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """What every trial of a study shares."""
    library: str  # where new skills go
    out: str  # where reports and trial records go
    steps: int | None = None  # override every training budget (smoke runs)
    episodes: int = 100
    mc: bool = True  # the Monte Carlo bound check in the stochastic evaluation
    quick_build: bool = False  # small composed-sampler and bound builds (tests)
    env_kwargs: tuple = ()  # envs.make options of the evaluation, e.g. a custom arm: (("arm", path), ...)
    task_modules: tuple[str, ...] = ()  # a user's task definitions (--tasks), loaded in every trial's process
    operator: str = "average"  # how each seed's skills are composed (compose.operators); the bound is average's
    order: tuple[str, ...] = ()  # priority: the skills, highest priority first
    operator_settings: tuple[tuple[str, float], ...] = ()  # (KEY, NUMBER) pairs, e.g. (("target_update_interval", 100),)

    def make_operator(self):
        """The composition operator of every evaluation trial (``compose.operators.make_operator``'s errors)."""
        return make_operator(self.operator, **({"order": list(self.order)} if self.order else {}),
                             **dict(self.operator_settings))

    @property
    def operator_label(self) -> str:
        """The operator and its settings as the evaluation trials' keys name them: ``dc``,
        ``dc-target_update_interval100``."""
        return "-".join([self.operator, *(f"{key}{value:g}" for key, value in self.operator_settings)])


def train_settings(task: str, seed: int, settings: Settings):
    """The SQL and run settings a study trains ``task`` with for ``seed``: the task's tuned defaults, or with
    ``settings.steps`` a short smoke budget (few evaluations, no convergence report)."""
    family = envs.get_task(task).family.name
    sql = sql_config(task, family)
    overrides = {"seed": seed, "progress": False, "overlap_env_step": False, "threads": 1}
    if settings.steps is not None:
        overrides |= {"steps": settings.steps, "eval_interval": settings.steps, "eval_episodes": 5,
                      "final_eval_episodes": min(20, settings.episodes), "convergence": False}
    return sql, train_config(task, **overrides)


def find_trained(task: str, seed: int, settings: Settings) -> str | None:
    """A complete skill of ``task`` with this seed, budget and SQL settings, in the study library or the
    default one: its path, or None."""
    sql, run = train_settings(task, seed, settings)
    for library in (settings.library, None):
        for entry in reversed(skills.list_skills(library)):
            info = entry.info
            if (entry.name == task and info.complete and info.seed == seed and info.env_steps == run.steps
                    and info.sql_config() == sql and info.composed_from is None):
                return str(entry.path)
    return None


def find_interrupted(task: str, seed: int, settings: Settings) -> tuple[str, int] | None:
    """The newest interrupted checkpoint of ``task`` for this seed in the study library whose run is dead and whose
    budget ends at the study's (same SQL settings): its path and the steps it has done, or None. The study finishes
    it rather than starting the seed over (``skills.train --resume``'s rule)."""
    sql, run = train_settings(task, seed, settings)
    for entry in reversed(skills.list_skills(settings.library)):
        info = entry.info
        if (entry.name == task and info.status == "training" and info.seed == seed and info.composed_from is None
                and info.steps_left and info.env_steps + info.steps_left == run.steps and info.sql_config() == sql
                and skills.library.abandoned(entry.path)):
            return str(entry.path), info.env_steps
    return None


def train_trial(task: str, seed: int, settings: Settings) -> dict:
    """Make sure a skill of ``task`` exists for ``seed`` (finishing an interrupted one); returns its path and learning
    curve."""
    load_task_modules(settings.task_modules)
    torch.set_num_threads(1)
    found = find_trained(task, seed, settings)
    if found is None:
        sql, run = train_settings(task, seed, settings)
        interrupted = find_interrupted(task, seed, settings)
        resume = interrupted and interrupted[0]
        if resume:
            run = rest_of_budget(run, [resume], settings.library)
        found = str(Trainer(task, sql, run, out=settings.library, resume=resume).train().path)
    skill = skills.load(found)
    return {"task": task, "seed": seed, "path": found, "env_steps": skill.info.env_steps,
            "wall_time_s": skill.info.wall_time_s, "history": skill.info.raw.get("history", [])}


def train_seeds_trial(task: str, seeds: Sequence[int], settings: Settings) -> dict[str, dict]:
    """Make sure skills of ``task`` exist for all ``seeds``, training the missing ones together in one process
    (``skills.training.loop``: one stacked update; each seed is the seed trained alone to float rounding, and exactly
    the seed trained in the same stack, which its manifest records); ``train_trial``'s record per seed, keyed by that
    trial's key."""
    load_task_modules(settings.task_modules)

    torch.set_num_threads(1)
    missing = [seed for seed in seeds if find_trained(task, seed, settings) is None]
    groups: dict[int, dict[int, str | None]] = {}  # steps done -> {seed: checkpoint}; seeds stacked must step together
    for seed in missing:
        interrupted = find_interrupted(task, seed, settings)
        groups.setdefault(interrupted[1] if interrupted else 0, {})[seed] = interrupted and interrupted[0]
    for _, group in sorted(groups.items()):
        sql, run = train_settings(task, min(group), settings)
        resume = {seed: path for seed, path in group.items() if path is not None} or None
        if resume:
            run = rest_of_budget(run, list(resume.values()), settings.library)
        MultiSeedTrainer(task, sql, replace(run, overlap_env_step=True), sorted(group), out=settings.library,
                         resume=resume).train()
    return {f"train-{task}-seed{seed}": train_trial(task, seed, settings) for seed in seeds}


def kept_metrics(row: dict) -> dict:
    """What a trial record keeps of one policy's row of a report: the metrics, the collision rate (none where the task
    reports no collisions, as on the point mass or the pusher: the study's table then shows a dash, not a 0 that would
    claim none happened), the final measures and the per-episode record."""
    return {k: row.get(k) for k in METRICS} | {
        COLLISIONS: row.get(COLLISIONS) if row.get("collisions_checked", True) else None,
        "final_measures": row.get("final_measures", {}), "per_episode": row.get("per_episode", {})}


def eval_trial(spec: str, seed: int, paths: dict[str, str], settings: Settings) -> dict:
    """``compose.run`` of this seed's skills, stochastic then deterministic: the rows that the study aggregates."""
    load_task_modules(settings.task_modules)
    torch.set_num_threads(1)
    parts = spec.split("+")
    build_config = BuildConfig(progress=False)
    if settings.quick_build:
        build_config = BuildConfig(sampler=SamplerConfig(updates=100, batch_size=32),
                                   bound=BoundConfig(updates=100, batch_size=64, n_value_samples=64), progress=False)
    operator = settings.make_operator()
    if settings.quick_build and isinstance(operator, FittedOperator):
        operator = replace(operator, tolerance=0.5, target_update_interval=5, value_samples=8)
    out = {}
    for mode in ("stochastic", "deterministic"):
        deterministic = mode == "deterministic"
        evaluation = EvaluationConfig(episodes=settings.episodes, deterministic=deterministic,
                                      seed=episode_seed(seed, EVAL_SEED),
                                      mc=MCBoundConfig() if settings.mc and not deterministic else None,
                                      env_kwargs=dict(settings.env_kwargs))
        sources = Sources(library=settings.library, joint=paths.get(spec),
                          out=Path(settings.out) / "runs" / f"{spec}-seed{seed}-{mode}")
        report = run([paths[p] for p in parts], [operator], evaluation=evaluation,
                     build_config=build_config, sources=sources)
        rows = {"composed": report.rows["composed"], "joint": report.reference(),
                **{p: report.rows[label] for p, label in zip(parts, report.constituents, strict=False)}}
        out[mode] = {name: kept_metrics(row) for name, row in rows.items()}
        if mode == "stochastic":
            assert isinstance(report, CompositionReport)
            mc_report = report.bound.get("mc", {})
            out["bound"] = {k: mc_report.get(k) for k in BOUND_FIGURES} | {
                "mean_C": report.bound.get("learned", {}).get("mean_C"), "verdict": mc_report.get("verdict"),
                "controls": mc_report.get("controls"),
                "actors": {n: a.get("soft_return_mean") for n, a in mc_report.get("actors", {}).items()}} | (
                policy_gap_figures(mc_report["policy_gap"], dict(zip(report.constituents, parts, strict=False)))
                if "policy_gap" in mc_report else {})
    return {"spec": spec, "seed": seed, **out}


def policy_gap_lines(bound: dict) -> list[str]:
    """The study's lines on the lower side against ``D`` (pooled over each seed's pairs), when it was checked."""
    if "lower_D_holds_composed" not in bound:
        return []
    lines = [f"Lower side with the policy's own gap D (margin G - (Q_w - D) pooled over pairs; holds when mean + 2 SE >= 0), "
             f"per seed: composed sampler {bound['lower_D_holds_composed']}, exact pi_w {bound['lower_D_holds_exact']}; "
             f"every control failed as it must: {bound['D_controls_failed_as_they_must']}; every control that should fail "
             f"(one below the joint skill's soft return by more than 2 SE on the same pairs) failed: "
             f"{bound.get('D_controls_failed_where_they_should')}", ""]
    by_actor = {n: m for n, m in bound.get("lower_D_margin_by_actor", {}).items() if m["mean"] is not None}
    if by_actor:
        pooled = "; ".join(f"{n} {m['mean']:+.3f} +- {m['se']:.3f} ({'holds' if m['holds'] else 'fails'}, {m['seeds']} seeds)"
                           for n, m in by_actor.items())
        lines += [f"Over the seeds (mean of the per-seed margins +- SE across seeds; holds when mean + 2 SE >= 0): {pooled}",
                  ""]
    return lines


def actor_name(name: str, tasks: dict[str, str]) -> str:
    """An actor of the bound check named by what it is, not where its skill lies: ``<label> alone`` becomes
    ``<task> alone`` (``tasks`` maps each constituent's label to its task), so that seeds can be pooled."""
    label = name.removesuffix(" alone")
    return f"{tasks[label]} alone" if name.endswith(" alone") and label in tasks else name


def policy_gap_figures(side: dict, tasks: dict[str, str] | None = None) -> dict:
    """A seed's lower side against the policy's own gap ``D`` (``compose.mc_check.policy_gap_side``), as study figures:
    ``D``, the composed sampler's margin and verdict, the exact ``pi_w``'s verdict, the controls, and every actor's
    ``[margin, SE]`` by ``actor_name`` (``lower_D_margins``: what ``summarise_spec`` pools over seeds)."""
    composed = side["pooled"]["composed"]
    return {"D_mean": side["D_mean"], "lower_D_margin_composed": composed["margin_mean"],
            "lower_D_margin_se_composed": composed["margin_se"], "lower_D_holds_composed": composed["holds"],
            "lower_D_holds_exact": side["pooled"].get("exact pi_w", {}).get("holds"),
            "lower_D_controls": side["controls"],
            "lower_D_margins": {actor_name(n, tasks or {}): [v["margin_mean"], v["margin_se"]]
                                for n, v in side["pooled"].items()}}


def eval_key(spec: str, seed: int, operator: str = "average") -> str:
    """The evaluation trial's key (and record name); another operator's evaluations, or the same operator's with
    other settings (``operator`` is ``Settings.operator_label``), are other trials."""
    return f"eval-{spec}-seed{seed}" + ("" if operator == "average" else f"-{operator}")


def trial_record(out: Path, key: str) -> Path:
    return out / "trials" / f"{key.replace('/', '_')}.json"


def record_kind(key: str) -> str:
    """What the record of trial ``key`` holds: ``"train"`` (train-<task>-seed<N>), ``"group"`` (train-<task>-seeds<N-M..>:
    several seeds' train records) or ``"eval"`` (eval-<spec>-seed<N>)."""
    if key.startswith("train-"):
        return "group" if re.search(r"-seeds[\d-]+$", key) else "train"
    return "eval"


def _call(fn: Callable, args: tuple) -> dict:
    """Run one trial, catching its failure so that the others go on."""
    try:
        return {"ok": True, "result": fn(*args)}
    except Exception as err:  # noqa: BLE001 - a trial's failure is data, reported in the study
        return {"ok": False, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(limit=4)}


def _call_on_one_cpu(fn: Callable, args: tuple) -> dict:
    """``_call`` in a Ray task, which is given one CPU: its envs stepped by one thread."""
    with step_threads(1):
        return _call(fn, args)


# ---- executors --------------------------------------------------------------------------------------
Done = Callable[[str, dict], None]


PARENT_WATCH_S = 0.5  # how often a worker checks that the study's process still lives (the fallback)
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _end_worker(*_: Any) -> None:
    """End this worker and the processes it started (e.g. a trial's env processes) at once."""
    for child in multiprocessing.active_children():
        child.kill()
    os._exit(1)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_WATCH_S)
    _end_worker()


def end_with_parent(parent: int) -> None:
    """Make this process (a study worker) end when ``parent`` does: Linux's parent-death signal (SIGTERM, whose
    handler also ends the worker's own children), and a daemon thread watching ``os.getppid()`` where there is none."""
    signal.signal(signal.SIGTERM, _end_worker)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the watch below is the only check
        pass
    if os.getppid() != parent:  # the study died before the signal was armed
        _end_worker()
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="watch-study").start()


def start_worker(parent: int, workers: int) -> None:
    """A study worker's start: it ends with the study (``end_with_parent``) and shares the cores with the other
    ``workers - 1`` (its envs stepped by that share of helper threads, ``share_cores``)."""
    end_with_parent(parent)
    share_cores(workers)


def run_local(jobs: list[tuple[str, Callable, tuple]], workers: int, done: Done) -> None:
    """Trials in a local process pool; ``done(key, {"ok", "result" | "error"})`` as each one finishes. The workers
    end with this process (``end_with_parent``), even when it is killed."""
    if workers <= 1:
        for key, fn, args in jobs:
            done(key, _call(fn, args))
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=start_worker, initargs=(os.getpid(), workers)) as pool:
        futures = {pool.submit(_call, fn, args): key for key, fn, args in jobs}
        for future in as_completed(futures):
            done(futures[future], future.result())


def run_ray(jobs: list[tuple[str, Callable, tuple]], address: str | None, done: Done) -> None:
    """The same trials as Ray tasks (one CPU each) on a local Ray (``address`` None) or a cluster."""
    try:
        import ray
    except ImportError:
        raise SystemExit("error: --ray needs Ray: pip install -e '.[cluster]'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}} if address is None else None)
    remote = ray.remote(num_cpus=1)(_call_on_one_cpu)
    pending = {remote.remote(fn, args): key for key, fn, args in jobs}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        key = pending.pop(ready[0])
        try:
            done(key, ray.get(ready[0]))
        except Exception as err:  # noqa: BLE001 - a lost worker is one failed trial
            done(key, {"ok": False, "error": f"{type(err).__name__}: {err}"})


# ---- the study ----------------------------------------------------------------------------------------
def run_phase(jobs: list[tuple[str, Callable, tuple]], out: Path, executor: Callable,
              libraries: Sequence[str | Path] = (), rerun: dict | None = None) -> tuple[dict, dict]:
    """Run the jobs not yet recorded under ``out/trials``, recording each as it finishes (so an interrupted
    study loses only the trials in flight); returns (results, failures) by key. A record that fails its checks
    (``compose.trial_records.read_record``; a train record's skill must lie in one of ``libraries``) is named in a
    warning and in ``rerun``, and its trial runs again."""
    results, failures, pending = {}, {}, []
    for key, fn, args in jobs:
        record = trial_record(out, key)
        if record.exists() or record.is_symlink():
            try:
                results[key] = read_record(record, record_kind(key), libraries)
                continue
            except BadRecord as err:
                warnings.warn(f"{err}; running trial {key} again", stacklevel=2)
                if rerun is not None:
                    rerun[key] = str(err)
        pending.append((key, fn, args))

    def done(key: str, outcome: dict) -> None:
        if outcome["ok"]:
            results[key] = clean_numbers(outcome["result"])
            atomic_write_text(trial_record(out, key), json.dumps(results[key]))
        else:
            failures[key] = outcome["error"]

    if pending:
        executor(pending, done)
    return results, failures


@dataclass(frozen=True)
class TrialOptions:
    """How each trial trains and evaluates (``Settings`` without the paths)."""
    steps: int | None = None  # override every training budget (smoke runs)
    episodes: int = 100  # evaluation episodes per policy
    mc: bool = True  # the Monte Carlo bound check in the stochastic evaluation
    quick_build: bool = False  # small composed-sampler and bound builds (tests)
    env_kwargs: dict | None = None  # envs.make options of the evaluation, e.g. a custom arm
    task_modules: tuple[str, ...] = ()  # a user's task definitions (--tasks), loaded in every trial's process
    operator: str = "average"  # how each seed's skills are composed (compose.operators)
    order: tuple[str, ...] = ()  # priority: the skills, highest priority first
    operator_settings: tuple[tuple[str, float], ...] = ()  # (KEY, NUMBER) pairs for the operator


@dataclass(frozen=True)
class Runner:
    """Where the trials run: a local process pool of ``workers`` (default: the CPU count), or Ray (``ray_address``
    None: a local Ray; an address: that cluster; False: no Ray); ``stacked``: each task's missing seeds train together
    in one trial (``skills.training.loop``)."""
    workers: int | None = None
    ray_address: str | None | bool = False
    stacked: bool = False

    def executor(self) -> Callable:
        if self.ray_address is not False:
            address = self.ray_address if isinstance(self.ray_address, str) else None
            return lambda jobs, done: run_ray(jobs, address, done)
        workers = self.workers or os.cpu_count() or 1
        return lambda jobs, done: run_local(jobs, workers, done)


def study(specs: Sequence[str], seeds: Sequence[int], *, out: str | Path, library: str | Path | None = None,
          trials: TrialOptions = TrialOptions(), runner: Runner = Runner()) -> dict:
    """Train, compose and evaluate ``specs`` over ``seeds``; aggregate; write study.json, study.md and plots."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    load_task_modules(trials.task_modules)
    for spec in specs:
        if spec not in envs.TASKS:
            registered_task(spec, library)  # the mean of registered tasks: registered now
        if spec not in envs.TASKS or not envs.TASKS[spec].parts:
            combined = [n for n, t in envs.TASKS.items() if t.parts]
            raise ValueError(f"{spec!r} is not a combined task with a joint reference; combined tasks: {', '.join(combined)}")
    settings = Settings(library=str(library or out / "library"), out=str(out), steps=trials.steps,
                        episodes=trials.episodes, mc=trials.mc, quick_build=trials.quick_build,
                        env_kwargs=tuple(sorted((trials.env_kwargs or {}).items())),
                        task_modules=tuple(trials.task_modules), operator=trials.operator, order=tuple(trials.order),
                        operator_settings=tuple(trials.operator_settings))
    settings.make_operator()  # an unknown operator or a setting it does not take: refused before any training
    executor = runner.executor()
    started = time.perf_counter()
    tasks = list(dict.fromkeys(t for spec in specs for t in (*spec.split("+"), spec)))
    train_jobs = [(f"train-{task}-seed{seed}", train_trial, (task, seed, settings)) for seed in seeds for task in tasks]
    failures: dict = {}
    rerun: dict[str, str] = {}
    libraries = (settings.library, str(skills.default_library()))
    if runner.stacked:
        failures = train_stacked(tasks, seeds, settings, out, executor)
        train_jobs = [job for job in train_jobs if trial_record(out, job[0]).exists()]  # a failed group is not retried
    trained, train_failures = run_phase(train_jobs, out, executor, libraries, rerun)
    failures |= train_failures
    eval_jobs = []
    for spec in specs:
        for seed in seeds:
            keys = {t: f"train-{t}-seed{seed}" for t in (*spec.split("+"), spec)}
            if all(k in trained for k in keys.values()):
                paths = {t: trained[k]["path"] for t, k in keys.items()}
                eval_jobs.append((eval_key(spec, seed, settings.operator_label), eval_trial, (spec, seed, paths, settings)))
    evaluated, eval_failures = run_phase(eval_jobs, out, executor, libraries, rerun)
    failures |= eval_failures
    result = {"specs": list(specs), "seeds": list(seeds), "settings": settings.__dict__ | {
                  "env_kwargs": {k: str(v) for k, v in settings.env_kwargs}},
              "summary": {spec: summarise_spec(spec, seeds, evaluated, settings.operator_label) for spec in specs},
              "curves": {task: curves(task, seeds, trained) for task in tasks},
              "failures": failures, "rerun": rerun} | wall_times(out, time.perf_counter() - started)
    write_outputs(result, out)
    return result


def train_stacked(tasks: Sequence[str], seeds: Sequence[int], settings: Settings, out: Path, executor: Callable) -> dict:
    """One ``train_seeds_trial`` per task over its seeds without a trial record; each finished seed gets its own
    record (as ``train_trial``'s), so a rerun skips it. Returns the failures by key."""
    jobs = []
    for task in tasks:
        pending = [seed for seed in seeds if not trial_record(out, f"train-{task}-seed{seed}").exists()]
        if pending:
            jobs.append((f"train-{task}-seeds{'-'.join(map(str, pending))}", train_seeds_trial, (task, pending, settings)))
    groups, failures = run_phase(jobs, out, executor, (settings.library, str(skills.default_library())))
    for per_seed in groups.values():
        for key, record in per_seed.items():
            atomic_write_text(trial_record(out, key), json.dumps(clean_numbers(record)))
    return failures


def summarise_spec(spec: str, seeds: Sequence[int], evaluated: dict, operator: str = "average") -> dict:
    """``summary[spec][policy][metric] = {"iqm", "ci", "method", "per_seed", "seeds", "seeds_failed"}`` (stochastic),
    the deterministic figures under ``"deterministic"``, the composed/joint success ratio and the bound figures.
    Success, return and soft return and the ratio get hierarchical (seed, episode) intervals from each seed's own
    episodes (``compose.stats``); seeds with no evaluation are counted as failed, by seed."""
    runs = [evaluated.get(eval_key(spec, seed, operator)) for seed in seeds]
    policies = [*POLICIES_FIXED, *spec.split("+")]
    aggregate = partial(aggregate_seeds, seeds=list(seeds))  # failed seeds listed by number
    out: dict = {}
    for mode, target in (("stochastic", out), ("deterministic", out.setdefault("deterministic", {}))):
        for policy in policies:
            target[policy] = {metric.removesuffix("_rate").removesuffix("_mean"): aggregate(
                [r[mode][policy].get(metric) if r else None for r in runs], episodes_of(runs, mode, policy, metric))
                for metric in METRICS}
            collisions = [r[mode][policy].get(COLLISIONS) if r else None for r in runs]
            if any(c is not None for c in collisions):  # records written before collisions were kept have none
                target[policy]["collision"] = aggregate(collisions)
            measures = sorted({k for r in runs if r for k in r[mode][policy].get("final_measures", {})})
            for measure in measures:  # e.g. the pusher's final puck-goal distance (envs.pusher)
                target[policy][f"final_{measure}"] = aggregate(
                    [r[mode][policy].get("final_measures", {}).get(measure) if r else None for r in runs])
        ratio = [r[mode]["composed"]["success_rate"] / r[mode]["joint"]["success_rate"]
                 if r and r[mode]["joint"].get("success_rate") else None for r in runs]
        target["composed_over_joint"] = aggregate(ratio, episodes_of(runs, mode, "composed", "success_rate"),
                                                  episodes_of(runs, mode, "joint", "success_rate"),
                                                  undefined=[r is not None and not r[mode]["joint"].get("success_rate")
                                                             for r in runs])  # a joint that never succeeded
    out["bound"] = {k: aggregate([r["bound"].get(k) if r else None for r in runs]) for k in (*BOUND_FIGURES, "mean_C")}
    out["bound"]["controls_failed_as_they_must"] = [
        all(c["failed"] for c in r["bound"].get("controls") or []) if r and r["bound"].get("controls") else None
        for r in runs]
    if any(r and "D_mean" in r["bound"] for r in runs):  # records written before D was fitted have none
        out["bound"] |= {k: aggregate([r["bound"].get(k) if r else None for r in runs])
                         for k in ("D_mean", "lower_D_margin_composed")}
        out["bound"] |= {k: [r["bound"].get(k) if r else None for r in runs]
                         for k in ("lower_D_holds_composed", "lower_D_holds_exact")}
        out["bound"]["D_controls_failed_as_they_must"] = [
            all(c["failed"] for c in r["bound"]["lower_D_controls"]) if r and "lower_D_controls" in r["bound"] else None
            for r in runs]
        out["bound"]["D_controls_failed_where_they_should"] = [
            all(c["failed"] or not c.get("should_fail", True) for c in r["bound"]["lower_D_controls"])
            if r and "lower_D_controls" in r["bound"] else None for r in runs]
        margins = [(r["bound"].get("lower_D_margins") or {}) if r else {} for r in runs]  # none in earlier records
        actors = dict.fromkeys(name for m in margins for name in m)
        out["bound"]["lower_D_margin_by_actor"] = {n: mean_over_seeds([m[n][0] if n in m else None for m in margins])
                                                   for n in actors}
    out["seeds_evaluated"] = [seed for seed, r in zip(seeds, runs, strict=True) if r]
    out["seeds_failed"] = [seed for seed, r in zip(seeds, runs, strict=True) if not r]
    return out


EPISODE_KEYS = {"success_rate": "success", "return_mean": "return", "soft_return_mean": "soft_return"}


def episodes_of(runs: Sequence[dict | None], mode: str, policy: str, metric: str) -> list | None:
    """Each seed's per-episode outcomes of ``metric`` (None for a seed without them), or None if no seed has any."""
    key = EPISODE_KEYS[metric]
    found = [np.asarray(r[mode][policy].get("per_episode", {}).get(key), np.float64)
             if r and r[mode][policy].get("per_episode", {}).get(key) is not None else None for r in runs]
    return found if any(f is not None for f in found) else None


def curves(task: str, seeds: Sequence[int], trained: dict) -> dict:
    """Learning curves (stochastic evaluation return and success) of ``task`` over seeds, on common steps."""
    histories = [trained[f"train-{task}-seed{s}"]["history"] for s in seeds if f"train-{task}-seed{s}" in trained]
    if not histories:
        return {}
    steps = sorted(set.intersection(*[{h["env_steps"] for h in hist} for hist in histories]))
    out: dict[str, Any] = {"env_steps": steps}
    for key in ("return_mean", "success_rate"):
        table = [[next(h[key] for h in hist if h["env_steps"] == s) for s in steps] for hist in histories]
        agg = [aggregate_seeds([row[i] for row in table]) for i in range(len(steps))]
        out[key] = {"iqm": [a["iqm"] for a in agg], "ci": [a["ci"] for a in agg]}
    return out


# ---- outputs --------------------------------------------------------------------------------------------
def fmt(cell: dict, digits: int = 2) -> str:
    if cell["iqm"] is None:
        return "–"
    lo, hi = cell["ci"]
    return f"{cell['iqm']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def markdown(result: dict) -> str:
    lines = [f"# Study: {', '.join(result['specs'])}, seeds {result['seeds']}", "",
             "IQM over seeds [95% interval]. Success, return, soft return and composed/joint: a hierarchical bootstrap "
             "over (seed, episode), each seed evaluated on its own episodes (compose.stats); the bound's figures: a "
             "percentile bootstrap over seeds. Stochastic: every policy samples its max-ent policy; deterministic: the "
             "best of 32 sampled actions under its Q. Soft returns credit each policy with its own entropy.", ""]
    operator = result["settings"].get("operator", "average")
    bounded = OPERATORS[operator].bounded
    given = ", ".join(f"{key}={value:g}" for key, value in result["settings"].get("operator_settings", ()))
    lines += [f"Composed with `{operator}`{f' ({given})' if given else ''} (compose.operators), zero environment samples.", ""]
    for spec, s in result["summary"].items():
        policies = [*POLICIES_FIXED, *spec.split("+")]
        lines += [f"## {spec} (seeds evaluated: {s['seeds_evaluated']})", "",
                  "| policy | success (stochastic) | return | soft return | collisions (stochastic) "
                  "| success (deterministic) |",
                  "|---|---|---|---|---|---|"]
        for p in policies:
            collisions = fmt(s[p]["collision"]) if "collision" in s[p] else "–"
            lines.append(f"| {p} | {fmt(s[p]['success'])} | {fmt(s[p]['return'])} | {fmt(s[p]['soft_return'])} | "
                         f"{collisions} | {fmt(s['deterministic'][p]['success'])} |")
        measures = [k for k in s["composed"] if k.startswith("final_")]
        if measures:
            lines += ["", "| policy | " + " | ".join(m.removeprefix("final_") + " at the end (m)" for m in measures) + " |",
                      "|---|" + "---|" * len(measures)]
            lines += [f"| {p} | " + " | ".join(fmt(s[p][m], 3) for m in measures) + " |" for p in policies]
        figures = {k: v for k, v in s["bound"].items() if isinstance(v, dict) and "iqm" in v}  # the aggregated figures
        lines += ["", f"composed / joint success: stochastic {fmt(s['composed_over_joint'])}, deterministic "
                  f"{fmt(s['deterministic']['composed_over_joint'])}", "",
                  *(["Bound (Monte Carlo, stochastic policies): " + ", ".join(
                      f"{k} {fmt(v, 3)}" for k, v in figures.items()), "",
                     f"Every negative control failed as it must, per seed: {s['bound']['controls_failed_as_they_must']}", "",
                     *policy_gap_lines(s["bound"])]
                    if bounded else ["Bound: not checked; it is `average`'s (Haarnoja et al. 2018).", ""]),
                  f"Seeds that failed (no evaluation): {s['seeds_failed'] or 'none'}", "",
                  "Per seed (stochastic success): " + "; ".join(
                      f"{p} {s[p]['success']['per_seed']}" for p in policies), ""]
    if result["failures"]:
        lines += ["## Failed trials", ""] + [f"* {k}: {v}" for k, v in result["failures"].items()] + [""]
    runs = result.get("invocations", 1)  # study.json from before the ledger: its one invocation
    lines.append(f"Wall time {result['wall_time_s']:.0f} s" + (
        f" (this invocation); {result['wall_time_total_s']:.0f} s over the {runs} invocations in invocations.json."
        if runs > 1 else "."))
    return "\n".join(lines) + "\n"


def plot(result: dict, out: Path) -> list[Path]:
    from skills.evaluation.plots import _pyplot, save_figure

    plt = _pyplot()

    paths = []
    for spec, s in result["summary"].items():
        policies = [*POLICIES_FIXED, *spec.split("+")]
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        for ax, mode in zip(axes, ("stochastic", "deterministic"), strict=False):
            rows = s if mode == "stochastic" else s["deterministic"]
            for i, p in enumerate(policies):
                cell = rows[p]["success"]
                if cell["iqm"] is None:
                    continue
                ax.bar(i, cell["iqm"], color=f"C{i}", alpha=0.7)
                ax.errorbar(i, cell["iqm"], yerr=[[cell["iqm"] - cell["ci"][0]], [cell["ci"][1] - cell["iqm"]]],
                            color="k", capsize=4)
                ax.scatter([i] * len([v for v in cell["per_seed"] if v is not None]),
                           [v for v in cell["per_seed"] if v is not None], color="k", s=10, zorder=3)
            ax.set_xticks(range(len(policies)), policies)
            ax.set_ylim(0, 1.05)
            ax.set_title(f"{spec}: success, {mode} (IQM, 95% CI, seeds as dots)", fontsize=9)
        fig.tight_layout()
        paths.append(out / f"study_{spec}_success.png")
        save_figure(fig, paths[-1], dpi=110)
    tasks = [t for t, c in result["curves"].items() if c]
    if tasks:
        fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.4), squeeze=False)
        for ax, task in zip(axes[0], tasks, strict=False):
            c = result["curves"][task]
            iqm_ = np.array(c["return_mean"]["iqm"], dtype=float)
            ci = np.array(c["return_mean"]["ci"], dtype=float)
            ax.plot(c["env_steps"], iqm_, color="tab:blue")
            ax.fill_between(c["env_steps"], ci[:, 0], ci[:, 1], color="tab:blue", alpha=0.25)
            ax.set_title(f"{task}: return (IQM, 95% CI)", fontsize=9)
            ax.set_xlabel("environment steps")
        fig.tight_layout()
        paths.append(out / "study_curves.png")
        save_figure(fig, paths[-1], dpi=110)
    return paths


def wall_times(out: Path, seconds: float) -> dict:
    """This invocation's wall time appended to the study's ledger (``<out>/invocations.json``), and the figures
    study.json carries: ``wall_time_s`` (this invocation), ``wall_time_total_s`` and ``invocations`` (every
    invocation the ledger holds: a resumed study's cost is their sum; an invocation that was killed left no entry,
    so its time is missing from the sum). A ledger that fails its checks is named in a warning and kept beside the
    new one (``invocations.json.unreadable-<time>``); counting starts again."""
    path = out / "invocations.json"
    try:
        ledger = read_invocations(path)
    except BadRecord as err:
        kept = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(path, kept)
        warnings.warn(f"{err}; kept as {kept.name}, counting wall time from this invocation", stacklevel=3)
        ledger = []
    ledger.append({"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_time_s": round(seconds, 1)})
    atomic_write_text(path, json.dumps(ledger, indent=1))
    return {"wall_time_s": round(seconds, 1), "wall_time_total_s": round(sum(r["wall_time_s"] for r in ledger), 1),
            "invocations": len(ledger)}


def write_outputs(result: dict, out: Path) -> None:

    result["plots"] = [str(p) for p in plot(result, out)]
    atomic_write_text(out / "study.json", json.dumps(result, indent=1))
    atomic_write_text(out / "study.md", markdown(result))


# ---- command line ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:

    parser = argparse.ArgumentParser(prog="python -m compose.study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("specs", nargs="+", help="combined tasks to study, e.g. reach+avoid push-x+push-y")
    parser.add_argument("--seeds", type=seed_list, default=list(range(5)), help="N (seeds 0..N-1), 0,1,2 or 3-7 (default 5)")
    parser.add_argument("--steps", type=positive_int, help="override every training budget (smoke runs)")
    parser.add_argument("--episodes", type=positive_int, default=100, help="evaluation episodes per policy (default 100)")
    parser.add_argument("--out", help="output directory (default runs/study/<time>)")
    parser.add_argument("--library", help="library for the skills the study trains (default <out>/library); "
                        "complete skills of the same seed and settings there or in the default library are reused")
    parser.add_argument("--workers", type=positive_int, help="local trials at once (default: the CPU count)")
    # --arm etc.: evaluate on a custom arm (the skills are trained on the task's own robot)
    parser.add_argument("--no-mc", action="store_true", help="skip the Monte Carlo bound check")
    parser.add_argument("--ray", nargs="?", const=None, default=False, metavar="ADDRESS",
                        help="run the trials as Ray tasks: alone, on a local Ray it starts; with ADDRESS, on that cluster")
    parser.add_argument("--json", metavar="PATH", help="also copy study.json here")
    parser.add_argument("--stacked", action="store_true", help="train each task's seeds together in one process "
                        "(skills.train --seeds: one stacked update; a seed reproduces exactly only in the same stack, "
                        "docs/skills.md)")
    parser.add_argument("--operator", choices=list(OPERATORS), default="average",
                        help="how each seed's skills are composed (as compose.run --operator; default: average, the "
                             "operator the Monte Carlo bound check is about)")
    parser.add_argument("--order", type=lambda s: tuple(x for x in s.split(",") if x), default=(),
                        help="priority: the skills, highest priority first, e.g. avoid,reach")
    add_operator_setting_argument(parser, "its evaluations are trials of their own")
    add_arm_arguments(parser)
    add_task_arguments(parser)
    args = parser.parse_args(argv)
    out = Path(args.out or Path("runs") / "study" / time.strftime("%Y%m%d-%H%M%S"))

    def body() -> int:
        result = study(args.specs, args.seeds, out=out, library=args.library,
                       trials=TrialOptions(steps=args.steps, episodes=args.episodes, mc=not args.no_mc,
                                           env_kwargs=arm_kwargs(args), task_modules=tuple(args.tasks),
                                           operator=args.operator, order=args.order,
                                           operator_settings=tuple(args.operator_setting)),
                       runner=Runner(workers=args.workers, ray_address=args.ray, stacked=args.stacked))
        print(markdown(result))
        if args.json:
            atomic_write_text(args.json, (out / "study.json").read_text())
        print(f"study: {out}/study.md, {out}/study.json")
        return 1 if result["failures"] else 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())

