"""Torch's global generator, seeded for a block and given back as it was.

Network initialisations (and a few draws that take no ``generator``) read torch's global generator. A routine
that seeds it for its own reproducibility must not move the caller's stream: otherwise what a caller draws next
depends on whether the routine ran (a composition fitted, or found in its cache).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Inside the block torch's global CPU generator is seeded with ``seed`` (``None``: left as it is, so the block
    draws the caller's next numbers); after it, the generator's state is what it was before the block.

    CPU only: ``torch.manual_seed`` also reseeds the CUDA generators, and they are not given back (as before this
    helper existed), so on a GPU what a caller draws next on the device still depends on the block having run."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(int(seed))
        yield
