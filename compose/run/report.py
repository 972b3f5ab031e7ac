"""A run's report: typed, serialised to ``report.json`` with the keys it has always had, and rendered as
Markdown (``report.md``) and console tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skills.evaluation.episodes import collision_text

from .selection import selection_lines

MODE_NOTES = {"stochastic": "stochastic: every policy draws one sampler action per step (its max-ent policy)",
              "deterministic": "deterministic: every policy takes the highest-Q of 32 sampled actions"}


@dataclass
class RunReport:
    """What every run reports: the composition, the evaluation, and one row of metrics per policy (each operator's
    composition, ``joint``, each constituent), all on the same seeded episodes."""

    spec: str
    task: str
    weights: list[float]
    alpha: float
    gamma: float
    episodes: int
    seed: int
    deterministic: bool
    rows: dict[str, dict]  # policy -> metrics (compose runs' own rows first, then joint, then the constituents)
    constituents: list[str]
    joint_note: str = ""
    figures: dict[str, str] = field(default_factory=dict)
    env_kwargs: dict[str, str] = field(default_factory=dict)
    wall_time_s: float = 0.0
    out: str = ""
    selection: dict | None = None  # how a setting was chosen on validation episodes (compose.run.selection)

    @property
    def mode(self) -> str:
        return "deterministic" if self.deterministic else "stochastic"

    @property
    def where(self) -> str:
        """``"reach+avoid"``, or with a custom arm ``"reach+avoid (arm: three_link_arm.xml)"``: what the run ran on."""
        arm = self.env_kwargs.get("arm")
        return self.task + (f" (arm: {Path(str(arm)).name})" if arm else "")

    def header(self) -> dict[str, Any]:
        out = {"spec": self.spec, "task": self.task, "weights": self.weights, "alpha": self.alpha, "gamma": self.gamma,
               "episodes": self.episodes, "seed": self.seed}
        return out | ({"selection": self.selection} if self.selection is not None else {})

    def selection_markdown(self) -> list[str]:
        return [*selection_lines(self.selection), ""] if self.selection is not None else []

    def reference(self) -> dict:
        return self.rows.get("joint", {"note": self.joint_note})

    def constituent_rows(self) -> dict[str, dict]:
        return {label: self.rows[label] for label in self.constituents}

    def __getitem__(self, key: str) -> Any:
        """The report as its JSON reads (``to_json()[key]``)."""
        return (self.to_json() | {"out": self.out})[key]

    def to_json(self) -> dict:
        raise NotImplementedError


@dataclass
class CompositionReport(RunReport):
    """One operator's composition against the joint and the constituents, with the bound checks (bounded
    operators), the build's cost and an optional video."""

    operator: dict = field(default_factory=dict)
    sampler: str = "amortized"
    bound: dict = field(default_factory=dict)
    build: dict = field(default_factory=dict)
    skills: dict[str, str] = field(default_factory=dict)
    video: str | None = None
    video_seed: int | None = None

    def to_json(self) -> dict:
        out = self.header() | {
            "operator": self.operator, "sampler": self.sampler, "mode": self.mode, "deterministic": self.deterministic,
            "mode_note": MODE_NOTES[self.mode], "composed": self.rows["composed"], "joint": self.reference(),
            "constituents": self.constituent_rows(), "bound": self.bound, "build": self.build, "skills": self.skills,
            "figures": self.figures, "env_kwargs": self.env_kwargs}
        if self.video is not None:
            out |= {"video": self.video, "video_seed": self.video_seed}
        return out | {"wall_time_s": self.wall_time_s}

    def markdown(self) -> str:
        lines = [f"# Composition report: {self.spec} on {self.where}", "",
                 (f"weights {self.weights}, alpha {self.alpha}, gamma {self.gamma}, {self.episodes} episodes from seed "
                  f"{self.seed}, sampler {self.sampler}; {MODE_NOTES[self.mode]}"), "",
                 "Soft return: discounted over the episode, sum_t gamma^t (r_t + alpha H_t), each policy credited with "
                 "its own entropy (skills.evaluation.entropy; report.json keeps the V - Q credit as soft_return_vq_mean).",
                 "", *self.selection_markdown(), comparison_table(self.rows), "", "## Bound (tight form)", "",
                 *bound_lines(self.bound), "",
                 "Error sources: delta by importance sampling (common random numbers); C by TD on the skills'",
                 "stored transitions with a max over sampled actions; Monte Carlo soft returns carry sampling",
                 "error (the CIs) and a tail bound; their entropy terms are each acting policy's own (for a sampler,",
                 "the change of variables through its network, exact where noise -> action is one-to-one, and where",
                 "it folds a nearest-neighbour estimate, which reads high there; exact for the random actor;",
                 "V_w - Q_w for the exact pi_w, whose V_w is an importance-sampling estimate; each actor's line in",
                 "report.json says how).", "",
                 "## Figures", ""]
        lines += [f"![{k}]({Path(v).name})" for k, v in self.figures.items()]
        if self.video is not None:
            lines += ["", f"Video: {Path(self.video).name} (seed {self.video_seed})"]
        return "\n".join(lines) + "\n"

    def console(self) -> list[str]:
        lines = [f"\n{self.spec} on {self.where} ({self.episodes} episodes, seed {self.seed}, {self.mode}):\n",
                 comparison_table(self.rows), "\nbound (tight form):", *bound_lines(self.bound)]
        if "joint" not in self.rows:
            lines.append(f"\nnote: {self.joint_note}")
        if self.video is not None:
            lines.append(f"\nvideo: {self.video}")
        return lines + [f"\nreport: {self.out}/report.md  ({self.wall_time_s:.0f} s)"]


