"""The composition bound checked against Monte Carlo soft returns of the policies that act, beside negative
controls that must fail (``compose.run``'s ``bound.mc``).

From (s, a) pairs on the composed policy's own episodes, each actor's soft return on ``r_w`` is estimated with its
own entropy (``compose.soft_returns``): the composition's amortized sampler, the exact Boltzmann ``pi_w`` (importance
resampling), the jointly trained skill, and as controls a uniformly random actor and each constituent acting alone.

* upper side: ``Q^pi <= Q*_w <= Q_w`` for any policy: a CI of ``G^pi(s, a)`` wholly above ``Q_w(s, a)`` falsifies it;
* lower side: ``Q^{pi_w} >= Q_w - C*`` for the Boltzmann policy of ``Q_w`` (exact ``Q_i``): it fails when the CI of the
  composed policy's ``G`` lies wholly below ``Q_w - C``;
* lower side with the policy's own gap ``D`` (``compose.bound.policy_gap_td_target``; when ``BoundInputs.policy_gap``
  is given): ``Q^{pi_w} = Q_w - D`` with exact ``Q_i``, so an actor worse than ``pi_w`` by more than the noise falls
  below it. ``D``'s pointwise error exceeds one pair's Monte Carlo noise on the Fetch, so this side is scored pooled:
  the margin ``G - (Q_w - D)`` averaged over the pairs, holding when ``mean + 2 se >= 0`` (se across pairs).

A check is evidence only if something can fail it, so every report carries controls with their verdicts:
``Q_w`` shifted down by twice the measured slack must falsify the upper side; ``C`` shrunk to 0 (below the accumulated
gap) must fail the lower side; the random actor and each constituent acting alone must fail the lower side if it can
tell a poor policy from the composed one. A control that passes makes its check uninformative, and the report says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from skills.evaluation.diagnostics import Start, mean_and_se, rollout_steps
from skills.evaluation.lockstep import EnvPool, Episode, lockstep_episodes

from .soft_returns import (
    ActingPolicy,
    UniformPolicy,
    actor_returns,
    boltzmann_actor,
    intervals,
    sampler_actor,
    soft_returns,
    uniform_actor,
)

UPPER_GOAL, LOWER_GOAL = 0.05, 0.95  # falsified at most this share of checks; holds on at least this share
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_critical_95(df: int) -> float:
    """Two-sided 95% Student-t critical value (table to df 30, then ``1.96 + 2.37/df``)."""
    if df < 1:
        return math.inf
    return T_975[df - 1] if df <= len(T_975) else 1.959964 + 2.37 / df


@dataclass(frozen=True)
class MCBoundConfig:
    """Monte Carlo soft returns from (s, a) pairs on the composed policy's own episodes."""

    pairs: int = 20  # (s, a) pairs: one per episode (seeds seed, seed+1, ...), at a random step
    rollouts: int = 8  # rollouts per pair of the composed policy and of the joint one
    tail: float = 0.05  # rollout length T: gamma^T (max|r| + alpha d log 2)/(1 - gamma) <= tail
    value_samples: int = 128  # importance samples for each V (the exact actor's entropy, the episode figure)
    seed: int = 0
    entropy_samples: int = 64  # sampler draws per visited state for its entropy (compose.soft_returns.sampler_actor)
    control_rollouts: int = 4  # rollouts per pair of each control actor (random, each constituent)
    exact_pairs: int = 8  # pairs on which the exact Boltzmann pi_w acts too (0: none)
    exact_steps: int = 100  # Metropolis-Hastings steps per action of the exact pi_w

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class BoundInputs:
    """What the check needs: the composed policy (``compose.policy.ComposedPolicy``), the joint skill (or None), the
    constituents by label, the bound's ``C`` (and the policy's own gap ``D``, optional), and the combined task's env,
    reward range and horizon."""

    composed: Any
    joint: Any | None
    constituents: Sequence[tuple[str, Any]]
    correction: torch.nn.Module
    make_env: Callable
    reward_range: tuple[float, float]
    horizon: int
    policy_gap: torch.nn.Module | None = None  # the composed policy's own gap D (None: the lower side with C* only)
    pool: EnvPool | None = None  # a run's envs, reused for the rollouts (None: each actor's rollouts make their own)
    alpha: float = field(init=False)
    gamma: float = field(init=False)

    def __post_init__(self) -> None:
        self.alpha, self.gamma = self.composed.alpha, self.composed.gamma

    def rollout_envs(self) -> EnvPool | Callable:
        """Where the rollouts take their envs: the run's pool, or the maker of one per actor."""
        return self.pool if self.pool is not None else self.make_env


