"""The skill library under concurrency, crashes and hostile files (issue: nothing lost, nothing silent).

Each test reproduces one defect that a careful tester found, and checks the guarantee that replaced it
(docs/skills.md, "What the library guarantees")."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from library_helpers import copy_version, edit_manifest
from safetensors.torch import load_file, save_file
from test_skills import TINY_RUN, TINY_SQL

import envs
import skills
from skills.library import sha256_file, store, write_skill
from skills.training import Trainer

ROOT = Path(__file__).resolve().parent.parent
TRAIN = [sys.executable, "-m", "skills.train", "multigoal", "--steps", "300", "--eval-interval", "300",
         "--eval-episodes", "1", "--final-eval-episodes", "1", "--no-progress", "--no-convergence"]


def hermetic_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "COMPOSABLE_SKILLS_LIBRARY"}
    return env | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# ---- 1. concurrent writers ---------------------------------------------------------------------------
def test_two_concurrent_trainings_of_one_task_both_keep_their_versions(tmp_path):
    runs = [subprocess.Popen([*TRAIN, "--seed", str(seed), "--out", str(tmp_path)], cwd=tmp_path, env=hermetic_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    entries = skills.list_skills(tmp_path)
    assert sorted((e.version, e.info.status) for e in entries) == [(1, "complete"), (2, "complete")]
    assert sorted(e.info.seed for e in entries) == [1, 2]
    assert sorted(p.name for p in (tmp_path / "multigoal").iterdir()) == [".lock", "v1", "v2"]  # no leftovers


def test_a_claimed_version_is_never_given_twice_and_published_versions_are_never_replaced(tiny, tmp_path):
    first, second = store.claim_version(tmp_path / "multigoal"), store.claim_version(tmp_path / "multigoal")
    assert (first.name, second.name) == ("v1", "v2")
    skill = skills.load(tiny)
    manifest = skill.info.with_fields(version=1)
    write_skill(first, skill.agent, manifest, skill.transitions)
    with pytest.raises(store.PublishedVersionError, match="never replaced"):
        write_skill(first, skill.agent, manifest, skill.transitions)
    assert skills.load("multigoal@v1", tmp_path).manifest["files"] == json.loads(
        (first / "manifest.json").read_text())["files"]


# ---- 2. crashes ---------------------------------------------------------------------------------------
WRITER = """
import sys, itertools
from pathlib import Path
import skills
from skills.library import write_skill
skill = skills.load(sys.argv[1])
manifest = skill.info.with_fields(status="training")
print("ready", flush=True)
for i in itertools.count():
    write_skill(Path(sys.argv[2]), skill.agent, manifest.with_fields(updates=i), skill.transitions)
