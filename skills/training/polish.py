"""Polishing a trained skill: more soft Q-iteration on its stored transitions, with no new environment samples.

A finished run's soft Q-function can sit off its fixed point for two reasons. It trails its own target: each target
copy is one soft Bellman backup, which shrinks the distance to the fixed point by ``gamma`` (0.95 on the Fetch), and a
run copies the target every 250 updates while its data and its policy still move. And it was trained on targets from
few importance samples, whose log-mean-exp is biased low. So the mean Bellman residual ``Q - TQ`` of the finished Fetch
``place``, ``clear`` and ``place+clear`` skills sits at -0.003 to -0.009, where the goal of a converged skill at their
``alpha = 0.01`` is ``0.1 alpha = 0.001`` (docs/skills.md, "Polishing a skill", has the measurements).

Polishing runs the same SQL update (``SoftQLearning.update``: Eq. 11 for Q, Eqs. 13-14 for the sampler) on the
skill's stored transitions, with three settings of its own (``PolishConfig``):

* a target copy every 50 updates: more backups per update, each still fitted by 50 Adam steps;
* ``V_target(s')`` from 1024 importance samples, the count the convergence check uses: the log-mean-exp of 32
  samples (the training default) is biased low, which alone leaves ``place``'s residual 0.0035 below 0
  (``python -m bench.residuals place``);
* the learning rate held for the first half, then decayed linearly to 0: at a constant rate, SGD noise moved the mean
  residual by about 0.001 from one thousand updates to the next (exploratory runs on ``place+clear``).

``polish_skill`` saves the result as a new version (training never overwrites) with a fresh final evaluation and
convergence report, and the version it came from in ``polished_from``. ``python -m skills.polish`` is its CLI.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..evaluation.diagnostics import ConvergenceConfig, convergence_report, soft_value_bounds
from ..evaluation.episodes import EVAL_SEED, evaluate
from ..evaluation.plots import plot_convergence
from ..library.catalog import claim_version_dir, resolve
from ..library.files import read_skill, write_skill
from ..library.manifest import Manifest
from ..library.skill import Skill, task_of
from ..library.store import release_claim
from ..sql.learner import SoftQLearning, TargetValueCache
from ..sql.seeding import seeded
from .config import POLISH_LIMIT
from .progress import progress_bar


@dataclass(frozen=True)
class PolishConfig:
    """How a skill is polished (see the module's docstring for why each value)."""

    updates: int = 4000  # SQL updates on the stored transitions
    lr: float = 1e-4  # Adam learning rate of Q and of the sampler for the first half; then linearly to 0
    target_update_interval: int = 50  # hard copy of Q into the target network every N updates
    value_samples: int = 1024  # importance samples for V_target(s')
    batch_size: int = 128  # transitions per update
    seed: int = 0  # the batches' random stream, and torch's
    progress: bool = True  # show a progress bar

    def __post_init__(self) -> None:
        counts = {"updates": (self.updates, POLISH_LIMIT), "target_update_interval": (self.target_update_interval, None),
                  "value_samples": (self.value_samples, 65_536), "batch_size": (self.batch_size, 65_536)}
        for name, (value, limit) in counts.items():
            whole = isinstance(value, int) and not isinstance(value, bool)
            if not (whole and value >= 1 and (limit is None or value <= limit)):
                raise ValueError(f"PolishConfig.{name} must be a whole number >= 1{f' and <= {limit}' if limit else ''}, "
                                 f"got {value!r}")
        if not (isinstance(self.lr, float) and 0.0 < self.lr < 1.0):
            raise ValueError(f"PolishConfig.lr must be a number in (0, 1), got {self.lr!r}")
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise ValueError(f"PolishConfig.seed must be a whole number >= 0, got {self.seed!r}")


def polish_lr(config: PolishConfig, update: int) -> float:
    """Learning rate of update ``update`` (0-based): ``config.lr`` for the first half, then linearly down to 0 at the
    end (the last update's rate is ``config.lr / ceil(updates / 2)``, not 0)."""
    half = config.updates // 2
    if update < half:
        return config.lr
    return config.lr * (config.updates - update) / (config.updates - half)


@contextmanager
def polishing(agent: SoftQLearning, config: PolishConfig) -> Iterator[None]:
    """The agent with the polish's settings (target interval, value samples, batch; no target-value cache, as batches
    carry no buffer slots) and its target network copied from Q; its own settings and learning rates afterwards."""
    saved_config, saved_cache = agent.config, agent.target_values
    saved_lrs = [[group["lr"] for group in opt.param_groups] for opt in (agent.q_optimizer, agent.sampler_optimizer)]
    agent.config = replace(saved_config, target_update_interval=config.target_update_interval,
                           value_samples=config.value_samples, batch_size=config.batch_size, cache_target_values=False)
    agent.target_values = TargetValueCache(agent.device)
    agent.q_target.load_state_dict(agent.q.state_dict())
    try:
        yield
    finally:
        agent.config, agent.target_values = saved_config, saved_cache
        for opt, lrs in zip((agent.q_optimizer, agent.sampler_optimizer), saved_lrs, strict=True):
            for group, lr in zip(opt.param_groups, lrs, strict=True):
                group["lr"] = lr


def set_lr(agent: SoftQLearning, lr: float) -> None:
    """The learning rate of both of the agent's optimizers."""
    for opt in (agent.q_optimizer, agent.sampler_optimizer):
        for group in opt.param_groups:
            group["lr"] = lr


def polish_agent(agent: SoftQLearning, transitions: dict[str, np.ndarray], config: PolishConfig = PolishConfig()) -> dict:
    """``config.updates`` SQL updates of ``agent`` on ``transitions`` (batches drawn with replacement, seeded). The agent
    needs its ``value_range`` when its config clips target values. Returns the record kept in the manifest: the
    settings, the transitions used, the wall time and the last Q loss. Raises ``TrainingDiverged`` on a NaN."""
    n = len(transitions["reward"])
    if n < config.batch_size:
        raise ValueError(f"polishing needs at least batch_size={config.batch_size} stored transitions, got {n}")
    data = {k: torch.as_tensor(np.asarray(transitions[k]), dtype=torch.float32, device=agent.device)
            for k in ("obs", "action", "reward", "next_obs", "terminated")}
    rng = np.random.default_rng(config.seed)
    start, losses = time.perf_counter(), {}
    with (seeded(config.seed), polishing(agent, config),
          progress_bar(config.updates, config.progress, desc="polish", unit="update") as bar):
        for update in range(config.updates):
            set_lr(agent, polish_lr(config, update))
            idx = torch.as_tensor(rng.integers(0, n, size=config.batch_size), device=agent.device)
            losses = agent.update({k: v[idx] for k, v in data.items()})
            bar.update(1)
    return {**asdict(config), "transitions": n, "wall_time_s": round(time.perf_counter() - start, 2),
            "q_loss_last": float(losses.get("q_loss", float("nan")))}


def polish_skill(source: str | Path, library: str | Path | None = None, config: PolishConfig = PolishConfig(),
                 convergence: ConvergenceConfig = ConvergenceConfig()) -> Path:
    """Polish a saved skill (name, name@vN or path, looked up in ``library``) into a new version of its name in the
    library that holds it: the polished networks, the same stored transitions, ``polished_from`` and ``polish`` in its
    manifest, a fresh final evaluation and convergence report, as a training run ends. Returns the new version's path."""
    path = resolve(source, library)
    agent, info, transitions = read_skill(path)
    if info.status != "complete":
        raise ValueError(f"{path} is {info.status!r}: polish a complete skill (finish an interrupted one with "
                         f"`python -m skills.train {info.task} --resume {path}`)")
    if info.composed_from is not None:
        parts = "+".join(f"{p.name}@v{p.version}" for p in info.composed_from.constituents)
        raise ValueError(f"{path} is a saved composition of {parts} ({info.composed_from.operator_name}): "
                         "its Q is theirs, combined with no training, and polishing would make it something else; "
                         f"`python -m compose.adapt {info.name}` trains it on the combined reward")
    agent.value_range = soft_value_bounds(task_of(info).reward_range, agent.config.alpha, info.act_dim, agent.config.gamma)
    record = polish_agent(agent, transitions, config)
    out = claim_version_dir(info.name, path.parent.parent)  # beside the original, wherever it was found
    plot = out.parent / f".{out.name}.convergence.png"
    try:
        manifest = info.with_fields(version=int(out.name[1:]), updates=info.updates + config.updates, files={}, polish=record,
                                    polished_from={"path": str(path), "version": info.version,
                                                   "weights_sha256": info.weights_sha256})
        manifest = manifest.with_fields(**final_checks(Skill(agent, manifest, transitions, out), info, convergence))
        plot_convergence(manifest.record["convergence"], plot, f"{info.name}: polished, against Monte Carlo soft returns")
        write_skill(out, agent, manifest, transitions, {"convergence.png": plot})
    except BaseException:
        release_claim(out)
        raise
    finally:
        plot.unlink(missing_ok=True)
    return out


def final_checks(skill: Skill, before: Manifest, convergence: ConvergenceConfig) -> dict:
    """What a training run's end records, for the polished skill: the final evaluation (as many episodes as the
    original's, stochastic and deterministic, from the same seeds) and the convergence report."""
    episodes = int((before.record.get("training") or {}).get("final_eval_episodes", 100))
    metrics = {mode: evaluate(skill, skill.make_env, episodes, EVAL_SEED, deterministic=mode == "deterministic", soft=False)
               for mode in ("stochastic", "deterministic")}
    torch.manual_seed(convergence.seed)
    report = convergence_report(skill, skill.make_env, task_of(before).reward_range, skill.transitions, convergence)
    return {"metrics": metrics, "convergence": report}