# ---- where the checks start ---------------------------------------------------------------------------------
def traced_episodes(policy, make_env, seeds: list[int], steps: int) -> list[Episode]:
    """Episodes of ``policy`` (stochastic, in lockstep, each from its own stream), traced, ``steps`` long at most."""
    with EnvPool(lambda: gym.wrappers.TimeLimit(make_env().unwrapped, max_episode_steps=steps)) as pool:
        return lockstep_episodes(pool, policy, seeds, keep_trace=True)


def starts_in(episode: Episode, steps: list[int]) -> list[tuple[Start, np.ndarray, int]]:
    """``(Start, obs, step)`` at each of ``steps`` of a traced episode (a step past its end: its last step)."""
    out = []
    for t in steps:
        t = min(t, episode.length - 1)
        out.append((Start(episode.seed, tuple(episode.actions[:t]), episode.actions[t]), episode.obs[t], t))
    return out


class PairDraw(Protocol):
    """How many (s, a) pairs to draw and from which seed (``MCBoundConfig``, or a bench's own setup)."""

    @property
    def pairs(self) -> int: ...

    @property
    def seed(self) -> int: ...


def pair_starts(policy, make_env, config: PairDraw, horizon: int) -> list:
    """One (s, a) pair per stochastic episode of ``policy`` (the composed one, for the bound; seeds ``config.seed + p``,
    in lockstep), at a random step below ``horizon`` (the same steps for every policy): ``(Start, obs, step)``."""
    rng = np.random.default_rng(config.seed)
    steps = [int(rng.integers(0, horizon)) for _ in range(config.pairs)]
    episodes = traced_episodes(policy, make_env, [config.seed + p for p in range(config.pairs)], horizon)
    return [starts_in(e, [t])[0] for e, t in zip(episodes, steps, strict=True)]


def episode_starts(composed, make_env, seed: int, steps: list[int]) -> list:
    """``(Start, obs, step)`` at the given steps of one seeded episode of the composed policy; each
    ``Start`` replays the episode's actions up to its step and then takes the policy's action there."""
    return starts_in(traced_episodes(composed, make_env, [seed], max(steps) + 1)[0], steps)


# ---- the actors -------------------------------------------------------------------------------------------------
def actors(inputs: BoundInputs, config: MCBoundConfig) -> dict[str, tuple[ActingPolicy, int]]:
    """Every actor of the check and its rollouts per pair: the composed sampler and the joint skill (the real
    checks), the exact ``pi_w``, and the controls."""
    alpha, d = inputs.alpha, inputs.composed.act_dim
    out = {"composed": (sampler_actor("composed", inputs.composed, alpha, config.entropy_samples, seed=config.seed),
                        config.rollouts)}
    if inputs.joint is not None:
        out["joint"] = (sampler_actor("joint", inputs.joint, alpha, config.entropy_samples, seed=config.seed),
                        config.rollouts)
    out["random"] = (uniform_actor(d, alpha), config.control_rollouts)
    for label, skill in inputs.constituents:
        out[f"{label} alone"] = (sampler_actor(f"{label} alone", skill, alpha, config.entropy_samples, seed=config.seed),
                                 config.control_rollouts)
    return out


