"""One composition run, for one operator or many, as named phases: compose and build (no environment samples), find
the jointly trained reference, evaluate every policy on the same seeded episodes, check the bound (bounded
operators), draw the figures, and write the report."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

import envs
import skills
from skills.evaluation.lockstep import EnvPool
from skills.library import atomic_write_text

from ..build import Built, build, build_policy_gap
from ..operators import Operator, make_operator
from ..plots import plot_comparison, plot_trajectories
from ..policy import ComposedPolicy
from ..skill import ComposedSkill, load, spec_names
from .checks import bound_checks, episode_bound
from .evaluation import Pairs, composed_policy, evaluate_row, find_joint, skill_cost, trajectories
from .figures import bound_episode_figure, q_slices_figure, render_episode
from .report import CompositionReport, OperatorsReport
from .settings import BuildConfig, EvaluationConfig, Sources


@dataclass
class Run:
    """What the phases share: the compositions (one per operator), their builds, the reference and the rows."""

    spec: str | Sequence[str]
    evaluation: EvaluationConfig
    sources: Sources
    build_config: BuildConfig = BuildConfig()
    compositions: dict[str, ComposedSkill] = field(default_factory=dict)
    builds: dict[str, Built] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    joint: skills.Skill | None = None
    joint_note: str = ""
    rows: dict[str, dict] = field(default_factory=dict)
    policies: dict[str, ComposedPolicy] = field(default_factory=dict)  # each composition's evaluated policy
    pairs: Pairs = field(default_factory=list)
    pool: EnvPool | None = None  # the evaluation's envs, made once, reused by every row
    out: Path = Path()
    started: float = field(default_factory=time.perf_counter)

    @property
    def base(self) -> ComposedSkill:
        return next(iter(self.compositions.values()))

    @property
    def single(self) -> bool:
        """One operator: the full report (bound, video); several: one table of operators."""
        return len(self.compositions) == 1 and not self.skipped

    def make_env(self):
        return envs.make_task_env(self.base.task, **self.evaluation.env_kwargs)


def run(spec: str | Sequence[str], operators: Sequence[str | Operator] = ("average",), *,
        weights: Sequence[float] | None = None, evaluation: EvaluationConfig = EvaluationConfig(),
        build_config: BuildConfig = BuildConfig(), sources: Sources = Sources(),
        selection: dict | None = None) -> CompositionReport | OperatorsReport:
    """Compose the skills of ``spec`` with each of ``operators`` (names or ``compose.operators.Operator`` objects),
    run every composition, the jointly trained reference and each constituent on the same seeded episodes, and
    report. One operator gives a ``CompositionReport`` (with the bound checks for a bounded operator, figures and an
    optional video); several give an ``OperatorsReport`` (one table, one trajectory figure; operators that do not
    apply are skipped with the reason). ``selection``: how the operator's setting was chosen on validation episodes
    (``compose.run.selection.select``), carried into the report. Writes report.json and report.md to the output
    directory."""
    state = Run(spec, evaluation, sources, build_config)
    torch.manual_seed(evaluation.seed)  # constituents and the joint skill sample from torch's global generator
    compose_all(state, operators, weights)
    state.out = output_directory(sources.out, state.base.skill_names + ("" if len(operators) == 1 else "-operators"))
    for name, composition in state.compositions.items():
        state.builds[name] = build(composition, sources.library, build_config.progress, build_config.sampler,
                                   build_config.bound)
    state.joint, state.joint_note = find_joint(state.base, sources.library, sources.joint)
    with EnvPool(state.make_env) as state.pool:
        evaluate_all(state)
        report = single_report(state) if state.single else operators_report(state)
    report.selection = selection
    # the run's own time, and the selection's before it (its builds and validation episodes): the command's whole cost
    report.wall_time_s = round(time.perf_counter() - state.started + (selection or {}).get("wall_time_s", 0.0), 1)
    report.out = str(state.out)
    atomic_write_text(state.out / "report.json", json.dumps(report.to_json(), indent=2))
    atomic_write_text(state.out / "report.md", report.markdown())
    return report


def compose_all(state: Run, operators: Sequence[str | Operator], weights: Sequence[float] | None) -> None:
    """Phase 1: one composition per operator. One operator that does not apply is an error; among several, it is
    skipped with its reason."""
    ops = [make_operator(op) for op in operators]
    if len(ops) == 1:
        state.compositions[ops[0].name] = load(state.spec, weights, state.sources.library, seed=state.evaluation.seed,
                                               operator=ops[0], allow_changed_task=state.sources.allow_changed_task)
        return
    names = spec_names(state.spec) if isinstance(state.spec, str) else list(state.spec)
    parts = [skills.load(n, state.sources.library, allow_changed_task=state.sources.allow_changed_task) for n in names]
    for op in ops:
        why = op.why_not(names, weights is not None)
        if why is not None:
            state.skipped[op.name] = why
            continue
        state.compositions[op.name] = ComposedSkill(parts, weights, labels=names, library=state.sources.library,
                                                    seed=state.evaluation.seed, operator=op)
    if not state.compositions:
        raise ValueError(f"no operator applies to {state.spec}: " + "; ".join(f"{k} {v}" for k, v in state.skipped.items()))


def evaluate_all(state: Run) -> None:
    """Phase 2: every composition, the joint and each constituent on the same seeded episodes. The single
    composition's (s, a) pairs are kept for the bound and the Q slices."""
    evaluation, pool = state.evaluation, state.pool
    assert pool is not None, "run() makes the pool"
    for name, composition in state.compositions.items():
        built = state.builds[name]
        kind = evaluation.sampler if state.single else "amortized"
        # the operator's offline fits (dc, gpi), and the amortized sampler (the other samplers train nothing)
        cost = built.info.get("operator_wall_time_s", 0.0) + (built.build_wall_time_s if kind == "amortized" else 0.0)
        row_name = "composed" if state.single else name
        state.policies[name] = composed_policy(composition, built, kind, evaluation.seed)
        state.rows[row_name] = evaluate_row(row_name, state.policies[name], pool, evaluation, (0, cost),
                                            state.pairs if state.single else None)
    if state.joint is not None:
        state.rows["joint"] = evaluate_row("joint", state.joint, pool, evaluation, skill_cost(state.joint))
    for label, part in zip(state.base.labels, state.base.parts, strict=True):
        state.rows[label] = evaluate_row(label, part, pool, evaluation, skill_cost(part))


