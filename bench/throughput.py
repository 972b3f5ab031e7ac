"""SQL training speed against Stable-Baselines3 SAC, side by side in one run:
``python -m bench.throughput --json bench/results/throughput.json`` (needs ``pip install -e '.[bench]'``).

Measures, on the ``reach`` task, with one process and the same torch thread setting:

1. training steps/s (one env step plus one update): SQL (``skills.training.Trainer.step``)
   against SB3 SAC (``model.learn``), equal hidden layers, batch, warm-up and update ratio;
   SAC sees observations scaled by SQL's ``obs_scale`` (SQL scales inside its networks);
   SQL both as it trains by default (the env steps in a child process during the update)
   and strictly in sequence in one process, as SB3 does; timed chunks interleaved in shuffled order, min and median;
2. the SQL update's matmul FLOP/s against ``torch.mm`` on the update's own main shapes;
3. env steps/s of ``reach`` against gymnasium-robotics ``FetchReach-v4`` (``bench.env_throughput``);
4. training wall-clock time (evaluation excluded) to 95% success, both algorithms evaluated
   the same way: every ``--eval-interval`` steps, ``--eval-episodes`` seeded episodes with
   each algorithm's deterministic action;
5. with ``--stacked-seeds N``: N seeds trained in one process (``skills.training.loop``, one stacked update)
   against one seed, chunks interleaved: aggregate steps/s (all seeds' env steps), the speedup over
   one seed, and the stacked update's FLOP utilisation against the same ``torch.mm`` rate (``multi_seed``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import cast

import gymnasium as gym
import numpy as np
import torch

import envs
from bench import cli, env_throughput
from bench.flops import count_flops
from bench.timing import interleaved_rates, machine_info, sync
from skills.evaluation import run_episodes
from skills.evaluation.episodes import EVAL_SEED
from skills.library import atomic_write_text
from skills.sql.learner import SQLConfig
from skills.training import MultiSeedTrainer, TrainConfig, Trainer
from skills.training.defaults import sql_config

TASK = "reach"
SUCCESS_BAR = 0.95


class ScaledObservation(gym.ObservationWrapper):
    """Multiplies observations by ``scale``: SAC gets the input scaling SQL applies inside its networks."""

    def __init__(self, env: gym.Env, scale: float):
        super().__init__(env)
        self.scale = float(scale)
        box = cast(gym.spaces.Box, env.observation_space)  # the tasks' observations are boxes
        self.observation_space = gym.spaces.Box(box.low * self.scale, box.high * self.scale, box.shape, box.dtype)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return (observation * self.scale).astype(np.float32)


def sac_env(sql: SQLConfig) -> gym.Env:
    return ScaledObservation(envs.make(TASK), sql.obs_scale)


def make_sac(sql: SQLConfig, seed: int, device: str, buffer_size: int):
    """SB3 SAC with SQL's network widths, batch, warm-up, discount and one update per env step."""
    try:
        from stable_baselines3 import SAC
    except ImportError:
        sys.exit("bench.throughput compares against Stable-Baselines3 SAC: pip install -e '.[bench]'")
    from stable_baselines3.common.logger import Logger

    model = SAC("MlpPolicy", sac_env(sql), learning_rate=sql.q_lr, buffer_size=buffer_size, batch_size=sql.batch_size,
                learning_starts=sql.warmup_steps, train_freq=1, gradient_steps=1, gamma=sql.gamma,
                policy_kwargs={"net_arch": list(sql.hidden)}, seed=seed, device=device, verbose=0)
    # SB3's default logger makes a folder in the system temp dir (or $SB3_LOGDIR) on every learn(); this one writes nowhere
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def make_sql(sql: SQLConfig, seed: int, device: str, steps: int, library: str, overlap: bool = True) -> Trainer:
    run = TrainConfig(steps=steps, seed=seed, device=device, threads=torch.get_num_threads(), progress=False,
                      overlap_env_step=overlap, convergence=False)
    return Trainer(TASK, sql, run, out=library)


