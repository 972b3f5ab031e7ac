"""Where the composed puck pair falls short of the joint skill: by the side the gripper starts on, and what flags it.

    python -m bench.puck_failures [--episodes 200] [--seed 10000] [--sector 45,180] [--horizon N]
                                  [--operator average] [--library DIR] [--json PATH]

Each ``fetch-puck`` episode starts with the gripper at a random bearing around the puck (docs/manipulation.md). This
runs the composed max-ent policy (``compose.load``, averaging unless ``--operator``; one sampler draw per step), the
jointly trained ``puck-x+puck-y`` and each constituent alone on the same episodes (lockstep, each episode its own
random stream) and sorts them by that bearing, measured counter-clockwise from *behind* the puck (the side opposite
the crossing, so 0 is a straight push toward it):

* per 45-degree sector and inside/outside ``--sector``: each policy's success, and how often its puck missed the
  ``x`` line or the ``y`` line at the last step;
* at each reset state ``s0``, what the toolkit knows with no episode run: each constituent's soft value ``V_i(s0)``,
  ``V_w(s0) - V_joint(s0)``, the per-step gap ``delta(s0)`` (how much the constituents' policies disagree there:
  ``(alpha/2) D_1/2(pi_x || pi_y)``), and, for averaging, the bound's ``C`` and the policy's own gap ``D`` averaged
  over the composed policy's actions there (``compose.build``; cached in the library). For each, the composed
  policy's success per tercile of it (and the joint's, beside it) and the AUC with which it ranks the composed
  policy's failures (0.5: no better than chance; below 0.5: low values fail);
* the composed policy's first move against each constituent's: the cosine between the mean horizontal part of 64
  first actions, inside and outside ``--sector``;
* whose preference the average follows: the spread of each ``Q_i(s0, .)`` over 512 uniform actions (the steeper
  ``Q`` weighs more in ``exp(Q_w/alpha)``), and how far the best of those actions under ``Q_w`` lies from the best
  under each ``Q_i``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from skills.cli import at_least

from .cli import run_measurement

SPEC = "puck-x+puck-y"
CONSTITUENTS = ("puck-x", "puck-y")
SECTOR_WIDTH = 45  # degrees per sector of the start bearing
FIRST_MOVE_DRAWS = 64  # actions per reset state for the first-move cosines and the correction terms
UNIFORM_ACTIONS = 512  # uniform actions per reset state for how steep each Q is over actions
OPERATOR_CHOICES = ("average", "dc", "gpi", "or")  # priority needs an order, which this pair does not have
DELTA_SAMPLES = 4096  # importance samples per reset state for the per-step gap delta (common random numbers)


def start_bearing(first_obs: np.ndarray) -> np.ndarray:
    """The gripper's bearing around the puck at reset, degrees in [-180, 180), counter-clockwise from behind the puck
    (the direction from the crossing to the puck's centre): [N, o] -> [N]. 0 is a straight push toward the crossing."""
    from envs.manipulation import PUCK_GOAL, PUCK_POS, PUCK_REL

    grip = -np.asarray(first_obs[:, PUCK_REL], np.float64)[:, :2]  # grip site minus puck centre
    behind = np.asarray(first_obs[:, PUCK_POS], np.float64)[:, :2] - PUCK_GOAL
    degrees = np.degrees(np.arctan2(grip[:, 1], grip[:, 0]) - np.arctan2(behind[:, 1], behind[:, 0]))
    return (degrees + 180.0) % 360.0 - 180.0


def rank_auc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """The probability that a positive case scores above a negative one (ties count a half; Mann-Whitney); None when
    either class is empty."""
    pos, neg = np.asarray(score)[positive], np.asarray(score)[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return None
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def terciles(score: np.ndarray, success: np.ndarray) -> dict:
    """Success rate in the lowest, middle and highest third of ``score`` (cut at its 1/3 and 2/3 quantiles)."""
    low, high = np.quantile(score, [1 / 3, 2 / 3])
    thirds = [score <= low, (score > low) & (score <= high), score > high]
    return {"cuts": [float(low), float(high)], "success": [float(success[m].mean()) if m.any() else None for m in thirds]}


def rate(values: np.ndarray) -> float | None:
    """The mean of a boolean or numeric array; None when it is empty."""
    return float(values.mean()) if len(values) else None


def outcomes(policy, spec: str, seeds: list[int], horizon: int | None = None) -> dict[str, np.ndarray]:
    """``policy`` (stochastic) on one episode per seed (``horizon`` steps; default the family's): the reset
    observations, success, and whether the puck ended off the ``x`` and the ``y`` line (the env's own tests)."""
    import envs
    from envs.manipulation import puck_at_x, puck_at_y
    from skills.evaluation.lockstep import EnvPool, lockstep_episodes

    pool = EnvPool(lambda: envs.make(spec, **({"max_episode_steps": horizon} if horizon else {})))
    try:
        episodes = lockstep_episodes(pool, policy, seeds)
    finally:
        pool.close()
    ends = [(e.first_obs, e.final_obs) for e in episodes if e.first_obs is not None and e.final_obs is not None]
    assert len(ends) == len(episodes), "an episode did not finish"
    first, final = (np.stack(column) for column in zip(*ends, strict=True))
    no_action = np.empty((len(final), 0))  # the line tests read the state only
    return {"first_obs": first, "success": np.array([e.success for e in episodes]),
            "off_x": ~puck_at_x(final, no_action), "off_y": ~puck_at_y(final, no_action)}


def by_bearing(bearing: np.ndarray, run: dict[str, np.ndarray], sector: tuple[float, float]) -> dict:
    """Success and the share that missed each line, per 45-degree sector of the start bearing and inside/outside
    ``sector``."""
    def cell(mask: np.ndarray) -> dict:
        return {"episodes": int(mask.sum()), "success": rate(run["success"][mask]),
                "missed_x": rate(run["off_x"][mask]), "missed_y": rate(run["off_y"][mask])}

    inside = (bearing >= sector[0]) & (bearing < sector[1])
    edges = range(-180, 180, SECTOR_WIDTH)
    return {"success": float(run["success"].mean()),
            "sectors": {f"{lo:+d}": cell((bearing >= lo) & (bearing < lo + SECTOR_WIDTH)) for lo in edges},
            "inside": cell(inside), "outside": cell(~inside)}


def start_signals(composed, built, joint, parts: dict, first_obs: np.ndarray, library: str | None,
                  seed: int) -> dict[str, np.ndarray]:
    """What is known at each reset state before acting: each constituent's ``V_i(s0)``, ``V_w - V_joint`` (with a
    joint skill), the per-step gap ``delta(s0) = sum_i w_i V_i - V_w`` (for two equal weights ``(alpha/2)
    D_1/2(pi_1 || pi_2)``: how much the constituents' policies disagree there), and ``C`` and ``D`` averaged over the
    composed policy's actions there (``D`` is fitted with no environment samples and cached when the library has none)."""
    from compose.bound import gap_on_states
    from compose.build import build_policy_gap

    gap = build_policy_gap(composed, built, library)[0] if built.correction is not None else None
    # From here on every draw is the same whatever ran before (the episodes; fits leave the stream as it was anyway):
    # the global stream, which a skill's sampler draws from, is reseeded, and each skill's V reads its own seeded samples.
    torch.manual_seed(seed)

    def stream() -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    with torch.no_grad():
        signals = {f"V[{name}]": np.asarray(skill.value(first_obs, generator=stream()), np.float64)
                   for name, skill in parts.items()}
        if joint is not None:
            signals["V_w - V_joint"] = (np.asarray(composed.value(first_obs), np.float64)
                                        - np.asarray(joint.value(first_obs, generator=stream())))
        signals["delta(s0)"] = gap_on_states(composed.q_w, first_obs, DELTA_SAMPLES, seed).astype(np.float64)
        if built.correction is not None and gap is not None:
            obs = torch.as_tensor(first_obs).unsqueeze(1).expand(-1, FIRST_MOVE_DRAWS, -1)
            actions = torch.as_tensor(composed.sample(first_obs, FIRST_MOVE_DRAWS))
            signals["C(s0)"] = built.correction(obs, actions).mean(1).numpy().astype(np.float64)
            signals["D(s0)"] = gap(obs, actions).mean(1).numpy().astype(np.float64)
    return signals


def first_moves(composed, parts: dict, first_obs: np.ndarray, inside: np.ndarray) -> dict:
    """Cosine between the mean horizontal part of the composed policy's first actions and each constituent's, mean
    over the reset states inside and outside the sector."""
    def mean_move(policy) -> np.ndarray:
        return np.asarray(policy.sample(first_obs, FIRST_MOVE_DRAWS), np.float64).mean(axis=1)[:, :2]

    ours = mean_move(composed)
    out = {}
    for name, skill in parts.items():
        theirs = mean_move(skill)
        cos = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1) + 1e-12)
        out[name] = {"inside": rate(cos[inside]), "outside": rate(cos[~inside])}
    return out