def single_report(state: Run) -> CompositionReport:
    """Phases 3-5 of one operator: the bound checks (bounded operators), the figures, the video, the report."""
    composition, built, evaluation = state.base, next(iter(state.builds.values())), state.evaluation
    state.rows["composed"]["sampler"] = evaluation.sampler
    composed = next(iter(state.policies.values()))  # its stream goes on from the rows, as the video's episode does
    figures = {name: state.out / f"{name}.png" for name in ("bound_episode", "q_slices", "comparison")
               if composition.operator.bounded or name != "bound_episode"}
    if composition.operator.bounded:
        gap = (build_policy_gap(composition, built, state.sources.library, state.build_config.bound)
               if evaluation.mc is not None else None)
        bound = bound_checks(composition, built, (state.joint, state.joint_note), state.pairs, state.make_env, evaluation,
                             gap=gap, pool=state.pool)
        data = episode_bound(composition, composed, built, state.joint, state.make_env, evaluation, pool=state.pool)
        bound["mc_episode"] = data["mc_rows"]
        bound_episode_figure(data, figures["bound_episode"], f"{composition.name}: one composed episode "
                                                             f"(seed {evaluation.seed})")
    else:
        bound = {"note": f"the bound of Haarnoja et al. (2018) is about averaging; operator "
                         f"{composition.operator.name!r} is not checked against it"}
    q_slices_figure(composition, built, state.joint, state.pairs, evaluation.seed, figures["q_slices"])
    plot_comparison(state.rows, figures["comparison"], f"{composition.task.name}: {evaluation.episodes} seeded "
                                                       f"episodes, {evaluation.mode}")
    report = CompositionReport(
        **common_fields(state, figures), operator=composition.operator.settings(), sampler=evaluation.sampler,
        bound=bound, build={"cached": built.cached, "cache": built.info.get("cache"), "sampler": built.info.get("sampler"),
                            "sampler_wall_time_s": round(built.build_wall_time_s, 2),
                            "load_wall_time_s": round(built.load_wall_time_s, 3)},
        skills={label: str(p.path) for label, p in zip(composition.labels, composition.parts, strict=False)}
        | ({"joint": str(state.joint.path)} if state.joint else {}))
    if evaluation.render:
        video, report.video_seed = render_episode(composition, composed, evaluation.deterministic,
                                                  state.out / "composed.mp4", evaluation.seed, evaluation.env_kwargs)
        report.video = str(video)
    return report


def operators_report(state: Run) -> OperatorsReport:
    """Phases 3-5 of several operators: the trajectory figure (families with a top view) and the report."""
    evaluation, family = state.evaluation, state.base.task.family
    figures = {}
    if family.plane is not None:
        policies: dict[str, skills.policy.SoftPolicy] = {
            # fresh composed policies: their first episodes draw what the table's first episodes drew
            name: composed_policy(c, state.builds[name], "amortized", evaluation.seed)
            for name, c in state.compositions.items()}
        policies |= ({"joint": state.joint} if state.joint is not None else {})
        policies |= dict(zip(state.base.labels, state.base.parts, strict=False))
        episodes = min(evaluation.trajectory_episodes, evaluation.episodes)
        pool = state.pool
        assert pool is not None, "run() makes the pool"
        drawn = {name: trajectories(p, pool, episodes, evaluation, family) for name, p in policies.items()}
        figures["trajectories"] = state.out / "trajectories.png"
        marks = next(iter(drawn.values()))[1]
        plot_trajectories({n: d[0] for n, d in drawn.items()}, marks, figures["trajectories"],
                          f"{state.base.task.name}: the first {len(marks)} seeded episodes, {evaluation.mode} "
                          "(green: success)", family.plane_label, {n: d[2] for n, d in drawn.items()})
    operators = {name: {"operator": c.operator.settings(), "cached": state.builds[name].cached,
                        "operator_fit": state.builds[name].info.get("operator_fit", {})}
                 for name, c in state.compositions.items()}
    return OperatorsReport(**common_fields(state, figures), operators=operators, skipped=state.skipped)


def common_fields(state: Run, figures: dict[str, Path]) -> dict:
    """The fields every report has."""
    base, evaluation = state.base, state.evaluation
    return dict(spec=base.name, task=base.task.name, weights=base.weights.tolist(), alpha=base.alpha, gamma=base.gamma,
                episodes=evaluation.episodes, seed=evaluation.seed, deterministic=evaluation.deterministic,
                rows=state.rows, constituents=list(base.labels), joint_note=state.joint_note,
                figures={k: str(v) for k, v in figures.items()},
                env_kwargs={k: str(v) for k, v in evaluation.env_kwargs.items()})


def output_directory(out: str | Path | None, name: str) -> Path:
    """``out`` (default ``runs/compose/<name>-<time>``), created and checked writable now, not after minutes of work."""
    out = Path(out) if out else Path("runs") / "compose" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    (out / ".write-test").write_text("")
    (out / ".write-test").unlink()
    return out
