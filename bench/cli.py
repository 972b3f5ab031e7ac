"""Argument handling shared by the benchmarks' command lines."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from envs.cli import run_command
from skills.library import atomic_write_text
from skills.sql.learner import torch_device


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``, refuse an unusable ``--device`` with the reason, and apply ``--threads``."""
    args = parser.parse_args(argv)
    if hasattr(args, "device"):
        try:
            torch_device(args.device)
        except ValueError as err:
            parser.error(str(err))
    torch.set_num_threads(args.threads)
    return args


def pairs_parser(module: str, doc: str | None, spec_help: str, pairs: int) -> argparse.ArgumentParser:
    """The command line of a bench that scores Monte Carlo rollouts from (s, a) pairs of the composed policy's own
    episodes: ``spec``, ``--library``, ``--pairs`` (default ``pairs``), ``--seed`` (40000), then its own options."""
    from skills.cli import at_least

    parser = argparse.ArgumentParser(prog=f"python -m bench.{module}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help=spec_help)
    parser.add_argument("--library", help="skill library (default: trained/)")
    parser.add_argument("--pairs", type=at_least(2), default=pairs,
                        help=f"(s, a) pairs, one per composed episode (default {pairs})")
    parser.add_argument("--seed", type=at_least(0), default=40_000, help="first episode seed, and the fits' (default 40000)")
    return parser


def write_json(path: str | Path, data: Any, indent: int = 2) -> None:
    """Write a benchmark's result as JSON (atomically; the folder made if needed) and say where."""
    atomic_write_text(Path(path), json.dumps(data, indent=indent) + "\n")
    print(f"wrote {path}")


def show_and_write(data: Any, path: str | Path | None) -> None:
    """Write a benchmark's result to ``path`` when one is given, then print it as JSON: written first, so that a reader
    of the printout that goes away (``| head``) loses nothing."""
    if path:
        write_json(path, data)
    print(json.dumps(data, indent=2))


def run_measurement(measure: Callable[[], Any], path: str | Path | None) -> int:
    """Run a benchmark's measurement, print it and write it to ``path`` when one is given: exit 0. An unknown skill or
    a damaged library is one line on stderr and exit 2 (``envs.cli.run_command``)."""
    def body() -> int:
        show_and_write(measure(), path)
        return 0

    return run_command(body)

