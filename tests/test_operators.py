"""Composition operators (compose.operators) against closed forms and the tabular oracle.

* soft-OR of a skill with itself is the skill plus ``alpha log 2``; GPI of identical evaluations is that
  evaluation; divergence correction of identical skills is 0;
* Gaussian-shaped soft Q-functions, where the correction is analytic:
  ``C_w(s0, a) = gamma alpha sum_i w_i |mu_i - mu_bar|^2 / (2 sigma^2)`` one step before the end;
* the DC network against ``compose.tabular.divergence_correction_term`` on a chain whose continuous
  action picks one of three moves (the integral's measure constant cancels in ``C``);
* soft policy evaluation (GPI's fit) against the tabular exact evaluation on the same chain;
* bad input: unknown operators, weights where none are taken, priority without an order.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import compose
import compose.run as compose_run
import skills
import skills.policy
from compose.bound import BoundConfig
from compose.operators import (
    GPI,
    GPIQ,
    DivergenceCorrection,
    OfflineData,
    OperatorError,
    SoftOrQ,
    fit_divergence_correction,
    fit_policy_evaluations,
    make_operator,
    priority_energy,
)
from compose.policy import ComposedPolicy
from compose.sampling import SamplerConfig
from compose.tabular import core as tabular
from skills.sql import SoftQNetwork
from skills.sql.many_skills import StackedQ

FAST = DivergenceCorrection(tolerance=3e-3, target_update_interval=25, batch_size=256, value_samples=64,
                            hidden=(64, 64), lr=3e-3)


def random_stacked(n: int, obs_dim: int = 3, act_dim: int = 2, seed: int = 0) -> StackedQ:
    torch.manual_seed(seed)
    return StackedQ([SoftQNetwork(obs_dim, act_dim, (16, 16), torch.ones(obs_dim)) for _ in range(n)])


def test_soft_or_of_a_skill_with_itself_is_the_skill_plus_alpha_log_2():
    q = SoftQNetwork(3, 2, (16, 16), torch.ones(3))
    obs, act = torch.randn(10, 3), torch.rand(10, 2) * 2 - 1
    for alpha in (0.05, 1.0, 10.0):
        energy = SoftOrQ(StackedQ([q, q]), alpha)
        torch.testing.assert_close(energy(obs, act), q(obs, act) + alpha * math.log(2), atol=1e-5, rtol=0)
    # numpy in, numpy out, as the averaged Q
    assert isinstance(SoftOrQ(StackedQ([q, q]), 1.0)(obs.numpy(), act.numpy()), np.ndarray)


def test_gpi_of_identical_evaluations_is_that_evaluation_and_max_otherwise():
    q = SoftQNetwork(3, 2, (16, 16), torch.ones(3))
    obs, act = torch.randn(10, 3), torch.rand(10, 2) * 2 - 1
    torch.testing.assert_close(GPIQ(StackedQ([q, q]))(obs, act), q(obs, act), atol=1e-6, rtol=0)
    stacked = random_stacked(3)
    torch.testing.assert_close(GPIQ(stacked)(obs, act), stacked(obs, act).max(0).values)


def test_priority_energy_is_the_last_q_inside_the_indifference_set_and_falls_outside():
    q_last = torch.tensor([1.0, 1.0, 1.0])
    q_high = torch.tensor([[2.0, 1.6, 1.0]])  # max 2.0: within eps 0.5, at the edge + 0.1 outside, 0.5 outside
    energy = priority_energy(q_last, q_high, torch.tensor([[2.0]]), epsilon=0.5, slope=20.0)
    torch.testing.assert_close(energy, torch.tensor([1.0, 1.0, 1.0 - 20 * 0.5]))


class AnalyticQs(nn.Module):
    """``Q_i(s, a) = -alpha |a - mu_i|^2 / (2 sigma^2)`` for every state, as a StackedQ would answer: [N, ...]."""

    def __init__(self, mus: torch.Tensor, sigma: float, alpha: float):
        super().__init__()
        self.mus, self.sigma, self.alpha, self.n = mus, sigma, alpha, len(mus)

    def forward(self, obs, act):
        shape = torch.broadcast_shapes(obs.shape[:-1], act.shape[:-1])
        a = act.expand(*shape, act.shape[-1])
        diff = a.unsqueeze(0) - self.mus.view(self.n, *([1] * len(shape)), -1)
        return -self.alpha * diff.pow(2).sum(-1) / (2 * self.sigma ** 2)


class GaussianSampler:
    """Exact draws of ``pi_i ∝ exp(Q_i/alpha)`` for ``AnalyticQs`` (the box truncates < 1e-5 of the mass)."""

    def __init__(self, mu: torch.Tensor, sigma: float):
        self.mu, self.sigma = mu, sigma

    def sample(self, obs, n, generator=None):
        noise = torch.randn(len(obs), n, len(self.mu), generator=generator)
        return (self.mu + self.sigma * noise).clamp(-1, 1)


def test_divergence_correction_matches_the_gaussian_closed_form_for_every_weighting():
    alpha, sigma, gamma = 1.0, 0.2, 0.9
    mus = torch.tensor([[-0.3, 0.0], [0.3, 0.1]])
    # s0 -> s1 -> end: C(s1, .) = 0, C(s0, a) = gamma * delta(s1), the same for every a
    rng = np.random.default_rng(0)
    m = 2000
    obs = np.repeat([[0.0], [1.0]], m // 2, axis=0).astype(np.float32)
    data = {"obs": obs, "action": rng.uniform(-1, 1, (m, 2)).astype(np.float32),
            "next_obs": obs + 1.0, "terminated": (obs[:, 0] == 1.0).astype(np.float32)}
    net, info = fit_divergence_correction(OfflineData(
        stacked=AnalyticQs(mus, sigma, alpha), samplers=[GaussianSampler(mu, sigma) for mu in mus], transitions=data,
        weights=np.array([0.5, 0.5]), alpha=alpha, gamma=gamma, obs_scale=torch.ones(1)), FAST)
    actions = torch.tensor([[0.0, 0.0], [0.5, -0.5], [-0.8, 0.3]])
    for w in ([0.5, 0.5], [0.8, 0.2], [0.2, 0.8]):
        w_t = torch.tensor(w)
        mu_bar = (w_t[:, None] * mus).sum(0)
        expected = gamma * alpha * float((w_t * (mus - mu_bar).pow(2).sum(-1)).sum()) / (2 * sigma ** 2)
        with torch.no_grad():
            c0 = net(torch.zeros(3, 1), actions, w_t)
            c1 = net(torch.ones(3, 1), actions, w_t)
        np.testing.assert_allclose(c0.numpy(), expected, rtol=0.06, atol=0.03, err_msg=f"C(s0) at w={w}")
        np.testing.assert_allclose(c1.numpy(), 0.0, atol=0.05, err_msg=f"C(s1) at w={w}")


# ---- a chain whose continuous action picks a move: tabular oracle vs the networks --------------------------
CHAIN = 5  # states 0..4; 0 and 4 are goals (absorbing: reaching them ends the episode)
MOVES = (-1, 0, 1)


def move_of(action: np.ndarray) -> np.ndarray:
    """a in [-1, -1/3) -> left, [-1/3, 1/3] -> stay, (1/3, 1] -> right: the index into MOVES."""
    return np.digitize(action[..., 0], [-1 / 3, 1 / 3], right=True)


def chain_mdp():
    """P[S, 3, S], whose rows into a goal are 0 (entering a goal ends the episode, value 0 after it); rewards
    of two tasks (left goal, right goal) that differ only in the bonus for entering their own goal."""
    P = np.zeros((CHAIN, 3, CHAIN))
    for s in range(1, CHAIN - 1):
        for b, move in enumerate(MOVES):
            if 0 < s + move < CHAIN - 1:
                P[s, b, s + move] = 1.0
    rewards = np.full((2, CHAIN, 3), -0.2)
    rewards[:, 0], rewards[:, CHAIN - 1] = 0.0, 0.0  # goal states are never left (their rows are 0)
    rewards[0, 1, 0] += 2.0  # left task: +2 on stepping into state 0
    rewards[1, CHAIN - 2, 2] += 2.0  # right task: +2 on stepping into state 4
    return P, rewards


class TableQs(nn.Module):
    """Tabular ``Qs[N, S, 3]`` as functions of (one-hot state, continuous action): [N, ...]."""

    def __init__(self, qs: np.ndarray):
        super().__init__()
        self.qs, self.n = torch.as_tensor(qs, dtype=torch.float32), len(qs)

    def forward(self, obs, act):
        shape = torch.broadcast_shapes(obs.shape[:-1], act.shape[:-1])
        s = obs.expand(*shape, obs.shape[-1]).argmax(-1)
        b = torch.as_tensor(move_of(act.expand(*shape, act.shape[-1]).numpy()))
        return self.qs[:, s, b]


class TableSampler:
    """Draws of ``pi_i``: a move by the tabular soft policy, then an action uniform within its third."""

    def __init__(self, q: np.ndarray, alpha: float):
        self.policy = torch.as_tensor(tabular.soft_policy(q, alpha), dtype=torch.float32)

    def sample(self, obs, n, generator=None):
        probs = self.policy[obs.argmax(-1)]  # [B, 3]
        b = torch.multinomial(probs, n, replacement=True, generator=generator)  # [B, n]
        u = torch.rand(len(obs), n, generator=generator)
        return ((b.float() - 1.0) * 2 / 3 + (u - 0.5) * 2 / 3).unsqueeze(-1)


def chain_transitions(P: np.ndarray, rewards_w: np.ndarray | None = None, per_pair: int = 200):
    rng = np.random.default_rng(1)
    rows = []
    for s in range(1, CHAIN - 1):
        for b in range(3):
            a = rng.uniform(-1, 1, (4 * per_pair, 1))
            a = a[move_of(a) == b][:per_pair]
            nxt = s + MOVES[b]
            rows.append((s, a, nxt, float(P[s, b].sum() == 0), 0.0 if rewards_w is None else rewards_w[s, b]))
    eye = np.eye(CHAIN, dtype=np.float32)
    data = {"obs": np.concatenate([np.repeat(eye[[s]], len(a), 0) for s, a, *_ in rows]),
            "action": np.concatenate([a for _, a, *_ in rows]).astype(np.float32),
            "next_obs": np.concatenate([np.repeat(eye[[n]], len(a), 0) for _, a, n, *_ in rows]),
            "terminated": np.concatenate([np.full(len(a), d) for _, a, _, d, _ in rows]).astype(np.float32),
            "reward": np.concatenate([np.full(len(a), r) for _, a, _, _, r in rows]).astype(np.float32)}
    return data


def bin_centres() -> torch.Tensor:
    return torch.tensor([[-2 / 3], [0.0], [2 / 3]])


def test_divergence_correction_network_agrees_with_the_tabular_oracle():
    alpha, gamma = 0.5, 0.9
    P, rewards = chain_mdp()
    qs = np.stack([tabular.soft_q_iteration(P, r, gamma, alpha) for r in rewards])
    expected = tabular.divergence_correction_term(P, qs, [0.5, 0.5], gamma, alpha)  # [S, 3]
    data = chain_transitions(P)
    net, _ = fit_divergence_correction(OfflineData(
        stacked=TableQs(qs), samplers=[TableSampler(q, alpha) for q in qs], transitions=data,
        weights=np.array([0.5, 0.5]), alpha=alpha, gamma=gamma, obs_scale=torch.ones(CHAIN)), FAST)
    eye = torch.eye(CHAIN)
    with torch.no_grad():
        got = np.stack([net(eye[[s]].expand(3, -1), bin_centres(), torch.tensor([0.5, 0.5])).numpy()
                        for s in range(1, CHAIN - 1)])
    scale = np.abs(expected[1:-1]).max()
    assert scale > 0.1, "the test problem must have a correction to find"
    np.testing.assert_allclose(got, expected[1:-1], atol=0.08 * scale + 0.02)


def test_policy_evaluation_fit_agrees_with_the_tabular_exact_evaluation():
    alpha, gamma = 0.5, 0.9
    P, rewards = chain_mdp()
    qs = np.stack([tabular.soft_q_iteration(P, r, gamma, alpha) for r in rewards])
    r_w = rewards.mean(0)
    expected = [tabular.soft_policy_evaluation_exact(P, r_w, tabular.soft_policy(q, alpha), gamma, alpha) for q in qs]
    # V_i in the continuous action measure: the counting-measure value plus alpha log(2/3) per third of [-1, 1]
    data = chain_transitions(P, r_w)
    values = [tabular.soft_value(q, alpha)[data["next_obs"].argmax(-1)] + alpha * math.log(2 / 3) for q in qs]
    stacked, _ = fit_policy_evaluations(OfflineData(
        stacked=TableQs(qs), samplers=[TableSampler(q, alpha) for q in qs], values=values, transitions=data,
        gamma=gamma, obs_scale=torch.ones(CHAIN)), GPI(tolerance=1e-3, hidden=(64, 64), lr=3e-3, next_actions=32))
    eye = torch.eye(CHAIN)
    for i, q_exact in enumerate(expected):
        # the continuous policy's entropy carries alpha log(2/3) less per step than the tabular one's
        with torch.no_grad():
            got = np.stack([stacked(eye[[s]].expand(3, -1), bin_centres())[i].numpy() for s in range(1, CHAIN - 1)])
        shift = continuous_shift(P, tabular.soft_policy(qs[i], alpha), gamma, alpha)[1:-1]
        np.testing.assert_allclose(got, q_exact[1:-1] + shift, atol=0.08)


def continuous_shift(P: np.ndarray, policy: np.ndarray, gamma: float, alpha: float) -> np.ndarray:
    """``Q^pi`` in the continuous measure minus the counting one: an action uniform within its third of [-1, 1]
    (density 3/2) adds ``alpha log(2/3)`` (< 0) to the entropy of every step after the first that the episode
    lasts. ``shift = gamma P (alpha log(2/3) + E_pi shift)``, an exact evaluation with no entropy: [S, 3]."""
    per_step = gamma * P.sum(-1) * alpha * math.log(2 / 3)
    return tabular.soft_policy_evaluation_exact(P, per_step, policy, gamma, 0.0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(operator="sum"), "valid operators: average, dc, gpi, or, priority"),
    (dict(operator="or", weighted=True), "takes no weights"),
    (dict(operator="priority", weighted=True), "takes no weights"),
    (dict(operator="priority"), "needs an order"),
    (dict(operator="priority", order=["avoid", "nope"]), "must list each composed skill once"),
    (dict(operator="average", order=["avoid", "reach"]), "'order' applies to operator 'priority' only"),
    (dict(operator="priority", order=["avoid", "reach"], epsilon=-1.0), "epsilon must be finite and >= 0"),
])
def test_operators_that_do_not_apply_are_refused_clearly(kwargs, message):
    weighted = kwargs.pop("weighted", False)
    with pytest.raises(OperatorError, match=message):
        make_operator(kwargs.pop("operator"), **kwargs).checked(["reach", "avoid"], weighted)


def test_operators_accept_what_applies_and_say_why_not_otherwise():
    assert make_operator("dc").checked(["a", "b"], True).name == "dc"
    config = make_operator("priority", order=["avoid", "reach"], epsilon=0.2).checked(["reach", "avoid"], False)
    assert config.order == ("avoid", "reach") and config.epsilon == 0.2
    assert make_operator("priority").why_not(["reach", "avoid"], False).startswith("needs an order")
    assert make_operator("average").why_not(["reach", "avoid"], True) is None


def test_the_registry_names_every_operator_and_no_string_dispatch_is_left():
    """Operators are found by name in one place (``compose.operators.OPERATORS``): no other module of ``compose``
    compares an operator name with a string."""
    import ast

    assert list(compose.OPERATORS) == ["average", "dc", "gpi", "or", "priority"]
    root = Path(compose.__file__).parent
    found = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                names = [n for n in (node.left, *node.comparators) if isinstance(n, ast.Attribute) and n.attr == "name"]
                consts = [n for n in (node.left, *node.comparators) if isinstance(n, ast.Constant)
                          and n.value in compose.OPERATORS]
                if names and consts:
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert found == []


# ---- the operators as policies, on the shipped two-goal skills ------------------------------------------------
TINY_SAMPLER = SamplerConfig(updates=30)
TINY_FIT = dict(tolerance=0.6, batch_size=64, value_samples=16, hidden=(32, 32))
TINY_OPERATORS = {"average": compose.operators.Average(), "dc": DivergenceCorrection(**TINY_FIT),
                  "gpi": GPI(**TINY_FIT, next_actions=4), "or": compose.operators.SoftOr()}
TINY_BUILD = compose_run.BuildConfig(sampler=SamplerConfig(updates=30), bound=BoundConfig(updates=10), progress=False)
TINY_BOUND = BoundConfig(updates=10)


@pytest.mark.parametrize("name", ["average", "dc", "gpi", "or"])
def test_every_operator_returns_the_same_policy_object_answering_like_a_skill(two_goal_library, name):
    composition = compose.load("west+east", library=str(two_goal_library), operator=TINY_OPERATORS[name])
    built = composition.build(progress=False, sampler_cfg=TINY_SAMPLER, bound_cfg=TINY_BOUND)
    assert isinstance(composition.policy, ComposedPolicy) and isinstance(composition, skills.policy.SoftPolicy)
    obs = np.array([[0.0, 0.0], [1.0, 0.5], [-2.0, 0.0]], np.float32)
    act = composition.act(obs)
    assert act.shape == (3, 2) and np.all(np.abs(act) <= 1)
    assert composition.act(obs, deterministic=True).shape == (3, 2)
    assert composition.sample(obs, 5).shape == (3, 5, 2)
    q = composition.q(obs, act)
    assert q.shape == (3,) and isinstance(q, np.ndarray)
    np.testing.assert_allclose(composition.policy.q(obs, act), built.q(obs, act), atol=1e-6)
    value = composition.value(obs, 2048)
    # V >= the Q of any one action minus the entropy of a point... V is a soft max: above the mean Q of uniform actions
    uniform = np.random.default_rng(0).uniform(-1, 1, (3, 256, 2)).astype(np.float32)
    mean_q = composition.q(np.repeat(obs[:, None], 256, 1), uniform).mean(1)
    assert np.all(value >= mean_q + composition.alpha * 2 * np.log(2) - 1e-3)  # Jensen: V >= E_U[Q] + alpha log|A|
    if name == "or":
        expected = composition.alpha * np.logaddexp(*(p.q(obs, act) / composition.alpha for p in composition.parts))
        np.testing.assert_allclose(q, expected, rtol=1e-5, atol=1e-5)


def test_run_operators_compares_every_applicable_operator_on_the_same_episodes(two_goal_library, tmp_path):
    report = compose_run.run("west+east", [*TINY_OPERATORS.values(), "priority"], build_config=TINY_BUILD,
                             evaluation=compose_run.EvaluationConfig(episodes=2, trajectory_episodes=2),
                             sources=compose_run.Sources(library=str(two_goal_library), out=tmp_path / "out"))
    assert list(report["operators"]) == ["average", "dc", "gpi", "or"]
    assert list(report["skipped"]) == ["priority"] and report["skipped"]["priority"].startswith("needs an order")
    assert set(report["constituents"]) == {"west", "east"} and report["joint"]["episodes"] == 2
    for name, row in report["operators"].items():
        assert row["env_steps_used"] == 0 and row["episodes"] == 2 and row["operator"]["name"] == name
    assert set(report["ratios_to_joint"]) == {"average", "dc", "gpi", "or"}
    assert (tmp_path / "out" / "trajectories.png").stat().st_size > 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| dc |" in text and "priority: skipped, needs an order" in text
    # a second run reuses every build from the cache
    again = compose_run.run("west+east", [TINY_OPERATORS["dc"], TINY_OPERATORS["gpi"]], build_config=TINY_BUILD,
                            evaluation=compose_run.EvaluationConfig(episodes=1, trajectory_episodes=1),
                            sources=compose_run.Sources(library=str(two_goal_library), out=tmp_path / "again"))
    assert all(row["cached"] for row in again["operators"].values())


def test_priority_runs_with_an_order_and_its_energy_prefers_the_indifference_set(two_goal_library):
    composition = compose.load("west+east", library=str(two_goal_library), operator="priority", order=["east", "west"])
    composition.build(progress=False, sampler_cfg=TINY_SAMPLER)
    obs = np.zeros((1, 2), np.float32)
    east = composition.parts[1]
    candidates = np.random.default_rng(0).uniform(-1, 1, (1, 400, 2)).astype(np.float32)
    q_east = east.q(np.repeat(obs[:, None], 400, 1), candidates)[0]
    energy = composition.q(np.repeat(obs[:, None], 400, 1), candidates)[0]
    # actions far below east's best fall off the wall: the energy's best action is (nearly) east-optimal
    assert q_east[np.argmax(energy)] >= q_east.max() - composition.operator.epsilon - 0.05


@pytest.mark.parametrize("argv, message", [
    (["west+east", "--operator", "priority"], "needs an order"),
    (["west+east", "--operator", "or", "--weights", "0.5,0.5"], "takes no weights"),
    (["west+east", "--operator", "dc", "--order", "east,west"], "'order' applies to operator 'priority' only"),
    (["west+east", "--operator", "priority", "--order", "east,nope"], "must list each composed skill once"),
])
def test_compose_run_refuses_operators_that_do_not_apply(two_goal_library, tmp_path, capsys, argv, message):
    code = compose_run.main([*argv, "--library", str(two_goal_library), "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 2
    assert message in capsys.readouterr().err


def test_compose_run_lists_the_operators_for_an_unknown_one(capsys):
    with pytest.raises(SystemExit):
        compose_run.main(["west+east", "--operator", "sum"])
    assert "average, dc, gpi, or, priority, all" in capsys.readouterr().err.replace("'", "")


def test_minus_correction_is_the_correction_negated_at_fixed_weights():
    """``dc``'s ``Q_w - C_w`` saves as ``Q_w + R``: ``R`` is ``C_w``'s network with the weights folded into its first
    layer's bias and its last layer negated. Random networks, observations broadcast against several actions."""
    from compose.operators.divergence import CorrectionNetwork, minus_correction

    torch.manual_seed(0)
    correction = CorrectionNetwork(7, 3, 2, (32, 32), torch.rand(7) * 5)
    for parameter in correction.parameters():
        nn.init.normal_(parameter)
    weights = torch.tensor([0.3, 0.7])
    residual = minus_correction(correction, weights)
    assert isinstance(residual, SoftQNetwork) and residual.obs_scale.shape == (7,)
    for obs, act in ((torch.randn(50, 7), torch.rand(50, 3) * 2 - 1), (torch.randn(5, 1, 7), torch.rand(5, 4, 3))):
        c = correction(obs, act, weights).detach()
        torch.testing.assert_close(residual(obs, act).detach(), -c, rtol=1e-5, atol=1e-5 * float(c.abs().max()))
    other = minus_correction(correction, torch.tensor([0.7, 0.3]))  # the weights matter
    obs, act = torch.randn(50, 7), torch.rand(50, 3)
    assert not torch.allclose(other(obs, act), residual(obs, act))