def soft_q_rows(inputs: BoundInputs, starts: list, config: MCBoundConfig, names: Sequence[str] | None = None) -> dict:
    """Per pair ``Q_w`` and ``C`` (and ``D``), and each actor's soft returns with 95% CIs: ``{"rows": [...], "steps",
    "tail_bound", "returns": {actor: [S, n]}}``; ``names`` limits the actors."""
    steps = rollout_steps(inputs.reward_range, inputs.alpha, inputs.composed.act_dim, inputs.gamma, config.tail)
    obs = torch.as_tensor(np.stack([o for _, o, _ in starts]))
    act = torch.as_tensor(np.stack([np.asarray(s.action, np.float32) for s, _, _ in starts]))
    with torch.no_grad():
        q_w, c = np.asarray(inputs.composed.q(obs, act), np.float64), inputs.correction(obs, act).numpy()
        d = inputs.policy_gap(obs, act).numpy() if inputs.policy_gap is not None else None
    rows = [{"seed": s.seed, "step": t, "Q_w": float(q_w[i]), "C": float(c[i])} | ({"D": float(d[i])} if d is not None
                                                                                   else {})
            for i, (s, _, t) in enumerate(starts)]
    returns, term_max = {}, 0.0
    for key, (name, (actor, per_start)) in enumerate(actors(inputs, config).items()):
        if names is not None and name not in names:
            continue
        g, rollouts = actor_returns(actor, inputs.rollout_envs(), [s for s, _, _ in starts], per_start, steps, inputs.gamma,
                                    key=config.seed * 100 + key)
        returns[name] = g
        term_max = max(term_max, float(np.max(np.abs(rollouts.alive * rollouts.reward))) + abs(
            inputs.alpha * inputs.composed.act_dim * math.log(2.0)))
        for row, interval in zip(rows, intervals(g, t_critical_95), strict=True):
            row[name] = interval
    tail = float(inputs.gamma**steps * term_max / (1.0 - inputs.gamma))
    return {"rows": rows, "steps": steps, "tail_bound": tail, "returns": returns}


EXACT_KEY = 99  # the exact actor's rollout streams: key seed * 100 + EXACT_KEY


def exact_actor(inputs: BoundInputs, config: MCBoundConfig) -> ActingPolicy:
    """The exact Boltzmann ``pi_w`` of the composed ``Q_w`` (Metropolis-Hastings from the composed sampler), credited
    ``V_w - Q_w`` with ``V_w`` from ``4 * value_samples`` importance samples around the sampler's actions."""
    composed = inputs.composed
    return boltzmann_actor(composed.q_fn, lambda o: composed.value(o, n_samples=4 * config.value_samples), inputs.alpha,
                           composed, config.exact_steps)


def exact_actor_rows(inputs: BoundInputs, starts: list, config: MCBoundConfig, steps: int) -> dict | None:
    """The exact Boltzmann ``pi_w`` from the first ``exact_pairs`` pairs: its soft returns, credited ``V_w - Q_w``."""
    if config.exact_pairs <= 0:
        return None
    actor = exact_actor(inputs, config)
    chosen = starts[:config.exact_pairs]
    g, _ = actor_returns(actor, inputs.rollout_envs(), [s for s, _, _ in chosen], config.control_rollouts, steps,
                         inputs.gamma, key=config.seed * 100 + EXACT_KEY)
    return {"entropy": actor.entropy, "pairs": len(chosen), "rollouts_per_pair": config.control_rollouts,
            "per_pair": intervals(g, t_critical_95)}


# ---- verdicts -------------------------------------------------------------------------------------------------
def side_fractions(rows: list[dict], name: str, q_shift: float = 0.0, c_scale: float = 1.0,
                   key: str = "C") -> tuple[float, float]:
    """(upper side falsified, lower side holds) shares for actor ``name``'s CIs, with ``Q_w`` shifted by ``q_shift``
    and the correction under ``key`` (``C``, or ``D``) scaled by ``c_scale`` (the controls)."""
    upper = [r[name]["ci"][0] > r["Q_w"] + q_shift for r in rows]
    lower = [r[name]["ci"][1] >= r["Q_w"] + q_shift - c_scale * r[key] for r in rows]
    return float(np.mean(upper)), float(np.mean(lower))


def controls(rows: list[dict], names: Sequence[str]) -> list[dict]:
    """The negative controls' verdicts: each must fail its check; one that passes makes that check uninformative."""
    slack = float(np.mean([r["Q_w"] - r["composed"]["mean"] for r in rows]))
    shift = -2.0 * max(abs(slack), 1e-6)
    out = [{"control": f"Q_w shifted down by twice the measured slack ({shift:+.3g})", "check": "upper side",
            "failed": side_fractions(rows, "composed", q_shift=shift)[0] > UPPER_GOAL},
           {"control": "C shrunk to 0, below the accumulated gap", "check": "lower side",
            "failed": side_fractions(rows, "composed", c_scale=0.0)[1] < LOWER_GOAL}]
    for name in names:
        if name in ("composed", "joint"):
            continue
        out.append({"control": f"{name} acting (its own entropy)", "check": "lower side",
                    "failed": side_fractions(rows, name)[1] < LOWER_GOAL})
    for control in out:
        control["verdict"] = "failed, as it must" if control["failed"] else \
            f"passed: the {control['check']} cannot tell this from the real thing"
    return out