def training_rates(sql: SQLConfig, steps: int, repeats: int, device: str, library: str) -> tuple[dict, Trainer]:
    """Env steps/s of SQL and SAC training (interleaved chunks of ``steps``), after their warm-ups.

    SQL runs twice: as it trains by default (the env steps in a child process during the
    update) and strictly in sequence in one process like SB3 (``sql_sequential``); both learn
    the same weights.
    """
    total = sql.warmup_steps + 500 + steps * repeats
    trainers = {"sql": make_sql(sql, 0, device, total, library),
                "sql_sequential": make_sql(sql, 0, device, total, library, overlap=False)}
    sac = make_sac(sql, 0, device, total)
    for trainer in trainers.values():
        for _ in range(sql.warmup_steps + 500):
            trainer.step()
    sac.learn(sql.warmup_steps + 500, progress_bar=False)

    def sql_chunk(trainer: Trainer) -> Callable[[], int]:
        def run() -> int:
            for _ in range(steps):
                trainer.step()
            sync(device)
            return steps
        return run

    def sac_chunk() -> int:
        sac.learn(steps, reset_num_timesteps=False, progress_bar=False)
        sync(device)
        return steps

    workloads = {name: sql_chunk(trainer) for name, trainer in trainers.items()} | {"sac": sac_chunk}
    rates = interleaved_rates(workloads, repeats)
    for trainer in trainers.values():
        trainer.close()  # the returned trainer's agent and buffer stay usable
    return rates, trainers["sql"]


def matmul_rates(device: str, repeats: int = 200) -> dict[str, float]:
    """Median FLOP/s of ``torch.mm`` on the SQL update's main shapes (same threads and device)."""
    rates = {}
    for rows, inner, cols in ((2048, 128, 128), (1024, 128, 128), (128, 1024, 128), (128, 128, 128)):
        a, b = torch.randn(rows, inner, device=device), torch.randn(inner, cols, device=device)
        for _ in range(20):
            a @ b
        times = []
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            a @ b
            sync(device)
            times.append(time.perf_counter() - start)
        rates[f"{rows}x{inner}@{inner}x{cols}"] = 2 * rows * inner * cols / statistics.median(times)
    return rates


def flop_utilization(trainer: Trainer, updates: int, repeats: int, device: str) -> dict:
    """Matmul FLOPs per SQL update, the update's achieved FLOP/s, and its share of ``torch.mm``'s."""
    agent, buffer, batch_size = trainer.agent, trainer.buffer, trainer.sql.batch_size
    rng = np.random.default_rng(0)

    def window() -> int:
        for _ in range(updates):
            agent.update(buffer.sample(batch_size, rng, agent.device))
        sync(device)
        return updates

    flops = count_flops(window) / updates
    rate = interleaved_rates({"update": window}, repeats)["update"]
    peaks = matmul_rates(device)
    peak = max(peaks.values())
    return {"sql_flops_per_update": flops, "sql_updates_per_s": rate,
            "sql_update_flops_per_s": flops * rate["median"], "matmul_flops_per_s": peak,
            "matmul_flops_per_s_by_shape": peaks, "flop_utilization": flops * rate["median"] / peak}


