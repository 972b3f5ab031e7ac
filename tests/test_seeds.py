"""Many seeds in one process (``skills.training.loop``, ``skills.sql.many_seeds.StackedSoftQLearning``): the stacked update is
S single-seed updates, a stacked run is S single-seed runs, and nothing is lost on Ctrl-C or divergence."""

import copy
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_skills import TINY_RUN, TINY_SQL

from skills import train as train_cli
from skills.library import list_skills, load_manifest, read_skill
from skills.sql.learner import SoftQLearning, SQLConfig, TrainingDiverged
from skills.sql.many_seeds import StackedSoftQLearning, global_stream
from skills.training import MultiSeedTrainer, Trainer, rest_of_budget
from skills.training.buffer import ReplayBuffer

SEEDS = [0, 1, 2]


def relative_error(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x - y).abs().max() / y.abs().max().clamp_min(1e-12))


def fresh_agents(config: SQLConfig, seeds, obs_dim=5, act_dim=2):
    """Agents initialised as ``Trainer`` initialises them, and the stream each continues with."""
    agents, generators = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        agents.append(SoftQLearning(obs_dim, act_dim, config))
        generator = torch.Generator()
        generator.set_state(torch.get_rng_state())
        generators.append(generator)
    return agents, generators


def filled_buffer(seed: int, obs_dim=5, act_dim=2, n=100) -> ReplayBuffer:
    rng, buffer = np.random.default_rng(100 + seed), ReplayBuffer(obs_dim, act_dim, 200)
    for _ in range(n):
        buffer.add(rng.normal(size=obs_dim), rng.uniform(-1, 1, act_dim), rng.normal(), rng.normal(size=obs_dim),
                   rng.uniform() < 0.1)
    return buffer


@pytest.mark.parametrize("proposal, clip", [("mixture", False), ("uniform", False), ("mixture", True)])
def test_a_stacked_update_equals_single_seed_updates_on_the_same_batches_and_noise(proposal, clip):
    config = SQLConfig(alpha=0.5, hidden=(32, 32), batch_size=16, value_samples=8, particles=8,
                       value_proposal=proposal, target_update_interval=3,  # target copies and cache periods included
                       clip_target_value=clip)
    agents, generators = fresh_agents(config, SEEDS)
    for agent in agents:
        agent.value_range = (-0.05, 0.05)  # narrow: the projection acts on most targets
    singles = [copy.deepcopy(a) for a in agents]
    single_streams = []
    for g in generators:
        twin = torch.Generator()
        twin.set_state(g.get_state())
        single_streams.append(twin)
    stack = StackedSoftQLearning(agents, generators)
    buffers, rngs = [filled_buffer(s) for s in SEEDS], [np.random.default_rng(s) for s in SEEDS]
    for _ in range(7):
        batches = [b.sample(16, r) for b, r in zip(buffers, rngs, strict=False)]
        stacked = stack.update(batches)
        for i, single in enumerate(singles):
            with global_stream(single_streams[i]):  # the single update draws from the global stream
                alone = single.update(batches[i])
            for key in ("q_loss", "sampler_loss"):
                assert relative_error(stacked[key][i], alone[key]) <= 1e-5, (key, i)
    stack.copy_to_agents()
    for agent, single in zip(agents, singles, strict=False):
        for part in ("q", "q_target", "sampler"):
            ours, theirs = getattr(agent, part).state_dict(), getattr(single, part).state_dict()
            for key in theirs:
                assert relative_error(ours[key], theirs[key]) <= 1e-5, (part, key)
        for ours, theirs in ((agent.q_optimizer, single.q_optimizer), (agent.sampler_optimizer, single.sampler_optimizer)):
            a, b = ours.state_dict()["state"], theirs.state_dict()["state"]
            for j in b:
                for key in ("exp_avg", "exp_avg_sq"):
                    assert relative_error(a[j][key], b[j][key]) <= 1e-5
                assert float(a[j]["step"]) == float(b[j]["step"]) == 7
        assert agent.updates == single.updates == 7


