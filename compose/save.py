"""Save a composition to the skill library:  python -m compose.save SPEC [--name NAME] [--out LIB]

Writes ``<library>/<name>/v<N>`` (default name ``SPEC.composed``; never overwrites): the constituents'
frozen Q-networks, the weights and the composed sampler, with the constituents' versions and
checksums in the manifest. It then loads like any skill, with no rebuild:

    python -m skills.evaluate reach+avoid.composed --render      # evaluate and film pi_w alone
    skills.load("reach+avoid.composed"), compose.load("reach+avoid.composed")

A constituent retrained since makes the entry stale; both loaders then refuse it with the reason.

``--operator dc`` saves the divergence-corrected composition instead (default name ``SPEC.dc.composed``): its energy
``Q_w - C_w`` is stored as ``Q_w + R`` with ``R = -C_w``, so it too loads as a skill and adapts from itself
(``python -m compose.adapt SPEC.dc.composed``). The other operators' energies are not of that form (a max, a
log-sum-exp, a priority); they are rebuilt from the library cache instead.
"""

from __future__ import annotations

import argparse
import sys

from envs.cli import add_task_arguments, load_task_modules, run_command
from skills.cli import add_weights_argument

from .library import savable_operators
from .run.cli import add_operator_setting_argument
from .skill import load


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m compose.save", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="skills to compose, joined by '+', e.g. reach+avoid (reach@v1 pins a version; "
                        "a name with a '+' in parentheses, e.g. '(reach+avoid)+stay_low')")
    add_weights_argument(parser)
    parser.add_argument("--operator", choices=savable_operators(), default="average",
                        help="how the skills combine (default: average); dc: Q_w - C_w (its correction fitted offline, or "
                             "taken from the library cache)")
    add_operator_setting_argument(parser, "the same settings reuse the library cache's fit")
    parser.add_argument("--name", help="library name of the entry (default: SPEC.composed; with --operator dc, "
                        "SPEC.dc.composed)")
    parser.add_argument("--library", help="library to load the skills from (default: trained/ or "
                        "$COMPOSABLE_SKILLS_LIBRARY)")
    parser.add_argument("--out", help="library to write into; it must hold the constituents, since a saved composition "
                        "reopens them from its own library (default: the skills' library)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar if the sampler must be built")
    add_task_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        load_task_modules(args.tasks)
        composition = load(args.spec, weights=args.weights, library=args.library, operator=args.operator,
                           **dict(args.operator_setting))
        path = composition.save(name=args.name, library=args.out or args.library, progress=not args.no_progress)
        made_from = ", ".join(f"{p.name} v{p.info.version}" for p in composition.parts)
        print(f"saved {path}  (composed from {made_from}; load it with skills.load or compose.load by that name)")
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
