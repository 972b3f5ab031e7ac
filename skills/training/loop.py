"""The training loop, one for any number of seeds:  python -m skills.train TASK [--seeds 0-4]

Each seed is a ``SeedRun`` (``skills.training.seed_run``): its own env (stepped in its own child process), replay
buffer, numpy stream, progress log, checkpoints and library version with its seed in the manifest. What the
seeds share is the SQL update, behind a *learner*:

* one seed (``OneLearner``): the agent's own update, drawing from torch's global random stream; a single-seed
  run is bitwise the run it always was;
* S seeds (``StackedLearner``): ``skills.sql.many_seeds.StackedSoftQLearning`` runs the S updates as one chain of
  batched matmuls, each seed drawing from its own stream, so a seed trained with others equals the seed trained
  alone up to float rounding (tests/test_seeds.py). Nothing in the library tells how a seed was trained.

The phases of one step, for all seeds: choose actions (one call for the seeds not exploring), start every env's
step, run the update(s) while the env processes step, then collect the transitions. Evaluations and checkpoints
run per seed on its own agent, with its own random stream as torch's global one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..library import list_skills, load_manifest, resolve
from ..sql.learner import SoftQLearning, SQLConfig, TrainingDiverged
from ..sql.many_seeds import StackedSoftQLearning, global_stream, stacked_memory_bytes
from .config import STORED_TRANSITIONS, TrainConfig, TrainResult, check_seeds
from .progress import progress_bar
from .seed_run import SeedRun, StartFrom

ENV_PROCESS_BYTES = 150 << 20  # one env child process (MuJoCo, gymnasium), measured with ps on the arm tasks: ~120 MB
SUCCESS_WINDOW = 20  # episodes in the progress bar's running return and success
POSTFIX_EVERY = 250  # steps between progress-bar postfix updates


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


def rest_of_budget(run: TrainConfig, sources: Sequence[str | Path], library: str | Path | None) -> TrainConfig:
    """``run`` to finish the interrupted checkpoints ``sources`` (names, name@vN or paths): its steps are what they
    had left of their budget (``Manifest.steps_left``); unchanged when none was interrupted part way. Stacked seeds
    step together, so their steps left must agree."""
    left = {load_manifest(resolve(source, library)).steps_left for source in sources}
    if len(left) > 1:
        raise ValueError(f"--resume: the checkpoints have different steps left of their budgets {sorted(left)}; "
                         "stacked seeds step together, so resume them one by one")
    steps = left.pop() if left else 0
    return replace(run, steps=steps, eval_interval=min(run.eval_interval, steps)) if steps else run


def newest_of_seed(name: str, seed: int, library: str | Path | None) -> Path:
    """The newest saved version of skill ``name`` trained with ``seed`` (any status but a bare claim)."""
    entries = [e for e in list_skills(library) if e.name == name]
    found = [e for e in entries if e.info.seed == seed]
    if not found:
        raise ValueError(f"--resume: no saved version of {name!r} with seed {seed} in the library; "
                         f"seeds found: {sorted({e.info.seed for e in entries if e.info.seed is not None})}")
    return found[-1].path


# ---- learners: what the seeds share -------------------------------------------------------------------------
class OneLearner:
    """One seed's agent, updating and acting on torch's global random stream."""

    def __init__(self, agent: SoftQLearning):
        self.agent = agent

    def act(self, obs: Sequence[np.ndarray], explore: Sequence[bool]) -> list[np.ndarray | None]:
        return [None if explore[0] else self.agent.act(obs[0])]

    def update(self, batches: Sequence[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        return [self.agent.update(batches[0])]

    def sync(self) -> None:
        """The agent is the one that learns: nothing to hand back."""

    def stream(self, i: int):
        return nullcontext()


class StackedLearner:
    """S seeds' agents updated as one stacked learner, each seed on its own random stream."""

    def __init__(self, agents: Sequence[SoftQLearning], generators: Sequence[torch.Generator]):
        self.stack = StackedSoftQLearning(agents, generators)

    def act(self, obs: Sequence[np.ndarray], explore: Sequence[bool]) -> list[np.ndarray | None]:
        members = [i for i, e in enumerate(explore) if not e]
        if not members:
            return [None] * len(obs)
        actions = self.stack.act(np.stack(obs), members)
        return [None if e else actions[i] for i, e in enumerate(explore)]

    def update(self, batches: Sequence[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        losses = self.stack.update(batches)
        return [{k: v[i] for k, v in losses.items()} for i in range(len(batches))]

    def sync(self) -> None:
        """Write the stacked weights back into each seed's agent (which evaluates and saves)."""
        self.stack.copy_to_agents()

    @contextmanager
    def stream(self, i: int) -> Iterator[None]:
        with global_stream(self.stack.generators[i]):
            yield


def seed_stream(run: SeedRun) -> torch.Generator:
    """The torch stream a seed continues with: the global one its ``SeedRun`` just seeded (CPU), so the seed
    draws what a single-seed run draws; on a GPU, a generator on the device seeded with the seed."""
    device = run.agent.device
    generator = torch.Generator(device=device)
    if device.type == "cpu":
        generator.set_state(torch.get_rng_state())
    else:
        generator.manual_seed(run.run.seed)
    return generator


# ---- the loop -----------------------------------------------------------------------------------------------
class MultiSeedTrainer:
    """Trains ``task`` for every seed in ``seeds`` in one process; each seed is published as its own library version.

    One seed is the plain single-seed run (``Trainer`` is this class for one seed)."""

    def __init__(self, task: str, sql: SQLConfig, run: TrainConfig, seeds: Sequence[int], *,
                 out: Path | str | None = None, resume: bool | str | Path | Mapping[int, str | Path] | None = None,
                 start: StartFrom = StartFrom(), env_kwargs: dict | None = None):
        """``run.seed`` is replaced by each seed. ``resume``: True continues each seed's newest saved version; a name,
        name@vN or path continues that skill (one seed); a mapping seed -> skill continues each seed's own. A resumed
        run trains ``run.steps`` more (``rest_of_budget`` gives the run that finishes an interrupted one).
        ``start``: fresh runs start from this (``compose.adapt``)."""
        self.seeds = check_seeds(seeds)
        self.sql, self.run = sql, run
        self.trainers: list[SeedRun] = []
        streams: list[torch.Generator] = []
        try:
            for seed in self.seeds:
                source = (newest_of_seed(start.name or task, seed, out) if resume is True
                          else resume[seed] if isinstance(resume, Mapping) else (resume or None))
                member = SeedRun(task, sql, replace(run, seed=seed), out=out, resume=source, start=start,
                                 env_kwargs=env_kwargs, together=self.seeds)
                self.trainers.append(member)
                if len(self.trainers) == 1:
                    check_memory(len(self.seeds), member.agent.obs_dim, member.agent.act_dim, sql, run)
                streams.append(seed_stream(member))
            starts = {t.start_steps for t in self.trainers}
            if len(starts) != 1:
                raise ValueError(f"--resume: the seeds' newest versions stopped at different steps "
                                 f"{dict(zip(self.seeds, (t.start_steps for t in self.trainers), strict=False))}; "
                                 "stacked seeds step together, so resume them one by one")
            self.learner = OneLearner(self.trainers[0].agent) if len(self.trainers) == 1 else \
                StackedLearner([t.agent for t in self.trainers], streams)
        except BaseException:
            self._give_back()
            raise

    @property
    def paths(self) -> list[Path]:
        return [t.path for t in self.trainers]

    @property
    def stack(self) -> StackedSoftQLearning:
        """The stacked learner of several seeds."""
        if not isinstance(self.learner, StackedLearner):
            raise AttributeError("one seed trains with its own agent; there is no stack")
        return self.learner.stack

    def _give_back(self) -> None:
        """Close every env; a member that published nothing gives its claimed version back."""
        for t in self.trainers:
            t.give_back()

    # ---- one step of every seed ----
    def step(self) -> list[dict | None]:
        """One env step per seed and ``updates_per_step`` updates while the envs step; per seed,
        ``{"return", "success"}`` when its episode ended, else None."""
        explore = [t.explores() for t in self.trainers]
        actions = self.learner.act([t.observation() for t in self.trainers], explore)
        for t, action in zip(self.trainers, actions, strict=False):
            t.send(action)
        try:
            if all(t.updating() for t in self.trainers):  # the seeds step together: all or none
                for _ in range(self.sql.updates_per_step):
                    losses = self.learner.update([t.sample_batch() for t in self.trainers])
                    for t, member_losses in zip(self.trainers, losses, strict=False):
                        t.losses = member_losses
        finally:
            episodes = [t.receive() for t in self.trainers]
        return episodes

    def _stepped(self) -> list[dict | None]:
        """``step``'s episodes as a list, one per seed (the loop calls this)."""
        return self.step()

    def _per_seed(self, method: str) -> list:
        """Call ``method`` of every seed's run with its random stream as torch's global one."""
        results = []
        for i, t in enumerate(self.trainers):
            with self.learner.stream(i):
                try:
                    results.append(getattr(t, method)())
                except TrainingDiverged as err:  # a value check: this member diverged
                    err.members = [i]
                    raise
        return results

    def train(self) -> list[TrainResult]:
        """Run every seed to ``run.steps``; evaluations and checkpoints per seed.

        Ctrl-C or a divergence stops all seeds, and each keeps its last checkpoint (a diverged seed's is marked
        'diverged'); a seed that published nothing gives its version back. One ``TrainResult`` per seed."""
        try:
            return self._train()
        except BaseException:
            self._give_back()
            raise

    def _train(self) -> list[TrainResult]:
        run = self.run
        desc = None if len(self.seeds) == 1 else f"{len(self.seeds)} seeds"
        bar = progress_bar(run.steps, run.progress, desc=desc)
        recent: list[list[dict]] = [[] for _ in self.seeds]
        try:
            self._open_logs(bar)
            for step in range(1, run.steps + 1):
                for i, episode in enumerate(self._stepped()):
                    if episode is not None:
                        recent[i] = (recent[i] + [episode])[-SUCCESS_WINDOW:]
                bar.update(1)
                if step % POSTFIX_EVERY == 0 and all(recent):
                    bar.set_postfix(refresh=False, **progress_postfix(recent))
                if any(t.value_check_due() or t.evaluation_due() for t in self.trainers):
                    self.learner.sync()
                    self._per_seed("after_step")
        except TrainingDiverged as err:
            raise self._diverged(err) from err
        finally:
            bar.close()
            for t in self.trainers:
                t.close()
                t.close_log()
        self.learner.sync()
        return self._per_seed("finish")

    def _open_logs(self, bar) -> None:
        for i, t in enumerate(self.trainers):
            with self.learner.stream(i):
                t.open_log(bar, label="" if len(self.seeds) == 1 else f"seed {t.run.seed}  ")

    def _diverged(self, err: TrainingDiverged) -> TrainingDiverged:
        """The diverged members' checkpoints are marked 'diverged' (with the error); the others keep status 'training'."""
        members = getattr(err, "members", range(len(self.trainers)))
        kept = [t.mark_diverged(err) if i in members else t.checkpoint_kept() for i, t in enumerate(self.trainers)]
        if len(self.trainers) == 1:
            where = f"the last good checkpoint is {kept[0]}" if kept[0] else "no checkpoint had been written yet"
            return TrainingDiverged(f"{err}. Training stopped; {where}.")
        listed = "; ".join(f"seed {t.run.seed}: {k}" for t, k in zip(self.trainers, kept, strict=False) if k)
        which = ", ".join(str(self.trainers[i].run.seed) for i in members)
        return TrainingDiverged(f"seed {which}: {err}. All seeds stopped; last good checkpoints: "
                                f"{listed or 'no checkpoint had been written yet'}. Seeds that did not diverge can be "
                                "resumed with --resume.")


def progress_postfix(recent: Sequence[Sequence[dict]]) -> dict[str, str]:
    """The bar's running return and success over the last episodes, one figure per seed joined by '/'."""
    def joined(key: str) -> str:
        return "/".join(f"{np.mean([e[key] for e in episodes]):.2f}" for episodes in recent)

    return {"ret": joined("return"), "succ": joined("success")}


class Trainer(MultiSeedTrainer):
    """Trains one skill (seed ``run.seed``) and publishes it as a new library version: the loop with one seed."""

    def __init__(self, task: str, sql: SQLConfig, run: TrainConfig, out: Path | str | None = None,
                 resume: str | Path | None = None, *, start: StartFrom = StartFrom(), env_kwargs: dict | None = None):
        """Train ``task`` into ``<out>/<name>/v<N+1>``; ``resume``: a saved skill to continue (name, name@vN or
        path); ``start``: what a fresh run starts from (``StartFrom``); ``env_kwargs``: ``envs.make`` options."""
        super().__init__(task, sql, run, [run.seed], out=out, resume=resume, start=start, env_kwargs=env_kwargs)

    @property
    def seed_run(self) -> SeedRun:
        return self.trainers[0]

    def __getattr__(self, name: str):
        """The one seed's state and phases (``agent``, ``buffer``, ``env``, ``path``, ``history``...)."""
        if name.startswith("__") or name == "trainers":
            raise AttributeError(name)
        return getattr(self.trainers[0], name)

    def step(self) -> dict | None:  # type: ignore[override]
        """One env step and its updates; ``{"return", "success"}`` when it ended an episode, else None."""
        return super().step()[0]

    def _stepped(self) -> list[dict | None]:
        return [self.step()]

    def train(self) -> TrainResult:  # type: ignore[override]
        return super().train()[0]
