"""What every command line shares: the one error helper (``run_command``), and the options for the env
settings a user can give ``envs.make`` for an arm task (``compose.run``, ``skills.evaluate``, ...).

It lives in ``envs``, the lowest package, so that the commands of every package (``envs.check_arm`` too) use it.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import select
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .arms.base import MAX_ORIGIN
from .tasks import load_tasks

BAD_INPUT, CANNOT_WRITE = 2, 1  # exit codes
Handler = Callable[[BaseException], int]
_ROOT = Path(__file__).resolve().parents[1]
TOOLKIT_PACKAGES = tuple(_ROOT / name for name in ("envs", "skills", "compose", "bench", "examples"))


def raised_by_toolkit(err: BaseException) -> bool:
    """Whether ``err`` was raised in the toolkit's own code (its innermost frame lies in one of its packages): a check
    that refused some input, whose message is written for a user. A ``ValueError`` raised inside numpy, torch or the
    standard library (a shape mismatch from a bug, an unwrapped parse) is not one of those, and its traceback is
    what a bug report needs."""
    frame = err.__traceback__
    if frame is None:
        return True
    while frame.tb_next is not None:
        frame = frame.tb_next
    where = Path(frame.tb_frame.f_code.co_filename).resolve()
    return any(where.is_relative_to(package) for package in TOOLKIT_PACKAGES)


def run_command(body: Callable[[], int], handlers: Mapping[type[BaseException], Handler] | None = None) -> int:
    """Run a command's body and turn an ordinary failure into one line on stderr and an exit code: bad input
    (``ValueError``: unknown names, bad settings, damaged skills, which are all ``ValueError``s) exits 2 with
    ``error: ...``; ``OSError`` (a full disk, a read-only library, an output path that is a file) exits 1 with
    ``error: cannot write: ...``. ``handlers`` come first, for what a command treats its own way (a diverged
    training, Ctrl-C). A ``ValueError`` raised outside the toolkit's code (``raised_by_toolkit``; a bug hours into
    a benchmark, say) prints its traceback above that line, so that where it came from is not lost. A reader of
    the output that went away (``python -m skills | head``) ends the command quietly with exit 1 (``reader_gone``); any
    other broken pipe is an ``OSError`` like the rest."""
    try:
        status = body()
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
        return status
    except BaseException as err:
        if isinstance(err, BrokenPipeError) and stdout_reader_gone():
            return reader_gone()
        for kind, handle in (handlers or {}).items():
            if isinstance(err, kind):
                return handle(err)
        if isinstance(err, ValueError):
            if not raised_by_toolkit(err):
                traceback.print_exception(err, file=sys.stderr)
            print(f"error: {err}", file=sys.stderr)
            return BAD_INPUT
        if isinstance(err, OSError):
            print(f"error: cannot write: {err}", file=sys.stderr)
            return CANNOT_WRITE
        raise


def stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end has been closed (``poll`` reports an error on it), so that a
    ``BrokenPipeError`` is the reader's going and not some other pipe's (a worker's connection, say: that one is
    reported)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by something without a descriptor (a test's capture)
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def reader_gone() -> int:
    """What a command does when the reader of its output has gone (``| head`` closed the pipe): point stdout at
    ``os.devnull`` so that the interpreter's own flush at exit cannot raise again, and return exit code 1, with no
    traceback (as the Python documentation advises for SIGPIPE)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return CANNOT_WRITE


# argparse reads a value that starts with "-" as an option unless it looks like one negative number; a list of numbers
# (-0.2,0,0.4) is a value too
NUMBER_OR_NUMBER_LIST = re.compile(r"^-(\d+|\d*\.\d+)([eE][-+]?\d+)?(,[-+]?(\d+|\d*\.\d+|\d+\.)([eE][-+]?\d+)?)*$")


def accept_negative_lists(parser: argparse.ArgumentParser) -> None:
    """Let ``parser`` take ``--workspace-origin -0.2,0,0.4`` and ``--weights -0.5,1.5`` as values (argparse refused them
    with "expected one argument"; ``--flag=-0.2,0,0.4`` always worked). argparse keeps this test in a private
    attribute; ``tests/test_hostile_inputs.py`` checks it still does."""
    parser._negative_number_matcher = NUMBER_OR_NUMBER_LIST  # type: ignore[attr-defined]


def positive_int(text: str) -> int:
    """An integer >= 1 (steps, episodes, intervals)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def workspace_origin(text: str) -> tuple[float, float, float] | str:
    """``"X,Y,Z"`` (metres, world frame, each within ``MAX_ORIGIN``) -> a 3-tuple, or ``"auto"``; a clear error
    otherwise."""
    if text == "auto":
        return text
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) and abs(v) <= MAX_ORIGIN for v in values):
        raise argparse.ArgumentTypeError(f"expected X,Y,Z in metres (three finite numbers, each within {MAX_ORIGIN:g} "
                                         f"m of the base) or auto, got {text!r}")
    return values


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tasks FILE_OR_MODULE`` (repeatable): tasks defined in a user's code (``envs.load_tasks``)."""
    parser.add_argument("--tasks", action="append", metavar="FILE_OR_MODULE", default=[],
                        help="load tasks defined in your own code first: a .py file or an importable module "
                             "(repeatable); then name them like built-in tasks, e.g. reach+stay_low")


def load_task_modules(modules: list[str] | tuple[str, ...]) -> list[str]:
    """Load every user task module given with ``--tasks``; the names of the tasks they registered."""
    return [name for module in modules for name in load_tasks(module)]


def add_arm_arguments(parser: argparse.ArgumentParser) -> None:
    """``--arm``, ``--ee-site`` and ``--workspace-origin``: the custom-arm options of ``envs.make``."""
    accept_negative_lists(parser)
    parser.add_argument("--arm", help="run on a custom arm: an MJCF path, or jaco (dm_control's Kinova Jaco with "
                        "its hand); arm tasks only")
    parser.add_argument("--ee-site", help="end-effector site of the custom arm (jaco: jaco_hand/pinchsite)")
    parser.add_argument("--workspace-origin", type=workspace_origin, metavar="X,Y,Z|auto",
                        help="custom arm: world point that becomes the workspace origin, or auto (the reachable one "
                             "nearest the home pose's end effector); default: the end effector's home position")


def arm_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``envs.make`` keyword arguments that ``add_arm_arguments`` parsed (only those given)."""
    given = {"arm": args.arm, "ee_site": args.ee_site, "workspace_origin": args.workspace_origin}
    return {k: v for k, v in given.items() if v is not None}
