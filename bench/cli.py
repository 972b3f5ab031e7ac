"""Argument handling shared by the benchmarks' command lines."""

from __future__ import annotations

import argparse

import torch

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
