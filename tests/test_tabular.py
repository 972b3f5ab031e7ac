"""Exact max-ent theory on finite MDPs (compose.tabular), checked on random MDPs.

Random MDPs come from a hypothesis-drawn seed plus drawn sizes, gamma and alpha; rows of
P may lose mass (termination). Tolerances: solvers run to an error bound of 1e-10, so
identities are checked to 1e-8 and inequalities with a 1e-8 slack.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compose.tabular import (
    ConvergenceError,
    check_weights,
    composed_q,
    composition_bound,
    divergence_correction,
    gpi,
    hard_max_correction,
    hunt_grid,
    policy_soft_value,
    random_mdp,
    reach_probability,
    soft_bellman_backup,
    soft_or,
    soft_or_grid,
    soft_or_reward,
    soft_policy,
    soft_policy_evaluation,
    soft_policy_evaluation_exact,
    soft_policy_iteration,
    soft_q_iteration,
    soft_value,
)
from compose.tabular.report import compare_operators, tightness

EPS = 1e-8
PROPERTY = settings(max_examples=40, deadline=None)


@st.composite
def mdps(draw, max_states: int = 5, max_actions: int = 4, equal_weights: bool | None = None):
    """(P[S,A,S], rewards[N,S,A], weights[N], gamma, alpha) with random termination."""
    S = draw(st.integers(1, max_states))
    A = draw(st.integers(2, max_actions))
    N = draw(st.integers(2, 3))
    gamma = draw(st.floats(0.3, 0.95))
    alpha = draw(st.floats(0.05, 3.0))
    concentration = draw(st.sampled_from([0.1, 1.0, 10.0]))  # near-deterministic .. diffuse
    equal = draw(st.booleans()) if equal_weights is None else equal_weights
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    stay = 1.0 - rng.uniform(0.0, 0.3, size=(S, A, 1)) * rng.integers(0, 2, size=(S, A, 1))
    P = stay * rng.dirichlet(np.full(S, concentration), size=(S, A))
    rewards = rng.uniform(-1, 1, size=(N, S, A)) * draw(st.sampled_from([0.1, 1.0, 5.0]))
    weights = np.full(N, 1.0 / N) if equal else rng.dirichlet(np.ones(N))
    return P, rewards, weights, gamma, alpha


# ------------------------------------------------------------------ soft primitives


def test_soft_value_is_stable_and_matches_definition():
    Q = np.array([[1000.0, 999.0, -5.0], [0.1, 0.2, 0.3]])
    alpha = 0.7
    with np.errstate(over="ignore"):
        naive = alpha * np.log(np.exp(Q[1] / alpha).sum())
    assert soft_value(Q, alpha)[1] == pytest.approx(naive, abs=1e-12)
    top = 1000 + alpha * np.log(1 + np.exp(-1 / alpha) + np.exp(-1005 / alpha))
    assert soft_value(Q, alpha)[0] == pytest.approx(top, rel=1e-14)
    pi = soft_policy(Q, alpha)
    np.testing.assert_allclose(pi.sum(-1), 1.0)
    # the Boltzmann policy attains the soft value: V = sum_a pi (Q - alpha log pi)
    np.testing.assert_allclose(policy_soft_value(Q, pi, alpha), soft_value(Q, alpha), rtol=1e-12)


# ------------------------------------------------------------- Haarnoja et al. bound


@PROPERTY
@given(mdps())
def test_composition_bound_holds_everywhere(mdp):
    """Q_composed >= Q_optimal >= Q_composed - C, for random weights, gamma, alpha."""
    P, rewards, weights, gamma, alpha = mdp
    out = composition_bound(P, rewards, weights, gamma, alpha)
    Qc, Qo, C = out["Q_composed"], out["Q_optimal"], out["C"]
    assert np.all(out["delta"] >= -1e-12)  # Hoelder
    assert np.all(Qc >= Qo - EPS)
    assert np.all(Qo >= Qc - C - EPS)
    if out["C_renyi"] is not None:  # the paper's D_1/2 form is valid and looser (2x delta)
        np.testing.assert_allclose(out["delta_renyi"], 2 * out["delta"], atol=1e-10)
        assert np.all(out["C_renyi"] >= C - EPS)


def test_composition_bound_is_tight_on_searched_mdp():
    """The gap reaches >= 90% of C on a generated MDP with action-dependent dynamics.

    Found by a seeded search: ``random_mdp(seed, n_states=4, n_actions=2, n_tasks=2)`` with
    w = (0.5, 0.5), gamma = 0.9, alpha = 0.5, scanning seed = 0, 1, ...; seeds 11 and 13
    are the first above 90% (0.913, 0.938). Across 300 random MDPs about half reach 90%
    somewhere. The paper's D_1/2 form is half as tight, so it must stay below 50%."""
    P, rewards = random_mdp(13, n_states=4, n_actions=2, n_tasks=2)
    out = composition_bound(P, rewards, [0.5, 0.5], 0.9, 0.5)
    assert out["C"].max() > 0.5  # not a vanishing 0/0 ratio
    assert tightness(out) >= 0.9
    gap = out["Q_composed"] - out["Q_optimal"]
    assert np.max(gap / out["C_renyi"]) < 0.5


