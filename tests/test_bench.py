"""Benchmarks run for a moment, so they cannot rot (no timing assertions)."""

import json
import math

import numpy as np
import pytest
import torch

from bench import env_throughput


def test_env_throughput_smoke(tmp_path):
    out = tmp_path / "env.json"
    result = env_throughput.main(["--steps", "60", "--repeats", "1", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["env_ratio"] == result["env_ratio"] > 0
    for key in ("reach_steps_per_s", "fetchreach_steps_per_s", "pusher_steps_per_s", "multigoal_steps_per_s"):
        assert saved[key]["median"] > 0
    assert saved["machine"]["cpus"] >= 1


def test_multigoal_modes_smoke(tmp_path, capsys):
    """``bench.multigoal_modes`` (behind docs/skills.md's multigoal table) runs end to end on a tiny budget."""
    from bench import multigoal_modes

    out = tmp_path / "modes.json"
    assert multigoal_modes.main(["--steps", "200", "--variants", "shipped", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["variant"] == "shipped" and sum(row["goals"]) <= 100 and 0.0 <= row["success"] <= 1.0
    assert multigoal_modes.main(["--variants", "nope"]) == 2 and "valid: shipped" in capsys.readouterr().err


def test_first_success_finds_the_first_evaluation_at_the_bar():
    from bench.throughput import first_success

    curve = [{"train_s": 1.0, "success_rate": 0.5}, {"train_s": 2.0, "success_rate": 0.95},
             {"train_s": 3.0, "success_rate": 1.0}]
    assert first_success(curve)["train_s"] == 2.0
    assert first_success(curve[:1]) is None


def test_throughput_smoke(tmp_path, device, monkeypatch):
    pytest.importorskip("stable_baselines3")
    import tempfile

    from bench import throughput

    system_tmp = tmp_path / "system_tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))  # where SB3's default logger writes (torch caches here too)
    monkeypatch.delenv("SB3_LOGDIR", raising=False)

    out, png = tmp_path / "t.json", tmp_path / "t.png"
    result = throughput.main(["--quick", "--device", device, "--json", str(out), "--plot", str(png), "--stacked-seeds", "2"])
    saved = json.loads(out.read_text())
    assert saved["config"]["device"] == device and saved["complete"] is True
    for key in ("sql_steps_per_s", "sac_steps_per_s", "ratio", "flop_utilization", "env_ratio",
                "sql_time_to_95", "sac_time_to_95"):
        assert key in saved
    assert saved["sql_steps_per_s"]["median"] > 0 and saved["sac_steps_per_s"]["median"] > 0
    assert saved["ratio"] == result["ratio"] > 0
    assert 0 < saved["flop_utilization"] and saved["sql_flops_per_update"] > 1e6
    assert saved["time_to_95"]["sql"][0]["curve"] and saved["time_to_95"]["sac"][0]["curve"]
    assert png.stat().st_size > 0
    assert saved["multi_seed"]["seeds"] == 2 and saved["multi_seed"]["speedup"] > 0
    assert not list(system_tmp.glob("SB3-*")), "SAC's logger left a folder in the system temp dir"


def test_multi_seed_benchmark_smoke(tmp_path, device):
    """The stacked-seeds section alone (it needs no Stable-Baselines3): every figure is there and positive."""
    from dataclasses import replace

    from bench.throughput import multi_seed_rates
    from skills.training.defaults import sql_config

    sql = replace(sql_config("reach", "fetch-arm"), warmup_steps=100)
    result = multi_seed_rates(sql, 2, steps=10, repeats=1, device=device, library=str(tmp_path), updates=3,
                              matmul_peak=1e9)
    for key in ("aggregate_steps_per_s", "single_steps_per_s"):
        assert result[key]["median"] > 0
    assert result["speedup"] > 0 and result["flop_utilization"] > 0 and result["stacked_flops_per_update"] > 2e6


def test_throughput_refuses_cuda_without_a_gpu():
    import torch

    from bench import throughput

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit):
        throughput.main(["--device", "cuda", "--quick"])


def test_update_profile_smoke(tmp_path):
    from bench import update_profile

    result = update_profile.main(["--buffer", "300", "--updates", "3", "--repeats", "1", "--warmup", "3",
                                  "--json", str(tmp_path / "u.json")])
    flops = result["flops_per_update"]
    assert set(result["ms_per_update"]) == set(update_profile.VARIANTS)
    # splitting the first layer removes the [s, a] concatenation's FLOPs; the cache removes most target FLOPs
    assert flops["reference"] > flops["+ split first layer"] == flops["+ fused Adam"] > flops["+ target cache"]


def test_device_profile_smoke(tmp_path, device):
    from bench import device_profile

    out = tmp_path / "profile.json"
    result = device_profile.main(["--device", device, "--buffer", "300", "--updates", "3", "--repeats", "1",
                                  "--warmup", "2", "--profiled", "2", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["device"] == result["device"]
    assert saved["update_with_batch_ms"]["median"] > 0 and saved["aten_ops_per_update"] > 100
    assert saved["top_ops"][0]["calls_per_update"] > 0
    assert "aten::" in out.with_suffix(".txt").read_text()
    if device == "cuda":
        assert saved["kernels_per_update"] > 10 and saved["kernel_ms_per_update"] > 0
        assert 0 < saved["device_busy_fraction"]


def test_throughput_keeps_the_measured_sections_when_interrupted(tmp_path, monkeypatch):
    pytest.importorskip("stable_baselines3")
    from bench import throughput

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(throughput, "time_to_success", interrupted)
    out = tmp_path / "t.json"
    with pytest.raises(KeyboardInterrupt):
        throughput.main(["--quick", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["complete"] is False and saved["sql_time_to_95"] is None
    assert saved["sql_steps_per_s"]["median"] > 0 and saved["env_ratio"] > 0
    assert not list(tmp_path.glob("*.tmp"))


def synthetic_run(kind: str, seed: int, returns: list[float], det: list[float]) -> dict:
    return {"kind": kind, "seed": seed, "wall_time_s": 1.0, "history": [
        {"env_steps": 1000 * i, "return_mean": r, "return_std": 1.0, "det_return_mean": d} for i, (r, d) in
        enumerate(zip(returns, det, strict=False))]}


def test_adaptation_summary_finds_steps_to_95_percent_and_the_dip():
    from bench.adaptation import summarise

    joint = synthetic_run("joint", 0, [-20, -15, -10, -5, -2, -1, -1, -1], [-20, -10, -2, -1, -1, -1, -1, -1])
    adapted = synthetic_run("adapted", 0, [-4, -5, -3, -1.5], [-1, -1, -1, -1])
    summary = summarise([joint, adapted], eval_episodes=25)
    rows = {r["mode"]: r for r in summary["per_seed"]}
    stochastic = rows["stochastic"]
    assert stochastic["threshold"] == pytest.approx(-20 + 0.95 * 19)  # -1.95
    assert stochastic["joint_steps"] == 5000 and stochastic["adapted_steps"] == 3000  # -1.5 is the first >= -1.95
    assert stochastic["ratio"] == pytest.approx(0.6) and summary["modes"]["stochastic"]["goal_met"] is False
    assert stochastic["dip"] == pytest.approx(1.0) and stochastic["eval_se"] == pytest.approx(0.2)
    assert stochastic["dip_beyond_noise"] is True
    assert rows["deterministic"]["adapted_steps"] == 0 and rows["deterministic"]["joint_steps"] == 3000
    assert summary["modes"]["deterministic"]["goal_met"] is True


def test_adaptation_replots_an_earlier_run(tmp_path, capsys):
    from bench import adaptation

    runs = [synthetic_run("joint", 0, [-20, -10, -2, -1, -1], [-9, -5, -1, -1, -1]),
            synthetic_run("adapted", 0, [-3, -2, -1, -1], [-1, -1, -1, -1])]
    saved = tmp_path / "a.json"
    saved.write_text(json.dumps({"settings": {"spec": "reach+avoid", "eval_episodes": 4}, "runs": runs}))
    assert adaptation.main(["--from-json", str(saved), "--plot", str(tmp_path / "a.png")]) == 0
    assert (tmp_path / "a.png").stat().st_size > 0 and "steps to 95%" in capsys.readouterr().out


def test_device_profile_of_stacked_seeds_smoke(tmp_path, device):
    from bench import device_profile

    result = device_profile.main(["--device", device, "--buffer", "300", "--updates", "3", "--repeats", "1",
                                  "--warmup", "2", "--profiled", "2", "--stacked-seeds", "3"])
    assert result["stacked_seeds"] == 3 and result["profiled_update"] == "3 seeds stacked"
    assert result["aggregate_updates_per_s"] > 0 and result["single_updates_per_s"] > 0 and result["speedup"] > 0
    if device == "cuda":
        assert 0 < result["device_busy_fraction"]


def test_the_evaluation_benchmark_runs_and_finds_the_same_episodes(tmp_path):
    """``bench.evaluation --quick``: the profile's sections, every side of each comparison (lockstep with and without
    step threads giving the same numbers exactly), and twin episodes that do not part (to float rounding)."""
    from bench import evaluation

    result = evaluation.main(["--quick", "--json", str(tmp_path / "evaluation.json")])
    assert set(result) == {"profile", "compose_run", "skills_evaluate", "twins"}
    assert result["profile"]["kinds_s"]["env steps"] > 0 and result["profile"]["calls"]["policy calls (act)"] > 0
    for key in ("compose_run", "skills_evaluate"):
        assert set(result[key]["wall_s"]) == set(evaluation.MODES)
        one, lock, threads = (result[key]["numbers"][m] for m in evaluation.MODES)
        flat = one.get("composed", one)
        assert flat["success_rate"] == (lock.get("composed", lock))["success_rate"]
        assert lock == threads  # threads step the same episodes, bit for bit
    assert result["twins"]["success_differs"] == 0 and result["twins"]["largest_action_gap"] < 1e-3
    assert (tmp_path / "evaluation.json").exists()


def test_the_step_threads_benchmark_finds_the_same_episodes(tmp_path):
    """``bench.step_threads --quick``: a MuJoCo arm and the point mass, one thread against two, identical episodes."""
    from bench import step_threads

    for processes in (1, 2):  # 2: the same comparison in two forked processes at once, as study workers run
        result = step_threads.main(["--quick", "--processes", str(processes), "--json", str(tmp_path / "threads.json")])
        assert set(result) == {"reach+avoid", "plane-upper+plane-lower"}
        for r in result.values():
            assert r["identical"] and r["episodes"] == 4 and r["processes"] == processes
            assert r["speedup"] == round(min(r["wall_s"]["one thread"]) / min(r["wall_s"]["two threads"]), 2)
        assert json.loads((tmp_path / "threads.json").read_text()) == result
    for bad in (["--episodes", "0"], ["--processes", "0"]):
        with pytest.raises(SystemExit):
            step_threads.main(bad)


def test_a_failing_process_fails_the_concurrent_step_threads_run_at_once(monkeypatch, tmp_path):
    """One of two processes fails at its start (the first to claim a marker file), the other waits at the barrier: the
    run raises with the first one's error at once instead of waiting for it."""
    import os
    import time

    from bench import step_threads

    def failing(spec, episodes, repeats, together=lambda: None):
        if spec == "fails":
            try:
                os.close(os.open(tmp_path / "first", os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                together()  # the barrier, broken by the other process
            else:
                raise FileNotFoundError("no skill named 'fails'")
        together()
        return {1: [0.0], 2: [0.0]}, {1: [], 2: []}

    monkeypatch.setattr(step_threads, "timed_sides", failing)
    monkeypatch.setattr(step_threads, "BARRIER_TIMEOUT_S", 120)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="a benchmark process failed"):
        step_threads.concurrent_sides("fails", 1, 1, 2)
    assert time.monotonic() - start < 60
    assert step_threads.concurrent_sides("works", 1, 1, 2) == ({1: [0.0], 2: [0.0]}, {1: [], 2: []})


def test_c_tightness_compares_c_with_each_stand_in_on_the_composed_pairs(tmp_path):
    """With the joint skill passed as the adapted one, both rows agree exactly; the gap is Q_w - Q_standin."""
    import numpy as np
    from library_helpers import shipped_library

    from bench import c_tightness

    library = shipped_library(tmp_path / "lib", ("reach", "avoid", "reach+avoid", ".composed"))
    out = tmp_path / "c.json"
    assert c_tightness.main(["reach+avoid", "--adapted", str(library / "reach+avoid" / "v1"), "--library", str(library),
                             "--episodes", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    adapted, joint = result["standins"]["adapted"], result["standins"]["joint"]
    assert result["pairs"] > 0 and adapted["gap_mean"] == joint["gap_mean"]
    assert adapted["C_mean"] > 0 and 0 <= joint["lower_holds"] <= 1 and 0 <= joint["upper_holds"] <= 1
    assert joint["C_over_gap"] == pytest.approx(joint["C_mean"] / joint["gap_mean"])
    # gaps -0.5 (upper side fails) and 1.0 (C = 0.5 below it: lower side fails)
    small = c_tightness.tightness(np.array([1.0, 2.0]), np.array([0.5, 0.5]), np.array([1.5, 1.0]))
    assert small.pop("gap_p05_p95") == pytest.approx([-0.425, 0.925])
    assert small == pytest.approx({"gap_mean": 0.25, "gap_median": 0.25, "C_mean": 0.5, "C_over_gap": 2.0,
                                   "upper_holds": 0.5, "lower_holds": 0.5, "covered_within_2x": 0.0})


def test_constituent_shift_splits_q_w_minus_q_joint_and_credits_a_constituents_error_to_it(tmp_path):
    """``bench.constituent_shift --quick`` on the shipped reach+avoid: the three parts add up to ``Q_w - Q_joint`` and
    each shift is the difference of its two errors. Then ``avoid``'s Q is raised by 1 everywhere after the composition
    was built (so ``Q_w``, the composed policy and its pairs stay the same): a constant moves neither the sampler nor the
    Boltzmann policy nor their entropy credits, so ``avoid``'s errors, and its exact policy's, rise by exactly 1 on both
    sets of pairs, its shift does not move, and ``reach``'s record does not change. Swapping ``Q - G`` for ``G - Q``, or
    scoring a constituent with another's Q, fails this."""
    from library_helpers import shipped_library

    import compose
    import skills
    from bench import constituent_shift

    library = shipped_library(tmp_path / "lib", ("reach", "avoid", "reach+avoid", ".composed"))
    out = tmp_path / "shift.json"
    assert constituent_shift.main(["reach+avoid", "--library", str(library), "--quick", "--max-step", "1", "--json",
                                   str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["steps_below"] == 1  # every pair at a reset state
    split = result["split"]
    assert split["constituents_error"]["mean"] + split["composition_gap"]["mean"] - split["joint_error"]["mean"] == \
        pytest.approx(result["Q_w_minus_Q_joint"]["mean"], abs=1e-6)
    for record in result["constituents"].values():
        shift = record["error_on_composed_pairs"]["mean"] - record["error_on_own_pairs"]["mean"]
        assert record["shift"]["mean"] == pytest.approx(shift)

    setup = constituent_shift.ShiftSetup(pairs=3, rollouts=2, entropy_samples=8, tail=2.0, exact_pairs=2, exact_steps=5,
                                         value_samples=64)

    def run(bump: float) -> dict:
        torch.manual_seed(setup.seed)
        composed = compose.load("reach+avoid", library=str(library), seed=setup.seed)
        composed.build(progress=False)
        if bump:
            composed.parts[1].agent.q.register_forward_hook(lambda module, inputs, output: output + bump)
        return constituent_shift.measure_loaded(composed, skills.load("reach+avoid", library=str(library)), setup)

    plain, raised = run(0.0), run(1.0)
    for key in ("error_on_own_pairs", "error_on_composed_pairs"):
        assert raised["constituents"]["avoid"][key]["mean"] == pytest.approx(plain["constituents"]["avoid"][key]["mean"] + 1,
                                                                            abs=1e-4)
    for key in ("exact_on_own_pairs", "exact_on_composed_pairs"):
        assert raised["constituents"]["avoid"][key]["error"]["mean"] == pytest.approx(
            plain["constituents"]["avoid"][key]["error"]["mean"] + 1, abs=1e-3)
    assert raised["constituents"]["avoid"]["shift"]["mean"] == pytest.approx(plain["constituents"]["avoid"]["shift"]["mean"],
                                                                             abs=1e-4)
    assert raised["constituents"]["reach"] == plain["constituents"]["reach"]


@pytest.mark.parametrize("argv", [["--pairs", "1"], ["--rollouts", "0"], ["--exact-pairs", "-1"],
                                  ["--pairs", "4", "--exact-pairs", "5"], ["--seed", "-1"]])
def test_constituent_shift_refuses_bad_arguments_before_loading_anything(argv, capsys):
    from bench import constituent_shift

    with pytest.raises(SystemExit):
        constituent_shift.main(["reach+avoid", *argv])
    assert "must be" in capsys.readouterr().err


def test_place_failures_splits_the_success_test_into_parts_that_give_it_back(tmp_path):
    """``bench.place_failures`` on the shipped place skills: the three parts of ``placed`` and ``no_collision``,
    recomputed from the last step, equal the env's own success on every episode, for both policies."""
    from bench import place_failures

    assert place_failures.main(["--episodes", "2", "--json", str(tmp_path / "pf.json")]) == 0
    result = json.loads((tmp_path / "pf.json").read_text())
    for policy in ("composed", "joint"):
        row = result[policy]
        assert row["episodes"] == 2 and row["parts_give_the_env_success"] is True
        assert row["success"] <= min(row["xy_within"], row["height_within"], row["speed_below"])
    assert json.loads((tmp_path / "pf.json").read_text())["thresholds"]["rest_speed_m_s"] == 0.1


def test_pusher_sweep_trains_each_variant_with_its_change_and_reports_the_gap_goal(tmp_path):
    """``bench.pusher_sweep`` on a tiny budget: each variant's skill carries its change (the discount before and
    after the sweep), every seed is reported with its convergence goal recomputed from its own numbers, and an
    unknown variant is refused with the valid ones."""
    from bench import pusher_sweep

    out = tmp_path / "sweep.json"
    assert pusher_sweep.main(["--seeds", "1", "--steps", "1100", "--variants", "current,gamma-0.99", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["variant"] for r in result] == ["current", "gamma-0.99"]
    assert [r["seeds"][0]["gamma"] for r in result] == [0.95, 0.99]
    for row in (r["seeds"][0] for r in result):
        assert row["seed"] == 0 and 0.0 <= row["success_stochastic"] <= 1.0
        tolerance = 0.05 * abs(row["V0"]) + 0.05 + 3 * row["gap_se"]
        assert row["goal"]["soft_return_gap"] == (abs(row["gap"]) <= tolerance)
    assert json.loads(out.read_text())[1]["changes"] == {"gamma": 0.99}
    with pytest.raises(SystemExit):
        pusher_sweep.main(["--variants", "gamma-0.9"])


def test_residual_sources_splits_the_training_estimators_share_from_the_rest(tmp_path):
    """On the shipped clear skill: one record per sample count; the estimator's share is the 32- minus the 8192-sample
    mean; clear's values reach its ceiling, so some V(s') lie above V_max."""
    from pathlib import Path

    from bench import residuals

    out = tmp_path / "r.json"
    trained = str(Path(__file__).resolve().parents[1] / "trained")
    assert residuals.main(["clear", "--library", trained, "--states", "300", "--json", str(out)]) == 0
    result = json.loads(out.read_text())["clear"]
    assert list(result["residual_mean"]) == ["32", "256", "1024", "8192"]
    assert result["estimator_share"] == pytest.approx(result["residual_mean"]["32"] - result["residual_mean"]["8192"])
    assert result["goal"] == pytest.approx(0.001) and result["states"] == 300
    assert 0 < result["above_v_max"] < 1 and result["clip_share"] < 0


def test_policy_gap_scores_both_lower_sides_on_the_same_rollouts(tmp_path):
    """``bench.policy_gap --quick`` on the shipped reach+avoid: D fitted beside the cached C*, one set of Monte Carlo
    soft returns scored with each, every actor and control in both tables."""
    from library_helpers import shipped_library

    from bench import policy_gap

    library = shipped_library(tmp_path / "lib", ("reach", "avoid", "reach+avoid", ".composed"))
    out = tmp_path / "gap.json"
    assert policy_gap.main(["reach+avoid", "--library", str(library), "--pairs", "2", "--quick", "--fit-updates", "50",
                            "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["pairs"] == 2 and result["fit_D"]["updates"] == 50 and result["C_star_mean"] > 0
    rows = result["per_pair"]
    assert len(rows) == 2 and all({"C", "D", "Q_w", "composed", "random"} <= set(r) for r in rows)
    eps = result["constituent_residuals_on_composed"]
    assert eps["transitions"] > 0 and set(eps["per_constituent"]) == {"reach", "avoid"}
    assert eps["eps_w_mean"] == pytest.approx(sum(0.5 * r["mean"] for r in eps["per_constituent"].values()))
    for side in ("with_C_star", "with_D"):
        table = result[side]
        assert set(table["lower_holds"]) == {"composed", "joint", "random", "reach alone", "avoid alone"}
        assert [c["check"] for c in table["controls"]][:2] == ["upper side", "lower side"]
        assert table["exact_pi_w"] is not None
    # the two tables differ only in the correction they subtract from Q_w
    for side, key in (("with_C_star", "C"), ("with_D", "D")):
        for name, share in result[side]["lower_holds"].items():
            assert share == np.mean([r[name]["ci"][1] >= r["Q_w"] - r[key] for r in rows]), (side, name)
            margin = [r[name]["mean"] - r["Q_w"] + r[key] for r in rows]
            assert result[side]["pooled"][name]["margin_mean"] == pytest.approx(np.mean(margin))


def test_gap_paths_telescopes_the_exact_policys_shortfall_into_terms_that_close(tmp_path):
    """``bench.gap_paths --quick`` on the shipped reach+avoid: per pair, ``Q_w - G`` of the exact ``pi_w`` equals the
    residuals, ``D`` along the path, the two ``V_w`` estimators' difference and the tail (to float error); the
    constituents' residuals add up to the composed one; the fitted ``D`` is compared with the path's."""
    from library_helpers import shipped_library

    from bench import gap_paths

    library = shipped_library(tmp_path / "lib", ("reach", "avoid", "reach+avoid", ".composed"))
    out = tmp_path / "paths.json"
    assert gap_paths.main(["reach+avoid", "--library", str(library), "--pairs", "2", "--rollouts", "2", "--quick",
                           "--value-samples", "64", "--refit-on-paths", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["pairs"] == 2 and result["unexplained_max"] < 1e-6
    assert result["refit_on_paths"]["updates"] == 50 and result["refit_on_paths"]["transitions"] == 2 * 2 * 74
    for row in result["per_pair"]:
        parts = row["R_path"] + row["D_path"] + row["V_diff"] + row["tail"]
        assert row["Q_w_minus_G"] == pytest.approx(parts, abs=1e-6)
        assert row["R_path"] == pytest.approx(0.5 * (row["R_path reach"] + row["R_path avoid"]), abs=1e-5)
        assert row["D_path"] > 0 and row["D_fit_minus_D_path"] == pytest.approx(row["D_fit"] - row["D_path"])
        assert row["margin_with_D_fit"] == pytest.approx(row["D_fit"] - row["Q_w_minus_G"])
        assert row["D_refit_minus_D_path"] == pytest.approx(row["D_refit_on_paths"] - row["D_path"])
    assert result["pooled"]["D_path"]["mean"] == pytest.approx(np.mean([r["D_path"] for r in result["per_pair"]]))


def test_gap_paths_scores_a_rollout_as_the_monte_carlo_check_does(tmp_path):
    """The ``G`` the terms are taken from is the check's soft return (``compose.soft_returns.soft_returns``) of the same
    rollouts, for an actor whose credit is known exactly (the uniform one); a first step's credit is never counted."""
    from library_helpers import shipped_library

    import envs
    from bench.gap_paths import path_terms
    from compose import load
    from compose.mc_check import MCBoundConfig, pair_starts
    from compose.soft_returns import actor_returns, soft_returns, uniform_actor

    library = shipped_library(tmp_path / "lib", ("reach", "avoid", ".composed"))
    composition = load("reach+avoid", library=library, seed=0, operator="average")
    actor = uniform_actor(composition.act_dim, composition.alpha)
    built = composition.build(progress=False)
    from compose.policy import ComposedPolicy

    policy = ComposedPolicy(composition, built.sampler, 1, q_fn=built.q)
    make_env = lambda: envs.make_task_env(composition.task)  # noqa: E731
    starts = pair_starts(policy, make_env, MCBoundConfig(pairs=2, seed=3), composition.task.family.horizon)
    g, rollouts = actor_returns(actor, make_env, [s for s, _, _ in starts], 2, 12, composition.gamma, key=5)
    terms = path_terms(composition, actor.credit, rollouts, composition.gamma, 32, 0)
    assert np.allclose(terms["G"], soft_returns(actor, rollouts, composition.gamma))
    assert np.allclose(terms["G"], g.ravel())
    explained = terms["R_path"] + terms["D_path"] + terms["V_diff"] + terms["tail"]
    assert np.allclose(terms["Q_w_minus_G"], explained, atol=1e-6)


def test_sampler_entropy_splits_the_samplers_shortfall(tmp_path):
    """``bench.sampler_entropy --quick`` on the shipped reach+avoid: the exact pi_w's rollouts scored with its known
    entropy and with the nearest-neighbour estimate (the difference is that estimate's error alone), the sampler's with
    the estimate and by the change of variables, and the per-state table; the paired differences are per pair."""
    from library_helpers import shipped_library

    from bench import sampler_entropy

    library = shipped_library(tmp_path / "lib", ("reach", "avoid", "reach+avoid", ".composed"))
    out = tmp_path / "entropy.json"
    assert sampler_entropy.main(["reach+avoid", "--library", str(library), "--quick", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["D"]["cached"] and result["pairs"] == 2
    exact, sampler = result["exact_pi_w"], result["composed_sampler"]
    base, estimated = exact["margin_credited_V_w_minus_Q_w"], exact["margin_credited_16_draw_estimate"]
    assert estimated["margin_mean"] - base["margin_mean"] == pytest.approx(exact["estimator_share_of_margin"], abs=1e-9)
    for m in ("16", "32"):
        row = exact["entropy_per_state_nats"][m]
        assert row["error"]["mean"] == pytest.approx(row["estimate"]["mean"] - row["exact"]["mean"], abs=1e-9)
        srow = sampler["entropy_per_state_nats"][m]
        assert 0 <= srow["folded_share"] <= 1
        assert srow["kl_to_pi_w_by_change_of_variables"]["mean"] == pytest.approx(
            srow["cross_entropy_to_pi_w"]["mean"] - srow["change_of_variables"]["mean"], abs=1e-9)
    paired = result["sampler_minus_exact_pi_w"]["change_of_variables"]
    diff = np.subtract(sampler["margin_credited_change_of_variables"]["per_pair"], base["per_pair"])
    assert paired["mean"] == pytest.approx(diff.mean())


def test_sampler_particles_compares_each_particle_count_on_the_same_states(tmp_path):
    """``bench.sampler_particles --quick``: one fresh sampler per K on the shipped reach+avoid's Q_w, its KL to pi_w at
    the same stored states (cross-entropy minus the change-of-variables entropy), paired with the first K's. A sampler
    of 50 updates is far from pi_w, so its KL is clearly positive, and its actions lie in [-1, 1]^d, so its entropy is
    at most d log 2 (the uniform one's): dropping the tanh's Jacobian from the change of variables fails that."""
    from library_helpers import shipped_library

    from bench import sampler_particles

    library = shipped_library(tmp_path / "lib", ("reach", "avoid", "reach+avoid"))
    out = tmp_path / "particles.json"
    assert sampler_particles.main(["reach+avoid", "--library", str(library), "--particles", "4,8", "--quick",
                                   "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = result["by_particles"]
    assert [r["particles"] for r in rows] == [4, 8] and result["states"] == 8 and result["updates"] == 50
    assert rows[0]["kl_minus_K4"] == {"mean": 0.0, "se": 0.0}
    for row in rows:
        assert row["kl_to_pi_w"]["mean"] > 0.5 and 0 <= row["folded_share"] <= 1 and row["build_s"] >= 0
        assert -10 < row["entropy"]["mean"] <= result["act_dim"] * np.log(2)


@pytest.mark.parametrize("argv", [["--particles", "16"], ["--particles", "16,x"], ["--particles", "1,16"],
                                  ["--particles", "16,16"], ["--updates", "0"], ["--states", "1"]])
def test_sampler_particles_refuses_bad_arguments_before_loading_anything(argv, capsys):
    from bench import sampler_particles

    with pytest.raises(SystemExit):
        sampler_particles.main(["reach+avoid", *argv])
    err = capsys.readouterr().err
    assert "particle counts" in err or "give two or more" in err or "must be >=" in err


@pytest.mark.parametrize("argv", [["--pairs", "1"], ["--exact-pairs", "-1"],
                                  ["--fit-updates", "0"], ["--sampler-updates", "0"], ["--seed", "-1"]])
def test_policy_gap_refuses_bad_arguments_before_loading_anything(argv, capsys):
    from bench import policy_gap

    with pytest.raises(SystemExit):
        policy_gap.main(["reach+avoid", *argv])
    assert "must be" in capsys.readouterr().err


@pytest.mark.parametrize("module, argv", [("fold_entropy", ["place", "--states", "1"]),
                                          ("fold_entropy", ["place", "--episodes", "0"]),
                                          ("sampler_entropy", ["reach+avoid", "--pairs", "1"]),
                                          ("sampler_entropy", ["reach+avoid", "--seed", "x"]),
                                          ("gap_paths", ["place+clear", "--rollouts", "0"]),
                                          ("gap_paths", ["place+clear", "--value-samples", "-3"])])
def test_the_entropy_benches_refuse_bad_arguments_before_loading_anything(module, argv, capsys):
    import importlib

    with pytest.raises(SystemExit):
        importlib.import_module(f"bench.{module}").main(argv)
    err = capsys.readouterr().err
    assert "must be >=" in err or "expected a whole number" in err


@pytest.mark.parametrize("module", ["fold_entropy", "sampler_entropy", "sampler_particles", "policy_gap",
                                    "constituent_shift", "gap_paths"])
def test_the_gap_and_entropy_benches_name_an_unknown_skill_in_one_line(module, capsys):
    import importlib

    assert importlib.import_module(f"bench.{module}").main(["nosuch+thing", "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown skill") and "Valid skills: " in err and "Traceback" not in err


@pytest.mark.parametrize("module, argv", [("residuals", ["nosuch"]),
                                          ("c_tightness", ["nosuch+thing", "--adapted", "nosuch"]),
                                          ("place_failures", ["--library", "{empty}"]),
                                          ("dc_vs_average", ["--library", "{empty}"]),
                                          ("adaptation", ["--library", "{empty}"])])
def test_the_other_benches_name_an_unknown_skill_in_one_line_before_any_work(module, argv, tmp_path, capsys):
    """Each refuses at once with the valid names (``adaptation`` before it trains anything), not a traceback."""
    import importlib

    (tmp_path / "empty").mkdir()
    argv = [a.format(empty=tmp_path / "empty") for a in argv]
    assert importlib.import_module(f"bench.{module}").main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown skill") and "Valid skills: " in err and "Traceback" not in err


@pytest.mark.parametrize("content, message", [(None, "cannot read"), ("{not json", "is not a bench.adaptation --json"),
                                              ('{"runs": []}', "is not a bench.adaptation --json")])
def test_adaptation_from_json_refuses_a_missing_or_foreign_file_in_one_line(content, message, tmp_path, capsys):
    from bench import adaptation

    saved = tmp_path / "runs.json"
    if content is not None:
        saved.write_text(content)
    assert adaptation.main(["--from-json", str(saved)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --from-json") and message in err and "Traceback" not in err


@pytest.mark.parametrize("module, argv", [("residuals", ["clear", "--states", "1"]),
                                          ("c_tightness", ["reach+avoid", "--adapted", "x", "--episodes", "0"]),
                                          ("place_failures", ["--episodes", "0"]),
                                          ("dc_vs_average", ["--episodes", "1"]),
                                          ("adaptation", ["--workers", "0"]),
                                          ("pusher_sweep", ["--steps", "0"])])
def test_the_other_benches_refuse_bad_numbers_before_loading_anything(module, argv, capsys):
    import importlib

    with pytest.raises(SystemExit):
        importlib.import_module(f"bench.{module}").main(argv)
    err = capsys.readouterr().err
    assert "must be >=" in err


def test_dc_vs_average_refuses_a_setting_dc_cannot_take_before_loading_anything(tmp_path, capsys):
    """``--operator-setting`` goes to DC: a field that is not a number, or not DC's, is refused in one line before any
    skill is loaded (the library given here is empty: loading it first would say "unknown skill" instead)."""
    from bench import dc_vs_average

    (tmp_path / "empty").mkdir()
    for setting, message in (("hidden=64", "dc's hidden is not a number setting"), ("epsilon=0.3", "epsilon")):
        assert dc_vs_average.main(["--library", str(tmp_path / "empty"), "--operator-setting", setting]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err and "unknown skill" not in err and "Traceback" not in err


def test_dc_vs_average_gives_its_setting_to_dc_alone():
    """``--operator-setting target_update_interval=100`` makes DC with that fit (a whole number, cached apart from the
    default's); averaging is the plain one."""
    from bench import dc_vs_average

    default, longer = dc_vs_average.operators(), dc_vs_average.operators({"target_update_interval": 100.0})
    assert longer["dc"].target_update_interval == 100 and isinstance(longer["dc"].target_update_interval, int)
    from compose.operators import make_operator

    assert default["dc"] == make_operator("dc") and longer["average"] == default["average"] == make_operator("average")
    assert longer["dc"].settings() != default["dc"].settings()


def test_fold_entropy_measures_each_credit_against_a_converged_reference(tmp_path):
    """The reference (Kozachenko-Leonenko on many draws, by a k-d tree) matches known entropies: a squashed Gaussian and
    a sampler that folds every coordinate (``u = -|xi|``, a half-normal); ``bench.fold_entropy --quick`` on the shipped
    ``place`` reports each credit's error at folded and unflagged states, which together are all the states measured."""
    from library_helpers import shipped_library
    from test_soft_returns import folding_sampler

    from bench import fold_entropy
    from skills.sql import SamplerNetwork

    obs = np.zeros(4, np.float32)
    xi = torch.randn(1 << 20, 2, generator=torch.Generator().manual_seed(0)).double()
    identity = SamplerNetwork(4, 2, (8, 8))
    with torch.no_grad():
        for p in identity.parameters():
            p.zero_()
    squash = float(torch.log1p(-torch.tanh(xi).pow(2)).sum(-1).mean())  # tanh^2 is even: the same for u = -|xi|
    normal = math.log(2 * math.pi * math.e) + squash
    half_normal = math.log(2 * math.pi * math.e) - 2 * math.log(2) + squash
    assert fold_entropy.reference_entropy(identity, obs, 1 << 16, seed=1) == pytest.approx(normal, abs=0.02)
    assert fold_entropy.reference_entropy(folding_sampler(4, 2), obs, 1 << 16, seed=1) == pytest.approx(half_normal, abs=0.02)
    library = shipped_library(tmp_path / "lib", ("place",))
    out = tmp_path / "fold.json"
    assert fold_entropy.main(["place", "--library", str(library), "--quick", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["folded"]["states"] + result["unflagged"]["states"] == result["states"] == 4
    assert result["folded_share"] == pytest.approx(result["folded"]["states"] / 4)
    for kind in ("folded", "unflagged"):
        for credit, row in result[kind].items():
            if credit != "states":
                assert row["soft_return_effect"] == pytest.approx(row["error_nats"] * result["soft_return_per_nat"]), credit


def test_puck_failures_bearing_auc_and_terciles_on_known_cases():
    """The start bearing is 0 with the gripper straight behind the puck (opposite the crossing) and grows
    counter-clockwise; the AUC ranks a perfect score 1, its reverse 0, a constant 0.5; terciles split by the quantiles."""
    from bench.puck_failures import rank_auc, start_bearing, terciles
    from envs.manipulation import PUCK_GOAL, PUCK_OBS_DIM, PUCK_POS, PUCK_REL

    puck = np.array([-0.06, -0.08])
    behind = (puck - PUCK_GOAL) / np.linalg.norm(puck - PUCK_GOAL)
    turn = np.array([[0.0, -1.0], [1.0, 0.0]])  # 90 degrees counter-clockwise
    obs = np.zeros((3, PUCK_OBS_DIM), np.float32)
    for row, grip_dir in enumerate([behind, turn @ behind, -behind]):
        obs[row, PUCK_POS] = [*puck, 0.04]
        obs[row, PUCK_REL] = [*(-0.09 * grip_dir), 0.0]  # puck minus grip
    assert np.allclose(start_bearing(obs), [0.0, 90.0, -180.0], atol=1e-4)

    failed = np.array([True, True, False, False])
    assert rank_auc(np.array([3.0, 4.0, 1.0, 2.0]), failed) == 1.0
    assert rank_auc(np.array([1.0, 2.0, 3.0, 4.0]), failed) == 0.0
    assert rank_auc(np.ones(4), failed) == 0.5 and rank_auc(np.ones(4), np.zeros(4, bool)) is None
    split = terciles(np.arange(9.0), np.array([0, 0, 0, 1, 0, 1, 1, 1, 1], bool))
    assert split["success"] == pytest.approx([0.0, 2 / 3, 1.0])


def test_puck_failures_sorts_each_policy_by_start_bearing_on_the_same_episodes(tmp_path):
    """``bench.puck_failures`` on the shipped puck skills, 6 episodes: every policy meets the same reset states, the
    sectors and the inside/outside split count every episode once, and the start signals come with their AUC."""
    from bench import puck_failures

    assert puck_failures.main(["--episodes", "6", "--json", str(tmp_path / "pf.json")]) == 0
    result = json.loads((tmp_path / "pf.json").read_text())
    assert set(result["by_bearing"]) == {"composed", "joint", "puck-x", "puck-y"}
    for row in result["by_bearing"].values():
        assert sum(cell["episodes"] for cell in row["sectors"].values()) == 6
        assert row["inside"]["episodes"] + row["outside"]["episodes"] == 6
    assert {"V[puck-x]", "V[puck-y]", "V_w - V_joint", "delta(s0)", "C(s0)", "D(s0)"} <= set(result["at_reset"])
    assert set(result["first_move_cosine"]) == set(result["action_preferences"]) == {"puck-x", "puck-y"}


def test_puck_path_rank_agreement_and_distance_on_known_cases():
    """Spearman's correlation is 1 for the same order (whatever the scale), -1 for the reverse, 0 for an order
    unrelated to it; the distance to the data is the nearest stored state's, after scaling."""
    import torch

    from bench.puck_path import distance_to_data, rank_agreement

    a = torch.tensor([[0.1, 0.5, 0.3, 0.9]])
    assert rank_agreement(a, 10 * a + 3) == pytest.approx([1.0])
    assert rank_agreement(a, torch.exp(a)) == pytest.approx([1.0])
    assert rank_agreement(a, -a) == pytest.approx([-1.0])
    assert rank_agreement(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([[2.0, 4.0, 3.0, 1.0]])) == pytest.approx([-0.4])
    data = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    states = np.array([[0.9, 0.0], [0.0, 0.5]], np.float32)
    assert distance_to_data(states, data, torch.tensor([1.0, 1.0])) == pytest.approx([0.1, 0.5], abs=1e-6)
    assert distance_to_data(states, data, torch.tensor([1.0, 4.0])) == pytest.approx([0.1, 2.0], abs=1e-6)


def test_puck_path_reads_the_composed_policys_own_episodes(tmp_path):
    """``bench.puck_path`` on the shipped pair, 6 episodes: the composed policy succeeds exactly where it does in
    ``bench.puck_failures`` (the same episodes and streams), and every figure is in its range at every step."""
    from bench import puck_failures, puck_path

    assert puck_path.main(["--episodes", "6", "--json", str(tmp_path / "pp.json")]) == 0
    result = json.loads((tmp_path / "pp.json").read_text())
    assert puck_failures.main(["--episodes", "6", "--json", str(tmp_path / "pf.json")]) == 0
    composed = json.loads((tmp_path / "pf.json").read_text())["by_bearing"]["composed"]
    assert result["success"]["all"] == composed["success"]
    assert result["episodes_inside"] == composed["inside"]["episodes"]
    assert list(result["by_step"]) == [str(step) for step in puck_path.STEPS]
    for row in result["by_step"].values():
        for key in ("inside", "outside"):
            if row["agreement_with_joint"][key] is not None:
                assert -1.0 <= row["agreement_with_joint"][key] <= 1.0
                assert row["joint_q_spread"][key] > 0 and row["distance_to_data"][key] >= 0


@pytest.mark.parametrize("argv", [["--sector", "90,45"], ["--episodes", "5"], ["--operator", "priority"]])
def test_puck_path_refuses_bad_arguments_before_loading_anything(argv, capsys):
    from bench import puck_path

    with pytest.raises(SystemExit):
        puck_path.main(argv)
    err = capsys.readouterr().err
    assert any(why in err for why in ("need -180", "must be >= 6", "invalid choice: 'priority'"))


@pytest.mark.parametrize("argv", [["--sector", "90,45"], ["--sector", "x"], ["--episodes", "5"], ["--operator", "priority"]])
def test_puck_failures_refuses_bad_arguments_before_loading_anything(argv, capsys):
    from bench import puck_failures

    with pytest.raises(SystemExit):
        puck_failures.main(argv)
    err = capsys.readouterr().err
    assert any(why in err for why in ("need -180", "expected two degrees", "must be >= 6", "invalid choice: 'priority'"))


def test_control_validity_rereads_a_studys_reports_and_tells_a_miss_from_a_control_that_is_not_negative(tmp_path, capsys):
    """``bench.control_validity`` on a study folder with nothing rerun: per seed, a constituent as good as the joint
    skill that passes is "not negative here"; one clearly below the joint that passes is a miss; a FIFO as a report is
    refused in one line."""
    import os

    from bench import control_validity

    rng = np.random.default_rng(0)

    def row(b_alone: float) -> dict:
        noise = float(rng.normal(0, 0.3))
        actors = {"composed": 0.5, "joint": 0.6, "random": -2.0, "/lib/a/v1 alone": 0.6, "/lib/b/v1 alone": b_alone}
        return {"Q_w": 2.0, "C": 5.0, "D": 2.0, **{k: {"mean": 1.0 + m + noise + float(rng.normal(0, 0.05)),
                                                       "ci": [0.0, 0.0]} for k, m in actors.items()}}

    for seed, b_alone in ((0, 0.6), (1, 0.2)):
        run = tmp_path / "study" / "runs" / f"x+y-seed{seed}-stochastic"
        run.mkdir(parents=True)
        (run / "report.json").write_text(json.dumps({"bound": {"mc": {"per_pair": [row(b_alone) for _ in range(20)]}}}))
    (tmp_path / "study" / "runs" / "x+y-seed0-deterministic").mkdir()  # no report: skipped
    out = tmp_path / "cv.json"
    assert control_validity.main([str(tmp_path / "study"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [s["seed"] for s in result["seeds"]] == [0, 1]
    assert result["seeds_every_control_failed"] == 0 and result["seeds_every_control_that_should_failed"] == 1
    by_seed = [{c["control"]: (c["failed"], c["should_fail"]) for c in s["controls"]} for s in result["seeds"]]
    assert by_seed[0]["a alone"] == by_seed[0]["b alone"] == (False, False) and by_seed[0]["random"] == (True, True)
    assert by_seed[1]["b alone"] == (False, True), "0.4 below the joint skill and still passing: the check's miss"
    assert "b alone passed (SHOULD have failed" in capsys.readouterr().err
    fifo = tmp_path / "study" / "runs" / "x+y-seed2-stochastic"
    fifo.mkdir()
    os.mkfifo(fifo / "report.json")
    assert control_validity.main([str(tmp_path / "study")]) == 2
    assert "not a regular file" in capsys.readouterr().err
