"""One seed's training run: its env, replay buffer, random streams, agent, library version, log, evaluations and
checkpoints, as named phases. The loop that drives one or many of them is ``skills.training.loop``."""

from __future__ import annotations

import copy
import csv
import itertools
import os
import random
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from gymnasium.spaces import Box

import envs

from ..evaluation.diagnostics import ConvergenceConfig, convergence_report, soft_value_bounds, value_bound_violation
from ..evaluation.episodes import EVAL_SEED, collision_text, evaluate
from ..evaluation.lockstep import EnvPool
from ..evaluation.plots import plot_convergence, plot_learning_curve
from ..library import (
    Manifest,
    Skill,
    claim_version_dir,
    is_claim_only,
    library_versions,
    read_skill,
    release_claim,
    resolve,
    space_record,
    update_manifest,
    write_skill,
)
from ..library.catalog import is_path, library_root
from ..library.manifest import ComposedFrom, Space
from ..sql.learner import SoftQLearning, SQLConfig, TrainingDiverged, torch_device
from ..sql.many_skills import ComposedSoftQNetwork
from ..sql.seeding import seeded
from .buffer import ReplayBuffer
from .config import STORED_TRANSITIONS, TrainConfig, TrainResult
from .envs import training_env
from .polish import PolishConfig, polish_agent

LOG_COLUMNS = ["env_steps", "wall_time_s", "return_mean", "return_std", "success_rate", "collision_rate", "q_loss",
               "sampler_loss"]
DETERMINISTIC_COLUMNS = ["det_return_mean", "det_return_std", "det_success_rate"]


@dataclass(frozen=True)
class StartFrom:
    """A run that starts from something other than fresh networks and an empty buffer (``compose.adapt``):
    ``agent``'s networks, ``transitions`` in the replay buffer first (their rewards must be the task's),
    ``provenance`` recorded in the manifest (e.g. ``{"adapted_from": ...}``, kept when the skill is resumed),
    and the library ``name`` (default: the task's)."""

    agent: SoftQLearning | None = None
    transitions: dict[str, np.ndarray] | None = None
    provenance: dict | None = None
    name: str | None = None


def seed_everything(seed: int) -> None:
    """Seed python, numpy's global state and torch (CPU runs are then bitwise reproducible)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


PROBE_STEPS = 200  # random steps a user's task is tried on before training starts


def probe_task(task: str, env_kwargs: dict, steps: int = PROBE_STEPS) -> None:
    """Step ``task`` with uniform random actions (its own seeded stream): every reward term and check is computed
    and checked on the way (``envs.core.checked_term``), so a term with the wrong shape, a NaN or a value outside
    its declared range is refused (``envs.TermError``) before a version is claimed."""
    env = envs.make(task, **env_kwargs)
    try:
        env.action_space.seed(0)
        env.reset(seed=0)
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset()
    finally:
        env.close()


def tensorboard_writer(log_dir: Path):
    """A TensorBoard ``SummaryWriter``, or None where tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(log_dir))


def agent_state(agent: SoftQLearning) -> dict:
    """A deep copy of everything an update changes: networks, optimizers and the update count."""
    modules = {"q": agent.q, "q_target": agent.q_target, "sampler": agent.sampler, "q_optimizer": agent.q_optimizer,
               "sampler_optimizer": agent.sampler_optimizer}
    return {"updates": agent.updates, **{k: copy.deepcopy(m.state_dict()) for k, m in modules.items()}}


def restore_agent(agent: SoftQLearning, state: dict) -> None:
    """Put back what ``agent_state`` copied."""
    for key in ("q", "q_target", "sampler", "q_optimizer", "sampler_optimizer"):
        getattr(agent, key).load_state_dict(state[key])
    agent.updates = state["updates"]


