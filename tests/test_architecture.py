"""The product's shape: no import cycle, the right side of each boundary, small functions.

Reads the source with ``ast`` (nothing is imported, no server starts). The product is
``simserver``, ``gymclient``, ``launcher`` and ``simgym`` without its generated ``simgym/v1``.

- **No import cycle** among product modules. Every import counts wherever it sits (module
  level, inside a function, under ``try``): a lazy import that closes a cycle is still a
  cycle. Only imports under ``if TYPE_CHECKING:`` are left out, since they never run.
- **Boundaries**: ``gymclient`` never imports ``simserver``; ``simgym`` imports none of
  ``gymclient``, ``simserver``, ``launcher``; the sim side (``simserver``, ``simgym``)
  never loads ray, torch, mlflow or azure when imported, directly or through another
  product module's module-level imports (a sim container has none of them).
- **README's layout table names every module** (its path inside its package, as
  ``aml/plan``): the map stays as current as the code.
- **Functions of at most 80 lines**, counted from the ``def`` line to the function's last
  line (methods and nested functions included). A longer one must say why it is one piece:
  its docstring contains the phrase ``One piece:`` followed by the reason, e.g.
  ``One piece: the state machine reads top to bottom; split, its states would scatter.``
  (``grep -rn "One piece:"`` lists them all.)

Run as a script (``python tests/test_architecture.py``) to print every offender.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("simserver", "gymclient", "launcher", "simgym")
GENERATED = ("simgym.v1",)
MAX_FUNCTION_LINES = 80
ONE_PIECE = "One piece:"
SIM_SIDE = ("simserver", "simgym")
HEAVY = ("ray", "torch", "mlflow", "azure")


@dataclass(frozen=True)
class Import:
    """One import statement's target, as the importing module names it."""

    target: str  # dotted name, resolved to a product module where it is one
    line: int
    module_level: bool  # runs when the importing module is imported


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _product_files() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            name = _module_name(path)
            if not any(name == g or name.startswith(g + ".") for g in GENERATED):
                files[name] = path
    return files


