"""Why sampled ``place+clear`` episodes fail: which part of ``placed`` the last step misses.

    python -m bench.place_failures [--episodes 100] [--seed 10000] [--library DIR] [--json PATH]

``placed`` (envs.manipulation) asks three things of the block at the episode's last step: its centre within
``PlaceLayout.success_xy`` of the target in xy, its lowest corner within ``rest_height`` of the table, and its speed
under ``rest_speed``. For the composed policy (``compose.load``, averaging) and the jointly trained skill, each acting
with its max-ent policy (one sampler draw per step; ``--deterministic``: the best of 32), this counts how often each
part holds, which episodes miss only the speed, and checks that the parts and ``no_collision`` together give the
env's own success on every episode.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

import envs
import skills
from compose import load
from envs.manipulation import BLOCK_VEL, PLACE
from skills.cli import at_least
from skills.evaluation import EVAL_SEED

from .cli import parse, run_measurement

SPEC = "place+clear"


def last_steps(policy, episodes: int, seed: int, deterministic: bool) -> dict[str, np.ndarray]:
    """Run ``policy`` on episodes ``seed, seed + 1, ...`` of ``place+clear``; per episode the last step's block-target
    xy distance, block height, block speed, whether any step collided, and the env's success."""
    torch.manual_seed(seed)
    env = envs.make(SPEC)
    rows = []
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            collided, done = False, False
            while not done:
                obs, _, terminated, truncated, info = env.step(policy.act(obs, deterministic))
                collided |= bool(info["collision"])
                done = terminated or truncated
            rows.append((info["block_target_xy"], info["block_height"], float(np.linalg.norm(obs[BLOCK_VEL])),
                         collided, bool(info["is_success"])))
    finally:
        env.close()
    columns = [np.array(column) for column in zip(*rows, strict=True)]
    return {"xy": columns[0], "height": columns[1], "speed": columns[2], "collided": columns[3].astype(bool),
            "success": columns[4].astype(bool)}


def summary(last: dict[str, np.ndarray]) -> dict:
    """Fractions of episodes where each part of ``placed`` holds at the last step, and the consistency check."""
    xy_ok, height_ok = last["xy"] <= PLACE.success_xy, last["height"] <= PLACE.rest_height
    speed_ok = last["speed"] < PLACE.rest_speed
    parts = xy_ok & height_ok & speed_ok & ~last["collided"]
    return {"episodes": int(len(last["xy"])), "success": float(last["success"].mean()),
            "xy_within": float(xy_ok.mean()), "height_within": float(height_ok.mean()),
            "speed_below": float(speed_ok.mean()), "collided": float(last["collided"].mean()),
            "missed_only_the_speed": float((xy_ok & height_ok & ~speed_ok & ~last["collided"]).mean()),
            "median_final_speed": float(np.median(last["speed"])),
            "median_final_xy": float(np.median(last["xy"])),
            "parts_give_the_env_success": bool(np.array_equal(parts, last["success"]))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.place_failures", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=at_least(1), default=100, help="episodes per policy (default 100)")
    parser.add_argument("--seed", type=at_least(0), default=EVAL_SEED, help=f"first episode seed (default {EVAL_SEED})")
    parser.add_argument("--deterministic", action="store_true", help="the best of 32 sampled actions under each Q")
    parser.add_argument("--library", help="skill library (default: trained/)")
    parser.add_argument("--threads", type=at_least(1), default=1, help="torch threads (default 1)")
    parser.add_argument("--json", help="also write the result here")
    args = parse(parser, argv)
    return run_measurement(lambda: measure(args.episodes, args.seed, args.deterministic, args.library), args.json)


def measure(episodes: int, seed: int, deterministic: bool, library: str | None) -> dict:
    """Both policies' last steps, split into the parts of the success test (module docstring)."""
    composed = load(SPEC, library=library)
    joint = skills.load(SPEC, library=library)  # before anything is fitted
    composed.build(progress=False)
    policies = {"composed": composed, "joint": joint}
    thresholds = {"success_xy_m": PLACE.success_xy, "rest_height_m": PLACE.rest_height, "rest_speed_m_s": PLACE.rest_speed}
    return {"spec": SPEC, "seed": seed, "deterministic": deterministic, "thresholds": thresholds,
            **{name: summary(last_steps(policy, episodes, seed, deterministic)) for name, policy in policies.items()}}


if __name__ == "__main__":
    sys.exit(main())
