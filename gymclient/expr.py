"""The spec's expression language: rewards, terminals, goals and derived observations.

An expression is a Python-syntax formula over names (``-abs(Tin - Tset)``,
``abs(pole_angle) > 0.2 or abs(x) > 2.4``, ``1 if x > 0 else 0``):

* numbers (every literal is read as a float: ``9**9**9`` overflows instead of computing a
  huge integer), ``True``/``False``, the constants ``pi`` and ``e``;
* names (the caller says which are known: states, derived observations, config, ``steps``);
* ``+ - * / ** %``, unary ``-``/``+``, comparisons (chainable: ``0 < x < 1``), ``and``,
  ``or``, ``not``, ``a if cond else b``;
* calls of ``FUNCTIONS`` (``abs min max exp log log10 log2 sqrt floor ceil round sin cos tan
  asin acos atan atan2 sinh cosh tanh hypot clip sign``) with the arities of ``ARITY``.

Text is parsed once with ``ast`` and checked node by node against that whitelist; the
checked tree, its names rewritten to reads of the caller's arguments, is compiled to a code
object once — user text is never ``eval``-ed as such, and nothing outside the whitelist
(attributes, subscripts, lambdas, comprehensions, keywords, strings) can reach the compiler.

Derived observations use a smaller subset (``parse_derived``: arithmetic and ``abs min max
exp log sqrt``), the one ``launcher.export`` can put into the ONNX graph.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any


def _clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def _round(x: float, digits: float = 0) -> float:
    # Literals are floats: `round(x, 1)` passes 1.0, which Python's round refuses.
    return float(round(x, int(digits)))


def _sign(x: float) -> float:
    return 1.0 if x > 0 else -1.0 if x < 0 else 0.0


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "min": min,
    "max": max,
    "exp": math.exp,
    "log": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "sqrt": math.sqrt,
    "floor": math.floor,
    "ceil": math.ceil,
    "round": _round,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "atan2": math.atan2,
    "sinh": math.sinh,
    "cosh": math.cosh,
    "tanh": math.tanh,
    "hypot": math.hypot,
    "clip": _clip,
    "sign": _sign,
}

#: (fewest, most) arguments of each function; None: any number from the fewest on.
ARITY: dict[str, tuple[int, int | None]] = {
    **{name: (1, 1) for name in FUNCTIONS},
    "min": (2, None),
    "max": (2, None),
    "log": (1, 2),  # log(x, base)
    "round": (1, 2),  # round(x, digits)
    "atan2": (2, 2),
    "hypot": (2, None),
    "clip": (3, 3),
}

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}

#: The functions of derived observations (what the exported ONNX graph computes).
DERIVED_FUNCTIONS = ("abs", "min", "max", "exp", "log", "sqrt")

_ARITH = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub, ast.UAdd)
_ALLOWED = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.BoolOp,
    ast.Compare,
    ast.IfExp,
    ast.Load,
    ast.Mod,
    ast.Not,
    ast.And,
    ast.Or,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    *_ARITH,
)
_DERIVED_ALLOWED = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Load, *_ARITH)

_NAMES_OF = {
    ast.IfExp: "a conditional (x if c else y)",
    ast.Compare: "a comparison",
    ast.BoolOp: "and/or",
    ast.Mod: "%",
    ast.Not: "not",
}


def _tree(text: str) -> ast.Expression:
    if not isinstance(text, str):
        raise ValueError(f"expression {text!r} is not text")
    try:
        return ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"expression {text!r} is not valid: {exc.msg}") from None


def _check(text: str, tree: ast.Expression, derived: bool) -> set[str]:
    """Walk the tree against the whitelist; return the names it reads."""
    allowed = _DERIVED_ALLOWED if derived else _ALLOWED
    functions = DERIVED_FUNCTIONS if derived else tuple(FUNCTIONS)
    names: set[str] = set()
    called: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in functions:
                raise ValueError(f"expression {text!r}: only {', '.join(functions)} may be called")
            name = node.func.id
            if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
                raise ValueError(f"expression {text!r}: {name}() takes plain arguments only")
            lo, hi = ARITY[name]
            n = len(node.args)
            if n < lo or (hi is not None and n > hi):
                want = f"{lo}" if lo == hi else f"{lo} or more" if hi is None else f"{lo} to {hi}"
                raise ValueError(f"expression {text!r}: {name}() takes {want} argument(s), got {n}")
            called.add(id(node.func))
        elif isinstance(node, ast.Name):
            if id(node) in called:
                continue
            if node.id in functions:
                raise ValueError(f"expression {text!r}: {node.id} is a function: call it")
            if not derived and node.id in CONSTANTS:
                continue
            names.add(node.id)
        elif isinstance(node, ast.Constant):
            value = node.value
            ok = isinstance(value, (int, float)) and (not isinstance(value, bool) or not derived)
            if not ok:
                raise ValueError(f"expression {text!r}: only numbers may appear as constants")
        elif not isinstance(node, allowed):
            what = _NAMES_OF.get(type(node), type(node).__name__)
            where = " in a derived observation (arithmetic only)" if derived else ""
            raise ValueError(f"expression {text!r}: {what} is not allowed{where}")
    return names


def parse(text: str) -> set[str]:
    """Check an expression of the full language and return the names it reads.

    Function names and the constants ``pi`` and ``e`` are not names; everything else is
    (``steps`` included): the caller checks them against what it knows.

    Raises:
        ValueError: Syntax, or anything outside the whitelist (the message quotes the text).
    """
    return _check(text, _tree(text), derived=False)


def parse_derived(text: str) -> set[str]:
    """``parse`` for derived observations: arithmetic, ``abs min max exp log sqrt``.

    Raises:
        ValueError: Syntax, or anything outside that subset.
    """
    return _check(text, _tree(text), derived=True)


class _Rewrite(ast.NodeTransformer):
    """Names → the caller's reads, number literals → floats, constants → their values."""

    def __init__(self, resolve: Callable[[str], ast.expr]) -> None:
        self.resolve = resolve

    def visit_Call(self, node: ast.Call) -> ast.AST:
        node.args = [self.visit(a) for a in node.args]
        return node  # its func stays a Name, resolved in the functions' namespace

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in CONSTANTS:
            new: ast.expr = ast.Constant(CONSTANTS[node.id])
        else:
            new = self.resolve(node.id)
        return ast.copy_location(new, node)

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if isinstance(node.value, int) and not isinstance(node.value, bool):
            return ast.copy_location(ast.Constant(float(node.value)), node)
        return node


