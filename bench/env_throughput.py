"""Env steps/s of our ``reach`` against gymnasium-robotics ``FetchReach-v4``, in one run
(plus ``push-x`` and ``multigoal`` for reference).

    python -m bench.env_throughput [--steps 2000] [--repeats 5] [--json PATH]

Both envs are created with ``gymnasium.make`` (same wrappers), step the same pre-drawn random
actions, and reset on truncation. Repeats are interleaved; min and median are reported.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import warnings
from typing import cast

import gymnasium as gym
import numpy as np

import envs  # sets MUJOCO_GL before mujoco is imported

from .cli import write_json
from .timing import interleaved_rates, machine_info


def stepping_workload(env: gym.Env, steps: int, seed: int):
    """A callable that steps ``env`` ``steps`` times with fixed random actions; returns steps."""
    space = cast(gym.spaces.Box, env.action_space)  # the tasks' actions are boxes
    actions = np.random.default_rng(seed).uniform(-1, 1, size=(steps,) + space.shape)
    actions = actions.astype(space.dtype)

    def run() -> int:
        env.reset(seed=seed)
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        return steps

    return run


def measure(steps: int = 2000, repeats: int = 5, seed: int = 0) -> dict:
    """Rates of ``reach`` and ``FetchReach-v4`` and their ratio (ours / theirs, by median)."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)
        ours, theirs = envs.make("reach"), gym.make("FetchReach-v4")
        pusher, multigoal = envs.make("push-x"), envs.make("multigoal")
    rates = interleaved_rates({"reach": stepping_workload(ours, steps, seed),
                               "FetchReach-v4": stepping_workload(theirs, steps, seed),
                               "push-x": stepping_workload(pusher, steps, seed),
                               "multigoal": stepping_workload(multigoal, steps, seed)}, repeats)
    for env in (ours, theirs, pusher, multigoal):
        env.close()
    return {
        "reach_steps_per_s": rates["reach"],
        "fetchreach_steps_per_s": rates["FetchReach-v4"],
        "pusher_steps_per_s": rates["push-x"],
        "multigoal_steps_per_s": rates["multigoal"],
        "env_ratio": rates["reach"]["median"] / rates["FetchReach-v4"]["median"],
        "env_ratio_min": rates["reach"]["min"] / rates["FetchReach-v4"]["min"],
        "steps_per_run": steps,
        "repeats": repeats,
        "machine": machine_info(),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.env_throughput", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="env steps per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per env (interleaved)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    result = measure(args.steps, args.repeats)
    for name in ("reach_steps_per_s", "fetchreach_steps_per_s", "pusher_steps_per_s", "multigoal_steps_per_s"):
        r = result[name]
        print(f"{name:24s} min {r['min']:8.1f}  median {r['median']:8.1f}")
    print(f"{'env_ratio (median)':24s} {result['env_ratio']:.3f}   (min/min {result['env_ratio_min']:.3f})")
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
