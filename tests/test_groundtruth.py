"""compose.groundtruth: the exact solution of the plane tasks, and the checks made against it."""

import json
import math

import numpy as np
import pytest

import envs
from compose import groundtruth as gt

ALPHA = 0.1


@pytest.fixture(scope="module")
def solution():
    return gt.solve(ALPHA, gt.Grid(3))


def test_quadrature_actions_land_on_grid_states():
    """The grid's premise: every quadrature action moves a grid state exactly onto a grid state (walls included)."""
    grid = gt.Grid(3)
    pos, index = grid.positions, grid.next_index()
    moved = np.clip(pos[:, None, :] + envs.plane.STEP * grid.action_points[None], -1.0, 1.0)
    np.testing.assert_allclose(pos[index], moved, atol=1e-12)
    with pytest.raises(ValueError, match="odd"):
        gt.Grid(4)


def test_zero_reward_has_the_closed_form_value():
    """r = 0: V = alpha log(area of the action box) / (1 - gamma) = alpha log 4 / (1 - gamma) at every state."""
    moves = gt.Transitions(gt.Grid(3), lambda p: np.zeros(p.shape[:-1]))
    v = gt.soft_value_iteration(moves, ALPHA, 0.9)
    np.testing.assert_allclose(v, ALPHA * math.log(4.0) / 0.1, rtol=1e-7)


def test_the_boltzmann_policy_of_q_star_is_worth_v_star(solution):
    """Soft policy evaluation of pi* ∝ exp(Q*/alpha) gives V* back (two independent fixed points agree), and a
    worse policy (uniform) is worth less everywhere."""
    name = "plane-upper"
    moves = gt.Transitions(solution.grid, gt.task_reward(name))
    log_pi = gt.boltzmann_log_density(solution.q[name], ALPHA, solution.grid.log_weight)
    np.testing.assert_allclose(gt.soft_policy_value(moves, log_pi, ALPHA, solution.gamma), solution.v[name], atol=1e-6)
    uniform = gt.soft_policy_value(moves, np.full_like(log_pi, -math.log(4.0)), ALPHA, solution.gamma)
    assert np.all(uniform < solution.v[name])


def test_the_theorem_holds_exactly_and_its_controls_fail(solution):
    t = gt.exact_theorem(solution)
    assert t["upper_holds"] and t["lower_holds"]
    assert not t["control_C_zero_lower_holds"] and not t["control_C_half_lower_holds"]
    assert t["gap_mean"] > 0.5  # the two goals disagree: a real gap for C to cover
    assert 0 < t["pi_w_suboptimality_mean"] < t["uniform_suboptimality_mean"]


def test_the_policy_gap_is_exactly_the_boltzmann_policys_loss(solution):
    """With exact ``Q_i``, ``pi_w``'s own gap ``D`` (evaluated under ``pi_w``) makes ``Q_w - D`` equal ``Q^{pi_w}``
    (two independent fixed points agree), and ``Q*_w >= Q_w - D >= Q_w - C*``; ``C*`` in its place misses the
    identity by far more (the control)."""
    t = gt.exact_theorem(solution)
    assert t["D_identity_max_error"] < 1e-6
    assert t["D_lower_holds"] and t["D_at_most_C_star"]
    assert t["control_C_star_identity_max_error"] > 0.05
    assert 0 < t["D_mean"] < t["C_star_mean"]


def test_the_truth_converges_as_the_action_rule_is_refined(solution):
    """The midpoint rule's error falls like 1/actions^2: refining from 5 to 7 actions per axis moves V by less than
    half what refining from 3 to 5 did, and by under 1% of V's range on average."""
    three, five, seven = solution, gt.solve(ALPHA, gt.Grid(5)), gt.solve(ALPHA, gt.Grid(7))
    first, second = gt.refinement(three, five), gt.refinement(five, seven)
    biggest = [max(r["max_abs_change"].values()) for r in (first, second)]
    assert biggest[1] < 0.5 * biggest[0]
    assert max(second["mean_abs_change"].values()) < 0.01 * second["value_range"]


def test_q_star_off_the_grid_interpolates_the_grid(solution):
    """At grid states and quadrature actions ``q_star`` is exactly the grid's ``Q*``."""
    grid = solution.grid
    rows = np.arange(0, len(grid.positions), 97)
    obs = np.repeat(grid.positions[rows], len(grid.action_points), axis=0)
    act = np.tile(grid.action_points, (len(rows), 1))
    np.testing.assert_allclose(solution.q_star("plane-lower", obs, act), solution.q["plane-lower"][rows].ravel(),
                               atol=1e-9)


def test_monte_carlo_soft_values_match_the_truth_and_the_control_misses(solution):
    """compose.soft_returns on the real env against the exact value of the random policy; without the entropy
    credit the same rollouts miss by many standard errors."""
    check = gt.machinery_check(solution, list(range(10_000, 10_012)), per_start=12)
    assert check["passes"], check
    assert check["control_fails"], check


def test_cli_reports_the_exact_parts(tmp_path, capsys):
    out = tmp_path / "gt.json"
    gt.main(["--actions", "5", "--starts", "6", "--no-learned", "--json", str(out), "--figure", str(tmp_path / "gt.png")])
    text = capsys.readouterr().out
    assert "The theorem with exact Q_i" in text and "fails as it must: True" in text
    report = json.loads(out.read_text())
    assert report["theorem"]["lower_holds"] and "learned" not in report
    assert (tmp_path / "gt.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_help_and_bad_grid(capsys):
    with pytest.raises(SystemExit) as exc:
        gt.main(["--help"])
    assert exc.value.code == 0
    with pytest.raises(SystemExit) as exc:
        gt.main(["--actions", "4", "--no-learned"])
    assert exc.value.code != 0
    assert "odd" in capsys.readouterr().err


def test_the_shipped_plane_skills_and_their_bound_against_the_truth(tmp_path):
    """SQL's learned Q of each shipped plane skill within 5% of Q*'s range; the shipped composition's Q_w above
    Q*_w and its fitted C above the true gap Q_w - Q*_w on the composed policy's actions (C = 0 must fail); its fitted
    D (the shipped one, read from a copy of the library) within 1% of the value range of the exact pi_w's D."""
    from library_helpers import shipped_library

    import compose
    import skills
    from compose.build import build_policy_gap

    truth = gt.solve(ALPHA, gt.Grid(7))  # V within about 0.15 of the continuum's (refinement; docs/results.md)
    for name in (*gt.PARTS, gt.JOINT):
        err = gt.learned_q_error(skills.load(name), truth, name, n=500)
        assert err["uniform_actions"]["share_of_range"] < 0.05 and err["own_actions"]["share_of_range"] < 0.05, err
    composed = compose.load(list(gt.PARTS))
    built = composed.build(progress=False)  # the shipped cache: no training
    assert built.cached
    d_net, fit = build_policy_gap(composed, built, str(shipped_library(tmp_path / "lib", (".composed",))))
    assert fit["cached"]
    bound = gt.learned_bound(composed, built.correction, truth, n=500, policy_gap=d_net)
    assert bound["upper_holds"] >= 0.99 and bound["lower_holds"] >= 0.99, bound
    assert bound["D_error_mean_abs"] < 0.01 * np.ptp(truth.v[gt.JOINT]), bound  # C* in its place is off by 0.2
    assert bound["D_mean"] < bound["C_mean"]
    assert bound["lower_min_margin"] > -0.15, bound  # any miss is within the truth's own error
    assert bound["gap_mean"] > 0.5  # so C = 0 (the control) fails on most pairs
