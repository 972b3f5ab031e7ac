"""The skill format and library: round trips, reproducibility, bad input, nothing lost."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import skills
from skills import evaluate as evaluate_cli
from skills import train as train_cli
from skills.library import sha256_file as _sha256
from skills.sql.learner import SQLConfig
from skills.training import TrainConfig, Trainer

TINY_SQL = SQLConfig(alpha=10.0, obs_scale=0.2, hidden=(32, 32), warmup_steps=100, batch_size=32,
                     particles=8, value_samples=8)
TINY_RUN = TrainConfig(steps=300, seed=0, eval_interval=150, eval_episodes=2, final_eval_episodes=3, progress=False,
                       convergence=False)


def train_tiny(library: Path, seed: int = 0, steps: int = 300, **kwargs) -> Path:
    return Trainer("multigoal", TINY_SQL, replace(TINY_RUN, seed=seed, steps=steps), out=library, **kwargs).train().path


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("library")
    train_tiny(root)
    return root


def test_skill_directory_has_weights_manifest_and_transitions(library):
    path = library / "multigoal" / "v1"
    assert {p.name for p in path.iterdir()} >= {"manifest.json", "weights.safetensors", "transitions.npz",
                                                "progress.csv", "learning_curve.png"}
    manifest = json.loads((path / "manifest.json").read_text())
    for key in ("format_version", "task", "observation_space", "action_space", "alpha", "gamma", "architecture",
                "hyperparameters", "seed", "env_steps", "wall_time_s", "metrics", "library_versions"):
        assert key in manifest, key
    assert manifest["status"] == "complete" and manifest["env_steps"] == 300
    assert {"torch", "mujoco", "gymnasium", "numpy"} <= set(manifest["library_versions"])
    tensors = load_file(str(path / "weights.safetensors"))
    assert any(k.startswith("q.") for k in tensors) and any(k.startswith("q_target.") for k in tensors)
    assert any(k.startswith("sampler.") for k in tensors) and any(k.startswith("optim.q.") for k in tensors)
    with np.load(path / "transitions.npz", allow_pickle=False) as data:
        assert data["obs"].dtype == np.float32 and 0 < len(data["obs"]) <= 10_000


def test_save_load_round_trip_gives_identical_outputs(library, tmp_path):
    skill = skills.load("multigoal", library)
    copy_dir = tmp_path / "copy" / "multigoal" / "v1"
    from skills.library import write_skill

    write_skill(copy_dir, skill.agent, skill.info, skill.transitions)
    again = skills.load(copy_dir)
    obs = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
    act = np.random.default_rng(1).uniform(-1, 1, size=(16, 2)).astype(np.float32)
    np.testing.assert_array_equal(skill.q(obs, act), again.q(obs, act))
    torch.manual_seed(5)
    first = skill.sample(obs, 4)
    torch.manual_seed(5)
    np.testing.assert_array_equal(first, again.sample(obs, 4))
    gen = [torch.Generator().manual_seed(3) for _ in range(2)]
    np.testing.assert_array_equal(skill.value(obs, generator=gen[0]), again.value(obs, generator=gen[1]))
    assert again.act(obs[0]).shape == (2,)
    assert again.manifest["env_steps"] == skill.manifest["env_steps"]


def test_same_seed_gives_identical_weights(tmp_path):
    a = load_file(str(train_tiny(tmp_path / "a", seed=3, steps=200) / "weights.safetensors"))
    b = load_file(str(train_tiny(tmp_path / "b", seed=3, steps=200) / "weights.safetensors"))
    c = load_file(str(train_tiny(tmp_path / "c", seed=4, steps=200) / "weights.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not all(torch.equal(a[k], c[k]) for k in a if k.startswith("q."))


def test_env_in_child_process_changes_nothing(tmp_path):
    """The env stepping in a child process during the update (the default) gives the weights
    of the in-process loop, and training stops the child."""
    weights = []
    for overlap in (True, False):
        run = replace(TINY_RUN, seed=5, steps=200, overlap_env_step=overlap)
        trainer = Trainer("multigoal", TINY_SQL, run, out=tmp_path / str(overlap))
        path = trainer.train().path
        assert trainer.env.closed
        weights.append(load_file(str(path / "weights.safetensors")))
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def test_ctrl_c_reaches_the_trainer_not_its_env_process(tmp_path):
    """The env's child process ignores SIGINT, so Ctrl-C cannot kill it under the trainer, and the
    trainer's own handler is left as it was. Hermetic: a suite started in the background inherits
    SIGINT ignored, so the test installs Python's default handler itself and restores the original."""
    import os
    import signal

    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        trainer = Trainer("multigoal", TINY_SQL, TINY_RUN, out=tmp_path)
        trainer.step()
        os.kill(trainer.env.processes[0].pid, signal.SIGINT)
        try:
            for _ in range(20):
                trainer.step()
        except KeyboardInterrupt:  # gymnasium re-raises the worker's error here
            pytest.fail("the env process died of SIGINT")
        assert trainer.env.processes[0].is_alive()
        trainer.close()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)


