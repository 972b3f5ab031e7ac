"""Which negative controls *should* fail the lower side against ``Q_w - D``, seed by seed of a finished study.

    python -m bench.control_validity STUDY_OUT [--json PATH]

A control (the random actor, each constituent acting alone) is a negative control only where it is worse than what
the bound is about: a constituent that collects as much soft return as the jointly trained skill on the same pairs
may pass the lower side and be right to. ``compose.mc_check.policy_gap_side`` now says so in every report
(``should_fail``: the control's per-pair soft return below the joint skill's by more than 2 SE of the paired
difference; ``D`` shrunk to 0 always should). This recomputes that verdict, with nothing rerun, from the per-pair
records a study keeps (``STUDY_OUT/runs/<spec>-seed<N>-stochastic/report.json``: ``bound.mc.per_pair`` and
``exact_pi_w``), so that studies run before the verdict existed can be read the same way. Each report is read bounded
(a study folder is checked as received: regular files inside it only).

Per seed: every control's raw verdict (failed or passed), its paired difference to the joint skill, whether it should
fail; then the seeds on which every control failed, and those on which every control that should fail did.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from pathlib import Path

from envs.files import UnsafeFileError, read_bounded

from .cli import run_measurement

MAX_REPORT_BYTES = 64 << 20  # one run's report.json (the per-pair records are a few hundred KB)
MAX_RUNS = 1024  # seeds of one study read


def seed_reports(out: Path) -> list[tuple[str, int, dict]]:
    """(spec, seed, the stochastic report's ``bound.mc``) for every seed of the study at ``out`` that has one."""
    runs = out / "runs"
    if not runs.is_dir():
        raise ValueError(f"{out}: no runs/ folder; give the --out folder of a finished compose.study")
    found = []
    listed = list(itertools.islice(runs.iterdir(), 4 * MAX_RUNS + 1))  # a seed's stochastic and deterministic runs
    if len(listed) > 4 * MAX_RUNS:
        raise ValueError(f"{runs}: more than {4 * MAX_RUNS} entries; not a study's runs folder")
    for path in sorted(listed):
        match = re.fullmatch(r"(?P<spec>.+)-seed(?P<seed>\d+)-stochastic", path.name)
        if not match or not path.is_dir():
            continue
        try:
            report = json.loads(read_bounded(path / "report.json", MAX_REPORT_BYTES, inside=runs, what="report"))
        except FileNotFoundError:
            continue
        except (UnsafeFileError, ValueError, OSError) as err:
            raise ValueError(f"{path / 'report.json'}: not readable as a run report ({err})") from None
        mc = report.get("bound", {}).get("mc") if isinstance(report, dict) else None
        if isinstance(mc, dict) and isinstance(mc.get("per_pair"), list) and mc["per_pair"]:
            found.append((match["spec"], int(match["seed"]), mc))
    return sorted(found, key=lambda item: (item[0], item[1]))


def short(name: str) -> str:
    """A control's name without its library path: ``/x/lib/puck-y/v1 alone acting ...`` -> ``puck-y alone``."""
    name = name.removesuffix(" acting (its own entropy)")
    match = re.fullmatch(r".*/([^/]+)/v\d+ alone", name)
    return f"{match[1]} alone" if match else name


def measure(out: Path) -> dict:
    from compose.mc_check import policy_gap_side

    seeds = []
    for spec, seed, mc in seed_reports(out):
        if not all("D" in row and "joint" in row for row in mc["per_pair"]):
            continue  # a run without D or without a joint skill
        side = policy_gap_side(mc["per_pair"], mc.get("exact_pi_w"))
        controls = [{"control": short(c["control"]), "failed": c["failed"], "should_fail": c["should_fail"],
                     "versus_joint": c.get("versus_joint")} for c in side["controls"]]
        seeds.append({"spec": spec, "seed": seed, "pairs": len(mc["per_pair"]), "controls": controls,
                      "every_control_failed": not side["controls_passed"],
                      "every_control_that_should_failed": side["tells_policies_apart"]})
    if not seeds:
        raise ValueError(f"{out}: no seed's stochastic report holds per-pair records with D and a joint skill")
    return {"study": str(out), "rule": "a control should fail when its per-pair soft return is below the joint skill's "
            "by more than 2 SE of the paired difference (D shrunk to 0: always)", "seeds": seeds,
            "seeds_every_control_failed": sum(s["every_control_failed"] for s in seeds),
            "seeds_every_control_that_should_failed": sum(s["every_control_that_should_failed"] for s in seeds),
            "seeds_read": len(seeds)}


def table(result: dict) -> str:
    """The result as lines: one per seed and control that passed, then the counts."""
    lines = []
    for s in result["seeds"]:
        passed = [c for c in s["controls"] if not c["failed"]]
        cells = "; ".join(f"{c['control']} passed ({'SHOULD have failed' if c['should_fail'] else 'not negative here'}"
                          + (f", vs joint {c['versus_joint']['mean']:+.2f} +- {c['versus_joint']['se']:.2f}"
                             if c["versus_joint"] else "") + ")" for c in passed) or "every control failed"
        lines.append(f"{s['spec']} seed {s['seed']} ({s['pairs']} pairs): {cells}")
    lines.append(f"every control failed on {result['seeds_every_control_failed']} of {result['seeds_read']} seeds; every "
                 f"control that should fail failed on {result['seeds_every_control_that_should_failed']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.control_validity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, help="the --out folder of a finished compose.study")
    parser.add_argument("--json", help="write the result here too")
    args = parser.parse_args(argv)

    def run() -> dict:
        result = measure(args.study)
        print(table(result), file=sys.stderr)
        return result

    return run_measurement(run, args.json)


if __name__ == "__main__":
    sys.exit(main())
