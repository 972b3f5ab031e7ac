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
amortized sampler falls below it by its discounted ``alpha KL(sampler || pi_w)`` and the constituents' errors, whose
one-step part is measured too: each constituent's Bellman residual on the composed policy's own transitions (the
pairs' episodes), and their weighted mean ``eps_w``, which adds about ``eps_w / (1 - gamma)`` to ``Q_w - Q^{pi_w}``
when steady. The record says, per actor, the share of pairs on which each lower side holds, each control's verdict,
and ``pooled``: the margin ``G - (Q_w - C*)`` or ``G - (Q_w - D)`` averaged over the pairs with its standard error
across them (so the correction's own pointwise error counts as noise), holding on average when ``mean + 2 se >= 0``.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import torch

from compose.mc_check import MCBoundConfig
from skills.cli import at_least

from .cli import pairs_parser, run_measurement


def fit_gap(composition, sampler, seed: int, updates: int | None = None) -> tuple[torch.nn.Module, dict]:
    """``D`` of the Boltzmann ``pi_w`` of ``composition`` (``sampler`` centring the resampling; ``PolicyGapConfig``'s
    draws), and the fit's record; ``updates`` None: to the fixed point (``BoundConfig``'s schedule, as ``C*``)."""
    from compose.bound import BoundConfig, fit_policy_gap

    return fit_policy_gap(composition, sampler, BoundConfig(seed=seed, updates=updates))


def side_table(summary: dict) -> dict:
    """Per actor the lower side's holding share, and the controls' verdicts, of one ``summarise`` record."""
    return {"lower_holds": {name: a["lower_holds_fraction"] for name, a in summary["actors"].items()},
            "controls": [{"control": c["control"], "check": c["check"], "failed": c["failed"]} for c in summary["controls"]],
            "verdict": summary["verdict"], "exact_pi_w": {k: summary["exact_pi_w"][k] for k in
                                                          ("upper_falsified_fraction", "lower_holds_fraction")}
            if "exact_pi_w" in summary else None}


def composed_transitions(policy, make_env, seeds: list[int], horizon: int) -> dict[str, np.ndarray]:
    """The composed policy's own transitions on seeded episodes (stochastic, in lockstep); ``terminated`` where an
    episode ended before ``horizon``."""
    from compose.mc_check import traced_episodes

    rows: dict[str, list] = {"obs": [], "action": [], "next_obs": [], "terminated": []}
    for e in traced_episodes(policy, make_env, seeds, horizon):
        nxt = e.obs[1:] + [e.final_obs]
        rows["obs"] += e.obs
        rows["action"] += e.actions
        rows["next_obs"] += nxt
        rows["terminated"] += [0.0] * (e.length - 1) + [float(e.length < horizon)]
    return {k: np.asarray(v, np.float32) for k, v in rows.items()}


def residuals_on_composed(composition, data: dict[str, np.ndarray], value_samples: int = 1024) -> dict:
    """Each constituent's Bellman residual ``Q_i - (r_i + gamma V_i(s'))`` on the composed policy's own transitions, and
    their weighted mean ``eps_w``: what enters ``Q_w - Q^{pi_w}`` beside ``D`` (about ``eps_w / (1 - gamma)`` when it is
    steady along the way)."""
    from skills.evaluation.diagnostics import bellman_residual, mean_and_se
    from skills.library import task_of

    out, eps_w = {}, np.zeros(len(data["obs"]))
    for label, part, w in zip(composition.labels, composition.parts, composition.weights, strict=True):
        reward = np.asarray(task_of(part.info).reward(data["next_obs"], data["action"]), np.float64)
        res = bellman_residual(part, data["obs"], data["action"], reward, data["next_obs"], data["terminated"],
                               composition.gamma, value_samples)
        mean, se = mean_and_se(res)
        out[label] = {"mean": mean, "se": se}
        eps_w += float(w) * res
    mean, se = mean_and_se(eps_w)
    return {"transitions": len(eps_w), "per_constituent": out, "eps_w_mean": mean, "eps_w_se": se,
            "accumulated_estimate": mean / (1.0 - composition.gamma)}


def quick(config: MCBoundConfig) -> MCBoundConfig:
    """A smoke run's settings: 2 rollouts per pair, short rollouts, one exact-policy pair."""
    return replace(config, rollouts=2, control_rollouts=2, tail=0.5, exact_pairs=1, exact_steps=10, entropy_samples=16)


def measure(spec: str, library: str | None, config: MCBoundConfig, fit_updates: int | None = None,
            sampler_updates: int | None = None) -> dict:
    """Both lower sides on the same Monte Carlo soft returns (phases: build, fit ``D``, roll out, score twice);
    ``sampler_updates``: the composed sampler's training length (None: ``SamplerConfig``'s default)."""
    import envs
    import skills
    from compose import load
    from compose.mc_check import exact_actor_rows, pair_starts, pooled, soft_q_rows, summarise, with_exact
    from compose.run.checks import bound_inputs
    from compose.sampling import SamplerConfig

    seed = config.seed
    composition = load(spec, library=library, seed=seed, operator="average")
    built = composition.build(progress=False, sampler_cfg=SamplerConfig(updates=sampler_updates) if sampler_updates else None)
    assert built.correction is not None  # the average operator fits C*
    d_net, fit = fit_gap(composition, built.sampler, seed, fit_updates)
    joint = skills.load(spec, library=library)
    inputs = bound_inputs(composition, built, joint, lambda: envs.make_task_env(composition.task))
    inputs.policy_gap = d_net
    starts = pair_starts(inputs.composed, inputs.make_env, config, inputs.horizon)
    scored = soft_q_rows(inputs, starts, config)  # rows carry C* as "C" and D as "D"
    exact = exact_actor_rows(inputs, starts, config, scored["steps"])
    by_d_rows = {**scored, "rows": [{k: v for k, v in r.items() if k != "D"} | {"C": r["D"]} for r in scored["rows"]]}
    by_c, by_d = summarise(scored, exact, config), summarise(by_d_rows, exact, config)
    own = composed_transitions(inputs.composed, inputs.make_env, [seed + p for p in range(config.pairs)], inputs.horizon)
    g = np.array([r["composed"]["mean"] for r in scored["rows"]])
    q_w = np.array([r["Q_w"] for r in scored["rows"]])
    d, c_star = np.array([r["D"] for r in scored["rows"]]), np.array([r["C"] for r in scored["rows"]], np.float32)
    return {"spec": spec, "library": library or "trained/", "seed": seed, "pairs": len(starts), "mc": config.to_dict(),
            **({"sampler_updates": sampler_updates} if sampler_updates else {}),
            "rollout_steps": scored["steps"], "fit_D": fit, "C_star_mean": float(c_star.mean()), "D_mean": float(d.mean()),
            "Q_w_minus_G_composed_mean": float(np.mean(q_w - g)),
            "soft_return_mean": {name: a["soft_return_mean"] for name, a in by_d["actors"].items()},
            "with_C_star": side_table(by_c) | {"pooled": pooled(with_exact(scored["rows"], exact), "C")},
            "with_D": side_table(by_d) | {"pooled": pooled(with_exact(scored["rows"], exact), "D")},
            "exact_pi_w": by_d.get("exact_pi_w"),
            "constituent_residuals_on_composed": residuals_on_composed(composition, own), "per_pair": scored["rows"]}


def main(argv: list[str] | None = None) -> int:
    parser = pairs_parser("policy_gap", __doc__, "composition with a jointly trained skill, e.g. reach+avoid", 20)
    parser.add_argument("--exact-pairs", type=at_least(0), default=8,
                        help="pairs on which the exact pi_w (Metropolis-Hastings) acts too (default 8, at most --pairs; slow)")
    parser.add_argument("--fit-updates", type=at_least(1), help="TD updates of the D fit (default: to its fixed point, as C*)")
    parser.add_argument("--sampler-updates", type=at_least(1),
                        help="train the composed sampler this long (default: SamplerConfig's 10,000; cached in the library)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 rollouts per pair, short rollouts")
    parser.add_argument("--json", metavar="PATH", help="write the measurement as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    config = MCBoundConfig(pairs=args.pairs, seed=args.seed, exact_pairs=min(args.exact_pairs, args.pairs))
    config = quick(config) if args.quick else config

    return run_measurement(lambda: measure(args.spec, args.library, config, args.fit_updates, args.sampler_updates), args.json)


if __name__ == "__main__":
    sys.exit(main())