def test_stacked_agents_must_match():
    agents, generators = fresh_agents(SQLConfig(hidden=(16,)), [0, 1])
    other, _ = fresh_agents(SQLConfig(hidden=(16,), alpha=2.0), [2])
    with pytest.raises(ValueError, match="one SQLConfig"):
        StackedSoftQLearning(agents + other, generators + generators[:1])
    agents[1].updates = 5
    with pytest.raises(ValueError, match=r"same number of updates; got \[0, 5\]"):
        StackedSoftQLearning(agents, generators)
    agents[1].updates, agents[1].value_range = 0, (-1.0, 1.0)
    with pytest.raises(ValueError, match="one value_range"):
        StackedSoftQLearning(agents, generators)


def test_a_clipped_stacked_run_trains_with_the_tasks_analytic_value_range(tmp_path):
    """The trainer hands each seed the task's (V_min, V_max) (``soft_value_bounds``): the projection needs it."""
    import envs
    from skills.evaluation.diagnostics import soft_value_bounds
    from skills.training.defaults import sql_config

    sql = replace(TINY_SQL, clip_target_value=True)
    trainer = MultiSeedTrainer("multigoal", sql, TINY_RUN, [0, 1], out=tmp_path)
    expected = soft_value_bounds(envs.get_task("multigoal").reward_range, sql.alpha, 2, sql.gamma)
    assert all(t.agent.value_range == expected for t in trainer.trainers)
    results = trainer.train()
    assert [r.env_steps for r in results] == [300, 300] and all(np.isfinite(r.history[-1]["q_loss"]) for r in results)
    assert sql_config("avoid", "fetch-arm").clip_target_value  # the task whose values sit at the ceiling


