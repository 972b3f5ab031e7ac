"""Adding skills trained elsewhere to a library (``python -m skills.add``, ``skills.library.transfer``): checked as a
load checks, copied atomically under the next free version, never twice, hostile sources refused without a trace."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from library_helpers import SHIPPED, copy_version, edit_manifest
from safetensors.torch import load_file, save_file

import skills
from skills.add import main
from skills.library import sha256_file
from skills.library.transfer import add_skills, add_version, source_versions

ROOT = Path(__file__).resolve().parent.parent


def versions(library: Path, name: str = "multigoal") -> list[str]:
    """Every entry under a skill's folder but its lock: versions, claims or leftovers."""
    return sorted(p.name for p in (library / name).iterdir() if p.name != ".lock") if (library / name).is_dir() else []


def test_a_skill_is_added_as_the_next_version_with_its_origin_and_loads(tiny, tmp_path):
    dst = tmp_path / "dst"
    copy_version(tiny, dst)
    source = copy_version(tiny, tmp_path / "src", version=3)
    added = add_version(source, dst)
    assert added.outcome == "present", "the same weights under the same name are not copied twice"
    edit_manifest(dst / "multigoal" / "v1", status="diverged")  # no longer a complete copy: the source is added
    added = add_version(source, dst)
    assert added.outcome == "added" and added.path == dst / "multigoal" / "v2"
    manifest = json.loads((added.path / "manifest.json").read_text())
    assert manifest["version"] == 2 and manifest["imported_from"]["version"] == 3
    assert manifest["imported_from"]["path"] == str(source.resolve())
    assert manifest["files"] == json.loads((source / "manifest.json").read_text())["files"]
    assert {p.name for p in added.path.iterdir()} == {p.name for p in source.iterdir()}
    skill = skills.load("multigoal", library=dst)
    assert skill.manifest["imported_from"]["weights_sha256"] == manifest["files"]["weights.safetensors"]
    assert versions(dst) == ["v1", "v2"], "no claim, stage or leftover remains"


def test_two_adds_of_the_same_weights_at_once_publish_it_once(tiny, tmp_path, monkeypatch):
    """The race: both runs find nothing present, then one publishes while the other stages. The later publication is
    called off under the name's lock, its claim given back, and it reports the other's version."""
    from skills.library import transfer

    dst = tmp_path / "dst"
    first, second = copy_version(tiny, tmp_path / "a", version=2), copy_version(tiny, tmp_path / "b", version=5)
    claim = transfer.claim_version_dir
    other: list = []

    def claim_after_the_other_writer(name, library=None):
        monkeypatch.setattr(transfer, "claim_version_dir", claim)
        other.append(add_version(first, dst))  # the concurrent writer wins while this one is past its first check
        return claim(name, library)

    monkeypatch.setattr(transfer, "claim_version_dir", claim_after_the_other_writer)
    added = add_version(second, dst)
    assert other[0].outcome == "added" and other[0].path == dst / "multigoal" / "v1"
    assert added.outcome == "present" and added.path == dst / "multigoal" / "v1", added
    assert versions(dst) == ["v1"], "the later writer's claim and stage are gone"