@PROPERTY
@given(mdps())
def test_composition_bound_is_exact_when_dynamics_ignore_the_action(mdp):
    """Construction: if P[s, a, :] does not depend on a, C(s', .) is constant over actions, so
    softmax(Q_w - C) = V_w - max_a C holds with equality, Q_w - C is a fixed point of the
    soft Bellman operator, and Q* = Q_w - C exactly (gap / C = 1 wherever C > 0)."""
    P, rewards, weights, gamma, alpha = mdp
    P = np.repeat(P[:, :1], P.shape[1], axis=1)
    out = composition_bound(P, rewards, weights, gamma, alpha)
    gap = out["Q_composed"] - out["Q_optimal"]
    np.testing.assert_allclose(gap, out["C"], atol=EPS)


# ----------------------------------------------------------- divergence correction


@PROPERTY
@given(mdps())
def test_divergence_correction_recovers_the_optimum(mdp):
    P, rewards, weights, gamma, alpha = mdp
    Q_dc = divergence_correction(P, rewards, weights, gamma, alpha)
    Q_star = soft_q_iteration(P, composed_q(rewards, weights), gamma, alpha)
    np.testing.assert_allclose(Q_dc, Q_star, rtol=0, atol=EPS)


# ------------------------------------------------------ evaluation and improvement


@PROPERTY
@given(mdps(), st.integers(0, 2**32 - 1))
def test_soft_policy_evaluation_is_a_gamma_contraction(mdp, seed):
    """||Q_{k+1} - Q^pi|| <= gamma ||Q_k - Q^pi|| for the iterates of T^pi, where Q^pi is the
    independent linear-solve answer; the iterates also converge to it."""
    P, rewards, _, gamma, alpha = mdp
    rng = np.random.default_rng(seed)
    policy = rng.dirichlet(np.ones(P.shape[1]), size=P.shape[0])
    Q0 = rng.normal(scale=10.0, size=P.shape[:2])
    trace: list[np.ndarray] = []
    Q = soft_policy_evaluation(P, rewards[0], policy, gamma, alpha, Q0=Q0, trace=trace)
    Q_exact = soft_policy_evaluation_exact(P, rewards[0], policy, gamma, alpha)
    np.testing.assert_allclose(Q, Q_exact, atol=EPS)
    np.testing.assert_allclose(soft_bellman_backup(Q_exact, P, rewards[0], policy, gamma, alpha), Q_exact, atol=1e-10)
    errors = np.array([np.max(np.abs(q - Q_exact)) for q in [Q0, *trace]])
    assert np.all(errors[1:] <= gamma * errors[:-1] + 1e-11)


@PROPERTY
@given(mdps())
def test_soft_policy_iteration_improves_monotonically(mdp):
    P, rewards, _, gamma, alpha = mdp
    policy, Q, history = soft_policy_iteration(P, rewards[0], gamma, alpha)
    assert np.all(np.diff(history, axis=0) >= -1e-10)
    np.testing.assert_allclose(Q, soft_q_iteration(P, rewards[0], gamma, alpha), atol=EPS)
    np.testing.assert_allclose(policy, soft_policy(Q, alpha), atol=1e-12)


