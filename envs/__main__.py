"""List the tasks, or save a rendered frame of one:  python -m envs [TASK --frame PATH]"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import envs
from envs.cli import add_task_arguments, load_task_modules, run_command


def save_frame(task: str, path: str, seed: int = 0, steps: int = 5, width: int = 640, height: int = 480) -> str:
    """Reset ``task`` with ``seed``, take ``steps`` zero-ish actions, and write the frame as a PNG."""
    import cv2

    env = envs.make(task, render_mode="rgb_array", width=width, height=height)
    env.reset(seed=seed)
    for _ in range(steps):
        env.step(np.zeros(env.action_space.shape, np.float32))
    frame = env.render()
    env.close()
    assert isinstance(frame, np.ndarray)  # render_mode="rgb_array"
    if not cv2.imwrite(path, frame[:, :, ::-1]):
        raise OSError(f"could not write {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m envs", description=__doc__)
    parser.add_argument("task", nargs="?", help="task to render")
    parser.add_argument("--frame", metavar="PNG", help="write a rendered frame here")
    parser.add_argument("--seed", type=int, default=0, help="reset seed (default: 0)")
    add_task_arguments(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        load_task_modules(args.tasks)
        if args.task is None:
            for name, task in envs.TASKS.items():
                terms = " + ".join(f"{w:g}*{k}" for k, w in task.weights.items())
                print(f"{name:16s} family {task.family.name:10s} reward {terms}   ({task.source})")
            return 0
        envs.get_task(args.task)
        print(save_frame(args.task, args.frame or f"{args.task}.png", args.seed))
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
