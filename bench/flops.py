"""Matmul FLOPs (and dispatched ops) of arbitrary torch code, counted at dispatch (works under
``torch.autograd.grad``).

``torch.utils.flop_counter.FlopCounterMode`` tracks modules with hooks that break
``autograd.grad`` on leaf inputs (which the SVGD score needs), so this counts at the dispatcher
only, with torch's own per-op FLOP formulas (mm, addmm, bmm, baddbmm, convolutions, ...).
"""

from __future__ import annotations

from collections.abc import Callable

from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry


class DispatchFlopCounter(TorchDispatchMode):
    """Counts every dispatched aten op (views included) and adds up the FLOPs of those that
    torch has a FLOP formula for."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops += 1
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += int(formula(*args, **kwargs, out_val=out))
        return out


def count_dispatch(fn: Callable[[], object], calls: int = 1) -> DispatchFlopCounter:
    """The counter after calling ``fn`` ``calls`` times: ``.flops`` and ``.ops`` in total."""
    with DispatchFlopCounter() as counter:
        for _ in range(calls):
            fn()
    return counter


def count_flops(fn: Callable[[], object], calls: int = 1) -> int:
    """Total FLOPs of calling ``fn`` ``calls`` times."""
    return count_dispatch(fn, calls).flops