def multi_seed_rates(sql: SQLConfig, n: int, steps: int, repeats: int, device: str, library: str, updates: int,
                     matmul_peak: float) -> dict:
    """N seeds stacked (``MultiSeedTrainer.step``) against one seed (``Trainer.step``), interleaved chunks of
    ``steps`` env steps each after the warm-up; then the stacked update's FLOPs and FLOP/s against ``matmul_peak``."""
    total = sql.warmup_steps + 500 + steps * repeats
    run = TrainConfig(steps=total, seed=0, device=device, threads=torch.get_num_threads(), progress=False,
                      convergence=False)
    stacked = MultiSeedTrainer(TASK, sql, run, list(range(n)), out=library)
    single = make_sql(sql, 0, device, total, library)
    try:
        for _ in range(sql.warmup_steps + 500):
            stacked.step()
            single.step()

        def chunk(trainer, seeds: int) -> Callable[[], int]:
            def go() -> int:
                for _ in range(steps):
                    trainer.step()
                sync(device)
                return steps * seeds
            return go

        rates = interleaved_rates({"stacked": chunk(stacked, n), "single": chunk(single, 1)}, repeats)
        rng = [np.random.default_rng(i) for i in range(n)]

        def window() -> int:
            for _ in range(updates):
                batches = [t.buffer.sample(sql.batch_size, r, device) for t, r in zip(stacked.trainers, rng, strict=True)]
                stacked.stack.update(batches)
            sync(device)
            return updates

        flops = count_flops(window) / updates
        update_rate = interleaved_rates({"update": window}, repeats)["update"]
    finally:
        stacked._give_back()
        single.close()
    return {"seeds": n, "aggregate_steps_per_s": rates["stacked"], "single_steps_per_s": rates["single"],
            "speedup": rates["stacked"]["median"] / rates["single"]["median"],
            "stacked_flops_per_update": flops, "stacked_updates_per_s": update_rate,
            "stacked_update_flops_per_s": flops * update_rate["median"],
            "flop_utilization": flops * update_rate["median"] / matmul_peak,
            "note": "aggregate: env steps of all seeds per second (each step one stacked update of every seed); "
                    "single: one seed's Trainer.step in the same run; FLOP utilisation against the torch.mm rate "
                    "of flop_utilization's matmul_flops_per_s"}


def first_success(curve: list[dict], bar: float = SUCCESS_BAR) -> dict | None:
    """The first evaluation point of ``curve`` whose success rate reaches ``bar``, or None."""
    return next((point for point in curve if point["success_rate"] >= bar), None)


def time_to_success(algorithm: str, sql: SQLConfig, seed: int, budget: int, interval: int, episodes: int,
                    device: str, library: str) -> dict:
    """Train ``algorithm`` from scratch until deterministic success >= 95% (or ``budget`` steps).

    Only training is timed; evaluation time is reported separately.
    """
    if algorithm == "sql":
        trainer = make_sql(sql, seed, device, budget, library)
        eval_env = envs.make(TASK)

        def train(n: int) -> None:
            for _ in range(n):
                trainer.step()

        def policy(obs):
            return trainer.agent.act(obs, deterministic=True)
    else:
        model = make_sac(sql, seed, device, budget)
        eval_env = sac_env(sql)

        def train(n: int) -> None:
            model.learn(n, reset_num_timesteps=False, progress_bar=False)

        def policy(obs):
            return model.predict(obs, deterministic=True)[0]

    curve, train_s, eval_s, steps = [], 0.0, 0.0, 0
    while steps < budget:
        start = time.perf_counter()
        train(interval)
        sync(device)
        train_s += time.perf_counter() - start
        steps += interval
        start = time.perf_counter()
        success = run_episodes(eval_env, policy, episodes, EVAL_SEED)["success_rate"]
        eval_s += time.perf_counter() - start
        curve.append({"env_steps": steps, "train_s": train_s, "success_rate": success})
        print(f"  {algorithm} seed {seed}: {steps:6d} steps, {train_s:7.1f} s training, success {success:.2f}", flush=True)
        if success >= SUCCESS_BAR:
            break
    if algorithm == "sql":
        trainer.close()
    hit = first_success(curve)
    return {"reached": hit is not None, "time_s": hit["train_s"] if hit else None,
            "env_steps": hit["env_steps"] if hit else None, "budget_steps": budget, "eval_s": eval_s, "curve": curve}


def summarize(runs: list[dict]) -> float | None:
    """Median time to 95% over seeds, or None if any seed missed it."""
    times = [r["time_s"] for r in runs]
    return None if any(t is None for t in times) else statistics.median(times)


def plot_curves(results: dict, path: Path) -> None:
    from skills.evaluation.plots import _pyplot, save_figure

    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    for algorithm, color in (("sql", "tab:blue"), ("sac", "tab:orange")):
        for i, run in enumerate(results[algorithm]):
            ax.plot([p["train_s"] for p in run["curve"]], [p["success_rate"] for p in run["curve"]], "o-", color=color,
                    label=(f"{algorithm.upper()} (SB3)" if algorithm == "sac" else algorithm.upper()) if i == 0 else None)
    ax.axhline(SUCCESS_BAR, color="gray", ls="--", lw=1)
    ax.set_xlabel("training wall-clock time (s), evaluation excluded")
    ax.set_ylabel("reach success (deterministic, seeded episodes)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend()
    ax.set_title("time to 95% success on reach")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=110)


