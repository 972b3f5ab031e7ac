"""The composition bound on a run's episodes: the Monte Carlo check (``compose.mc_check.mc_bound``) and the learned
functions compared point by point (a diagnostic), for a bounded operator (``average``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

import skills
from skills.evaluation.lockstep import EnvPool

from ..bound import check_bound
from ..build import Built
from ..composition import Composition
from ..mc_check import BoundInputs, episode_starts, mc_bound, soft_q_rows, traced_episodes
from ..policy import ComposedPolicy
from .evaluation import Pairs
from .settings import EvaluationConfig

MAX_BOUND_PAIRS = 5000
FORM = "tight: C = gamma E[delta(s') + max_a' C(s',a')], delta = sum_i w_i V_i - V_w"


def learned_bound(composition: Composition, built: Built, joint: skills.Skill | None, joint_note: str,
                  pairs: Pairs) -> dict:
    """``Q_w - C <= Q_joint <= Q_w`` point by point on the composed policy's pairs. This compares learned
    functions with each other; it is kept as a diagnostic, not as a test of the theorem."""
    assert built.correction is not None
    obs = torch.as_tensor(np.stack([p[0] for p in pairs[:MAX_BOUND_PAIRS]]))
    act = torch.as_tensor(np.stack([p[1] for p in pairs[:MAX_BOUND_PAIRS]]))
    with torch.no_grad():
        q_w = composition.q_w(obs, act).numpy()
        c = built.correction(obs, act).numpy()
    out = {"label": "learned functions compared point by point (Q_joint stands in for Q*_w); a diagnostic, "
                    "not a test: see bound.mc"}
    if joint is None:
        return out | {"holds_fraction": None, "mean_C": float(np.mean(c)), "mean_gap": None,
                      "mean_Q_w": float(np.mean(q_w)), "note": joint_note}
    q_joint = joint.q(obs.numpy(), act.numpy())
    assert isinstance(q_joint, np.ndarray)  # numpy in, numpy out
    return out | check_bound(q_w, c, q_joint)


def bound_checks(composition: Composition, built: Built, reference: tuple[skills.Skill | None, str], pairs: Pairs,
                 make_env: Callable, evaluation: EvaluationConfig,
                 gap: tuple[torch.nn.Module, dict] | None = None, pool: EnvPool | None = None) -> dict:
    """The ``bound`` record of a report: the Monte Carlo check on fresh episodes of the composed policy (unless
    ``evaluation.mc`` is None; its lower side also against the policy's own gap ``D`` when ``gap``, ``(D, its fit's
    record)``, is given) and the learned comparison on ``pairs``. ``pool``: the run's envs, reused by the rollouts."""
    joint, joint_note = reference
    assert built.correction is not None
    bound: dict = {"form": FORM, "gap_on_stored_states": built.info.get("gap", {})}
    if evaluation.mc is not None:
        inputs = bound_inputs(composition, built, joint, make_env, pool=pool)
        if gap is not None:
            inputs.policy_gap = gap[0]
            bound["policy_gap_fit"] = gap[1]
        bound["mc"] = mc_bound(inputs, evaluation.mc)
    bound["learned"] = learned_bound(composition, built, joint, joint_note, pairs)
    return bound


def bound_inputs(composition: Composition, built: Built, joint: skills.Skill | None, make_env: Callable,
                 composed: ComposedPolicy | None = None, pool: EnvPool | None = None) -> BoundInputs:
    """What the Monte Carlo check needs from a run (the composed policy: a fresh one unless given; the run's envs, when
    ``pool`` is given)."""
    assert built.correction is not None
    policy = composed if composed is not None else ComposedPolicy(composition, built.sampler, 1, q_fn=built.q)
    return BoundInputs(composed=policy, joint=joint, constituents=list(zip(composition.labels, composition.parts,
                                                                            strict=True)),
                       correction=built.correction, make_env=make_env, reward_range=composition.task.reward_range,
                       horizon=composition.task.family.horizon, pool=pool)


def episode_bound(composition: Composition, composed: ComposedPolicy, built: Built, joint: skills.Skill | None,
                  make_env: Callable, evaluation: EvaluationConfig, pool: EnvPool | None = None) -> dict:
    """Learned ``Q_w``, ``Q_w - C``, ``Q_joint`` along one composed episode, with Monte Carlo soft returns (95% CIs)
    of both policies at every 5th step (``mc_rows``, when the MC check runs): the data of the episode figure."""
    assert built.correction is not None
    episode = traced_episodes(composed, make_env, [evaluation.seed], composition.task.family.horizon)[0]
    e_obs, e_act = np.stack(episode.obs), np.stack(episode.actions)
    with torch.no_grad():
        q_w = composition.q_w(torch.as_tensor(e_obs), torch.as_tensor(e_act)).numpy()
        c = built.correction(torch.as_tensor(e_obs), torch.as_tensor(e_act)).numpy()
    q_joint = joint.q(e_obs, e_act) if joint is not None else None
    mc_rows = None
    if evaluation.mc is not None:
        mc_cfg = replace(evaluation.mc, rollouts=max(2, evaluation.mc.rollouts // 2))
        starts = episode_starts(composed, make_env, evaluation.seed, list(range(0, episode.length, 5)))
        inputs = bound_inputs(composition, built, joint, make_env, composed, pool=pool)
        mc_rows = soft_q_rows(inputs, starts, mc_cfg, names=("composed", "joint"))["rows"]
    return {"q_w": q_w, "c": c, "q_joint": q_joint, "mc_rows": mc_rows}
