"""The layout keeps its promises (docs/architecture.md): no import cycle inside a package, small functions,
and every name the README and docs use still imports.

These read the source with ``ast`` (nothing is imported to find imports), so a function-local import counts
like a top-level one: a cycle hidden inside a function is still a cycle.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("envs", "skills", "compose", "bench")
MAX_LINES = 60  # a function's body, decorators and signature included
MAX_PARAMETERS = 8  # self and cls not counted
# data templates: MJCF text built with f-strings, where the length is the model, not logic
TEMPLATES = {("envs/pusher.py", "pusher_xml")}


def modules() -> dict[str, Path]:
    """Every module of the packages: dotted name -> file."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imported_modules(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that ``name`` imports anywhere in its file (function bodies included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` imports a.b.c (and its parents)
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported_modules(name, path, known) for name, path in known.items()}


def cycles_within(graph: dict[str, set[str]], package: str) -> list[list[str]]:
    """Strongly connected components of more than one module inside ``package`` (Tarjan)."""
    nodes = [n for n in graph if n == package or n.startswith(package + ".")]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in nodes:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in nodes:
        if v not in index:
            visit(v)
    return found


def package_of(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_inside_a_package(package):
    """A package's ``__init__`` re-exporting its submodules is not a cycle of logic, so imports of a package's own
    ``__init__`` by its submodules are left out (they would make every re-export look like a cycle)."""
    graph = {m: {t for t in deps if not (m.startswith(t + ".") and modules()[t].name == "__init__.py")}
             for m, deps in import_graph().items()}
    assert cycles_within(graph, package) == []


def test_packages_import_downward_only():
    """``envs`` <- ``skills`` <- ``compose`` <- ``bench``: nothing imports a package above it."""
    rank = {p: i for i, p in enumerate(PACKAGES)}
    upward = sorted((m, t) for m, deps in import_graph().items() for t in deps
                    if rank[package_of(t)] > rank[package_of(m)])
    assert upward == []


def test_the_cycle_finder_finds_cycles():
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert cycles_within(graph, "p") == [["p.a", "p.b", "p.c"]]


def functions() -> list[tuple[str, str, int, int]]:
    """(file, function, lines, parameters) of every function in the packages."""
    out = []
    for path in modules().values():
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                args = node.args
                params = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
                params = [p for p in params if p not in ("self", "cls")]
                params += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
                out.append((rel, node.name, node.end_lineno - start + 1, len(params)))
    return out


def test_functions_are_small():
    long = [f"{file}:{name} ({lines} lines)" for file, name, lines, _ in functions()
            if lines > MAX_LINES and (file, name) not in TEMPLATES]
    assert long == []


def test_functions_take_few_parameters():
    many = [f"{file}:{name} ({n} parameters)" for file, name, _, n in functions() if n > MAX_PARAMETERS]
    assert many == []


DOCUMENTS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")), "bench/README.md"]
NAME = re.compile(r"\b((?:envs|skills|compose|bench)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
FROM_IMPORT = re.compile(r"from ((?:envs|skills|compose|bench)(?:\.[A-Za-z_][A-Za-z0-9_]*)*) import ([A-Za-z_][\w, ]*)")
NOT_NAMES = {"compose.md", "skills.md", "compose.py", "skills.py", "bench.py"}  # file names in prose


def documented_names() -> set[str]:
    names = set()
    for doc in DOCUMENTS:
        text = (ROOT / doc).read_text()
        names |= {n for n in NAME.findall(text) if n not in NOT_NAMES and not n.endswith((".md", ".png", ".json"))}
        for module, imported in FROM_IMPORT.findall(text):
            names |= {f"{module}.{n.strip()}" for n in imported.split(",") if n.strip()}
    return names


def resolves(dotted: str) -> bool:
    """``dotted`` is a module, or an attribute chain on one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_name_the_docs_use_imports():
    names = documented_names()
    assert len(names) > 30  # the pattern finds what the docs say
    assert sorted(n for n in names if not resolves(n)) == []
