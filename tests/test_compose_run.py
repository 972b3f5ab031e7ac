"""compose.run end to end on small multigoal skills: report keys, cache, refusals."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from compose import run as compose_run
from compose.bound import BoundConfig
from compose.mc_check import MCBoundConfig
from compose.sampling import SamplerConfig
from skills.sql.learner import SQLConfig
from skills.training import TrainConfig, Trainer

SMALL_SQL = SQLConfig(alpha=10.0, gamma=0.95, obs_scale=0.2, hidden=(32, 32), warmup_steps=100, batch_size=32,
                      particles=8, value_samples=8)
SMALL_RUN = TrainConfig(steps=300, eval_interval=300, eval_episodes=1, final_eval_episodes=2, progress=False,
                        convergence=False)
SMALL_MC = MCBoundConfig(pairs=3, rollouts=4, tail=0.5, value_samples=64)
FAST_BUILD = compose_run.BuildConfig(sampler=SamplerConfig(updates=100, batch_size=32, hidden=(32, 32)),
                                     bound=BoundConfig(updates=100, batch_size=64, n_value_samples=64, hidden=(32, 32)),
                                     progress=False)
FAST = {"sampler_cfg": FAST_BUILD.sampler, "bound_cfg": FAST_BUILD.bound}


def small_run(spec: str, out: Path, library: Path, **evaluation):
    """``compose.run.run`` with small builds and a small Monte Carlo check."""
    settings = compose_run.EvaluationConfig(**({"mc": SMALL_MC} | evaluation))
    return compose_run.run(spec, evaluation=settings, build_config=FAST_BUILD,
                           sources=compose_run.Sources(library=str(library), out=out))


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("compose-library")
    for seed in (0, 1):
        Trainer("multigoal", SMALL_SQL, replace(SMALL_RUN, seed=seed), out=root).train()
    return root


def test_report_has_the_documented_keys_and_the_second_run_uses_the_cache(library, tmp_path):
    spec = "multigoal@v1+multigoal@v2"
    first = small_run(spec, tmp_path / "a", library, episodes=3)
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["mode"] == "stochastic" and report["deterministic"] is False
    for row in (report["composed"], *report["constituents"].values()):
        for key in ("success_rate", "return_mean", "env_steps_used", "soft_return_mean"):
            assert key in row and row[key] is not None
    assert report["composed"]["env_steps_used"] == 0
    assert set(report["constituents"]) == {"multigoal@v1", "multigoal@v2"}
    for key in ("holds_fraction", "mean_C"):
        assert key in report["bound"]["learned"]
    assert "no jointly trained reference" in report["joint"]["note"]
    assert report["bound"]["learned"]["holds_fraction"] is None and report["bound"]["learned"]["mean_C"] >= 0
    mc = report["bound"]["mc"]
    for key in ("pairs", "rollout_steps", "upper_falsified_fraction", "lower_holds_fraction", "tail_bound", "goals"):
        assert key in mc
    assert mc["pairs"] == SMALL_MC.pairs and 0.0 <= mc["upper_falsified_fraction"] <= 1.0
    for figure in report["figures"].values():
        assert Path(figure).stat().st_size > 5_000
    gap = mc["policy_gap"]  # the lower side against the policy's own gap D, pooled over the pairs
    assert set(gap["pooled"]) >= {"composed", "random", "multigoal@v1 alone", "multigoal@v2 alone"}
    assert gap["pooled"]["composed"]["pairs"] == SMALL_MC.pairs and gap["controls"][0]["control"] == "D shrunk to 0"
    assert report["bound"]["policy_gap_fit"]["cached"] is False and report["bound"]["policy_gap_fit"]["draws"] == 16
    assert "policy's own gap" in (tmp_path / "a" / "report.md").read_text()
    assert (tmp_path / "a" / "report.md").read_text().startswith("# Composition report")
    assert first["build"]["cached"] is False
    second = small_run(spec, tmp_path / "b", library, episodes=2)
    assert second["build"]["cached"] is True
    assert second.bound["policy_gap_fit"]["cached"] is True


def test_the_policy_gap_is_cached_per_sampler_and_a_damaged_entry_is_refitted(library):
    """``compose.build.build_policy_gap``: fitted once, then loaded with the same weights; a damaged entry is refitted
    with a warning; another composed sampler (the resampling's centres) gets its own entry."""
    from compose import load
    from compose.build import build, build_policy_gap

    composition = load("multigoal@v1+multigoal@v2", library=str(library))
    built = build(composition, str(library), False, FAST["sampler_cfg"], FAST["bound_cfg"])
    first, info = build_policy_gap(composition, built, str(library), FAST["bound_cfg"])
    again, info_again = build_policy_gap(composition, built, str(library), FAST["bound_cfg"])
    assert info_again["cached"] and info_again["cache"] == info["cache"]
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    (Path(info["cache"]) / "networks.safetensors").write_bytes(b"not safetensors")
    with pytest.warns(UserWarning, match="refitting it"):
        _, refit = build_policy_gap(composition, built, str(library), FAST["bound_cfg"])
    assert refit["cached"] is False
    with torch.no_grad():
        for p in built.sampler.parameters():
            p.add_(0.01)
    _, other = build_policy_gap(composition, built, str(library), replace(FAST["bound_cfg"], updates=20))
    assert other["cache"] != info["cache"] and other["cached"] is False


def test_particle_sampler_runs_without_training(library, tmp_path):
    report = small_run("multigoal@v1+multigoal@v2", tmp_path, library, sampler="particles", episodes=1, mc=None)
    assert report["sampler"] == "particles" and 0.0 <= report["composed"]["success_rate"] <= 1.0
    assert "mc" not in report["bound"]


def test_deterministic_mode_is_labelled_and_has_no_soft_return(library, tmp_path):
    report = small_run("multigoal@v1+multigoal@v2", tmp_path, library, episodes=1, deterministic=True, mc=None)
    assert report["mode"] == "deterministic" and report["composed"]["soft_return_mean"] is None


def test_the_mc_check_scores_every_actor_and_reports_its_controls(library):
    """The Monte Carlo check on the small multigoal pair: every actor (the composed sampler, the exact pi_w, the random
    actor and each constituent alone) gets soft returns with its own entropy, every control has a verdict, and the
    random actor's nearest-neighbour entropy is checked against its exact one on the same rollouts."""
    import envs
    from compose import load
    from compose.build import build
    from compose.mc_check import BoundInputs, mc_bound
    from compose.policy import ComposedPolicy

    composition = load("multigoal@v1+multigoal@v2", library=str(library))
    built = build(composition, str(library), False, FAST["sampler_cfg"], FAST["bound_cfg"])
    inputs = BoundInputs(composed=ComposedPolicy(composition, built.sampler, 0), joint=None,
                         constituents=list(zip(composition.labels, composition.parts, strict=True)),
                         correction=built.correction,
                         make_env=lambda: envs.make_task_env(composition.task), reward_range=composition.task.reward_range,
                         horizon=composition.task.family.horizon)
    mc = mc_bound(inputs, replace(SMALL_MC, exact_pairs=2, exact_steps=20, entropy_samples=32))
    assert set(mc["actors"]) == {"composed", "random", "multigoal@v1 alone", "multigoal@v2 alone"}
    assert mc["exact_pi_w"]["pairs"] == 2 and "Metropolis-Hastings" in mc["exact_pi_w"]["entropy"]
    assert [c["check"] for c in mc["controls"]][:2] == ["upper side", "lower side"] and len(mc["controls"]) == 5
    assert all("verdict" in c for c in mc["controls"]) and set(mc["verdict"]) >= {"upper_side_can_fail", "note"}
    assert mc["controls"][0]["failed"], "Q_w shifted down by twice the slack must falsify the upper side"
    check = mc["random_entropy_estimate"]
    assert set(check) >= {"exact_mean", "estimated_mean", "difference", "soft_return_se", "within_3_se"}


def test_the_controls_fail_when_they_must_and_say_when_a_check_is_uninformative():
    from compose.mc_check import controls, side_fractions, verdict

    def row(q_w, c, **actors):
        return {"Q_w": q_w, "C": c, **{k: {"mean": m, "ci": [m - 0.1, m + 0.1]} for k, m in actors.items()}}

    rows = [row(1.0, 5.0, composed=0.0, random=-2.0) for _ in range(10)]  # C loose: random still above Q_w - C
    assert side_fractions(rows, "composed") == (0.0, 1.0)
    checks = controls(rows, ["composed", "random"])
    assert checks[0]["failed"] and checks[1]["failed"] and not checks[2]["failed"]
    assert "C is too loose" in verdict(checks)["note"] and not verdict(checks)["tells_policies_apart"]
    tight = [row(1.0, 1.5, composed=0.0, random=-2.0) for _ in range(10)]
    assert verdict(controls(tight, ["composed", "random"]))["tells_policies_apart"]


def test_the_lower_side_with_d_is_pooled_and_tells_a_poor_actor_from_the_composed_one():
    """``policy_gap_side``: the margin ``G - (Q_w - D)`` averaged over pairs with its SE across them. The composed
    actor scattered around ``Q_w - D`` holds; the random actor 1.0 below fails, as does ``D`` = 0; an actor as good as
    the composition passes and the note says so; a composed actor below it by many SE fails."""
    from compose.mc_check import policy_gap_side

    rng = np.random.default_rng(0)

    def row(noise, **actors):
        return {"Q_w": 2.0, "C": 5.0, "D": 1.0,
                **{k: {"mean": 1.0 + m + noise, "ci": [0.9 + m + noise, 1.1 + m + noise]} for k, m in actors.items()}}

    rows = [row(float(rng.normal(0, 0.2)), composed=0.0, random=-1.0, **{"a alone": 0.05}) for _ in range(20)]
    side = policy_gap_side(rows, None)
    assert side["pooled"]["composed"]["holds"] and not side["pooled"]["random"]["holds"]
    assert side["pooled"]["composed"]["margin_mean"] == pytest.approx(np.mean([r["composed"]["mean"] - 1.0 for r in rows]))
    failed = {c["control"]: c["failed"] for c in side["controls"]}
    assert failed == {"D shrunk to 0": True, "random acting (its own entropy)": True,
                      "a alone acting (its own entropy)": False}
    assert not side["tells_policies_apart"] and "holds for a alone acting" in side["note"]
    below = [row(float(rng.normal(0, 0.2)), composed=-0.5, random=-1.0) for _ in range(20)]
    assert not policy_gap_side(below, None)["pooled"]["composed"]["holds"]
    assert "falls below Q_w - D" in policy_gap_side(below, None)["note"]
    exact = {"pairs": 8, "per_pair": [{"mean": 1.0, "se": 0.01} for _ in range(8)]}  # the exact pi_w acts on 8 of 20
    side = policy_gap_side(below, exact)
    assert side["pooled"]["exact pi_w"]["pairs"] == 8 and side["pooled"]["composed"]["pairs"] == 20
    assert {n: v["pairs"] for n, v in side["on_exact_pairs"].items()} == {"composed": 8, "random": 8, "exact pi_w": 8}
    first = np.array([r["composed"]["mean"] - 1.0 for r in below[:8]])
    assert side["on_exact_pairs"]["composed"]["margin_mean"] == pytest.approx(first.mean())
    assert f"on its first 8 pairs, where the composed sampler's margin is {first.mean():+.3g}" in side["note"]


def test_a_control_should_fail_unless_it_is_as_good_as_the_joint_skill_on_the_same_pairs():
    """``versus_joint``: a control that passes the lower side against ``Q_w - D`` is a miss of the check only when it
    collects less soft return than the joint skill on the same pairs (paired difference below 0 by more than 2 SE). A
    constituent as good as the joint skill passes and is named "not a negative control here"; one 0.3 below it passes
    too (Q_w - D is loose here) and is the check's miss; the random actor fails."""
    from compose.mc_check import policy_gap_side, versus_joint

    rng = np.random.default_rng(1)

    def row(**actors):
        noise = float(rng.normal(0, 0.3))  # shared by every actor at a pair: the paired difference removes it
        return {"Q_w": 2.0, "C": 5.0, "D": 2.0, **{k: {"mean": 1.0 + m + noise + float(rng.normal(0, 0.05)),
                                                       "ci": [0.0, 0.0]} for k, m in actors.items()}}

    rows = [row(composed=0.5, joint=0.6, random=-2.0, **{"a alone": 0.6, "b alone": 0.3}) for _ in range(20)]
    side = policy_gap_side(rows, None)
    by_name = {c["control"].removesuffix(" acting (its own entropy)"): c for c in side["controls"]}
    assert [by_name[n]["failed"] for n in ("D shrunk to 0", "random", "a alone", "b alone")] == [True, True, False, False]
    assert [by_name[n]["should_fail"] for n in ("D shrunk to 0", "random", "a alone", "b alone")] == [True, True, False, True]
    assert by_name["a alone"]["verdict"].startswith("passed, and no worse than the joint skill")
    assert by_name["b alone"]["verdict"].startswith("passed although it should fail (below the joint skill by 0.3")
    assert not side["tells_policies_apart"] and side["controls_not_negative_here"] == ["a alone acting (its own entropy)"]
    difference = versus_joint(rows, "b alone")
    assert difference["mean"] == pytest.approx(np.mean([r["b alone"]["mean"] - r["joint"]["mean"] for r in rows]))
    assert difference["worse"] and difference["se"] < 0.05  # the shared noise cancels in the pairing
    without_b = [{k: v for k, v in r.items() if k != "b alone"} for r in rows]
    assert policy_gap_side(without_b, None)["tells_policies_apart"], "only a control as good as the joint passes"
    assert versus_joint([{k: v for k, v in r.items() if k != "joint"} for r in rows], "a alone") is None


def test_cli_refuses_bad_weights_and_unknown_skills(library, capsys):
    args = ["--library", str(library), "--episodes", "1", "--no-progress"]
    assert compose_run.main(["multigoal@v1+multigoal@v2", "--weights", "0.9,0.3", *args]) == 2
    assert "sum to 1" in capsys.readouterr().err
    assert compose_run.main(["multigoal+nope", *args]) == 2
    assert "unknown skill 'nope'" in capsys.readouterr().err


def test_incompatible_skills_are_refused_with_the_mismatch_shown(library):
    import skills
    from compose.composition import Composition, IncompatibleSkillsError

    a, b = skills.load("multigoal@v1", library), skills.load("multigoal@v2", library)
    b.alpha = 0.5
    with pytest.raises(IncompatibleSkillsError, match=r"alpha \(multigoal: 10.0, multigoal: 0.5\)"):
        Composition([a, b])
    b.alpha = a.alpha
    from skills.library.manifest import Space

    b.info = replace(b.info, observation_space=Space((5,), "float32"))
    with pytest.raises(IncompatibleSkillsError, match=r"observation space shape .*\(2,\).*\(5,\)"):
        Composition([a, b])


def test_compose_run_has_help():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "compose.run", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--sampler" in done.stdout


def test_the_composed_policy_answers_the_skill_protocol(library):
    """``ComposedPolicy`` and ``Skill`` both satisfy ``SoftPolicy``; single states and batches, numpy
    and torch; a seeded composed policy acts reproducibly."""
    import numpy as np

    import skills
    from compose import ComposedPolicy, load
    from compose.build import build
    from skills.policy import SoftPolicy

    composition = load("multigoal@v1+multigoal@v2", library=str(library))
    built = build(composition, str(library), False, FAST["sampler_cfg"], FAST["bound_cfg"])
    policy = ComposedPolicy(composition, built.sampler, seed=3)
    assert isinstance(policy, SoftPolicy) and isinstance(skills.load("multigoal@v1", library), SoftPolicy)
    obs = np.array([[0.1, -0.2], [1.0, 2.0]], np.float32)
    assert policy.act(obs[0]).shape == (2,) and policy.act(obs).shape == (2, 2)
    assert policy.act(obs, deterministic=True).shape == (2, 2)
    assert policy.sample(obs, 5).shape == (2, 5, 2) and isinstance(policy.sample(torch.as_tensor(obs), 5), torch.Tensor)
    assert policy.q(obs, policy.act(obs)).shape == (2,) and policy.value(obs, n_samples=64).shape == (2,)
    gap = composition.q_w.gap(obs, n_samples=64)  # numpy in, numpy out, as README's snippet calls it
    assert isinstance(gap, np.ndarray) and gap.shape == (2,) and (gap >= 0).all()
    assert np.shape(composition.q_w.gap(obs[0], n_samples=64)) == ()
    with pytest.raises(ValueError, match="observation must have shape"):
        composition.q_w.gap(np.zeros(5), n_samples=64)
    again = ComposedPolicy(composition, built.sampler, seed=3)
    np.testing.assert_array_equal(ComposedPolicy(composition, built.sampler, seed=3).act(obs), again.act(obs))


def test_a_policy_acting_with_particles_samples_and_is_credited_as_it_acts(library):
    """The review: with ``--sampler particles|resampling`` the composed policy acted with per-decision particles, but
    ``sample`` (and so the entropy credited to its soft returns) drew from the amortized sampler. Now ``sample`` draws
    the particles it acts with, and the credit is the Boltzmann entropy of its energy from them (their draws have no
    density): on a flat energy, exactly ``d log 2``."""
    from compose import ComposedPolicy, load
    from compose.build import build
    from compose.soft_returns import sampler_actor
    from skills.evaluation.entropy import acting_entropy

    composition = load("multigoal@v1+multigoal@v2", library=str(library))
    built = build(composition, str(library), False, FAST["sampler_cfg"], FAST["bound_cfg"])
    near = torch.tensor([0.3, -0.2])

    def particles(obs, generators=None):  # one decision: 5 actions within 1e-3 of (0.3, -0.2)
        return near + 1e-3 * torch.rand(len(obs), 5, 2)

    policy = ComposedPolicy(composition, built.sampler, seed=0, particles=particles, q_fn=lambda o, a: a.sum(-1) * 0.0)
    obs = np.zeros((3, 2), np.float32)
    draws = policy.sample(obs, 12)
    assert draws.shape == (3, 12, 2) and float((draws - near.numpy()).__abs__().max()) < 2e-3, "the particles it acts with"
    flat = acting_entropy(policy, obs, 64)  # Q = 0: pi is uniform on [-1, 1]^2, V = alpha * 2 log 2
    np.testing.assert_allclose(flat, 2 * np.log(2.0), rtol=0.05)
    assert "Boltzmann entropy of pi_w" in sampler_actor("composed", policy, policy.alpha).entropy
    plain = ComposedPolicy(composition, built.sampler, seed=0)
    assert "change of variables" in sampler_actor("composed", plain, plain.alpha).entropy


def test_every_soft_policy_takes_the_protocols_arguments():
    """``Skill``, ``ComposedPolicy`` and ``ComposedSkill`` accept every parameter of ``SoftPolicy``'s calls by its name
    (``isinstance`` against the protocol checks only that the methods exist; a composition opened with ``compose.load``
    once refused lockstep evaluation's ``generators``)."""
    import inspect

    from compose import ComposedPolicy, ComposedSkill
    from skills.library.skill import Skill
    from skills.policy import SoftPolicy

    for method in ("act", "sample", "q", "value"):
        wanted = list(inspect.signature(getattr(SoftPolicy, method)).parameters)
        for cls in (Skill, ComposedPolicy, ComposedSkill):
            attr = inspect.getattr_static(cls, method)
            if isinstance(attr, property):  # ComposedSkill.q: a callable built on first use
                continue
            have = inspect.signature(attr).parameters
            assert not [p for p in wanted if p not in have], (cls.__name__, method, wanted, list(have))


def test_a_loaded_composition_acts_like_a_skill(library):
    """``compose.load(...)`` answers ``act``, ``sample``, ``q``, ``value`` like a skill, once built."""
    import numpy as np

    from compose import load
    from skills.policy import SoftPolicy

    composition = load("multigoal@v1+multigoal@v2", library=str(library), seed=1)
    assert isinstance(composition, SoftPolicy)
    composition.build(progress=False, sampler_cfg=FAST["sampler_cfg"], bound_cfg=FAST["bound_cfg"])
    obs = np.array([[0.1, -0.2], [1.0, 2.0]], np.float32)
    action = composition.act(obs[0])
    assert action.shape == (2,) and np.all(np.abs(action) <= 1)
    assert composition.q(obs, composition.act(obs)).shape == (2,)
    assert isinstance(composition.q(torch.as_tensor(obs), torch.as_tensor(composition.act(obs))), torch.Tensor)
    assert composition.sample(obs, 4).shape == (2, 4, 2) and composition.value(obs, n_samples=64).shape == (2,)


@pytest.mark.parametrize("spec", ["reach+avoid", "puck-x+puck-y", "place+clear"])
def test_the_shipped_composition_acts_from_its_cache_without_rebuilding(spec):
    """From a fresh clone: ``compose.load(spec).act(obs)`` in a user's own loop, with the shipped cache (no
    training), on the arm and on the Fetch with objects."""
    import envs
    from compose import load

    composition = load(spec)
    built = composition.build(progress=False)
    assert built.cached, f"the shipped library should hold the {spec} cache"
    env = envs.make(spec)
    obs, _ = env.reset(seed=0)
    for _ in range(5):
        obs, *_ = env.step(composition.act(obs))
    env.close()


@pytest.mark.parametrize("spec", ["reach+avoid", "puck-x+puck-y", "place+clear", "plane-upper+plane-lower", "west+east"])
def test_the_shipped_policy_gap_loads_from_its_cache(spec, tmp_path):
    """``compose.run SPEC``'s lower side against ``D`` finds the shipped ``D`` (same settings, same composed sampler)
    instead of refitting it; on a copy of the shipped library, so that a miss cannot write into ``trained/``."""
    from library_helpers import shipped_library

    from compose import load
    from compose.build import build_policy_gap

    names = tuple(spec.split("+")) + (spec, ".composed")
    library = str(shipped_library(tmp_path / "lib", names))
    composition = load(spec, library=library)
    built = composition.build(progress=False)
    assert built.cached
    _, info = build_policy_gap(composition, built, library, compose_run.BuildConfig().bound)
    assert info["cached"], f"the shipped library should hold the {spec} policy gap (refit: {info})"
