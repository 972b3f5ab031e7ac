"""A family from an env no one here wrote: Gymnasium's MuJoCo Reacher-v5, its reward split into its two terms.

Reacher-v5 rewards ``-|fingertip - target| - |a|^2``. Here each term is a task, and their mean is the reference:

    python examples/gym_reacher.py                                   # train reacher-near, reacher-effort and the joint
    python -m compose.run reacher-near+reacher-effort --tasks examples/gym_reacher.py

Observation (10-D, Reacher-v5's): cos and sin of the two joint angles, the target's xy, the joint velocities, and
``fingertip - target`` (xy) at ``obs[:, 8:10]``. Success is our criterion: the fingertip within 2 cm of the target
at the episode's end.
"""

import sys

import numpy as np

import envs

TOLERANCE = 0.02  # metres: success


def near(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Reacher's reward_dist: minus the fingertip's distance to the target (at most 0.42 m apart): [B] in [-0.45, 0]."""
    return -np.minimum(np.linalg.norm(next_obs[:, 8:10], axis=-1), 0.45)


def effort(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Reacher's reward_ctrl: minus the squared action (the toolkit's [-1, 1]^2 is Reacher's own box): [B] in [-2, 0]."""
    return -np.sum(np.square(action), axis=-1)


def at_target(next_obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    return np.linalg.norm(next_obs[:, 8:10], axis=-1) < TOLERANCE


reacher = envs.gym_family("reacher", "Reacher-v5", gamma=0.95,
                          terms=[envs.Term("near", near, (-0.45, 0.0)), envs.Term("effort", effort, (-2.0, 0.0))],
                          checks=[envs.Check("at_target", at_target)],
                          training={"alpha": 0.01, "obs_scale": 1.0, "particles": 8, "value_proposal": "mixture",
                                    "value_samples": 32, "target_update_interval": 250, "steps": 20_000})
envs.task("reacher-near", reacher, weights={"near": 1.0}, success=["at_target"])
envs.task("reacher-effort", reacher, weights={"effort": 1.0})


if __name__ == "__main__":  # train the three skills the composition and its reference need, one process each
    import subprocess
    from pathlib import Path

    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__ + "\nAny other arguments go to each of the three `python -m skills.train` runs (see its --help).")
        sys.exit(0)
    here = Path(__file__).relative_to(Path.cwd()) if Path(__file__).is_relative_to(Path.cwd()) else Path(__file__)
    for name in ("reacher-near", "reacher-effort", "reacher-near+reacher-effort"):
        code = subprocess.call([sys.executable, "-m", "skills.train", name, "--tasks", str(here), *sys.argv[1:]])
        if code:
            sys.exit(code)
