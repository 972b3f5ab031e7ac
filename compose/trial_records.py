"""A study's trial records (``<out>/trials/<trial>.json``), written clean and checked when read back.

A record is what a finished trial returned (``compose.study``): a train record names the skill it trained (its
path, steps, learning curve), an eval record holds the rows that the study aggregates. A study reads records that
an earlier run left, so a record is checked before use: read as a regular file inside ``<out>/trials``, bounded in
size (``envs.files``), valid JSON with no NaN or infinity, the fields the study reads present with the right types,
numbers finite and within ``MAX_MAGNITUDE`` (rates within [0, 1]), and a train record's skill inside the study's
library or the default one. A record that fails is named, with why, and its trial runs again (``BadRecord``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from envs.files import UnsafeFileError, read_bounded
from skills.library import SkillError, inside_library

MAX_RECORD_BYTES = 64 << 20  # a record is a few KB (a learning curve, a few rows)
MAX_MAGNITUDE = 1e9  # returns, soft returns, bound figures, wall times: anything larger is not a measurement
METRICS = ("success_rate", "return_mean", "soft_return_mean")
COLLISIONS = "collision_rate"  # per seed only (no per-episode record): its interval is a percentile bootstrap over seeds
MODES = ("stochastic", "deterministic")
MAX_EPISODES = 100_000  # per-episode outcomes in one record


class BadRecord(ValueError):
    """A trial record that cannot be used (unreadable, malformed, out of range, or naming a path outside the
    study's libraries); its trial runs again."""


def clean_numbers(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (as the study reads a missing figure), so that a
    record this toolkit writes is strict JSON and always reads back."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_numbers(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_numbers(v) for v in value]
    return value


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number a record may hold")


def read_record(path: Path, kind: str, libraries: Sequence[str | Path]) -> dict:
    """The checked record at ``path`` of a trial of ``kind`` (``"train"``, ``"group"``: several seeds' train records
    by key, or ``"eval"``); ``BadRecord`` naming the file and why otherwise."""

    def check(record: Any) -> None:
        if kind == "train":
            check_train_record(record, libraries)
        elif kind == "group":
            if not isinstance(record, dict):
                raise BadRecord(f"a group record must be a JSON object, got {type(record).__name__}")
            for seed_record in record.values():
                check_train_record(seed_record, libraries)
        else:
            check_eval_record(record)
    return read_checked(path, "trial record", check)


def read_checked(path: Path, what: str, check: Callable[[Any], None]) -> Any:
    """The JSON at ``path`` (a regular file inside its folder, at most ``MAX_RECORD_BYTES``, no NaN or infinity)
    once ``check`` accepts it; ``BadRecord`` naming ``what``, the file and why otherwise."""
    try:
        value = json.loads(read_bounded(path, MAX_RECORD_BYTES, inside=path.parent, what=what),
                           parse_constant=_refuse_constant)
        check(value)
    except (OSError, ValueError, RecursionError, UnicodeDecodeError) as err:
        detail = str(err) if isinstance(err, (BadRecord, UnsafeFileError)) else f"{type(err).__name__}: {err}"
        raise BadRecord(f"{what} {path} cannot be used ({detail})") from None
    return value


MAX_INVOCATIONS = 100_000  # a study resumed this many times is not one study


def read_invocations(path: Path) -> list[dict]:
    """The earlier invocations of a study (``<out>/invocations.json``, ``compose.study``): a list of objects with
    ``finished`` (text) and ``wall_time_s`` (a finite number >= 0), read and checked as a record is; ``[]`` when
    there is none, ``BadRecord`` naming the file and why otherwise."""

    def check(ledger: Any) -> None:
        if not isinstance(ledger, list) or len(ledger) > MAX_INVOCATIONS:
            raise BadRecord(f"it must be a list of at most {MAX_INVOCATIONS} invocations")
        for i, row in enumerate(ledger):
            if not (isinstance(row, dict) and isinstance(row.get("finished"), str)):
                raise BadRecord(f"invocation {i} must be an object with 'finished' text, got {row!r}"[:200])
            _number(row.get("wall_time_s"), f"invocation {i}'s wall_time_s", optional=False, low=0.0)
    if not (path.exists() or path.is_symlink()):
        return []
    return read_checked(path, "invocation ledger", check)


def _number(value: Any, where: str, optional: bool = True, low: float = -MAX_MAGNITUDE,
            high: float = MAX_MAGNITUDE) -> None:
    if value is None and optional:
        return
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and low <= value <= high):
        raise BadRecord(f"{where} must be a finite number in [{low:g}, {high:g}]" + (" or null" if optional else "")
                        + f", got {value!r}")


def _mapping(record: Any, key: str, where: str) -> dict:
    value = record.get(key) if isinstance(record, dict) else None
    if not isinstance(value, dict):
        raise BadRecord(f"{where}{key} must be a JSON object, got {value!r}"[:200])
    return value


def check_train_record(record: Any, libraries: Sequence[str | Path]) -> None:
    """A train record: ``task`` (text), ``seed`` (whole number >= 0), ``path`` (a skill inside one of ``libraries``),
    ``env_steps`` (whole number >= 0), ``wall_time_s`` and ``history`` (evaluations: env_steps, finite
    return_mean, success_rate in [0, 1], or null)."""
    if not isinstance(record, dict):
        raise BadRecord(f"a train record must be a JSON object, got {type(record).__name__}")
    missing = [k for k in ("task", "seed", "path", "env_steps", "history") if k not in record]
    if missing:
        raise BadRecord(f"missing {', '.join(missing)}")
    if not isinstance(record["task"], str) or not isinstance(record["path"], str):
        raise BadRecord(f"task and path must be text, got {record['task']!r} and {record['path']!r}"[:200])
    for key in ("seed", "env_steps"):
        if type(record[key]) is not int or record[key] < 0:
            raise BadRecord(f"{key} must be a whole number >= 0, got {record[key]!r}")
    _number(record.get("wall_time_s"), "wall_time_s", low=0.0)
    inside_any(record["path"], libraries)
    if not isinstance(record["history"], list):
        raise BadRecord(f"history must be a list, got {type(record['history']).__name__}")
    for i, row in enumerate(record["history"]):
        if not isinstance(row, dict) or type(row.get("env_steps")) is not int:
            raise BadRecord(f"history[{i}] must be an evaluation with whole env_steps, got {row!r}"[:200])
        _number(row.get("return_mean"), f"history[{i}].return_mean")
        _number(row.get("success_rate"), f"history[{i}].success_rate", low=0.0, high=1.0)


def inside_any(path: str, libraries: Sequence[str | Path]) -> None:
    """``path`` lies inside one of ``libraries``; ``BadRecord`` naming them otherwise."""
    for library in libraries:
        try:
            inside_library(path, library)
            return
        except SkillError:
            continue
    raise BadRecord(f"path {path!r} is outside the study's libraries ({', '.join(map(str, libraries))})")


def check_eval_record(record: Any) -> None:
    """An eval record: ``spec``, ``seed``, per mode (stochastic, deterministic) a row per policy with the metrics
    (finite numbers or null; success_rate in [0, 1]) and final measures, and the bound figures."""
    if not isinstance(record, dict):
        raise BadRecord(f"an eval record must be a JSON object, got {type(record).__name__}")
    if not isinstance(record.get("spec"), str) or type(record.get("seed")) is not int:
        raise BadRecord(f"spec and seed must be text and a whole number, got {record.get('spec')!r}, "
                        f"{record.get('seed')!r}"[:200])
    policies = ("composed", "joint", *record["spec"].split("+"))
    for mode in MODES:
        rows = _mapping(record, mode, "")
        for policy in policies:
            row = _mapping(rows, policy, f"{mode}.")
            for metric in METRICS:
                rate = metric == "success_rate"
                _number(row.get(metric), f"{mode}.{policy}.{metric}", low=0.0 if rate else -MAX_MAGNITUDE,
                        high=1.0 if rate else MAX_MAGNITUDE)
            # optional: records from before it was kept lack it
            _number(row.get(COLLISIONS), f"{mode}.{policy}.{COLLISIONS}", low=0.0, high=1.0)
            measures = row.get("final_measures", {})
            if not isinstance(measures, dict):
                raise BadRecord(f"{mode}.{policy}.final_measures must be a JSON object")
            for name, value in measures.items():
                _number(value, f"{mode}.{policy}.final_measures.{name}")
            check_per_episode(row.get("per_episode", {}), f"{mode}.{policy}.per_episode")
    check_bound(_mapping(record, "bound", ""))


def check_per_episode(per_episode: Any, where: str) -> None:
    """Per-episode outcomes: equal-length lists (at most ``MAX_EPISODES``) of whole seeds, booleans and numbers."""
    if not isinstance(per_episode, dict):
        raise BadRecord(f"{where} must be a JSON object")
    lengths = set()
    for key, values in per_episode.items():
        if not isinstance(values, list) or len(values) > MAX_EPISODES:
            raise BadRecord(f"{where}.{key} must be a list of at most {MAX_EPISODES} values")
        lengths.add(len(values))
        for value in values:
            if key == "success" and not isinstance(value, bool):
                raise BadRecord(f"{where}.success must hold true or false, got {value!r}"[:200])
            if key == "seeds" and type(value) is not int:
                raise BadRecord(f"{where}.seeds must hold whole numbers, got {value!r}"[:200])
            if key not in ("success", "seeds"):
                _number(value, f"{where}.{key}[]")
    if len(lengths) > 1:
        raise BadRecord(f"{where}: lists of different lengths {sorted(lengths)}")


CONTROL_LISTS = ("controls", "lower_D_controls")  # C's controls, and D's (compose.study.policy_gap_figures)
VERDICTS = ("lower_D_holds_composed", "lower_D_holds_exact")  # whether a policy meets Q_w - D: true, false or null


def check_bound(bound: dict) -> None:
    """The bound figures (numbers or null), the controls of ``C`` and of ``D`` (lists of objects with a boolean
    ``failed`` and, where recorded, a boolean ``should_fail``), whether each policy meets ``Q_w - D`` (true, false or
    null), each actor's margin to it and its SE (numbers or null), the verdict (an object or null) and each actor's soft
    return (numbers or null)."""
    for name, value in bound.items():
        if name in CONTROL_LISTS:
            if value is not None and not (isinstance(value, list) and len(value) <= 64 and all(
                    isinstance(c, dict) and isinstance(c.get("failed"), bool)
                    and isinstance(c.get("should_fail", False), bool) for c in value)):
                raise BadRecord(f"bound.{name} must be a list of objects, each with a boolean 'failed' (and "
                                "'should_fail', where given)")
        elif name in VERDICTS:
            if value is not None and not isinstance(value, bool):
                raise BadRecord(f"bound.{name} must be true, false or null, got {value!r}"[:200])
        elif name == "lower_D_margins":  # actor -> [margin, SE]
            if not isinstance(value, dict) or len(value) > 64:
                raise BadRecord("bound.lower_D_margins must be a JSON object of at most 64 actors")
            for actor, pair in value.items():
                if not (isinstance(pair, list) and len(pair) == 2):
                    raise BadRecord(f"bound.lower_D_margins.{actor} must be [margin, SE], got {pair!r}"[:200])
                for number in pair:
                    _number(number, f"bound.lower_D_margins.{actor}")
        elif name == "verdict":
            if value is not None and not isinstance(value, dict):
                raise BadRecord("bound.verdict must be a JSON object or null")
        elif name == "actors":
            if not isinstance(value, dict) or len(value) > 64:
                raise BadRecord("bound.actors must be a JSON object")
            for actor, soft in value.items():
                _number(soft, f"bound.actors.{actor}")
        else:
            _number(value, f"bound.{name}")
