"""Add skills trained elsewhere to a library:  python -m skills.add SOURCE [SOURCE ...] [--library DIR]

A SOURCE is a skill version folder (.../reach/v3), a skill folder (.../reach: all its versions) or a whole library.
Every complete version is checked as a load checks it (regular files inside the source only, sizes bounded before
reading, checksums, network sizes, stored arrays) and copied into the destination as the next free version of its
name, atomically; its manifest records where it came from (``imported_from``). A version whose weights the
destination already holds under that name is not copied twice. Versions still training or diverged, and saved
compositions, are skipped with the reason. Use it to gather skills trained on several machines or by several studies
into one library, e.g. before ``python -m compose.study ... --library DIR``, which reuses every complete skill whose
seed, budget and settings match (skills.library.transfer).
"""

from __future__ import annotations

import argparse

from envs.cli import run_command

from .library.catalog import default_library
from .library.transfer import Added, add_skills


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m skills.add", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="a skill version, a skill or a library folder")
    parser.add_argument("--library", help="the library to add to (default: trained/ or $COMPOSABLE_SKILLS_LIBRARY)")
    return parser


def report_line(added: Added) -> str:
    """One line per source version: what became of it."""
    if added.outcome == "added":
        return f"  added    {added.name} from {added.source} as {added.path}"
    if added.outcome == "present":
        return f"  present  {added.name} from {added.source}: {added.reason} ({added.path})"
    return f"  skipped  {added.name} from {added.source}: {added.reason}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        results, problems = add_skills(args.sources, args.library)
        print(f"library: {args.library or default_library()}")
        print("\n".join(report_line(r) for r in results) if results else "  (no skill versions found in the sources)")
        for problem in problems:
            print(f"  {problem}")
        return 1 if problems and not any(r.outcome == "added" for r in results) else 0

    return run_command(body)


if __name__ == "__main__":
    raise SystemExit(main())
