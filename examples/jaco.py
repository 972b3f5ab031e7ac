"""The shipped Fetch skills on dm_control's Kinova Jaco (with its hand), and their composition there.

    python examples/jaco.py [--episodes 100] [--render]

The Jaco comes with dm_control (``dm_control.entities.manipulators.kinova``): six velocity-servoed
joints and a three-finger hand. ``envs.make(..., arm="jaco")`` builds it with the hand attached and
takes the hand's pinch site (between the fingertips, ``jaco_hand/pinchsite``) as the end effector;
``workspace_origin="auto"`` picks the reachable origin nearest its home pose. The skills were trained on
Fetch; the task contract (workspace frame, Cartesian end-effector displacements) is the same, so they
load as they are. This prints ``envs.check_arm``'s report, evaluates ``reach`` alone (deterministic and
stochastic) and runs ``compose.run reach+avoid`` on the Jaco (written to ``--out``).
"""

from __future__ import annotations

import argparse

import envs
import skills
from compose import run as compose_run
from envs import check_arm
from skills.evaluation import run_episodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes per policy")
    parser.add_argument("--render", action="store_true", help="write an mp4 of the composed policy")
    parser.add_argument("--out", default="runs/compose/jaco", help="output directory")
    args = parser.parse_args(argv)
    print(check_arm.render_report(check_arm.check("jaco", None, "auto", episodes=20, frame=None)))
    env = envs.make("reach", arm="jaco", workspace_origin="auto")
    reach = skills.load("reach")
    for deterministic in (True, False):
        result = run_episodes(env, lambda obs, d=deterministic: reach.act(obs, deterministic=d), args.episodes, seed=10_000)
        print(f"reach on the Jaco, {'deterministic' if deterministic else 'stochastic'}: success "
              f"{result['success_rate']:.2f}, return {result['return_mean']:.2f} ({args.episodes} episodes)")
    return compose_run.main(["reach+avoid", "--arm", "jaco", "--workspace-origin", "auto", "--episodes",
                             str(args.episodes), "--out", args.out, *(["--render"] if args.render else [])])


if __name__ == "__main__":
    raise SystemExit(main())
