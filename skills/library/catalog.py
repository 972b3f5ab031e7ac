"""The skill library: names resolved to versions, listed, claimed; saved compositions checked for staleness.

Names resolve in the library (``trained/`` by default, or ``$COMPOSABLE_SKILLS_LIBRARY``), never in the working
directory: ``"reach"`` is the newest *complete* version, ``"reach@v1"`` a given one, and a path (``./x``, ``/x``,
a ``Path``) is used as is. Training never overwrites: every run claims the next version when it starts
(``skills.library.store``: safe under concurrent writers and crashes), and a complete version is never replaced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from envs.core import UnknownNameError
from envs.files import UnsafeFileError, within

from .files import load_manifest
from .manifest import MANIFEST, NAME, CorruptSkillError, Manifest, SkillError
from .store import VERSION_DIR, claim_version, is_claim_only


class StaleSkillError(SkillError):
    """A saved composition whose constituents, resolved by the names it was made from, have changed."""


def default_library() -> Path:
    """``$COMPOSABLE_SKILLS_LIBRARY`` or the repository's ``trained/`` directory."""
    env = os.environ.get("COMPOSABLE_SKILLS_LIBRARY")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "trained"


@dataclass(frozen=True)
class SkillEntry:
    """One version of one skill in a library."""

    name: str
    version: int
    path: Path
    info: Manifest

    @property
    def manifest(self) -> dict:
        """The manifest as JSON."""
        return self.info.to_json()

    @property
    def complete(self) -> bool:
        return self.info.complete


def library_root(library: str | Path | None) -> Path:
    """The library folder ``library`` names (default: ``default_library()``)."""
    return Path(library) if library is not None else default_library()


def list_skills(library: str | Path | None = None, problems: list[str] | None = None) -> list[SkillEntry]:
    """Every readable skill version in the library, sorted by name then version. Unreadable ones are left
    out of the list and described in ``problems`` when it is given (runs still starting are not problems)."""
    root = library_root(library)
    entries: list[SkillEntry] = []
    if not root.is_dir():
        return entries
    for skill_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        entries += skill_versions(skill_dir, root, problems)
    return sorted(entries, key=lambda e: (e.name, e.version))


def skill_versions(skill_dir: Path, root: Path, problems: list[str] | None = None) -> list[SkillEntry]:
    """Every readable version of one skill's folder ``skill_dir`` in the library ``root`` (``list_skills``, one name)."""
    entries: list[SkillEntry] = []
    for vdir in _version_dirs(skill_dir, root, problems) if skill_dir.is_dir() else []:
        try:
            entries.append(_entry(skill_dir.name, int(vdir.name[1:]), vdir, root))
        except SkillError as err:
            if problems is not None:
                problems.append(str(err))
    return entries


def _version_dirs(skill_dir: Path, root: Path, problems: list[str] | None = None, keep_outside: bool = False
                  ) -> list[Path]:
    """The version directories (``v<N>``, not bare claims) of ``skill_dir``, none looked into unless it lies inside the
    library ``root``: a link out of it is described in ``problems`` and skipped (``keep_outside``: kept, unopened, for
    ``_entry`` to refuse by name)."""
    found = []
    for path in sorted(skill_dir.iterdir()) if noted_inside(skill_dir, root, problems) else []:
        if not (VERSION_DIR.match(path.name) and path.is_dir()):
            continue
        if not noted_inside(path, root, None if keep_outside else problems):
            if keep_outside:
                found.append(path)
        elif not is_claim_only(path):
            found.append(path)
    return found


def noted_inside(path: Path, root: Path, problems: list[str] | None) -> bool:
    """Whether ``path`` lies inside ``root`` (``inside_library``); if not, why goes into ``problems`` when given."""
    try:
        inside_library(path, root)
        return True
    except CorruptSkillError as err:
        if problems is not None:
            problems.append(str(err))
        return False


def _entry(name: str, version: int, path: Path, root: Path) -> SkillEntry:
    """A version directory's entry, checked to lie inside the library ``root`` (not a link out of it) and to hold
    *this* skill (not a copy or a link to another)."""
    inside_library(path, root)
    info = load_manifest(path)
    if info.name != name or info.version != version:
        raise CorruptSkillError(f"{path} holds skill {info.name!r} v{info.version}, not {name!r} v{version}; "
                                "load it by its path if that is intended")
    return SkillEntry(name, version, path, info)


def inside_library(path: str | Path, root: str | Path, what: str = "") -> Path:
    """``path`` resolved, after checking that it lies inside the library ``root``; ``CorruptSkillError`` otherwise
    (a link out of the library, or a path a record names outside it)."""
    try:
        return within(path, root)
    except UnsafeFileError as err:
        raise CorruptSkillError(f"{what}{': ' if what else ''}{err}") from None


def is_path(name_or_path: str | Path) -> bool:
    """A path is a ``Path``, or text with a directory separator or a leading '.' or '~'; anything else is a
    name, resolved in the library only (never in the working directory)."""
    if isinstance(name_or_path, Path):
        return True
    text = str(name_or_path)
    return "/" in text or os.sep in text or text.startswith((".", "~"))


