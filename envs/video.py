"""MP4 videos of episodes with a text overlay (OpenCV, works headless)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .files import atomic_path

if TYPE_CHECKING:
    import cv2


def overlay_lines(info: dict, step: int) -> list[str]:
    """Text for one frame: step, reward terms, and obstacle distance where the task has one."""
    lines = [f"step {step}"]
    lines += [f"{k}: {v:+.3f}" for k, v in info.get("reward_terms", {}).items()]
    if "distance_to_target" in info:
        lines.append(f"target dist: {info['distance_to_target']:.3f} m")
    if "distance_to_obstacle" in info:
        lines.append(f"obstacle dist: {info['distance_to_obstacle']:.3f} m")
    if info.get("collision"):
        lines.append("COLLISION")
    return lines


def draw_text(frame: np.ndarray, lines: list[str]) -> np.ndarray:
    """Frame [H, W, 3] uint8 RGB with ``lines`` drawn top-left on a dark band."""
    import cv2

    out = np.ascontiguousarray(frame).copy()
    scale = max(out.shape[0] / 480.0, 0.4) * 0.5
    height = int(22 * scale / 0.5)
    band = out[: height * len(lines) + 6, : int(out.shape[1] * 0.55)]
    band[:] = (band * 0.45).astype(np.uint8)
    for i, line in enumerate(lines):
        colour = (255, 80, 80) if line == "COLLISION" else (255, 255, 255)
        cv2.putText(out, line, (6, height * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
    return out


class VideoWriter:
    """Append RGB frames to an mp4 (codec ``mp4v``), written atomically: the frames go to a hidden file beside
    ``path`` (``envs.files.atomic_path``) that ``close()`` renames over it. Used as a context manager, an error inside
    the block discards the partial video, so ``path`` is a whole video or is not there (or is the previous one)."""

    def __init__(self, path: str | Path, fps: float):
        self.path, self.fps = Path(path), float(fps)
        self._writer: cv2.VideoWriter | None = None
        self._target: AbstractContextManager[Path] | None = None  # atomic_path's, entered at the first frame

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self.close()
        else:
            self._finish(kind, error, trace)

    def add(self, frame: np.ndarray) -> None:
        import cv2

        if self._writer is None:
            self._target = atomic_path(self.path, suffix=self.path.suffix or ".mp4")
            tmp = self._target.__enter__()
            h, w = frame.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*"mp4v")  # type: ignore[attr-defined]  # missing from OpenCV's stubs
            self._writer = cv2.VideoWriter(str(tmp), fourcc, self.fps, (w, h))
            if not self._writer.isOpened():
                err = RuntimeError(f"OpenCV cannot write {self.path}")
                self._finish(RuntimeError, err, None)
                raise err
        self._writer.write(np.ascontiguousarray(frame[:, :, ::-1]))

    def _finish(self, kind, error, trace) -> None:
        """Release OpenCV's writer, then publish the file (no error) or discard it (``atomic_path``'s exit)."""
        writer, self._writer = self._writer, None
        target, self._target = self._target, None
        try:
            if writer is not None:
                writer.release()
        except BaseException as failed:  # the file cannot be trusted: discard it, then raise
            if target is not None:
                target.__exit__(type(failed), failed, failed.__traceback__)
            raise
        if target is not None:
            target.__exit__(kind, error, trace)

    def close(self) -> Path:
        """Finish the video and put it at ``path``."""
        self._finish(None, None, None)
        return self.path