def assemble(args: argparse.Namespace, sql: SQLConfig, rates: dict, flops: dict, env: dict, ttt: dict,
             complete: bool, multi_seed: dict | None = None) -> dict:
    """The JSON record of a run; ``complete`` is False while time-to-95% runs are still to come."""
    import stable_baselines3

    return {
        "complete": complete,
        "sql_steps_per_s": rates["sql"], "sac_steps_per_s": rates["sac"],
        "sql_sequential_steps_per_s": rates["sql_sequential"],
        "ratio_sequential": rates["sql_sequential"]["median"] / rates["sac"]["median"],
        "ratio": rates["sql"]["median"] / rates["sac"]["median"],
        "ratio_min": rates["sql"]["min"] / rates["sac"]["min"],
        **flops,
        "env_ratio": env["env_ratio"], "reach_env_steps_per_s": env["reach_steps_per_s"],
        "fetchreach_env_steps_per_s": env["fetchreach_steps_per_s"],
        "sql_time_to_95": summarize(ttt["sql"]) if complete and not args.skip_time_to_95 else None,
        "sac_time_to_95": summarize(ttt["sac"]) if complete and not args.skip_time_to_95 else None,
        "time_to_95": {**ttt, "protocol": {"eval_interval": args.eval_interval, "eval_episodes": args.eval_episodes,
                                            "eval_seed": EVAL_SEED, "budget_steps": args.budget_steps,
                                            "action": "deterministic (SQL: best of 32 sampler draws under Q; SAC: mean)",
                                            "timed": "training only; evaluation excluded"}},
        "config": {"task": TASK, "batch_size": sql.batch_size, "hidden": list(sql.hidden),
                   "warmup_steps": sql.warmup_steps, "obs_scale": sql.obs_scale, "updates_per_step": 1,
                   "threads": torch.get_num_threads(), "device": args.device, "steps_per_chunk": args.steps,
                   "repeats": args.repeats, "quick": args.quick, "stable_baselines3": stable_baselines3.__version__,
                   "sql": sql.to_dict()},
        "machine": machine_info(),
        **({"multi_seed": multi_seed} if multi_seed is not None else {}),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500, help="env steps per timed training chunk")
    parser.add_argument("--repeats", type=int, default=5, help="timed chunks per algorithm (interleaved)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, both algorithms")
    parser.add_argument("--device", default="cpu", help="torch device for both algorithms (cpu, cuda)")
    parser.add_argument("--budget-steps", type=int, default=40_000, help="time-to-95%%: give up after N env steps")
    parser.add_argument("--eval-interval", type=int, default=1000, help="time-to-95%%: evaluate every N env steps")
    parser.add_argument("--eval-episodes", type=int, default=50, help="time-to-95%%: episodes per evaluation")
    parser.add_argument("--seeds", type=int, default=1, help="time-to-95%%: training seeds per algorithm")
    parser.add_argument("--skip-time-to-95", action="store_true", help="skip the (slow) time-to-95%% runs")
    parser.add_argument("--stacked-seeds", type=int, metavar="N", help="also time N seeds trained in one process "
                        "(skills.training.loop) against one seed (JSON key multi_seed)")
    parser.add_argument("--particles", type=int, help="what-if: SQL's SVGD particles K (default: the reach "
                        "skill's hyperparameters)")
    parser.add_argument("--quick", action="store_true", help="a few-seconds smoke run of every section")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--plot", metavar="PNG",
                        help="time-to-95%% curves (default: <json stem>_time_to_95.png next to --json)")
    return parser


def save_partial(path: str | None, partial: dict) -> None:
    """The results so far, atomically (written after each section, so an interrupted run keeps what it measured)."""
    if path:
        atomic_write_text(Path(path), json.dumps(partial, indent=2))


