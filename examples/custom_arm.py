"""Run the reach+avoid task on our own 3-link arm (examples/arm/three_link_arm.xml).

    python examples/custom_arm.py                      # 5 episodes, frame -> custom_arm.png
    python examples/custom_arm.py --episodes 20 --frame docs/custom_arm.png

A scripted controller drives the end effector straight at the target (the observation's
``target - ee`` part), so it reaches the target in most episodes and collides whenever the
obstacle sits on the path (about half of them). The arm sees the same observations and actions
as the Fetch tasks; only the dynamics backend differs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import envs
from envs.arm import MAX_DISPLACEMENT, TARGET_REL

ARM_XML = Path(__file__).resolve().parent / "arm" / "three_link_arm.xml"


def straight_line(obs: np.ndarray) -> np.ndarray:
    """Full speed towards the target: ``clip((target - ee) / MAX_DISPLACEMENT, -1, 1)``."""
    return np.clip(obs[TARGET_REL] / MAX_DISPLACEMENT, -1.0, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frame", type=Path, default=Path("custom_arm.png"), help="PNG of episode 0's first frame")
    args = parser.parse_args()

    env = envs.make("reach+avoid", arm=str(ARM_XML), ee_site="ee", render_mode="rgb_array", width=640, height=480)
    reached = collided = 0
    for episode in range(args.episodes):
        obs, info = env.reset(seed=args.seed + episode)
        if episode == 0:
            import cv2

            args.frame.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(args.frame), env.render()[:, :, ::-1])
        hit, done = False, False
        while not done:
            obs, _, terminated, truncated, step_info = env.step(straight_line(obs))
            hit |= step_info["collision"]
            done = terminated or truncated
        reached += step_info["checks"]["at_target"]
        collided += hit
        print(f"episode {episode}: success={step_info['is_success']} at_target={step_info['checks']['at_target']} "
              f"collision={hit} obstacle_blocks_path={info['obstacle_blocks_path']} "
              f"final distance={step_info['distance_to_target'] * 100:.1f} cm")
    env.close()
    print(f"reached {reached}/{args.episodes}, collided {collided}/{args.episodes}; frame saved to {args.frame}")


if __name__ == "__main__":
    main()