def test_dc_saves_as_q_w_plus_r_and_reopens_as_itself_in_every_loader(two_goal_library):
    """A saved ``dc`` composition: ``skills.load`` and ``compose.load`` give its energy ``Q_w - C_w`` (not ``Q_w``),
    it acts as the composition did, it records its operator, and adaptation starts from that energy."""
    from compose.adaptation import adapted_trainer
    from compose.library import composed_agent, operator_residual

    lib = str(two_goal_library)
    dc = compose.load("west+east", library=lib, operator=TINY_OPERATORS["dc"])
    dc.build(progress=False, sampler_cfg=TINY_SAMPLER)
    path = dc.save(progress=False)
    assert path.parent.name == "west+east.dc.composed"
    rng = np.random.default_rng(0)
    obs = rng.uniform(-4, 4, (64, dc.obs_dim)).astype(np.float32)
    act = rng.uniform(-1, 1, (64, dc.act_dim)).astype(np.float32)
    expected = dc.q(obs, act)
    assert np.abs(expected - dc.q_w(obs, act)).max() > 1e-3  # the correction is not 0, so the checks below can fail
    reopened = compose.load("west+east.dc.composed", library=lib)
    as_skill = skills.load("west+east.dc.composed", lib)
    assert reopened.operator == dc.operator and reopened.saved == path
    np.testing.assert_allclose(reopened.q(obs, act), expected, rtol=1e-5, atol=1e-4)
    with torch.no_grad():
        np.testing.assert_allclose(as_skill.agent.q(torch.as_tensor(obs), torch.as_tensor(act)).numpy(), expected,
                                   rtol=1e-5, atol=1e-4)
    draws = [torch.Generator().manual_seed(i) for i in range(8)], [torch.Generator().manual_seed(i) for i in range(8)]
    np.testing.assert_array_equal(reopened.act(obs[:8], generators=draws[0]), dc.act(obs[:8], generators=draws[1]))
    # adaptation starts from Q_w + R with R = -C_w: from the composition itself, and from the saved entry as
    # compose.adapt west+east.dc.composed does
    trainer = adapted_trainer(compose.load("west+east.dc.composed", library=lib), steps=10, out=lib, progress=False,
                              convergence=False)
    try:
        for agent in (composed_agent(dc, dc.policy.sampler, 0, residual=operator_residual(dc)), trainer.agent):
            with torch.no_grad():
                np.testing.assert_allclose(agent.q(torch.as_tensor(obs), torch.as_tensor(act)).numpy(), expected,
                                           rtol=1e-5, atol=1e-4)
    finally:
        trainer.seed_run.give_back()


