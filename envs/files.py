"""Reading files that someone else may have made: a received skill library, a study's records, an arm's MJCF.

Every such read goes through ``open_regular`` (or ``read_bounded``), which checks before it reads a byte:

* the path, with every symbolic link resolved, lies inside the folder the caller names (``inside``): a link
  may point elsewhere in that folder, never out of it;
* it is a regular file: a device (``/dev/zero``), a FIFO, a socket or a directory is refused at once. The file
  is opened with ``O_NONBLOCK`` (opening a FIFO would otherwise wait for a writer) and ``O_NOFOLLOW`` on the
  resolved path, and its type is taken from ``fstat`` of the open descriptor, so what is checked is what is read;
  where the kernel says which file a descriptor holds (``/proc/self/fd``), that file is checked to lie inside the
  folder too, so a folder on the way swapped for a link after the check is refused;
* its size is at most ``limit`` bytes (``read_bounded`` also stops reading at ``limit``, should it grow).

Each refusal is an ``UnsafeFileError`` (a ``ValueError``: bad input, exit 2 on the command lines) that names the
file and why.

Writing goes the other way: ``atomic_write_bytes`` and ``atomic_path`` write beside the target and rename over it, so a
reader never sees half a file and a crash leaves the old one (or none).
"""

from __future__ import annotations

import errno
import os
import re
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

KINDS = {stat.S_IFDIR: "a directory", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
         stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link"}


class UnsafeFileError(ValueError):
    """A file that is not a regular file inside its folder, or larger than allowed."""


def within(path: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """``path`` with every link resolved, after checking that it lies inside ``folder`` (also resolved)."""
    real, root = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    if real != root and root not in real.parents:
        shown = f" (a link to {real})" if Path(os.path.abspath(path)) != real else ""
        raise UnsafeFileError(f"{path}{shown} is outside {root}; only files inside it are read")
    return real


def opened_inside(fd: int, root: Path) -> bool:
    """Whether the file open as ``fd`` lies inside ``root`` (a folder already resolved, not resolved again: the folder
    itself may be what was swapped), by the path the kernel holds for it (``/proc/self/fd``): ``O_NOFOLLOW`` guards
    only the last component, so a folder on the way swapped for a link between ``within`` and the open would be
    followed; this looks at what was opened. True where the platform has no ``/proc/self/fd`` (the checks before the
    open stand alone there)."""
    try:
        real = Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return True
    return real == root or root in real.parents


def kind_of(mode: int) -> str:
    """``"a FIFO"``, ``"a character device"``, ... for an ``st_mode``."""
    return KINDS.get(stat.S_IFMT(mode), "not a regular file")


def open_regular(path: str | os.PathLike, inside: str | os.PathLike | None = None, limit: int | None = None,
                 what: str = "file") -> BinaryIO:
    """``path`` opened for binary reading, once it is known to be a regular file (inside ``inside`` when given) of
    at most ``limit`` bytes; ``UnsafeFileError`` otherwise, ``FileNotFoundError`` when there is none."""
    root = Path(os.path.realpath(inside)) if inside is not None else None  # resolved once: what the open is held to
    real = within(path, root) if root is not None else Path(os.path.realpath(path))
    mode = os.stat(real).st_mode  # a FIFO, socket or device is refused before it is opened (FileNotFoundError if none)
    if not stat.S_ISREG(mode):
        raise UnsafeFileError(f"{what} {path} is {kind_of(mode)}, not a regular file; refused")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)
    except OSError as err:
        if err.errno == errno.ELOOP:  # replaced by a link after it was resolved
            raise UnsafeFileError(f"{what} {path} is a symbolic link that changed while it was opened") from None
        raise
    try:
        if root is not None and not opened_inside(fd, root):  # a folder on the way swapped for a link after the check
            raise UnsafeFileError(f"{what} {path} moved outside {root} while it was opened; refused")
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # replaced between the two looks
            raise UnsafeFileError(f"{what} {path} is {kind_of(info.st_mode)}, not a regular file; refused")
        if limit is not None and info.st_size > limit:
            raise UnsafeFileError(f"{what} {path} is {info.st_size} bytes; at most {limit} are read")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(path: str | os.PathLike, limit: int, inside: str | os.PathLike | None = None,
                 what: str = "file") -> bytes:
    """The bytes of a regular file (``open_regular``) of at most ``limit`` bytes."""
    with open_regular(path, inside, limit, what) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UnsafeFileError(f"{what} {path} grew past {limit} bytes while it was read")
    return data


PARTIAL = re.compile(r"^\.(?P<name>.+)\.tmp\.(?P<pid>\d+)@(?P<host>[^@/]+)$")
"""A file ``atomic_path`` left half-written when its process was killed (no ``suffix``): its target's name and owner."""


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A hidden temporary path beside ``path`` for the caller to write; on leaving the block without an error it is
    fsynced and renamed over ``path``, on an error removed. Names the writer (``.<name>.tmp.<pid>@<host>``, matched by
    ``PARTIAL``, so a repair can tell a dead writer's leftover), so two writers never share one; ``suffix`` (e.g.
    ``".mp4"``) is appended for writers that take the format from the name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp.{os.getpid()}@{socket.gethostname()}{suffix}"
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (``atomic_path``)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
