"""Derived observations: small arithmetic expressions over state names, e.g. ``Cr - Cref``.

Parsed with ``ast`` against a whitelist (numbers, state names, + - * / **, unary minus,
``abs``/``min``/``max``/``exp``/``log``/``sqrt``), then compiled once to a function
of the packed state array — never ``eval`` of user text as such.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping, Sequence

FUNCTIONS: dict[str, Callable[..., float]] = {
    "abs": abs,
    "min": min,
    "max": max,
    "exp": math.exp,
    "log": math.log,
    "sqrt": math.sqrt,
}
_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub, ast.UAdd)


def parse(expr: str) -> set[str]:
    """Check an expression and return the state names it uses.

    Raises:
        ValueError: Syntax, or anything outside the whitelist.
    """
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"expression {expr!r} is not valid: {exc.msg}") from None
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if (
                not isinstance(node.func, ast.Name)
                or node.func.id not in FUNCTIONS
                or node.keywords
            ):
                raise ValueError(f"expression {expr!r}: only {', '.join(FUNCTIONS)} may be called")
        elif isinstance(node, ast.Name):
            if node.id not in FUNCTIONS:
                names.add(node.id)
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float)) or isinstance(node.value, bool):
                raise ValueError(f"expression {expr!r}: only numbers may appear as constants")
        elif not isinstance(node, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Load, *_OPS)):
            raise ValueError(f"expression {expr!r}: {type(node).__name__} is not allowed")
    return names


class _ToIndex(ast.NodeTransformer):
    def __init__(self, index: Mapping[str, int]) -> None:
        self.index = index

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in FUNCTIONS:
            return node
        sub = ast.Subscript(
            value=ast.Name("v", ast.Load()), slice=ast.Constant(self.index[node.id]), ctx=ast.Load()
        )
        return ast.copy_location(sub, node)


def _indexed(expr: str, index: Mapping[str, int]) -> ast.expr:
    """The checked expression's tree with each state name read as ``v[index]``.

    Raises:
        KeyError: A name that is not in ``index``.
        ValueError: Anything outside the whitelist.
    """
    missing = parse(expr) - set(index)
    if missing:
        raise KeyError(sorted(missing)[0])
    tree: ast.Expression = _ToIndex(index).visit(ast.parse(expr, mode="eval"))
    return tree.body


def compile_expr(expr: str, index: Mapping[str, int]) -> Callable[[Sequence[float]], float]:
    """A function of the packed states computing ``expr``.

    Raises:
        KeyError: A name that is not in ``index`` (the caller names the spec key).
    """
    body = ast.unparse(_indexed(expr, index))
    fn = eval(f"lambda v: {body}", {"__builtins__": {}, **FUNCTIONS})
    return fn  # type: ignore[no-any-return]


class _Hoist(ast.NodeTransformer):
    """Replaces subexpressions that occur more than once by temporaries (post-order)."""

    def __init__(self, repeated: set[str]) -> None:
        self.repeated = repeated
        self.temps: dict[str, str] = {}
        self.lines: list[str] = []

    def visit(self, node: ast.AST) -> ast.AST:
        key = ast.dump(node)  # of the original node: identical text, identical value
        new = self.generic_visit(node)
        if key not in self.repeated:
            return new
        if key not in self.temps:
            self.temps[key] = f"_t{len(self.temps)}"
            self.lines.append(f"    {self.temps[key]} = {ast.unparse(new)}")
        return ast.Name(self.temps[key], ast.Load())


def compile_observer(
    observations: Sequence[tuple[str | None, int | None, float, float]],
    index: Mapping[str, int],
) -> Callable[[Sequence[float]], list[float]]:
    """One generated function: packed states → normalised, clipped observation values.

    Each observation is ``(expr or None, state index or None, min, max)``; the value is
    ``(x - min) * 2 / (max - min) - 1`` clipped to [-1, 1], NaN → 0 — the same arithmetic,
    in the same order, as the codec and the exported graph. Written out as straight-line code
    with subexpressions shared between expressions computed once, so a single state costs a
    few µs of interpreter time instead of a call per observation.

    The function raises ``ArithmeticError``/``ValueError`` where Python's math does (log(0),
    x/0) and IEEE arithmetic would give inf or NaN; callers decide what that means.

    Raises:
        KeyError: A name that is not in ``index``.
        ValueError: An expression outside the whitelist.
    """
    trees: list[ast.expr] = []
    for expr, column, _, _ in observations:
        if expr:
            trees.append(_indexed(expr, index))
        else:
            trees.append(ast.Subscript(ast.Name("v", ast.Load()), ast.Constant(column), ast.Load()))
    counts: dict[str, int] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.BinOp, ast.Call, ast.UnaryOp)):
                key = ast.dump(node)
                counts[key] = counts.get(key, 0) + 1
    hoist = _Hoist({k for k, n in counts.items() if n > 1})
    lines = ["def observe(v):"]
    outputs = []
    for i, (tree, (_, _, lo, hi)) in enumerate(zip(trees, observations, strict=True)):
        value = ast.unparse(hoist.visit(tree))
        lines.extend(hoist.lines)
        hoist.lines.clear()
        scale = 2.0 / (float(hi) - float(lo))
        lines.append(f"    x{i} = (({value}) - {float(lo)!r}) * {scale!r} - 1.0")
        # The graph's order: clip to [-1, 1], then NaN (log of a negative...) → 0.
        outputs.append(
            f"0.0 if x{i} != x{i} else -1.0 if x{i} < -1.0 else 1.0 if x{i} > 1.0 else x{i}"
        )
    lines.append("    return [" + ", ".join(outputs) + "]")
    namespace: dict[str, object] = {"__builtins__": {}, **FUNCTIONS}
    exec("\n".join(lines), namespace)
    return namespace["observe"]  # type: ignore[return-value]