def test_a_saved_composition_with_a_forged_operator_is_refused(two_goal_library):
    import json

    from skills.library import CorruptSkillError

    lib = str(two_goal_library)
    average = compose.load("west+east", library=lib)
    average.build(progress=False, sampler_cfg=TINY_SAMPLER, bound_cfg=TINY_BOUND)
    path = average.save(progress=False)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["composed_from"]["operator"] == {"name": "average"}
    huge = int("9" * 400)  # json writes it whole; math.isfinite would overflow on it
    for forged, message in (({"name": "gpi"}, "does not save as Q_w \\+ R"), ({"name": "sum"}, "unknown operator 'sum'"),
                            ({"name": "dc", "lr": "fast"}, "not a valid operator"), ("dc", "not a valid operator"),
                            ({"name": "dc", "lr": huge}, "not a valid operator"),
                            ({"name": "dc", "hidden": []}, "not a valid operator"),
                            ({"name": "dc", "hidden": [0]}, "not a valid operator")):
        manifest["composed_from"]["operator"] = forged
        (path / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(CorruptSkillError, match=message):
            compose.load("west+east.composed", library=lib)
    # the record against the network: both loaders must give one energy
    manifest["composed_from"]["operator"] = {"name": "average"}
    manifest["composed_from"]["weights"] = [0.25, 0.75]
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptSkillError, match="weights \\[0.5, 0.5\\], but its record says \\[0.25, 0.75\\]"):
        compose.load("west+east.composed", library=lib)