"""


def test_kill_9_during_publish_leaves_a_complete_version_and_nothing_that_trips_later_runs(tiny, tmp_path):
    library = tmp_path / "lib"
    target = copy_version(tiny, library)
    edit_manifest(target, status="training")
    rng = np.random.default_rng(0)
    for _ in range(8):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tiny), str(target)], env=hermetic_env(),
                                  stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.05, 0.6)))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        with store.name_lock(library / "multigoal"):
            store.recover(library / "multigoal")
        skills.load(target)  # complete and checksums intact, whichever copy survived
        assert sorted(p.name for p in (library / "multigoal").iterdir()) == [".lock", "v1"]
    assert store.claim_version(library / "multigoal").name == "v2"


def test_recovery_puts_back_the_new_version_after_a_crash_between_the_two_renames(tiny, tmp_path):
    directory = tmp_path / "multigoal"
    old = copy_version(tiny, tmp_path)
    host, pid = socket.gethostname(), dead_pid()
    stage = directory / f".v1.tmp.{pid}@{host}"
    shutil.copytree(old, stage)
    edit_manifest(stage, updates=12345)
    old.rename(directory / f".v1.old.{pid}.99@{host}")  # the writer died here: v1 is missing
    live_stage = directory / f".v2.tmp.{os.getpid()}@{host}"  # someone else's live write: left alone
    live_stage.mkdir()
    orphan_log = directory / ".v7.progress.csv"
    orphan_log.write_text("env_steps\n")
    with store.name_lock(directory):
        done = store.recover(directory)
    assert any("restored" in d for d in done)
    assert skills.load(directory / "v1").manifest["updates"] == 12345  # the new, complete stage won
    assert live_stage.exists() and not orphan_log.exists()
    assert not list(directory.glob(".v1.*"))


def test_a_run_that_dies_before_its_first_checkpoint_gives_its_version_back(tmp_path, monkeypatch):
    trainer = Trainer("multigoal", TINY_SQL, replace(TINY_RUN, steps=300), out=tmp_path)
    assert store.is_claim_only(trainer.path)

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert not trainer.path.exists() and not trainer.log_path.exists()
    claim = store.claim_version(tmp_path / "multigoal")
    (claim / store.CLAIM).write_text(json.dumps({"host": socket.gethostname(), "pid": dead_pid()}))
    assert store.claim_version(tmp_path / "multigoal").name == "v1"  # the dead run's claim was released and reused


# ---- 3. hostile manifests -------------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    ({"files": {"/dev/zero": "0" * 64, "weights.safetensors": "0" * 64, "transitions.npz": "0" * 64}},
     "a skill's checksummed files are only"),
    ({"hyperparameters": "x"}, "'hyperparameters' must be a JSON object"),
    ({"alpha": "hot"}, "'alpha' must be a finite number > 0"),
    ({"gamma": 2.0}, "'gamma' must be a finite number in"),
    ({"observation_space": {"shape": [10 ** 9]}}, "observation_space.shape"),
    ({"format_version": 0}, "format_version must be a positive integer"),
    ({"format_version": -5}, "format_version must be a positive integer"),
    ({"format_version": True}, "format_version must be a positive integer"),
    ({"status": "done"}, "status must be one of"),
    ({"name": "../../etc"}, "'name' must be a skill name"),
])
def test_hostile_manifests_give_clear_errors_before_anything_is_opened_or_sized(tiny, tmp_path, change, message):
    path = copy_version(tiny, tmp_path)
    edit_manifest(path, **change)
    with pytest.raises(skills.CorruptSkillError, match=message.replace("(", r"\(").replace("[", r"\[")):
        skills.load(path)


def test_missing_fields_and_future_formats_are_named(tiny, tmp_path):
    path = copy_version(tiny, tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["task"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(skills.CorruptSkillError, match="missing field 'task'"):
        skills.load(path)
    edit_manifest(path, task="multigoal", format_version=99)
    with pytest.raises(skills.UnsupportedFormatError, match="newer than this toolkit reads"):
        skills.load(path)


def test_huge_networks_in_a_small_file_are_refused_before_allocation(tiny, tmp_path):
    path = copy_version(tiny, tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    edit_manifest(path, hyperparameters=manifest["hyperparameters"] | {"hidden": [8192, 8192]})
    with pytest.raises(skills.CorruptSkillError, match="need .* numbers, but weights.safetensors holds at most"):
        skills.load(path)
    edit_manifest(path, hyperparameters=manifest["hyperparameters"] | {"hidden": [40000, 40000]})  # beyond any bound
    with pytest.raises(skills.CorruptSkillError, match=r"hidden=\(40000, 40000\) \(1 to 16 widths"):
        skills.load(path)


def test_non_finite_weights_are_refused(tiny, tmp_path):
    path = copy_version(tiny, tmp_path)
    tensors = load_file(str(path / "weights.safetensors"))
    tensors["q.net.0.weight"][0, 0] = float("nan")
    save_file(tensors, str(path / "weights.safetensors"))
    edit_manifest(path, files={"weights.safetensors": sha256_file(path / "weights.safetensors"),
                               "transitions.npz": sha256_file(path / "transitions.npz")})
    with pytest.raises(skills.CorruptSkillError, match="non-finite values in \\['q.net.0.weight'\\]"):
        skills.load(path)


def test_the_cli_reports_a_hostile_manifest_in_one_line(tiny, tmp_path, capsys):
    from skills import evaluate

    path = copy_version(tiny, tmp_path)
    edit_manifest(path, alpha=None)
    assert evaluate.main([str(path), "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "'alpha'" in err and "\n" not in err


# ---- 4. no silent fallback ---------------------------------------------------------------------------
def test_an_unreadable_newest_version_is_an_error_not_a_silent_step_back(tiny, tmp_path):
    copy_version(tiny, tmp_path, version=1)
    newest = copy_version(tiny, tmp_path, version=2)
    (newest / "manifest.json").write_text("{ truncated")
    with pytest.raises(skills.CorruptSkillError, match="the newest version of 'multigoal'.*Older versions: v1"):
        skills.load("multigoal", tmp_path)
    assert skills.resolve("multigoal", tmp_path, fallback=True).name == "v1"
    assert skills.load("multigoal@v1", tmp_path).path.name == "v1"


def test_names_resolve_in_the_library_never_in_the_working_directory(tiny, tmp_path, monkeypatch):
    library = tmp_path / "lib"
    copy_version(tiny, library)
    decoy = tmp_path / "cwd" / "multigoal"
    shutil.copytree(tiny, decoy)
    edit_manifest(decoy, seed=999)
    monkeypatch.chdir(tmp_path / "cwd")
    assert skills.load("multigoal", library).path == library / "multigoal" / "v1"
    assert skills.load("./multigoal").path == Path("./multigoal")  # a path, when written as one


def test_a_version_directory_holding_another_skill_is_refused(tiny, tmp_path):
    other = copy_version(tiny, tmp_path / "lib", name="avoid")  # a link inside the library, to another skill
    (tmp_path / "lib" / "multigoal").mkdir(parents=True)
    (tmp_path / "lib" / "multigoal" / "v1").symlink_to(other, target_is_directory=True)
    with pytest.raises(skills.CorruptSkillError, match="holds skill 'avoid' v1, not 'multigoal' v1"):
        skills.load("multigoal", tmp_path / "lib")
    outside = copy_version(tiny, tmp_path / "elsewhere")  # a link out of the library: refused before it is read
    (tmp_path / "lib" / "multigoal" / "v1").unlink()
    (tmp_path / "lib" / "multigoal" / "v1").symlink_to(outside, target_is_directory=True)
    with pytest.raises(skills.CorruptSkillError, match="is outside .*lib; only files inside it are read"):
        skills.load("multigoal@v1", tmp_path / "lib")


# ---- 5. the composition cache -----------------------------------------------------------------------
@pytest.fixture
def two_skills(tiny, tmp_path) -> Path:
    library = tmp_path / "lib"
    copy_version(tiny, library, version=1)
    second = copy_version(tiny, library, version=2)
    tensors = load_file(str(second / "weights.safetensors"))
    save_file({k: v * 1.01 if k.startswith("q.") else v for k, v in tensors.items()}, str(second / "weights.safetensors"))
    edit_manifest(second, files={"weights.safetensors": sha256_file(second / "weights.safetensors"),
                                 "transitions.npz": sha256_file(second / "transitions.npz")})
    return library


def small_build(library: Path, spec=("multigoal@v1", "multigoal@v2")):
    from test_compose_run import FAST

    import compose
    from compose.build import build

    composition = compose.load(list(spec), library=str(library))
    return composition, build(composition, str(library), False, FAST["sampler_cfg"], FAST["bound_cfg"])


def test_a_poisoned_or_stale_cache_entry_is_refused_and_rebuilt(two_skills):
    _, first = small_build(two_skills)
    entry = Path(first.info["cache"])
    tensors = load_file(str(entry / "networks.safetensors"))
    save_file({k: v * float("nan") for k, v in tensors.items()}, str(entry / "networks.safetensors"))
    with pytest.warns(UserWarning, match="does not match its recorded checksum; rebuilding"):
        _, rebuilt = small_build(two_skills)
    assert not rebuilt.cached and small_build(two_skills)[1].cached
    manifest = json.loads((entry / "manifest.json").read_text())
    (entry / "manifest.json").write_text(json.dumps(manifest | {"constituents_sha256": ["0" * 64] * 2}))
    with pytest.warns(UserWarning, match="built for other constituents"):
        assert not small_build(two_skills)[1].cached


def test_a_spec_made_of_paths_keeps_its_cache_under_the_library(two_skills):
    paths = [str(two_skills / "multigoal" / "v1"), str(two_skills / "multigoal" / "v2")]
    _, built = small_build(two_skills, paths)
    assert Path(built.info["cache"]).parent == two_skills / ".composed"


def test_a_build_that_cannot_be_cached_still_returns_and_says_why(two_skills, monkeypatch):
    from compose import build as build_module

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(build_module, "save_cached", read_only)
    with pytest.warns(UserWarning, match="could not cache the composition"):
        composition, built = small_build(two_skills)
    assert built.info["cache"] is None and "Read-only" in built.info["cache_error"]
    assert built.sampler is not None


# ---- 6. bad inputs ---------------------------------------------------------------------------------------
def test_bad_observations_actions_and_settings_are_refused_with_the_expected_shape(tiny):
    from skills.training import TrainConfig

    skill = skills.load(tiny)
    with pytest.raises(ValueError, match=r"shape \[2\] or \[batch, 2\], got \[4, 6\]"):
        skill.value(np.zeros((4, 6)))
    with pytest.raises(ValueError, match="must be finite"):
        skill.act(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match="must be finite"):
        skill.sample(torch.tensor([[np.inf, 0.0]]), 3)
    env = envs.make("multigoal")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action must be finite"):
        env.step(np.array([np.nan, 0.0]))
    obs, *_ = env.step(np.zeros(2))
    assert np.all(np.isfinite(obs))  # the refused NaN did not poison the state
    with pytest.raises(ValueError, match="steps=0"):
        TrainConfig(steps=0)


def test_a_nan_workspace_origin_is_refused():
    with pytest.raises(ValueError, match="workspace_origin must be three finite numbers"):
        envs.make("reach", arm=str(ROOT / "examples" / "arm" / "three_link_arm.xml"), ee_site="ee",
                  workspace_origin=(float("nan"), 0.0, 0.3))


@pytest.mark.parametrize("argv, message", [
    (["skills.train", "multigoal", "--steps", "0"], "--steps: must be >= 1, got 0"),
    (["compose.run", "reach+avoid", "--weights", "a,b"], "expected comma-separated numbers"),
    (["skills.evaluate", "reach", "--episodes", "0"], "--episodes: must be >= 1, got 0"),
    (["compose.run", "reach+avoid", "--workspace-origin", "nan,0,0.3"], "three finite numbers"),
])
def test_cli_mistakes_are_one_clear_line_and_a_non_zero_exit(argv, message):
    result = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, env=hermetic_env(), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_an_output_path_that_is_a_file_fails_at_once_with_one_line(tmp_path, capsys):
    from compose import run as compose_run

    blocker = tmp_path / "report"
    blocker.write_text("not a directory")
    assert compose_run.main(["reach+avoid", "--out", str(blocker), "--episodes", "1", "--no-progress"]) == 1
    assert "error: cannot write" in capsys.readouterr().err


def test_a_full_disk_while_training_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    from skills import train as train_cli
    from skills.library import files as lib

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lib, "save_file", full)
    code = train_cli.main(["multigoal", "--steps", "150", "--eval-interval", "100", "--eval-episodes", "1",
                           "--final-eval-episodes", "1", "--no-progress", "--no-convergence", "--out", str(tmp_path)])
    assert code == 1 and "No space left on device" in capsys.readouterr().err
    assert not (tmp_path / "multigoal" / "v1").exists()  # the claim was given back
