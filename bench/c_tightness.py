"""How tight is the bound's ``C`` on a real task? ``Q_w - Q*_w`` against ``C``, with a long adaptation standing in for
``Q*_w``:

    python -m compose.adapt reach+avoid --steps 40000 --out LIB        # the joint's full budget, from the composition
    python -m bench.c_tightness reach+avoid --adapted LIB/reach+avoid.adapted/v1 [--episodes 20] [--json PATH]

The theorem (Haarnoja et al. 2018) says ``Q_w - C <= Q*_w <= Q_w``; ``C`` is only useful when it is close to the gap
``Q_w - Q*_w``. ``Q*_w`` is not known on the arm, so two learned stand-ins are compared on the composed policy's own
(s, a) pairs (stochastic episodes from ``--seed``, disjoint from the reports' 10000-range):

* ``Q_adapted = Q_w + R``: ``compose.adapt`` trains the residual ``R`` with soft Q-learning on the combined reward,
  starting at ``R = 0``; after a long run it approximates ``Q*_w`` (issue 30, item 4), and the gap is ``-R``;
* ``Q_joint``: the jointly trained skill (the stand-in the reports use).

Reported per stand-in: the mean gap and ``C``, their ratio (mean ``C`` / mean gap), how often each side of
``Q_w - C <= Q_standin <= Q_w`` holds, the share of pairs where ``gap <= C <= 2 gap``, and the stand-in's own
convergence record (Monte Carlo soft return against ``V(s0)``, Bellman residual) from its manifest: a stand-in far
from its fixed point says little about ``Q*_w``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from skills.cli import at_least

from .cli import run_measurement


def composed_pairs(composed, episodes: int, seed: int, spec: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(obs [N, o], actions [N, d]) of the composed max-ent policy's seeded episodes, and its success rate."""
    import envs
    from skills.evaluation.lockstep import EnvPool, lockstep_episodes

    torch.manual_seed(seed)
    with EnvPool(lambda: envs.make(spec)) as pool:
        done = lockstep_episodes(pool, composed.policy, [seed + i for i in range(episodes)], keep_trace=True)
    obs = np.concatenate([np.asarray(e.obs, np.float32) for e in done])
    act = np.concatenate([np.asarray(e.actions, np.float32) for e in done])
    return obs, act, float(np.mean([e.success for e in done]))


def tightness(q_w: np.ndarray, c: np.ndarray, q_standin: np.ndarray) -> dict:
    """``C`` against the gap ``Q_w - Q_standin`` on the same pairs [N]."""
    gap = q_w - q_standin
    return {"gap_mean": float(gap.mean()), "gap_median": float(np.median(gap)),
            "gap_p05_p95": [float(np.percentile(gap, 5)), float(np.percentile(gap, 95))],
            "C_mean": float(c.mean()), "C_over_gap": float(c.mean() / gap.mean()) if gap.mean() > 0 else None,
            "upper_holds": float(np.mean(gap >= 0)), "lower_holds": float(np.mean(gap <= c)),
            "covered_within_2x": float(np.mean((gap <= c) & (c <= 2 * gap)))}  # gap <= C <= 2 gap: covered and tight


def standin_record(skill) -> dict:
    """What the stand-in's manifest says about its own fixed point."""
    manifest = skill.manifest
    conv = manifest.get("convergence") or {}
    keep = ("V0_mean", "soft_return_mean", "soft_return_gap", "soft_return_gap_se", "bellman_residual_mean", "goal")
    return {"path": str(skill.path), "env_steps": manifest.get("env_steps"),
            "convergence": {k: conv[k] for k in keep if k in conv}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.c_tightness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="composition, e.g. reach+avoid")
    parser.add_argument("--adapted", required=True, help="the adapted skill (compose.adapt's output version folder)")
    parser.add_argument("--library", help="skill library of the constituents and the joint skill (default: trained/)")
    parser.add_argument("--episodes", type=at_least(1), default=20,
                        help="composed episodes whose pairs are compared (default 20)")
    parser.add_argument("--seed", type=at_least(0), default=30_000, help="first episode seed (default 30000)")
    parser.add_argument("--json", metavar="PATH", help="write the measurement as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    return run_measurement(lambda: measure(args.spec, args.adapted, args.library, args.episodes, args.seed), args.json)


def measure(spec: str, adapted_path: str, library: str | None, episodes: int, seed: int) -> dict:
    """The whole measurement (module docstring), as one JSON-ready dict."""
    import compose
    import skills

    composed = compose.load(spec, library=library, seed=seed, operator="average")
    adapted, joint = skills.load(adapted_path), skills.load(spec, library=library)  # before anything is fitted
    built = composed.build(progress=False)
    assert built.correction is not None  # the average operator fits C
    obs, act, success = composed_pairs(composed, episodes, seed, spec)
    with torch.no_grad():
        q_w = np.asarray(composed.q_w(torch.as_tensor(obs), torch.as_tensor(act)), np.float64)
        c = np.asarray(built.correction(torch.as_tensor(obs), torch.as_tensor(act)), np.float64)
    standins = {name: tightness(q_w, c, np.asarray(skill.q(obs, act), np.float64)) | standin_record(skill)
                for name, skill in (("adapted", adapted), ("joint", joint))}
    return {"spec": spec, "episodes": episodes, "seed": seed, "pairs": len(obs), "composed_success": success,
            "standins": standins}


if __name__ == "__main__":
    sys.exit(main())
