"""The training env: one env of a task behind gymnasium's vector API, stepping in a child process while the
update runs (or in process), resetting itself in the step that ends an episode."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

import envs


class InProcessVectorEnv(SyncVectorEnv):
    """``SyncVectorEnv`` with ``AsyncVectorEnv``'s split step: the env steps inside ``step_wait``."""

    def step_async(self, actions: np.ndarray) -> None:
        self._pending_actions = actions

    def step_wait(self, **kwargs):
        return self.step(self._pending_actions)


@contextmanager
def children_ignore_ctrl_c() -> Iterator[None]:
    """Processes started inside ignore SIGINT (inherited), so Ctrl-C stops only the trainer,
    which then closes them; without it the env worker dies first with its own traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def training_env(task: str, in_child_process: bool, **env_kwargs) -> AsyncVectorEnv | InProcessVectorEnv:
    """One env of ``task`` behind gymnasium's vector API, resetting itself in the step that ends
    an episode (the final observation is ``info["final_obs"]``).

    In a child process (``AsyncVectorEnv``) the env steps between ``step_async`` and
    ``step_wait`` while this process runs the update, with no GIL shared between them. The child
    is forked on Linux (no re-import of the caller's script), spawned elsewhere. In process
    it steps inside ``step_wait``.
    """
    make_env = [partial(envs.make, task, **env_kwargs)]
    if in_child_process:
        context = "fork" if sys.platform.startswith("linux") else "spawn"
        with children_ignore_ctrl_c():
            return AsyncVectorEnv(make_env, context=context, autoreset_mode=AutoresetMode.SAME_STEP)
    return InProcessVectorEnv(make_env, autoreset_mode=AutoresetMode.SAME_STEP)