@pytest.mark.parametrize("overlap", [True, False])
def test_episode_ends_store_the_final_observation(tmp_path, overlap):
    """The env resets itself in the step that ends an episode; the buffer must get the final
    observation as next_obs, and the next transition must start from the reset one."""
    trainer = Trainer("multigoal", TINY_SQL, replace(TINY_RUN, overlap_env_step=overlap), out=tmp_path)
    ended = [trainer.step() is not None for _ in range(150)]
    trainer.close()
    buffer = trainer.buffer
    continues = np.all(buffer.next_obs[:149] == buffer.obs[1:150], axis=1)
    assert sum(ended) >= 3
    assert np.array_equal(continues, ~np.array(ended[:149]))


def test_training_never_overwrites_and_name_resolves_to_newest(tmp_path):
    v1 = train_tiny(tmp_path, steps=150)
    digest = _sha256(v1 / "weights.safetensors")
    v2 = train_tiny(tmp_path, steps=150, seed=1)
    assert v1.name == "v1" and v2.name == "v2"
    assert _sha256(v1 / "weights.safetensors") == digest
    assert skills.resolve("multigoal", tmp_path) == v2
    assert skills.resolve("multigoal@v1", tmp_path) == v1
    assert [e.version for e in skills.list_skills(tmp_path)] == [1, 2]


def test_resume_continues_from_a_saved_skill(library, tmp_path):
    import shutil

    shutil.copytree(library / "multigoal", tmp_path / "multigoal")
    resumed = train_tiny(tmp_path, steps=150, resume="multigoal")
    manifest = json.loads((resumed / "manifest.json").read_text())
    assert resumed.name == "v2" and manifest["env_steps"] == 450
    assert manifest["resumed_from"] == "multigoal" and manifest["resumed_version"] == "multigoal@v1", "asked, and resolved"


def test_a_budget_inside_the_warm_up_is_said_to_make_no_update(tmp_path, capsys):
    """The review: ``skills.train reach --steps 300`` (warm-up 1000) saved a complete skill after 0 updates, silently."""
    from skills import train as train_cli

    args = ["multigoal", "--out", str(tmp_path), "--eval-episodes", "1", "--final-eval-episodes", "1", "--no-progress",
            "--no-overlap", "--no-convergence"]
    assert train_cli.main([*args, "--steps", "60"]) == 0
    assert "ends within the warm-up (1000 random steps before the first update): no update is made" in capsys.readouterr().out
    assert train_cli.main([*args, "--steps", "60", "--set", "warmup_steps=20"]) == 0
    assert "warm-up" not in capsys.readouterr().out


