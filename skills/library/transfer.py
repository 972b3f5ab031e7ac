"""Skills trained elsewhere, added to a library, checked:  ``python -m skills.add SOURCE ... --library DIR``.

A source is a skill version (``.../reach/v3``), a skill (``.../reach``: its versions) or a library (every skill in
it). It is hostile until checked: only directories inside the source are looked into (a link out of it is named and
skipped), at most ``MAX_SOURCE_ENTRIES`` entries are listed, and each version is read once, bounded, its files
checked against the manifest's checksums (``files.read_checked``). Those very bytes are written to a staging
directory beside a freshly claimed version of the same name in the destination, with the manifest's ``version`` set
to the new number and an ``imported_from`` record (where it came from, which version, its weights' sha256); the
staged copy is then read back with every check ``read_skill`` makes before it is published (``store``: atomic,
never replacing a complete version). Nothing is executed, and nothing half-written is left on failure.

Added once: a complete version whose weights (sha256) a complete version of the same name in the destination already
has is not copied again; the check is made again under the name's lock at publication, so two ``skills.add`` runs of
one source at once add it once (the later one gives its claim back and reports it present). Only complete skills are
added; a version still training or diverged, and a saved composition (its constituents are resolved in its own
library: save it again with ``compose.save`` where its constituents now live), are skipped with the reason. Once
added, a skill is an ordinary version of the destination: ``compose.study`` reuses it when its seed, budget and
settings match (``compose.study.find_trained``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from envs.files import UnsafeFileError, read_bounded

from .catalog import claim_version_dir, library_root, noted_inside, skill_versions
from .files import MAX_TRANSITIONS_BYTES, MAX_WEIGHTS_BYTES, load_manifest, read_checked, read_skill
from .manifest import MANIFEST, NAME, SKILL_FILES, TRANSITIONS, WEIGHTS, CorruptSkillError
from .store import VERSION_DIR, AlreadyPublishedError, is_claim_only, publish_directory, release_claim, staging_directory

MAX_SOURCE_ENTRIES = 100_000  # directory entries listed in one source before it is refused
EXTRA_FILES = ("progress.csv", "learning_curve.png", "convergence.png")  # copied when present: training log, figures
MAX_EXTRA_BYTES = 64 << 20  # each of them
_LIMITS = {WEIGHTS: MAX_WEIGHTS_BYTES, TRANSITIONS: MAX_TRANSITIONS_BYTES}


@dataclass(frozen=True)
class Added:
    """What became of one source version: ``outcome`` is ``"added"`` (now ``path``), ``"present"`` (the same weights
    are already ``path``) or ``"skipped"`` (``reason`` says why; ``path`` is None)."""

    source: Path
    name: str
    outcome: str
    path: Path | None = None
    reason: str = ""


def _entries(folder: Path, budget: list[int]) -> list[Path]:
    """The entries of ``folder``, sorted, counted against the shared ``budget`` (a one-item list) before any is used."""
    found = []
    with os.scandir(folder) as listing:
        for entry in listing:
            budget[0] -= 1
            if budget[0] < 0:
                raise ValueError(f"{folder}: more than {MAX_SOURCE_ENTRIES} entries in the source; refused (give a skill "
                                 "or a version folder instead)")
            found.append(Path(entry.path))
    return sorted(found)


def source_versions(source: str | Path, problems: list[str]) -> list[Path]:
    """The version folders a source names: itself (it holds a ``manifest.json``), the ``v<N>`` folders of a skill,
    or those of every skill in a library (bare claims, runs still starting, left out). Links out of ``source`` are
    described in ``problems`` and skipped."""
    root = Path(source).expanduser()
    if not root.is_dir():
        raise ValueError(f"{root}: no such folder (a source is a skill version, a skill or a library folder)")
    if os.path.lexists(root / MANIFEST):
        return [root]
    budget = [MAX_SOURCE_ENTRIES]

    def versions_among(entries: list[Path]) -> list[Path]:
        return [p for p in entries if VERSION_DIR.match(p.name) and noted_inside(p, root, problems) and p.is_dir()
                and not is_claim_only(p)]

    listed = _entries(root, budget)
    own = versions_among(listed)
    if own:
        return own
    skills = [p for p in listed if NAME.match(p.name) and not p.name.startswith(".") and noted_inside(p, root, problems)
              and p.is_dir()]
    return [v for skill_dir in skills for v in versions_among(_entries(skill_dir, budget))]


def add_version(source: str | Path, library: str | Path | None = None) -> Added:
    """Add one skill version to ``library`` (default: ``trained/``), checked as the module docstring says.
    ``CorruptSkillError`` (a ``ValueError``) when the source fails a check; ``OSError`` when the copy cannot be
    written (the claimed version is given back)."""
    source = Path(source)
    info = load_manifest(source)
    if not info.complete:
        return Added(source, info.name, "skipped", reason=f"status {info.status!r}: only complete skills are added")
    if info.composed_from is not None:  # an adapted skill (adapted_from) holds its constituents' networks: it travels
        operator = info.composed_from.operator_name
        how = "" if operator == "average" else f" --operator {operator}"
        return Added(source, info.name, "skipped", reason="a saved composition: its constituents are resolved in its "
                     f"own library; add the constituents, then compose.save it{how} in this library")
    digest, root = info.files[WEIGHTS], library_root(library)

    def holding(skill_dir: Path) -> Path | None:
        """The complete version of this name in the destination with the same weights, if there is one."""
        return next((e.path for e in skill_versions(skill_dir, root) if e.complete and e.info.files.get(WEIGHTS) == digest),
                    None)

    def present(path: Path) -> Added:
        return Added(source, info.name, "present", path, f"the same weights are {info.name} {path.name}")

    if (existing := holding(root / info.name)) is not None:
        return present(existing)
    data = {name: read_checked(source, name, info.files[name], _LIMITS[name]) for name in SKILL_FILES}
    extras = {}
    for name in EXTRA_FILES:
        if os.path.lexists(source / name):
            try:
                extras[name] = read_bounded(source / name, MAX_EXTRA_BYTES, inside=source, what=name)
            except UnsafeFileError as err:
                raise CorruptSkillError(str(err)) from err
    target = claim_version_dir(info.name, library)
    try:
        stage = staging_directory(target)
        try:
            for name, content in (data | extras).items():
                (stage / name).write_bytes(content)
            record = {"path": str(source.resolve()), "name": info.name, "version": info.version,
                      "weights_sha256": digest, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            manifest = info.with_fields(version=int(target.name[1:]), imported_from=record)
            (stage / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2))
            try:
                read_skill(stage)  # the copy, with every check a load makes, before anyone can see it
            except CorruptSkillError as err:
                raise CorruptSkillError(str(err).replace(str(stage), str(source))) from None
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        publish_directory(stage, target, unless_present=holding)  # checked again under the lock: added once
    except AlreadyPublishedError as err:  # another writer added the same weights meanwhile
        release_claim(target)
        return present(err.existing)
    except BaseException:
        release_claim(target)
        raise
    return Added(source, info.name, "added", target)


def add_skills(sources: list[str | Path], library: str | Path | None = None) -> tuple[list[Added], list[str]]:
    """Add every complete skill version the ``sources`` name (``source_versions``) to ``library``. Returns what became
    of each version and the problems met (a link out of a source, a version that failed its checks): one bad version
    does not stop the others."""
    results: list[Added] = []
    problems: list[str] = []
    for source in sources:
        for version in source_versions(source, problems):
            try:
                results.append(add_version(version, library))
            except CorruptSkillError as err:
                problems.append(f"not added: {err}")
    return results, problems