def test_a_library_source_adds_complete_skills_once_and_skips_the_rest_with_reasons(tiny, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    copy_version(tiny, src, version=1)
    edit_manifest(copy_version(tiny, src, name="running", version=1), status="training")
    (src / "multigoal" / "v2").mkdir()
    (src / "multigoal" / "v2" / ".claim").write_text("{}")  # a run still starting: not a version yet
    results, problems = add_skills([src], dst)
    outcome = {(r.name, r.outcome) for r in results}
    assert outcome == {("multigoal", "added"), ("running", "skipped")} and not problems
    assert "training" in next(r.reason for r in results if r.outcome == "skipped")
    again, _ = add_skills([src / "multigoal"], dst)
    assert [r.outcome for r in again] == ["present"] and versions(dst) == ["v1"]


def test_a_saved_composition_is_skipped_with_what_to_do(tiny, tmp_path):
    version = copy_version(tiny, tmp_path / "src")
    edit_manifest(version, composed_from={"constituents": [{"spec": "multigoal", "name": "multigoal", "version": 1,
                                                            "weights_sha256": "0" * 64}], "weights": [1.0]})
    skipped = add_version(version, tmp_path / "dst")
    assert skipped.outcome == "skipped" and "compose.save" in skipped.reason
    assert versions(tmp_path / "dst") == []
    adapted = copy_version(tiny, tmp_path / "adapted")  # an adapted skill holds its networks: it travels (the review)
    edit_manifest(adapted, adapted_from={"constituents": [{"spec": "multigoal", "name": "multigoal", "version": 1,
                                                           "weights_sha256": "0" * 64}], "weights": [1.0]})
    added = add_version(adapted, tmp_path / "dst")
    assert added.outcome == "added" and skills.load("multigoal", library=tmp_path / "dst").manifest["adapted_from"]


@pytest.mark.parametrize("damage, message", [
    ("weights", "checksum mismatch"),
    ("link", "outside"),
    ("fifo", "not a regular file"),
    ("nan", "non-finite values"),  # passes its checksum: refused when the staged copy is read back
])
def test_a_damaged_or_hostile_source_is_refused_and_leaves_nothing_behind(tiny, tmp_path, damage, message):
    src, dst = tmp_path / "src", tmp_path / "dst"
    version = copy_version(tiny, src)
    outside = tmp_path / "elsewhere.bin"
    if damage == "weights":
        with open(version / "weights.safetensors", "r+b") as f:
            f.seek(-8, os.SEEK_END)
            f.write(b"\x00" * 8)
    elif damage == "link":
        outside.write_bytes((version / "weights.safetensors").read_bytes())
        (version / "weights.safetensors").unlink()
        os.symlink(outside, version / "weights.safetensors")
    elif damage == "nan":
        tensors = load_file(str(version / "weights.safetensors"))
        tensors["q.net.0.weight"][0, 0] = float("nan")
        save_file(tensors, str(version / "weights.safetensors"))
        edit_manifest(version, files={name: sha256_file(version / name)
                                      for name in ("weights.safetensors", "transitions.npz")})
    else:
        (version / "progress.csv").unlink()
        os.mkfifo(version / "progress.csv")  # would block a reader that opened it
    results, problems = add_skills([src], dst)
    assert results == [] and len(problems) == 1 and message in problems[0], problems
    assert versions(dst) == [], "a refused source leaves no claim, stage or version"


def test_a_version_folder_linked_out_of_the_source_is_named_and_not_looked_into(tiny, tmp_path):
    src = tmp_path / "src"
    (src / "multigoal").mkdir(parents=True)
    os.symlink(tiny, src / "multigoal" / "v1")
    problems: list[str] = []
    assert source_versions(src, problems) == [] and "outside" in problems[0]


def test_an_added_skill_is_reused_by_a_study_with_matching_seed_and_settings(tmp_path):
    from compose.study import Settings, find_trained

    results, _ = add_skills([SHIPPED / "clear"], tmp_path / "lib")
    assert [r.outcome for r in results] == ["added"]
    found = find_trained("clear", 0, Settings(library=str(tmp_path / "lib"), out=str(tmp_path / "out")))
    assert found == str(tmp_path / "lib" / "clear" / "v1")


def test_the_cli_reports_each_version_and_exits_non_zero_when_nothing_could_be_added(tiny, tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    copy_version(tiny, src)
    assert main([str(src), "--library", str(dst)]) == 0
    assert f"added    multigoal from {src / 'multigoal' / 'v1'} as {dst / 'multigoal' / 'v1'}" in capsys.readouterr().out
    assert main([str(tmp_path / "nowhere"), "--library", str(dst)]) == 2
    assert "no such folder" in capsys.readouterr().err
    edit_manifest(src / "multigoal" / "v1", files={"weights.safetensors": "0" * 64, "transitions.npz": "0" * 64})
    assert main([str(src), "--library", str(tmp_path / "other")]) == 1
    assert "checksum mismatch" in capsys.readouterr().out


def test_the_cli_has_help():
    done = subprocess.run([sys.executable, "-m", "skills.add", "--help"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL, timeout=120)
    assert done.returncode == 0 and "SOURCE" in done.stdout and "--library" in done.stdout
