"""Where a skill's sampler folds, how far off is the entropy its soft returns are credited with?

    python -m bench.fold_entropy place [--composed] [--library LIB] [--states 16] [--episodes 4] [--seed 700] [--json PATH]

Every soft return credits an amortized sampler ``a = tanh(f(s, xi))`` with its entropy
(``skills.evaluation.entropy.acting_entropy``): by the change of variables through its network, exact where ``f(s, .)``
is one-to-one, and at a state where the Jacobian's determinant changes sign among the draws (the map folds, and the
change of variables overstates the entropy) by the nearest-neighbour estimate on 64 draws. On ``reach+avoid`` no visited
state folds (bench/sampler_entropy.py). On the Fetch ``place`` skills most do. This measures each credit against a
reference at states the skill visits (its own stochastic episodes from ``--seed``; with ``--composed``, the composition
of SPEC's parts by averaging, the policy ``compose.run SPEC`` evaluates): the Kozachenko-Leonenko estimate on
``2^19`` draws at that state (``k = 4``, neighbours by a k-d tree), whose own convergence is shown by the same on
``2^17``. Per kind of state (folded, unflagged): each credit's error against the reference (mean and SE across states,
nats), and what a constant error of that size does to a soft return (``alpha sum_t gamma^t`` per nat over the episode).

Credits measured: the change of variables on 64 and on 2,048 draws, the nearest-neighbour estimate on 64 and on 1,024
draws, and the credit ``acting_entropy`` gives (the first where unflagged, the third where folded).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from skills.cli import at_least

from .cli import run_measurement

REFERENCE_DRAWS = (1 << 17, 1 << 19)  # the reference, and a quarter of it to show how far it has converged
REFERENCE_K = 4


@dataclass(frozen=True)
class FoldSetup:
    """The measurement's sizes."""

    states: int = 16  # visited states, drawn at random from the episodes
    episodes: int = 4
    seed: int = 700
    credit_draws: int = 64  # as acting_entropy's default
    large_draws: tuple[int, int] = (1024, 2048)  # the estimate's and the change of variables' larger runs
    reference_draws: tuple[int, ...] = REFERENCE_DRAWS


def reference_entropy(sampler, obs: np.ndarray, draws: int, seed: int) -> float:
    """``H(sigma(.|s))`` at one state by the Kozachenko-Leonenko estimator on ``draws`` draws of ``u`` (neighbours by a
    k-d tree, ``REFERENCE_K``-th), plus ``E sum log(1 - tanh(u)^2)``: nats."""
    from scipy.spatial import cKDTree

    from skills.evaluation.entropy import kozachenko_leonenko

    generator = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(1, draws, sampler.act_dim, generator=generator)
    with torch.no_grad():
        u = sampler(torch.as_tensor(obs[None], dtype=torch.float32), noise)[0].double().numpy()
    r = cKDTree(u).query(u, k=REFERENCE_K + 1)[0][:, REFERENCE_K]  # the first neighbour is the draw itself
    a = np.tanh(u)
    return float(kozachenko_leonenko(np.log(np.maximum(r, 1e-300)).mean(), draws, REFERENCE_K, u.shape[1])
                 + np.log1p(-a**2).sum(-1).mean())


@dataclass(frozen=True)
class Actor:
    """The policy measured and what its soft return needs."""

    policy: object  # a skill or a composition: sample, and a sampler network
    make_env: Callable[[], object]
    alpha: float
    gamma: float
    horizon: int


def actor(spec: str, library: str | None, composed: bool) -> Actor:
    """The skill named ``spec``, or with ``composed`` the composition of its parts (``compose.load``, averaging)."""
    if composed:
        import compose
        import envs

        composition = compose.load(spec, library=library)
        task = composition.task
        return Actor(composition, lambda: envs.make_task_env(task), composition.alpha, composition.gamma,
                     task.family.horizon)
    import skills
    from skills.library.skill import task_of

    skill = skills.load(spec, library)
    return Actor(skill, skill.make_env, skill.alpha, skill.gamma, task_of(skill.info).family.horizon)


def visited_states(acting: Actor, setup: FoldSetup) -> np.ndarray:
    """``setup.states`` states of the policy's own stochastic episodes, drawn at random: [N, o]."""
    from compose.mc_check import traced_episodes

    seeds = [setup.seed + i for i in range(setup.episodes)]
    episodes = traced_episodes(acting.policy, acting.make_env, seeds, acting.horizon)
    obs = np.concatenate([np.asarray(e.obs[: e.length]) for e in episodes])
    pick = np.random.default_rng(setup.seed).choice(len(obs), size=min(setup.states, len(obs)), replace=False)
    return obs[np.sort(pick)]


