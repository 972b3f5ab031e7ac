"""Where ``Q_w - D`` parts from the exact policy's soft return: the soft Bellman equations along its own paths.

    python -m bench.gap_paths place+clear [--library LIB] [--pairs 20] [--rollouts 4] [--seed 40000] [--json PATH]

The lower side with the policy's own gap ``D`` says ``G ~ Q_w - D`` for the exact Boltzmann ``pi_w`` (``bench.policy_gap``,
``compose.mc_check``). Where the two part (the Fetch pairs, issue 30), this bench says by how much each cause contributes.
With a deterministic simulator one step of the soft Bellman equations holds exactly along every rollout of ``pi_w``
from a pair ``(s_0, a_0)``, and summed with discounts it telescopes:

    Q_w(s_0, a_0) - G  =  R_path + D_path + V_diff + tail            (exactly, given the values computed below)

* ``R_path = sum_t gamma^t eps_t``, ``eps_t = Q_w(s_t, a_t) - r_t - gamma sum_i w_i V_i(s_{t+1})``: the constituents'
  one-step Bellman residuals along the path (0 for exact ``Q_i``; split per constituent with its own reward);
* ``D_path = sum_t gamma^{t+1} delta(s_{t+1})``, ``delta = sum_i w_i V_i - V_w``: the Monte Carlo value of ``D`` at the
  pair, against which the fitted ``D`` (TD on the constituents' stored transitions, ``compose.build.build_policy_gap``,
  what the check uses) is compared pair by pair: ``D_fit - D_path`` is the fit's own error there;
* ``V_diff = sum_{t>=1} gamma^t [V_w(s_t) - V'_w(s_t)]``: ``delta`` takes ``V_w`` from uniform importance samples shared with
  the ``V_i`` (``ComposedQ.soft_values``, as ``D``'s fit does), the check's entropy credit ``V'_w - Q_w`` from samples
  around the composed sampler's actions (``compose.mc_check.exact_actor``); the two estimators' disagreement;
* ``tail = gamma^T V_w(s_T)``: what the truncated rollout leaves out.

``G`` is the check's soft return (``compose.soft_returns.soft_returns``: ``r_0 + sum_{t>=1} gamma^t (r_t + V'_w - Q_w)``).
The lower side's margin is then ``G - (Q_w - D_fit) = (D_fit - D_path) - R_path - V_diff - tail``: the record pools each
term over the pairs (mean +- SE across pairs) and checks that the identity closes (``unexplained``, float error only).
The pairs and the exact actor's rollouts are those of ``compose.mc_check`` for the same ``--seed``, pairs and rollouts.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import torch

from compose.mc_check import MCBoundConfig
from skills.cli import at_least

from .cli import pairs_parser, run_measurement


def on_grid(live: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` of the live steps placed on the [n, T] grid of the rollouts (0 elsewhere)."""
    grid = np.zeros(live.shape)
    grid[live] = values
    return grid