def pooled(rows: list[dict], key: str, scale: float = 1.0) -> dict:
    """Per actor, the margin ``G - (Q_w - scale * key)`` averaged over the pairs with its standard error across them
    (which takes in the correction's own pointwise error, unlike one pair's CI), and whether the lower side holds on
    average: ``mean + 2 se >= 0``. rows: ``per_pair`` records with each actor's ``mean`` (an actor missing from some
    rows: on the rest), ``Q_w`` and the correction under ``key``."""
    names = [k for k, v in rows[0].items() if isinstance(v, dict) and "mean" in v]
    return {name: pooled_margin(np.array([r[name]["mean"] - (r["Q_w"] - scale * r[key]) for r in rows if name in r]))
            for name in names}


def pooled_margin(margin: np.ndarray) -> dict:
    """One actor's per-pair margins [S] pooled: mean, standard error across pairs, and whether the lower side holds on
    average (``mean + 2 se >= 0``)."""
    se = float(margin.std(ddof=1) / np.sqrt(len(margin))) if len(margin) > 1 else float("inf")
    return {"pairs": len(margin), "margin_mean": float(margin.mean()), "margin_se": se,
            "holds": bool(margin.mean() + 2 * se >= 0)}


def with_exact(rows: list[dict], exact: dict | None) -> list[dict]:
    """Every pair, the first ``exact["pairs"]`` of them with the exact ``pi_w``'s figures under ``"exact pi_w"``. Each
    actor is then pooled over the pairs it acted on (``pooled`` gives the count): the exact ``pi_w`` over its first
    few, the others over all; ``policy_gap_side``'s ``on_exact_pairs`` compares them on the same pairs."""
    if exact is None:
        return rows
    return [r | {"exact pi_w": p} for r, p in zip(rows[:exact["pairs"]], exact["per_pair"], strict=True)] + rows[
        exact["pairs"]:]


def versus_joint(rows: list[dict], name: str) -> dict | None:
    """Actor ``name``'s soft return against the jointly trained skill's on the pairs where both acted: the paired
    difference ``G_name - G_joint`` [S] pooled (mean, SE across pairs), and ``worse``: below by more than 2 SE. None
    without a joint skill (or fewer than two such pairs)."""
    diff = np.array([r[name]["mean"] - r["joint"]["mean"] for r in rows if name in r and "joint" in r])
    if len(diff) < 2:
        return None
    se = float(diff.std(ddof=1) / np.sqrt(len(diff)))
    return {"pairs": len(diff), "mean": float(diff.mean()), "se": se, "worse": bool(diff.mean() + 2 * se < 0)}


def control_verdict(check: dict) -> str:
    """One lower-side control's verdict: failed; passed although it should have failed (the check's miss); or passed
    while no worse than the joint skill on these pairs (not a negative control there)."""
    if check["failed"]:
        return "failed, as it must"
    joint = check.get("versus_joint")
    if joint is None:
        return "passed although it should fail: the lower side cannot tell it from the composition"
    if check["should_fail"]:
        return (f"passed although it should fail (below the joint skill by {-joint['mean']:.3g} +- {joint['se']:.2g}): "
                "the lower side cannot tell it from the composition")
    return (f"passed, and no worse than the joint skill here ({joint['mean']:+.3g} +- {joint['se']:.2g}): not a negative "
            "control on these pairs")


