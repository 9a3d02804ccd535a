"""The package as a whole: every module imports on its own, and no two modules import each other."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "simclr_teach"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))


def imported_modules(name: str) -> set[str]:
    """The simclr_teach modules ``name`` imports anywhere in its source, inside functions too."""
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {
                alias.name.split(".")[1]
                for alias in node.names
                if alias.name.startswith("simclr_teach.")
            }
        elif isinstance(node, ast.ImportFrom) and node.module == "simclr_teach":
            found |= {alias.name if alias.name in MODULES else "__init__" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("simclr_teach."):
            found.add(node.module.split(".")[1])
    return found - {name}


def test_every_module_imports_in_a_fresh_interpreter():
    code = "import importlib\n" + "".join(
        f"importlib.import_module('simclr_teach.{name}')\n" for name in MODULES
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_no_import_cycles():
    """A cycle (a -> b -> a, even inside a function) means two modules that are one concept."""
    graph = {name: imported_modules(name) for name in [*MODULES, "__init__"]}
    assert graph["checkpoint"] <= {"__init__", "utils"}  # file I/O only: no model, no training

    def cycle_from(start: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt == start:
                return [*path, start]
            if nxt not in path:
                found = cycle_from(start, [*path, nxt])
                if found:
                    return found
        return None

    cycles = [" -> ".join(c) for name in graph if (c := cycle_from(name, [name]))]
    assert not cycles, f"import cycles: {cycles}"


def test_import_is_light_and_the_common_names_load_on_first_use():
    code = """
import sys
import simclr_teach
heavy = sorted(m for m in sys.modules if m.startswith(("simclr_teach.", "torch", "sklearn")))
assert heavy == [], heavy
from simclr_teach import load_model
from simclr_teach.train import load_model as home
assert load_model is home and "simclr_teach.train" in sys.modules
assert "sklearn" not in sys.modules
for name in simclr_teach.__all__:
    getattr(simclr_teach, name)
assert set(simclr_teach.__all__) <= set(dir(simclr_teach))
try:
    simclr_teach.no_such_name
except AttributeError as error:
    assert "no_such_name" in str(error)
else:
    raise AssertionError("an unknown name must raise AttributeError")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


MAX_FUNCTION_LINES = 60  # a function a reader follows on one screen
LONG_BY_NATURE = {"cli._parser"}  # one add_argument after another: a table, not a procedure


def code_lines(function: ast.FunctionDef, source: list[str]) -> int:
    """Lines of a function's body that hold code: its docstring, blanks and comments left out."""
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    if not body:
        return 0
    lines = source[body[0].lineno - 1 : body[-1].end_lineno]
    return sum(1 for line in lines if line.strip() and not line.strip().startswith("#"))


def test_no_function_is_longer_than_a_screen():
    long = {}
    for name in MODULES:
        source = (PACKAGE / f"{name}.py").read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where = f"{name}.{node.name}"
                n = code_lines(node, source.splitlines())
                if n > MAX_FUNCTION_LINES and where not in LONG_BY_NATURE:
                    long[where] = n
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines of code: {long}"


def test_the_line_count_leaves_out_docstrings_and_comments():
    source = 'def f():\n    """Doc.\n\n    More."""\n    # a comment\n    x = 1\n\n    return x\n'
    (function,) = ast.parse(source).body
    assert code_lines(function, source.splitlines()) == 2


def test_imports_sit_at_the_top_of_every_module_but_the_command_line():
    """Only cli.py imports lazily (its docstring says why); elsewhere a module's dependencies
    are read in its first lines."""
    inside = []
    for name in MODULES:
        if name == "cli":
            continue
        tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith(
                        "simclr_teach"
                    ):
                        inside.append(f"{name}.{node.name}: {inner.module}")
    assert not inside, f"package imports inside functions: {sorted(set(inside))}"