def resolve(name_or_path: str | Path, library: str | Path | None = None, fallback: bool = False) -> Path:
    """The directory of ``"name"`` (newest complete version), ``"name@vN"``, or a path.

    A newer version that cannot be read (corrupt, or a newer format) is an error that names it and
    the older versions, not a silent step back; ``fallback=True`` skips it knowingly. Versions still
    training, or diverged, are skipped as before.
    """
    if is_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not os.path.lexists(path / MANIFEST):  # one that is there but not a regular file: load_manifest says why
            raise CorruptSkillError(f"{path}: not a skill directory (no {MANIFEST})")
        return path
    text = str(name_or_path)
    name, _, version = text.partition("@")
    root = library_root(library)
    listed = bool(NAME.match(name)) and (root / name).is_dir()
    if listed:
        inside_library(root / name, root, f"skill {name!r}")  # a name linked out of the library is not looked into
    found = _version_dirs(root / name, root, keep_outside=True) if listed else []
    versions = sorted(((int(p.name[1:]), p) for p in found), reverse=True)
    if not versions:
        available = sorted({e.name for e in list_skills(library)})
        raise UnknownNameError("skill", text, available, where=str(root) + ("" if root.is_dir() else " (no such folder)"))
    if version:
        wanted = [p for n, p in versions if f"v{n}" == version]
        if not wanted:
            raise UnknownNameError("version", version, [f"v{n}" for n, _ in reversed(versions)],
                                   where=f"skill {name!r} ({root / name})")
        _entry(name, int(version[1:]), wanted[0], root)
        return wanted[0]
    skipped = []
    for number, path in versions:
        try:
            entry = _entry(name, number, path, root)
        except SkillError as err:
            if fallback:
                continue
            older = ", ".join(f"v{n}" for n, _ in versions if n < number) or "none"
            raise CorruptSkillError(f"the newest version of {name!r}, {path}, cannot be loaded: {err}. Older versions: "
                                    f"{older}; load one as {name}@vN, repair or remove {path}, or pass "
                                    "fallback=True to skip it") from err
        if entry.complete:
            return path
        skipped.append(f"{path} [{entry.info.status}]")
    raise SkillError(f"skill {name!r} has no complete version (training unfinished or diverged): " + ", ".join(skipped))


def claim_version_dir(name: str, library: str | Path | None = None) -> Path:
    """Claim ``<library>/<name>/v<N+1>`` for a new run or save: created at once, atomically, so concurrent
    writers of one name get different versions (``skills.library.store.claim_version``)."""
    if not NAME.match(name):
        raise ValueError(f"invalid skill name {name!r}: letters, digits, '_', '.', '+', '-'; no '/' or '@'")
    return claim_version(library_root(library) / name)


def constituents_library(path: str | Path, manifest: Manifest) -> Path:
    """The library a saved composition's constituents live in: the library holding the entry. A ``library`` in its
    ``composed_from`` (written by older versions when the entry was saved elsewhere) is used only when it lies
    inside that library; a path pointing out of it is refused (``CorruptSkillError``): received files never
    make the toolkit read outside the library."""
    own = Path(path).resolve().parent.parent
    record = manifest.composed_from
    if record is None or not record.library:
        return own
    return inside_library(record.library, own, f"{Path(path) / MANIFEST}: composed_from.library")


def stale_constituents(path: str | Path, manifest: Manifest) -> list[str]:
    """Why a saved composition (its manifest's ``composed_from``) no longer matches what its constituents'
    names resolve to today; ``[]`` when it does, or when the skill is not a saved composition.

    A composition is made from names (``"reach"`` is the newest complete version); retraining a
    constituent publishes a new version, and the saved ``Q_w`` then no longer composes what the name
    means. Pinned names (``"reach@v1"``) never go stale, nor do constituents named by a path (they are checked
    as ``name@vN`` in the library: a recorded path is never opened).
    """
    record = manifest.composed_from
    if record is None:
        return []
    library = constituents_library(path, manifest)
    problems = []
    for part in record.constituents:
        spec = f"{part.name}@v{part.version}" if is_path(part.spec) else part.spec
        try:
            now = resolve(spec, library)
            digest = load_manifest(now).weights_sha256
        except (SkillError, UnknownNameError) as err:
            problems.append(f"{part.spec!r} cannot be checked in {library}: {err}")
            continue
        if digest != part.weights_sha256:
            problems.append(f"{part.spec!r} now resolves to {now} (weights {digest[:12]}), not to "
                            f"{part.name} v{part.version} (weights {part.weights_sha256[:12]}) it was composed from")
    return problems


def check_fresh(path: str | Path, manifest: Manifest) -> None:
    """Raise ``StaleSkillError`` when ``stale_constituents`` finds anything."""
    problems = stale_constituents(path, manifest)
    if problems:
        assert manifest.composed_from is not None  # stale: it has them
        specs = "+".join(p.spec for p in manifest.composed_from.constituents)
        operator = manifest.composed_from.operator_name
        how = "" if operator == "average" else f", operator={operator!r} with its settings"
        raise StaleSkillError(f"saved composition {path} is stale: " + "; ".join(problems)
                              + f". Compose again (compose.load({specs!r}{how}).save()), or pass allow_stale=True "
                                "to use the old one knowingly")
