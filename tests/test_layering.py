"""The import structure: one-way layers, no upward imports inside pipelines/, no cycles.

Every module's imports are read from its source (ast), the way a reader follows them:
- layers: pipelines -> heads / extract -> store; nothing in store imports extract, heads or
  pipelines, nothing in heads or extract imports pipelines (imports inside functions count);
- inside pipelines/: a module of a subpackage never imports a module of the package above it
  (pipelines/features/x.py must not import lighthead.pipelines.demo), except the shared leaf
  modules of SHARED_LEAVES; the command line (pipelines/cli/) is the top of the stack and
  nothing else imports it;
- module-level imports among lighthead modules form no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("store", "extract", "heads", "pipelines")
# Modules directly in pipelines/ that its subpackages may import, each a leaf (it imports no other
# pipelines module), with why it is shared rather than owned by one subpackage:
SHARED_LEAVES = {
    "lighthead.pipelines.console": "terminal output (rich consoles, progress lines) for every command",
    "lighthead.pipelines.threads": "torch CPU thread counts, set by training, extraction and sweep trials alike",
    "lighthead.pipelines.placement": "which GPU a worker process uses, for extraction workers and sweep trials",
    "lighthead.pipelines.json_files": "atomic JSON and text files, for run folders, sweeps and evaluation reports",
}
TOP = "lighthead.pipelines.cli"  # the command line: imports whatever it exposes; nothing imports it
LOWER = {
    "store": (),
    "extract": ("store",),
    "heads": ("store",),
    "pipelines": ("store", "extract", "heads"),
}  # what each layer may import besides itself


def _modules() -> dict[str, Path]:
    out = {}
    for part in PARTS:
        for path in sorted((ROOT / part).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            names = list(rel.parts)
            if names[-1] == "__init__":
                names = names[:-1]
            out[".".join(["lighthead", *names])] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The lighthead module an imported name lands in (a name imported from a package: the
    package, unless the name is a submodule)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # imports under `if`/`try` at module level run at import time too
        nodes = [
            n
            for stmt in tree.body
            for n in ast.walk(stmt)
            if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or n is stmt
        ]
        nodes = [n for n in nodes if not _under_type_checking(tree, n)]
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            # `from pkg import sub` imports the submodule; `from pkg import name`, the package
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for n in names:
            if n.startswith("lighthead."):
                target = _resolve(n)
                if target and target != module:
                    out.add(target)
    return out


def _under_type_checking(tree: ast.Module, node: ast.AST) -> bool:
    for stmt in tree.body:
        if isinstance(stmt, ast.If) and isinstance(stmt.test, ast.Name) and stmt.test.id == "TYPE_CHECKING":
            if any(n is node for n in ast.walk(stmt)):
                return True
    return False


ALL = {m: _imports(m, p, top_level_only=False) for m, p in MODULES.items()}


def _layer(module: str) -> str:
    return module.split(".")[1]


def test_layers_import_one_way():
    bad = [
        f"{m} imports {t}"
        for m, ts in ALL.items()
        for t in sorted(ts)
        if _layer(t) != _layer(m) and _layer(t) not in LOWER[_layer(m)]
    ]
    assert not bad, "\n".join(bad)


def test_no_upward_imports_inside_pipelines():
    bad = []
    for m, targets in ALL.items():
        if _layer(m) != "pipelines":
            continue
        for t in sorted(targets):
            if t.startswith(TOP) and not m.startswith(TOP):
                bad.append(f"{m} imports the command line ({t})")
                continue
            if m.startswith(TOP) or t in SHARED_LEAVES:
                continue
            # t is a module of a package above m: m's package path starts with t's package, and t is
            # not itself a package m lives in (a subpackage may import its own package's __init__)
            m_pkg = m if MODULES[m].name == "__init__.py" else m.rpartition(".")[0]
            t_pkg = t if MODULES[t].name == "__init__.py" else t.rpartition(".")[0]
            if m_pkg != t_pkg and m_pkg.startswith(t_pkg + ".") and MODULES[t].name != "__init__.py":
                bad.append(f"{m} imports {t}, a module of the package above it")
    assert not bad, "\n".join(bad)


def test_shared_leaves_are_leaves():
    for leaf in SHARED_LEAVES:
        assert leaf in MODULES, leaf
        assert not {t for t in ALL[leaf] if _layer(t) == "pipelines"}, f"{leaf} imports pipelines modules"


def test_no_import_cycles():
    graph = {m: _imports(m, p, top_level_only=True) for m, p in MODULES.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return stack[stack.index(t) :] + [t]
            if t not in state:
                cycle = visit(t)
                if cycle:
                    return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)
