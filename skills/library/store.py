"""Versioned directories on disk, safe under concurrent writers and crashes.

* **Claiming a version** (``claim_version``): under the skill's lock (``<library>/<name>/.lock``,
  ``fcntl.flock``, which local file systems and NFSv4 honour), the next free number is taken by
  creating ``v<N>`` with a ``.claim`` file naming the owner (host, pid). Two runs can never get
  the same number; numbers held by hidden leftovers (``.v<N>.*``) are never reused.
* **Publishing** (``publish_directory``): a fully written, fsynced staging directory replaces
  the target by two renames under the same lock. A ``complete`` skill is never replaced.
* **Crashes** (``recover``): a writer killed between the two renames leaves the target missing;
  the next writer of that name puts back the new version if its stage is complete, else the old
  one. Staging directories, claims and hidden logs whose owner is a dead process on this host are
  removed; those of live processes, or of other hosts, are left alone.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import socket
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from envs.files import PARTIAL, UnsafeFileError, atomic_write_bytes, kind_of, read_bounded

CLAIM, LOCK, MANIFEST = ".claim", ".lock", "manifest.json"
MAX_RECORD_BYTES = 16 << 20  # a manifest or claim read while repairing (a claim is ~100 bytes)
VERSION_DIR = re.compile(r"^v(\d+)$")
_HIDDEN = re.compile(r"^\.v(\d+)\.(tmp|old)\.(\d+)(?:\.\d+)?@(.+)$")  # .v3.tmp.<pid>@<host>, .v3.old.<pid>.<ns>@<host>
_LOG = re.compile(r"^\.v(\d+)\.(progress\.csv|curve\.png|convergence\.png)$")


def owner_tag(extra: str = "") -> str:
    """``<pid>[.<extra>]@<host>``: who writes a hidden file or directory (no hostname contains '@')."""
    return f"{os.getpid()}{'.' + extra if extra else ''}@{socket.gethostname()}"


def owner_alive(host: str, pid: int) -> bool:
    """False only when the owner is certainly dead: a process of this host that no longer exists."""
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def name_lock(directory: Path) -> Iterator[None]:
    """Exclusive lock on ``directory/.lock`` (created, never removed) for claims and swaps. The lock file is opened
    without following a link and must be a regular file (a link out of the library, a FIFO or a device is refused);
    ``directory`` itself must not be a link (``real_folder``)."""
    real_folder(directory).mkdir(parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(directory / LOCK, flags, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UnsafeFileError(f"{directory / LOCK} is a symbolic link; the lock file must be a regular file") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafeFileError(f"{directory / LOCK} is {kind_of(mode)}; the lock file must be a regular file")
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def read_record(file: Path) -> Any:
    """A JSON record (a manifest or a claim) read while repairing: a regular file inside its directory, bounded
    (``envs.files.read_bounded``); raises ``OSError`` or ``ValueError``."""
    return json.loads(read_bounded(file, MAX_RECORD_BYTES, inside=file.parent))


def taken_versions(directory: Path) -> set[int]:
    """Every version number a directory holds or a leftover still refers to."""
    numbers = set()
    for entry in directory.iterdir() if directory.is_dir() else ():
        match = VERSION_DIR.match(entry.name) or _HIDDEN.match(entry.name) or _LOG.match(entry.name)
        if match:
            numbers.add(int(match.group(1)))
    return numbers


def real_folder(directory: Path) -> Path:
    """``directory``, a folder of the library that is written into (a skill's name folder, the composition cache),
    checked not to be a symbolic link: through one, claims, locks, recovery and publications would land outside the
    library. ``UnsafeFileError`` otherwise."""
    if directory.is_symlink():
        raise UnsafeFileError(f"{directory} is a symbolic link (to {os.readlink(directory)}); a folder of the library "
                              "that is written into must be a real directory inside it")
    return directory


def claim_version(directory: Path) -> Path:
    """Create and return ``directory/v<N>`` for the next free ``N``, marked with a ``.claim`` file."""
    with name_lock(directory):
        recover(directory)
        path = directory / f"v{max(taken_versions(directory), default=0) + 1}"
        path.mkdir()
        (path / CLAIM).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                              "claimed": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
    return path


def is_claim_only(path: Path) -> bool:
    """A claimed version that nothing has been published to yet (its run is starting or died early)."""
    return path.is_dir() and {p.name for p in path.iterdir()} == {CLAIM}


def release_claim(path: Path) -> None:
    """Give back a claimed version that holds nothing (a run that ended before its first checkpoint)."""
    if is_claim_only(path):
        shutil.rmtree(path, ignore_errors=True)


def staging_directory(path: Path) -> Path:
    """A fresh, empty hidden directory beside ``path`` (``.<name>.tmp-<host>-<pid>``) for ``publish_directory``; the
    folder it is made in must not be a link (``real_folder``)."""
    real_folder(path.parent).mkdir(parents=True, exist_ok=True)
    stage = path.parent / f".{path.name}.tmp.{owner_tag()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    return stage


def _status(path: Path) -> str | None:
    try:
        return read_record(path / MANIFEST).get("status")
    except (OSError, ValueError, AttributeError):
        return None


class PublishedVersionError(OSError):
    """Publishing would replace a complete skill version."""


class AlreadyPublishedError(OSError):
    """Publishing was called off because ``existing`` already holds what the stage holds (``unless_present``)."""

    def __init__(self, existing: Path):
        super().__init__(f"{existing} already holds it")
        self.existing = existing


def publish_directory(stage: Path, path: Path, unless_present: Callable[[Path], Path | None] | None = None) -> Path:
    """Make a fully written ``stage`` directory appear at ``path`` (fsync, then a rename swap under the
    lock). Refuses to replace a ``complete`` skill version: published versions are immutable.

    ``unless_present(directory)``, when given, is called under the same lock, just before the swap; a path it returns
    calls the publication off (the stage is removed, ``AlreadyPublishedError`` names that path). Two writers adding the
    same thing at once therefore cannot both publish it: the check and the swap are one step under the lock."""
    for file in stage.iterdir():
        with open(file, "rb") as f:
            os.fsync(f.fileno())
    with name_lock(path.parent):
        if path.exists() and VERSION_DIR.match(path.name) and _status(path) == "complete":
            shutil.rmtree(stage, ignore_errors=True)
            raise PublishedVersionError(f"{path} is a published (complete) version; it is never replaced")
        existing = unless_present(path.parent) if unless_present is not None else None
        if existing is not None:
            shutil.rmtree(stage, ignore_errors=True)
            raise AlreadyPublishedError(existing)
        if path.exists():
            retired = path.parent / f".{path.name}.old.{owner_tag(str(time.monotonic_ns()))}"
            os.rename(path, retired)
            os.rename(stage, path)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(stage, path)
    _fsync_directory(path.parent)
    return path


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def dead_partial(path: Path) -> bool:
    """``path`` is a regular file that a writer which is no longer alive left half-written (``envs.files.PARTIAL``)."""
    partial = PARTIAL.match(path.name)
    if partial is None or not path.is_file() or path.is_symlink():
        return False
    return not owner_alive(partial["host"], int(partial["pid"]))


def recover(directory: Path) -> list[str]:
    """Repair what dead writers left in ``directory`` (call under ``name_lock``); returns what was done.

    A missing ``v<N>`` with a dead writer's leftovers gets back its new stage if that holds a manifest
    (it was complete and fsynced before the swap began), else the old copy. Dead writers' stages,
    old copies, claims, hidden logs and half-written files (``envs.files.PARTIAL``, beside the versions or inside one) are
    removed; anything owned by a live process is kept.
    """
    done: list[str] = []
    if not directory.is_dir():
        return done
    leftovers: dict[int, list[tuple[Path, str, bool]]] = {}
    for entry in directory.iterdir():
        match = _HIDDEN.match(entry.name)
        if match:
            alive = owner_alive(match.group(4), int(match.group(3)))
            leftovers.setdefault(int(match.group(1)), []).append((entry, match.group(2), alive))
        elif dead_partial(entry):
            entry.unlink(missing_ok=True)  # a file a killed writer left half-written (a hidden log's figure)
            done.append(f"removed {entry.name}")
        elif VERSION_DIR.match(entry.name) and entry.is_dir() and not entry.is_symlink():
            for inner in list(entry.iterdir()):  # e.g. a manifest update or a figure of a version, cut short
                if dead_partial(inner):
                    inner.unlink(missing_ok=True)
                    done.append(f"removed {entry.name}/{inner.name}")
    for number, entries in leftovers.items():
        target = directory / f"v{number}"
        if any(alive for _, _, alive in entries):
            continue
        if not target.exists():
            stages = [e for e, kind, _ in entries if kind == "tmp" and (e / MANIFEST).exists()]
            olds = [e for e, kind, _ in entries if kind == "old" and (e / MANIFEST).exists()]
            chosen = next(iter(stages or olds), None)
            if chosen is not None:
                os.rename(chosen, target)
                done.append(f"restored {target} from {chosen.name}")
        for entry, _, _ in entries:
            if entry.exists():
                shutil.rmtree(entry, ignore_errors=True)
                done.append(f"removed {entry.name}")
    for entry in list(directory.iterdir()):
        if VERSION_DIR.match(entry.name) and is_claim_only(entry):
            try:
                claim = read_record(entry / CLAIM)
                dead = not owner_alive(str(claim["host"]), int(claim["pid"]))
            except (OSError, ValueError, KeyError, TypeError):
                dead = False  # unreadable claim: leave it, someone may be writing it
            if dead:
                shutil.rmtree(entry, ignore_errors=True)
                done.append(f"released {entry.name} (its run died before its first checkpoint)")
        log = _LOG.match(entry.name)
        if log:
            target = directory / f"v{log.group(1)}"
            finished = not target.exists() or _status(target) in ("complete", "diverged")
            owner = _owner(target) if target.exists() else None
            if finished or (owner is not None and not owner_alive(*owner)):
                entry.unlink(missing_ok=True)
                done.append(f"removed {entry.name}")
    return done


def abandoned(path: str | Path) -> bool:
    """A version (claim or checkpoint) whose run is certainly dead: its owner a process of this host that no longer
    exists. Unknown owners and other hosts' runs count as alive."""
    owner = _owner(Path(path))
    return owner is not None and not owner_alive(*owner)


def _owner(path: Path) -> tuple[str, int] | None:
    """The (host, pid) training ``path``, from its claim or its checkpoint's manifest."""
    try:
        if is_claim_only(path):
            record = read_record(path / CLAIM)
        else:
            record = read_record(path / MANIFEST).get("owner") or {}
        return str(record["host"]), int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8, whatever the locale) to ``path`` atomically: a temporary file beside it, fsynced, then
    renamed (``envs.files.atomic_write_bytes``)."""
    return atomic_write_bytes(path, text.encode("utf-8"))
