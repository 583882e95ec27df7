"""The package's shape: no module imports one that imports it back (imports inside functions
count), so every module can be read and tested from the bottom up."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fashion_jax"


def imports(source: str, modules: set[str]) -> set[str]:
    """The package modules that `source` imports, at any depth (function bodies included)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "fashion_jax":
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fashion_jax."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("fashion_jax.")}
    return found & modules


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import cycle as the path that closes it (depth-first search)."""
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import():
    a = "from fashion_jax import b\n"
    b = "def f():\n    from fashion_jax.c import x\n"
    c = "import fashion_jax.a\n"
    modules = {"a", "b", "c"}
    graph = {m: imports(s, modules) - {m} for m, s in zip("abc", (a, b, c))}
    assert cycles(graph) == [["a", "b", "c", "a"]]


def test_no_module_of_the_package_imports_one_that_imports_it_back():
    files = {p.stem: p.read_text() for p in PACKAGE.glob("*.py")}
    modules = set(files) - {"__init__"}
    graph = {m: imports(files[m], modules) - {m} for m in modules}
    assert cycles(graph) == []
