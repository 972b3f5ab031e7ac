"""Tasks defined in user code: your own objective on a family (the built-in ones, or one made from any Gymnasium env
with ``envs.gym_family``), trained as a skill and composed with the shipped ones.

>>> import numpy as np, envs
>>> def below(next_obs, action):                       # a batched reward term: [B, 12], [B, 3] -> [B]
...     return -np.clip((next_obs[:, 2] - 0.06) / 0.04, 0.0, 1.0)
>>> stay_low = envs.task("stay_low", "fetch-arm", terms=[envs.Term("low", below, range=(-1.0, 0.0))],
...                      weights={"low": 1.0}, success=[envs.Check("stayed_low", lambda o, a: o[:, 2] < 0.1,
...                                                                 every_step=True)])

Put such definitions in a file or module and give it to any command with ``--tasks my_tasks.py`` (or
``envs.load_tasks("my_tasks.py")``); ``reach+stay_low`` then names the mean of the two. A task's definition
(``definition``: terms, ranges, weights, checks and a digest of the code that computes them) goes into the manifest
of every skill trained on it, so that a later change to the objective is caught when the skill is loaded.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
import sysconfig
import textwrap
import traceback
import types
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .core import Check, Family, Task, Term, TermFn
from .registry import TASKS, family, register_task

_LOADED: dict[str, str] = {}  # resolved file or module name -> the source name its tasks carry
_loading: list[str] = []  # the module being loaded, so that tasks it defines know where they come from


class TaskModuleError(ValueError):
    """A user's task module could not be imported (its own error is in the message)."""


def task(name: str, family_: str | Family, *, weights: Mapping[str, float], terms: Sequence[Term] = (),
         success: Sequence[str | Check] = (), register: bool = True) -> Task:
    """Declare a task: ``weights`` over reward terms of ``family_`` (a family's name or object) and the new ``terms``
    it brings, with ``success`` criteria (check names the family defines, or new ``Check``s). Registered by name
    (``envs.TASKS``) unless ``register`` is False. A term or check named like one the family already defines is
    refused, so the family's built-in objectives keep their meaning."""
    base = family(family_) if isinstance(family_, str) else family_
    checks = [c for c in success if isinstance(c, Check)]
    extended = base.extended(terms, checks)
    names = tuple(c.name if isinstance(c, Check) else c for c in success)
    source = _loading[-1] if _loading else _caller_module()
    new = Task(name, extended, dict(weights), names, source=source)
    return register_task(new) if register else new


def _caller_module() -> str:
    """The module that called ``task`` (two frames up), for tasks defined outside ``load_tasks``."""
    frame = inspect.currentframe()
    caller = frame.f_back.f_back if frame is not None and frame.f_back is not None else None
    return str(caller.f_globals.get("__name__", "")) if caller is not None else ""


@contextlib.contextmanager
def _source(name: str) -> Iterator[None]:
    _loading.append(name)
    try:
        yield
    finally:
        _loading.pop()


_TOOLKIT = tuple(str(Path(__file__).resolve().parent.parent / package) + "/" for package in ("envs", "skills", "compose"))


_STDLIB = tuple({sysconfig.get_paths()["stdlib"] + "/", sysconfig.get_paths()["platstdlib"] + "/"})


def _toolkit_file(filename: str) -> bool:
    """Whether a traceback frame's file is the toolkit's own code (its refusals), not a user's."""
    return str(Path(filename).resolve()).startswith(_TOOLKIT)


def load_tasks(where: str | Path) -> list[str]:
    """Import a user's task definitions: a Python file (``my_tasks.py``, a path) or an importable module name
    (``my_package.tasks``). The tasks it declares are registered; returns their names. A file is loaded once per
    process. If the module fails to import, a ``TaskModuleError`` shows its own error."""
    text = str(where)
    is_file = text.endswith(".py") or "/" in text
    key = str(Path(text).resolve()) if is_file else text
    if key in _LOADED:
        return [n for n, t in TASKS.items() if t.source == _LOADED[key]]
    if is_file and not Path(text).is_file():
        raise TaskModuleError(f"no task file {text!r} (give a path to a .py file, or an importable module name)")
    before = set(TASKS)
    with _source(text):
        try:
            if is_file:
                spec = importlib.util.spec_from_file_location(f"composable_skills_user_tasks_{len(_LOADED)}", key)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(text)
        except Exception as err:  # noqa: BLE001 - the user's module: show its own error, and its line
            frames = traceback.extract_tb(err.__traceback__)
            users = [f for f in frames if not f.filename.startswith("<") and not _toolkit_file(f.filename)
                     and not f.filename.startswith(_STDLIB)]  # importlib's own frames say nothing
            where = f" ({Path(users[-1].filename).name}, line {users[-1].lineno})" if users else ""
            if isinstance(err, ValueError | KeyError) and frames and _toolkit_file(frames[-1].filename):
                raise TaskModuleError(f"tasks in {text}: {err}{where}") from err  # the toolkit's refusal of a definition
            raise TaskModuleError(f"cannot import tasks from {text}: {type(err).__name__}: {err}{where}") from err
    if not any(t.source == text for t in TASKS.values()):
        raise TaskModuleError(f"{text} declares no tasks: declare them there with envs.task(...) or envs.gym_family(...)")
    _LOADED[key] = text
    return sorted(set(TASKS) - before)