@PROPERTY
@given(mdps())
def test_maxent_gpi_improves_on_every_constituent(mdp):
    """Q^{pi_GPI}_w >= max_i Q^{pi_i}_w (each pi_i evaluated on r_w), and <= Q*_w."""
    P, rewards, weights, gamma, alpha = mdp
    out = gpi(P, rewards, weights, gamma, alpha)
    assert np.all(out["Q_policy"] >= out["Q"] - EPS)
    Q_star = soft_q_iteration(P, composed_q(rewards, weights), gamma, alpha)
    assert np.all(out["Q_policy"] <= Q_star + EPS)


# ------------------------------------------------------------------------- soft-OR


@st.composite
def first_exit_deterministic(draw):
    """Deterministic, undiscounted MDP; the last state is an absorbing goal reachable from
    every state (action 0 walks s -> s + 1); a second goal is optional. Non-goal rewards are
    shared by both tasks and below -alpha log A, so every soft value is finite."""
    S = draw(st.integers(2, 7))
    A = draw(st.integers(2, 3))
    alpha = draw(st.floats(0.1, 1.0))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    goal = np.zeros(S, dtype=bool)
    goal[-1] = True
    goal[rng.integers(0, S)] |= draw(st.booleans())
    nxt = rng.integers(0, S, size=(S, A))
    nxt[:, 0] = np.minimum(np.arange(S) + 1, S - 1)
    P = np.zeros((S, A, S))
    P[np.arange(S)[:, None], np.arange(A)[None, :], nxt] = 1.0
    P[goal] = 0.0
    common = -alpha * (np.log(A) + rng.uniform(0.2, 1.0, size=(S, A)))
    rewards = np.stack([np.where(goal[:, None], rng.uniform(-1, 1, size=(S, 1)), common) for _ in range(2)])
    weights = rng.uniform(0.1, 2.0, size=2)
    return P, rewards, weights, alpha, goal


def test_soft_or_formula_includes_weights():
    Qs = np.array([[[0.3, -1.0]], [[2.0, 0.5]]])  # [N=2, S=1, A=2]
    w, alpha = np.array([0.25, 3.0]), 0.4
    expected = alpha * np.log(w[0] * np.exp(Qs[0] / alpha) + w[1] * np.exp(Qs[1] / alpha))
    np.testing.assert_allclose(soft_or(Qs, w, alpha), expected, rtol=1e-13)
    goal = np.array([True])
    np.testing.assert_allclose(soft_or_reward(Qs, w, alpha, goal), expected, rtol=1e-13)


@PROPERTY
@given(first_exit_deterministic())
def test_soft_or_is_exact_for_deterministic_absorbing_goals(case):
    P, rewards, weights, alpha, goal = case
    Qs = np.stack([soft_q_iteration(P, r, 1.0, alpha, tol=1e-12) for r in rewards])
    Q_star = soft_q_iteration(P, soft_or_reward(rewards, weights, alpha, goal), 1.0, alpha, tol=1e-12)
    np.testing.assert_allclose(soft_or(Qs, weights, alpha), Q_star, atol=EPS)


def _soft_or_error(slip: float, gamma: float, alpha: float = 0.2) -> np.ndarray:
    g = soft_or_grid(slip=slip)
    rewards, w = g.stack(["A", "B"]), np.ones(2)
    Qs = np.stack([soft_q_iteration(g.P, r, gamma, alpha) for r in rewards])
    Q_star = soft_q_iteration(g.P, soft_or_reward(rewards, w, alpha, g.goal), gamma, alpha)
    return soft_or(Qs, w, alpha) - Q_star


def test_soft_or_counterexample_stochastic_transitions():
    """Same 6x6 grid: exact when deterministic, wrong by ~0.08 with 10% slip (Jensen makes
    it an underestimate there), and also wrong when discounted (gamma = 0.9)."""
    assert np.max(np.abs(_soft_or_error(slip=0.0, gamma=1.0))) < EPS
    err = _soft_or_error(slip=0.1, gamma=1.0)
    assert np.max(np.abs(err)) > 0.05
    assert np.all(err <= EPS)
    assert np.max(np.abs(_soft_or_error(slip=0.0, gamma=0.9))) > 0.01


# ------------------------------------------------------- Hunt et al. 8x8 findings


