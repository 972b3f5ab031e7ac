"""List the skill library:  python -m skills [--library DIR] [--markdown]

``--markdown`` prints every skill as a table row read off its manifest: steps, wall time, the final evaluation of the
stochastic and the deterministic policy, and the convergence verdicts recomputed from the stored convergence record
(``skills.evaluation.diagnostics.convergence_goal``; a residual verdict that 2 standard errors of a mean could flip is
marked "inside the noise"). Nothing is rerun.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from envs.cli import run_command

from .library import Manifest, SkillEntry, default_library, list_skills


def stack_cell(info: Manifest) -> str:
    """The seeds a manifest says were stacked with its own (``Manifest.trained_together``): 'alone', '2,1', or '?'
    for manifests written before it was recorded."""
    together = info.trained_together
    if together is None:
        return "?"
    return "alone" if len(together) <= 1 else ",".join(map(str, together))


def number(value, spec: str, width: int = 0) -> str:
    """``value`` formatted by ``spec``, or a dash where a manifest has none (a saved composition has no evaluation)."""
    text = format(value, spec) if isinstance(value, int | float) and not isinstance(value, bool) else "–"
    return text.rjust(width)


def plain_lines(entries: list[SkillEntry]) -> list[str]:
    """One line per skill: status, steps, alpha, the final stochastic evaluation, its seed and the seeds it was
    stacked with (a seed reproduces exactly only in the same stack, docs/skills.md)."""
    lines = [f"  {'skill':28s} {'status':10s} {'steps':>8s} {'alpha':>6s} {'success*':>8s} {'return':>9s} {'seed':>5s}"
             "  stacked with"]
    for e in entries:
        m = e.info.raw.get("metrics", {})
        m = m.get("stochastic", m)
        seed = "?" if e.info.seed is None else str(e.info.seed)
        lines.append(f"  {e.name + '@v' + str(e.version):28s} {e.info.status:10s} {e.info.env_steps:8d} {e.info.alpha:6.3g} "
                     f"{number(m.get('success_rate'), '.2f', 8)} {number(m.get('return_mean'), '.2f', 9)} {seed:>5s}"
                     f"  {stack_cell(e.info)}")
    legend = ["  * final evaluation of the stochastic (max-ent) policy"]
    if any(stack_cell(e.info) == "?" for e in entries):
        legend.append("  ? in 'stacked with': not recorded (the manifest predates the record of stacks)")
    return lines + legend


def convergence_cells(raw: dict) -> tuple[str, str]:
    """(soft-return gap, Bellman residual) verdicts of a manifest's convergence record, recomputed from its figures."""
    from .evaluation.diagnostics import convergence_goal

    report = raw.get("convergence")
    if not isinstance(report, dict) or "stored" not in report:
        return "–", "–"
    goal = convergence_goal(report, float(raw["alpha"]))
    residuals = "/".join(f"{report[k]['bellman_residual_mean']:+.4f}" for k in ("on_policy", "stored"))
    residual = ("✔" if goal["bellman_residual"] else "✘") + f" ({residuals}; goal {0.1 * float(raw['alpha']):.4g}" + (
        ", inside the noise)" if goal["bellman_residual_inside_noise"] else ")")
    return "✔" if goal["soft_return_gap"] else "✘", residual


def markdown_lines(entries: list[SkillEntry]) -> list[str]:
    """Every skill as a markdown table row (see the module docstring)."""
    lines = ["| skill | steps | wall time | alpha | success, stochastic | collisions, stochastic | success, deterministic "
             "| soft-return gap | Bellman residual (on-policy/stored) |", "|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        raw = e.info.raw
        metrics = raw.get("metrics", {})
        sto, det = metrics.get("stochastic", {}), metrics.get("deterministic", {})
        gap, residual = convergence_cells(raw)
        wall = raw.get("wall_time_s")
        cells = [f"`{e.name}` v{e.version}", f"{e.info.env_steps:,}", number(wall, ".0f") + (" s" if wall is not None else ""),
                 f"{e.info.alpha:g}", number(sto.get("success_rate"), ".2f"),
                 number(sto.get("collision_rate") if sto.get("collisions_checked", True) else None, ".2f"),
                 number(det.get("success_rate"), ".2f"), gap, residual]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skills", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", help="library directory (default: trained/ or $COMPOSABLE_SKILLS_LIBRARY)")
    parser.add_argument("--markdown", action="store_true", help="a markdown table with evaluation and convergence")
    args = parser.parse_args(argv)
    return run_command(lambda: show(args))


def show(args: argparse.Namespace) -> int:
    """The listing itself (``main``'s body)."""
    root = args.library or default_library()
    if not Path(root).is_dir():
        print(f"error: no library at {root}: no such folder (train a skill into it with: python -m skills.train reach "
              f"--out {root})", file=sys.stderr)
        return 2
    problems: list[str] = []
    entries = list_skills(root, problems)
    print(f"library: {root}")
    if not entries:
        print("  (empty) train one with: python -m skills.train reach")
    else:
        print("\n".join(markdown_lines(entries) if args.markdown else plain_lines(entries)))
    for problem in problems:
        print(f"  unreadable: {problem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
