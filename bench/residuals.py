"""Where a skill's mean Bellman residual comes from, before any polishing:

    python -m bench.residuals place clear place+clear [--library DIR] [--states 2000] [--json PATH]

For each skill, on the same ``--states`` of its stored transitions (the convergence check's set), the mean
``Q - TQ`` with ``V(s')`` estimated from 32 importance samples (the Fetch families' training estimator), 256, 1024 (the
convergence check's) and 8192. The log-mean-exp of few samples is biased low, so a Q trained on 32-sample targets
sits below ``T Q`` by about that bias: the change from 32 to 8192 samples is the part of the residual that the
training's own estimator explains (the comparison is paired, so it is far more precise than each mean's se). Also: the
share of ``V(s')`` above the analytic ceiling ``V_max``, where training with ``clip_target_value`` projects the target
down, and the mean excess there. What is left after both is Q still trailing its target when the run stopped
(``skills.training.polish`` measures that by polishing).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from skills.cli import at_least

from .cli import run_measurement

SAMPLE_COUNTS = (32, 256, 1024, 8192)


def residual_sources(skill, states: int, seed: int) -> dict:
    """The mean residual at each sample count, with its se, and the clipped share of ``V(s')``, on one set of states."""
    from skills.evaluation.diagnostics import bellman_residual, soft_value_bounds
    from skills.library.skill import task_of

    t = skill.transitions
    idx = np.random.default_rng(seed).choice(len(t["reward"]), size=min(states, len(t["reward"])), replace=False)
    obs, action, reward, next_obs, terminated = (t[k][idx] for k in ("obs", "action", "reward", "next_obs", "terminated"))
    out: dict = {"skill": str(skill.path), "alpha": skill.alpha, "goal": 0.1 * skill.alpha, "states": len(idx),
                 "residual_mean": {}, "residual_se": {}}
    for n in SAMPLE_COUNTS:
        torch.manual_seed(seed)
        res = bellman_residual(skill, obs, action, reward, next_obs, terminated, skill.gamma, n)
        out["residual_mean"][n] = float(res.mean())
        out["residual_se"][n] = float(res.std(ddof=1) / np.sqrt(len(res)))
    _, v_max = soft_value_bounds(task_of(skill.info).reward_range, skill.alpha, skill.act_dim, skill.gamma)
    torch.manual_seed(seed)
    v_next = np.asarray(skill.value(next_obs, n_samples=1024), np.float64)
    out["estimator_share"] = out["residual_mean"][SAMPLE_COUNTS[0]] - out["residual_mean"][SAMPLE_COUNTS[-1]]
    out["above_v_max"] = float(np.mean(v_next > v_max))
    out["clip_share"] = float(-skill.gamma * np.mean(np.clip(v_next - v_max, 0.0, None)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.residuals", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("skills", nargs="+", help="skill names (newest version) or name@vN")
    parser.add_argument("--library", help="skill library (default: trained/)")
    parser.add_argument("--states", type=at_least(2), default=2000, help="stored transitions per skill (default 2000)")
    parser.add_argument("--seed", type=at_least(0), default=100_000, help="which transitions, and the estimates' seed")
    parser.add_argument("--json", metavar="PATH", help="write the measurement as JSON")
    args = parser.parse_args(argv)
    import skills

    torch.set_num_threads(1)

    def measure() -> dict:
        loaded = {name: skills.load(name, args.library) for name in args.skills}  # every name checked first
        return {name: residual_sources(skill, args.states, args.seed) for name, skill in loaded.items()}

    return run_measurement(measure, args.json)


if __name__ == "__main__":
    sys.exit(main())
