"""The package's layout rules, checked on the source (AST, nothing imported):

- no function over 80 lines and no module over 500 lines, unless the module's docstring gives the reason on a line
  of its own:
      Over 500 lines because <reason>
      Long function <name> because <reason>        (<name>: the function's qualified name, e.g. `Runs.fit`;
                                                    backticks optional)
- no cycle in the module-level import graph of bortify (imports inside functions are lazy and do not count;
  nor do those under `if TYPE_CHECKING:`);
- floors: the stage packages (STAGES) sit above everything else in bortify; nothing below them imports from a stage
  package at module level (a lower module may reach a stage lazily, inside a function).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "bortify"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500
STAGES = ("bortify.extraction", "bortify.pretraining", "bortify.finetuning", "bortify.compression", "bortify.hub")
MODULE_REASON = re.compile(rf"^\s*Over {MAX_MODULE_LINES} lines because \S")
FUNCTION_REASON = re.compile(r"^\s*Long function `?([\w.]+)`? because \S")


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in MODULES.items()}


def _doc_lines(name: str) -> list[str]:
    return (ast.get_docstring(TREES[name]) or "").splitlines()


def _functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, lines from the first decorator to the end) of every function, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            qualname = f"{prefix}{node.name}"
            if not isinstance(node, ast.ClassDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                yield qualname, node.end_lineno - start + 1
            yield from _functions(node, qualname + ".")
        else:
            yield from _functions(node, prefix)


def _module_imports(name: str) -> set[str]:
    """The bortify modules `name` imports when it is imported (top level, try/if/with blocks; not functions, not
    `if TYPE_CHECKING:`). `from pkg import sub` counts as an import of the submodule when it is one."""
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def resolve(dotted: str) -> str | None:
        parts = dotted.split(".")
        while parts and ".".join(parts) not in MODULES:
            parts.pop()
        return ".".join(parts) if parts else None

    def visit(body):
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                for block in (node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])):
                    visit(block)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
            elif isinstance(node, ast.Import):
                found.update(filter(None, (resolve(a.name) for a in node.names)))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    target = resolve(f"{base}.{alias.name}") if f"{base}.{alias.name}" in MODULES else resolve(base)
                    if target:
                        found.add(target)

    visit(TREES[name].body)
    found.discard(name)
    return found


GRAPH = {name: _module_imports(name) for name in MODULES}


def _stage(name: str) -> str | None:
    return next((s for s in STAGES if name == s or name.startswith(s + ".")), None)


def test_no_module_over_500_lines_without_a_reason():
    long = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in MODULES.items()}
    unexplained = {name: n for name, n in long.items()
                   if n > MAX_MODULE_LINES and not any(MODULE_REASON.match(line) for line in _doc_lines(name))}
    assert not unexplained, (f"modules over {MAX_MODULE_LINES} lines: split them, or give the reason in the module "
                             f"docstring as a line 'Over {MAX_MODULE_LINES} lines because ...': {unexplained}")


def test_no_function_over_80_lines_without_a_reason():
    unexplained = {}
    for name in MODULES:
        excused = {m.group(1) for m in map(FUNCTION_REASON.match, _doc_lines(name)) if m}
        for qualname, n in _functions(TREES[name]):
            if n > MAX_FUNCTION_LINES and qualname not in excused:
                unexplained[f"{name}.{qualname}"] = n
    assert not unexplained, (f"functions over {MAX_FUNCTION_LINES} lines: split them, or give the reason in the "
                             f"module docstring as a line 'Long function NAME because ...': {unexplained}")


def test_no_import_cycles():
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def connect(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                connect(w)
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
                cycles.append(sorted(component))

    for name in sorted(GRAPH):
        if name not in index:
            connect(name)
    assert not cycles, f"module-level import cycles (make one of the imports lazy, or move the shared part): {cycles}"


def test_nothing_below_the_stages_imports_a_stage_at_module_level():
    upward = {name: sorted(t for t in targets if _stage(t)) for name, targets in GRAPH.items() if not _stage(name)}
    upward = {name: targets for name, targets in upward.items() if targets}
    assert not upward, f"modules below the stage packages {STAGES} import from them at module level: {upward}"


@pytest.mark.parametrize("source, rules", [
    ('"""Doc.\n\nOver 500 lines because one table."""\n', (True, set())),
    ('"""Doc.\n\nLong function `Runs.fit` because one loop.\nLong function main because the CLI."""\n',
     (False, {"Runs.fit", "main"})),
    ('"""Over 500 lines, because."""\n', (False, set())),
])
def test_the_reason_lines_are_read_as_documented(source, rules):
    lines = (ast.get_docstring(ast.parse(source)) or "").splitlines()
    assert (any(MODULE_REASON.match(line) for line in lines),
            {m.group(1) for m in map(FUNCTION_REASON.match, lines) if m}) == rules


def test_the_import_graph_sees_what_it_must():
    assert "bortify.utils" in GRAPH["bortify.finetuning.finetune"]  # an absolute from-import
    assert "bortify.finetuning.compatible" not in GRAPH["bortify.finetuning.finetune"]  # lazy: inside a function
    tree = ast.parse("def f():\n    yield\n\nclass A:\n    @staticmethod\n    def g():\n        def h():\n"
                     "            pass\n")
    assert dict(_functions(tree)) == {"f": 2, "A.g": 4, "A.g.h": 2}