def policy_gap_side(rows: list[dict], exact: dict | None) -> dict:
    """The lower side against the policy's own gap ``D``, pooled over pairs (``pooled``): every actor's margin, the
    share of pairs on which its CI reaches ``Q_w - D``, the controls (``D`` = 0; the random actor and each constituent
    alone) and the verdict. A control *should fail* unless it collects as much soft return as the joint skill on the
    same pairs (``versus_joint``: not below it by more than 2 SE); ``tells_policies_apart`` when every control that
    should fail does. ``D`` = 0 always should."""
    table = pooled(with_exact(rows, exact), "D")
    names = [n for n in table if n != "exact pi_w"]
    checks: list[dict[str, Any]] = [{"control": "D shrunk to 0", "should_fail": True,
                                      "failed": not pooled(rows, "D", scale=0.0)["composed"]["holds"]}]
    for n in names:
        if n not in ("composed", "joint"):
            joint = versus_joint(rows, n)
            checks.append({"control": f"{n} acting (its own entropy)", "failed": not table[n]["holds"],
                           "versus_joint": joint, "should_fail": joint is None or joint["worse"]})
    for check in checks:
        check["verdict"] = control_verdict(check)
    note = []
    if table["composed"]["holds"]:
        note.append("the composed sampler meets Q_w - D within the noise")
    else:
        note.append("the composed sampler falls below Q_w - D by more than 2 SE: it is short of the Boltzmann pi_w "
                    "(its discounted KL to pi_w) or the constituents' errors are")
    same: dict = {}
    if "exact pi_w" in table:
        k = table["exact pi_w"]["pairs"]
        same = pooled(with_exact(rows, exact)[:k], "D")  # every actor on the exact pi_w's pairs, like for like
        note.append("the exact pi_w " + ("meets it within the noise" if table["exact pi_w"]["holds"] else
                                         "falls below it by more than 2 SE (D or the constituents are off)")
                    + f" (on its first {k} pairs, where the composed sampler's margin is "
                      f"{same['composed']['margin_mean']:+.3g} +- {same['composed']['margin_se']:.2g})")
    passed = [str(c["control"]) for c in checks if not c["failed"]]
    if passed:
        note.append("it holds for " + ", ".join(passed) + " too")
    missed = [str(c["control"]) for c in checks if not c["failed"] and c["should_fail"]]
    not_negative = [str(c["control"]) for c in checks if not c["failed"] and not c["should_fail"]]
    if not_negative:
        note.append(", ".join(not_negative) + " no worse than the joint skill here: not a negative control on these pairs")
    return {"method": "margin G - (Q_w - D) averaged over the pairs, mean +- SE across pairs; holds when mean + 2 SE >= 0",
            "D_mean": float(np.mean([r["D"] for r in rows])), "pooled": table, "on_exact_pairs": same,
            "pairs_holding": {n: side_fractions(rows, n, key="D")[1] for n in names},
            "controls": checks, "tells_policies_apart": not missed, "controls_passed": passed,
            "controls_not_negative_here": not_negative, "note": "; ".join(note)}


def summarise(scored: dict, exact: dict | None, config: MCBoundConfig) -> dict:
    """The ``bound.mc`` record: every actor's figures, the legacy top-level figures of the composed and joint
    policies, the controls and the verdict."""
    rows = scored["rows"]
    names = list(scored["returns"])
    checked = [n for n in ("composed", "joint") if n in names]
    q_w, c = np.array([r["Q_w"] for r in rows]), np.array([r["C"] for r in rows])
    per_actor = {}
    for name in names:
        upper, lower = side_fractions(rows, name)
        g = np.array([r[name]["mean"] for r in rows])
        per_actor[name] = {"soft_return_mean": float(g.mean()), "upper_falsified_fraction": upper,
                           "lower_holds_fraction": lower, "slack_to_Q_w_mean": float(np.mean(q_w - g))}
    out: dict[str, Any] = {
        "method": "Monte Carlo soft returns G = r_0 + sum_{t>=1} gamma^t (r_t + alpha H_t) on r_w from (s, a) pairs on the "
                  "composed policy's own episodes (replayed to s, then a, then the actor), each actor credited with its "
                  "own entropy (compose.soft_returns); 95% Student-t CIs over rollouts",
        "pairs": len(rows), "rollouts_per_pair": config.rollouts, "rollout_steps": scored["steps"],
        "tail_bound": scored["tail_bound"], "confidence": 0.95, "config": config.to_dict(), "actors": per_actor,
        "upper_falsified_fraction": float(np.mean([per_actor[n]["upper_falsified_fraction"] for n in checked])),
        **{f"upper_falsified_fraction_{n}": per_actor[n]["upper_falsified_fraction"] for n in checked},
        **{f"upper_slack_mean_{n}": per_actor[n]["slack_to_Q_w_mean"] for n in checked},
        "lower_holds_fraction": per_actor["composed"]["lower_holds_fraction"],
        "lower_slack_mean": float(np.mean(np.array([r["composed"]["mean"] for r in rows]) - (q_w - c))),
        "Q_w_mean": float(q_w.mean()), "C_mean": float(c.mean()),
        **{f"soft_return_mean_{n}": per_actor[n]["soft_return_mean"] for n in checked},
        "per_pair": rows,
    }
    if "joint" in names:
        mean, se = mean_and_se(np.array([r["joint"]["mean"] - r["composed"]["mean"] for r in rows]))
        half = t_critical_95(len(rows) - 1) * se
        out |= {"suboptimality_mean": mean, "suboptimality_ci": [mean - half, mean + half]}
    if exact is not None:
        same = rows[:exact["pairs"]]
        exact_rows = [r | {"exact": p} for r, p in zip(same, exact["per_pair"], strict=True)]
        upper, lower = side_fractions(exact_rows, "exact")
        out["exact_pi_w"] = exact | {
            "soft_return_mean": float(np.mean([p["mean"] for p in exact["per_pair"]])),
            "composed_sampler_on_the_same_pairs": float(np.mean([r["composed"]["mean"] for r in same])),
            "Q_w_on_the_same_pairs": float(np.mean([r["Q_w"] for r in same])),
            "upper_falsified_fraction": upper, "lower_holds_fraction": lower}
    out["goals"] = {f"upper_falsified_fraction <= {UPPER_GOAL}": out["upper_falsified_fraction"] <= UPPER_GOAL,
                    f"lower_holds_fraction >= {LOWER_GOAL}": out["lower_holds_fraction"] >= LOWER_GOAL}
    out["controls"] = controls(rows, names)
    out["verdict"] = verdict(out["controls"])
    if "D" in rows[0]:
        out["policy_gap"] = policy_gap_side(rows, exact)
    return out


