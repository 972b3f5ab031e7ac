"""Argument types shared by the command lines: an ordinary mistake becomes one clear line and exit 2."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from envs.cli import accept_negative_lists, positive_int

from .training.config import MAX_SEEDS, check_seeds

__all__ = ["add_weights_argument", "at_least", "non_negative_int", "positive_float", "positive_int", "seed_list",
           "weight_list"]


def at_least(least: int) -> Callable[[str], int]:
    """An argument type: a whole number >= ``least``, e.g. ``type=at_least(2)``."""

    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {least}, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be >= {least}, got {value}")
        return value

    return whole_number


def non_negative_int(text: str) -> int:
    """An integer >= 0 (seeds)."""
    return at_least(0)(text)


def positive_float(text: str) -> float:
    """A finite number > 0 (the temperature alpha)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def weight_list(text: str) -> list[float]:
    """Comma-separated finite numbers, e.g. ``0.7,0.3`` (``compose.check_weights`` checks the sum)."""
    try:
        values = [float(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 0.7,0.3, got {text!r}") from None
    if not all(math.isfinite(w) for w in values):
        raise argparse.ArgumentTypeError(f"weights must be finite, got {text!r}")
    return values


def add_weights_argument(parser: argparse.ArgumentParser) -> None:
    """``--weights W1,W2,...``: the composition's weights (``weight_list``; a negative one reaches the check that refuses
    it, not argparse's "expected one argument")."""
    accept_negative_lists(parser)
    parser.add_argument("--weights", type=weight_list,
                        help="comma-separated weights summing to 1 (default: equal), e.g. 0.7,0.3")


def seed_list(text: str) -> list[int]:
    """Seeds: ``5`` (seeds 0-4), or a comma-separated list of seeds and ranges: ``0,1,2``, ``3-7``, ``0,1,3-9``; each
    at most once, none negative, at most ``MAX_SEEDS`` (counted before the list is built: ``0-99999999`` is refused at
    once)."""
    try:
        if "," not in text and "-" not in text.strip("-"):
            count = int(text)
            if count > MAX_SEEDS:
                raise argparse.ArgumentTypeError(f"{count} seeds; one process trains at most {MAX_SEEDS} side by "
                                                 f"side (from {text!r})")
            seeds = list(range(count))
        else:
            bounds = [_seed_item(item) for item in text.split(",")]
            total = sum(hi - lo + 1 for lo, hi in bounds)
            if total > MAX_SEEDS:
                raise argparse.ArgumentTypeError(f"{total} seeds; one process trains at most {MAX_SEEDS} side by "
                                                 f"side (from {text!r})")
            seeds = [seed for lo, hi in bounds for seed in range(lo, hi + 1)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N, or seeds and ranges such as 0,1,2 or 3-7 or 0,1,3-9, got {text!r}") \
            from None
    try:
        return check_seeds(seeds)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{err} (from {text!r})") from None


def _seed_item(item: str) -> tuple[int, int]:
    """One item of a seed list: ``7`` -> (7, 7), ``3-7`` -> (3, 7); a reversed range is refused."""
    if "-" in item.strip("-"):
        lo, hi = (int(s) for s in item.split("-"))
        if hi < lo:
            raise ValueError(f"range {item!r} runs backwards")
        return lo, hi
    return int(item), int(item)


def sql_setting(text: str) -> tuple[str, object]:
    """An argument type: ``NAME=VALUE`` for one ``SQLConfig`` field (``random_episodes=0.3``, ``hidden=256,256``),
    the value read as that field's type; an unknown name lists the valid ones. The value's range is checked when the
    config is built (``SQLConfig.__post_init__``)."""
    from dataclasses import fields

    from .sql.learner import SQLConfig

    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    defaults: dict[str, object] = {f.name: f.default for f in fields(SQLConfig)}
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    if name == "alpha":
        raise argparse.ArgumentTypeError("the temperature has its own option: --alpha")
    if name == "gamma":
        raise argparse.ArgumentTypeError("the discount is the task family's (envs), shared by every skill that composes "
                                         "with it; it is not a training setting")
    if name not in defaults:
        valid = ", ".join(sorted(set(defaults) - {"alpha", "gamma"}))
        raise argparse.ArgumentTypeError(f"unknown SQL setting {name!r}; valid: {valid}")
    kind = type(defaults[name])
    readers: dict[type, Callable[[str], object]] = {int: int, float: float, str: str}
    try:
        if kind is bool:
            if value.lower() not in ("true", "false"):
                raise ValueError
            return name, value.lower() == "true"
        if kind is tuple:
            return name, tuple(int(v) for v in value.split(","))
        return name, readers[kind](value)
    except ValueError:
        what = {bool: "true or false", tuple: "whole numbers joined by commas", int: "a whole number",
                float: "a number"}.get(kind, kind.__name__)
        raise argparse.ArgumentTypeError(f"{name} takes {what}, got {value!r}") from None