@pytest.fixture(scope="module", params=[0.02, 0.05, 0.2])
def hunt(request):
    grid, alpha = hunt_grid(), request.param
    runs = {}
    for tasks in (["left", "right"], ["left", "up"]):
        res, _ = compare_operators(grid.P, grid.stack(tasks), np.array([0.5, 0.5]), grid.gamma, alpha, grid.start_dist)
        r_w = grid.stack(tasks).mean(0)[:, 0]
        best = grid.goal & (r_w == r_w[grid.goal].max())
        reach = {k: reach_probability(grid.P, o.policy, grid.start_dist, best) for k, o in res.items()}
        runs["+".join(tasks)] = (res, reach)
    return runs


def test_averaging_does_not_commit_on_incompatible_tasks(hunt):
    res, reach = hunt["left+right"]
    assert reach["optimal"] > 0.99 and reach["CO"] < 0.05
    assert res["CO"].ret < 0.05 * res["optimal"].ret
    assert res["optimal"].J - res["CO"].J > 1.0


def test_gpi_misses_the_compatible_optimum(hunt):
    res, reach = hunt["left+up"]
    assert reach["optimal"] > 0.99 and reach["GPI"] < 0.05  # the shared corner
    assert res["optimal"].J - res["GPI"].J > 1.0
    assert reach["CO"] > 0.9  # averaging is fine on compatible tasks
    _, reach_lr = hunt["left+right"]
    assert reach_lr["GPI"] > 0.99  # and GPI is fine on incompatible ones


def test_divergence_correction_recovers_both(hunt):
    for task in ("left+right", "left+up"):
        res, reach = hunt[task]
        assert res["DC"].value_error < EPS
        assert reach["DC"] > 0.99
        assert res["DC"].J == pytest.approx(res["optimal"].J, abs=1e-8)


# ---------------------------------------------------------- errors, no silent answers


def test_non_convergence_raises():
    P, rewards = random_mdp(0, n_states=4, n_actions=2, n_tasks=2)
    with pytest.raises(ConvergenceError, match="did not converge"):
        soft_q_iteration(P, rewards[0], 0.9, 0.5, max_iter=5)
    with pytest.raises(ConvergenceError):
        soft_policy_evaluation(P, rewards[0], np.full((4, 2), 0.5), 0.9, 0.5, max_iter=5)
    with pytest.raises(ConvergenceError):
        soft_policy_iteration(P, rewards[0], 0.9, 0.5, max_iter=1)
    with pytest.raises(ConvergenceError):
        divergence_correction(P, rewards, [0.5, 0.5], 0.9, 0.5, max_iter=5)
    with pytest.raises(ConvergenceError):
        hard_max_correction(P, np.ones(4), 0.9, max_iter=5)
    # gamma = 1 without termination has no finite soft value: refused, not returned.
    with pytest.raises(ConvergenceError):
        soft_q_iteration(P, rewards[0], 1.0, 0.5, max_iter=2_000)
    with pytest.raises(ConvergenceError):
        soft_policy_evaluation_exact(P, rewards[0], np.full((4, 2), 0.5), 1.0, 0.5)
    assert issubclass(ConvergenceError, RuntimeError)


def test_weights_are_refused_not_normalised():
    with pytest.raises(ValueError, match="sum to 1"):
        check_weights([0.5, 0.6], 2)
    with pytest.raises(ValueError, match="non-negative"):
        check_weights([1.5, -0.5], 2)
    with pytest.raises(ValueError, match="one weight per skill"):
        check_weights([1.0], 2)
    P, rewards = random_mdp(0, n_states=3, n_actions=2, n_tasks=2)
    with pytest.raises(ValueError):
        composition_bound(P, rewards, [1.0, 1.0], 0.9, 0.5)
    with pytest.raises(ValueError):
        soft_or(rewards, [1.0, 0.0], 0.5)


def test_cli_prints_table_and_writes_png(tmp_path, capsys):
    from compose.tabular.__main__ import FIGURE_NAME, main

    main(["--out", str(tmp_path), "--seeds", "1"])
    text = capsys.readouterr().out
    for needle in ("left+right", "left+up", "GPI", "DC", "Soft-OR", "stochastic (slip 0.1)"):
        assert needle in text
    png = tmp_path / FIGURE_NAME
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
