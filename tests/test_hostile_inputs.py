"""What an outside probe of the library and its command lines broke (issue 31), each case with the guarantee that
replaced it (docs/skills.md, "What the library guarantees"): hostile files (devices, FIFOs, sockets, links out of
the library), huge counts, decompression bombs, paths in manifests and records, hostile MJCF, a full disk, bad trial
records, bad arguments.

Nothing here may hang: every read that used to block (a FIFO, /dev/zero) runs under ``finishes``, which fails the
test after a timeout and then unblocks the FIFOs it was given, instead of waiting forever.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from library_helpers import copy_version, edit_manifest
from safetensors import SafetensorError

import envs
import skills
from envs.files import UnsafeFileError, open_regular, read_bounded
from skills.library import sha256_file

ROOT = Path(__file__).resolve().parent.parent
ARM_XML = ROOT / "examples" / "arm" / "three_link_arm.xml"


# ---- helpers -------------------------------------------------------------------------------------------
def finishes(fn, seconds: float = 30.0, fifos: tuple[Path, ...] = ()):
    """``fn()``'s result, or the exception it raised, within ``seconds``; a test failure if it is still running then
    (after opening and closing the write end of each of ``fifos``, which lets a reader stuck on one go)."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            outcome["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for fifo in fifos:
            os.close(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))
        pytest.fail(f"still running after {seconds} s: it hangs")
    return outcome.get("error", outcome.get("value"))


def rechecksum(path: Path) -> None:
    edit_manifest(path, files={name: sha256_file(path / name) for name in ("weights.safetensors", "transitions.npz")})


def replace_with(path: Path, kind: str, target: str | Path = "/dev/zero") -> None:
    """Make ``path`` a link to ``target``, a FIFO or a socket."""
    path.unlink()
    if kind == "link":
        path.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()


# ---- 1. files: only regular files inside the library, bounded --------------------------------------------
def test_the_reader_refuses_devices_fifos_links_out_and_oversized_files(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big").write_bytes(b"x" * 100)
    (tmp_path / "ok").write_bytes(b"fine")
    (tmp_path / "inner").symlink_to(tmp_path / "ok")
    (tmp_path / "out").symlink_to("/etc/hostname")
    assert read_bounded(tmp_path / "inner", 10, inside=tmp_path) == b"fine"  # a link inside the folder is fine
    cases = {"/dev/zero": "a character device", tmp_path / "fifo": "a FIFO", tmp_path: "a directory",
             tmp_path / "big": "100 bytes; at most 10"}
    for path, message in cases.items():
        err = finishes(lambda p=path: read_bounded(p, 10), fifos=(tmp_path / "fifo",))
        assert isinstance(err, UnsafeFileError) and message in str(err), (path, err)
    err = finishes(lambda: open_regular(tmp_path / "out", inside=tmp_path))
    assert isinstance(err, UnsafeFileError) and "a link to /etc/hostname" in str(err) and "is outside" in str(err)


def test_a_folder_swapped_for_a_link_out_after_the_check_is_refused(tmp_path, monkeypatch):
    """The race the checks before the open leave: ``within`` resolves ``lib/v1/weights`` inside the library, then
    ``v1`` is replaced by a link out of it before the open (``O_NOFOLLOW`` guards only the last component). The file
    the kernel opened is checked against the folder, so the read is refused; without the swap it reads."""
    import envs.files as files

    library, outside = tmp_path / "lib", tmp_path / "elsewhere"
    (library / "v1").mkdir(parents=True)
    outside.mkdir()
    (library / "v1" / "weights").write_bytes(b"ours")
    (outside / "weights").write_bytes(b"theirs")
    assert read_bounded(library / "v1" / "weights", 10, inside=library) == b"ours"
    checked = files.within

    def swapped_after_the_check(path, folder):
        real = checked(path, folder)
        (library / "v1").rename(library / "v1.old")
        (library / "v1").symlink_to(outside)
        return real

    monkeypatch.setattr(files, "within", swapped_after_the_check)
    with pytest.raises(UnsafeFileError, match="moved outside .* while it was opened"):
        read_bounded(library / "v1" / "weights", 10, inside=library)
    # the folder a read is held to may be the one swapped: it is resolved once, before the check, not again after
    (library / "v1").unlink()
    (library / "v1.old").rename(library / "v1")
    with pytest.raises(UnsafeFileError, match="moved outside .* while it was opened"):
        read_bounded(library / "v1" / "weights", 10, inside=library / "v1")


@pytest.mark.parametrize("name", ["manifest.json", "weights.safetensors", "transitions.npz"])
@pytest.mark.parametrize("kind", ["link", "fifo", "socket"])
def test_a_skill_file_that_is_a_device_link_fifo_or_socket_is_refused_at_once(tiny, tmp_path, name, kind):
    """The probe: a manifest linked to /dev/zero was read until MemoryError (3 GB); a FIFO as any file hung the
    loader. Now each is refused before a byte is read, naming the file."""
    path = copy_version(tiny, tmp_path / "lib")
    replace_with(path / name, kind)
    expected = {"link": "is outside", "fifo": "is a FIFO", "socket": "is a socket"}[kind]
    err = finishes(lambda: skills.load(path), fifos=(path / name,) if kind == "fifo" else ())
    assert isinstance(err, skills.CorruptSkillError) and expected in str(err), err
    problems: list[str] = []
    listed = finishes(lambda: skills.list_skills(tmp_path / "lib", problems=problems))
    assert len(listed) == (0 if name == "manifest.json" else 1) and len(problems) == 1 - len(listed)


def test_a_skill_name_linked_out_of_the_library_is_not_looked_into(tiny, tmp_path):
    copy_version(tiny, tmp_path / "elsewhere")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "multigoal").symlink_to(tmp_path / "elsewhere" / "multigoal", target_is_directory=True)
    problems: list[str] = []
    assert skills.list_skills(tmp_path / "lib", problems) == [] and "is outside" in problems[0]
    with pytest.raises(skills.CorruptSkillError, match="skill 'multigoal': .*is outside"):
        skills.load("multigoal", tmp_path / "lib")