@dataclass
class OperatorsReport(RunReport):
    """Several operators' compositions in one table, beside the joint and the constituents."""

    operators: dict[str, dict] = field(default_factory=dict)  # name -> its settings, cached, fit record
    skipped: dict[str, str] = field(default_factory=dict)  # operators that do not apply here, and why

    def to_json(self) -> dict:
        return self.header() | {
            "mode": self.mode, "deterministic": self.deterministic,
            "operators": {name: self.rows[name] | extra for name, extra in self.operators.items()},
            "skipped": self.skipped, "joint": self.reference(), "constituents": self.constituent_rows(),
            "ratios_to_joint": ratio_rows(self.rows, list(self.operators)) if "joint" in self.rows else {},
            "figures": self.figures, "env_kwargs": self.env_kwargs, "wall_time_s": self.wall_time_s}

    def markdown(self) -> str:
        lines = [f"# Composition operators: {self.spec} on {self.where}", "",
                 f"{self.episodes} seeded episodes from seed {self.seed}, {self.mode}; alpha {self.alpha}, "
                 f"gamma {self.gamma}; every operator uses 0 environment samples.", "", *self.selection_markdown(),
                 comparison_table(self.rows), ""]
        ratios = self.to_json()["ratios_to_joint"]
        if ratios:
            lines += ["| operator | success / joint | return / joint | return − joint (± se) |", "|---|---|---|---|"]
            for name, r in ratios.items():
                cells = ["–" if r[key] is None else f"{r[key]:.2f}" for key in ("success", "return")]
                lines.append(f"| {name} | {cells[0]} | {cells[1]} | {r['return_minus_joint']:+.2f} "
                             f"± {r['return_minus_joint_se']:.2f} |")
            lines.append("")
        lines += [f"- {name}: skipped, {why}" for name, why in self.skipped.items()]
        lines += [f"![{k}]({Path(v).name})" for k, v in self.figures.items()]
        return "\n".join(lines) + "\n"

    def console(self) -> list[str]:
        lines = [f"\n{self.spec} on {self.where} ({self.episodes} episodes, seed {self.seed}, {self.mode}), every "
                 "operator with 0 environment samples:\n", comparison_table(self.rows)]
        lines += [f"{name}: skipped, {why}" for name, why in self.skipped.items()]
        if "joint" not in self.rows:
            lines.append(f"\nnote: {self.joint_note}")
        return lines + [f"\nreport: {self.out}/report.md  ({self.wall_time_s:.0f} s)"]


def ratio_rows(rows: dict[str, dict], operators: Sequence[str]) -> dict[str, dict]:
    """Each operator's success and return over the joint's (``None`` where the joint's is not positive), and its
    return minus the joint's with the standard error of that difference (independent episodes' spread)."""
    joint = rows["joint"]

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 4) if b > 0 else None

    def se(row: dict) -> float:
        return float(row["return_std"]) / np.sqrt(row["episodes"])

    return {name: {"success": ratio(rows[name]["success_rate"], joint["success_rate"]),
                   "return": ratio(rows[name]["return_mean"], joint["return_mean"]),
                   "return_minus_joint": round(rows[name]["return_mean"] - joint["return_mean"], 4),
                   "return_minus_joint_se": round(float(np.hypot(se(rows[name]), se(joint))), 4)} for name in operators}