def verdict(checks: list[dict]) -> dict:
    """Which sides the controls show can fail, and whether the lower side tells poor policies from the composed one."""
    upper = all(c["failed"] for c in checks if c["check"] == "upper side")
    lower = checks[1]["failed"]
    apart = all(c["failed"] for c in checks[2:])
    note = []
    if not upper:
        note.append("the upper side did not fail with Q_w shifted down: uninformative here")
    if not lower:
        note.append("the lower side did not fail with C = 0: uninformative here")
    if not apart:
        passed = [c["control"] for c in checks[2:] if not c["failed"]]
        note.append("the lower side holds for " + ", ".join(passed) + " too: C is too loose to tell those policies from "
                    "the composed one, so 'the lower side holds' says nothing about the composed policy's quality")
    return {"upper_side_can_fail": upper, "lower_side_can_fail": lower, "tells_policies_apart": apart,
            "note": "; ".join(note) or "every control failed, as it must"}


def mc_bound(inputs: BoundInputs, config: MCBoundConfig = MCBoundConfig()) -> dict:
    """The ``bound.mc`` record: pairs on the composed policy's episodes, every actor's soft returns there with its own
    entropy, the two sides of the bound, the controls and their verdict, and the random actor's estimated entropy
    against its exact one."""
    starts = pair_starts(inputs.composed, inputs.make_env, config, inputs.horizon)
    scored = soft_q_rows(inputs, starts, config)
    exact = exact_actor_rows(inputs, starts, config, scored["steps"])
    out = summarise(scored, exact, config)
    out["random_entropy_estimate"] = random_estimate_check(inputs, starts, config, scored["steps"])
    return out


def random_estimate_check(inputs: BoundInputs, starts: list, config: MCBoundConfig, steps: int) -> dict:
    """The random actor's soft return credited with its exact entropy (``alpha d log 2``) and with the
    nearest-neighbour estimate of it, on the same rollouts: the estimator against the truth."""
    d = inputs.composed.act_dim
    exact = uniform_actor(d, inputs.alpha)
    estimated = sampler_actor("random (estimated)", UniformPolicy(d), inputs.alpha, config.entropy_samples, seed=config.seed)
    g_exact, rollouts = actor_returns(exact, inputs.rollout_envs(), [s for s, _, _ in starts], config.control_rollouts, steps,
                                      inputs.gamma, key=config.seed * 100 + 77)
    g_est = soft_returns(estimated, rollouts, inputs.gamma)
    diff = g_est - g_exact.reshape(-1)
    _, se = mean_and_se(g_exact.reshape(-1))  # the Monte Carlo estimate's own standard error
    weight = float(np.sum(rollouts.alive[:, 1:] * inputs.gamma ** np.arange(1, rollouts.alive.shape[1])) / len(diff))
    return {"exact_mean": float(g_exact.mean()), "estimated_mean": float(g_est.mean()), "difference": float(diff.mean()),
            "soft_return_se": se, "within_3_se": bool(abs(diff.mean()) <= 3 * se),
            "entropy_error_per_step_nats": float(diff.mean() / max(1e-12, weight * inputs.alpha))}