def rewrite(text: str, resolve: Callable[[str], ast.expr]) -> ast.expr:
    """The checked tree of ``text`` with each name replaced by ``resolve(name)``.

    ``resolve`` raises ``KeyError`` for a name it does not know.

    Raises:
        KeyError: From ``resolve``.
        ValueError: ``text`` is outside the language.
    """
    tree = _tree(text)
    _check(text, tree, derived=False)
    return _Rewrite(resolve).visit(tree).body  # type: ignore[no-any-return]


def build_function(
    args: Sequence[str], body: ast.expr, filename: str = "<expression>"
) -> Callable[..., Any]:
    """``lambda *args: body``, compiled from a checked tree to a code object once.

    The function's globals are the whitelisted functions only (no builtins).
    """
    arguments = ast.arguments(
        posonlyargs=[],
        args=[ast.arg(a) for a in args],
        kwonlyargs=[],
        kw_defaults=[],
        defaults=[],
    )
    tree = ast.Expression(ast.Lambda(arguments, body))
    ast.fix_missing_locations(tree)
    code = compile(tree, filename, "eval")
    namespace: dict[str, Any] = {"__builtins__": {}, **FUNCTIONS}
    return eval(code, namespace)  # type: ignore[no-any-return]  # a code object we built


def _index_read(index: Mapping[str, int]) -> Callable[[str], ast.expr]:
    def read(name: str) -> ast.expr:
        return ast.Subscript(ast.Name("v", ast.Load()), ast.Constant(index[name]), ast.Load())

    return read


def compile_expr(
    text: str, names: Mapping[str, int] | Iterable[str]
) -> Callable[[Sequence[Any]], Any]:
    """A function of a sequence of values computing ``text``.

    Args:
        text: An expression of the full language.
        names: The known names: a mapping name → position in the sequence, or the names in
            the sequence's order.

    Returns:
        ``f(values)``; it raises what Python's math raises (``ZeroDivisionError``,
        ``ValueError`` for log(-1), ``OverflowError``): callers decide what that means.

    Raises:
        KeyError: A name that is not known (the caller names the spec key).
        ValueError: ``text`` is outside the language.
    """
    index = names if isinstance(names, Mapping) else {n: i for i, n in enumerate(names)}
    missing = parse(text) - set(index)
    if missing:
        raise KeyError(sorted(missing)[0])
    return build_function(["v"], rewrite(text, _index_read(index)))


# ---------------------------------------------------------------- derived observations


def _indexed(expr: str, index: Mapping[str, int]) -> ast.expr:
    """The checked derived-observation tree with each state name read as ``v[index]``.

    Raises:
        KeyError: A name that is not in ``index``.
        ValueError: Anything outside the derived subset.
    """
    tree = _tree(expr)
    missing = _check(expr, tree, derived=True) - set(index)
    if missing:
        raise KeyError(sorted(missing)[0])
    read = _index_read(index)

    class _ToIndex(ast.NodeTransformer):
        def visit_Call(self, node: ast.Call) -> ast.AST:
            node.args = [self.visit(a) for a in node.args]
            return node

        def visit_Name(self, node: ast.Name) -> ast.AST:
            return ast.copy_location(read(node.id), node)

    return _ToIndex().visit(tree).body  # type: ignore[no-any-return]


def compile_derived(expr: str, index: Mapping[str, int]) -> Callable[[Sequence[float]], float]:
    """A function of the packed states computing a derived observation (written as is).

    Raises:
        KeyError: A name that is not in ``index`` (the caller names the spec key).
        ValueError: Anything outside the derived subset.
    """
    return build_function(["v"], _indexed(expr, index))


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
        ValueError: An expression outside the derived subset.
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
    exec("\n".join(lines), namespace)  # generated from checked trees, not from user text
    return namespace["observe"]  # type: ignore[return-value]
