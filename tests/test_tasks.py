"""Tasks defined in user code (issue 27): declared on a family or on any Gymnasium env, trained from the command
line, recorded in the manifest with a digest, refused when their definition changes, composed with shipped skills.
Every refusal the task API promises, one clear line each, with nothing saved."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import compose
import envs
import skills
from compose import run as compose_run
from skills import evaluate as evaluate_cli
from skills import train as train_cli
from skills.sql.learner import SQLConfig
from skills.training import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parent.parent
TINY_SQL = SQLConfig(alpha=0.05, gamma=0.95, hidden=(16, 16), warmup_steps=50, batch_size=16, particles=4,
                     value_samples=4, obs_scale=5.0)
TINY_RUN = TrainConfig(steps=120, eval_interval=120, eval_episodes=1, final_eval_episodes=1, progress=False,
                       overlap_env_step=False, convergence=False, value_check_interval=0)
SMALL = compose_run.BuildConfig(sampler=compose.sampling.SamplerConfig(updates=20),
                                bound=compose.bound.BoundConfig(updates=10), progress=False)
TINY_CLI = ["--steps", "120", "--eval-episodes", "1", "--final-eval-episodes", "1", "--no-progress", "--no-overlap",
            "--no-convergence"]

@pytest.fixture
def user_tasks():
    """Tasks a test registers are removed afterwards (the registry is process-wide)."""
    before = set(envs.TASKS)
    yield
    for name in set(envs.TASKS) - before:
        if envs.TASKS[name].user_defined:
            envs.unregister_task(name)


def declare(name: str, fn, term_range=(-1.0, 0.0), family="fetch-arm", term="extra") -> envs.Task:
    return envs.task(name, family, weights={term: 1.0}, terms=[envs.Term(term, fn, term_range)])


# ---- the API ---------------------------------------------------------------------------------------------------
def test_a_user_task_extends_its_family_and_combines_with_a_built_in_one(user_tasks):
    task = declare("t-low", lambda o, a: -np.clip(o[:, 2], 0.0, 1.0))
    assert task.family.name == "fetch-arm" and set(task.family.terms) == {"reach", "avoid", "extra"}
    assert task.user_defined and not envs.get_task("reach").user_defined
    combined = envs.get_task("reach+t-low")  # the mean of registered tasks, resolved and registered on first use
    assert dict(combined.weights) == {"reach": 0.5, "extra": 0.5} and "reach+t-low" in envs.TASKS
    env = envs.make("reach+t-low")
    obs, _ = env.reset(seed=0)
    next_obs, reward, *_, info = env.step(np.ones(3, np.float32))
    expected = 0.5 * combined.family.terms["reach"](next_obs[None], np.ones((1, 3)))[0] - 0.5 * np.clip(next_obs[2], 0, 1)
    assert reward == pytest.approx(expected) and set(info["reward_terms"]) == {"reach", "avoid", "extra"}
    env.close()


@pytest.mark.parametrize("fn, message", [
    (lambda o, a: np.zeros((len(o), 2)), r"returned shape \(1, 2\).*shape \(1,\)"),
    (lambda o, a: np.full(len(o), np.nan), r"'bad' returned a non-finite value at row 0 \(next_obs \["),
    (lambda o, a: np.full(len(o), np.inf), "non-finite"),
    (lambda o, a: np.full(len(o), 3.0), r"returned 3, outside its declared range \(-1.0, 0.0\) at row 0"),
    (lambda o, a: o[:, 2] < 5.0, r"'bad' returned 1, outside its declared range \(-1.0, 0.0\)"),  # a bool is 0 or 1
    (lambda o, a: np.zeros(len(o), complex), "'bad' returned complex values"),
    (lambda o, a: -np.abs(o[:, 40]), r"'bad' raised IndexError: index 40 .*given next_obs \[1, 12\] and action "
                                     r"\[1, 3\]; .*test_tasks.py, line"),
])
def test_a_broken_term_is_refused_saying_where(user_tasks, fn, message):
    declare("t-bad", fn, term="bad")
    env = envs.make("t-bad")
    env.reset(seed=0)
    with pytest.raises(envs.TermError, match=message):
        env.step(np.zeros(3, np.float32))
    env.close()


def test_a_success_check_must_return_bools(user_tasks):
    envs.task("t-floatcheck", "fetch-arm", weights={"reach": 1.0}, success=[envs.Check("high", lambda o, a: o[:, 2])])
    env = envs.make("t-floatcheck")
    env.reset(seed=0)
    with pytest.raises(envs.TermError, match="success check 'high' returned float32 values; a check returns one bool"):
        env.step(np.zeros(3, np.float32))
    env.close()


@pytest.mark.parametrize("weights, message", [
    ({"reach": float("nan")}, "the weight of term 'reach' must be a finite number, got nan"),
    ({"reach": float("inf")}, "must be a finite number, got inf"),
    ({"reach": "1"}, "must be a finite number, got '1'"),
    ({"reach": None}, "must be a finite number, got None"),
    ({"reach": True}, "must be a finite number, got True"),
    ({}, "no weights; a task weighs at least one reward term of family 'fetch-arm' \\(its terms: avoid, reach\\)"),
])
def test_task_weights_are_finite_numbers_and_at_least_one(user_tasks, weights, message):
    with pytest.raises(ValueError, match=message):
        envs.task("t-weights", "fetch-arm", weights=weights)
    assert "t-weights" not in envs.TASKS


@pytest.mark.parametrize("body, message", [
    ("CONF = {'ceiling': 0.1}\nc = CONF['ceil']\n", r"cannot import tasks from .*: KeyError: 'ceil' \(bad_tasks.py, line 2\)"),
    ("import numpy as np\nnp.zeros(3).reshape(2, 2)\n", r"cannot import tasks from .*: ValueError: cannot reshape.*"
                                                          r"\(bad_tasks.py, line 2\)"),
    ("import envs\nenvs.task('t-nofam', 'no-such-family', weights={'reach': 1.0})\n",
     r"tasks in .*: unknown task family 'no-such-family'.* \(bad_tasks.py, line 2\)"),
])
def test_a_users_own_key_or_value_error_keeps_its_type_and_line(user_tasks, tmp_path, body, message):
    """The toolkit's own refusals read "tasks in FILE: ..."; a ``KeyError``/``ValueError`` the user's code raises keeps
    its type; both say the user's line."""
    bad = tmp_path / "bad_tasks.py"
    bad.write_text(body)
    with pytest.raises(envs.TaskModuleError, match=message):
        envs.load_tasks(bad)