def action_preferences(parts: dict, first_obs: np.ndarray, inside: np.ndarray, seed: int) -> dict:
    """How strongly each constituent prefers actions at the reset states, and whose preference the average follows:
    the spread (standard deviation) of each ``Q_i(s0, .)`` over the same uniform actions, and the horizontal distance
    from the best of them under ``Q_w`` to the best under each ``Q_i``; means inside and outside the sector."""
    generator = torch.Generator().manual_seed(seed)
    n, act_dim = len(first_obs), next(iter(parts.values())).act_dim
    actions = torch.rand(n, UNIFORM_ACTIONS, act_dim, generator=generator) * 2 - 1
    obs = torch.as_tensor(first_obs).unsqueeze(1).expand(-1, UNIFORM_ACTIONS, -1)
    with torch.no_grad():
        q = {name: torch.as_tensor(skill.q(obs, actions)) for name, skill in parts.items()}
    best = {name: actions[torch.arange(n), qi.argmax(dim=1), :2] for name, qi in q.items()}
    q_w = torch.stack(list(q.values())).mean(dim=0)  # equal weights, as the puck pair's average
    best_w = actions[torch.arange(n), q_w.argmax(dim=1), :2]
    out = {}
    for name, qi in q.items():
        spread, apart = qi.std(dim=1).numpy(), (best_w - best[name]).norm(dim=1).numpy()
        out[name] = {"q_spread": {"inside": rate(spread[inside]), "outside": rate(spread[~inside])},
                     "best_w_to_best_i": {"inside": rate(apart[inside]), "outside": rate(apart[~inside])}}
    return out