def credits(policy, obs: np.ndarray, setup: FoldSetup) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each credit at each state, and where the map folds: ({credit: [N] nats}, folded [N])."""
    from skills.evaluation.entropy import acting_entropy, change_of_variables_entropy, policy_entropy, sampler_network

    network = sampler_network(policy)
    m, (large_estimate, large_change) = setup.credit_draws, setup.large_draws
    by_change, folded = change_of_variables_entropy(network, obs, m, setup.seed)
    out = {f"change_of_variables_{m}": by_change,
           f"change_of_variables_{large_change}": change_of_variables_entropy(network, obs, large_change, setup.seed)[0],
           f"estimate_{m}": policy_entropy(policy, obs, m, 1, setup.seed),
           f"estimate_{large_estimate}": policy_entropy(policy, obs, large_estimate, 1, setup.seed),
           "credited": acting_entropy(policy, obs, m, 1, setup.seed)}
    return out, folded


def errors(values: dict[str, np.ndarray], reference: np.ndarray, mask: np.ndarray, per_nat: float) -> dict:
    """Each credit's error against the reference on the states of ``mask``: mean, SE (nats), and its soft-return effect."""
    from skills.evaluation.diagnostics import mean_and_se

    if not mask.any():
        return {"states": 0}
    out: dict = {"states": int(mask.sum())}
    for name, x in values.items():
        mean, se = mean_and_se((x - reference)[mask])
        out[name] = {"error_nats": mean, "se": se, "soft_return_effect": mean * per_nat}
    return out


def measure(spec: str, library: str | None, composed: bool, setup: FoldSetup) -> dict:
    """Phases: the policy and its visited states, the credits, the reference, the errors by kind of state."""
    from skills.evaluation.entropy import sampler_network

    acting = actor(spec, library, composed)
    network = sampler_network(acting.policy)
    if network is None:
        raise ValueError(f"{spec} acts with no sampler network: nothing folds")
    obs = visited_states(acting, setup)
    values, folded = credits(acting.policy, obs, setup)
    small, large = setup.reference_draws[0], setup.reference_draws[-1]
    refs = {n: np.array([reference_entropy(network, o, n, setup.seed + i) for i, o in enumerate(obs)]) for n in (small, large)}
    per_nat = acting.alpha * float(sum(acting.gamma**t for t in range(acting.horizon)))
    everywhere = np.ones(len(obs), dtype=bool)
    return {"spec": spec, "policy": "composed (average)" if composed else "skill", "library": library or "trained/",
            "seed": setup.seed, "states": len(obs), "alpha": acting.alpha, "gamma": acting.gamma, "act_dim": network.act_dim,
            "soft_return_per_nat": per_nat,
            "folded_share": float(folded.mean()), "reference": f"Kozachenko-Leonenko, k = {REFERENCE_K}, {large} draws",
            "reference_convergence": errors({f"reference_{small}": refs[small]}, refs[large], everywhere, per_nat),
            "reference_entropy_mean": float(refs[large].mean()),
            "folded": errors(values, refs[large], folded, per_nat),
            "unflagged": errors(values, refs[large], ~folded, per_nat)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fold_entropy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="skill name (newest version), name@vN, or a skill directory, e.g. place; with "
                        "--composed, a composition such as place+clear")
    parser.add_argument("--composed", action="store_true", help="measure the composition of SPEC's parts (averaging)")
    parser.add_argument("--library", help="skill library (default: trained/)")
    parser.add_argument("--states", type=at_least(2), default=16, help="visited states measured (default 16)")
    parser.add_argument("--episodes", type=at_least(1), default=4,
                        help="the policy's episodes the states are drawn from (default 4)")
    parser.add_argument("--seed", type=at_least(0), default=700, help="first episode seed (default 700)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 4 states of 1 episode, references on 2^12/2^14")
    parser.add_argument("--json", metavar="PATH", help="write the measurement as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    setup = FoldSetup(states=args.states, episodes=args.episodes, seed=args.seed)
    if args.quick:
        setup = FoldSetup(states=4, episodes=1, seed=args.seed, large_draws=(128, 128), reference_draws=(1 << 12, 1 << 14))

    return run_measurement(lambda: measure(args.spec, args.library, args.composed, setup), args.json)


if __name__ == "__main__":
    sys.exit(main())
