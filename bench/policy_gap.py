"""Can the lower side of the bound tell the composed policy from a poor one? ``C*`` against the policy's own gap ``D``:

    python -m bench.policy_gap reach+avoid [--library LIB] [--pairs 20] [--seed 40000] [--json PATH]

The theorem's lower side ``Q^{pi_w} >= Q_w - C*`` (Haarnoja et al. 2018) maximises over the next action, so ``C*`` is
several times the gap it covers and a random actor passes it too (issue 30). The gap of the Boltzmann policy itself,
``D = gamma E[delta(s') + E_{a'~pi_w} D(s', a')]`` (``compose.bound.policy_gap_td_target``), is exact: with exact
``Q_i``, ``Q^{pi_w} = Q_w - D``, and ``Q*_w >= Q_w - D >= Q_w - C*``. It is fitted here by TD on the constituents' stored
transitions, as ``C*`` is, with ``E_{a'~pi_w}`` from 16 sampling-importance-resampling draws of ``pi_w`` per next state
(256 proposals from the mixture around 8 composed-sampler actions; ``compose.bound.boltzmann_draws``). No environment
samples are used for either fit.

Then one set of Monte Carlo soft returns (``compose.mc_check``: pairs on the composed policy's own episodes from
``--seed``, every actor credited with its own entropy) is scored twice: the lower side with ``C*`` and with ``D``, each
with its negative controls (the random actor and each constituent acting alone must fail it; ``C`` or ``D`` = 0 must
fail it). With ``D`` the lower side is an equality for the exact ``pi_w`` (reported on its pairs, both sides), and the
amortized sampler falls below it by its discounted ``alpha KL(sampler || pi_w)`` and the constituents' errors. The
record says, per actor, the share of pairs on which each lower side holds, and each control's verdict.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import numpy as np
import torch

from compose.mc_check import MCBoundConfig

from .cli import show_and_write

DRAWS, PROPOSALS, CENTERS = 16, 256, 8


def fit_gap(composition, policy, seed: int, updates: int | None = None) -> tuple[torch.nn.Module, dict]:
    """``D`` of the Boltzmann ``pi_w`` of ``composition`` (its sampler centring the resampling), and the fit's record;
    ``updates`` None: to the fixed point (``BoundConfig``'s schedule, as ``C*``)."""
    from compose.bound import BoundConfig, boltzmann_draws, fit_policy_gap

    generator = torch.Generator().manual_seed(seed)
    sample = boltzmann_draws(composition.q_w, lambda o: policy.sampler.sample(o, CENTERS, generator=generator),
                             composition.alpha, PROPOSALS, generator)
    start = time.perf_counter()
    d_net, info = fit_policy_gap(composition, sample, DRAWS, BoundConfig(seed=seed, updates=updates))
    return d_net, info | {"wall_s": time.perf_counter() - start, "draws": DRAWS, "proposals": PROPOSALS,
                          "centers": CENTERS}


def pair_tensors(starts: list) -> tuple[torch.Tensor, torch.Tensor]:
    """(obs [N, o], actions [N, d]) of the check's (s, a) pairs."""
    obs = torch.as_tensor(np.stack([o for _, o, _ in starts]))
    return obs, torch.as_tensor(np.stack([np.asarray(s.action, np.float32) for s, _, _ in starts]))


def side_table(summary: dict) -> dict:
    """Per actor the lower side's holding share, and the controls' verdicts, of one ``summarise`` record."""
    return {"lower_holds": {name: a["lower_holds_fraction"] for name, a in summary["actors"].items()},
            "controls": [{"control": c["control"], "check": c["check"], "failed": c["failed"]} for c in summary["controls"]],
            "verdict": summary["verdict"], "exact_pi_w": {k: summary["exact_pi_w"][k] for k in
                                                          ("upper_falsified_fraction", "lower_holds_fraction")}
            if "exact_pi_w" in summary else None}


def quick(config: MCBoundConfig) -> MCBoundConfig:
    """A smoke run's settings: 2 rollouts per pair, short rollouts, one exact-policy pair."""
    return replace(config, rollouts=2, control_rollouts=2, tail=0.5, exact_pairs=1, exact_steps=10, entropy_samples=16)


def measure(spec: str, library: str | None, config: MCBoundConfig, fit_updates: int | None = None) -> dict:
    """Both lower sides on the same Monte Carlo soft returns (phases: build, fit ``D``, roll out, score twice)."""
    import envs
    import skills
    from compose import load
    from compose.mc_check import exact_actor_rows, pair_starts, soft_q_rows, summarise
    from compose.run.checks import bound_inputs

    seed = config.seed
    composition = load(spec, library=library, seed=seed, operator="average")
    built = composition.build(progress=False)
    assert built.correction is not None  # the average operator fits C*
    d_net, fit = fit_gap(composition, composition.policy, seed, fit_updates)
    joint = skills.load(spec, library=library)
    inputs = bound_inputs(composition, built, joint, lambda: envs.make_task_env(composition.task))
    inputs.correction = d_net
    starts = pair_starts(inputs.composed, inputs.make_env, config, inputs.horizon)
    scored = soft_q_rows(inputs, starts, config)  # rows carry D as "C"
    exact = exact_actor_rows(inputs, starts, config, scored["steps"])
    with torch.no_grad():
        c_star = built.correction(*pair_tensors(starts)).numpy()
    with_c = {**scored, "rows": [r | {"C": float(c), "D": r["C"]} for r, c in zip(scored["rows"], c_star, strict=True)]}
    by_c, by_d = summarise(with_c, exact, config), summarise(scored, exact, config)
    g = np.array([r["composed"]["mean"] for r in scored["rows"]])
    q_w = np.array([r["Q_w"] for r in scored["rows"]])
    d = np.array([r["C"] for r in scored["rows"]])
    return {"spec": spec, "library": library or "trained/", "seed": seed, "pairs": len(starts), "mc": config.to_dict(),
            "rollout_steps": scored["steps"], "fit_D": fit, "C_star_mean": float(c_star.mean()), "D_mean": float(d.mean()),
            "Q_w_minus_G_composed_mean": float(np.mean(q_w - g)),
            "soft_return_mean": {name: a["soft_return_mean"] for name, a in by_d["actors"].items()},
            "with_C_star": side_table(by_c), "with_D": side_table(by_d),
            "exact_pi_w": by_d.get("exact_pi_w"), "per_pair": with_c["rows"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.policy_gap", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="composition with a jointly trained skill, e.g. reach+avoid")
    parser.add_argument("--library", help="skill library (default: trained/)")
    parser.add_argument("--pairs", type=int, default=20, help="(s, a) pairs, one per composed episode (default 20)")
    parser.add_argument("--seed", type=int, default=40_000, help="first episode seed, and the fits' seed (default 40000)")
    parser.add_argument("--fit-updates", type=int, help="TD updates of the D fit (default: to its fixed point, as C*)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 rollouts per pair, short rollouts")
    parser.add_argument("--json", metavar="PATH", help="write the measurement as JSON")
    args = parser.parse_args(argv)
    if args.pairs < 2:
        parser.error(f"--pairs must be >= 2, got {args.pairs}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    if args.fit_updates is not None and args.fit_updates < 1:
        parser.error(f"--fit-updates must be >= 1, got {args.fit_updates}")
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    config = MCBoundConfig(pairs=args.pairs, seed=args.seed)
    config = quick(config) if args.quick else config
    show_and_write(measure(args.spec, args.library, config, args.fit_updates), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