def measure(episodes: int, seed: int, sector: tuple[float, float], library: str | None, horizon: int | None = None,
            operator: str = "average") -> dict:
    """The whole measurement (module docstring) on episodes ``seed, seed + 1, ...``, as one JSON-ready dict."""
    import skills
    from compose import load
    from envs.manipulation import PUCK, PUCK_FAMILY

    torch.manual_seed(seed)
    composed = load(SPEC, library=library, operator=operator, seed=seed)
    built = composed.build(progress=False)
    parts = {name: skills.load(name, library=library) for name in CONSTITUENTS}
    try:
        joint = skills.load(SPEC, library=library)
    except ValueError:  # no joint skill in the library: the others are still compared
        joint = None
    policies = {"composed": composed, **({"joint": joint} if joint is not None else {}), **parts}
    seeds = [seed + i for i in range(episodes)]
    runs = {name: outcomes(policy, SPEC, seeds, horizon) for name, policy in policies.items()}
    first_obs = runs["composed"]["first_obs"]
    bearing = start_bearing(first_obs)
    inside = (bearing >= sector[0]) & (bearing < sector[1])
    failed = ~runs["composed"]["success"]
    signals = start_signals(composed, built, joint, parts, first_obs, library, seed)
    return {"spec": SPEC, "operator": operator, "library": library or "trained/", "episodes": episodes, "seed": seed,
            "sector_degrees": list(sector),
            "horizon": horizon or PUCK_FAMILY.horizon,
            "success_tolerance_m": PUCK.success_tolerance,
            "by_bearing": {name: by_bearing(bearing, run, sector) for name, run in runs.items()},
            "at_reset": {name: {"mean": float(v.mean()), "auc_composed_failure": rank_auc(v, failed),
                                "composed": terciles(v, runs["composed"]["success"]),
                                **({"joint": terciles(v, runs["joint"]["success"])["success"]} if joint is not None else {}),
                                "inside": rate(v[inside]), "outside": rate(v[~inside])}
                         for name, v in signals.items()},
            "first_move_cosine": first_moves(composed, parts, first_obs, inside),
            "action_preferences": action_preferences(parts, first_obs, inside, seed)}


def sector_arg(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two degrees LO,HI, got {text!r}") from None
    if not -180 <= lo < hi <= 180:
        raise argparse.ArgumentTypeError(f"need -180 <= LO < HI <= 180, got {lo:g},{hi:g}")
    return lo, hi


def add_episode_arguments(parser: argparse.ArgumentParser) -> None:
    """``--episodes``, ``--seed`` and ``--sector``: which episodes, and which start bearings count as inside (shared
    with ``bench.puck_path``, which reads the same episodes)."""
    from skills.evaluation import EVAL_SEED

    parser.add_argument("--episodes", type=at_least(6), default=200, help="episodes per policy (default 200)")
    parser.add_argument("--seed", type=at_least(0), default=EVAL_SEED, help=f"first episode seed (default {EVAL_SEED})")
    parser.add_argument("--sector", type=sector_arg, default=(45.0, 180.0),
                        help="start bearings (degrees, counter-clockwise from behind the puck) reported as one group "
                             "against the rest (default 45,180)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.puck_failures", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_episode_arguments(parser)
    parser.add_argument("--horizon", type=at_least(1), help="steps per episode (default: the family's, 50); success is "
                        "judged at the last step, so a longer horizon asks whether a policy gets there later")
    parser.add_argument("--operator", choices=OPERATOR_CHOICES, default="average",
                        help="how the composed policy combines the two skills (default average; C and D exist for "
                             "average only)")
    parser.add_argument("--library", help="skill library with puck-x, puck-y (and the joint skill) (default: trained/)")
    parser.add_argument("--json", metavar="PATH", help="write the measurement as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    return run_measurement(lambda: measure(args.episodes, args.seed, args.sector, args.library, args.horizon,
                                           args.operator), args.json)


if __name__ == "__main__":
    sys.exit(main())
