"""compose.study: statistics with known answers, a smoke study (local pool and Ray), resuming."""

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from compose import study as study_module
from compose.stats import aggregate, bootstrap_ci, iqm
from compose.study import Runner, TrialOptions, study
from skills.cli import seed_list

SMOKE = TrialOptions(steps=200, episodes=2, mc=False, quick_build=True)


def test_iqm_is_the_mean_of_the_middle_half_and_the_ci_covers_it():
    assert iqm([1, 2, 3, 4, 100]) == pytest.approx(3.0)  # one run cut from each end of five
    assert iqm([1, 2, 3, 4, 5, 6, 7, 100]) == pytest.approx(4.5)  # two cut from each end of eight
    assert iqm([0.5]) == 0.5
    lo, hi = bootstrap_ci([0.2, 0.4, 0.6, 0.8, 1.0])
    assert lo <= iqm([0.2, 0.4, 0.6, 0.8, 1.0]) <= hi and lo < hi
    assert bootstrap_ci([0.7, 0.7, 0.7]) == pytest.approx([0.7, 0.7])
    cell = aggregate([0.9, None, 0.8])
    assert cell["per_seed"] == [0.9, None, 0.8] and cell["iqm"] == pytest.approx(0.85)
    rng = np.random.default_rng(0)  # the interval narrows with more seeds
    few, many = rng.normal(size=4), rng.normal(size=64)
    assert np.diff(bootstrap_ci(many))[0] < np.diff(bootstrap_ci(few))[0]


def test_seed_lists_and_bad_specs():
    assert seed_list("3") == [0, 1, 2] and seed_list("0,4") == [0, 4] and seed_list("2-4") == [2, 3, 4]
    assert seed_list("0,1,3-5") == [0, 1, 3, 4, 5] and seed_list("7,2-3") == [7, 2, 3]
    for bad in ("5-3", "0,2-x", "1,,2", "0,1-3,2"):
        with pytest.raises(argparse.ArgumentTypeError):
            seed_list(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="seeds; one process trains at most"):
        seed_list("0,1-99999999")
    assert study_module.main(["reach+nothing", "--seeds", "1"]) == 2


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study")
    study(["reach+avoid"], [0, 1], out=out, trials=SMOKE, runner=Runner(workers=2))
    return out


def test_a_smoke_study_writes_the_documented_summary(smoke):
    result = json.loads((smoke / "study.json").read_text())
    summary = result["summary"]["reach+avoid"]
    for policy in ("composed", "joint", "reach", "avoid"):
        cell = summary[policy]["success"]
        assert set(cell) == {"iqm", "ci", "method", "per_seed", "seeds", "seeds_failed"} and len(cell["per_seed"]) == 2
        assert "hierarchical bootstrap over (seed, episode)" in cell["method"] and "only 2 seeds" in cell["method"]
        assert summary["deterministic"][policy]["success"]["per_seed"] != [None, None]
    assert set(summary["composed_over_joint"]) >= {"iqm", "ci"} and summary["seeds_failed"] == []
    collisions = summary["composed"]["collision"]
    assert len(collisions["per_seed"]) == 2 and "percentile bootstrap" in collisions["method"]
    assert all(0 <= c <= 1 for c in summary["avoid"]["collision"]["per_seed"])
    runs = [json.loads((smoke / "trials" / f"eval-reach+avoid-seed{s}.json").read_text()) for s in (0, 1)]
    first = [r["stochastic"]["composed"]["per_episode"]["seeds"][0] for r in runs]
    assert first[0] != first[1], "each seed is evaluated on its own episodes"
    assert result["failures"] == {} and result["curves"]["reach"]["env_steps"][-1] == 200
    assert (smoke / "study.md").read_text().startswith("# Study: reach+avoid")
    assert "collisions (stochastic)" in (smoke / "study.md").read_text()
    assert (smoke / "study_reach+avoid_success.png").stat().st_size > 0
    assert len(list((smoke / "trials").glob("*.json"))) == 8  # 3 trainings and 1 evaluation per seed


