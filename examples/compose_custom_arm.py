"""Load the shipped Fetch skills onto our own 3-link arm and compose them there.

    python examples/compose_custom_arm.py [--episodes 100] [--render]

The skills ``reach`` and ``avoid`` (and the joint ``reach+avoid`` reference) were trained on
the Fetch robot. The custom-arm task has the same observation and action contract (workspace
frame, Cartesian end-effector displacements), so the skills load as they are. The composed
policy is built from their Q-functions with no new environment samples, and the same
comparison table as ``python -m compose.run`` is printed and written to the output directory.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import envs  # noqa: F401  (chooses the OpenGL backend before mujoco is imported)
from compose import run as compose_run

ARM_XML = Path(__file__).resolve().parent / "arm" / "three_link_arm.xml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes per policy")
    parser.add_argument("--render", action="store_true", help="write an mp4 of the composed policy")
    parser.add_argument("--out", default="runs/compose/custom-arm", help="output directory")
    args = parser.parse_args(argv)
    return compose_run.main(["reach+avoid", "--arm", str(ARM_XML), "--ee-site", "ee", "--episodes",
                             str(args.episodes), "--out", args.out, *(["--render"] if args.render else [])])


if __name__ == "__main__":
    raise SystemExit(main())
