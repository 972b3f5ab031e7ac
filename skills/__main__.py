"""List the skill library:  python -m skills [--library DIR]"""

from __future__ import annotations

import argparse

from .library import default_library, list_skills


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m skills", description=__doc__)
    parser.add_argument("--library", help="library directory (default: trained/ or $COMPOSABLE_SKILLS_LIBRARY)")
    args = parser.parse_args(argv)
    root = args.library or default_library()
    entries = list_skills(root)
    print(f"library: {root}")
    if not entries:
        print("  (empty) train one with: python -m skills.train reach")
        return
    print(f"  {'skill':24s} {'status':10s} {'steps':>8s} {'alpha':>6s} {'success*':>8s} {'return':>9s}")
    for e in entries:
        m = e.manifest.get("metrics", {})
        m = m.get("deterministic", m)
        print(f"  {e.name + '@v' + str(e.version):24s} {e.manifest.get('status', '?'):10s} "
              f"{e.manifest.get('env_steps', 0):8d} {e.manifest.get('alpha', float('nan')):6.3g} "
              f"{m.get('success_rate', float('nan')):8.2f} {m.get('return_mean', float('nan')):9.2f}")
    print("  * final evaluation of the deterministic policy (best of 32 sampled actions)")


if __name__ == "__main__":
    main()
