"""Why does the amortized sampler fall short of ``Q_w - D``: its policy, or the estimate of its entropy?

    python -m bench.sampler_entropy reach+avoid [--library LIB] [--pairs 8] [--seed 40000] [--states 128] [--json PATH]

The lower side with the Boltzmann policy's own gap ``D`` (``compose.mc_check.policy_gap_side``) is an equality for the
exact ``pi_w``: ``Q^{pi_w} = Q_w - D``. The composed sampler's Monte Carlo soft return falls below it (issue 30), and its
return is credited with a nearest-neighbour estimate of its entropy (``skills.evaluation.entropy``, 64 draws per visited
state), while the exact ``pi_w``'s is credited ``V_w - Q_w``. A per-step entropy error of ``b`` nats moves a soft return
by about ``alpha b sum_t gamma^t``, which with ``alpha`` 0.05 and ``gamma`` 0.95 is about ``b``. So this measures, on the
pairs of ``bench.policy_gap`` (the composed policy's own episodes from ``--seed``; ``D`` from the library's cache):

1. **The estimator on the exact ``pi_w``**, whose entropy is known (``E_{a~pi_w}[V_w - Q_w]/alpha``, ``V_w`` from
   4,096 importance samples): the nearest-neighbour estimate on 64, 256 and 1,024 Metropolis-Hastings draws of ``pi_w``
   per state, at ``--states`` states that ``pi_w`` visits. Its error per step, in nats.
2. **The same rollouts of ``pi_w`` scored twice**: credited ``V_w - Q_w`` (as the report does) and credited with the
   64-draw estimate (as the sampler is). The difference in the margin ``G - (Q_w - D)`` is the estimator's share
   alone, on identical trajectories.
3. **The sampler's rollouts scored three ways**: with the estimate on 64 and on 1,024 draws per state, and with its
   entropy by the change of variables through its network (``skills.evaluation.entropy.acting_entropy``, what the
   report credits now; exact where the map from noise to action is one-to-one, and the share of states where it
   folds is reported). At sampled visited states: its entropy each way and its cross-entropy
   ``E_{a~sampler}[V_w - Q_w]/alpha`` to ``pi_w``, whose difference is ``KL(sampler || pi_w)``: what is left of the
   shortfall once the estimator's error is taken out.

Every margin is pooled over the pairs (mean, SE across pairs), as the report's lower side with ``D`` is.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch

from skills.cli import at_least
from skills.sql import seeded

from .cli import pairs_parser, run_measurement

DRAWS = (64, 256, 1024)  # nearest-neighbour draws per state compared
VALUE_SAMPLES = 4096  # importance samples for V_w where the exact entropy is computed
MH_STEPS = 100  # Metropolis-Hastings steps per draw of the exact pi_w (as MCBoundConfig.exact_steps)


@dataclass(frozen=True)
class EntropySetup:
    """The measurement's sizes."""

    pairs: int = 8  # (s, a) pairs on the composed policy's episodes (the first of bench.policy_gap's)
    seed: int = 40_000
    sampler_rollouts: int = 8  # rollouts per pair of the composed sampler
    exact_rollouts: int = 4  # rollouts per pair of the exact pi_w (Metropolis-Hastings: slow)
    states: int = 128  # visited states per actor for the per-state entropy table
    draws: tuple[int, ...] = DRAWS


