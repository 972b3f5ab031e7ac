"""compose.run.selection: a setting chosen on validation episodes by a written rule, reported on other episodes."""

import json

import pytest

from compose import run as compose_run
from compose.bound import BoundConfig
from compose.run.selection import Candidates, SelectionRule, check_disjoint, selection_lines
from compose.sampling import SamplerConfig


def row(success: float, collisions: float, ret: float) -> dict:
    return {"success_rate": success, "collision_rate": collisions, "return_mean": ret}


def test_the_rule_prefers_safe_candidates_then_success_then_return():
    rule = SelectionRule(max_collisions=0.01)
    assert rule.choose([row(0.9, 0.05, -1), row(0.8, 0.0, -3), row(0.8, 0.0, -2)]) == 2  # the unsafe one is out
    assert rule.choose([row(0.9, 0.05, -1), row(0.95, 0.2, -1)]) == 1  # none is safe: all compete
    assert rule.choose([row(0.5, 0.0, -1), row(0.5, 0.0, -1)]) == 0  # a full tie: the earlier
    assert "validation" in rule.describe()


@pytest.mark.parametrize("text", ["epsilon", "epsilon=0.3", "=0.1,0.2", "epsilon=a,b"])
def test_bad_candidate_lists_are_refused(text):
    with pytest.raises(ValueError, match="SETTING=V1,V2"):
        Candidates.parse(text)


def test_validation_and_reported_episodes_must_not_overlap():
    test = compose_run.EvaluationConfig(episodes=100, seed=10_000)
    check_disjoint(compose_run.EvaluationConfig(episodes=50, seed=20_000), test)
    with pytest.raises(ValueError, match="overlap"):
        check_disjoint(compose_run.EvaluationConfig(episodes=50, seed=10_050), test)