def test_a_dc_entry_relabelled_as_averaging_is_refused(two_goal_library):
    """``compose.load`` would use ``Q_w`` for an entry recording averaging, ``skills.load`` its ``Q_w + R``: an entry
    whose ``R`` is not 0 must not record averaging."""
    import json

    from skills.library import CorruptSkillError

    lib = str(two_goal_library)
    dc = compose.load("west+east", library=lib, operator=TINY_OPERATORS["dc"])
    dc.build(progress=False, sampler_cfg=TINY_SAMPLER)
    path = dc.save(progress=False)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["composed_from"]["operator"] = {"name": "average"}
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptSkillError, match="records operator 'average' \\(R = 0\\), but its residual R is not 0"):
        compose.load("west+east.dc.composed", library=lib)


def test_fitted_operators_need_hidden_layers():
    with pytest.raises(compose.operators.OperatorError, match="hidden must name one or more positive layer widths"):
        DivergenceCorrection(hidden=())


def test_saved_compositions_refuse_operators_whose_energy_is_not_q_w_plus_r(two_goal_library):
    composition = compose.load("west+east", library=str(two_goal_library), operator="or")
    with pytest.raises(ValueError, match="'average', 'dc'\\); 'or''s is not"):
        composition.save(progress=False)
    average = compose.load("west+east", library=str(two_goal_library))
    average.build(progress=False, sampler_cfg=TINY_SAMPLER, bound_cfg=TINY_BOUND)
    average.save(progress=False)
    with pytest.raises(ValueError, match="its own weights and operator"):
        compose.load("west+east.composed", library=str(two_goal_library), operator="dc")