@pytest.fixture(scope="module")
def stacked_and_single(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    stacked = MultiSeedTrainer("multigoal", TINY_SQL, TINY_RUN, [0, 1], out=root / "stacked").train()
    single = [Trainer("multigoal", TINY_SQL, replace(TINY_RUN, seed=s), out=root / "single").train() for s in (0, 1)]
    return stacked, single


def test_a_stacked_run_is_the_single_seed_runs(stacked_and_single):
    """Same weights (to float rounding after 200 updates), same evaluations, same files: a seed trained
    stacked is the seed trained alone."""
    stacked, single = stacked_and_single
    for seed, (ours, theirs) in enumerate(zip(stacked, single, strict=False)):
        a, info_a, _ = read_skill(ours.path)
        manifest_a = info_a.to_json()
        b, info_b, _ = read_skill(theirs.path)
        manifest_b = info_b.to_json()
        assert manifest_a["seed"] == manifest_b["seed"] == seed and manifest_a["status"] == "complete"
        for part in ("q", "sampler"):
            for key, value in getattr(b, part).state_dict().items():
                assert relative_error(getattr(a, part).state_dict()[key], value) <= 1e-4, (seed, part, key)
        assert np.allclose([h["return_mean"] for h in manifest_a["history"]],
                           [h["return_mean"] for h in manifest_b["history"]], rtol=1e-4)
        assert manifest_a["metrics"]["deterministic"]["success_rate"] == manifest_b["metrics"]["deterministic"]["success_rate"]
        assert set(manifest_a) == set(manifest_b)  # nothing in the format tells how a seed was trained
        assert {p.name for p in ours.path.iterdir()} == {p.name for p in theirs.path.iterdir()}
        tensors = [set(load_file(str(r.path / "weights.safetensors"))) for r in (ours, theirs)]
        assert tensors[0] == tensors[1]
    assert stacked[0].path.name == "v1" and stacked[1].path.name == "v2"


def test_a_seed_is_reproduced_bit_for_bit_by_the_stack_its_manifest_records(stacked_and_single, tmp_path):
    """Stacked and alone agree only to float rounding, which long runs amplify (docs/skills.md): so each manifest
    names the seeds, in order, whose updates were stacked with its own, and that stack trains the seed again exactly."""
    stacked, single = stacked_and_single
    again = MultiSeedTrainer("multigoal", TINY_SQL, TINY_RUN, [0, 1], out=tmp_path).train()
    for ours, theirs in zip(stacked, again, strict=True):
        first, second = load_file(ours.path / "weights.safetensors"), load_file(theirs.path / "weights.safetensors")
        assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
        assert load_manifest(ours.path).record["training"]["trained_together"] == [0, 1]
    assert [load_manifest(r.path).record["training"]["trained_together"] for r in single] == [[0], [1]]
    from skills.__main__ import plain_lines  # the library listing shows each version's seed and stack

    assert [line.split()[-2:] for line in plain_lines(list_skills(tmp_path))[1:-1]] == [["0", "0,1"], ["1", "0,1"]]


def test_ctrl_c_keeps_every_seed_checkpoint_and_resume_finishes_them(tmp_path, monkeypatch):
    real_update, calls = StackedSoftQLearning.update, []

    def interrupted(self, batches):
        calls.append(1)
        if len(calls) == 80:  # update 80 runs during step 180, after the checkpoint of step 150
            raise KeyboardInterrupt
        return real_update(self, batches)

    monkeypatch.setattr(StackedSoftQLearning, "update", interrupted)
    trainer = MultiSeedTrainer("multigoal", TINY_SQL, TINY_RUN, [3, 4], out=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    for seed, path in zip((3, 4), trainer.paths, strict=False):
        manifest = json.loads((path / "manifest.json").read_text())
        assert (manifest["status"], manifest["seed"], manifest["env_steps"]) == ("training", seed, 150)
        assert load_manifest(path).steps_left == 150
    monkeypatch.setattr(StackedSoftQLearning, "update", real_update)
    # the CLI's default without --steps: the rest of the interrupted budget, not run.steps more
    rest = rest_of_budget(replace(TINY_RUN, steps=1000), trainer.paths, tmp_path)
    assert rest.steps == 150
    assert train_cli.main(["multigoal", "--seeds", "3,4", "--resume", "--out", str(tmp_path), "--no-progress",
                           "--no-convergence", "--eval-episodes", "2", "--final-eval-episodes", "5"]) == 0
    for seed, path in zip((3, 4), trainer.paths, strict=False):
        resumed = path.parent / f"v{int(path.name[1:]) + 2}"  # v3, v4: the seeds' new versions
        manifest = json.loads((resumed / "manifest.json").read_text())
        assert (manifest["status"], manifest["seed"], manifest["env_steps"]) == ("complete", seed, 300)
        assert manifest["resumed_from"] == str(trainer.paths[seed - 3])
        assert manifest["training"]["until_env_steps"] == 300 and load_manifest(resumed).steps_left == 0
        assert rest_of_budget(TINY_RUN, [resumed], tmp_path) == TINY_RUN  # a finished skill trains a budget more
    # what the budget left reads from: a resumed run's own target; a manifest from before targets were recorded
    interrupted = load_manifest(trainer.paths[0])
    assert interrupted.with_fields(training={"steps": 100, "until_env_steps": 400}).steps_left == 250
    assert interrupted.with_fields(resumed_from="multigoal@v1", training={"steps": 100}).steps_left == 0
    assert interrupted.with_fields(training={"steps": 100}).steps_left == 0  # 150 steps done of 100: nothing left
    assert interrupted.with_fields(status="diverged").steps_left == 0


def test_a_diverged_seed_stops_all_and_every_seed_keeps_its_checkpoint(tmp_path, monkeypatch):
    real_loss = StackedSoftQLearning.q_loss_and_gradients

    def poisoned(self, batch, next_values):
        loss, grads = real_loss(self, batch, next_values)
        if self.updates >= 100:  # after the checkpoint of step 150 (updates start at step 101)
            loss = loss.clone()
            loss[1] = float("nan")
        return loss, grads

    monkeypatch.setattr(StackedSoftQLearning, "q_loss_and_gradients", poisoned)
    trainer = MultiSeedTrainer("multigoal", TINY_SQL, TINY_RUN, [0, 1], out=tmp_path)
    with pytest.raises(TrainingDiverged, match=r"member\(s\) \[1\].*seed 0: .*v1 \(150 steps\); seed 1: .*v2 \(150 steps\)"):
        trainer.train()
    statuses = [json.loads((p / "manifest.json").read_text())["status"] for p in trainer.paths]
    assert statuses == ["training", "diverged"]


def test_bad_seed_lists_and_memory_get_clear_errors(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        train_cli.main(["multigoal", "--seeds", "0,2,2", "--out", str(tmp_path)])
    assert "seed(s) [2] given more than once" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_cli.main(["multigoal", "--seeds", "2", "--resume", "multigoal", "--out", str(tmp_path)])
    assert "give --resume alone" in capsys.readouterr().err
    assert train_cli.main(["multigoal", "--seeds", "0,5", "--resume", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "no saved version of 'multigoal' with seed 0" in capsys.readouterr().err
    monkeypatch.setattr("skills.training.loop.available_memory", lambda: 64 << 20)
    with pytest.raises(ValueError, match=r"2 seeds need about .* GiB .* available; train at most"):
        MultiSeedTrainer("multigoal", TINY_SQL, TINY_RUN, [0, 1], out=tmp_path)
    assert not list(tmp_path.glob("multigoal/v*"))  # the claimed versions were given back


def test_cli_trains_seeds_into_versions(tmp_path, capsys):
    code = train_cli.main(["west", "--seeds", "0-1", "--steps", "300", "--out", str(tmp_path), "--no-progress",
                           "--no-convergence", "--eval-interval", "300", "--eval-episodes", "2", "--final-eval-episodes", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "seed 0: " in out and "seed 1: " in out
    seeds = [json.loads((tmp_path / "west" / v / "manifest.json").read_text())["seed"] for v in ("v1", "v2")]
    assert seeds == [0, 1]


@pytest.mark.learning
def test_every_stacked_seed_learns_reach(tmp_path):
    """The learning bar of tests/test_learning.py (reach in 5k steps: success >= 0.6 over 20 sampled episodes), for
    each of two seeds trained stacked."""
    import envs
    from skills import load
    from skills.evaluation import run_episodes
    from skills.training.defaults import sql_config, train_config

    run = replace(train_config("reach", steps=5000), eval_interval=5000, eval_episodes=10, final_eval_episodes=20,
                  progress=False, convergence=False)
    results = MultiSeedTrainer("reach", sql_config("reach", "fetch-arm"), run, [0, 1], out=tmp_path).train()
    env = envs.make("reach")
    for result in results:
        skill = load(result.path)
        learned = run_episodes(env, skill.act, 20, seed=10_000)
        assert learned["success_rate"] >= 0.6, (result.path, learned)


def test_the_shared_stream_draws_for_all_seeds_at_once_and_is_reproducible():
    """Off the CPU one stream serves the stack (S times fewer kernel launches per draw): still reproducible for
    a seed list, and the seeds still get different numbers."""
    config = SQLConfig(alpha=0.5, hidden=(32, 32), batch_size=16, value_samples=8, particles=8, value_proposal="mixture")

    def run() -> dict:
        agents, generators = fresh_agents(config, [0, 0])  # equal initial weights: any difference is the noise
        stack = StackedSoftQLearning(agents, generators, per_seed_streams=False)
        buffer = filled_buffer(0)
        rng = np.random.default_rng(0)
        for _ in range(3):
            batch = buffer.sample(16, rng)
            losses = stack.update([batch, batch])
        return losses | {"act": torch.as_tensor(stack.act(np.zeros((2, 5)), [0, 1]))}

    first, second = run(), run()
    for key in first:
        assert torch.equal(first[key], second[key])
    assert first["sampler_loss"][0] != first["sampler_loss"][1] and not torch.equal(first["act"][0], first["act"][1])


def test_ctrl_c_on_the_command_line_says_where_each_seed_is(tmp_path, monkeypatch, capsys):
    real_step = MultiSeedTrainer.step

    def interrupted(self):
        if self.trainers[0].steps_done == 200:  # after the checkpoints of step 150
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(MultiSeedTrainer, "step", interrupted)
    code = train_cli.main(["west", "--seeds", "0,1", "--steps", "300", "--eval-interval", "150", "--eval-episodes", "2",
                           "--out", str(tmp_path), "--no-progress", "--no-convergence"])
    err = capsys.readouterr().err
    assert code == 130
    assert "each seed's last checkpoint is in" in err and "west/v1" in err and "west/v2" in err and "--resume" in err
