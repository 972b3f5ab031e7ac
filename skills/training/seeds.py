"""Many seeds of one skill in one process:  python -m skills.train TASK --seeds 0-4

Each seed keeps everything a single-seed run has: its own ``Trainer`` (env stepped in its own child
process, replay buffer, numpy stream, progress log, checkpoints, library version with its seed in the
manifest), and its own torch random stream. Only the SQL update is shared: ``skills.sql.many_seeds.StackedSoftQLearning``
runs the S updates as one chain of batched matmuls, which is where a single small update loses its time
(dispatch, not arithmetic; bench/README.md). A seed trained here is saved in the same format as one
trained alone, with its seed in the manifest; nothing in the library tells how it was trained.

The phases of one step, for all seeds: choose actions (one stacked sampler call for the seeds not
exploring), start every env's step, run the stacked update while the env processes step, then collect
the transitions. Evaluations and checkpoints run per seed on its own agent, with its random stream made
torch's global one for the call, so they draw what a single-seed run of that seed would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..sql.learner import SQLConfig, TrainingDiverged
from ..library import is_claim_only, list_skills, release_claim
from .progress import progress_bar
from ..sql.many_seeds import StackedSoftQLearning, global_stream, stacked_memory_bytes
from .trainer import STORED_TRANSITIONS, TrainConfig, Trainer, TrainResult, check_seeds

ENV_PROCESS_BYTES = 150 << 20  # one env child process (MuJoCo, gymnasium), measured with ps on the arm tasks: ~120 MB


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(n: int, obs_dim: int, act_dim: int, sql: SQLConfig, run: TrainConfig) -> None:
    """Refuse ``n`` seeds whose estimated footprint exceeds the available memory, with the estimate."""
    capacity = min(sql.buffer_size, run.steps + STORED_TRANSITIONS)
    need = stacked_memory_bytes(n, obs_dim, act_dim, capacity, sql.hidden, sql.batch_size, sql.particles,
                                sql.value_samples) + n * ENV_PROCESS_BYTES * run.overlap_env_step
    have = available_memory()
    if have is not None and need > 0.8 * have:
        per_seed = need / n
        raise ValueError(f"{n} seeds need about {need / 2**30:.1f} GiB ({per_seed / 2**30:.2f} GiB each: replay of "
                         f"{capacity} transitions, networks, activations, env process), but {have / 2**30:.1f} GiB is "
                         f"available; train at most {max(1, int(0.8 * have // per_seed))} seeds at once")


def newest_of_seed(name: str, seed: int, library: str | Path | None) -> Path:
    """The newest saved version of skill ``name`` trained with ``seed`` (any status but a bare claim)."""
    found = [e for e in list_skills(library) if e.name == name and e.info.seed == seed]
    if not found:
        raise ValueError(f"--resume: no saved version of {name!r} with seed {seed} in the library; "
                         f"seeds found: {sorted({e.info.seed for e in list_skills(library) if e.name == name})}")
    return found[-1].path


class MultiSeedTrainer:
    """Trains ``task`` for every seed in ``seeds`` at once; each seed is published as its own library version."""

    def __init__(self, task: str, sql: SQLConfig, run: TrainConfig, seeds: Sequence[int], *,
                 out: Path | str | None = None, resume: bool = False, env_kwargs: dict | None = None):
        """``run.seed`` is ignored (each member gets its seed); ``resume``: continue each seed's newest saved version."""
        self.seeds = check_seeds(seeds)
        self.sql, self.run = sql, run
        self.trainers: list[Trainer] = []
        generators: list[torch.Generator] = []
        try:
            for seed in self.seeds:
                source = newest_of_seed(task, seed, out) if resume else None
                trainer = Trainer(task, sql, replace(run, seed=seed), out=out, resume=source, env_kwargs=env_kwargs)
                self.trainers.append(trainer)
                if len(self.trainers) == 1:
                    check_memory(len(self.seeds), trainer.agent.obs_dim, trainer.agent.act_dim, sql, run)
                generators.append(self._stream(trainer))
            starts = sorted({t.start_steps for t in self.trainers})
            if len(starts) != 1:
                raise ValueError(f"--resume: the seeds' newest versions stopped at different steps "
                                 f"{dict(zip(self.seeds, (t.start_steps for t in self.trainers)))}; "
                                 "stacked seeds step together, so resume them one by one")
            self.stack = StackedSoftQLearning([t.agent for t in self.trainers], generators)
        except BaseException:
            self._give_back()
            raise

    @staticmethod
    def _stream(trainer: Trainer) -> torch.Generator:
        """The torch stream this seed continues with: the global one its ``Trainer`` just seeded (CPU), so the
        seed draws what a single-seed run draws; on a GPU, a generator on the device seeded with the seed."""
        device = trainer.agent.device
        generator = torch.Generator(device=device)
        if device.type == "cpu":
            generator.set_state(torch.get_rng_state())
        else:
            generator.manual_seed(trainer.run.seed)
        return generator

    @property
    def paths(self) -> list[Path]:
        return [t.path for t in self.trainers]

    def _give_back(self) -> None:
        """Close every env; a member that published nothing gives its claimed version back."""
        for t in self.trainers:
            t.close()
            if is_claim_only(t.path):
                release_claim(t.path)
                t.log_path.unlink(missing_ok=True)

    # ---- one step of every seed ----
    def step(self) -> list[dict | None]:
        """One env step per seed and ``updates_per_step`` stacked updates while the envs step; per seed,
        ``{"return", "success"}`` when its episode ended, else None."""
        explore = [t.explores() for t in self.trainers]
        policy_members = [i for i, e in enumerate(explore) if not e]
        actions = None
        if policy_members:
            actions = self.stack.act(np.stack([t.observation() for t in self.trainers]), policy_members)
        for i, t in enumerate(self.trainers):
            t.send(None if explore[i] else actions[i])
        try:
            if all(t.updating() for t in self.trainers):  # the seeds step together: all or none
                for _ in range(self.sql.updates_per_step):
                    losses = self.stack.update([t.sample_batch() for t in self.trainers])
                    for i, t in enumerate(self.trainers):
                        t.losses = {k: v[i] for k, v in losses.items()}
        finally:
            episodes = [t.receive() for t in self.trainers]
        return episodes

    def _per_seed(self, method: str) -> list:
        """Call ``method`` of every member's ``Trainer`` with its random stream as torch's global one."""
        results = []
        for i, (t, generator) in enumerate(zip(self.trainers, self.stack.generators)):
            with global_stream(generator):
                try:
                    results.append(getattr(t, method)())
                except TrainingDiverged as err:  # a value check: this member diverged
                    err.members = [i]
                    raise
        return results

    def train(self) -> list[TrainResult]:
        """Run every seed to ``run.steps``; evaluations and checkpoints per seed as a single-seed run makes them.

        Ctrl-C or a divergence stops all seeds, and each keeps its last checkpoint (a diverged seed's is marked
        'diverged'). Returns one ``TrainResult`` per seed, in the order of ``seeds``."""
        try:
            return self._train()
        except BaseException:
            self._give_back()
            raise

    def _train(self) -> list[TrainResult]:
        run = self.run
        bar = progress_bar(run.steps, run.progress, desc=f"{len(self.seeds)} seeds")
        recent: list[list[bool]] = [[] for _ in self.seeds]
        try:
            for t, generator in zip(self.trainers, self.stack.generators):
                with global_stream(generator):
                    t.open_log(bar, label=f"seed {t.run.seed}  ")
            for step in range(1, run.steps + 1):
                for i, episode in enumerate(self.step()):
                    if episode is not None:
                        recent[i] = (recent[i] + [episode["success"]])[-20:]
                bar.update(1)
                if step % 250 == 0 and all(recent):
                    bar.set_postfix(succ="/".join(f"{np.mean(r):.2f}" for r in recent), refresh=False)
                if any(t.value_check_due() or t.evaluation_due() for t in self.trainers):
                    self.stack.copy_to_agents()
                    self._per_seed("after_step")
        except TrainingDiverged as err:
            raise self._diverged(err) from err
        finally:
            bar.close()
            for t in self.trainers:
                t.close()
                t.close_log()
        self.stack.copy_to_agents()
        return self._per_seed("finish")

    def _diverged(self, err: TrainingDiverged) -> TrainingDiverged:
        """The diverged members' checkpoints are marked 'diverged' (with the error); the others keep status 'training'."""
        kept = []
        for i, t in enumerate(self.trainers):
            if i in getattr(err, "members", range(len(self.trainers))):
                t.diverged(err)
            if (t.path / "manifest.json").exists():
                kept.append(f"seed {t.run.seed}: {t.path} ({t.history[-1]['env_steps']} steps)")
        where = "; ".join(kept) if kept else "no checkpoint had been written yet"
        return TrainingDiverged(f"{err}. All seeds stopped; last good checkpoints: {where}. Seeds that did not "
                                "diverge can be resumed with --resume.")

