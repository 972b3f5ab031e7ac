"""Progress bars that stay readable in a terminal and in a log file."""

from __future__ import annotations

import sys


def progress_bar(total: int, enabled: bool = True, desc: str | None = None, unit: str = "step"):
    """A tqdm bar: live in a terminal, one line every 30 s when stderr is a file."""
    from tqdm.auto import tqdm

    interval = 0.1 if sys.stderr.isatty() else 30.0
    return tqdm(total=total, disable=not enabled, desc=desc, unit=unit, dynamic_ncols=True, smoothing=0.05,
                mininterval=interval)