def test_a_misspelled_training_setting_of_a_users_family_is_refused_naming_the_valid_ones(user_tasks):
    from skills.training.defaults import sql_config
    family = replace(envs.family("fetch-arm"), training={"alpah": 0.1})
    task = envs.Task("t-training", family, {"reach": 1.0}, (), source="tests")
    envs.registry.register_task(task)
    with pytest.raises(envs.UnknownNameError, match="unknown training setting 'alpah' in the settings family 'fetch-arm' "
                                                    r"suggests \(its training=\). Did you mean 'alpha'?.*steps"):
        sql_config("t-training", "no-defaults")


def test_a_broken_term_stops_training_before_anything_is_saved(user_tasks, tmp_path, capsys):
    declare("t-nan", lambda o, a: np.where(o[:, 0] > 0.02, np.nan, 0.0), term="sometimes_nan")
    code = train_cli.main(["t-nan", "--out", str(tmp_path), *TINY_CLI])
    err = capsys.readouterr().err
    assert code == 2 and "sometimes_nan" in err and "non-finite" in err and err.count("\n") == 1
    assert not any((tmp_path / "t-nan").glob("v*")), "nothing may be saved"


@pytest.mark.parametrize("make, message", [
    (lambda: envs.task("t-x", "no-such-family", weights={"reach": 1.0}),
     "unknown task family 'no-such-family'.*Valid task families: fetch-arm"),
    (lambda: declare("t-collide", lambda o, a: -o[:, 0], term="reach"),
     "reward term 'reach' collides with a term family 'fetch-arm' already defines"),
    (lambda: envs.task("t-check", "fetch-arm", weights={"reach": 1.0}, success=[envs.Check("at_target", np.isfinite)]),
     "success check 'at_target' collides"),
    (lambda: envs.task("reach", "fetch-arm", weights={"reach": 1.0}), "task name 'reach' is taken by a built-in task"),
    (lambda: envs.task("t-unknown-term", "fetch-arm", weights={"nope": 1.0}), "no such reward terms \\['nope'\\]"),
    (lambda: envs.Term("t", lambda o, a: o, (0.0, -1.0)), "min <= max"),
    (lambda: envs.get_task("reach+push-x"), "cannot combine tasks of different families: 'reach' is 'fetch-arm', "
                                            "'push-x' is 'pusher'"),
])
def test_the_task_api_refuses_what_would_make_composition_meaningless(user_tasks, make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_user_module_that_fails_to_import_shows_its_own_error(tmp_path):
    broken = tmp_path / "broken_tasks.py"
    broken.write_text("import numpy\nraise RuntimeError('my objective is not ready')\n")
    with pytest.raises(envs.TaskModuleError, match=r"RuntimeError: my objective is not ready \(broken_tasks.py, line 2"):
        envs.load_tasks(broken)
    with pytest.raises(envs.TaskModuleError, match="no task file"):
        envs.load_tasks(tmp_path / "missing.py")
    with pytest.raises(envs.TaskModuleError, match=r"ModuleNotFoundError: No module named 'no_such_package'$"):
        envs.load_tasks("no_such_package.tasks")  # no line of importlib's own as its "location"
    (tmp_path / "empty_tasks.py").write_text("import numpy\n")
    with pytest.raises(envs.TaskModuleError, match="empty_tasks.py declares no tasks: declare them there with envs.task"):
        envs.load_tasks(tmp_path / "empty_tasks.py")


def test_a_cli_reports_a_broken_module_in_one_line(tmp_path, capsys):
    broken = tmp_path / "typo_tasks.py"
    broken.write_text("import envs\nenvs.task('t-typo', 'fetch-arm', weights={'reach': 1.0}, succes=[])\n")
    assert train_cli.main(["t-typo", "--tasks", str(broken), *TINY_CLI]) == 2
    err = capsys.readouterr().err
    assert "cannot import tasks from" in err and "TypeError" in err and "succes" in err and err.count("\n") == 1


def test_envs_whose_spaces_are_not_boxes_are_refused(user_tasks):
    with pytest.raises(ValueError, match="its action space is Discrete"):
        envs.gym_family("t-cartpole", "CartPole-v1", terms=[envs.Term("up", lambda o, a: -np.abs(o[:, 2]), (-1, 0))])
    with pytest.raises(ValueError, match="its observation space is Discrete"):
        envs.gym_family("t-lake", lambda **kw: gym.make("FrozenLake-v1", **kw),
                        terms=[envs.Term("t", lambda o, a: o[:, 0], (0, 1))])


# ---- the manifest remembers where a task came from -------------------------------------------------------------
def test_the_manifest_records_the_definition_and_a_changed_objective_is_refused(user_tasks, tmp_path):
    declare("t-digest", lambda o, a: -np.clip(o[:, 2], 0.0, 1.0), term="height")
    path = Trainer("t-digest", TINY_SQL, TINY_RUN, out=tmp_path).train().path
    recorded = skills.load(path).info.task_definition
    assert recorded["terms"]["height"]["range"] == [-1.0, 0.0] and len(recorded["digest"]) == 64
    assert recorded == envs.definition(envs.get_task("t-digest")) | {"source": recorded["source"]}
    envs.unregister_task("t-digest")
    declare("t-digest", lambda o, a: -np.clip(o[:, 2], 0.0, 0.5), term="height", term_range=(-0.5, 0.0))
    with pytest.raises(skills.TaskChangedError, match=r"task 't-digest' has changed.*term 'height'.*\[-1.0, 0.0\].*"
                                                      r"\[-0.5, 0.0\].*allow_changed_task=True"):
        skills.load(path)
    assert skills.load(path, allow_changed_task=True).task == "t-digest"


def test_the_code_digest_ignores_comments_and_docstrings_and_sees_the_arithmetic():
    from envs.tasks import code_digest

    def a(o, x):
        """one"""
        return -o[:, 0]  # a comment

    def b(o, x):
        """another docstring"""
        return -o[:, 0]

    def c(o, x):
        return -2 * o[:, 0]

    assert code_digest(a) == code_digest(b) != code_digest(c)


def test_the_reads_digest_sees_the_constants_and_helpers_a_term_uses(tmp_path):
    """Changing ``CEILING = 0.12`` in a task file changes what the term computes: the definition records it, and a
    manifest from before ``reads`` was recorded compares only what it recorded."""
    from envs.tasks import definition_changes, reads_digest

    def load(ceiling: float, helper_scale: float) -> dict:
        namespace: dict = {"np": np}
        exec(f"CEILING = {ceiling}\n"
             f"def scale(x):\n    return {helper_scale} * x\n"
             "def term(o, a):\n    return -scale(np.clip(o[:, 2] - CEILING, 0.0, 1.0))\n", namespace)
        return namespace

    base, moved, rescaled = load(0.12, 1.0), load(0.15, 1.0), load(0.12, 2.0)
    assert reads_digest(base["term"]) == reads_digest(load(0.12, 1.0)["term"])
    assert reads_digest(base["term"]) != reads_digest(moved["term"]) != reads_digest(rescaled["term"])
    then = {"digest": "x", "terms": {"low": {"weight": 1.0, "code": "c", "reads": reads_digest(base["term"])}}}
    now = {"digest": "y", "terms": {"low": {"weight": 1.0, "code": "c", "reads": reads_digest(moved["term"])}}}
    assert definition_changes(then, now) == ["term 'low': what it reads changed (module constants, closure values or "
                                             "functions it calls)"]
    older = {"digest": "x", "terms": {"low": {"weight": 1.0, "code": "c"}}}  # recorded before 'reads' existed
    assert definition_changes(older, now) == []


def test_loading_a_skill_never_imports_the_users_module(tmp_path):
    """A skill trained on a user's task loads in a fresh process without its module; composing it (which needs its
    reward) names the module to load."""
    marker = tmp_path / "imported"
    module = tmp_path / "marked_tasks.py"
    module.write_text(textwrap.dedent(f"""
        from pathlib import Path
        import numpy as np
        import envs
        Path({str(marker)!r}).write_text("imported")
        envs.task("t-marked", "fetch-arm", weights={{"m": 1.0}},
                  terms=[envs.Term("m", lambda o, a: -np.abs(o[:, 0]), (-1e3, 0))])
    """))
    code = textwrap.dedent(f"""
        import envs, skills
        from skills.training import Trainer
        from tests.test_tasks import TINY_RUN, TINY_SQL
        envs.load_tasks({str(module)!r})
        print(Trainer("t-marked", TINY_SQL, TINY_RUN, out={str(tmp_path / 'lib')!r}).train().path)
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    marker.unlink()
    shutil.copytree(ROOT / "trained" / "reach", tmp_path / "lib" / "reach")
    check = textwrap.dedent(f"""
        import skills, compose
        s = skills.load("t-marked", {str(tmp_path / 'lib')!r})
        print(s.task, s.info.task_definition["source"])
        try:
            compose.load("t-marked+reach", library={str(tmp_path / 'lib')!r})
        except skills.SkillError as err:
            print("refused:", err)
    """)
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert not marker.exists(), "loading a skill imported the user's module"
    assert f"t-marked {module}" in done.stdout
    assert f"refused: skill 't-marked' v1: its task 't-marked' is not registered; it was defined in {module}" in done.stdout


def test_a_joint_skill_composes_in_parentheses_and_r_w_weighs_its_own_terms(user_tasks):
    """``(reach+avoid)+stay_low`` composes the jointly trained ``reach+avoid`` with ``stay_low``: ``r_w`` is half of
    each part's reward (``reach`` and ``avoid`` a quarter each), not the mean of the three tasks the names join to."""
    declare("stay_low", lambda o, a: -np.clip(o[:, 2], 0.0, 1.0), term="low")  # as examples/my_tasks.py, in-test
    c = compose.load("(reach+avoid)+stay_low", library=str(ROOT / "trained"), allow_changed_task=True)
    assert c.labels == ["reach+avoid", "stay_low"] and [p.info.name for p in c.parts] == ["reach+avoid", "stay_low"]
    assert c.task.name == "0.5*(reach+avoid)+0.5*stay_low" and c.task.name not in envs.TASKS
    assert dict(c.task.weights) == pytest.approx({"reach": 0.25, "avoid": 0.25, "low": 0.5})
    data = np.load(ROOT / "trained" / "reach" / "v1" / "transitions.npz")
    next_obs, action = data["next_obs"][:64], data["action"][:64]
    expected = sum(0.5 * envs.get_task(t).reward(next_obs, action) for t in ("reach+avoid", "stay_low"))
    np.testing.assert_allclose(c.task.reward(next_obs, action), expected, rtol=1e-6, atol=1e-7)


# ---- the round trip, from the command line ---------------------------------------------------------------------
def test_define_train_save_reload_in_a_fresh_process_and_compose(tmp_path):
    """A user file, trained by the CLI (small budget), composed with the shipped ``reach`` by ``compose.run`` and
    saved; reopened in a fresh process, with the module given again."""
    library = tmp_path / "lib"
    shutil.copytree(ROOT / "trained" / "reach", library / "reach")
    tasks = ROOT / "examples" / "my_tasks.py"
    assert train_cli.main(["stay_low", "--tasks", str(tasks), "--out", str(library), *TINY_CLI]) == 0
    manifest = json.loads((library / "stay_low" / "v1" / "manifest.json").read_text())
    assert manifest["task_definition"]["source"] == str(tasks) and manifest["family"] == "fetch-arm"
    out = tmp_path / "run"
    compose_run.run("reach+stay_low", evaluation=compose_run.EvaluationConfig(episodes=2, mc=None), build_config=SMALL,
                    sources=compose_run.Sources(library=str(library), out=out))
    report = json.loads((out / "report.json").read_text())
    assert report["composed"]["env_steps_used"] == 0 and set(report["constituents"]) == {"reach", "stay_low"}
    assert "low" in report["composed"]["term_returns"]
    code = textwrap.dedent(f"""
        import compose, envs
        envs.load_tasks({str(tasks)!r})
        from compose.bound import BoundConfig
        from compose.sampling import SamplerConfig
        c = compose.load("reach+stay_low", library={str(library)!r})
        c.build(progress=False, sampler_cfg=SamplerConfig(updates=20), bound_cfg=BoundConfig(updates=10))
        path = c.save(progress=False)
        again = compose.load("reach+stay_low.composed", library={str(library)!r})
        import numpy as np
        obs = np.zeros((2, 12), np.float32)
        print(path.name, again.act(obs).shape, again.task.name)
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "v1 (2, 3) reach+stay_low" in done.stdout


def test_evaluating_a_user_skill_without_its_module_says_which_to_load(tmp_path, capsys):
    library = tmp_path / "lib"
    tasks = ROOT / "examples" / "my_tasks.py"
    code = textwrap.dedent(f"""
        from skills import train
        raise SystemExit(train.main(["stay_low", "--tasks", {str(tasks)!r}, "--out", {str(library)!r},
                                     *{TINY_CLI!r}]))
    """)
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=600).returncode == 0
    probe = textwrap.dedent(f"""
        from skills import evaluate
        raise SystemExit(evaluate.main(["stay_low", "--library", {str(library)!r}, "--episodes", "1"]))
    """)
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2
    assert f"its task 'stay_low' is not registered; it was defined in {tasks}: load it with --tasks {tasks}" in done.stderr
    for command in (["skills.train", "stay_low", "--out", str(library), "--steps", "10"],  # training it again, and a study
                    ["compose.study", "reach+stay_low", "--library", str(library), "--seeds", "1", "--out",
                     str(tmp_path / "study")]):
        done = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 2, done.stderr
        assert "unknown task 'stay_low'" in done.stderr and f"load it with --tasks {tasks}" in done.stderr, done.stderr


def test_an_unknown_part_of_a_combined_name_is_named():
    with pytest.raises(envs.UnknownNameError, match="unknown task 'avod' in 'reach\\+avod'. Did you mean 'avoid'?"):
        envs.get_task("reach+avod")
    err = envs.UnknownNameError("task", "x", ["a"], "here").hinted(" A hint.")
    again = pickle.loads(pickle.dumps(err))  # raised in a study's worker, it reaches the parent whole
    assert type(again) is envs.UnknownNameError and str(again) == str(err) and again.valid == ["a"]


def test_the_hint_to_train_a_joint_reference_runs_as_printed(user_tasks):
    """``compose.run``'s note when no joint skill exists names ``--tasks`` for every user file the task needs (without
    it, ``skills.train`` does not know the task) and the library the run read."""
    from compose.run.evaluation import train_command

    tasks = ROOT / "examples" / "my_tasks.py"
    envs.load_tasks(str(tasks))
    assert train_command("reach+avoid", None) == "python -m skills.train reach+avoid"
    assert (train_command("reach+avoid+stay_low", "/tmp/my lib")
            == f"python -m skills.train reach+avoid+stay_low --tasks {tasks} --out '/tmp/my lib'")

# ---- a family from any Gymnasium env ---------------------------------------------------------------------------
def test_a_gymnasium_env_becomes_a_family_whose_skills_train_and_compose(user_tasks, tmp_path):
    family = envs.gym_family("t-pendulum", "Pendulum-v1", gamma=0.9, terms=[
        envs.Term("upright", lambda o, a: o[:, 0] - 1.0, (-2.0, 0.0)),
        envs.Term("still", lambda o, a: -np.abs(o[:, 2]) / 8.0, (-1.0, 0.0))], training={"alpha": 0.1, "steps": 120})
    assert family.horizon == 200
    envs.task("t-up", family, weights={"upright": 1.0})
    envs.task("t-still", family, weights={"still": 1.0})
    env = envs.make("t-up")
    obs, _ = env.reset(seed=0)
    assert env.action_space.shape == (1,) and env.observation_space.dtype == np.float32
    _, reward, *_ = env.step(np.array([1.0], np.float32))  # the toolkit's +1 is Pendulum's +2 N m
    assert env.unwrapped.inner.unwrapped.last_u == pytest.approx(2.0) and -2.0 <= reward <= 0.0
    env.close()
    run = replace(TINY_RUN, steps=120)
    for name in ("t-up", "t-still"):
        Trainer(name, replace(TINY_SQL, alpha=0.1, gamma=0.9, obs_scale=1.0), run, out=tmp_path).train()
    composition = compose.load("t-up+t-still", library=str(tmp_path))
    composition.build(progress=False, sampler_cfg=SMALL.sampler, bound_cfg=SMALL.bound)
    assert composition.task.family.name == "t-pendulum"
    assert composition.act(np.zeros((4, 3), np.float32)).shape == (4, 1)


def test_every_cli_takes_tasks():
    for module in ("skills.train", "skills.evaluate", "skills.polish", "compose.run", "compose.study", "compose.adapt",
                   "compose.save", "envs"):
        done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0 and "--tasks" in done.stdout, module


def test_the_evaluation_cli_refuses_a_changed_task_unless_told(user_tasks, tmp_path, capsys):
    declare("t-eval", lambda o, a: -np.clip(o[:, 2], 0.0, 1.0), term="up")
    Trainer("t-eval", TINY_SQL, TINY_RUN, out=tmp_path).train()
    envs.unregister_task("t-eval")
    declare("t-eval", lambda o, a: -np.clip(o[:, 1], 0.0, 1.0), term="up")
    assert evaluate_cli.main(["t-eval", "--library", str(tmp_path), "--episodes", "1"]) == 2
    assert "has changed since this skill was trained" in capsys.readouterr().err
    assert evaluate_cli.main(["t-eval", "--library", str(tmp_path), "--episodes", "1", "--allow-changed-task"]) == 0
