"""Composed skills in the library (``Composition.save``) and adaptation (``compose.adapt``), on the
shipped reach and avoid skills copied into a temporary library."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from library_helpers import SHIPPED, shipped_library
from safetensors.torch import load_file, save_file

import compose
import envs
import skills
from compose import adapt as compose_adapt
from compose.library import composed_agent
from compose.skill import spec_names
from skills.library import sha256_file
from skills.policy import SoftPolicy
from skills.sql import SoftQNetwork
from skills.sql.learner import SoftQLearning, SQLConfig
from skills.sql.many_skills import ComposedSoftQNetwork

TINY_ADAPT = ["--steps", "120", "--eval-interval", "60", "--eval-episodes", "1", "--final-eval-episodes", "1",
              "--no-progress", "--no-convergence"]


@pytest.fixture
def library(tmp_path) -> Path:
    """reach, avoid and the shipped reach+avoid sampler cache (no rebuilds), in a writable library."""
    return shipped_library(tmp_path / "lib", ("reach", "avoid", ".composed"))


def states(n: int = 6) -> np.ndarray:
    return np.load(SHIPPED / "reach" / "v1" / "transitions.npz")["obs"][:n]


def retrain(library: Path, name: str) -> Path:
    """A new version of ``name`` with other weights, as retraining would publish."""
    src, dst = library / name / "v1", library / name / "v2"
    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "weights.safetensors"))
    tensors = {k: v + 0.01 if k.startswith("q.") else v for k, v in tensors.items()}
    save_file(tensors, str(dst / "weights.safetensors"))
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["version"] = 2
    manifest["files"]["weights.safetensors"] = sha256_file(dst / "weights.safetensors")
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


# ---- the composed Q-network ------------------------------------------------------------------
def small_composed(seed: int = 0) -> tuple[ComposedSoftQNetwork, list[SoftQNetwork], list[float]]:
    torch.manual_seed(seed)
    nets = [SoftQNetwork(4, 2, (16, 16)), SoftQNetwork(4, 2, (8, 16))]
    weights = [0.3, 0.7]
    return ComposedSoftQNetwork.compose(nets, weights, (16, 16), seed=seed), nets, weights


def test_the_residual_starts_at_q_w_exactly():
    """``Q = Q_w + R`` with ``R = 0`` before training: equal to ``sum_i w_i Q_i`` to 1e-6, in ``forward``,
    ``traced`` and ``action_gradient`` (against autograd)."""
    q, nets, weights = small_composed()
    obs, act = torch.randn(5, 4), torch.rand(3, 5, 2) * 2 - 1
    q_w = sum(w * n(obs, act) for w, n in zip(weights, nets, strict=False))
    torch.testing.assert_close(q(obs, act), q_w, atol=1e-6, rtol=0)
    torch.testing.assert_close(q.traced(obs, act)[0], q_w, atol=1e-6, rtol=0)
    a = act.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(sum(w * n(obs, a) for w, n in zip(weights, nets, strict=False)).sum(), a)
    torch.testing.assert_close(q.action_gradient(obs, act), expected, atol=1e-6, rtol=1e-5)


def test_sql_on_a_composed_q_trains_only_the_residual():
    q, nets, _ = small_composed()
    frozen = {k: v.clone() for k, v in q.stacked.state_dict().items()}
    agent = SoftQLearning(4, 2, SQLConfig(hidden=(16, 16), batch_size=8, particles=4), q=q)
    assert [p.data_ptr() for p in agent.q_optimizer.param_groups[0]["params"]] == \
        [p.data_ptr() for p in q.residual.parameters()]
    batch = {"obs": torch.randn(8, 4), "action": torch.rand(8, 2) * 2 - 1, "reward": torch.randn(8),
             "next_obs": torch.randn(8, 4), "terminated": torch.zeros(8)}
    for _ in range(3):
        agent.update(batch)
    for k, v in q.stacked.state_dict().items():
        torch.testing.assert_close(v, frozen[k], atol=0, rtol=0)
    assert q.residual.net[-1].weight.abs().sum() > 0  # R has moved off 0


# ---- saved compositions -----------------------------------------------------------------------
def test_a_saved_composition_reopens_in_both_loaders_without_rebuilding(library, monkeypatch):
    composition = compose.load("reach+avoid", library=str(library))
    path = composition.save(progress=False)
    assert path == library / "reach+avoid.composed" / "v1"
    assert composition.save(progress=False) == library / "reach+avoid.composed" / "v2"  # never overwrites

    from compose import build as build_module

    def no_training(*args, **kwargs):
        raise AssertionError("reopening a saved composition must not train anything")

    monkeypatch.setattr(build_module, "train_amortized_sampler", no_training)
    obs = states()
    act = np.random.default_rng(0).uniform(-1, 1, (len(obs), 3)).astype(np.float32)
    skill = skills.load("reach+avoid.composed", library)
    reopened = compose.load("reach+avoid.composed", library=str(library), seed=4)
    for policy in (skill, reopened):
        assert isinstance(policy, SoftPolicy)
        np.testing.assert_allclose(policy.q(obs, act), composition.q(obs, act), atol=1e-6)
        assert policy.act(obs).shape == (len(obs), 3) and policy.act(obs[0], deterministic=True).shape == (3,)
        assert policy.sample(obs, 4).shape == (len(obs), 4, 3)
    assert reopened.labels == ["reach", "avoid"] and reopened.saved == path.parent / "v2"  # the newest
    made_from = skill.manifest["composed_from"]
    assert [c["spec"] for c in made_from["constituents"]] == ["reach", "avoid"] and made_from["weights"] == [0.5, 0.5]
    torch.manual_seed(0)
    noise_a = skill.agent.sampler.sample(torch.as_tensor(obs), 3)
    torch.manual_seed(0)
    noise_b = composition.policy.sampler.sample(torch.as_tensor(obs), 3)
    torch.testing.assert_close(noise_a, noise_b)  # the composed sampler itself, not a rebuild
    again = [compose.load("reach+avoid.composed", library=str(library), seed=4).act(obs) for _ in range(2)]
    np.testing.assert_array_equal(*again)  # seeded: reproducible


def test_a_stale_saved_composition_is_refused_with_the_reason(library):
    compose.load("reach+avoid", library=str(library)).save(progress=False)
    compose.load("reach@v1+avoid@v1", library=str(library)).save(name="pinned.composed", progress=False)
    retrain(library, "reach")
    for loader in (lambda: skills.load("reach+avoid.composed", library),
                   lambda: compose.load("reach+avoid.composed", library=str(library))):
        with pytest.raises(skills.StaleSkillError) as err:
            loader()
        assert "'reach' now resolves to" in str(err.value) and "reach v1" in str(err.value)
        assert "avoid" not in str(err.value).split("stale:")[1].split(".")[0]  # only the retrained one is named
    assert skills.load("reach+avoid.composed", library, allow_stale=True).manifest["composed_from"]
    assert compose.load("pinned.composed", library=str(library)).labels == ["reach@v1", "avoid@v1"]  # pins never go stale


def test_a_corrupt_saved_composition_gives_a_clear_error(library):
    path = compose.load("reach+avoid", library=str(library)).save(progress=False)
    data = (path / "weights.safetensors").read_bytes()
    (path / "weights.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(skills.CorruptSkillError, match="checksum"):
        skills.load(path)
    with pytest.raises(skills.CorruptSkillError, match="checksum"):
        compose.load("reach+avoid.composed", library=str(library))


def test_a_composed_skill_cannot_be_composed_again(library):
    compose.load("reach+avoid", library=str(library)).save(progress=False)
    with pytest.raises(compose.IncompatibleSkillsError, match="already composed"):
        compose.load(["reach+avoid.composed", "avoid"], library=str(library))


def test_two_runs_of_each_skill_compose_to_the_registered_task_and_find_its_joint():
    """Two runs of each constituent (here the same run twice, by path) have ``r_w`` of ``reach+avoid``: the composition
    takes that registered task (its success checks) and finds its jointly trained reference by reward, not by name."""
    from compose.run.evaluation import find_joint
    paths = [str(SHIPPED / name / "v1") for name in ("reach", "reach", "avoid", "avoid")]
    composition = compose.load(paths, library=str(SHIPPED))
    assert composition.task is envs.get_task("reach+avoid")
    joint, note = find_joint(composition, str(SHIPPED))
    assert joint is not None and joint.info.name == "reach+avoid", note
    unequal = compose.load(paths, weights=[0.4, 0.4, 0.1, 0.1], library=str(SHIPPED))
    assert unequal.task.name == "0.4*reach+0.4*reach+0.1*avoid+0.1*avoid" and unequal.task.name not in envs.TASKS
    assert dict(unequal.task.weights) == pytest.approx({"reach": 0.8, "avoid": 0.2})
    twice = compose.load([str(SHIPPED / "reach+avoid" / "v1")] * 2, library=str(SHIPPED))  # never its own reference
    assert twice.task is envs.get_task("reach+avoid")
    assert find_joint(twice, str(SHIPPED)) == (None, "no jointly trained reference: the newest 'reach+avoid' skill "
                                                     f"({SHIPPED / 'reach+avoid' / 'v1'}) is one of the constituents")
    assert compose.load(paths[:2], library=str(SHIPPED)).task.name == "reach+reach"  # two runs of a plain task


@pytest.mark.parametrize("spec, names", [
    ("reach+avoid", ["reach", "avoid"]), ("(reach+avoid)+stay_low", ["reach+avoid", "stay_low"]),
    ("(a+b)+(c+d)+e", ["a+b", "c+d", "e"]), ("/runs (1)/reach/v1+avoid", ["/runs (1)/reach/v1", "avoid"])])
def test_a_spec_names_its_skills_with_parentheses_around_a_name_that_has_a_plus(spec, names):
    assert spec_names(spec) == names


@pytest.mark.parametrize("spec, message", [
    ("(reach+avoid+stay_low", "unbalanced parentheses"), ("reach)+(avoid", "unbalanced"),
    ("reach++avoid", "an empty skill name"), ("()+avoid", "an empty skill name")])
def test_a_malformed_spec_is_refused_showing_it(spec, message):
    with pytest.raises(ValueError, match=message) as err:
        spec_names(spec)
    assert repr(spec) in str(err.value)


# ---- adaptation -------------------------------------------------------------------------------
def test_before_any_update_the_adapted_agent_acts_as_the_composition(library):
    composition = compose.load("reach+avoid", library=str(library))
    agent = composed_agent(composition, composition.policy.sampler)
    obs = torch.as_tensor(states())
    act = torch.rand(len(obs), 3) * 2 - 1
    torch.testing.assert_close(agent.q(obs, act), composition.q(obs, act), atol=1e-6, rtol=0)
    torch.testing.assert_close(agent.q_target(obs, act), composition.q(obs, act), atol=1e-6, rtol=0)
    for deterministic in (False, True):
        torch.manual_seed(1)
        mine = agent.act(obs.numpy(), deterministic)
        composition.policy.generator.manual_seed(1)
        theirs = composition.act(obs.numpy(), deterministic)
        np.testing.assert_allclose(mine, theirs, atol=1e-6)


def test_compose_adapt_trains_a_new_library_skill_and_resumes(library, capsys, tmp_path):
    assert compose_adapt.main(["reach+avoid", "--library", str(library), *TINY_ADAPT]) == 0
    skill = skills.load("reach+avoid.adapted", library)
    assert skill.manifest["env_steps"] == 120 and skill.manifest["task"] == "reach+avoid"
    assert skill.manifest["architecture"]["q"] == "composed"
    made_from = skill.manifest["adapted_from"]
    assert [c["name"] for c in made_from["constituents"]] == ["reach", "avoid"]
    assert {"det_return_mean", "return_std"} <= set(skill.manifest["history"][0])
    out = capsys.readouterr().out
    assert "zero-shot composition (step 0)" in out
    assert compose_adapt.main(["reach+avoid", "--library", str(library), "--resume", "reach+avoid.adapted",
                               *TINY_ADAPT]) == 0
    resumed = skills.load("reach+avoid.adapted", library)
    assert resumed.path.name == "v2" and resumed.manifest["env_steps"] == 240
    assert resumed.manifest["adapted_from"] == made_from
    assert skills.load("reach+avoid.adapted@v1", library).manifest["env_steps"] == 120
    assert "R = 0 at the start" in out and "from reach+avoid.adapted" in capsys.readouterr().out  # the resumed headline
    empty = tmp_path / "elsewhere"  # resuming with --library pointing at the adapted skill, not the constituents
    empty.mkdir()
    assert compose_adapt.main(["reach+avoid", "--library", str(empty), "--resume", "reach+avoid.adapted",
                               *TINY_ADAPT]) == 2
    assert "resuming: --library is where the constituents live" in capsys.readouterr().err


def test_compose_adapt_starts_from_dc_and_refuses_operators_not_of_the_form_q_w_plus_r(library, capsys):
    """``--operator dc`` (the shipped cache's fit) adapts from ``Q_w - C_w`` into ``reach+avoid.dc.adapted``; an
    operator whose energy is not ``Q_w + R`` is refused before anything is built."""
    from compose.adaptation import adapt

    assert compose_adapt.main(["reach+avoid", "--operator", "dc", "--library", str(library), *TINY_ADAPT]) == 0
    assert "R = -C_w at the start" in capsys.readouterr().out
    skill = skills.load("reach+avoid.dc.adapted", library)
    assert skill.manifest["adapted_from"]["operator"]["name"] == "dc" and skill.manifest["env_steps"] == 120
    assert not (library / "reach+avoid.adapted").exists()
    with pytest.raises(ValueError, match="operator 'gpi''s energy is not of that form \\(adaptable: average, dc\\)"):
        adapt("reach+avoid", library=str(library), operator="gpi", progress=False)


def test_compose_adapt_refuses_a_composition_without_a_combined_task(library, capsys):
    assert compose_adapt.main(["reach+avoid", "--library", str(library), "--weights", "0.7,0.3", *TINY_ADAPT]) == 2
    err = capsys.readouterr().err
    assert "no registered combined task" in err and "reach+avoid" in err
    assert compose_adapt.main(["reach+avoid", "--library", str(library), "--weights", "0.7,0.7", *TINY_ADAPT]) == 2
    assert "sum to 1" in capsys.readouterr().err


def test_ctrl_c_during_adaptation_keeps_the_checkpoint_and_earlier_versions(library, monkeypatch, capsys):
    from skills.training import Trainer

    assert compose_adapt.main(["reach+avoid", "--library", str(library), *TINY_ADAPT]) == 0
    v1 = library / "reach+avoid.adapted" / "v1"
    before = {p.name: sha256_file(p) for p in v1.iterdir()}
    original = Trainer.step

    def interrupted(self):
        if self.steps_done == 90:  # after the checkpoint at step 60
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "step", interrupted)
    assert compose_adapt.main(["reach+avoid", "--library", str(library), *TINY_ADAPT]) == 130
    err = capsys.readouterr().err
    assert "interrupted: its last checkpoint is in" in err
    assert "continue it with python -m compose.adapt reach+avoid --resume reach+avoid.adapted@v2" in err  # issue 31
    v2 = skills.list_skills(library)
    kept = {e.version: e.manifest["status"] for e in v2 if e.name == "reach+avoid.adapted"}
    assert kept == {1: "complete", 2: "training"}
    assert {p.name: sha256_file(p) for p in v1.iterdir()} == before
    assert skills.load("reach+avoid.adapted", library).path == v1  # the newest *complete* version


def test_compose_adapt_has_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        compose_adapt.main(["--help"])
    assert exit_.value.code == 0 and "Q_w" in capsys.readouterr().out


@pytest.mark.learning
def test_adaptation_does_not_fall_below_the_zero_shot_composition(library):
    """1,000 steps of adaptation keep the composition's deterministic success and its stochastic return
    (within 3 standard errors of one evaluation); bench.adaptation measures the full curves."""
    composition = compose.load("reach+avoid", library=str(library))
    trainer = compose_adapt.adapted_trainer(composition, steps=1000, out=library, eval_interval=1000, eval_episodes=20,
                                            final_eval_episodes=1, progress=False, convergence=False)
    history = trainer.train().history
    start, end = history[0], history[-1]
    assert end["env_steps"] == 1000 and start["det_success_rate"] >= 0.9 and end["det_success_rate"] >= 0.9
    se = start["return_std"] / np.sqrt(20)
    assert end["return_mean"] >= start["return_mean"] - 3 * se, (start, end)


def test_compose_save_cli_then_skills_evaluate_runs_the_composition_alone(library, capsys):
    from compose import save as compose_save
    from skills import evaluate

    assert compose_save.main(["reach+avoid", "--library", str(library), "--no-progress"]) == 0
    assert "saved" in capsys.readouterr().out and (library / "reach+avoid.composed" / "v1").is_dir()
    assert evaluate.main(["reach+avoid.composed", "--library", str(library), "--episodes", "2"]) == 0
    assert "reach+avoid.composed" in capsys.readouterr().out
    with pytest.raises(ValueError, match="its own weights"):
        compose.load("reach+avoid.composed", weights=[0.5, 0.5], library=str(library))
    assert compose_save.main(["reach+nothing", "--library", str(library)]) == 2
    assert "unknown skill 'nothing'" in capsys.readouterr().err
    # a saved name saves again as it is (a new version), with no weights or operator given
    assert compose_save.main(["reach+avoid.composed", "--library", str(library), "--no-progress"]) == 0
    assert (library / "reach+avoid.composed" / "v2").is_dir()


def test_adapting_a_saved_composition_starts_from_what_it_holds(library, monkeypatch):
    """``compose.adapt NAME.composed`` starts from the saved sampler and ``Q_w + R``: nothing is rebuilt (a fresh
    composition is built)."""
    from compose.adaptation import build_unless_saved
    from compose.skill import ComposedSkill

    compose.load("reach+avoid", library=str(library)).save(progress=False)
    built = []
    monkeypatch.setattr(ComposedSkill, "build", lambda self, **kwargs: built.append(self.name))
    build_unless_saved(compose.load("reach+avoid.composed", library=str(library)), progress=False)
    assert built == []
    build_unless_saved(compose.load("reach+avoid", library=str(library)), progress=False)
    assert built == ["reach+avoid"]


def test_compose_save_cli_keeps_dc_and_skills_evaluate_runs_it(library, capsys):
    """``--operator dc`` (the shipped cache's fit: no refit) saves ``reach+avoid.dc.composed``, whose Q is the
    composition's ``Q_w - C_w``; operators whose energy is not ``Q_w + R`` are not offered."""
    from compose import save as compose_save
    from skills import evaluate

    assert compose_save.main(["reach+avoid", "--operator", "dc", "--library", str(library), "--no-progress"]) == 0
    assert (library / "reach+avoid.dc.composed" / "v1").is_dir()
    capsys.readouterr()
    obs, act = states(), np.zeros((6, 3), np.float32)
    expected = compose.load("reach+avoid", operator="dc", library=str(library)).q(obs, act)
    saved = skills.load("reach+avoid.dc.composed", str(library))
    with torch.no_grad():
        got = saved.agent.q(torch.as_tensor(obs), torch.as_tensor(act)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    assert evaluate.main(["reach+avoid.dc.composed", "--library", str(library), "--episodes", "2"]) == 0
    assert "reach+avoid.dc.composed" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        compose_save.main(["reach+avoid", "--operator", "gpi", "--library", str(library)])
    assert "invalid choice: 'gpi'" in capsys.readouterr().err


def test_compose_save_into_a_library_without_the_constituents_is_refused_before_building(library, tmp_path, capsys,
                                                                                           monkeypatch):
    """``--out`` must hold the constituents (a saved composition reopens them from its own library); a save that would
    be refused is refused at once, not after the sampler is built."""
    from compose import save as compose_save
    from compose.skill import ComposedSkill

    def no_build(self, *args, **kwargs):
        raise AssertionError("built before the refusal")

    monkeypatch.setattr(ComposedSkill, "build", no_build)
    (tmp_path / "elsewhere").mkdir()
    assert compose_save.main(["reach+avoid", "--library", str(library), "--out", str(tmp_path / "elsewhere")]) == 2
    err = capsys.readouterr().err
    assert "cannot save into" in err and "constituent reach v1 lives in" in err
    assert not any((tmp_path / "elsewhere").iterdir())