def test_compose_run_selects_on_validation_and_reports_on_test_episodes(two_goal_library, tmp_path, monkeypatch):
    """``--select`` evaluates each candidate on the validation seeds only, and the report (on its own seeds) says
    which was chosen, by which rule, with the validation table."""
    small = compose_run.BuildConfig(sampler=SamplerConfig(updates=30), bound=BoundConfig(updates=10), progress=False)
    monkeypatch.setattr(compose_run.cli, "BuildConfig", lambda progress=True: small)
    out = tmp_path / "run"
    code = compose_run.main(["west+east", "--operator", "priority", "--order", "west,east", "--select",
                             "epsilon=0.1,5.0", "--episodes", "4", "--validation-episodes", "3", "--no-mc",
                             "--library", str(two_goal_library), "--out", str(out), "--no-progress"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    selection = report["selection"]
    assert selection["setting"] == "epsilon" and selection["chosen"] in (0.1, 5.0)
    assert [c["value"] for c in selection["candidates"]] == [0.1, 5.0]
    assert selection["validation"] == {"seed": 20_000, "episodes": 3, "mode": "stochastic"}
    assert report["operator"]["epsilon"] == selection["chosen"] and report["seed"] == 10_000
    assert "chosen on validation episodes" in (out / "report.md").read_text()
    assert any("(chosen)" in line for line in selection_lines(selection))
    assert 0 < selection["wall_time_s"] <= report["wall_time_s"], "the selection's cost is in the run's wall time"


def test_select_refuses_overlapping_seeds_and_several_operators(two_goal_library, capsys):
    args = ["west+east", "--select", "epsilon=0.1,0.6", "--library", str(two_goal_library), "--no-mc", "--no-progress"]
    assert compose_run.main([*args, "--operator", "priority", "--order", "west,east", "--seed", "20010"]) == 2
    assert "overlap" in capsys.readouterr().err
    assert compose_run.main([*args, "--operator", "all"]) == 2
    assert "one operator" in capsys.readouterr().err


def test_the_samplers_updates_are_selected_on_validation_and_the_chosen_build_is_reported(two_goal_library, tmp_path,
                                                                                          monkeypatch):
    """``--select sampler.updates=...`` builds one sampler per candidate, chooses on the validation seeds, and the
    reported run uses the chosen sampler (its build record says how many updates)."""
    small = compose_run.BuildConfig(bound=BoundConfig(updates=10, n_value_samples=8), progress=False)
    monkeypatch.setattr(compose_run.cli, "BuildConfig", lambda progress=True: small)
    out = tmp_path / "run"
    code = compose_run.main(["west+east", "--select", "sampler.updates=5,40", "--episodes", "4", "--validation-episodes",
                             "3", "--no-mc", "--library", str(two_goal_library), "--out", str(out), "--no-progress"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    selection = report["selection"]
    assert selection["setting"] == "sampler.updates" and [c["value"] for c in selection["candidates"]] == [5, 40]
    assert report["build"]["sampler"]["updates"] == selection["chosen"]
    with pytest.raises(ValueError, match="unknown sampler setting 'sampler.steps'; valid: sampler.updates"):
        Candidates.parse("sampler.steps=1,2")
    with pytest.raises(ValueError, match="whole numbers"):
        Candidates.parse("sampler.updates=10,2.5")


def test_an_operator_settings_candidates_are_typed_and_refused_before_anything_runs():
    """``--select target_update_interval=25,100`` reached the TD fit as floats (a TypeError in ``range``); an unknown
    setting or a non-number one (``hidden``) failed with a TypeError inside ``dataclasses.replace`` or the network."""
    from compose.operators import OperatorError, make_operator

    dc = make_operator("dc")
    ops = Candidates.parse("target_update_interval=25,100").operators(dc)
    assert [op.target_update_interval for op in ops] == [25, 100]
    assert all(type(op.target_update_interval) is int for op in ops) and ops[1].updates(0.95) == 4 * ops[0].updates(0.95)
    assert [op.lr for op in Candidates.parse("lr=0.001,0.0003").operators(dc)] == [0.001, 0.0003]
    with pytest.raises(ValueError, match="'target_update_interval' takes a whole number, got 100.5"):
        Candidates.parse("target_update_interval=25,100.5").operators(dc)
    with pytest.raises(ValueError, match="hidden is not a number setting; numbers: batch_size, lr, seed"):
        Candidates.parse("hidden=64,128").operators(dc)
    with pytest.raises(OperatorError, match="setting 'foo' applies to no operator, not 'dc'"):
        Candidates.parse("foo=1,2").operators(dc)
    with pytest.raises(OperatorError, match="setting 'epsilon' applies to operator 'priority' only, not 'dc'"):
        make_operator(dc, epsilon=0.3)  # an operator given as itself is checked like one given by name
    with pytest.raises(OperatorError, match="setting 'epslion' applies to no operator, not 'priority'. Did you mean "
                                            "'epsilon'\\? priority's settings: .*epsilon"):
        make_operator("priority", epslion=0.3)  # a misspelling: the valid settings listed


def test_compose_run_sets_one_operator_setting_typed_and_refuses_what_it_cannot_set():
    """``--operator dc --operator-setting target_update_interval=100`` makes that operator (an int where the field is
    one); a setting for ``all``, a malformed one and a non-number one are refused with what was expected."""
    from compose.run.cli import build_parser, operators_asked

    args = build_parser().parse_args(["puck-x+puck-y", "--operator", "dc", "--operator-setting", "target_update_interval=100",
                                      "--operator-setting", "lr=3e-4"])
    (dc,) = operators_asked(args)
    assert (dc.name, dc.target_update_interval, dc.lr) == ("dc", 100, 3e-4) and type(dc.target_update_interval) is int
    args = build_parser().parse_args(["puck-x+puck-y", "--operator", "all", "--operator-setting", "lr=0.1"])
    with pytest.raises(ValueError, match="give --operator NAME, not all"):
        operators_asked(args)
    args = build_parser().parse_args(["puck-x+puck-y", "--operator", "dc", "--operator-setting", "hidden=64"])
    with pytest.raises(ValueError, match="dc's hidden is not a number setting"):
        operators_asked(args)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["puck-x+puck-y", "--operator-setting", "lr"])
