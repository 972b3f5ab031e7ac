"""Real training on small budgets (marker ``learning``; CI runs them)."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import envs
import skills
from skills.evaluation import run_episodes
from skills.evaluation.plots import multigoal_rollouts, plot_multigoal
from skills.training import Trainer
from skills.training.defaults import sql_config, train_config

pytestmark = pytest.mark.learning
ARTIFACTS = Path(__file__).resolve().parent.parent / "runs" / "test-artifacts"


def train(task: str, steps: int | None, library: Path, seed: int = 0, device: str = "cpu") -> skills.Skill:
    """``steps=None``: the shipped recipe exactly (``python -m skills.train TASK``, bar the final reports)."""
    task_def = envs.get_task(task)
    run = replace(train_config(task, steps=steps, seed=seed, device=device), progress=False, convergence=False)
    if steps is not None:
        run = replace(run, eval_interval=steps, eval_episodes=10, final_eval_episodes=20)
    result = Trainer(task, sql_config(task, task_def.family.name), run, out=library).train()
    return skills.load(result.path)


def test_multigoal_samples_reach_all_four_goals(tmp_path):
    """Sampled episodes keep all four goals (multimodal) and beat random actions clearly.

    Random actions also wander into goals (about 30% of episodes), so the bars are relative.
    """
    rng = np.random.default_rng(0)
    random_paths, random_goals = multigoal_rollouts(lambda o: rng.uniform(-1, 1, 2), episodes=100, seed=0)
    skill = train("multigoal", None, tmp_path)  # 20k steps, half the episodes random (docs/skills.md)
    paths, goals = multigoal_rollouts(lambda o: skill.act(o), episodes=100, seed=0)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    figure = ARTIFACTS / "multigoal_trajectories.png"
    plot_multigoal(paths, goals, figure, "SQL multigoal, shipped recipe: 100 sampled episodes")
    counts = np.bincount(goals[goals >= 0], minlength=4)
    assert figure.stat().st_size > 10_000
    assert np.all(counts >= 8), counts  # every goal is reached by a fair share of sampled episodes
    assert np.mean(goals >= 0) >= np.mean(random_goals >= 0) + 0.3, (counts, np.bincount(random_goals + 1))
    assert np.mean([len(p) for p in paths]) < np.mean([len(p) for p in random_paths]) - 5  # goes, not wanders


def test_reach_clearly_learns_within_a_short_budget(tmp_path, device):
    """5k steps of reach: success >= 0.6 over 100 sampled episodes (20 were too few for a bar this close: seed 0
    read 0.50 on 20 and 0.69 on 100 episodes after the trainer's evaluations got their own streams)."""
    env = envs.make("reach")
    rng = np.random.default_rng(0)
    random_policy = run_episodes(env, lambda o: rng.uniform(-1, 1, 3), 100, seed=10_000)
    skill = train("reach", 5000, tmp_path, device=device)
    learned = run_episodes(env, lambda o: skill.act(o), 100, seed=10_000)
    assert random_policy["success_rate"] <= 0.1
    assert learned["success_rate"] >= 0.6, learned
    assert learned["return_mean"] > random_policy["return_mean"] + 10, (learned, random_policy)