@pytest.mark.learning
def test_on_two_goals_averaging_hesitates_and_dc_gpi_or_commit(two_goal_library):
    """The docs' west+east result on a small budget (fewer sampler updates, a shorter fit): 30 seeded episodes."""
    sampler = SamplerConfig(updates=1500)
    operators = ["average", DivergenceCorrection(tolerance=0.05), GPI(tolerance=0.05), "or"]
    report = compose_run.run("west+east", operators, build_config=compose_run.BuildConfig(sampler, TINY_BOUND, False),
                             evaluation=compose_run.EvaluationConfig(episodes=30, trajectory_episodes=5),
                             sources=compose_run.Sources(library=str(two_goal_library), out=two_goal_library / "out"))
    ops, joint = report["operators"], report["joint"]
    assert ops["average"]["success_rate"] <= 0.5, ops["average"]
    for name in ("dc", "gpi", "or"):
        assert ops[name]["success_rate"] >= 0.9, (name, ops[name]["success_rate"])
        assert ops[name]["return_mean"] >= 0.9 * joint["return_mean"], (name, ops[name]["return_mean"], joint["return_mean"])


def test_an_operators_energy_exposes_its_parts_as_docs_compose_calls_them():
    """The review: docs/compose.md reads DC's correction as ``compose.load("west+east", operator="dc").q.correction``,
    which raised AttributeError (``ComposedSkill.q`` wraps the energy to check its inputs). The shipped cache, no fit."""
    composition = compose.load("west+east", operator="dc",
                               library=str(Path(__file__).resolve().parents[1] / "trained"))
    q = composition.q
    obs, act = torch.zeros(4, composition.obs_dim), torch.zeros(4, composition.act_dim)
    c = q.correction(obs, act, torch.as_tensor(np.asarray(composition.weights), dtype=torch.float32))
    assert c.shape == (4,) and bool(torch.isfinite(c).all())
    with pytest.raises(AttributeError):
        _ = q.no_such_part