def soft_values_on(composition, states: np.ndarray, n_samples: int, seed: int, chunk: int = 256
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``(V_i [N, M], V_w [M])`` at ``states`` from shared uniform importance samples (``ComposedQ.soft_values``, as the
    ``delta`` of ``D``'s fit): [M, o] -> float64."""
    generator = torch.Generator().manual_seed(seed)
    v_i, v_w = [], []
    with torch.no_grad():
        for start in range(0, len(states), chunk):
            vi, vw = composition.q_w.soft_values(torch.as_tensor(states[start:start + chunk]), n_samples, generator)
            v_i.append(vi.double().numpy())
            v_w.append(vw.double().numpy())
    return np.concatenate(v_i, axis=1), np.concatenate(v_w)


def path_terms(composition, credit, rollouts, gamma: float, value_samples: int, seed: int) -> dict[str, np.ndarray]:
    """Per rollout [n]: ``Q_w(s_0, a_0) - G`` and the terms it telescopes into (module docstring), and per constituent its
    residual sum along the path. ``credit(obs, act)``: the acting policy's ``-alpha log pi`` (the exact ``pi_w``'s
    ``V'_w - Q_w``)."""
    from skills.library import task_of

    live = rollouts.alive > 0
    n, steps = live.shape
    obs, act, nxt = rollouts.obs[live], rollouts.action[live], rollouts.next_obs[live]
    carry = on_grid(live, 1.0 - rollouts.terminated[live])  # gamma (1 - terminated) carries value to s_{t+1}
    with torch.no_grad():
        q_w = np.asarray(composition.q_w(torch.as_tensor(obs), torch.as_tensor(act)), np.float64)
        q_i = np.stack([np.asarray(part.q(obs, act), np.float64) for part in composition.parts])
    v_i, v_w = soft_values_on(composition, nxt, value_samples, seed)
    weights = np.asarray(composition.weights, np.float64)
    mixed_next = on_grid(live, weights @ v_i)  # sum_i w_i V_i(s_{t+1})
    v_w_next = on_grid(live, v_w)
    reward = on_grid(live, rollouts.reward[live])
    q_grid = on_grid(live, q_w)
    credit_grid = on_grid(live, np.asarray(credit(obs, act), np.float64))
    credit_grid[:, 0] = 0.0  # the first action was given, not the actor's
    discount = gamma ** np.arange(steps)
    eps = q_grid - reward - gamma * carry * mixed_next
    delta_next = carry * (mixed_next - v_w_next)
    v_prime = credit_grid + q_grid  # the credit's V'_w at s_t
    v_diff = np.zeros((n, steps))
    v_diff[:, 1:] = live[:, 1:] * (v_w_next[:, :-1] - v_prime[:, 1:])  # V_w(s_t) is V_w at the previous next state
    g = np.sum(discount * (reward + credit_grid), axis=1)
    out = {"Q_w_minus_G": q_grid[:, 0] - g, "G": g, "R_path": np.sum(discount * eps, axis=1),
           "D_path": np.sum(discount * gamma * delta_next, axis=1), "V_diff": np.sum(discount * v_diff, axis=1),
           "tail": gamma**steps * carry[:, -1] * v_w_next[:, -1]}
    for label, part, q, v in zip(composition.labels, composition.parts, q_i, v_i, strict=True):
        r_i = on_grid(live, np.asarray(task_of(part.info).reward(nxt, act), np.float64))
        eps_i = on_grid(live, q) - r_i - gamma * carry * on_grid(live, v)
        out[f"R_path {label}"] = np.sum(discount * eps_i, axis=1)
    return out


def pooled_terms(per_pair: dict[str, np.ndarray]) -> dict:
    """Each term's mean over the pairs with its standard error across them."""
    from skills.evaluation.diagnostics import mean_and_se

    return {name: dict(zip(("mean", "se"), mean_and_se(values), strict=True)) for name, values in per_pair.items()}


def quick(config: MCBoundConfig) -> MCBoundConfig:
    """A smoke run's settings: short rollouts, few Metropolis-Hastings steps and value samples."""
    return replace(config, tail=0.5, exact_steps=5, value_samples=16)  # the credit's V'_w: 64 samples


def fit_on_paths(composition, sampler, rollouts, seed: int, updates: int | None = None) -> tuple[torch.nn.Module, dict]:
    """``D`` fitted exactly as the check's is (``compose.bound.fit_policy_gap``: the same TD, draws and schedule), but on
    the exact ``pi_w``'s own transitions instead of the constituents' stored ones: where the two fits differ at the
    pairs, what the fit is given (the states and actions it sees) is the cause, not how it fits."""
    from compose.bound import BoundConfig, fit_policy_gap

    live = rollouts.alive > 0
    data = {"obs": rollouts.obs[live], "action": rollouts.action[live], "next_obs": rollouts.next_obs[live],
            "terminated": rollouts.terminated[live].astype(np.float32)}
    net, info = fit_policy_gap(composition, sampler, BoundConfig(seed=seed, updates=updates), data=data)
    return net, info | {"transitions": int(live.sum())}


def measure(spec: str, library: str | None, config: MCBoundConfig, delta_samples: int = 512,
            refit_on_paths: bool = False, refit_updates: int | None = None) -> dict:
    """The exact ``pi_w``'s rollouts from ``compose.mc_check``'s pairs, and their terms (phases: build, fit or load
    ``D``, pairs, roll out, telescope); ``delta_samples``: the uniform importance samples of ``delta``'s values;
    ``refit_on_paths``: ``D`` fitted again on the rollouts' own transitions too (``fit_on_paths``; ``refit_updates``
    TD updates, None: to its fixed point as the check's)."""
    import envs
    from compose import load
    from compose.build import build_policy_gap
    from compose.mc_check import EXACT_KEY, exact_actor, pair_starts
    from compose.run.checks import bound_inputs
    from compose.soft_returns import actor_returns
    from skills.evaluation.diagnostics import rollout_steps

    composition = load(spec, library=library, seed=config.seed, operator="average")
    built = composition.build(progress=False)
    d_net, fit = build_policy_gap(composition, built, library)
    inputs = bound_inputs(composition, built, None, lambda: envs.make_task_env(composition.task))
    starts = pair_starts(inputs.composed, inputs.make_env, config, inputs.horizon)
    steps = rollout_steps(inputs.reward_range, inputs.alpha, inputs.composed.act_dim, inputs.gamma, config.tail)
    actor = exact_actor(inputs, config)
    _, rollouts = actor_returns(actor, inputs.make_env, [s for s, _, _ in starts], config.control_rollouts, steps,
                                inputs.gamma, key=config.seed * 100 + EXACT_KEY)
    terms = path_terms(composition, actor.credit, rollouts, inputs.gamma, delta_samples, config.seed)
    refit = fit_on_paths(composition, built.sampler, rollouts, config.seed, refit_updates) if refit_on_paths else None
    per_pair = {name: values.reshape(len(starts), config.control_rollouts).mean(axis=1) for name, values in terms.items()}
    obs = torch.as_tensor(np.stack([o for _, o, _ in starts]))
    act = torch.as_tensor(np.stack([np.asarray(s.action, np.float32) for s, _, _ in starts]))
    with torch.no_grad():
        per_pair["D_fit"] = d_net(obs, act).double().numpy()
        if refit is not None:
            per_pair["D_refit_on_paths"] = refit[0](obs, act).double().numpy()
    per_pair["D_fit_minus_D_path"] = per_pair["D_fit"] - per_pair["D_path"]
    if refit is not None:
        per_pair["D_refit_minus_D_path"] = per_pair["D_refit_on_paths"] - per_pair["D_path"]
    per_pair["margin_with_D_fit"] = per_pair["D_fit"] - per_pair["Q_w_minus_G"]  # G - (Q_w - D_fit)
    explained = sum(per_pair[k] for k in ("R_path", "D_path", "V_diff", "tail"))
    unexplained = np.abs(terms["Q_w_minus_G"] - sum(terms[k] for k in ("R_path", "D_path", "V_diff", "tail")))
    return {"spec": spec, "library": library or "trained/", "seed": config.seed, "pairs": len(starts),
            "rollouts_per_pair": config.control_rollouts, "rollout_steps": steps, "gamma": inputs.gamma,
            "delta_samples": delta_samples, "credit_value_samples": 4 * config.value_samples,
            "exact_steps": config.exact_steps, "fit_D": fit, **({"refit_on_paths": refit[1]} if refit else {}),
            "pooled": pooled_terms(per_pair), "unexplained_max": float(unexplained.max()),
            "explained_mean": float(np.mean(explained)),
            "per_pair": [{"step": t, **{k: float(v[i]) for k, v in per_pair.items()}} for i, (_, _, t) in enumerate(starts)]}


def main(argv: list[str] | None = None) -> int:
    parser = pairs_parser("gap_paths", __doc__, "a composition of two or more skills, e.g. place+clear", 20)
    parser.add_argument("--rollouts", type=at_least(1), default=4, help="rollouts of the exact pi_w per pair (default 4)")
    parser.add_argument("--value-samples", type=at_least(1), default=512,
                        help="uniform importance samples per state for the V_i and V_w of delta (default 512, as D's fit)")
    parser.add_argument("--refit-on-paths", action="store_true",
                        help="also fit D, as the check does, on the exact pi_w's own transitions (a diagnostic)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: short rollouts, 5 Metropolis-Hastings steps, a 50-update refit")
    parser.add_argument("--json", metavar="PATH", help="write the measurement as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    config = MCBoundConfig(pairs=args.pairs, seed=args.seed, control_rollouts=args.rollouts)
    config = quick(config) if args.quick else config
    return run_measurement(lambda: measure(args.spec, args.library, config, args.value_samples, args.refit_on_paths,
                                           refit_updates=50 if args.quick else None), args.json)


if __name__ == "__main__":
    sys.exit(main())