def test_a_skill_trained_on_one_device_loads_and_resumes_on_either(tmp_path, device):
    """Weights saved from ``device`` load on the CPU and on ``device`` with the same Q; resuming
    there restores the optimizer state onto that device."""
    run = replace(TINY_RUN, steps=200, device=device)
    path = Trainer("multigoal", TINY_SQL, run, out=tmp_path).train().path
    on_cpu, on_device = skills.load(path), skills.load(path, device=device)
    assert on_device.device.type == device
    obs = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
    act = np.random.default_rng(1).uniform(-1, 1, size=(16, 2)).astype(np.float32)
    np.testing.assert_allclose(on_cpu.q(obs, act), on_device.q(obs, act), rtol=1e-5, atol=1e-5)
    assert on_device.act(obs[0]).shape == (2,)
    resumed = Trainer("multigoal", TINY_SQL, replace(run, steps=100), out=tmp_path, resume=path).train()
    assert resumed.env_steps == 300 and resumed.path.name == "v2"


def test_unusable_device_in_train_cli(capsys):
    assert train_cli.main(["reach", "--steps", "10", "--device", "gpu"]) == 2
    assert "unknown torch device 'gpu'" in capsys.readouterr().err


def test_unknown_skill_name_lists_valid_ones(library):
    with pytest.raises(KeyError, match="Valid skills: multigoal"):
        skills.load("multigoall", library)


def test_unknown_task_in_train_cli(capsys):
    assert train_cli.main(["reech", "--steps", "10"]) == 2
    assert "Did you mean 'reach'" in capsys.readouterr().err


def test_train_cli_set_changes_a_fresh_runs_sql_settings_and_the_manifest_records_them(tmp_path):
    """``--set NAME=VALUE`` overrides the task's SQL defaults for a fresh run (the value read as the field's type), and
    the skill's manifest carries the settings it was trained with; the other settings keep the task's defaults."""
    from skills.training.defaults import sql_config

    assert train_cli.main(["multigoal", "--steps", "60", "--eval-interval", "60", "--eval-episodes", "1",
                           "--final-eval-episodes", "1", "--no-progress", "--no-convergence", "--out", str(tmp_path),
                           "--set", "random_episodes=0.25", "--set", "hidden=16,16", "--set", "warmup_steps=20"]) == 0
    manifest = json.loads((tmp_path / "multigoal" / "v1" / "manifest.json").read_text())
    used, default = manifest["hyperparameters"], sql_config("multigoal", "multigoal").to_dict()
    assert (used["random_episodes"], used["hidden"], used["warmup_steps"]) == (0.25, [16, 16], 20)
    unchanged = set(used) - {"random_episodes", "hidden", "warmup_steps"}
    assert len(unchanged) > 10 and {k: used[k] for k in unchanged} == {k: default[k] for k in unchanged}
    assert (manifest["alpha"], manifest["gamma"]) == (default["alpha"], default["gamma"])