# ---- draws and entropies at given states ------------------------------------------------------------------------
def boltzmann_draws(policy, obs: np.ndarray, m: int, seed: int) -> torch.Tensor:
    """``m`` draws of the exact ``pi_w`` (``compose.soft_returns.BoltzmannPolicy``) at each state: [S, o] -> [S, m, d]."""
    out = []
    with seeded(seed):
        for chunk in np.array_split(obs, max(1, len(obs) * m // 32_768)):
            a = policy.act(np.repeat(chunk, m, axis=0))
            out.append(torch.as_tensor(a).reshape(len(chunk), m, -1))
    return torch.cat(out)


def sampler_draws(policy, obs: np.ndarray, m: int, seed: int) -> torch.Tensor:
    """``m`` draws of an amortized sampler at each state: [S, o] -> [S, m, d]."""
    with seeded(seed):
        return torch.as_tensor(np.asarray(policy.sample(obs, m)), dtype=torch.float32)


def cross_entropy(composed, obs: np.ndarray, draws: torch.Tensor, value: np.ndarray) -> np.ndarray:
    """``E_{a~draws}[V_w(s) - Q_w(s, a)] / alpha`` per state (nats): the entropy when the draws are ``pi_w``'s, the
    cross-entropy to ``pi_w`` otherwise. obs [S, o], draws [S, M, d], value [S] -> [S]."""
    o = torch.as_tensor(obs, dtype=torch.float32).unsqueeze(1).expand(-1, draws.shape[1], -1)
    with torch.no_grad():
        q = composed.q_fn(o, draws).double().numpy()
    return (value[:, None] - q).mean(axis=1) / composed.alpha


def visited(rollouts, count: int, seed: int) -> np.ndarray:
    """``count`` states the actor visited after the first step (while alive), drawn at random: [count, o]."""
    obs = rollouts.obs[:, 1:][rollouts.alive[:, 1:] > 0]
    pick = np.random.default_rng(seed).choice(len(obs), size=min(count, len(obs)), replace=False)
    return obs[pick]


def summary(x: np.ndarray) -> dict:
    """Mean and standard error of per-state values."""
    from skills.evaluation.diagnostics import mean_and_se

    mean, se = mean_and_se(x)
    return {"mean": mean, "se": se}


# ---- the phases --------------------------------------------------------------------------------------------------
def prepare(spec: str, library: str | None, seed: int):
    """The composition, its composed policy, its ``D`` (from the library's cache) and the bound's inputs."""
    import envs
    import skills
    from compose import load
    from compose.build import build_policy_gap
    from compose.run.checks import bound_inputs

    composition = load(spec, library=library, seed=seed, operator="average")
    built = composition.build(progress=False)
    d_net, info = build_policy_gap(composition, built, library)
    inputs = bound_inputs(composition, built, skills.load(spec, library=library), lambda: envs.make_task_env(composition.task))
    inputs.policy_gap = d_net
    return inputs, {"cached": info.get("cached", False)}


def margins(g: np.ndarray, q_w: np.ndarray, d: np.ndarray) -> dict:
    """The margin ``G - (Q_w - D)`` pooled over the pairs: g [S, n] soft returns, q_w and d [S]."""
    from compose.mc_check import pooled_margin

    m = g.mean(axis=1) - (q_w - d)
    return pooled_margin(m) | {"per_pair": m.tolist()}


def exact_side(inputs, starts, steps: int, setup: EntropySetup, pair_q) -> dict:
    """The exact ``pi_w``: its rollouts scored with ``V_w - Q_w`` and with the 64-draw estimate; the estimator's error
    per step against the known entropy at visited states."""
    from compose.soft_returns import ActingPolicy, actor_returns, boltzmann_actor, soft_returns
    from skills.evaluation.entropy import squashed_entropy

    composed, alpha = inputs.composed, inputs.alpha
    actor = boltzmann_actor(composed.q_fn, lambda o: composed.value(o, n_samples=512), alpha, composed, MH_STEPS)
    g, rollouts = actor_returns(actor, inputs.make_env, starts, setup.exact_rollouts, steps, inputs.gamma,
                                key=setup.seed * 100 + 99)
    m0 = setup.draws[0]
    estimated = ActingPolicy("exact pi_w, estimated entropy", actor.policy, lambda o, a: alpha * squashed_entropy(
        boltzmann_draws(actor.policy, o, m0, setup.seed)).double().numpy(), f"nearest-neighbour on {m0} draws")
    g_est = soft_returns(estimated, rollouts, inputs.gamma).reshape(g.shape)
    obs = visited(rollouts, setup.states, setup.seed)
    value = np.asarray(composed.value(obs, n_samples=VALUE_SAMPLES), np.float64)
    table = {}
    for m in setup.draws:
        draws = boltzmann_draws(actor.policy, obs, m, setup.seed + m)
        exact, knn = cross_entropy(composed, obs, draws, value), squashed_entropy(draws).double().numpy()
        table[m] = {"estimate": summary(knn), "exact": summary(exact), "error": summary(knn - exact)}
    q_w, d = pair_q
    return {"margin_credited_V_w_minus_Q_w": margins(g, q_w, d), f"margin_credited_{m0}_draw_estimate": margins(g_est, q_w, d),
            "estimator_share_of_margin": float((g_est - g).mean()), "entropy_per_state_nats": table,
            "states": len(obs), "rollouts_per_pair": setup.exact_rollouts}


def sampler_side(inputs, starts, steps: int, setup: EntropySetup, pair_q) -> dict:
    """The composed sampler: its rollouts scored with the estimate on the smallest and the largest draw count; at visited
    states its entropy estimates and its cross-entropy to ``pi_w`` (their difference: ``KL(sampler || pi_w)``)."""
    from compose.soft_returns import ActingPolicy, actor_returns, sampler_actor, soft_returns
    from skills.evaluation.entropy import change_of_variables_entropy, policy_entropy, squashed_entropy

    composed, alpha = inputs.composed, inputs.alpha
    small, large = setup.draws[0], setup.draws[-1]

    def estimated(m: int) -> ActingPolicy:
        return ActingPolicy("composed", composed, lambda o, a: alpha * policy_entropy(composed, o, m, 1, setup.seed),
                            f"nearest-neighbour estimate on {m} draws")

    g, rollouts = actor_returns(estimated(small), inputs.make_env, starts, setup.sampler_rollouts, steps, inputs.gamma,
                                key=setup.seed * 100)
    g_large = soft_returns(estimated(large), rollouts, inputs.gamma).reshape(g.shape)
    g_exact = soft_returns(sampler_actor("composed", composed, alpha, small, seed=setup.seed), rollouts,
                           inputs.gamma).reshape(g.shape)
    obs = visited(rollouts, setup.states, setup.seed)
    value = np.asarray(composed.value(obs, n_samples=VALUE_SAMPLES), np.float64)
    table = {}
    for m in setup.draws:
        draws = sampler_draws(composed, obs, m, setup.seed + m)
        knn, cross = squashed_entropy(draws).double().numpy(), cross_entropy(composed, obs, draws, value)
        by_change, folded = change_of_variables_entropy(composed.sampler, obs, m, setup.seed + m)
        table[m] = {"estimate": summary(knn), "change_of_variables": summary(by_change),
                    "folded_share": float(folded.mean()), "cross_entropy_to_pi_w": summary(cross),
                    "kl_to_pi_w": summary(cross - knn), "kl_to_pi_w_by_change_of_variables": summary(cross - by_change)}
    q_w, d = pair_q
    return {f"margin_credited_{small}_draw_estimate": margins(g, q_w, d),
            f"margin_credited_{large}_draw_estimate": margins(g_large, q_w, d),
            "margin_credited_change_of_variables": margins(g_exact, q_w, d),
            "more_draws_share_of_margin": float((g_large - g).mean()),
            "change_of_variables_share_of_margin": float((g_exact - g).mean()), "entropy_per_state_nats": table,
            "states": len(obs), "rollouts_per_pair": setup.sampler_rollouts}


def measure(spec: str, library: str | None, setup: EntropySetup) -> dict:
    """Both actors on the same pairs (phases: prepare, pairs, the exact ``pi_w``, the sampler)."""
    from compose.mc_check import MCBoundConfig, pair_starts
    from skills.evaluation.diagnostics import rollout_steps

    inputs, d_info = prepare(spec, library, setup.seed)
    config = MCBoundConfig(pairs=setup.pairs, seed=setup.seed)
    chosen = pair_starts(inputs.composed, inputs.make_env, config, inputs.horizon)
    steps = rollout_steps(inputs.reward_range, inputs.alpha, inputs.composed.act_dim, inputs.gamma, config.tail)
    obs = torch.as_tensor(np.stack([o for _, o, _ in chosen]))
    act = torch.as_tensor(np.stack([np.asarray(s.action, np.float32) for s, _, _ in chosen]))
    with torch.no_grad():
        pair_q = (np.asarray(inputs.composed.q(obs, act), np.float64), inputs.policy_gap(obs, act).double().numpy())
    starts = [s for s, _, _ in chosen]
    weight = float(sum(inputs.gamma**t for t in range(1, steps)))
    exact, sampler = exact_side(inputs, starts, steps, setup, pair_q), sampler_side(inputs, starts, steps, setup, pair_q)
    return {"spec": spec, "library": library or "trained/", "seed": setup.seed, "pairs": len(starts),
            "rollout_steps": steps, "alpha": inputs.alpha, "gamma": inputs.gamma, "act_dim": inputs.composed.act_dim,
            "return_per_nat_of_entropy_error": inputs.alpha * weight, "D": d_info | {"mean": float(pair_q[1].mean())},
            "exact_pi_w": exact, "composed_sampler": sampler,
            "sampler_minus_exact_pi_w": {
                credit: paired(sampler[f"margin_credited_{credit}"], exact["margin_credited_V_w_minus_Q_w"])
                for credit in (f"{setup.draws[0]}_draw_estimate", "change_of_variables")}}


def paired(a: dict, b: dict) -> dict:
    """The per-pair difference of two ``margins`` records (the same pairs, so ``Q_w`` and ``D`` cancel): mean, SE."""
    x = np.asarray(a["per_pair"]) - np.asarray(b["per_pair"])
    return {"mean": float(x.mean()), "se": float(x.std(ddof=1) / np.sqrt(len(x)))}


def main(argv: list[str] | None = None) -> int:
    parser = pairs_parser("sampler_entropy", __doc__, "composition with a jointly trained skill and a bound, e.g. reach+avoid",
                          8)
    parser.add_argument("--states", type=at_least(2), default=128,
                        help="visited states per actor in the entropy table (default 128)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 pairs, 2 rollouts, 8 states, 16/32 draws")
    parser.add_argument("--json", metavar="PATH", help="write the measurement as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    setup = EntropySetup(pairs=args.pairs, seed=args.seed, states=args.states)
    if args.quick:
        setup = EntropySetup(pairs=2, seed=args.seed, sampler_rollouts=2, exact_rollouts=2, states=8, draws=(16, 32))

    return run_measurement(lambda: measure(args.spec, args.library, setup), args.json)


if __name__ == "__main__":
    sys.exit(main())