# ---- what defines a task's reward, and its digest -------------------------------------------------------------
def code_digest(fn: TermFn) -> str:
    """A digest of the code that computes a term or check: its source with comments, docstrings, formatting and its
    own name normalised away (``ast.dump``); for code without source (a lambda inside a longer line), its bytecode,
    constants and names. What it reads from elsewhere is ``reads_digest``'s."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        code = getattr(fn, "__code__", None)
        raw = repr((code.co_code, code.co_consts, code.co_names)) if code is not None else repr(fn)
        return hashlib.sha256(raw.encode()).hexdigest()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.name = "_"  # what a function is called does not change what it computes
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()


def _names_read(code: types.CodeType) -> list[str]:
    """The global names a code object reads, nested code (comprehensions, inner functions) included."""
    names: set[str] = set()
    stack = [code]
    while stack:
        c = stack.pop()
        names.update(c.co_names)
        stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return sorted(names)


def _value_key(value: Any, seen: set[int]) -> Any:
    """What a value a term reads contributes to its digest: data by value (numbers, strings, arrays, containers),
    functions by their code and what they read in turn, modules and classes by name."""
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return repr(value)
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value).tobytes()
        return ["ndarray", str(value.dtype), list(value.shape), hashlib.sha256(data).hexdigest()]
    if isinstance(value, np.generic):
        return repr(value.item())
    if isinstance(value, (tuple, list, frozenset, set)):
        items = [_value_key(v, seen) for v in value]
        return [type(value).__name__, sorted(map(repr, items)) if isinstance(value, (set, frozenset)) else items]
    if isinstance(value, Mapping):
        return ["mapping", sorted((repr(k), repr(_value_key(v, seen))) for k, v in value.items())]
    if isinstance(value, types.FunctionType):
        if id(value) in seen:
            return ["function", value.__qualname__]
        seen.add(id(value))
        return ["function", code_digest(value), _reads(value, seen)]
    if isinstance(value, types.ModuleType):
        return ["module", value.__name__]
    return ["object", type(value).__module__, type(value).__qualname__]


def _reads(fn: Any, seen: set[int]) -> list:
    code = getattr(fn, "__code__", None)
    if code is None:
        return []
    module = getattr(fn, "__globals__", {})
    out = [[name, _value_key(module[name], seen)] for name in _names_read(code) if name in module]
    for var, cell in zip(code.co_freevars, getattr(fn, "__closure__", None) or (), strict=False):
        try:
            out.append([var, _value_key(cell.cell_contents, seen)])
        except ValueError:  # an empty cell
            out.append([var, "<empty>"])
    return out


def reads_digest(fn: TermFn) -> str:
    """A digest of what a term or check reads from outside its own code: the module constants and closure values it
    uses (``CEILING = 0.12``), and the code of the functions it calls from its module, recursively. Changing
    ``CEILING`` changes what the term computes, and so this digest."""
    return hashlib.sha256(json.dumps(_reads(fn, {id(fn)}), sort_keys=True, default=repr).encode()).hexdigest()


def definition(task_: Task) -> dict:
    """What defines ``task_``'s reward and success, as recorded in a skill's manifest (``task_definition``): its
    name, where it is defined, family, the weighted terms with their ranges and code digests, the success checks,
    and one ``digest`` of all of it."""
    fam = task_.family
    terms = {k: {"weight": float(w), "range": list(fam.term_ranges[k]), "code": code_digest(fam.terms[k]),
                 "reads": reads_digest(fam.terms[k])} for k, w in sorted(task_.weights.items())}
    checks = {k: {"every_step": k in fam.every_step, "code": code_digest(fam.success_checks[k]),
                  "reads": reads_digest(fam.success_checks[k])} for k in sorted(task_.success)}
    core = {"family": fam.name, "gamma": fam.gamma, "horizon": fam.horizon, "terms": terms, "success": checks}
    digest = hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()
    return {"name": task_.name, "source": task_.source, **core, "digest": digest}


def definition_changes(recorded: Mapping, now: Mapping) -> list[str]:
    """How a task's definition ``now`` differs from the one ``recorded`` in a manifest (empty: the same). What a
    manifest did not record (``reads``, before it was recorded) is not compared."""
    if recorded.get("digest") == now.get("digest"):
        return []

    def comparable(then_entry: Any, now_entry: Any) -> Any:
        if isinstance(then_entry, Mapping) and isinstance(now_entry, Mapping):
            return {k: v for k, v in now_entry.items() if k in then_entry}
        return now_entry

    changes = [f"{key}: {recorded.get(key)!r} then, {now.get(key)!r} now" for key in ("family", "gamma", "horizon")
               if recorded.get(key) != now.get(key)]
    for kind in ("terms", "success"):
        then, current = recorded.get(kind, {}), now.get(kind, {})
        for name in sorted(set(then) | set(current)):
            if then.get(name) != comparable(then.get(name), current.get(name)):
                changes.append(f"{kind[:-1] if kind == 'terms' else 'check'} {name!r}: "
                               + _entry_change(then.get(name), current.get(name)))
    return changes


ENTRY_CHANGES = {"code": "its code changed", "reads": "what it reads changed (module constants, closure values or "
                 "functions it calls)"}


def _entry_change(then: Any, now: Any) -> str:
    """One term's or check's change in words."""
    if not isinstance(then, Mapping) or not isinstance(now, Mapping):
        return f"{'absent' if then is None else 'present'} then, {'absent' if now is None else 'present'} now"
    return "; ".join(ENTRY_CHANGES.get(k, f"{k} {then.get(k)!r} then, {now.get(k)!r} now")
                     for k in then if then.get(k) != now.get(k))