@pytest.mark.parametrize("argv, message", [
    (["--set", "foo=1"], "unknown SQL setting 'foo'; valid: batch_size,"),
    (["--set", "random_episodes=x"], "random_episodes takes a number, got 'x'"),
    (["--set", "hidden=64,x"], "hidden takes whole numbers joined by commas"),
    (["--set", "cache_target_values=yes"], "cache_target_values takes true or false"),
    (["--set", "alpha=0.1"], "its own option: --alpha"),
    (["--set", "gamma=0.9"], "the discount is the task family's"),
    (["--set", "particles"], "expected NAME=VALUE"),
    (["--set", "particles=4", "--set", "particles=8"], "--set gives particles more than once"),
    (["--resume", "multigoal", "--set", "particles=4"], "a resumed skill keeps the ones it was trained with"),
])
def test_train_cli_refuses_a_bad_set_up_front(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        train_cli.main(["multigoal", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err, err
    assert not any(tmp_path.iterdir())


def test_train_cli_refuses_a_set_value_out_of_range_naming_it(tmp_path, capsys):
    assert train_cli.main(["multigoal", "--steps", "10", "--out", str(tmp_path), "--set", "random_episodes=3"]) == 2
    assert "random_episodes=3.0 (a finite number >= 0.0, <= 1.0)" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def copy_skill(library: Path, tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / "lib" / "multigoal" / "v1"
    shutil.copytree(library / "multigoal" / "v1", dst)
    return dst


def test_truncated_weights_give_a_clear_error(library, tmp_path):
    path = copy_skill(library, tmp_path)
    data = (path / "weights.safetensors").read_bytes()
    (path / "weights.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(skills.CorruptSkillError, match="truncated"):
        skills.load(path)


def test_truncated_weights_with_matching_checksum_still_give_a_clear_error(library, tmp_path):
    path = copy_skill(library, tmp_path)
    data = (path / "weights.safetensors").read_bytes()
    (path / "weights.safetensors").write_bytes(data[: len(data) // 2])
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["weights.safetensors"] = _sha256(path / "weights.safetensors")
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(skills.CorruptSkillError, match="cannot read weights"):
        skills.load(path)


def test_corrupt_manifest_gives_a_clear_error(library, tmp_path):
    path = copy_skill(library, tmp_path)
    text = (path / "manifest.json").read_text()
    (path / "manifest.json").write_text(text[: len(text) // 3])
    with pytest.raises(skills.CorruptSkillError, match="not valid JSON"):
        skills.load(path)


def test_manifest_from_a_future_format_version_is_refused(library, tmp_path):
    path = copy_skill(library, tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(skills.UnsupportedFormatError, match="newer than this toolkit"):
        skills.load(path)


def test_loading_never_unpickles(library, tmp_path):
    path = copy_skill(library, tmp_path)
    with open(path / "transitions.npz", "wb") as f:
        np.savez(f, obs=np.array([{"evil": 1}], dtype=object))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["transitions.npz"] = _sha256(path / "transitions.npz")
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(skills.CorruptSkillError):
        skills.load(path)


def test_interrupted_save_leaves_the_existing_skill_intact(library, tmp_path, monkeypatch):
    from skills.library import files as lib

    path = copy_skill(library, tmp_path)
    before = {p.name: _sha256(p) for p in path.iterdir()}
    skill = skills.load(path)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(lib, "save_file", crash)
    with pytest.raises(OSError):
        lib.write_skill(path, skill.agent, skill.info, skill.transitions)
    assert {p.name: _sha256(p) for p in path.iterdir()} == before
    skills.load(path)


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    from skills.training import buffer

    original = buffer.ReplayBuffer.sample
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        batch = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 150:  # CLI defaults: 1000 warm-up steps, so the NaN comes at step 1151
            batch["reward"] = batch["reward"] * float("nan")
        return batch

    v1 = train_tiny(tmp_path, steps=150)  # an earlier, complete version must survive
    digest = _sha256(v1 / "weights.safetensors")
    calls["n"] = -10**9
    monkeypatch.setattr(buffer.ReplayBuffer, "sample", poisoned)
    calls["n"] = 0
    code = train_cli.main(["multigoal", "--steps", "1300", "--out", str(tmp_path), "--eval-interval", "100",
                           "--eval-episodes", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 3 and "non-finite loss" in err and "last good checkpoint" in err
    assert _sha256(v1 / "weights.safetensors") == digest
    v2 = tmp_path / "multigoal" / "v2"
    manifest = json.loads((v2 / "manifest.json").read_text())
    assert manifest["status"] == "diverged" and manifest["env_steps"] == 1100
    kept = skills.load(v2)
    for p in kept.agent.q.parameters():
        assert torch.isfinite(p).all()
    assert skills.resolve("multigoal", tmp_path) == v1  # the diverged run is not picked by name


def test_evaluate_cli_writes_json_with_required_keys(library, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert evaluate_cli.main(["multigoal", "--library", str(library), "--episodes", "3", "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert {"success_rate", "return_mean", "collision_rate", "episodes"} <= set(metrics)
    assert metrics["episodes"] == 3
    assert "success rate" in capsys.readouterr().out


@pytest.mark.parametrize("module", ["skills.train", "skills.evaluate", "skills.polish", "skills"])
def test_clis_have_help(module):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage" in done.stdout


def test_stochastic_evaluation_is_reproducible(library):
    from skills.evaluate import evaluate_skill

    first = evaluate_skill("multigoal", episodes=3, deterministic=False, library=str(library))
    second = evaluate_skill("multigoal", episodes=3, deterministic=False, library=str(library))
    assert first["return_mean"] == second["return_mean"]
    assert first["term_returns"] == second["term_returns"]


@pytest.mark.parametrize("task", ["reach", "push-x", "reach+avoid"])
def test_every_family_trains_saves_and_loads(tmp_path, task):
    """A few hundred steps through the real trainer on each MuJoCo family (not a learning test)."""
    import envs

    sql = replace(TINY_SQL, alpha=0.05, obs_scale=1.0)
    path = Trainer(task, sql, replace(TINY_RUN, steps=150, eval_interval=150), out=tmp_path).train().path
    skill = skills.load(path)
    env = envs.make(task)
    obs, _ = env.reset(seed=0)
    action = skill.act(obs)
    assert action.shape == env.action_space.shape and np.all(np.abs(action) <= 1)
    assert skill.manifest["family"] == envs.TASKS[task].family.name and skill.manifest["env_steps"] == 150


def test_training_records_the_convergence_report_and_its_plot(tmp_path):
    """The trainer's final report: Monte Carlo soft returns and Bellman residuals in the manifest, a
    PNG beside it, and the same record from ``skills.evaluate --convergence``."""
    from skills import evaluate

    path = Trainer("multigoal", TINY_SQL, replace(TINY_RUN, convergence=True), out=tmp_path).train().path
    record = skills.load(path).manifest["convergence"]
    for key in ("V0_mean", "soft_return_gap", "soft_return_gap_se", "rollout_steps", "tail_bound",
                "bellman_residual_mean", "bellman_residual_rms", "goal"):
        assert key in record
    assert record["stored"]["transitions"] > 0 and record["on_policy"]["transitions"] > 0
    assert (path / "convergence.png").stat().st_size > 10_000
    assert evaluate.main([str(path), "--convergence", "--start-states", "2", "--rollouts", "2"]) == 0
    rerun = skills.load(path).manifest["convergence"]
    assert rerun["start_states"] == 2 and rerun["gamma"] == record["gamma"]


def test_a_library_that_is_not_there_is_said_so(tmp_path, capsys):
    """Listing, or loading from, a library folder that does not exist says so (exit 2), not '(empty)'."""
    from skills.__main__ import main

    assert main(["--library", str(tmp_path / "nowhere")]) == 2
    assert "no library at" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"in .*nowhere \(no such folder\)"):
        skills.load("reach", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"unknown version 'v9' in skill 'reach' \(.*reach\)\. Valid versions: v1"):
        skills.load("reach@v9", str(Path(__file__).resolve().parents[1] / "trained"))


def test_the_listing_shows_a_dash_where_a_manifest_has_no_figure():
    """The review: a saved composition (no evaluation, no wall time) was listed as ``nan``."""
    from skills.__main__ import number

    assert number(None, ".2f", 8) == "       –" and number(0.5, ".2f", 8) == "    0.50" and number(True, ".2f") == "–"


def test_the_library_listing_prints_every_skill_and_a_markdown_table(capsys):
    """``python -m skills`` on the shipped library: one line per skill; ``--markdown`` one table row per skill with its
    convergence verdicts recomputed from the stored record (agreeing with the stored goal)."""
    from skills.__main__ import main

    shipped = Path(__file__).resolve().parents[1] / "trained"
    manifests = sorted(shipped.glob("*/v*/manifest.json"))
    assert main(["--library", str(shipped)]) == 0
    plain = capsys.readouterr().out
    assert all(f"{m.parts[-3]}@{m.parts[-2]}" in plain for m in manifests)
    main(["--library", str(shipped), "--markdown"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| `")]
    assert len(rows) == len(manifests)
    for manifest in manifests:
        goal = json.loads(manifest.read_text())["convergence"]["goal"]
        row = next(r for r in rows if r.startswith(f"| `{manifest.parts[-3]}` {manifest.parts[-2]} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[-2] == ("✔" if goal["soft_return_gap"] else "✘")
        assert cells[-1].startswith("✔" if goal["bellman_residual"] else "✘"), (manifest, cells[-1])
