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


def compile_expr(expr: str, index: Mapping[str, int]) -> Callable[[Sequence[float]], float]:
    """A function of the packed states computing ``expr``.

    Raises:
        KeyError: A name that is not in ``index`` (the caller names the spec key).
    """
    missing = parse(expr) - set(index)
    if missing:
        raise KeyError(sorted(missing)[0])
    tree = _ToIndex(index).visit(ast.parse(expr, mode="eval"))
    body = ast.unparse(tree)
    fn = eval(f"lambda v: {body}", {"__builtins__": {}, **FUNCTIONS})
    return fn  # type: ignore[no-any-return]