class SeedRun:
    """Trains one seed of a skill and publishes it as a new library version (driven by ``skills.training.loop``)."""

    def __init__(self, task: str, sql: SQLConfig, run: TrainConfig, *, out: Path | str | None = None,
                 resume: str | Path | None = None, start: StartFrom = StartFrom(), env_kwargs: dict | None = None,
                 together: Sequence[int] = ()):
        """Train ``task`` into ``<out>/<name>/v<N+1>`` (``name``: ``start.name``, the resumed skill's, or the task's).
        ``resume``: a saved skill to continue (name, name@vN or path); ``env_kwargs``: ``envs.make`` options such as a
        custom ``arm`` (recorded as the manifest's ``task_kwargs``); ``together``: the seeds whose updates are stacked
        with this one's (recorded as ``training.trained_together``: a seed reproduces bit for bit only in the same
        stack, docs/skills.md)."""
        self.task = envs.get_task(task)
        torch_device(run.device)  # refuse an unusable device before the env process starts
        self.sql, self.run, self.library = sql, run, out
        self.together = list(together) if together else [run.seed]
        resumed = self._read_resume(resume) if resume is not None else None
        self.name = start.name or (resumed[1].name if resumed else self.task.name)
        self.resumed_from = str(resume) if resume is not None else None  # as asked, and the version it resolved to:
        self.resumed_version = f"{resumed[1].name}@v{resumed[1].version}" if resumed else None
        self.provenance = dict(start.provenance or {})
        seed_everything(run.seed)
        torch.set_num_threads(run.threads)
        self.env_kwargs = dict(env_kwargs or {})
        if self.task.user_defined:
            probe_task(self.task.name, self.env_kwargs)  # a user's terms: their mistakes surface before anything is saved
        self.env = training_env(task, in_child_process=run.overlap_env_step, **self.env_kwargs)
        # the tasks' spaces are boxes (envs.core)
        self.observation_space = cast(Box, self.env.single_observation_space)
        self.action_space = cast(Box, self.env.single_action_space)
        self.eval_pool = EnvPool(partial(envs.make, task, **self.env_kwargs))  # periodic evaluations, in lockstep
        self.action_space.seed(run.seed)
        self.rng = np.random.default_rng(run.seed)
        self.agent, self.start_steps = self._start(resumed, start)
        cfg = self.agent.config  # a resumed agent keeps its own settings
        self.agent.value_range = soft_value_bounds(self.task.reward_range, cfg.alpha, self.action_space.shape[0], cfg.gamma)
        self.history: list[dict] = []
        try:
            self.path = claim_version_dir(self.name, out)  # last: nothing after it can fail and leave the claim behind
        except BaseException:
            self.close()
            raise
        self.log_path = self.path.parent / f".{self.path.name}.progress.csv"
        self.steps_done = 0  # environment steps taken by this run (``send``/``receive``)
        self.losses: dict[str, torch.Tensor] = {}
        self._obs: np.ndarray | None = None
        self._action: np.ndarray | None = None
        self._episode_return = 0.0
        self._random_episode = False
        self.convergence_record: dict | None = None
        self.polish_record: dict | None = None  # skills.training.polish's record, when the run polishes at its end
        self._violations: list[tuple[float, str]] = []  # consecutive failed value checks: (excess, message)
        self.value_warnings: list[str] = []  # every failed value check of this run
        self._bar: Any = None
        self._label = ""
        self._start_time = 0.0
        self._writer: Any = None
        self._log_file: Any = None
        self._log: Any = None

    def _start(self, resumed: tuple | None, start: StartFrom) -> tuple[SoftQLearning, int]:
        """The agent and the buffer the run starts from: fresh, resumed (with its stored transitions), or ``start``'s."""
        obs_dim, act_dim = self.observation_space.shape[0], self.action_space.shape[0]
        seeded = sum(len(t["reward"]) for t in (start.transitions, resumed and resumed[2]) if t)
        capacity = min(self.sql.buffer_size, self.run.steps + STORED_TRANSITIONS + seeded)
        self.buffer = ReplayBuffer(obs_dim, act_dim, capacity)
        agent = start.agent if start.agent is not None else SoftQLearning(obs_dim, act_dim, self.sql, device=self.run.device)
        start_steps = 0
        if resumed is not None:
            agent, info, stored = resumed
            start_steps = info.env_steps
            self.buffer.add_many(stored)
            if info.adapted_from is not None and "adapted_from" not in self.provenance:
                self.provenance["adapted_from"] = info.adapted_from.to_json()
        if start.transitions is not None:
            self.buffer.add_many(start.transitions)
        return agent, start_steps

    def _read_resume(self, source: str | Path) -> tuple[SoftQLearning, Manifest, dict[str, np.ndarray]]:
        inside = None if is_path(source) else library_root(self.library)  # a name: read only from inside its library
        agent, info, transitions = read_skill(resolve(source, self.library), device=self.run.device, inside=inside)
        if info.task != self.task.name:
            raise ValueError(f"cannot resume {info.task!r} skill as task {self.task.name!r}")
        return agent, info, transitions

    # ---- the phases of a step (``skills.training.loop`` drives them, for one seed or many at once) ----
    def observation(self) -> np.ndarray:
        """The observation the next action answers; the first call resets the env with the run's seed."""
        if self._obs is None:
            self._obs = self.env.reset(seed=self.run.seed)[0][0]
        return self._obs

    def warming_up(self) -> bool:
        """The next step is one of the uniform random warm-up steps of a fresh run."""
        return self.start_steps == 0 and self.steps_done < self.sql.warmup_steps

    def explores(self) -> bool:
        """The next action is uniform random (warm-up, or a random episode), not the policy's."""
        return self.warming_up() or self._random_episode

    def updating(self) -> bool:
        """The SQL updates run during the next step (warm-up is over and a batch is stored)."""
        return not self.warming_up() and self.buffer.size >= self.sql.batch_size

    def sample_batch(self) -> dict[str, torch.Tensor]:
        """A replay batch from this run's buffer and random stream."""
        return self.buffer.sample(self.sql.batch_size, self.rng, self.agent.device)

    def send(self, action: np.ndarray | None) -> np.ndarray:
        """Start the env step with ``action`` (None: a uniform random one); returns the action sent."""
        self.observation()
        action = self.action_space.sample() if action is None else action
        self._action = action
        self.env.step_async(action[None])
        return action

    def receive(self) -> dict | None:
        """Finish the env step that ``send`` started and store its transition; ``{"return", "success"}``
        when it ended an episode, else None."""
        obs, reward, terminated, truncated, info = self.env.step_wait()
        self.steps_done += 1
        ended = bool(terminated[0] or truncated[0])
        next_obs = info["final_obs"][0] if ended else obs[0]
        self.buffer.add(self._obs, self._action, reward[0], next_obs, terminated[0])
        self._episode_return += float(reward[0])
        self._obs = obs[0]
        if not ended:
            return None
        episode = {"return": self._episode_return, "success": bool(info["final_info"]["is_success"][0])}
        self._episode_return = 0.0
        self._random_episode = self.sql.random_episodes > 0 and bool(self.rng.uniform() < self.sql.random_episodes)
        return episode

    def close(self) -> None:
        """Stop the training env (and its child process); the evaluation envs stay for the final evaluations."""
        self.env.close()

    def give_back(self) -> None:
        """Close the envs; a run that published nothing gives its claimed version (and its log) back."""
        self.close()
        self.eval_pool.close()
        if is_claim_only(self.path):
            release_claim(self.path)
            self.log_path.unlink(missing_ok=True)

    # ---- checks, evaluations, records ----
    def check_values(self, states: int = 256, samples: int = 64, final: bool = False) -> None:
        """Raise ``TrainingDiverged`` when the soft value of stored states leaves its analytic bounds
        (``skills.evaluation.diagnostics.soft_value_bounds``) and is running away: at once when a value is not finite
        or lies beyond the bounds by more than their width, when the excess has not shrunk over
        ``value_check_patience`` checks in a row, and at the final check. An overshoot that shrinks from
        check to check (seen early in training) is recorded (manifest ``value_check_warnings``), not fatal."""
        if self.buffer.size == 0:
            return
        idx = np.random.default_rng(self.agent.updates).integers(0, self.buffer.size, size=states)
        obs = torch.as_tensor(self.buffer.obs[idx], device=self.agent.device)
        values = self.agent.soft_value(self.agent.q, obs, samples, proposal="mixture").cpu().numpy()
        problem = value_bound_violation(values, self.task.reward_range, self.sql.alpha, self.agent.act_dim, self.sql.gamma)
        if problem is None:
            self._violations = []
            return
        low, high = soft_value_bounds(self.task.reward_range, self.sql.alpha, self.agent.act_dim, self.sql.gamma)
        excess = float(max(np.nanmax(values) - high, low - np.nanmin(values))) if np.all(np.isfinite(values)) else np.inf
        message = f"value blow-up at update {self.agent.updates}: {problem}"
        self._violations.append((excess, message))
        self.value_warnings.append(message)
        recent = [e for e, _ in self._violations[-self.run.value_check_patience:]]
        growing = len(recent) >= self.run.value_check_patience and all(b >= a for a, b in itertools.pairwise(recent))
        if final or not np.isfinite(excess) or excess > high - low or growing:
            raise TrainingDiverged("; ".join(m for _, m in self._violations[-self.run.value_check_patience:]))

    def convergence(self, config: ConvergenceConfig = ConvergenceConfig()) -> dict:
        """``skills.evaluation.diagnostics.convergence_report`` of the current networks (the final report)."""
        transitions = self.buffer.subsample(config.residual_states, np.random.default_rng(self.run.seed + 1))
        skill = Skill(self.agent, self.manifest("training", 0, 0.0, {}), transitions, self.path)
        with seeded(self.run.seed + 2):  # leaves the training RNG stream as it was
            make_env = partial(envs.make, self.task.name, **self.env_kwargs)  # this run's env, as it was given
            return convergence_report(skill, make_env, self.task.reward_range, transitions, config)

    def evaluate(self, episodes: int, deterministic: bool | None = None) -> dict:
        """The agent on ``episodes`` seeded evaluation episodes, in lockstep, each from its own random stream (the
        training stream is untouched)."""
        deterministic = self.run.deterministic_eval if deterministic is None else deterministic
        return evaluate(self.agent, self.eval_pool, episodes, EVAL_SEED, deterministic=deterministic, soft=False)

    def manifest(self, status: str, env_steps: int, wall: float, metrics: dict) -> Manifest:
        """The skill's manifest as it stands (``skills.library.manifest.Manifest``)."""
        arch = {"q": "mlp", "sampler": "mlp, a = tanh(f(s, xi)), xi ~ N(0, I)", "hidden": list(self.sql.hidden),
                "activation": "relu", "noise_dim": self.action_space.shape[0], "obs_scale": self.sql.obs_scale,
                **(self.agent.q.architecture() if isinstance(self.agent.q, ComposedSoftQNetwork) else {})}
        hyper = {k: v for k, v in self.sql.to_dict().items() if k not in ("alpha", "gamma")}
        provenance: dict[str, Any] = {k: ComposedFrom.from_json(v) for k, v in self.provenance.items()}  # Manifest fields
        record = {
            "training": {**asdict(self.run), "until_env_steps": self.start_steps + self.run.steps,
                         "trained_together": self.together}, "metrics": metrics,
            "evaluation": {"seed": EVAL_SEED, "periodic_deterministic": self.run.deterministic_eval,
                           "final": "both: 'stochastic' samples the sampler; 'deterministic' takes the "
                                    "highest-Q of 32 sampler actions"},
            "history": self.history, "resumed_from": self.resumed_from,
            **({"resumed_version": self.resumed_version} if self.resumed_version else {}),
            **({"value_check_warnings": self.value_warnings} if self.value_warnings else {}),
            **({"owner": {"host": socket.gethostname(), "pid": os.getpid()}} if status == "training" else {}),
            **({"convergence": self.convergence_record} if self.convergence_record is not None else {}),
            **({"polish": self.polish_record} if self.polish_record is not None else {}),
            "library_versions": library_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        return Manifest(
            name=self.name, version=int(self.path.name[1:]), status=status, task=self.task.name,
            task_kwargs={k: list(v) if isinstance(v, tuple) else v for k, v in self.env_kwargs.items()},
            task_definition=envs.definition(self.task),
            family=self.task.family.name, observation_space=Space.from_json(space_record(self.observation_space)),
            action_space=Space.from_json(space_record(self.action_space)), alpha=self.sql.alpha, gamma=self.sql.gamma,
            architecture=arch, hyperparameters=hyper, seed=self.run.seed, env_steps=env_steps, updates=self.agent.updates,
            wall_time_s=round(wall, 2), record=record, **provenance)

    def checkpoint(self, status: str, env_steps: int, wall: float, metrics: dict) -> None:
        extra = {"progress.csv": self.log_path}
        if status == "complete":
            curve = self.path.parent / f".{self.path.name}.curve.png"
            plot_learning_curve(self.history, curve, f"{self.name}: SQL, alpha={self.sql.alpha}, seed {self.run.seed}")
            extra["learning_curve.png"] = curve
            if self.convergence_record is not None:
                extra["convergence.png"] = self.path.parent / f".{self.path.name}.convergence.png"
                plot_convergence(self.convergence_record, extra["convergence.png"],
                                 f"{self.name}: soft Q-function against Monte Carlo soft returns")
        write_skill(self.path, self.agent, self.manifest(status, env_steps, wall, metrics),
                    self.buffer.subsample(STORED_TRANSITIONS, np.random.default_rng(self.run.seed)), extra)
        if status == "complete":
            for file in extra.values():
                if file != self.log_path:
                    file.unlink(missing_ok=True)

    # ---- the phases of a run ----
    def open_log(self, bar, label: str = "") -> None:
        """Start the clock, the progress log (``.vN.progress.csv``) and TensorBoard; a fresh run evaluates
        its untrained policy first, for the curve. ``bar`` shows evaluation lines, prefixed by ``label``."""
        self._bar, self._label = bar, label
        self._start_time = time.perf_counter()
        self._writer = tensorboard_writer(Path("runs") / "tensorboard" / f"{self.name}-{self.path.name}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        columns = LOG_COLUMNS + (DETERMINISTIC_COLUMNS if self.run.deterministic_curve else [])
        self._log_file = open(self.log_path, "w", newline="")
        self._log = csv.DictWriter(self._log_file, columns)
        self._log.writeheader()
        if self.start_steps == 0:
            self.record(self.evaluate(self.run.eval_episodes))

    @property
    def env_steps(self) -> int:
        """Environment steps of the skill: those it was resumed from plus this run's."""
        return self.start_steps + self.steps_done

    def record(self, metrics: dict) -> dict:
        """One row of the learning curve (log, TensorBoard, history) from an evaluation's metrics."""
        run = self.run
        row = {"env_steps": self.env_steps, "wall_time_s": round(time.perf_counter() - self._start_time, 2),
               "return_mean": metrics["return_mean"], "return_std": metrics["return_std"],
               "success_rate": metrics["success_rate"], "collision_rate": metrics["collision_rate"],
               "q_loss": float(self.losses.get("q_loss", np.nan)),
               "sampler_loss": float(self.losses.get("sampler_loss", np.nan))}
        if run.deterministic_curve:
            with seeded(None):  # training draws the same numbers with or without it
                other = self.evaluate(run.eval_episodes, deterministic=True)
            row |= {"det_return_mean": other["return_mean"], "det_return_std": other["return_std"],
                    "det_success_rate": other["success_rate"]}
        self.history.append(row)
        self._log.writerow(row)
        self._log_file.flush()
        if self._writer is not None:
            for k, v in row.items():
                self._writer.add_scalar(k, v, self.env_steps)
        self._bar.write(f"[eval] {self._label}steps {self.env_steps:>7d}  return {row['return_mean']:8.2f}  "
                        f"success {row['success_rate']:.2f}  collisions {collision_text(metrics)}")
        return row

    def value_check_due(self) -> bool:
        """A soft-value check (``check_values``) follows the step just taken."""
        run, step = self.run, self.steps_done
        return bool(run.value_check_interval) and (step % run.value_check_interval == 0 or step == run.steps)

    def evaluation_due(self) -> bool:
        """A periodic evaluation (and checkpoint) follows the step just taken."""
        return self.steps_done % self.run.eval_interval == 0 or self.steps_done == self.run.steps

    def after_step(self) -> None:
        """The checks that follow a step: soft values against their bounds, and every ``eval_interval``
        steps an evaluation and a checkpoint (the last step's checkpoint is ``finish``'s)."""
        if self.value_check_due():
            self.check_values(final=self.steps_done == self.run.steps)
        if self.evaluation_due():
            metrics = self.evaluate(self.run.eval_episodes)
            row = self.record(metrics)
            if self.steps_done != self.run.steps:
                self.checkpoint("training", self.env_steps, row["wall_time_s"], metrics)

    def checkpoint_kept(self) -> str | None:
        """The last checkpoint and its steps, or None when none was written."""
        if not (self.path / "manifest.json").exists():
            return None
        return f"{self.path} ({self.history[-1]['env_steps']} steps)"

    def mark_diverged(self, err: TrainingDiverged) -> str | None:
        """Mark the last checkpoint 'diverged' (it keeps its weights); where it is, or None if there is none."""
        kept = self.checkpoint_kept()
        if kept is not None:
            update_manifest(self.path, status="diverged", error=str(err))
        return kept

    def close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def polish(self) -> None:
        """``skills.training.polish`` of the trained networks on the whole replay buffer (``run.polish_updates``
        updates, seeded by the run's seed; the training's random streams are left as they were). A polish that
        diverges is undone: the run ends with the networks it trained, and the manifest says why."""
        config = PolishConfig(updates=self.run.polish_updates, seed=self.run.seed, progress=self.run.progress)
        data = self.buffer.subsample(self.buffer.size, np.random.default_rng(self.run.seed))
        before = agent_state(self.agent)
        try:
            self.polish_record = polish_agent(self.agent, data, config)  # leaves the training RNG stream as it was
        except TrainingDiverged as err:
            restore_agent(self.agent, before)
            self.polish_record = {"updates": 0, "diverged": str(err), "kept": "the networks as trained, unpolished"}
            print(f"{self.name}: the polish diverged and was undone; the skill is saved as trained ({err})", file=sys.stderr)

    def finish(self) -> TrainResult:
        """Final evaluations (stochastic and deterministic), the convergence report, the complete checkpoint."""
        run = self.run
        if run.polish_updates:
            self.polish()
        wall = time.perf_counter() - self._start_time
        final = {"stochastic": self.evaluate(run.final_eval_episodes, deterministic=False),
                 "deterministic": self.evaluate(run.final_eval_episodes, deterministic=True)}
        if run.convergence:
            self.convergence_record = self.convergence()
        self.checkpoint("complete", self.env_steps, wall, final)
        self.log_path.unlink(missing_ok=True)
        self.eval_pool.close()
        return TrainResult(self.path, final, self.env_steps, wall, self.history)
