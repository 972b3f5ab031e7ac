"""Are the constituents' soft Q-functions right where their composition acts?

    python -m bench.constituent_shift puck-x+puck-y [--pairs 40] [--rollouts 8] [--max-step N] [--library DIR] [--json PATH]

Averaging acts on ``Q_w = sum_i w_i Q_i``, and its distance to the optimum splits in two (Haarnoja et al. 2018:
``Q*_w <= sum_i w_i Q*_i``):

    Q_w - Q*_w = sum_i w_i (Q_i - Q*_i)  +  (sum_i w_i Q*_i - Q*_w)
                 the constituents' error     the composition's own gap (>= 0)

The first part is a training matter: each ``Q_i`` was fitted on its own skill's data, and the composed policy may
lead it to states that data never covered. The second is not: no better-trained constituent removes it. This bench
measures the first part where the composition acts, against where each constituent was trained:

* (s, a) pairs at a random step of the composed max-ent policy's episodes, and the same number on each constituent's
  own episodes (the same seeds, so the same start states);
* at each pair, ``Q_i(s, a)`` against the Monte Carlo soft return ``G_i`` of constituent ``i``'s own stochastic policy
  from (s, a) on its own task's reward, credited with that policy's own entropy (``compose.soft_returns
  .sampler_actor``: the change of variables through its sampler). ``G_i`` estimates ``Q^{pi_i} <= Q*_i``, so
  ``e_i = Q_i - G_i`` is the constituent's error plus its sampler's shortfall; that shortfall is present on its own
  pairs too, so the **shift** ``e_i(composed pairs) - e_i(own pairs)`` is what the composition's states add. On the
  first ``--exact-pairs`` pairs of each set the exact Boltzmann policy of ``Q_i`` acts too (Metropolis-Hastings,
  credited ``V_i - Q_i``): its error has no sampler shortfall, and ``G_exact - G`` is that shortfall;
* on the composed pairs, the jointly trained skill (when the library has it) acts the same way on the combined reward,
  and the measured ``Q_w - Q_joint`` splits into three means over the pairs:
  ``constituents_error`` (``Q_w - sum_i w_i G_i``) + ``composition_gap`` (``sum_i w_i G_i - G_joint``, the
  composition's own gap measured with each policy's soft return) - ``joint_error`` (``Q_joint - G_joint``).

``--max-step 1`` puts every pair at a reset state (where ``skills.evaluation.diagnostics``' convergence check starts
its rollouts). Means are over pairs, each with its standard error across pairs (the rollouts of a pair are averaged first).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from skills.cli import at_least

from .cli import run_measurement
from .sampler_entropy import summary


@dataclass(frozen=True)
class ShiftSetup:
    """The measurement's sizes."""

    pairs: int = 40  # (s, a) pairs per state set: one per episode, at a random step
    rollouts: int = 8  # Monte Carlo rollouts of the constituent's policy per pair
    entropy_samples: int = 64  # sampler draws per visited state for its entropy
    tail: float = 0.05  # rollout length: gamma^T (max|r| + alpha d log 2) / (1 - gamma) <= tail
    seed: int = 40_000  # first episode seed (disjoint from the reports' 10000 range and the bound's pairs)
    exact_pairs: int = 8  # the first pairs of each set on which the exact Boltzmann policy of Q_i acts too (0: none)
    exact_steps: int = 100  # its Metropolis-Hastings steps per action
    value_samples: int = 512  # importance samples for V_i in the exact policy's credit V_i - Q_i
    max_step: int | None = None  # pairs at a random step below this (None: the family's horizon; 1: reset states only)


def difference(a: np.ndarray, b: np.ndarray) -> dict:
    """Mean of ``a`` minus mean of ``b`` (independent sets of pairs), with the standard error of that difference."""
    sa, sb = summary(a), summary(b)
    return {"mean": sa["mean"] - sb["mean"], "se": float(np.hypot(sa["se"], sb["se"]))}