def test_a_version_swapped_for_a_link_out_after_it_was_resolved_is_not_read(tiny, tmp_path, monkeypatch):
    """``skills.load("multigoal")`` resolves ``v1`` inside the library; if ``v1`` is then replaced by a link to a skill
    outside it (the window between resolving and reading), the load is refused, not read from there."""
    import skills.library.skill as skill_module

    copy_version(tiny, tmp_path / "lib")
    copy_version(tiny, tmp_path / "elsewhere")
    assert skills.load("multigoal", tmp_path / "lib").path == tmp_path / "lib" / "multigoal" / "v1"
    resolved = skill_module.resolve

    def swapped_after_resolving(name, library=None):
        path = resolved(name, library)
        path.rename(path.with_name("v1.old"))
        path.symlink_to(tmp_path / "elsewhere" / "multigoal" / "v1", target_is_directory=True)
        return path

    monkeypatch.setattr(skill_module, "resolve", swapped_after_resolving)
    with pytest.raises(skills.CorruptSkillError, match="is outside"):
        skills.load("multigoal", tmp_path / "lib")


def test_a_skill_name_linked_out_of_the_library_is_never_written_through(tiny, tmp_path, capsys):
    """The probe: ``skills.add`` into a library whose ``multigoal`` folder links out of it claimed, locked and wrote
    ``v1`` in the folder outside (and its recovery may delete there); training and saving claim the same way."""
    from skills.add import main as add_main
    from skills.library import claim_version_dir

    source = copy_version(tiny, tmp_path / "src")
    (tmp_path / "outside").mkdir()
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "multigoal").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(ValueError, match="multigoal is a symbolic link .*written into must be a real directory"):
        claim_version_dir("multigoal", tmp_path / "lib")
    assert add_main([str(source), "--library", str(tmp_path / "lib")]) == 2
    assert "is a symbolic link" in capsys.readouterr().err
    assert list((tmp_path / "outside").iterdir()) == [], "nothing written outside the library"


def test_a_cache_folder_linked_out_of_the_library_is_neither_read_nor_written(two_versions, tmp_path):
    """The probe: with ``<library>/.composed`` a link out of the library, a build reported ``cached`` from entries that
    lived only outside it, and would have written new ones there."""
    _, first = small_build(two_versions)
    outside = tmp_path / "outside-cache"
    shutil.move(str(two_versions / ".composed"), outside)
    (two_versions / ".composed").symlink_to(outside, target_is_directory=True)
    before = sorted(p.name for p in outside.iterdir())
    with pytest.warns(UserWarning) as caught:
        _, built = small_build(two_versions)
    messages = " | ".join(str(w.message) for w in caught)
    assert not built.cached and built.info["cache"] is None, messages
    assert "the composition cache folder" in messages and "is outside" in messages and "symbolic link" in messages
    assert sorted(p.name for p in outside.iterdir()) == before, "nothing new written through the link"


def test_files_linked_inside_the_skill_directory_still_load(tiny, tmp_path):
    path = copy_version(tiny, tmp_path / "lib")
    (path / "manifest.json").rename(path / "real-manifest.json")
    (path / "manifest.json").symlink_to("real-manifest.json")
    assert skills.load(path).info.name == "multigoal"


def test_training_into_a_library_with_a_hostile_manifest_does_not_read_it(tiny, tmp_path):
    """The probe: ``skills.train`` into such a library died with MemoryError while cleaning leftovers (it read the
    linked manifest to see whether a hidden log's run had finished)."""
    from skills.library import store

    path = copy_version(tiny, tmp_path)
    (tmp_path / "multigoal" / ".v1.progress.csv").write_text("env_steps\n")
    replace_with(path / "manifest.json", "link")
    claimed = finishes(lambda: store.claim_version(tmp_path / "multigoal"))
    assert isinstance(claimed, Path) and claimed.name == "v2"
    (tmp_path / "multigoal" / ".lock").unlink()
    (tmp_path / "multigoal" / ".lock").symlink_to("/dev/zero")
    err = finishes(lambda: store.claim_version(tmp_path / "multigoal"))
    assert isinstance(err, UnsafeFileError) and "lock file must be a regular file" in str(err)


