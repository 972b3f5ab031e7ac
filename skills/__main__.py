"""List the skill library:  python -m skills [--library DIR]"""

from __future__ import annotations

import argparse

from .library import default_library, list_skills


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m skills", description=__doc__)
    parser.add_argument("--library", help="library directory (default: trained/ or $COMPOSABLE_SKILLS_LIBRARY)")
    args = parser.parse_args(argv)
    root = args.library or default_library()
    problems: list[str] = []
    entries = list_skills(root, problems)
    print(f"library: {root}")
    if not entries:
        print("  (empty) train one with: python -m skills.train reach")
    else:
        print(f"  {'skill':28s} {'status':10s} {'steps':>8s} {'alpha':>6s} {'success*':>8s} {'return':>9s}")
    for e in entries:
        m = e.info.raw.get("metrics", {})
        m = m.get("stochastic", m)
        print(f"  {e.name + '@v' + str(e.version):28s} {e.info.status:10s} {e.info.env_steps:8d} {e.info.alpha:6.3g} "
              f"{m.get('success_rate', float('nan')):8.2f} {m.get('return_mean', float('nan')):9.2f}")
    if entries:
        print("  * final evaluation of the stochastic (max-ent) policy")
    for problem in problems:
        print(f"  unreadable: {problem}")

if __name__ == "__main__":
    main()