def constituent_errors(skill, make_env, pairs: list, setup: ShiftSetup, key: int) -> dict[str, np.ndarray]:
    """At each pair: ``Q_i(s, a)`` and the Monte Carlo soft return ``G_i(s, a)`` of the skill's own sampler (mean over
    its rollouts), [P] each; on the first ``setup.exact_pairs`` pairs also ``G`` of the exact Boltzmann policy of
    ``Q_i`` (Metropolis-Hastings from the sampler, credited ``V_i - Q_i``), which has no sampler shortfall."""
    from compose.soft_returns import actor_returns, boltzmann_actor, sampler_actor
    from skills.evaluation.diagnostics import rollout_steps
    from skills.library.skill import task_of

    reward_range = task_of(skill.info).reward_range
    steps = rollout_steps(reward_range, skill.alpha, skill.act_dim, skill.gamma, setup.tail)
    starts = [s for s, _, _ in pairs]
    actor = sampler_actor(skill.name, skill, skill.alpha, setup.entropy_samples, seed=key)
    g, _ = actor_returns(actor, make_env, starts, setup.rollouts, steps, skill.gamma, key=key)
    obs = np.stack([o for _, o, _ in pairs]).astype(np.float32)
    act = np.stack([np.asarray(s.action, np.float32) for s, _, _ in pairs])
    out = {"Q": np.asarray(skill.q(obs, act), np.float64), "G": g.mean(axis=1)}
    if setup.exact_pairs > 0:
        exact = boltzmann_actor(skill.q, lambda o: skill.value(o, n_samples=setup.value_samples), skill.alpha, skill,
                                setup.exact_steps)
        g_exact, _ = actor_returns(exact, make_env, starts[:setup.exact_pairs], setup.rollouts, steps, skill.gamma,
                                   key=key + 10_000)
        out["G_exact"] = g_exact.mean(axis=1)
    return out


def error_record(own: dict[str, np.ndarray], comp: dict[str, np.ndarray]) -> dict:
    """A constituent's errors ``Q_i - G_i`` on its own and on the composed pairs, the shift between them, and with the
    exact Boltzmann policy (when measured) the sampler's part: ``G_exact - G`` on the same pairs."""
    e_own, e_comp = own["Q"] - own["G"], comp["Q"] - comp["G"]
    out = {"error_on_own_pairs": summary(e_own), "error_on_composed_pairs": summary(e_comp),
           "shift": difference(e_comp, e_own), "Q_on_own_pairs": summary(own["Q"]), "G_on_own_pairs": summary(own["G"]),
           "Q_on_composed_pairs": summary(comp["Q"]), "G_on_composed_pairs": summary(comp["G"])}
    for name, d in (("own", own), ("composed", comp)):
        if "G_exact" in d:
            n = len(d["G_exact"])
            out[f"exact_on_{name}_pairs"] = {"pairs": n, "error": summary(d["Q"][:n] - d["G_exact"]),
                                             "sampler_shortfall": summary(d["G_exact"] - d["G"][:n])}
    return out


def measure(spec: str, library: str | None, setup: ShiftSetup) -> dict:
    """Load the composition (average) and the joint skill if the library has it, then ``measure_loaded``."""
    import skills
    from compose import load

    started = time.perf_counter()
    torch.manual_seed(setup.seed)
    composed = load(spec, library=library, operator="average", seed=setup.seed)
    composed.build(progress=False)
    try:
        joint = skills.load(spec, library=library)
    except ValueError as err:
        joint, why = None, f"not measured: {err}"
    out = {"spec": spec, "library": library or "trained/"} | measure_loaded(composed, joint, setup)
    if joint is None:
        out["joint"] = why
    out["wall_time_s"] = round(time.perf_counter() - started, 1)
    return out