# ---- 2. sizes and counts bounded before allocation ------------------------------------------------------
def write_npz(path: Path, arrays: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
    """An npz whose members hold zeros of the given shapes, written in chunks (a large one compresses to little)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, (shape, dtype) in arrays.items():
            with archive.open(f"{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                         "fortran_order": False, "shape": shape})
                left = int(np.prod(shape)) * np.dtype(dtype).itemsize
                chunk = bytes(1 << 22)
                while left > 0:
                    f.write(chunk[:min(left, len(chunk))])
                    left -= len(chunk)


@pytest.mark.parametrize("arrays, message", [
    ({"obs": ((1000, 2), "<f4"), "action": ((999, 2), "<f4")}, "its arrays differ in length"),
    ({"obs": ((1000, 3), "<f4")}, "obs: shape (1000, 3); expected at most 1000000 rows of 2"),
    ({"obs": ((1_000_001, 2), "<f4")}, "expected at most 1000000 rows"),
    ({"obs": ((300_000, 2), "<f4"), "junk": ((300_000, 240), "<f4")}, "bytes uncompressed; at most"),
    ({"obs": ((10, 2), "|O")}, "expected numbers in 1 or 2 dimensions"),
])
def test_stored_transitions_are_checked_before_they_are_decompressed(tiny, tmp_path, arrays, message):
    """The probe: a 2.27 MB transitions.npz expanded to 2.35 GB and was accepted with arrays of different lengths."""
    path = copy_version(tiny, tmp_path)
    write_npz(path / "transitions.npz", arrays)
    rechecksum(path)
    with pytest.raises(skills.CorruptSkillError, match="transitions.npz: .*" + message.replace("(", r"\(").replace(
            ")", r"\)")):
        skills.load(path)


def test_a_tampered_uncompressed_size_is_refused(tiny, tmp_path):
    path = copy_version(tiny, tmp_path)
    write_npz(path / "transitions.npz", {"obs": ((10, 2), "<f4")})
    data = bytearray((path / "transitions.npz").read_bytes())
    central = data.rindex(b"PK\x01\x02")  # the central directory's record of obs.npy: its uncompressed size + 1
    size = int.from_bytes(data[central + 24: central + 28], "little")
    data[central + 24: central + 28] = (size + 1).to_bytes(4, "little")
    (path / "transitions.npz").write_bytes(bytes(data))
    rechecksum(path)
    with pytest.raises(skills.CorruptSkillError, match="transitions.npz"):
        skills.load(path)


@pytest.mark.parametrize("field, value", [
    ("eval_particles", 2_000_000_000), ("proposal_centers", 2_000_000_000), ("particles", 10**9),
    ("value_samples", 10**9), ("batch_size", 10**9), ("hidden", [100_000]), ("buffer_size", 10**12),
    ("eval_particles", 0), ("batch_size", "32"), ("particles", 8.0), ("value_proposal", 5), ("q_lr", -1.0),
    ("obs_scale", float("inf")), ("cache_target_values", "yes"),
])
def test_every_count_and_type_in_the_hyperparameters_is_checked_at_load(tiny, tmp_path, field, value):
    """The probe: eval_particles or proposal_centers of 2e9 loaded, then act/value asked for 16 GB; wrongly typed
    hyperparameters raised TypeError or RuntimeError at load or at act."""
    path = copy_version(tiny, tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps(manifest | {"hyperparameters": manifest["hyperparameters"]
                                                               | {field: value}}))
    with pytest.raises(skills.CorruptSkillError, match=f"manifest.json: .*{field}="):
        skills.load(path)
    problems: list[str] = []
    assert skills.list_skills(tmp_path, problems) == [] and field in problems[0]


def test_alpha_is_checked_in_the_manifest_and_in_sql_config(tiny, tmp_path):
    from skills.sql.learner import SQLConfig

    path = copy_version(tiny, tmp_path)
    for alpha in (-1.0, 0.0):
        edit_manifest(path, alpha=alpha)
        with pytest.raises(skills.CorruptSkillError, match="'alpha' must be a finite number > 0"):
            skills.load(path)
    for alpha in (-1.0, 0.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="alpha="):
            SQLConfig(alpha=alpha)


def test_a_weight_file_far_larger_than_its_networks_is_refused(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    path = copy_version(tiny, tmp_path)
    tensors = load_file(str(path / "weights.safetensors"))
    save_file(tensors | {"junk": torch.zeros(2_000_000)}, str(path / "weights.safetensors"))
    rechecksum(path)
    with pytest.raises(skills.CorruptSkillError, match="more than the networks of its manifest"):
        skills.load(path)


def test_sample_and_value_counts_are_checked(tiny):
    skill = skills.load(tiny)
    for n in (0, -3, 2.5, 10**9):
        with pytest.raises(ValueError, match="n_samples must be a whole number in"):
            skill.value(np.zeros((2, 2)), n_samples=n)
        with pytest.raises(ValueError, match="n must be a whole number in"):
            skill.sample(np.zeros((2, 2)), n)


# ---- 3. paths in manifests and records stay inside the library ---------------------------------------------
def test_a_recorded_arm_outside_the_library_is_never_opened(tiny, tmp_path, monkeypatch):
    """The probe: a manifest's task_kwargs.arm was opened as given (/etc/passwd, by skills.evaluate --convergence)."""
    path = copy_version(tiny, tmp_path / "lib")
    edit_manifest(path, task_kwargs={"arm": "/etc/passwd", "ee_site": "ee"})
    skill = skills.load(path)
    opened = []
    monkeypatch.setattr(envs, "make", lambda *args, **kwargs: opened.append(kwargs))
    with pytest.raises(skills.SkillError, match=r"task_kwargs.arm: /etc/passwd is outside .*lib; .*pass the arm yourself"):
        skill.make_env()
    edit_manifest(path, task_kwargs={"arm": "../../../etc/passwd"})
    with pytest.raises(skills.SkillError, match="is outside"):
        skills.load(path).make_env()
    assert opened == []
    skill.make_env(arm="jaco")  # given by the caller: used as given
    inside = tmp_path / "lib" / "arms" / "arm.xml"
    inside.parent.mkdir()
    shutil.copy(ARM_XML, inside)
    edit_manifest(path, task_kwargs={"arm": "arms/arm.xml", "ee_site": "ee"})
    skills.load(path).make_env()
    assert opened[-1]["arm"] == str(inside.resolve())


def test_a_composition_record_naming_another_library_is_refused(tiny, tmp_path):
    """The probe: a saved composition's composed_from loaded its constituents from absolute paths outside the
    library."""
    path = copy_version(tiny, tmp_path / "lib", name="multigoal.composed")
    digest = skills.load(path).info.weights_sha256
    elsewhere = tmp_path / "elsewhere"
    copy_version(tiny, elsewhere)
    edit_manifest(path, composed_from={"constituents": [{"spec": "multigoal", "name": "multigoal", "version": 1,
                                                         "weights_sha256": digest}] * 2,
                                       "weights": [0.5, 0.5], "library": str(elsewhere)})
    with pytest.raises(skills.CorruptSkillError, match="composed_from.library: .*elsewhere is outside .*lib"):
        skills.load(path)
    edit_manifest(path, composed_from={"constituents": [{"spec": str(elsewhere / "multigoal" / "v1"), "name": "multigoal",
                                                         "version": 1, "weights_sha256": digest}] * 2,
                                       "weights": [0.5, 0.5], "library": None})
    with pytest.raises(skills.StaleSkillError, match="cannot be checked in .*lib"):  # a path spec is checked as name@vN
        skills.load(path)


def test_saving_a_composition_beside_constituents_of_another_library_is_refused(tiny, tmp_path):
    from types import SimpleNamespace

    from compose.library import check_beside

    here = copy_version(tiny, tmp_path / "lib")
    part = SimpleNamespace(name="multigoal", path=here, info=SimpleNamespace(version=1))
    check_beside(SimpleNamespace(parts=[part, part]), tmp_path / "lib")
    with pytest.raises(ValueError, match="cannot save into .*other: constituent multigoal v1 lives in"):
        check_beside(SimpleNamespace(parts=[part, part]), tmp_path / "other")


# ---- 4. hostile MJCF -------------------------------------------------------------------------------------
def arm_with(asset: str) -> str:
    return ARM_XML.read_text().replace("<worldbody>", f"<asset>{asset}</asset><worldbody>", 1)


MJCF_CASES = {
    "not XML": ("model.xml", "this is not XML", "not an XML file"),
    "a missing include": ("model.xml", '<mujoco><include file="nothere.xml"/></mujoco>', "does not exist"),
    "a self-include": ("model.xml", '<mujoco><include file="model.xml"/></mujoco>', "included more than once"),
    "an include out of its folder": ("model.xml", '<mujoco><include file="../../../../etc/hostname"/></mujoco>',
                                     "is outside"),
    "deep nesting": ("model.xml", "<mujoco><worldbody>" + "<body>" * 20000 + "</body>" * 20000 + "</worldbody></mujoco>",
                     "nest more than 64 deep"),
    "10,000 bodies": ("model.xml", "<mujoco><worldbody>" + "<body><geom size='0.1'/></body>" * 10000
                      + "</worldbody></mujoco>", "more than 500 bodies"),
    "an external entity": ("model.xml", '<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                           '<mujoco model="&x;"/>', "declares a DOCTYPE or an entity"),
    "entity expansion": ("model.xml", '<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaaaaaaaa"><!ENTITY b '
                         '"&a;&a;&a;&a;&a;&a;&a;&a;">]><mujoco model="&b;"/>', "declares a DOCTYPE or an entity"),
    "a mesh at /dev/zero": ("model.xml", arm_with('<mesh name="m" file="/dev/zero"/>'), "/dev/zero is outside"),
    "a mesh linked to /dev/zero": ("model.xml", arm_with('<mesh name="m" file="zero.stl"/>'), "a link to /dev/zero"),
    "a mesh that is a FIFO": ("model.xml", arm_with('<mesh name="m" file="fifo.stl"/>'), "is a FIFO"),
    "a meshdir out of the folder": ("model.xml", arm_with('<mesh name="m" file="hostname"/>').replace(
        '<compiler angle="radian"', '<compiler meshdir="/etc" angle="radian"'), "/etc/hostname is outside"),
    "a flexcomp of 10,000 bodies": ("model.xml", ARM_XML.read_text().replace("<worldbody>", (
        '<worldbody><flexcomp name="cloth" type="grid" count="100 100 1" spacing="0.01 0.01 0.01" pos="3 3 1" '
        'radius="0.001" dim="2" mass="0.1"/>'), 1), "<flexcomp> is refused: it makes bodies from a count"),
    "a flexcomp reading a file": ("model.xml", ARM_XML.read_text().replace("<worldbody>", (
        '<worldbody><flexcomp name="f" type="mesh" file="fifo.stl" dim="2"/>'), 1), "<flexcomp> is refused"),
    "a composite cable": ("model.xml", ARM_XML.read_text().replace("<worldbody>", (
        '<worldbody><composite type="cable" count="1200 1 1" size="1"><geom type="capsule" size=".005"/></composite>'),
        1), "<composite> is refused"),
    "a replicate": ("model.xml", ARM_XML.read_text().replace("<worldbody>", (
        '<worldbody><replicate count="5000" offset="0 0 .01"><body><geom size=".01"/></body></replicate>'), 1),
        "<replicate> is refused"),
    "an unknown element": ("model.xml", ARM_XML.read_text().replace("<worldbody>", "<worldbody><foo/>"),
                           "dm_control cannot parse it"),
    "a dangling reference": ("model.xml", ARM_XML.read_text().replace('joint="yaw"', 'joint="nope"'),
                             "MuJoCo cannot compile the arm"),
}


@pytest.mark.parametrize("case", MJCF_CASES)
def test_hostile_mjcf_is_one_clear_line_at_once(case, tmp_path, capsys):
    """The probe: envs.check_arm on hostile MJCF printed raw tracebacks, and a 10,000-body model ran 346 s."""
    from envs import check_arm

    name, text, message = MJCF_CASES[case]
    (tmp_path / name).write_text(text)
    (tmp_path / "zero.stl").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.stl")
    started = time.perf_counter()
    code = finishes(lambda: check_arm.main([str(tmp_path / name), "--ee-site", "ee", "--episodes", "1",
                                            "--frame", str(tmp_path / "f.png")]), fifos=(tmp_path / "fifo.stl",))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "\n" not in err and message in err, err
    assert time.perf_counter() - started < 20


# ---- 5. a full disk ---------------------------------------------------------------------------------------
def full_disk(*args, **kwargs):
    raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space "
                          "left on device\" })")


def test_safetensors_own_full_disk_error_is_an_oserror_and_leaves_no_stage(tiny, tmp_path, monkeypatch):
    """The probe: a full disk during a weights write raised safetensors' own error (not an OSError): raw tracebacks
    from skills.train and compose.save, and compose.save left its staging folder."""
    from skills.library import files, write_skill

    skill = skills.load(tiny)
    monkeypatch.setattr(files, "save_file", full_disk)
    target = tmp_path / "multigoal" / "v1"
    with pytest.raises(OSError, match="cannot write .*weights.safetensors: .*No space left on device"):
        write_skill(target, skill.agent, skill.info, skill.transitions)
    assert sorted(p.name for p in (tmp_path / "multigoal").iterdir()) == [] and not target.exists()


def test_a_full_disk_while_training_is_one_line_even_from_safetensors(tmp_path, monkeypatch, capsys):
    from skills import train as train_cli
    from skills.library import files

    monkeypatch.setattr(files, "save_file", full_disk)
    code = train_cli.main(["multigoal", "--steps", "150", "--eval-interval", "100", "--eval-episodes", "1",
                           "--final-eval-episodes", "1", "--no-progress", "--no-convergence", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "error: cannot write" in err and "No space left on device" in err and "Traceback" not in err
    assert not (tmp_path / "multigoal" / "v1").exists()


def test_a_negative_number_list_is_a_value_not_an_option(capsys):
    import argparse

    from compose.run.cli import build_parser
    from envs.cli import add_arm_arguments

    parser = argparse.ArgumentParser()
    add_arm_arguments(parser)
    assert parser.parse_args(["--workspace-origin", "-0.2,0,4e-1"]).workspace_origin == (-0.2, 0.0, 0.4)
    with pytest.raises(SystemExit):  # reaches the type's own check, which names what it expects
        parser.parse_args(["--workspace-origin", "-.5"])
    assert "expected X,Y,Z" in capsys.readouterr().err
    assert build_parser().parse_args(["reach+avoid", "--weights", "-0.5,1.5"]).weights == [-0.5, 1.5]
    with pytest.raises(SystemExit):  # an option-like word is still an option: argparse's own message
        build_parser().parse_args(["reach+avoid", "--weights", "-x"])
    assert "expected one argument" in capsys.readouterr().err


def test_a_refusal_is_one_line_and_a_value_error_from_numpy_keeps_its_traceback(capsys):
    from envs.cli import run_command
    from envs.registry import get_task

    assert run_command(lambda: get_task("no-such-task")) == 2  # the toolkit's own refusal: one line
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no-such-task" in err and "Traceback" not in err and err.count("\n") == 1

    def buggy() -> int:  # a bug, hours into a benchmark: numpy refuses to broadcast
        return int((np.zeros(2) + np.zeros(3)).sum())

    assert run_command(buggy) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "in buggy" in err and err.rstrip().splitlines()[-1].startswith("error: operands")


@pytest.mark.parametrize("argv", [["skills", "--library", "trained"], ["envs"]])
def test_a_reader_that_went_away_ends_a_listing_quietly(argv):
    """``python -m skills | head``: the pipe closed before the listing was written ends it with exit 1 and nothing on
    stderr (was a BrokenPipeError traceback)."""
    root = Path(__file__).resolve().parent.parent
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line
    try:
        done = subprocess.run([sys.executable, "-m", *argv], cwd=root, stdout=write_end, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == 1 and done.stderr == "", done.stderr


def test_a_broken_pipe_that_is_not_stdout_is_reported(capsys):
    """A worker's connection that breaks is an ``OSError`` with its message, not a reader that went away: only a
    closed stdout ends a command quietly."""
    from envs.cli import run_command

    def body() -> int:
        raise BrokenPipeError(32, "Broken pipe (a worker's connection)")

    assert run_command(body) == 1
    assert "error: cannot write: [Errno 32] Broken pipe (a worker's connection)" in capsys.readouterr().err


@pytest.fixture
def two_versions(tiny, tmp_path) -> Path:
    """A library with two different versions of the tiny skill (a composition of both builds quickly)."""
    from safetensors.torch import load_file, save_file

    library = tmp_path / "lib"
    copy_version(tiny, library, version=1)
    second = copy_version(tiny, library, version=2)
    tensors = load_file(str(second / "weights.safetensors"))
    save_file({k: v * 1.01 if k.startswith("q.") else v for k, v in tensors.items()}, str(second / "weights.safetensors"))
    rechecksum(second)
    return library


def small_build(library: Path):
    from test_compose_run import FAST

    import compose
    from compose.build import build

    composition = compose.load(["multigoal@v1", "multigoal@v2"], library=str(library))
    return composition, build(composition, str(library), False, FAST["sampler_cfg"], FAST["bound_cfg"])


def test_a_composition_whose_cache_write_fails_is_returned_uncached(two_versions, monkeypatch):
    from skills.library import files

    monkeypatch.setattr(files, "save_file", full_disk)
    with pytest.warns(UserWarning, match="could not cache the composition .*No space left on device"):
        _, built = small_build(two_versions)
    assert built.sampler is not None and built.info["cache"] is None and not built.cached
    assert not [p for p in (two_versions / ".composed").iterdir() if p.name.startswith(".")]  # no stage left


def test_compose_save_on_a_full_disk_leaves_neither_stage_nor_claim(two_versions, monkeypatch):
    from test_compose_run import FAST

    from skills.library import files

    composition, _ = small_build(two_versions)
    composition.build(progress=False, sampler_cfg=FAST["sampler_cfg"], bound_cfg=FAST["bound_cfg"])
    monkeypatch.setattr(files, "save_file", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        composition.save(name="both.composed", progress=False)
    assert sorted(p.name for p in (two_versions / "both.composed").iterdir()) == [".lock"]


def test_a_cache_manifest_missing_a_field_is_rebuilt_not_a_keyerror(two_versions):
    """The probe: a cache manifest without sampler_wall_time_s raised KeyError on every build, never rebuilt."""
    _, first = small_build(two_versions)
    entry = Path(first.info["cache"])
    manifest = json.loads((entry / "manifest.json").read_text())
    del manifest["sampler_wall_time_s"]
    (entry / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="sampler_wall_time_s must be a finite number >= 0, got None; rebuilding"):
        _, rebuilt = small_build(two_versions)
    assert not rebuilt.cached and small_build(two_versions)[1].cached
    (entry / "manifest.json").unlink()
    (entry / "manifest.json").symlink_to("/dev/zero")
    with pytest.warns(UserWarning, match="is outside"):
        assert not finishes(lambda: small_build(two_versions))[1].cached
    outside = two_versions.parent / "outside-entry"  # an entry linked out of the library's cache folder
    shutil.copytree(entry, outside)
    shutil.rmtree(entry)
    entry.symlink_to(outside, target_is_directory=True)
    with pytest.warns(UserWarning, match="is outside .*.composed"):
        assert not small_build(two_versions)[1].cached
    assert entry.is_dir() and not entry.is_symlink() and small_build(two_versions)[1].cached


# ---- 6. compositions: bad input at the API ------------------------------------------------------------------
def test_composed_q_refuses_nan_and_wrong_shapes(two_versions):
    import compose

    composition = compose.load(["multigoal@v1", "multigoal@v2"], library=str(two_versions))
    assert np.isfinite(composition.q(np.zeros((3, 2)), np.zeros((3, 2)))).all()
    for obs, act, message in [(np.full(2, np.nan), np.zeros(2), "observation must be finite"),
                              (np.zeros(2), np.array([np.inf, 0]), "action must be finite"),
                              (np.zeros(5), np.zeros(2), r"observation must have shape \[..., 2\], got \[5\]"),
                              (np.zeros((3, 2)), np.zeros((3, 4)), r"action must have shape \[..., 2\], got \[3, 4\]"),
                              (torch.zeros(3, 7), torch.zeros(3, 2), "observation must have shape"),
                              (torch.full((1, 2), float("nan")), torch.zeros(1, 2), "must be finite"),
                              ("abc", np.zeros(2), "observation must be numbers")]:
        with pytest.raises(ValueError, match=message):
            composition.q(obs, act)


# ---- 7. study records ----------------------------------------------------------------------------------------
def good_eval(spec: str = "reach+avoid") -> dict:
    row = {"success_rate": 0.5, "return_mean": -3.0, "soft_return_mean": -2.0, "collision_rate": 0.25, "final_measures": {}}
    rows = {p: dict(row) for p in ("composed", "joint", *spec.split("+"))}
    return {"spec": spec, "seed": 0, "stochastic": rows, "deterministic": rows,
            "bound": {"suboptimality_mean": 0.1, "mean_C": 2.0}}


BAD_RECORDS = {
    "{} eval": ("eval-reach+avoid-seed0", "{}", "spec and seed must be text and a whole number, got None, None"),
    "{} train": ("train-reach-seed0", "{}", "missing task, seed, path, env_steps, history"),
    "truncated": ("eval-reach+avoid-seed0", json.dumps(good_eval())[:40], "JSONDecodeError"),
    "NaN": ("eval-reach+avoid-seed0", json.dumps(good_eval()).replace("-3.0", "NaN", 1), "NaN is not a number"),
    "1e308": ("eval-reach+avoid-seed0", json.dumps(good_eval()).replace("-3.0", "1e308", 1), "in [-1e+09, 1e+09]"),
    "a rate of 7": ("eval-reach+avoid-seed0", json.dumps(good_eval()).replace("0.5", "7", 1), "success_rate"),
    "collisions of -1": ("eval-reach+avoid-seed0", json.dumps(good_eval()).replace("0.25", "-1", 1), "collision_rate"),
    "wrong types": ("train-reach-seed0", json.dumps({"task": "reach", "seed": "0", "path": 3, "env_steps": 1,
                                                     "history": []}), "must be text"),
    "a path out of the libraries": ("train-reach-seed0", json.dumps({"task": "reach", "seed": 0, "path": "/etc",
                                                                     "env_steps": 1, "history": []}), "is outside"),
    "a list": ("eval-reach+avoid-seed0", "[1, 2]", "must be a JSON object"),
    "a D verdict that is text": ("eval-reach+avoid-seed0", json.dumps(good_eval()).replace(
        '"mean_C": 2.0', '"mean_C": 2.0, "lower_D_holds_composed": "yes"'),
        "lower_D_holds_composed must be true, false or null"),
    "D controls without verdicts": ("eval-reach+avoid-seed0", json.dumps(good_eval()).replace(
        '"mean_C": 2.0', '"mean_C": 2.0, "lower_D_controls": [{"control": "random"}]'), "lower_D_controls must be a list"),
    "a D control whose should_fail is text": ("eval-reach+avoid-seed0", json.dumps(good_eval()).replace(
        '"mean_C": 2.0', '"mean_C": 2.0, "lower_D_controls": [{"control": "random", "failed": false, "should_fail": "no"}]'),
        "lower_D_controls must be a list"),
}


@pytest.mark.parametrize("case", BAD_RECORDS)
def test_a_bad_trial_record_is_named_and_its_trial_rerun(case, tmp_path):
    """The probe: an {} eval record silently dropped that seed (exit 0); an {} train record gave a KeyError traceback;
    a truncated record's error did not name the file; NaN and 1e308 went into the summary (IQM 5e307)."""
    from compose.study import run_phase, trial_record

    key, text, message = BAD_RECORDS[case]
    record = trial_record(tmp_path, key)
    record.parent.mkdir(parents=True)
    record.write_text(text)
    ran: list[str] = []

    def executor(pending, done):
        for k, fn, args in pending:
            ran.append(k)
            done(k, {"ok": True, "result": fn(*args)})

    fresh = good_eval() if key.startswith("eval") else {"task": "reach", "seed": 0, "path": str(tmp_path / "lib" / "x"),
                                                         "env_steps": 1, "wall_time_s": None, "history": []}
    rerun: dict = {}
    pattern = f"trial record .*{re.escape(key)}.json cannot be used .*{re.escape(message)}.*; running trial {re.escape(key)}"
    with pytest.warns(UserWarning, match=pattern):
        results, failures = run_phase([(key, lambda: fresh, ())], tmp_path, executor, [tmp_path / "lib"], rerun)
    assert ran == [key] and results[key] == fresh and failures == {} and key in rerun
    assert json.loads(record.read_text()) == fresh  # the rerun's record replaced the bad one


def test_a_trial_record_that_is_a_fifo_does_not_hang_the_study(tmp_path):
    from compose.study import run_phase, trial_record

    record = trial_record(tmp_path, "eval-reach+avoid-seed0")
    record.parent.mkdir(parents=True)
    os.mkfifo(record)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = finishes(lambda: run_phase([("eval-reach+avoid-seed0", good_eval, ())], tmp_path,
                                             lambda pending, done: None), fifos=(record,))
    assert outcome == ({}, {})  # named, and queued to run again (this executor runs nothing)


def test_records_are_written_as_strict_json():
    from compose.trial_records import clean_numbers

    assert json.dumps(clean_numbers({"a": [float("nan"), 1.0, {"b": float("inf")}]}), allow_nan=False) == \
        '{"a": [null, 1.0, {"b": null}]}'


STUDY_WORKERS = """
import os, sys, time
from compose.study import run_local

def slow(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(300)
    return {}

if __name__ == "__main__":
    out = sys.argv[1]
    run_local([("a", slow, (out + "/a",)), ("b", slow, (out + "/b",))], 2, lambda key, outcome: None)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has ended; only its parent's reaping is left


def test_study_workers_end_when_the_study_is_killed(tmp_path):
    """The probe: after kill -9 of the study, its workers ran on for 120 s or more."""
    script = tmp_path / "study_workers.py"
    script.write_text(STUDY_WORKERS)
    env = {k: v for k, v in os.environ.items() if k != "COMPOSABLE_SKILLS_LIBRARY"} | {"PYTHONPATH": str(ROOT)}
    study = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / k).exists() and (tmp_path / k).read_text() for k in "ab"):
            assert time.monotonic() < deadline and study.poll() is None, "the workers did not start"
            time.sleep(0.2)
        workers = [int((tmp_path / k).read_text()) for k in "ab"]
        assert all(alive(pid) for pid in workers)
        study.send_signal(signal.SIGKILL)
        study.wait()
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if alive(pid)], "workers outlived the study"
    finally:
        study.kill()
        for name in "ab":
            try:
                os.kill(int((tmp_path / name).read_text()), signal.SIGKILL)
            except (FileNotFoundError, ValueError, ProcessLookupError):
                pass


# ---- 8. command lines: every argument checked up front --------------------------------------------------------
@pytest.mark.parametrize("module, argv, message", [
    ("skills.train", ["multigoal", "--alpha", "-1"], "--alpha: must be a finite number > 0, got -1"),
    ("skills.train", ["multigoal", "--alpha", "0"], "--alpha: must be a finite number > 0, got 0"),
    ("skills.train", ["multigoal", "--alpha", "nan"], "--alpha: must be a finite number > 0, got nan"),
    ("skills.train", ["multigoal", "--seeds", "0-99999999"], "100000000 seeds; one process trains at most 1024"),
    ("skills.train", ["multigoal", "--seeds", "99999999"], "99999999 seeds; one process trains at most 1024"),
    ("compose.run", ["reach+avoid", "--threads", "0"], "--threads: must be >= 1, got 0"),
    ("compose.run", ["reach+avoid", "--seed", "-1"], "--seed: must be >= 0, got -1"),
    ("compose.adapt", ["reach+avoid", "--seed", "-1"], "--seed: must be >= 0, got -1"),
    ("compose.study", ["reach+avoid", "--seeds", "0-99999999"], "one process trains at most 1024"),
    ("skills.evaluate", ["reach", "--workspace-origin", "1e308,1e308,1e308"], "within 100 m of the base"),
    ("envs.check_arm", ["jaco", "--episodes", "0"], "--episodes: must be >= 1, got 0"),
])
def test_cli_arguments_are_refused_up_front_in_one_line(module, argv, message, tmp_path, capsys):
    import importlib

    main = importlib.import_module(module if module != "compose.run" else "compose.run.cli").main
    started = time.perf_counter()
    with pytest.raises(SystemExit) as stop:
        main([*argv, *(["--out", str(tmp_path)] if module == "skills.train" else [])])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err and "Traceback" not in err, err
    assert time.perf_counter() - started < 5  # the seed range is counted, not built
    assert not any(tmp_path.iterdir())  # nothing claimed, nothing saved


def test_a_far_workspace_origin_is_refused_before_ik_turns_it_into_nan():
    """The probe: workspace_origin=(1e308,)*3 passed the reachability check (the residual was NaN, and NaN comparisons
    are false); observations became NaN and check_arm blamed the action."""
    for origin in [(1e308, 1e308, 1e308), (150.0, 0.0, 0.3)]:
        with pytest.raises(ValueError, match="within 100 m of the base"):
            envs.make("reach", arm=str(ARM_XML), ee_site="ee", workspace_origin=origin)