def main(argv: list[str] | None = None) -> dict:
    args = cli.parse(build_parser(), argv)
    sql = sql_config(TASK, "fetch-arm", particles=args.particles)
    env_steps, env_repeats, flop_updates = 2000, 5, 100
    if args.quick:
        sql = replace(sql, warmup_steps=100)
        args.steps, args.repeats, args.budget_steps, args.eval_interval, args.eval_episodes = 20, 1, 200, 100, 2
        env_steps, env_repeats, flop_updates = 50, 1, 5
    with tempfile.TemporaryDirectory() as library:
        print("training steps/s (SQL and SAC chunks interleaved) ...", flush=True)
        rates, trainer = training_rates(sql, args.steps, args.repeats, args.device, library)
        print("FLOP utilisation of the SQL update ...", flush=True)
        flops = flop_utilization(trainer, flop_updates, args.repeats, args.device)
        print("env steps/s ...", flush=True)
        env = env_throughput.measure(env_steps, env_repeats)
        multi = None
        if args.stacked_seeds:
            print(f"{args.stacked_seeds} seeds stacked against one ...", flush=True)
            multi = multi_seed_rates(sql, args.stacked_seeds, args.steps, args.repeats, args.device, library,
                                     flop_updates, flops["matmul_flops_per_s"])
        ttt: dict[str, list] = {"sql": [], "sac": []}
        save_partial(args.json, assemble(args, sql, rates, flops, env, ttt, complete=False, multi_seed=multi))
        if not args.skip_time_to_95:
            for seed in range(args.seeds):
                for algorithm in ("sql", "sac"):
                    ttt[algorithm].append(time_to_success(algorithm, sql, seed, args.budget_steps, args.eval_interval,
                                                          args.eval_episodes, args.device, library))
                    save_partial(args.json, assemble(args, sql, rates, flops, env, ttt, complete=False, multi_seed=multi))
    final = assemble(args, sql, rates, flops, env, ttt, complete=True, multi_seed=multi)
    save_partial(args.json, final)
    print("\n".join(summary_lines(final, rates, flops, env, multi)))
    if args.json:
        print(f"wrote {args.json}")
    if not args.skip_time_to_95 and (args.plot or args.json):
        json_path = Path(args.json)
        plot_curves(ttt, Path(args.plot) if args.plot else json_path.with_name(f"{json_path.stem}_time_to_95.png"))
    return final


def summary_lines(final: dict, rates: dict, flops: dict, env: dict, multi: dict | None) -> list[str]:
    """The benchmark's results as printed."""
    lines = [f"\n{'':28s} {'min':>9s} {'median':>9s}"]
    for name, label in (("sql", "SQL"), ("sql_sequential", "SQL, sequential"), ("sac", "SAC")):
        r = rates[name]
        lines.append(f"{label + ' training steps/s':28s} {r['min']:9.1f} {r['median']:9.1f}")
    lines += [f"{'ratio SQL/SAC (medians)':28s} {final['ratio']:9.2f}   (sequential: {final['ratio_sequential']:.2f})",
              f"{'SQL update MFLOP':28s} {flops['sql_flops_per_update'] / 1e6:9.1f}",
              f"{'SQL update GFLOP/s':28s} {flops['sql_update_flops_per_s'] / 1e9:9.1f}   "
              f"(torch.mm {flops['matmul_flops_per_s'] / 1e9:.1f}; utilisation {flops['flop_utilization']:.2f})",
              f"{'env ratio reach/FetchReach':28s} {env['env_ratio']:9.2f}"]
    if multi is not None:
        agg, one = multi["aggregate_steps_per_s"], multi["single_steps_per_s"]
        lines += [f"{str(multi['seeds']) + ' seeds stacked, steps/s':28s} {agg['min']:9.1f} {agg['median']:9.1f}   "
                  f"(one seed {one['median']:.1f}; speedup {multi['speedup']:.2f})",
                  f"{'stacked update GFLOP/s':28s} {multi['stacked_update_flops_per_s'] / 1e9:9.1f}   "
                  f"(utilisation {multi['flop_utilization']:.2f})"]
    for name in ("sql", "sac"):
        value = final[f"{name}_time_to_95"]
        lines.append(f"{name.upper() + ' time to 95% (s)':28s} {'not reached' if value is None else f'{value:9.1f}'}")
    return lines


if __name__ == "__main__":
    main()