def measure_loaded(composed, joint, setup: ShiftSetup) -> dict:
    """Phases: draw the composed pairs; per constituent its own pairs and its errors on both sets; then (with a joint
    skill) the split of ``Q_w - Q_joint``. ``composed``: a built ``compose.ComposedSkill``."""
    import envs
    from compose.mc_check import pair_starts
    from skills.library.skill import task_of

    horizon = min(setup.max_step or composed.task.family.horizon, composed.task.family.horizon)

    def combined_env():
        return envs.make_task_env(composed.task)

    pairs = pair_starts(composed.policy, combined_env, setup, horizon)
    obs = np.stack([o for _, o, _ in pairs]).astype(np.float32)
    act = np.stack([np.asarray(s.action, np.float32) for s, _, _ in pairs])
    out: dict = {"alpha": composed.alpha, "gamma": composed.gamma, "pairs": setup.pairs, "rollouts": setup.rollouts,
                 "seed": setup.seed, "exact_pairs": setup.exact_pairs, "steps_below": horizon,
                 "weights": [float(w) for w in composed.weights],
                 "constituents": {}}
    weighted_error, weighted_g = np.zeros(len(pairs)), np.zeros(len(pairs))
    for k, (label, skill, w) in enumerate(zip(composed.labels, composed.parts, composed.weights, strict=True)):
        task = task_of(skill.info)

        def own_env(task=task):
            return envs.make_task_env(task)

        own = pair_starts(skill, own_env, setup, horizon)
        on_own = constituent_errors(skill, own_env, own, setup, key=setup.seed + 2 * k)
        on_comp = constituent_errors(skill, own_env, pairs, setup, key=setup.seed + 2 * k + 1)
        weighted_error += w * (on_comp["Q"] - on_comp["G"])
        weighted_g += w * on_comp["G"]
        out["constituents"][label] = {"task": task.name} | error_record(on_own, on_comp)
    out["constituents_error_weighted"] = summary(weighted_error)  # = Q_w - sum_i w_i G_i
    if joint is None:
        return out
    with torch.no_grad():
        q_w = np.asarray(composed.q_w(torch.as_tensor(obs), torch.as_tensor(act)), np.float64)
    on_joint = constituent_errors(joint, combined_env, pairs, setup, key=setup.seed + 2 * len(composed.parts))
    out["joint"] = {"path": str(joint.path), "error_on_composed_pairs": summary(on_joint["Q"] - on_joint["G"])}
    if "G_exact" in on_joint:
        n = len(on_joint["G_exact"])
        out["joint"]["exact"] = {"pairs": n, "error": summary(on_joint["Q"][:n] - on_joint["G_exact"])}
    out["Q_w_minus_Q_joint"] = summary(q_w - on_joint["Q"])
    out["split"] = {"constituents_error": summary(weighted_error), "composition_gap": summary(weighted_g - on_joint["G"]),
                    "joint_error": summary(on_joint["Q"] - on_joint["G"]),
                    "note": "Q_w - Q_joint = constituents_error + composition_gap - joint_error (each a mean over the "
                            "composed pairs); composition_gap = sum_i w_i G_i - G_joint estimates sum_i w_i Q*_i - Q*_w "
                            "with each policy's own Monte Carlo soft return"}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.constituent_shift", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="composition, e.g. puck-x+puck-y")
    parser.add_argument("--library", help="skill library (default: trained/)")
    parser.add_argument("--pairs", type=at_least(2), default=ShiftSetup.pairs,
                        help=f"(s, a) pairs per state set (default {ShiftSetup.pairs})")
    parser.add_argument("--rollouts", type=at_least(1), default=ShiftSetup.rollouts,
                        help=f"rollouts of the constituent's policy per pair (default {ShiftSetup.rollouts})")
    parser.add_argument("--seed", type=at_least(0), default=ShiftSetup.seed,
                        help=f"first episode seed (default {ShiftSetup.seed})")
    parser.add_argument("--exact-pairs", type=at_least(0), default=ShiftSetup.exact_pairs,
                        help="pairs of each set on which the exact Boltzmann policy of each Q_i acts too (default "
                             f"{ShiftSetup.exact_pairs}; 0: none)")
    parser.add_argument("--max-step", type=at_least(1), help="pairs at a random step below this (default: the family's "
                        "horizon; 1: reset states only)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 4 pairs (2 exact), 2 rollouts, 8 entropy "
                                                              "draws, short rollouts")
    parser.add_argument("--json", metavar="PATH", help="write the measurement as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.exact_pairs > args.pairs:
        parser.error(f"--exact-pairs must be at most --pairs ({args.pairs}), got {args.exact_pairs}")
    setup = ShiftSetup(pairs=args.pairs, rollouts=args.rollouts, seed=args.seed, exact_pairs=args.exact_pairs,
                       max_step=args.max_step)
    if args.quick:
        setup = ShiftSetup(pairs=4, rollouts=2, entropy_samples=8, tail=2.0, seed=args.seed, exact_pairs=2,
                           exact_steps=10, value_samples=64, max_step=args.max_step)

    return run_measurement(lambda: measure(args.spec, args.library, setup), args.json)


if __name__ == "__main__":
    sys.exit(main())
