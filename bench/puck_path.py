"""Where along its own path the composed puck policy stops choosing like the joint skill, inside and outside the sector.

    python -m bench.puck_path [--episodes 200] [--seed 10000] [--sector 45,180] [--operator average]
                              [--library DIR] [--json PATH]

``bench.puck_failures`` found the composition failing mostly when the gripper starts inside a sector of bearings
(docs/manipulation.md), while its first decision there already follows ``puck-y``. This runs the composed max-ent
policy (``--operator``; one sampler draw per step) on the same episodes as that bench, keeps every state it visits,
and at steps 0, 3, 6, 10, 15, 20, 30 and 45 reads, with no further episode:

* **agreement with the joint skill**: over 256 uniform actions at each visited state, the rank correlation
  (Spearman) between the energy the composed policy samples (``Q_w`` for averaging, ``Q_w - C_w`` for ``dc``, ...)
  and the jointly trained skill's ``Q``, the stand-in for ``Q*_w``; 1 when they order every action alike. Beside it
  the joint ``Q``'s spread over those actions (a flat ``Q``, near the goal, makes any ranking noisy);
* **distance to the data**: how far each visited state lies from the nearest state the constituents stored
  (their transitions' next states, each coordinate scaled as the networks scale it), which is all that a zero-shot
  operator's fit (``dc``'s correction, ``gpi``'s evaluations) ever sees.

Each figure is averaged inside and outside ``--sector``, and inside over the failed and the successful episodes.
A description of one pair, not a test: nothing is chosen from it.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from .cli import run_measurement
from .puck_failures import CONSTITUENTS, OPERATOR_CHOICES, SPEC, add_episode_arguments, rate, start_bearing

STEPS = (0, 3, 6, 10, 15, 20, 30, 45)  # steps of the episode at which the visited states are read
UNIFORM_ACTIONS = 256  # uniform actions per visited state for the rank correlation
DISTANCE_CHUNK = 50  # visited states per distance computation (a [50, 20000] matrix at a time)


def ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks along the last axis (0 for the smallest): [B, K] -> [B, K] float64."""
    return x.argsort(dim=-1).argsort(dim=-1).double()


def rank_agreement(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Spearman's rank correlation between two energies over the same actions, one per state: [B, K], [B, K] -> [B]."""
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(-1, keepdim=True), rb - rb.mean(-1, keepdim=True)
    return ((ra * rb).sum(-1) / (ra.norm(dim=-1) * rb.norm(dim=-1))).numpy()


def distance_to_data(states: np.ndarray, data: torch.Tensor, scale: torch.Tensor) -> np.ndarray:
    """Euclidean distance from each state to the nearest stored one, coordinates multiplied by ``scale``:
    [B, o], [M, o], [o] -> [B]."""
    x = torch.as_tensor(states, dtype=torch.float32) * scale
    return torch.cat([torch.cdist(chunk, data * scale).min(dim=1).values for chunk in x.split(DISTANCE_CHUNK)]).numpy()


def at_states(energy, joint_q, states: np.ndarray, act_dim: int, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The rank agreement of ``energy`` with ``joint_q`` over uniform actions at each state, and the joint ``Q``'s
    standard deviation over them: [B, o] -> [B], [B]."""
    n = len(states)
    actions = torch.rand(n, UNIFORM_ACTIONS, act_dim, generator=generator) * 2 - 1
    obs = torch.as_tensor(states, dtype=torch.float32).unsqueeze(1).expand(-1, UNIFORM_ACTIONS, -1)
    with torch.no_grad():
        q_joint = torch.as_tensor(joint_q(obs, actions)).double()
        composed = torch.as_tensor(energy(obs, actions)).double()
    return rank_agreement(composed, q_joint), q_joint.std(dim=-1).numpy()


def split(values: np.ndarray, inside: np.ndarray, success: np.ndarray) -> dict:
    """Means inside and outside the sector, and inside over the failed and the successful episodes."""
    return {"inside": rate(values[inside]), "outside": rate(values[~inside]),
            "inside_failed": rate(values[inside & ~success]), "inside_succeeded": rate(values[inside & success])}


def measure(episodes: int, seed: int, sector: tuple[float, float], library: str | None, operator: str) -> dict:
    """The whole measurement (module docstring) on episodes ``seed, seed + 1, ...``, as one JSON-ready dict."""
    import envs
    import skills
    from compose import load
    from skills.evaluation.lockstep import EnvPool, lockstep_episodes

    torch.manual_seed(seed)
    composed = load(SPEC, library=library, operator=operator, seed=seed)
    built = composed.build(progress=False)
    joint = skills.load(SPEC, library=library)
    parts = [skills.load(name, library=library) for name in CONSTITUENTS]
    pool = EnvPool(lambda: envs.make(SPEC))
    try:
        run = lockstep_episodes(pool, composed, [seed + i for i in range(episodes)], keep_trace=True)
    finally:
        pool.close()
    success = np.array([e.success for e in run])
    inside_lo, inside_hi = sector
    bearing = start_bearing(np.stack([np.asarray(e.first_obs) for e in run]))
    inside = (bearing >= inside_lo) & (bearing < inside_hi)
    data = torch.cat([torch.as_tensor(part.transitions["next_obs"], dtype=torch.float32) for part in parts])
    scale = joint.agent.q.obs_scale.float()
    generator = torch.Generator().manual_seed(seed)
    by_step = {}
    for step in STEPS:
        states = np.stack([e.obs[min(step, len(e.obs) - 1)] for e in run])  # an episode ends at the family's horizon
        agreement, spread = at_states(built.q, joint.q, states, joint.act_dim, generator)
        by_step[str(step)] = {"agreement_with_joint": split(agreement, inside, success),
                              "joint_q_spread": split(spread, inside, success),
                              "distance_to_data": split(distance_to_data(states, data, scale), inside, success)}
    return {"spec": SPEC, "operator": operator, "library": library or "trained/", "episodes": episodes, "seed": seed,
            "sector_degrees": list(sector), "uniform_actions": UNIFORM_ACTIONS, "stored_states": len(data),
            "success": {"all": rate(success), "inside": rate(success[inside]), "outside": rate(success[~inside])},
            "episodes_inside": int(inside.sum()), "by_step": by_step}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.puck_path", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_episode_arguments(parser)
    parser.add_argument("--operator", choices=OPERATOR_CHOICES, default="average",
                        help="how the composed policy combines the two skills (default average)")
    parser.add_argument("--library", help="skill library with puck-x, puck-y and the joint skill (default: trained/)")
    parser.add_argument("--json", metavar="PATH", help="write the measurement as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    return run_measurement(lambda: measure(args.episodes, args.seed, args.sector, args.library, args.operator), args.json)


if __name__ == "__main__":
    sys.exit(main())