def comparison_table(rows: dict[str, dict]) -> str:
    """The comparison as a Markdown table."""
    terms = list(next(iter(rows.values()))["term_returns"])
    head = ["policy", "success", "return", "soft return", *[f"R[{t}]" for t in terms], "collisions", "env samples",
            "build s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        soft = r.get("soft_return_mean")
        cells = [name, f"{r['success_rate']:.2f}", f"{r['return_mean']:.2f}", "–" if soft is None else f"{soft:.2f}",
                 *[f"{r['term_returns'][t]:.2f}" for t in terms], collision_text(r),
                 f"{r['env_steps_used']}", f"{r['build_wall_time_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mc_lines(mc: dict) -> list[str]:
    """The Monte Carlo bound check as report lines."""
    lines = [
        f"- {mc['pairs']} (s, a) pairs from the composed policy's episodes, {mc['rollouts_per_pair']} rollouts each, "
        f"T = {mc['rollout_steps']} steps (tail <= {mc['tail_bound']:.2g}), 95% CIs",
        f"- upper side `Q^pi <= Q_w` falsified on {mc['upper_falsified_fraction']:.1%} of checks "
        f"(composed {mc['upper_falsified_fraction_composed']:.1%}"
        + (f", joint {mc['upper_falsified_fraction_joint']:.1%}" if "upper_falsified_fraction_joint" in mc else "")
        + f"); mean slack Q_w - G_composed = {mc['upper_slack_mean_composed']:.3f}",
        f"- lower side `Q^pi_w >= Q_w - C` holds on {mc['lower_holds_fraction']:.1%}; "
        f"mean slack G_composed - (Q_w - C) = {mc['lower_slack_mean']:.3f}; mean C {mc['C_mean']:.3f}",
    ]
    if "suboptimality_mean" in mc:
        lo, hi = mc["suboptimality_ci"]
        lines.append(f"- suboptimality G_joint - G_composed = {mc['suboptimality_mean']:.3f} (95% CI {lo:.3f} to {hi:.3f}) "
                     f"against mean C {mc['C_mean']:.3f}")
    goals = ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in mc["goals"].items())
    lines.append(f"- goals: {goals}")
    if "exact_pi_w" in mc:
        e = mc["exact_pi_w"]
        lines.append(f"- the exact pi_w (Metropolis-Hastings, credited V_w - Q_w) on {e['pairs']} pairs: soft return "
                     f"{e['soft_return_mean']:.3f} against the composed sampler's "
                     f"{e['composed_sampler_on_the_same_pairs']:.3f} "
                     f"and Q_w {e['Q_w_on_the_same_pairs']:.3f}; upper side falsified {e['upper_falsified_fraction']:.0%}, "
                     f"lower side holds {e['lower_holds_fraction']:.0%}")
    for name, actor in mc.get("actors", {}).items():
        lines.append(f"- {name}: soft return {actor['soft_return_mean']:.3f} (Q_w - G {actor['slack_to_Q_w_mean']:.3f}); "
                     f"upper side falsified {actor['upper_falsified_fraction']:.0%}, lower side holds "
                     f"{actor['lower_holds_fraction']:.0%}")
    for control in mc.get("controls", []):
        lines.append(f"- control, {control['control']} ({control['check']}): {control['verdict']}")
    if "verdict" in mc:
        lines.append(f"- verdict: {mc['verdict']['note']}")
    if "random_entropy_estimate" in mc:
        r = mc["random_entropy_estimate"]
        lines.append(f"- the entropy estimator on the random actor: soft return {r['estimated_mean']:.3f} estimated against "
                     f"{r['exact_mean']:.3f} exact (SE {r['soft_return_se']:.3f}; within 3 SE: {r['within_3_se']})")
    if "policy_gap" in mc:
        lines += policy_gap_lines(mc["policy_gap"])
    return lines


def policy_gap_lines(side: dict) -> list[str]:
    """The lower side against the policy's own gap ``D`` (pooled over pairs) as report lines."""
    lines = [f"- lower side with the policy's own gap `Q^pi_w >= Q_w - D` (mean D {side['D_mean']:.3f}; "
             f"{side['method']}):"]
    for name, p in side["pooled"].items():
        lines.append(f"  - {name}: margin {p['margin_mean']:+.3f} +- {p['margin_se']:.3f} over {p['pairs']} pairs, "
                     + ("holds" if p["holds"] else "FAILS"))
    for control in side["controls"]:
        lines.append(f"  - control, {control['control']}: {control['verdict']}")
    lines.append(f"  - verdict: {side['note']}")
    return lines


def bound_lines(bound: dict) -> list[str]:
    if "note" in bound:
        return [f"- {bound['note']}"]
    lines = ["Monte Carlo soft returns:", *mc_lines(bound["mc"])] if "mc" in bound else []
    learned = bound["learned"]
    lines.append("Learned functions compared point by point (a diagnostic, not a test):")
    if learned.get("holds_fraction") is None:
        return lines + [f"- mean Q_w {learned['mean_Q_w']:.3f}, mean C {learned['mean_C']:.3f}",
                        f"- {learned.get('note', '')}"]
    return lines + [
        (f"- `Q_w - C <= Q_joint <= Q_w` holds on {learned['holds_fraction']:.1%} of {learned['pairs']} (s, a) pairs "
         "from the composed policy's rollouts"),
        (f"- upper side `Q_joint <= Q_w`: holds {learned['upper_holds_fraction']:.1%}; mean violation "
         f"{learned['upper_violation_mean']:.3f}; mean slack Q_w - Q_joint = {learned['upper_slack_mean']:.3f}"),
        (f"- lower side `Q_w - C <= Q_joint`: holds {learned['lower_holds_fraction']:.1%}; mean violation "
         f"{learned['lower_violation_mean']:.3f}; mean slack = {learned['lower_slack_mean']:.3f}"),
        f"- mean C {learned['mean_C']:.3f}; measured gap mean(Q_w - Q_joint) {learned['mean_gap']:.3f}",
    ]
