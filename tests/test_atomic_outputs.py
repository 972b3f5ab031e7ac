"""What the commands write for people to look at (figures, videos) is written whole or not at all: a crash part-way
leaves the earlier file (or none) and no temporary file beside it (``envs.files.atomic_path``)."""

from pathlib import Path

import numpy as np
import pytest

from envs.files import atomic_write_bytes


def test_atomic_bytes_replace_the_old_file_and_leave_nothing_beside_it(tmp_path):
    target = tmp_path / "deep" / "record.json"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and [p.name for p in target.parent.iterdir()] == ["record.json"]


def test_a_figure_is_written_whole_or_the_old_one_stays(tmp_path):
    """``save_figure`` writes a PNG and closes the figure; when matplotlib fails part-way (here: a format it does not
    know, taken from the suffix) the file already at the path is untouched and no temporary file is left."""
    from skills.evaluation.plots import _pyplot, save_figure

    plt = _pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = save_figure(fig, tmp_path / "figs" / "curve.png", dpi=50)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not plt.fignum_exists(fig.number)
    odd = tmp_path / "figs" / "curve.nosuch"
    odd.write_bytes(b"earlier")
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="nosuch"):
        save_figure(fig, odd)
    assert odd.read_bytes() == b"earlier" and not plt.fignum_exists(fig.number)
    assert sorted(p.name for p in odd.parent.iterdir()) == ["curve.nosuch", "curve.png"]


def frames_of(path: Path) -> tuple[int, tuple[int, int]]:
    """Frames OpenCV decodes from an mp4, and their (height, width)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    count, shape = 0, (0, 0)
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count, shape = count + 1, frame.shape[:2]
    capture.release()
    return count, shape


class FailsAtStep:
    """A uniform random policy that raises at its ``n``-th action (a crash part-way through filming)."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def act(self, obs, deterministic=False, generators=None):
        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError("policy failed mid-episode")
        return np.random.default_rng(self.calls).uniform(-1, 1, (len(obs), 3)).astype(np.float32)


@pytest.mark.render
def test_a_video_is_written_whole_or_not_at_all(tmp_path):
    """``--render``'s mp4 (``skills.evaluate``, the random baseline on ``reach``) decodes to one frame per step; a
    policy that fails part-way leaves the earlier video where it was, whole, and no temporary file."""
    import envs
    from skills.evaluate import evaluate_random, film_episode

    video = tmp_path / "out" / "reach.mp4"
    metrics = evaluate_random("reach", episodes=1, seed=3, render=video)
    count, shape = frames_of(video)
    assert Path(metrics["video"]) == video and count == metrics["episode_length"] and min(shape) > 0
    before = video.read_bytes()
    with pytest.raises(RuntimeError, match="mid-episode"):
        film_episode(FailsAtStep(5), envs.make("reach", render_mode="rgb_array"), 4, False, video)
    assert video.read_bytes() == before and [p.name for p in video.parent.iterdir()] == ["reach.mp4"]


def test_a_figure_path_without_a_suffix_is_a_png(tmp_path):
    """matplotlib would take the format from the temporary name; ``save_figure`` names it from the target (PNG
    without a suffix, as matplotlib's own default)."""
    from skills.evaluation.plots import _pyplot, save_figure

    fig, _ = _pyplot().subplots()
    assert save_figure(fig, tmp_path / "curve").read_bytes()[:4] == b"\x89PNG"


@pytest.fixture
def dead_writer() -> tuple[int, str]:
    """The pid and host of a writer that has ended: a child process that printed its pid and exited."""
    import socket
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          timeout=60)
    return int(done.stdout), socket.gethostname()


def test_library_repair_removes_a_killed_writers_half_written_file_only(tmp_path, dead_writer):
    """A hidden log's figure half-written by a process that was killed (``envs.files.PARTIAL``) is removed by the
    library's repair; one whose writer is alive, and files of other names, are kept."""
    import os

    from skills.library import store

    dead, host = dead_writer
    folder = tmp_path / "reach"
    folder.mkdir()
    killed = folder / f"..v3.curve.png.tmp.{dead}@{host}"
    alive = folder / f"..v4.curve.png.tmp.{os.getpid()}@{host}"
    other = folder / "notes.tmp.txt"
    for path in (killed, alive, other):
        path.write_bytes(b"half")
    assert store.recover(folder) == [f"removed {killed.name}"]
    assert sorted(p.name for p in folder.iterdir()) == sorted([alive.name, other.name])


def test_library_repair_removes_a_killed_writers_half_written_file_inside_a_version(tmp_path, dead_writer):
    """A manifest update cut short inside a version folder (``skills.library.files.update_manifest`` writes a
    ``PARTIAL`` temp file beside ``manifest.json``) is removed by the repair when its writer is dead; a live writer's
    is kept, and so are the version's own files."""
    import os

    from skills.library import store

    dead, host = dead_writer
    version = tmp_path / "reach" / "v2"
    version.mkdir(parents=True)
    (version / "manifest.json").write_text("{}")
    killed = version / f".manifest.json.tmp.{dead}@{host}"
    alive = version / f".learning_curve.png.tmp.{os.getpid()}@{host}"
    for path in (killed, alive):
        path.write_bytes(b"half")
    assert store.recover(tmp_path / "reach") == [f"removed v2/{killed.name}"]
    assert sorted(p.name for p in version.iterdir()) == sorted(["manifest.json", alive.name])


@pytest.mark.render
def test_a_video_opencv_cannot_write_is_refused_and_the_old_file_stays(tmp_path):
    from envs.video import VideoWriter

    target = tmp_path / "clip.nosuchformat"
    target.write_bytes(b"earlier")
    with pytest.raises(RuntimeError, match="OpenCV cannot write"), VideoWriter(target, 25) as video:
        video.add(np.zeros((32, 32, 3), np.uint8))
    assert target.read_bytes() == b"earlier" and [p.name for p in tmp_path.iterdir()] == [target.name]
