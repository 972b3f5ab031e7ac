"""A run's pictures: the composed episode as a video (two cameras on the arm family), the bound along one episode,
Q over two action dimensions, the comparison bars, and the operators' trajectories in the family's top view."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import envs
import skills
from envs._gl import headless
from envs.rendering import MujocoRendering
from envs.video import VideoWriter, draw_text, overlay_lines
from skills.evaluation.lockstep import stream
from skills.policy import SoftPolicy

from ..bound import gap_on_states
from ..build import Built
from ..composition import Composition
from ..plots import plot_episode_bound, plot_q_slices, q_grid
from .evaluation import Pairs

VIDEO_SEARCH = 20  # episodes searched for one where the obstacle blocks the straight path


def episode_views(target: np.ndarray, lookat: np.ndarray) -> dict[str, dict]:
    """Two cameras that keep target, obstacle and end effector apart: a side view looking across the
    start-to-target line (so an obstacle on that line is not in front of the target), and the other side
    from above (a top view straight down is hidden by the arm itself)."""
    heading = float(np.degrees(np.arctan2(target[1], target[0])))
    centre = np.asarray(lookat, np.float64) + np.asarray(target, np.float64) / 2
    return {"side": {"lookat": centre, "distance": 0.9, "azimuth": heading + 90.0, "elevation": -15.0},
            "other side, from above": {"lookat": centre, "distance": 0.9, "azimuth": heading - 90.0,
                                       "elevation": -50.0}}


def video_episode(env, seed: int) -> int:
    """The first of ``VIDEO_SEARCH`` seeds from ``seed`` whose obstacle blocks the straight path (where the
    family says so in its reset info), else ``seed``."""
    for candidate in range(seed, seed + VIDEO_SEARCH):
        _, info = env.reset(seed=candidate)
        if info.get("obstacle_blocks_path", True):
            return candidate
    return seed


def render_episode(composition: Composition, policy: SoftPolicy, deterministic: bool, path: Path, seed: int,
                   env_kwargs: dict) -> tuple[Path, int]:
    """An mp4 of one composed episode (preferring one where the obstacle blocks the straight path), acting from that
    episode's own stream as the evaluation did; on the arm family a side and a top view side by side with the end
    effector's path drawn, distances in the overlay. The file is a whole video or is not written."""
    env = envs.make_task_env(composition.task, render_mode="rgb_array", **env_kwargs)
    try:
        chosen = video_episode(env, seed)
        with VideoWriter(path, env.metadata.get("render_fps", 25)) as video:
            actions = film_composed(env, video, chosen, policy, deterministic, composition.name)
    finally:
        env.close()
    replay_live(composition, actions, chosen, env_kwargs)
    return video.path, chosen


def film_composed(env, video: VideoWriter, seed: int, policy: SoftPolicy, deterministic: bool, name: str) -> list[np.ndarray]:
    """Run the episode reset with ``seed`` from its own stream, a frame per step into ``video``; its actions."""
    generator = stream(seed)
    obs, info = env.reset(seed=seed)
    arm = getattr(env.unwrapped, "arm", None)
    views = episode_views(info["target"], arm.workspace_origin) if arm is not None and "target" in info else {}
    trail = [arm.ee_position()] if arm is not None else []

    def frame(lines: list[str]) -> np.ndarray:
        if not views:
            image = env.render()
            assert isinstance(image, np.ndarray)  # render_mode="rgb_array"
            return draw_text(image, lines)
        scene = env.unwrapped
        assert isinstance(scene, MujocoRendering)  # an arm task's env
        images = [scene.render_view(camera, np.array(trail)) for camera in views.values()]
        return draw_text(np.concatenate(images, axis=1), lines)

    actions: list[np.ndarray] = []
    video.add(frame([f"{name} (composed, 0 env samples)", "step 0"]
                    + (["left: side view; right: other side, from above"] if views else [])))
    while True:
        actions.append(np.asarray(policy.act(np.asarray(obs, np.float32)[None], deterministic, [generator]))[0])
        obs, _, terminated, truncated, info = env.step(actions[-1])
        if arm is not None:
            trail.append(arm.ee_position())
        video.add(frame(overlay_lines(info, len(actions))))
        if terminated or truncated:
            return actions


def replay_live(composition: Composition, actions: list[np.ndarray], seed: int, env_kwargs: dict) -> None:
    """Where a display exists, a live window replaying the same seeded episode (an extra; the video is the product)."""
    if headless():
        return
    try:
        live = envs.make_task_env(composition.task, render_mode="human", **env_kwargs)
        live.reset(seed=seed)
        for action in actions:
            live.step(action)
        live.close()
    except Exception as err:  # noqa: BLE001 - a window is an extra
        print(f"(no live window: {err})")


def bound_episode_figure(data: dict, path: Path, title: str) -> None:
    """``compose.run.checks.episode_bound``'s data as a figure."""
    plot_episode_bound(data["q_w"], data["c"], data["q_joint"], path, title, data["mc_rows"])


def q_slices_figure(composition: Composition, built: Built, joint: skills.Skill | None, pairs: Pairs, seed: int,
                    path: Path) -> None:
    """Q over two action dimensions at the visited state with the largest gap."""
    obs = np.stack([p[0] for p in pairs[:2000]])
    gaps = gap_on_states(composition.q_w, obs, 256, seed)
    state = obs[int(np.argmax(gaps))]
    panels = {f"Q_{label}": q_grid(p.agent.q, state, composition.act_dim)
              for label, p in zip(composition.labels, composition.parts, strict=False)}
    panels["Q_w (composed)"] = q_grid(composition.q_w, state, composition.act_dim)
    sampled = "Q_w (composed)"  # the energy the composed sampler samples: its dots go there
    if not composition.operator.bounded:
        sampled = f"Q_{composition.operator.name} (composed)"
        panels[sampled] = q_grid(built.q, state, composition.act_dim)
    if joint is not None:
        panels["Q_joint"] = q_grid(joint.agent.q, state, composition.act_dim)
    with torch.no_grad():
        samples = torch.tanh(built.sampler(torch.as_tensor(state)[None], torch.randn(1, 200, composition.act_dim)))[0]
    plot_q_slices(panels, 1.0, path,
                  f"{composition.name}: Q over (a_0, a_1) at the visited state with the largest gap delta "
                  f"(other action dims 0); dots: composed sampler", samples.numpy(), samples_panel=sampled)