MODULES = _product_files()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(name: str) -> str:
    """The product module a dotted name lives in (the longest module prefix), else the name."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in MODULES:
            return candidate
    return name


def _imports(module: str) -> list[Import]:
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.orelse:
                    visit_stmt(stmt, module_level)
                continue
            visit_stmt(child, module_level)

    def visit_stmt(node: ast.AST, module_level: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(_resolve(alias.name), node.lineno, module_level))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # "from pkg import mod" imports the submodule; "from mod import name" the module.
                full = f"{base}.{alias.name}"
                target = full if full in MODULES else _resolve(base)
                found.append(Import(target, node.lineno, module_level))
        inner = module_level and not isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        )
        visit(node, inner)

    visit(ast.parse(path.read_text(), str(path)), True)
    return found


IMPORTS = {module: _imports(module) for module in MODULES}


def _top(name: str) -> str:
    return name.split(".")[0]


def import_cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself)."""
    graph = {m: sorted({i.target for i in IMPORTS[m] if i.target in MODULES}) for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's algorithm; the graph is a few dozen modules deep
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
            if len(component) > 1 or v in graph[v]:
                cycles.append(sorted(component))

    for module in MODULES:
        if module not in index:
            connect(module)
    return sorted(cycles)


def _cycle_edges(component: list[str]) -> list[str]:
    members = set(component)
    edges = {
        f"{m} -> {i.target} ({MODULES[m].relative_to(REPO)}:{i.line})"
        for m in component
        for i in IMPORTS[m]
        if i.target in members
    }
    return sorted(edges)


def boundary_violations() -> list[str]:
    """Imports that cross a boundary the product keeps (see the module docstring)."""
    bad = []
    for module, imports in IMPORTS.items():
        where = MODULES[module].relative_to(REPO)
        for imp in imports:
            top = _top(imp.target)
            if _top(module) == "gymclient" and top == "simserver":
                bad.append(f"{where}:{imp.line}: gymclient imports {imp.target}")
            if _top(module) == "simgym" and top in ("gymclient", "simserver", "launcher"):
                bad.append(f"{where}:{imp.line}: simgym imports {imp.target}")
    for module in MODULES:
        if _top(module) in SIM_SIDE:
            bad.extend(_heavy_on_import(module))
    return bad


def _heavy_on_import(start: str) -> Iterator[str]:
    """Heavy third-party imports that importing ``start`` runs, with the chain that reaches them."""
    chains = {start: [start]}
    todo = [start]
    while todo:
        module = todo.pop()
        for imp in IMPORTS[module]:
            if not imp.module_level:
                continue
            if imp.target in MODULES and imp.target not in chains:
                chains[imp.target] = [*chains[module], imp.target]
                todo.append(imp.target)
            elif _top(imp.target) in HEAVY:
                where = f"{MODULES[module].relative_to(REPO)}:{imp.line}"
                chain = " -> ".join(chains[module])
                yield f"importing {start} imports {imp.target} ({chain}; {where})"


@dataclass(frozen=True)
class LongFunction:
    """A product function over the limit whose docstring does not say why."""

    path: str
    name: str
    lines: int

    def __str__(self) -> str:
        return f"{self.path}:{self.name}:{self.lines}"


def long_functions() -> list[LongFunction]:
    """Functions over ``MAX_FUNCTION_LINES`` lines without a ``One piece:`` docstring."""
    found = []
    for path in MODULES.values():
        tree = ast.parse(path.read_text(), str(path))
        for node, qualname in _functions(tree, ""):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_FUNCTION_LINES and ONE_PIECE not in (ast.get_docstring(node) or ""):
                found.append(LongFunction(str(path.relative_to(REPO)), qualname, lines))
    return sorted(found, key=lambda f: -f.lines)


def _functions(
    node: ast.AST, prefix: str
) -> Iterator[tuple[ast.FunctionDef | ast.AsyncFunctionDef, str]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield child, prefix + child.name
            yield from _functions(child, f"{prefix}{child.name}.")
        elif isinstance(child, ast.ClassDef):
            yield from _functions(child, f"{prefix}{child.name}.")
        else:
            yield from _functions(child, prefix)


def test_the_product_is_found():
    assert {"simserver.server", "gymclient.env", "launcher.train", "simgym"} <= set(MODULES)
    assert not any(m.startswith("simgym.v1") for m in MODULES)
    # The checks see imports (a parser that found none would pass them all).
    assert any(i.target.startswith("gymclient.") for i in IMPORTS["gymclient.env"])


def test_no_import_cycle():
    cycles = import_cycles()
    assert not cycles, "import cycles (each edge with where it is imported):\n" + "\n\n".join(
        "\n".join(_cycle_edges(c)) for c in cycles
    )


def test_boundaries():
    bad = boundary_violations()
    assert not bad, "\n".join(bad)


def test_functions_are_short_or_say_why():
    long = long_functions()
    assert not long, (
        f"functions over {MAX_FUNCTION_LINES} lines (path:function:lines) whose docstring does "
        f"not say '{ONE_PIECE} <why>':\n" + "\n".join(map(str, long))
    )


def unmapped_modules() -> list[str]:
    """Product modules that README's "## Layout" section does not name (``__init__`` aside)."""
    readme = (REPO / "README.md").read_text()
    layout = readme.split("## Layout", 1)[-1].split("\n## ", 1)[0]
    missing = []
    for module, path in MODULES.items():
        if path.name in ("__init__.py", "__main__.py"):
            continue
        name = "/".join(module.split(".")[1:])
        if f"`{name}`" not in layout:
            missing.append(module)
    return missing


def test_readme_maps_every_module():
    missing = unmapped_modules()
    assert not missing, "README's layout table lacks a line for: " + ", ".join(missing)


if __name__ == "__main__":
    cycles, bad, long = import_cycles(), boundary_violations(), long_functions()
    print("## Import cycles")
    for component in cycles:
        print("- " + ", ".join(component))
        for edge in _cycle_edges(component):
            print(f"  - {edge}")
    print("- none" if not cycles else "")
    print("\n## Boundary violations")
    print("\n".join(f"- {line}" for line in bad) or "- none")
    print(f"\n## Functions over {MAX_FUNCTION_LINES} lines (path:function:lines)")
    print("\n".join(f"- {function}" for function in long) or "- none")
    print("\n## Modules missing from README's layout table")
    print("\n".join(f"- {module}" for module in unmapped_modules()) or "- none")