def test_an_interrupted_study_reruns_only_what_is_missing(smoke, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    (out / "trials").mkdir(parents=True)
    for record in (smoke / "trials").glob("*.json"):  # a study that stopped after everything but seed 1's evaluation
        if record.name != "eval-reach+avoid-seed1.json":
            (out / "trials" / record.name).write_text(record.read_text())
    (out / "invocations.json").write_text(json.dumps([{"finished": "2026-01-01T00:00:00+0000", "wall_time_s": 100.0}]))
    ran = []

    def no_training(*args):
        raise AssertionError("a finished training was run again")

    real_eval = study_module.eval_trial

    def counted_eval(spec, seed, paths, settings):
        ran.append(seed)
        return real_eval(spec, seed, paths, settings)

    monkeypatch.setattr(study_module, "train_trial", no_training)
    monkeypatch.setattr(study_module, "eval_trial", counted_eval)
    result = study(["reach+avoid"], [0, 1], out=out, library=str(smoke / "library"), trials=SMOKE, runner=Runner(workers=1))
    assert ran == [1] and result["failures"] == {}
    assert result["summary"]["reach+avoid"]["seeds_evaluated"] == [0, 1]
    # the study's cost is both invocations': the interrupted one's 100 s and this one's
    assert result["invocations"] == 2 and result["wall_time_total_s"] == pytest.approx(100.0 + result["wall_time_s"], abs=0.11)
    assert f"{result['wall_time_total_s']:.0f} s over the 2 invocations" in (out / "study.md").read_text()


@pytest.mark.parametrize("ledger", ['[{"finished": "x", "wall_time_s": -1}]', '{"wall_time_s": 5}', "[NaN]", "not json"])
def test_an_unreadable_invocation_ledger_is_named_kept_and_counting_restarts(smoke, tmp_path, ledger):
    out = tmp_path / "ledger"
    (out / "trials").mkdir(parents=True)
    for record in (smoke / "trials").glob("*.json"):  # every trial recorded: this invocation only aggregates
        (out / "trials" / record.name).write_text(record.read_text())
    (out / "invocations.json").write_text(ledger)
    with pytest.warns(UserWarning, match="invocation ledger .*invocations.json cannot be used"):
        result = study(["reach+avoid"], [0, 1], out=out, library=str(smoke / "library"), trials=SMOKE,
                       runner=Runner(workers=1))
    assert result["invocations"] == 1 and result["wall_time_total_s"] == result["wall_time_s"]
    kept = list(out.glob("invocations.json.unreadable-*"))
    assert len(kept) == 1 and kept[0].read_text() == ledger  # nothing lost
    assert len(json.loads((out / "invocations.json").read_text())) == 1


def test_a_study_composes_with_the_operator_it_is_given(smoke, tmp_path, monkeypatch):
    """``--operator gpi``: every seed's skills are composed with it (not average), its evaluations are their own trials
    beside average's, the bound is not claimed for it, and an unknown operator is refused before anything trains."""
    out = tmp_path / "gpi"
    (out / "trials").mkdir(parents=True)
    for record in (smoke / "trials").glob("*.json"):  # average's finished study in the same folder
        (out / "trials" / record.name).write_text(record.read_text())

    def no_training(*args):
        raise AssertionError("a finished training was run again")

    monkeypatch.setattr(study_module, "train_trial", no_training)
    result = study(["reach+avoid"], [0], out=out, library=str(smoke / "library"), trials=replace(SMOKE, operator="gpi"),
                   runner=Runner(workers=1))
    assert result["failures"] == {} and result["settings"]["operator"] == "gpi"
    assert (out / "trials" / "eval-reach+avoid-seed0-gpi.json").exists()
    for mode in ("stochastic", "deterministic"):
        report = json.loads((out / "runs" / f"reach+avoid-seed0-{mode}" / "report.json").read_text())
        assert report["operator"]["name"] == "gpi"
    markdown = (out / "study.md").read_text()
    assert "Composed with `gpi`" in markdown and "Bound: not checked" in markdown
    with pytest.raises(ValueError, match="valid operators: average, dc, gpi, or, priority"):
        study(["reach+avoid"], [0], out=tmp_path / "bad", trials=replace(SMOKE, operator="mean"))
    assert not (tmp_path / "bad" / "library").exists()
    with pytest.raises(SystemExit):  # argparse names the valid choices
        study_module.main(["reach+avoid", "--operator", "mean"])


def test_an_operator_setting_names_its_own_trials_and_is_checked_before_anything_trains(tmp_path):
    """``--operator dc --operator-setting target_update_interval=100``: the operator is made with it (an int), its
    evaluations are trials of their own (a record of ``dc`` with its defaults is not reused for it), and a setting
    the operator cannot take is refused before any training."""
    settings = study_module.Settings(library="lib", out="out", operator="dc",
                                     operator_settings=(("target_update_interval", 100.0),))
    assert settings.make_operator().target_update_interval == 100
    assert study_module.eval_key("puck-x+puck-y", 3, settings.operator_label) == \
        "eval-puck-x+puck-y-seed3-dc-target_update_interval100"
    assert study_module.eval_key("puck-x+puck-y", 3, replace(settings, operator_settings=()).operator_label) == \
        "eval-puck-x+puck-y-seed3-dc"
    with pytest.raises(ValueError, match="dc's hidden is not a number setting"):
        study(["reach+avoid"], [0], out=tmp_path / "bad",
              trials=replace(SMOKE, operator="dc", operator_settings=(("hidden", 64.0),)))
    assert not (tmp_path / "bad" / "library").exists()
    with pytest.raises(SystemExit):  # argparse says what a setting looks like
        study_module.main(["reach+avoid", "--operator", "dc", "--operator-setting", "hidden"])


def test_a_failed_trial_is_reported_and_the_others_finish(smoke, tmp_path, monkeypatch):
    def broken(spec, seed, paths, settings):
        raise RuntimeError(f"seed {seed} broke")

    monkeypatch.setattr(study_module, "eval_trial", broken)
    result = study(["reach+avoid"], [0], out=tmp_path, library=str(smoke / "library"), trials=SMOKE, runner=Runner(workers=1))
    assert result["failures"] == {"eval-reach+avoid-seed0": "RuntimeError: seed 0 broke"}
    assert "Failed trials" in (tmp_path / "study.md").read_text()


def test_the_same_study_runs_as_ray_tasks(smoke, tmp_path):
    ray = pytest.importorskip("ray")
    try:
        result = study(["reach+avoid"], [0], out=tmp_path, library=str(smoke / "library"), trials=SMOKE,
                       runner=Runner(ray_address=None))
    finally:
        ray.shutdown()
    assert result["failures"] == {}
    assert result["summary"]["reach+avoid"]["composed"]["success"]["per_seed"] == [
        json.loads((smoke / "study.json").read_text())["summary"]["reach+avoid"]["composed"]["success"]["per_seed"][0]]


def test_a_stacked_study_trains_each_tasks_seeds_together_and_gets_the_same_skills(smoke, tmp_path, monkeypatch):
    """``--stacked``: one trial per task trains its seeds in one process (skills.training.loop); each seed's skill equals
    the one the per-seed trials trained (same weights, same learning curve), and a rerun trains nothing."""
    import torch

    from skills.library import read_skill

    result = study(["reach+avoid"], [0, 1], out=tmp_path, trials=SMOKE, runner=Runner(workers=1, stacked=True))
    assert result["failures"] == {}
    records = {p.name for p in (tmp_path / "trials").glob("*.json")}
    assert {"train-reach-seeds0-1.json", "train-reach-seed0.json", "train-reach-seed1.json"} <= records
    ours, theirs = json.loads((tmp_path / "study.json").read_text()), json.loads((smoke / "study.json").read_text())
    assert ours["curves"] == theirs["curves"]
    for task in ("reach", "avoid", "reach+avoid"):
        for seed in (0, 1):
            a = read_skill(json.loads((tmp_path / "trials" / f"train-{task}-seed{seed}.json").read_text())["path"])[0]
            b = read_skill(json.loads((smoke / "trials" / f"train-{task}-seed{seed}.json").read_text())["path"])[0]
            for key, value in b.q.state_dict().items():
                torch.testing.assert_close(a.q.state_dict()[key], value, rtol=1e-5, atol=1e-6)

    def no_training(*args):
        raise AssertionError("a finished training was run again")

    monkeypatch.setattr(study_module, "train_seeds_trial", no_training)
    assert study(["reach+avoid"], [0, 1], out=tmp_path, trials=SMOKE, runner=Runner(workers=1, stacked=True))["failures"] == {}


def test_the_hierarchical_interval_covers_what_the_percentile_one_over_few_seeds_misses():
    """Simulated studies (true success 0.7, seeds differing by +-0.1, 100 episodes each): over 4 seeds the percentile
    bootstrap over per-seed values covers the truth less often than its nominal 95%; the hierarchical bootstrap over
    (seed, episode) covers it at least as often, and the failed seeds are counted, not dropped."""
    from compose.stats import hierarchical_ci

    rng = np.random.default_rng(0)
    covered = {"percentile": 0, "hierarchical": 0}
    trials = 120
    for _ in range(trials):
        rates = np.clip(0.7 + rng.normal(0, 0.1, 4), 0, 1)
        episodes = [rng.uniform(size=100) < r for r in rates]
        means = [e.mean() for e in episodes]
        lo, hi = bootstrap_ci(means, reps=400, seed=int(rng.integers(1 << 30)))
        covered["percentile"] += lo <= 0.7 <= hi
        _, (lo, hi) = hierarchical_ci(episodes, reps=400, seed=int(rng.integers(1 << 30)))
        covered["hierarchical"] += lo <= 0.7 <= hi
    assert covered["percentile"] / trials < 0.93
    assert covered["hierarchical"] >= covered["percentile"]
    cell = aggregate([0.5, None, 0.7], [np.ones(10) * 0.5, None, np.ones(10) * 0.7])
    assert cell["seeds_failed"] == [1] and cell["seeds"] == 2
    assert aggregate([0.5, None, 0.7], seeds=[3, 4, 5])["seeds_failed"] == [4], "failed seeds by number, not position"


def test_a_ratio_whose_denominator_is_zero_is_undefined_not_failed_and_its_bias_is_named():
    """The review: a seed whose joint skill never succeeded was listed as a failed seed, and replicates whose
    resampled denominator was 0 were dropped silently (the ratios left out are the largest: the interval leans low)."""
    composed = [np.r_[np.ones(2), np.zeros(98)] for _ in range(10)]  # 0.02 per seed
    joint = [np.r_[np.ones(1), np.zeros(99)] for _ in range(10)]  # 0.01 per seed: true ratio 2
    cell = aggregate([2.0] * 10, composed, joint)
    assert cell["iqm"] == 2.0 and cell["seeds_failed"] == []
    assert "replicates a seed's denominator resampled to 0 and that seed was left out: the interval leans low" in \
        cell["method"]
    never = [np.zeros(100)] + joint[1:]
    cell = aggregate([None] + [2.0] * 9, composed, never, seeds=list(range(10)), undefined=[True] + [False] * 9)
    assert cell["seeds_failed"] == [] and cell["seeds_undefined"] == [0] and cell["seeds"] == 9
    assert "seeds [0] left out: the ratio is undefined there" in cell["method"]
    tight = aggregate([0.5] * 10, [np.ones(100)] * 10, [np.full(100, 2.0)] * 10)
    assert "leans low" not in tight["method"] and "seeds_undefined" not in tight


def test_a_study_finishes_an_interrupted_training_from_its_checkpoint(tmp_path):
    """A seed whose training stopped (its run dead, its budget the study's) is finished from its checkpoint, stacked
    apart from the fresh seeds; a checkpoint whose run is alive is left to it."""
    import socket
    import subprocess
    import sys

    from library_helpers import edit_manifest

    from skills.training import Trainer

    settings = study_module.Settings(library=str(tmp_path / "lib"), out=str(tmp_path), steps=200, episodes=2, mc=False)
    sql, run = study_module.train_settings("reach", 0, settings)
    checkpoint = Trainer("reach", sql, run, out=settings.library).train().path  # stands for a run stopped at step 100
    training = {**json.loads((checkpoint / "manifest.json").read_text())["training"], "until_env_steps": 200}
    edit_manifest(checkpoint, status="training", env_steps=100, training=training,
                  owner={"host": socket.gethostname(), "pid": __import__("os").getpid()})
    assert study_module.find_interrupted("reach", 0, settings) is None  # its run (this process) is alive
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    edit_manifest(checkpoint, owner={"host": socket.gethostname(), "pid": dead})
    assert study_module.find_interrupted("reach", 0, settings) == (str(checkpoint), 100)
    assert study_module.find_interrupted("reach", 1, settings) is None
    records = study_module.train_seeds_trial("reach", [0, 1], settings)
    finished, fresh = (json.loads((Path(records[f"train-reach-seed{s}"]["path"]) / "manifest.json").read_text())
                       for s in (0, 1))
    assert (finished["status"], finished["env_steps"], finished["resumed_from"]) == ("complete", 200, str(checkpoint))
    assert finished["training"]["steps"] == 100  # the 100 steps left, not the budget again
    assert (fresh["status"], fresh["env_steps"], fresh["resumed_from"]) == ("complete", 200, None)
    versions = sorted(p.name for p in (tmp_path / "lib" / "reach").iterdir() if p.name.startswith("v"))
    assert versions == ["v1", "v2", "v3"]  # the checkpoint and one new version per seed: nothing trained twice


def test_the_study_carries_each_seeds_lower_side_against_d(smoke):
    """A seed's ``bound.mc.policy_gap`` (``compose.mc_check.policy_gap_side``) becomes study figures: ``D`` and the
    composed margin aggregated over seeds, and per seed whether the sampler holds and every control failed. The record
    reads back as a trial record (found resuming a 10-seed study: every seed's evaluation with ``D`` was refused and
    run again, its verdicts being true or false where only numbers were accepted). Each actor's margin is pooled over
    the seeds, the constituent named by its task: a control inside one seed's noise is resolved by the seeds' means."""
    from compose.mc_check import policy_gap_side
    from compose.trial_records import check_eval_record

    def row(composed, random, alone):
        return {"Q_w": 2.0, "C": 5.0, "D": 1.0, **{k: {"mean": 1.0 + m, "ci": [0.9 + m, 1.1 + m]} for k, m in (
            ("composed", composed), ("random", random), (f"LIB/reach/v{len(sides)} alone", alone))}}

    sides: list[dict] = []
    # seed 0: random below Q_w - D (fails, as it must); seed 1: random as good as the composition (passes). On both,
    # reach alone is 0.3 and 0.35 below on average but spread so widely over the pairs that each seed alone passes it
    sides.append(policy_gap_side([row(0.01 * k, -1.0, 0.25 * k - 0.3) for k in range(-3, 4)], None))
    sides.append(policy_gap_side([row(0.01 * k, 0.01 * k, 0.25 * k - 0.35) for k in range(-3, 4)], None))
    evaluated = {}
    for seed, side in zip((0, 1), sides, strict=True):
        record = json.loads((smoke / "trials" / f"eval-reach+avoid-seed{seed}.json").read_text())
        record["bound"] |= study_module.policy_gap_figures(side, {f"LIB/reach/v{seed}": "reach"})
        check_eval_record(json.loads(json.dumps(record)))  # reads back, so a resumed study does not evaluate it again
        evaluated[study_module.eval_key("reach+avoid", seed)] = record
    bound = study_module.summarise_spec("reach+avoid", [0, 1], evaluated)["bound"]
    assert bound["D_controls_failed_as_they_must"] == [False, False]  # reach alone passes on each seed alone
    assert bound["D_controls_failed_where_they_should"] == [False, False]  # no joint skill: every control should fail
    assert bound["lower_D_holds_composed"] == [True, True] and bound["D_mean"]["per_seed"] == [1.0, 1.0]
    assert bound["lower_D_margin_composed"]["per_seed"] == pytest.approx([0.0, 0.0], abs=1e-12)
    lines = study_module.policy_gap_lines(bound)
    assert "every control failed as it must: [False, False]" in lines[0]
    assert [side["pooled"][f"LIB/reach/v{seed} alone"]["holds"] for seed, side in enumerate(sides)] == [True, True]
    pooled = bound["lower_D_margin_by_actor"]
    assert set(pooled) == {"composed", "random", "reach alone"}
    assert (pooled["reach alone"]["mean"], pooled["reach alone"]["se"]) == pytest.approx((-0.325, 0.025))
    assert pooled["reach alone"]["holds"] is False  # -0.325 + 2 x 0.025 < 0: told apart over the seeds
    assert (pooled["random"]["mean"], pooled["random"]["se"], pooled["random"]["holds"]) == pytest.approx((-0.5, 0.5, True))
    assert "reach alone -0.325 +- 0.025 (fails, 2 seeds)" in lines[2]
    result = json.loads((smoke / "study.json").read_text())
    result["summary"]["reach+avoid"]["bound"] = bound
    assert "reach alone -0.325 +- 0.025 (fails, 2 seeds)" in study_module.markdown(result)  # study.md carries the line


def test_a_trial_keeps_no_collision_rate_where_the_task_reports_none():
    """The point mass has no obstacle: its trial rows keep no collision rate (the study's table shows a dash); the arm's
    keep theirs; rows from before the flag existed keep their rate."""
    import envs
    import skills
    from compose.study import kept_metrics
    from skills.evaluation.episodes import evaluate

    plane = evaluate(skills.load("plane-upper"), lambda: envs.make("plane-upper"), 2, soft=False)
    reach = evaluate(skills.load("reach"), lambda: envs.make("reach+avoid"), 2, soft=False)
    assert kept_metrics(plane)["collision_rate"] is None
    assert kept_metrics(reach)["collision_rate"] == reach["collision_rate"]
    assert kept_metrics({"collision_rate": 0.5})["collision_rate"] == 0.5
