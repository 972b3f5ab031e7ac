"""Settings chosen on validation episodes and reported on others.

    python -m compose.run reach+avoid --operator priority --order avoid,reach --select epsilon=0.1,0.3,0.6,1.0
    python -m compose.run reach+avoid --select sampler.updates=3000,10000,20000

``select`` evaluates the composition with each candidate value of one setting (of the operator, or of the amortized
sampler's build, ``sampler.FIELD`` of ``compose.sampling.SamplerConfig``) on *validation* episodes
(seeds from ``VALIDATION_SEED``), picks one by a rule written down in advance (``SelectionRule``), and returns the
chosen operator with the record of how it was chosen. ``compose.run`` then reports that operator on its own
episodes (seeds from ``skills.evaluation.EVAL_SEED``), which must not overlap the validation ones, and the report
carries the selection record beside the result. The constituents and the joint skill are not part of the
selection: only the composition's setting is chosen, and only the composition runs on the validation episodes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from functools import partial
from typing import Any

import envs
from skills.evaluation.lockstep import EnvPool

from ..build import build
from ..operators import Operator, make_operator
from ..sampling import SamplerConfig
from ..skill import load
from .evaluation import composed_policy, evaluate_row
from .settings import BuildConfig, EvaluationConfig, Sources

VALIDATION_SEED = 20_000  # validation episodes: seeds 20000, 20001, ... (reports use 10000, 10001, ...)
VALIDATION_EPISODES = 50
SAMPLER_PREFIX = "sampler."
SAMPLER_SETTINGS = {f.name: f.type for f in fields(SamplerConfig) if f.name in ("updates", "batch_size", "particles",
                                                                              "fixed_fraction", "lr")}


@dataclass(frozen=True)
class SelectionRule:
    """The rule, fixed before looking: the candidate with the highest validation success rate among those whose
    collision rate is at most ``max_collisions`` (all candidates if none is); ties go to the higher mean return,
    then to the earlier candidate."""

    max_collisions: float = 0.01

    def describe(self) -> str:
        return (f"highest validation success among candidates with collision rate <= {self.max_collisions:g} "
                "(all if none); ties: higher mean return, then the earlier candidate")

    def choose(self, rows: Sequence[dict]) -> int:
        """The index of the chosen row (``success_rate``, ``collision_rate``, ``return_mean`` each)."""
        allowed = [i for i, r in enumerate(rows) if r.get("collision_rate", 0.0) <= self.max_collisions] or \
            list(range(len(rows)))
        return max(allowed, key=lambda i: (rows[i]["success_rate"], rows[i]["return_mean"], -i))


@dataclass(frozen=True)
class Candidates:
    """Values to try for one setting of an operator (``epsilon=0.1,0.3,0.6``)."""

    setting: str
    values: tuple[float, ...]

    @classmethod
    def parse(cls, text: str) -> Candidates:
        name, sep, values = text.partition("=")
        try:
            parsed = tuple(float(v) for v in values.split(",") if v.strip())
        except ValueError:
            parsed = ()
        if not sep or not name.strip() or len(parsed) < 2:
            raise ValueError(f"--select takes SETTING=V1,V2[,...] with at least two numbers, got {text!r}")
        candidates = cls(name.strip(), parsed)
        if candidates.setting.startswith(SAMPLER_PREFIX):
            candidates.sampler_values()  # a bad sampler setting is refused before anything runs
        return candidates

    @property
    def is_sampler(self) -> bool:
        return self.setting.startswith(SAMPLER_PREFIX)

    def sampler_values(self, base: SamplerConfig | None = None) -> list[SamplerConfig]:
        """Each candidate as ``base`` (default: ``SamplerConfig()``) with the one field replaced (``sampler.updates``)."""
        name = self.setting[len(SAMPLER_PREFIX):]
        if name not in SAMPLER_SETTINGS:
            raise ValueError(f"unknown sampler setting {self.setting!r}; valid: "
                             f"{', '.join(SAMPLER_PREFIX + k for k in SAMPLER_SETTINGS)}")
        whole = SAMPLER_SETTINGS[name] in (int, "int")
        if whole and any(v != int(v) or v < 1 for v in self.values):
            raise ValueError(f"{self.setting} takes whole numbers >= 1, got {', '.join(f'{v:g}' for v in self.values)}")
        if not whole and any(not v > 0 for v in self.values):
            raise ValueError(f"{self.setting} takes numbers > 0, got {', '.join(f'{v:g}' for v in self.values)}")
        settings: list[dict[str, Any]] = [{name: int(v) if whole else v} for v in self.values]
        return [replace(base or SamplerConfig(), **one) for one in settings]

    def operators(self, operator: Operator) -> list[Operator]:
        """Each candidate as ``operator`` with the one setting replaced, all made before anything runs
        (``make_operator``: an unknown setting names the valid ones, a whole-number one such as
        ``target_update_interval`` takes whole numbers, one that is not a number, ``hidden`` or ``order``, is refused)."""
        return [make_operator(operator, **{self.setting: v}) for v in self.values]


@dataclass
class Selection:
    """The chosen operator and how it was chosen (JSON-ready ``record``)."""

    operator: Operator
    record: dict = field(default_factory=dict)
    build_config: BuildConfig | None = None  # the chosen build settings (a ``sampler.`` setting), else None


def check_disjoint(validation: EvaluationConfig, test: EvaluationConfig) -> None:
    """Validation and report episodes must not share a seed."""
    v = range(validation.seed, validation.seed + validation.episodes)
    t = range(test.seed, test.seed + test.episodes)
    if v.start < t.stop and t.start < v.stop:
        raise ValueError(f"validation episodes (seeds {v.start}-{v.stop - 1}) overlap the reported ones "
                         f"(seeds {t.start}-{t.stop - 1}); choose another --seed or --validation-seed")


def select(spec: str, operator: Operator, candidates: Candidates, *, test: EvaluationConfig,
           validation: EvaluationConfig, rule: SelectionRule = SelectionRule(), build_config: BuildConfig = BuildConfig(),
           sources: Sources = Sources()) -> Selection:
    """Evaluate ``operator`` with each candidate value of ``candidates.setting`` on the validation episodes (the
    composition alone, stochastic), choose by ``rule``, and return the chosen operator (and, for a ``sampler.``
    setting, the build settings) and the record."""
    check_disjoint(validation, test)
    started = time.perf_counter()
    rows = []
    builds = ([replace(build_config, sampler=s) for s in candidates.sampler_values(build_config.sampler)]
              if candidates.is_sampler
              else [build_config] * len(candidates.values))
    ops = [operator] * len(candidates.values) if candidates.is_sampler else candidates.operators(operator)
    for value, candidate_build, op in zip(candidates.values, builds, ops, strict=True):
        composition = load(spec, library=sources.library, seed=validation.seed, operator=op,
                           allow_changed_task=sources.allow_changed_task)
        built = build(composition, sources.library, candidate_build.progress, candidate_build.sampler,
                      candidate_build.bound)
        policy = composed_policy(composition, built, validation.sampler, validation.seed)
        with EnvPool(partial(envs.make_task_env, composition.task, **validation.env_kwargs)) as pool:
            row = evaluate_row(f"{candidates.setting}={value:g}", policy, pool, validation, (0, 0.0))
        rows.append({"value": value, **{k: row[k] for k in ("success_rate", "collision_rate", "return_mean")
                                        if k in row}})
    chosen = rule.choose(rows)
    value = candidates.values[chosen]
    record = {"setting": candidates.setting, "chosen": value, "rule": rule.describe(),
              "validation": {"seed": validation.seed, "episodes": validation.episodes, "mode": validation.mode},
              "candidates": rows, "wall_time_s": round(time.perf_counter() - started, 1)}
    if candidates.is_sampler:
        return Selection(operator, record, builds[chosen])
    return Selection(ops[chosen], record)


def selection_lines(record: dict) -> list[str]:
    """The selection record for people."""
    v = record["validation"]
    lines = [f"Selection: {record['setting']} = {record['chosen']:g}, chosen on validation episodes "
             f"(seeds {v['seed']}-{v['seed'] + v['episodes'] - 1}, {v['mode']}) disjoint from the reported ones, by the "
             f"rule: {record['rule']}" + (f" ({record['wall_time_s']:.0f} s, within the run's wall time)."
                                          if "wall_time_s" in record else "."), "",
             f"| {record['setting']} | validation success | collisions | return |", "|---|---|---|---|"]
    for row in record["candidates"]:
        mark = " (chosen)" if row["value"] == record["chosen"] else ""
        lines.append(f"| {row['value']:g}{mark} | {row['success_rate']:.2f} | {row.get('collision_rate', 0.0):.2f} "
                     f"| {row['return_mean']:.2f} |")
    return lines
