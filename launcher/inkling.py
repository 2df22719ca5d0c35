"""``simgym import-inkling``: a Bonsai training definition (Inkling 2.0) as simgym specs.

One ``.ink`` file becomes the env spec (``spec.yaml``: observations, actions, reward or goals,
terminal condition, lessons, ``max_episode_steps``) and the training spec (``train.yaml``).
The file is parsed with lark (grammar: ``inkling.lark`` beside this module), then translated:

* ``type``s: ``number``, ranges ``number<lo .. hi [step s]>``, enumerations ``number<0, 1>``
  and ``number<off=0, on=1>``, ``Number.Int8``... (integer kinds), ``Number.Bool``,
  structures, literal types; ``const``s with expressions (folded to numbers);
* the graph's input type (what the agent observes), the concept's output type (actions),
  the simulator's state type (what reward/terminal/goals read) and config type (lessons);
* ``goal`` objectives (``avoid``/``drive``/``reach``/``minimize``/``maximize`` with
  ``Goal.Range``/``RangeAbove``/``RangeBelow``, ``weight``, ``within``) -> ``goals:``;
* ``reward``/``terminal`` functions and the functions they call, within a subset
  (arithmetic, ``Math.*``, comparisons, ``and``/``or``/``not``, ``if``/``else``, ``var``,
  ``return``), inlined into one expression of gymclient.expr's language each;
* ``training { EpisodeIterationLimit }`` -> ``max_episode_steps``; lessons and scenarios
  -> ``lessons:`` (several -> the list form with an advance rule).

Anything outside that subset is an ``InklingError`` naming ``file:line:col`` and the
construct: the importer never guesses. docs/inkling.md has the mapping table.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gymclient.errors import SimgymError

if TYPE_CHECKING:
    from lark import Tree

GRAMMAR = Path(__file__).with_name("inkling.lark")

#: Bonsai's default episode length when ``EpisodeIterationLimit`` is not given.
BONSAI_EPISODE_ITERATION_LIMIT = 1000
#: Our advance rule for a lesson of a goal curriculum that names no threshold.
DEFAULT_SUCCESS_THRESHOLD = 0.9
_ALGORITHMS = {"PPO", "APPO", "IMPALA"}
#: train.yaml's ``config:`` for PPO (lr, discount, batch of 2000 steps in 8 minibatches).
PPO_RECIPE: dict[str, Any] = {
    "lr": 0.0003,
    "gamma": 0.99,
    "train_batch_size_per_learner": 2000,
    "minibatch_size": 250,
    "num_epochs": 10,
}
_IGNORED_SETTINGS = {
    "NoProgressIterationLimit": "simgym stops on stop: conditions (train.yaml)",
    "EpisodeIterationLimitPerLesson": "not supported",
}

# Math.* (case-insensitive) -> the expression language's function, or an operator.
_MATH_FUNCTIONS = {
    "abs": "abs",
    "sqrt": "sqrt",
    "exp": "exp",
    "log": "log",
    "ln": "log",
    "log10": "log10",
    "floor": "floor",
    "ceil": "ceil",
    "round": "round",
    "sin": "sin",
    "cos": "cos",
    "tan": "tan",
    "asin": "asin",
    "acos": "acos",
    "atan": "atan",
    "atan2": "atan2",
    "sinh": "sinh",
    "cosh": "cosh",
    "tanh": "tanh",
    "hypot": "hypot",
    "min": "min",
    "max": "max",
}
_MATH_CONSTANTS = {"pi": math.pi, "e": math.e}
# What constant folding may call: the same functions, Python's own implementations.
_FOLD_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "min": min,
    "max": max,
    "round": round,
    **{
        name: getattr(math, name)
        for name in (
            "sqrt exp log log10 floor ceil sin cos tan asin acos atan atan2 sinh cosh tanh hypot"
        ).split()
    },
}
_INT_KINDS = {f"{p}{n}" for p in ("int", "uint") for n in (8, 16, 32, 64)}
_FLOAT_KINDS = {"float32", "float64"}
_BINOPS: dict[str, ast.operator] = {
    "+": ast.Add(),
    "-": ast.Sub(),
    "*": ast.Mult(),
    "/": ast.Div(),
    "%": ast.Mod(),
}
_PASS_THROUGH = {"power_", "sum_", "term_", "compare", "and_", "or_"}
_CMPOPS: dict[str, ast.cmpop] = {
    "==": ast.Eq(),
    "!=": ast.NotEq(),
    "<": ast.Lt(),
    "<=": ast.LtE(),
    ">": ast.Gt(),
    ">=": ast.GtE(),
}


class InklingError(SimgymError):
    """A construct the importer cannot translate, or a malformed file.

    The message is one line: ``file:line:col: construct: what is wrong``.
    """

    def __init__(self, source: str, line: int, column: int, construct: str, problem: str):
        super().__init__(f"{source}:{line}:{column}: {construct}: {problem}")
        self.source, self.line, self.column = source, line, column
        self.construct, self.problem = construct, problem


# ---- types ------------------------------------------------------------------------------


@dataclass
class NumberType:
    """A ``number`` with its constraint: a range, values, named values, or none."""

    integer: bool = False
    lo: float | None = None
    hi: float | None = None
    step: float | None = None
    values: list[float] | None = None
    named: dict[str, float] | None = None
    where: tuple[int, int] = (0, 0)

    @property
    def bounded(self) -> bool:
        """Whether a range or a value set is known."""
        return self.lo is not None or self.values is not None or self.named is not None


@dataclass
class StructType:
    """A structure: field name -> (type, position)."""

    fields: dict[str, tuple[Any, tuple[int, int]]]
    where: tuple[int, int] = (0, 0)


@dataclass
class OtherType:
    """A type the spec has no place for (string, array); ``what`` names it."""

    what: str
    where: tuple[int, int] = (0, 0)


InkType = NumberType | StructType | OtherType


@dataclass
class _StateRef:
    """A function parameter bound to the simulator's state: ``S.field`` reads a state."""

    struct: StructType | None
    type_name: str


@dataclass
class _Source:
    """The curriculum's simulator: its action, config and state types."""

    action: StructType
    config: StructType | None
    state: StructType | None
    state_name: str
    package: list[str]


@dataclass
class Imported:
    """What an import produced: the two specs (as YAML-ready dicts) and notes for the user."""

    spec: dict[str, Any]
    train: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    concept: str = ""


def _lark() -> Any:
    try:
        import lark
    except ModuleNotFoundError:
        raise SimgymError(
            "import-inkling needs the lark parser: pip install 'simgym[train]' "
            "(or pip install lark)"
        ) from None
    return lark


_PARSER: Any = None


def _parser() -> Any:
    global _PARSER
    if _PARSER is None:
        lark = _lark()
        _PARSER = lark.Lark(
            GRAMMAR.read_text(encoding="utf-8"),
            parser="lalr",
            propagate_positions=True,
            maybe_placeholders=True,
        )
    return _PARSER


def parse_inkling(text: str, source: str = "<inkling>") -> Tree:
    """The parse tree of an Inkling 2.0 text.

    Raises:
        InklingError: A syntax error (with its position), or Inkling 1 (``schema ... end``).
    """
    lark = _lark()
    try:
        return _parser().parse(text)  # type: ignore[no-any-return]
    except lark.UnexpectedInput as exc:
        line, column = exc.line, exc.column
        token = getattr(exc, "token", None)
        if token is not None and str(token) == "schema":
            raise InklingError(
                source,
                line,
                column,
                "schema",
                "Inkling 1 (schema ... end) is not supported; import an Inkling 2.0 file "
                '(inkling "2.0")',
            ) from None
        if token is not None:
            found = "end of file" if token.type == "$END" else repr(str(token))
            expected = sorted({_readable(t) for t in getattr(exc, "expected", ()) or ()} - {""})
            hint = f" (expected one of: {' '.join(expected[:10])})" if expected else ""
            raise InklingError(
                source, line, column, "syntax", f"unexpected {found}{hint}"
            ) from None
        char = getattr(exc, "char", "")
        raise InklingError(source, line, column, "syntax", f"unexpected {char!r}") from None


_PUNCTUATION = {
    "LBRACE": "{", "RBRACE": "}", "LPAR": "(", "RPAR": ")", "LSQB": "[", "RSQB": "]",
    "COLON": ":", "COMMA": ",", "DOT": ".", "EQUAL": "=", "MINUS": "-", "PLUS": "+", "LT": "<",
    "GT": ">", "MUL_OP": "*", "COMP_OP": "==", "NAME": "name", "QUOTED_NAME": "`name`",
    "NUMBER": "number", "STRING": "string", "$END": "end-of-file",
}  # fmt: skip


def _readable(terminal: str) -> str:
    """A lark terminal's name as the user would type it (``LBRACE`` -> ``{``)."""
    if terminal in _PUNCTUATION:
        return _PUNCTUATION[terminal]
    if terminal.isalpha() and terminal.isupper():
        return terminal.lower()  # a keyword: TRAINING -> training
    return ""


# ---- the importer -----------------------------------------------------------------------


def _is_tree(node: Any, data: str | None = None) -> bool:
    return hasattr(node, "data") and (data is None or node.data == data)


def _unwrap(node: Any) -> Any:
    """The node under one-child operator levels (lark keeps aliased ``?rule``s)."""
    while _is_tree(node) and node.data in _PASS_THROUGH and len(node.children) == 1:
        node = node.children[0]
    return node


class _Importer:
    def __init__(self, tree: Tree, source: str) -> None:
        self.source = source
        self.tree = tree
        self.notes: list[str] = []
        self.const_nodes: dict[str, Any] = {}
        self.consts: dict[str, Any] = {}
        self.type_nodes: dict[str, Any] = {}
        self.types: dict[str, InkType] = {}
        self.functions: dict[str, Any] = {}
        self.simulators: dict[str, Any] = {}
        self.graph: Any = None
        self._inlining: list[str] = []
        for item in tree.children:
            kind = item.data
            if kind in ("inkling_decl", "using_decl"):
                continue
            if kind == "graph_decl":
                if self.graph is not None:
                    self.fail(item, "graph", "a file has one graph")
                self.graph = item
                continue
            name = self.name(item.children[0])
            table = {
                "const_decl": self.const_nodes,
                "type_decl": self.type_nodes,
                "function_decl": self.functions,
                "simulator_decl": self.simulators,
            }[kind]
            if name in table:
                self.fail(item, kind.removesuffix("_decl"), f"{name!r} is defined twice")
            table[name] = item

    # -- helpers --------------------------------------------------------------------------

    def where(self, node: Any) -> tuple[int, int]:
        if hasattr(node, "line") and node.line is not None:  # a Token
            return node.line, node.column
        meta = getattr(node, "meta", None)
        if meta is not None and not getattr(meta, "empty", True):
            return meta.line, meta.column
        for child in getattr(node, "children", ()):
            if child is not None:
                found = self.where(child)
                if found != (0, 0):
                    return found
        return 0, 0

    def fail(self, node: Any, construct: str, problem: str) -> Any:
        line, column = node if isinstance(node, tuple) else self.where(node)
        raise InklingError(self.source, line, column, construct, problem)

    def name(self, node: Any) -> str:
        """A ``name`` node's text (backticks removed)."""
        token = node.children[0] if _is_tree(node) else node
        text = str(token)
        return text[1:-1] if text.startswith("`") else text

    # -- constants and constant expressions ------------------------------------------------

    def const(self, name: str, node: Any) -> Any:
        if name in self.consts:
            return self.consts[name]
        if name not in self.const_nodes:
            self.fail(node, "name", f"{name!r} is not a const")
        decl = self.const_nodes[name]
        if name in self._inlining:
            self.fail(decl, "const", f"{name!r} is defined in terms of itself")
        self._inlining.append(name)
        try:
            value_node = _unwrap(decl.children[2])
            if _is_tree(value_node, "string"):
                value: Any = ast.literal_eval(str(value_node.children[0]))
            else:
                value = self.number(value_node, "const")
        finally:
            self._inlining.pop()
        self.consts[name] = value
        return value

    def number(self, node: Any, construct: str) -> float:
        """A constant expression's value (consts, arithmetic, Math.*, functions of them)."""
        tree = _fold(self.expr(node, {}))
        if not isinstance(tree, ast.Constant) or not _is_number(tree.value):
            self.fail(node, construct, "must be a constant number expression")
        value = tree.value  # type: ignore[attr-defined]
        return int(value) if isinstance(value, bool) else value  # type: ignore[no-any-return]

    # -- types -----------------------------------------------------------------------------

    def resolve(self, node: Any) -> InkType:
        at = self.where(node)
        kind = node.data
        if kind == "constrained":
            head, constraint = node.children
            if _is_tree(head, "dotted"):
                parts = [self.name(n) for n in head.children]
                base = self.named_type(parts, head)
            else:
                base = NumberType(where=at)
            if constraint is None:
                return base
            if not isinstance(base, NumberType):
                return self.fail(constraint, "type", "a <constraint> applies to numbers only")
            return self.constrain(base, constraint)
        if kind == "struct_type":
            fields: dict[str, tuple[Any, tuple[int, int]]] = {}
            if node.children and node.children[0] is not None:
                for f in node.children[0].children:
                    fname = self.name(f.children[0])
                    if fname in fields:
                        self.fail(f, "type", f"field {fname!r} is given twice")
                    fields[fname] = (self.resolve(f.children[1]), self.where(f))
            return StructType(fields, at)
        if kind == "array_type":
            return OtherType("an array type (T[n])", at)
        if kind == "string_type":
            return OtherType("a string type", at)
        if kind == "literal_type":
            minus, number = node.children
            value = _number_text(str(number))
            return NumberType(
                integer=isinstance(value, int),
                values=[-value if minus is not None else value],
                where=at,
            )
        return self.fail(node, "type", f"unexpected {kind}")  # pragma: no cover

    def named_type(self, parts: list[str], node: Any) -> InkType:
        at = self.where(node)
        if len(parts) == 2 and parts[0] == "Number":
            kind = parts[1].lower()
            if kind in _INT_KINDS:
                return NumberType(integer=True, where=at)
            if kind in _FLOAT_KINDS:
                return NumberType(where=at)
            if kind == "bool":
                return NumberType(integer=True, values=[0, 1], where=at)
            return self.fail(node, "type", f"Number.{parts[1]} is not a number type")
        if len(parts) != 1:
            return self.fail(node, "type", f"unknown type {'.'.join(parts)}")
        name = parts[0]
        if name in self.types:
            return self.types[name]
        if name not in self.type_nodes:
            return self.fail(node, "type", f"unknown type {name!r}")
        if name in self._inlining:
            return self.fail(node, "type", f"type {name!r} is defined in terms of itself")
        self._inlining.append(name)
        try:
            resolved = self.resolve(self.type_nodes[name].children[1])
        finally:
            self._inlining.pop()
        self.types[name] = resolved
        return resolved

    def constrain(self, base: NumberType, constraint: Any) -> NumberType:
        body = constraint.children[1]
        at = self.where(constraint)
        if body.data == "range_c":
            lo_n, hi_n, step_n = body.children
            lo, hi = self.number(lo_n, "range"), self.number(hi_n, "range")
            step = self.number(step_n, "range step") if step_n is not None else None
            if hi < lo:
                self.fail(constraint, "range", f"high end {hi} is below low end {lo}")
            if step is not None and not step > 0:
                self.fail(step_n, "range step", f"step {step} must be positive")
            if step is None and base.integer:
                step = 1
            return NumberType(integer=base.integer, lo=lo, hi=hi, step=step, where=at)
        values: list[float] = []
        named: dict[str, float] = {}
        for item in body.children:
            if item.data == "enum_named":
                named[self.name(item.children[0])] = self.number(item.children[1], "enumeration")
            else:
                values.append(self.number(item.children[0], "enumeration"))
        if named and values:
            self.fail(constraint, "enumeration", "mixes named and unnamed values")
        if named:
            return NumberType(integer=base.integer, named=named, where=at)
        return NumberType(integer=base.integer, values=values, where=at)

    def struct(self, node: Any, role: str) -> StructType:
        resolved = self.resolve(node)
        if not isinstance(resolved, StructType):
            return self.fail(node, role, "must be a structure type ({name: number, ...})")
        return resolved

    # -- expressions -----------------------------------------------------------------------

    def expr(self, node: Any, scope: dict[str, Any]) -> ast.expr:
        """Inkling expression -> Python ``ast`` in the expression language's subset.

        One piece: one dispatch over the grammar's expression rules, each branch a few lines.
        """
        kind = node.data if _is_tree(node) else "token"
        kids = node.children if _is_tree(node) else []
        if len(kids) == 1 and kind in _PASS_THROUGH:
            # An aliased `?rule` with one child is not inlined by lark: it is its child.
            return self.expr(kids[0], scope)
        if kind == "number":
            return ast.Constant(_number_text(str(kids[0])))
        if kind in ("true", "false"):
            return ast.Constant(kind == "true")
        if kind == "string":
            return self.fail(node, "string", "strings have no place in a numeric expression")
        if kind == "ref":
            name = self.name(kids[0])
            if name in scope:
                value = scope[name]
                if isinstance(value, _StateRef):
                    return self.fail(
                        node, "structure", f"{name!r} is a structure: use one of its fields"
                    )
                if value is None:
                    return self.fail(node, "var", f"{name!r} is read before it is given a value")
                return value  # type: ignore[no-any-return]
            if name in self.const_nodes:
                value = self.const(name, node)
                if isinstance(value, str):
                    return self.fail(node, "string", f"const {name!r} is a string")
                return ast.Constant(value)
            if name in ("Math", "Goal", "Number"):
                return self.fail(node, name, f"{name} needs a member ({name}.X)")
            return self.fail(node, "name", f"unknown name {name!r}")
        if kind == "member":
            target, attr = kids
            attr_name = str(attr)
            if _is_tree(target, "ref"):
                base = self.name(target.children[0])
                if base == "Math" and base not in scope:
                    const = _MATH_CONSTANTS.get(attr_name.lower())
                    if const is None:
                        return self.fail(node, f"Math.{attr_name}", "not a constant (call it?)")
                    return ast.Constant(const)
                ref = scope.get(base)
                if isinstance(ref, _StateRef):
                    return self.state_field(ref, attr_name, node)
            return self.fail(node, "member access", "only State.field and Math.Pi/Math.E")
        if kind == "call":
            target, args_node = kids
            args = list(args_node.children) if args_node is not None else []
            if _is_tree(target, "member") and _is_tree(target.children[0], "ref"):
                base = self.name(target.children[0].children[0])
                fname = str(target.children[1])
                if base == "Math" and base not in scope:
                    return self.math_call(fname, args, scope, node)
                if base == "Goal":
                    return self.fail(node, f"Goal.{fname}", "goal functions belong after `in`")
            if _is_tree(target, "ref"):
                fname = self.name(target.children[0])
                if fname in self.functions:
                    return self.inline(fname, args, scope, node)
                return self.fail(node, "call", f"unknown function {fname!r}")
            return self.fail(node, "call", "only Math.* and functions of this file")
        if kind == "index":
            return self.fail(node, "array index", "arrays are not supported (states are numbers)")
        if kind == "array":
            return self.fail(node, "array literal", "arrays are not supported")
        if kind == "struct":
            return self.fail(node, "structure literal", "a function must return a number")
        if kind in ("neg", "pos"):
            operand = self.expr(kids[1], scope)
            return ast.UnaryOp(ast.USub() if kind == "neg" else ast.UAdd(), operand)
        if kind == "power_":
            return ast.BinOp(self.expr(kids[0], scope), ast.Pow(), self.expr(kids[1], scope))
        if kind in ("sum_", "term_"):
            tree = self.expr(kids[0], scope)
            for sign, right in zip(kids[1::2], kids[2::2], strict=True):
                tree = ast.BinOp(tree, _BINOPS[str(sign)], self.expr(right, scope))
            return tree
        if kind == "compare":
            return ast.Compare(
                self.expr(kids[0], scope),
                [_CMPOPS[str(op)] for op in kids[1::2]],
                [self.expr(k, scope) for k in kids[2::2]],
            )
        if kind in ("and_", "or_"):
            op: ast.boolop = ast.And() if kind == "and_" else ast.Or()
            return ast.BoolOp(op, [self.expr(k, scope) for k in kids])
        if kind == "not_":
            return ast.UnaryOp(ast.Not(), self.expr(kids[0], scope))
        return self.fail(node, kind, "not supported in an expression")  # pragma: no cover

    def state_field(self, ref: _StateRef, attr: str, node: Any) -> ast.expr:
        if ref.struct is not None:
            if attr not in ref.struct.fields:
                self.fail(node, "member access", f"{ref.type_name} has no field {attr!r}")
            ftype = ref.struct.fields[attr][0]
            if isinstance(ftype, StructType):
                self.fail(node, "member access", f"{attr!r} is a nested structure")
            if isinstance(ftype, OtherType):
                self.fail(node, "member access", f"{attr!r} is {ftype.what}")
        return ast.Name(attr, ast.Load())

    def math_call(self, fname: str, args: list[Any], scope: dict[str, Any], node: Any) -> ast.expr:
        values = [self.expr(a, scope) for a in args]
        key = fname.lower()
        if key == "pow" and len(values) == 2:
            return ast.BinOp(values[0], ast.Pow(), values[1])
        target = _MATH_FUNCTIONS.get(key)
        if target is None:
            return self.fail(node, f"Math.{fname}", "not in the supported subset")
        return ast.Call(ast.Name(target, ast.Load()), values, [])

    def inline(self, fname: str, args: list[Any], scope: dict[str, Any], node: Any) -> ast.expr:
        decl = self.functions[fname]
        if fname in self._inlining:
            return self.fail(node, f"function {fname}", "recursion is not supported")
        params = decl.children[1].children if decl.children[1] is not None else []
        if len(params) != len(args):
            self.fail(
                node, f"function {fname}", f"takes {len(params)} arguments, {len(args)} given"
            )
        inner: dict[str, Any] = {}
        for param, arg_node in zip(params, args, strict=True):
            arg = _unwrap(arg_node)
            pname = self.name(param.children[0])
            if _is_tree(arg, "ref") and isinstance(
                scope.get(self.name(arg.children[0])), _StateRef
            ):
                inner[pname] = scope[self.name(arg.children[0])]
            else:
                inner[pname] = self.expr(arg, scope)
        self._inlining.append(fname)
        try:
            return self.body(decl, inner)
        finally:
            self._inlining.pop()

    def body(self, decl: Any, scope: dict[str, Any]) -> ast.expr:
        fname = self.name(decl.children[0])
        block = decl.children[3]
        result = self.run(list(block.children), dict(scope), fname)
        if result is None:
            return self.fail(decl, f"function {fname}", "does not return a value on every path")
        return result

    def run(self, stmts: list[Any], env: dict[str, Any], fname: str) -> ast.expr | None:
        """Symbolic execution: the value the statements return, as one expression.

        An ``if`` splits the rest of the body into its branches (so an assignment in a branch
        is seen by what follows); the branches' returns join as ``a if cond else b``.
        """
        for i, stmt in enumerate(stmts):
            kind = stmt.data
            if kind == "var_stmt":
                vname = self.name(stmt.children[0])
                value = stmt.children[2]
                env[vname] = self.expr(value, env) if value is not None else None
            elif kind == "assign_stmt":
                target = stmt.children[0]
                if not _is_tree(target, "ref"):
                    self.fail(stmt, "assignment", "only to a var of the function")
                vname = self.name(target.children[0])
                if vname not in env or isinstance(env[vname], _StateRef):
                    self.fail(stmt, "assignment", f"{vname!r} is not a var of function {fname}")
                env[vname] = self.expr(stmt.children[1], env)
            elif kind == "return_stmt":
                return self.expr(stmt.children[0], env)
            elif kind == "if_stmt":
                rest = stmts[i + 1 :]
                cond, block, *elifs, else_block = stmt.children
                branches = [(cond, block)] + [(e.children[0], e.children[1]) for e in elifs]
                tail = list(else_block.children) if else_block is not None else []
                result = self.run(tail + rest, dict(env), fname)
                for c, b in reversed(branches):
                    taken = self.run(list(b.children) + rest, dict(env), fname)
                    if taken is None or result is None:
                        return None
                    result = ast.IfExp(self.expr(c, env), taken, result)
                return result
            else:  # pragma: no cover - the grammar has no other statements
                self.fail(stmt, kind, "not supported")
        return None

    def function_expr(self, fname: str, hook: Any, state: StructType | None, sname: str) -> str:
        """A reward/terminal function as one expression text over state names."""
        if fname not in self.functions:
            return self.fail(hook, "function", f"unknown function {fname!r}")  # type: ignore[no-any-return]
        decl = self.functions[fname]
        params = decl.children[1].children if decl.children[1] is not None else []
        if not params:
            self.fail(decl, f"function {fname}", "takes no state parameter")
        scope: dict[str, Any] = {self.name(params[0].children[0]): _StateRef(state, sname)}
        for extra in params[1:]:
            # Bonsai passes the action as a second parameter: readable only as a mistake here.
            scope[self.name(extra.children[0])] = None
        self._inlining.append(fname)
        try:
            tree = self.body(decl, scope)
        finally:
            self._inlining.pop()
        return self.emit(tree, decl, f"function {fname}")

    def emit(self, tree: ast.expr, node: Any, construct: str) -> str:
        """Simplify, print and validate an expression against gymclient.expr."""
        text = ast.unparse(_numeric(_simplify(_fold(tree))))
        from gymclient.expr import parse

        try:
            parse(text)
        except ValueError as exc:
            self.fail(node, construct, f"the expression language rejects {text!r}: {exc}")
        return text

    # -- the graph -------------------------------------------------------------------------

    def concepts(self) -> list[Any]:
        return [c for c in self.graph.children[2:] if _is_tree(c, "concept")]

    def pick_concept(self, wanted: str | None) -> Any:
        if self.graph is None:
            return self.fail((1, 1), "graph", "the file has no graph")
        concepts = self.concepts()
        names = [self.name(c.children[1]) for c in concepts]
        if wanted is not None:
            if wanted not in names:
                return self.fail(
                    self.graph, "graph", f"no concept {wanted!r} (concepts: {', '.join(names)})"
                )
            return concepts[names.index(wanted)]
        if len(concepts) == 1:
            return concepts[0]
        return self.fail(
            self.graph,
            "graph",
            f"{len(concepts)} concepts ({', '.join(names)}): a multi-concept graph is not "
            "supported; import one learned concept with --concept NAME",
        )

    def run_import(self, concept_name: str | None, sim: str | None, name: str | None) -> Imported:
        concept = self.pick_concept(concept_name)
        cname = self.name(concept.children[1])
        observed, curriculum = self.concept_parts(concept, cname)
        src = self.simulator_types(curriculum, concept, cname)
        spec: dict[str, Any] = {"name": name or cname}
        if sim:
            spec["sim"] = {"target": sim}
        else:
            where = f" (Bonsai package {src.package[0]!r})" if src.package else ""
            self.notes.append(
                f"the .ink does not say how to start the sim{where}: add sim.target "
                "to spec.yaml, or import again with --sim file.py:Class"
            )
        spec["observations"] = self.observations(observed, src.state, src.state_name)
        spec["actions"] = self.actions(src.action)
        settings, algorithm, lesson_nodes = self.curriculum(curriculum.children, src, spec)
        total, lesson_settings = self.episode_settings(settings, spec)
        lessons = self.lessons(lesson_nodes, src.config, lesson_settings, "goals" in spec)
        if lessons is not None:
            spec["lessons"] = lessons
        train: dict[str, Any] = {
            "env": "spec.yaml",
            "algorithm": algorithm,
            "stop": {"max_time": "30m"},
            "experiment": spec["name"],
        }
        if algorithm == "PPO":
            # Bonsai users never chose hyperparameters: a recipe that trains small control
            # problems in minutes (examples/bonsai-cartpole's), rather than RLlib's defaults.
            train["config"] = dict(PPO_RECIPE)
        if total is not None:
            train["stop"]["env_steps"] = self.count(total, "TotalIterationLimit")
        return Imported(spec, train, self.notes, cname)

    def concept_parts(self, concept: Any, cname: str) -> tuple[StructType, Any]:
        """The observed type (the graph's input) and the concept's curriculum."""
        graph_param = self.graph.children[0]
        input_name = self.name(graph_param.children[0])
        if graph_param.children[1] is None:
            self.fail(graph_param, "graph", "the graph's input needs a type")
        observed = self.struct(graph_param.children[1], "graph input")
        body = concept.children[4:]
        for item in body:
            if _is_tree(item, "select_stmt"):
                self.fail(item, "select", "a selector concept is not supported")
            if _is_tree(item, "programmed_stmt"):
                self.fail(item, "programmed", "a programmed concept is not supported")
        inputs = concept.children[2]
        if inputs is not None:
            for n in inputs.children:
                if self.name(n) != input_name:
                    self.fail(n, f"concept {cname}", f"input {self.name(n)!r} is not the graph's")
        curricula = [c for c in body if _is_tree(c, "curriculum")]
        if not curricula:
            self.fail(concept, f"concept {cname}", "has no curriculum")
        return observed, curricula[0]

    def simulator_types(self, curriculum: Any, concept: Any, cname: str) -> _Source:
        """The simulator: inline (``source simulator (Action: A, Config: C): S {}``) or named."""
        items = curriculum.children
        sim_decl: Any = None
        for item in items:
            if _is_tree(item, "source_inline"):
                sim_decl = item
            elif _is_tree(item, "source_named"):
                sname = self.name(item.children[0])
                if sname not in self.simulators:
                    self.fail(item, "source", f"no simulator {sname!r} in the file")
                sim_decl = self.simulators[sname]
        if sim_decl is None:
            self.fail(curriculum, "curriculum", "has no source simulator")
        offset = 1  # after the name (inline sources may leave it out: a placeholder)
        sim_params = sim_decl.children[offset].children if sim_decl.children[offset] else []
        action_t: StructType | None = None
        config_t: StructType | None = None
        for p in sim_params:
            pname = self.name(p.children[0]).lower()
            if p.children[1] is None:
                continue
            if pname == "action":
                action_t = self.struct(p.children[1], "simulator action")
            elif pname == "config":
                config_t = self.struct(p.children[1], "simulator config")
        state_node = sim_decl.children[offset + 1]
        state_t = self.struct(state_node, "simulator state") if state_node is not None else None
        state_name = _type_name(state_node) if state_node is not None else "state"
        if concept.children[3] is not None:
            action_t = self.struct(concept.children[3], f"concept {cname} output")
        elif self.graph.children[1] is not None:
            action_t = self.struct(self.graph.children[1], "graph output")
        if action_t is None:
            self.fail(concept, f"concept {cname}", "has no action type")
        assert action_t is not None
        package = [str(i.children[1]).strip('"') for i in sim_decl.children[-1].children]
        return _Source(action_t, config_t, state_t, state_name, package)

    def curriculum(
        self, items: list[Any], src: _Source, spec: dict[str, Any]
    ) -> tuple[dict[str, tuple[Any, Any]], str, list[Any]]:
        """Reward, terminal and goals into ``spec``; the training settings, algorithm, lessons."""
        state_t, state_name = src.state, src.state_name
        reward = terminal = None
        goals: dict[str, Any] = {}
        settings: dict[str, tuple[Any, Any]] = {}
        algorithm = "PPO"
        lessons_nodes: list[Any] = []
        for item in items:
            kind = item.data
            if kind == "hook_stmt":
                hook = str(item.children[0].children[0])
                fname = self.name(item.children[1])
                if hook == "reward":
                    reward = self.function_expr(fname, item, state_t, state_name)
                elif hook == "terminal":
                    terminal = self.function_expr(fname, item, state_t, state_name)
                else:
                    what = {"state": "state transform", "action": "action transform"}
                    self.fail(
                        item,
                        f"{hook} {fname}",
                        f"{what.get(hook, 'an action mask')} functions are not supported",
                    )
            elif kind == "goal_block":
                goals.update(self.goals(item, state_t, state_name))
            elif kind == "training_block":
                settings.update(self.settings(item))
            elif kind == "algorithm_block":
                algorithm = self.algorithm(item, algorithm)
            elif kind == "lesson":
                lessons_nodes.append(item)
        if reward is not None:
            spec["reward"] = {"expr": reward}
        if terminal is not None:
            spec["terminal"] = terminal
        if goals:
            spec["goals"] = goals
        if reward is None and not goals:
            self.notes.append("no reward function and no goal: training uses the sim's reward")
        return settings, algorithm, lessons_nodes

    def episode_settings(
        self, settings: dict[str, tuple[Any, Any]], spec: dict[str, Any]
    ) -> tuple[Any, dict[str, tuple[Any, Any]]]:
        """``max_episode_steps`` into ``spec``; TotalIterationLimit and the lesson settings."""
        limit = settings.pop("EpisodeIterationLimit", None)
        if limit is None:
            spec["max_episode_steps"] = BONSAI_EPISODE_ITERATION_LIMIT
            self.notes.append(
                f"no EpisodeIterationLimit: max_episode_steps {BONSAI_EPISODE_ITERATION_LIMIT} "
                "(Bonsai's default)"
            )
        else:
            spec["max_episode_steps"] = self.count(limit, "EpisodeIterationLimit")
        total = settings.pop("TotalIterationLimit", None)
        lesson_settings: dict[str, tuple[Any, Any]] = {
            k: settings.pop(k)
            for k in ("LessonRewardThreshold", "LessonSuccessThreshold", "LessonAssessmentWindow")
            if k in settings
        }
        for key, (node, _) in settings.items():
            why = _IGNORED_SETTINGS.get(key)
            if why is None:
                self.fail(node, f"training.{key}", "not a training setting simgym knows")
            self.notes.append(f"training.{key} ignored: {why}")
        return total, lesson_settings

    def count(self, setting: tuple[Any, Any], key: str) -> int:
        node, value_node = setting
        value = self.number(value_node, f"training.{key}")
        if value != int(value) or value < 1:
            self.fail(node, f"training.{key}", f"{value} is not a positive whole number")
        return int(value)

    def settings(self, block: Any) -> dict[str, tuple[Any, Any]]:
        out: dict[str, tuple[Any, Any]] = {}
        if block.children and block.children[0] is not None:
            for s in block.children[0].children:
                out[self.name(s.children[0])] = (s, s.children[1])
        return out

    def algorithm(self, block: Any, default: str) -> str:
        chosen = default
        for key, (node, value) in self.settings(block).items():
            value = _unwrap(value)
            if key == "Algorithm" and _is_tree(value, "string"):
                text = ast.literal_eval(str(value.children[0])).upper()
                if text in _ALGORITHMS:
                    chosen = text
                else:
                    self.notes.append(
                        f"algorithm {text} is not one simgym trains with: train.yaml uses "
                        f"{default} (choose IMPALA, APPO or PPO there)"
                    )
            else:
                line, col = self.where(node)
                self.notes.append(
                    f"algorithm.{key} ({line}:{col}) ignored: set RLlib settings in train.yaml "
                    "config:"
                )
        return chosen

    # -- observations, actions ---------------------------------------------------------------

    def observations(
        self, observed: StructType, state: StructType | None, state_name: str
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for fname, (ftype, at) in observed.fields.items():
            self.scalar(ftype, at, f"observation {fname}")
            if state is not None and fname not in state.fields:
                self.fail(at, f"observation {fname}", f"not a field of the sim's {state_name}")
            assert isinstance(ftype, NumberType)
            if ftype.lo is not None and ftype.hi is not None and ftype.hi > ftype.lo:
                out[fname] = {"min": ftype.lo, "max": ftype.hi}
            elif ftype.values or ftype.named:
                values = list(ftype.values or (ftype.named or {}).values())
                if max(values) > min(values):
                    out[fname] = {"min": min(values), "max": max(values)}
                else:
                    out[fname] = {}
            else:
                out[fname] = {}
        return out

    def actions(self, action: StructType) -> dict[str, Any]:
        out: dict[str, Any] = {}
        kinds: dict[bool, str] = {}
        for fname, (ftype, _) in action.fields.items():
            if isinstance(ftype, NumberType):
                discrete = ftype.values is not None or ftype.named is not None
                kinds.setdefault(discrete or ftype.step is not None, fname)
        if len(kinds) == 2:
            self.fail(
                action.where,
                "action type",
                f"mixes discrete ({kinds[True]}) and continuous ({kinds[False]}) actions: "
                "simgym trains one kind per spec (give the continuous one a step, or split "
                "the concept)",
            )
        for fname, (ftype, at) in action.fields.items():
            self.scalar(ftype, at, f"action {fname}")
            assert isinstance(ftype, NumberType)
            if ftype.named:
                out[fname] = {"values": dict(ftype.named)}
            elif ftype.values is not None:
                out[fname] = {"values": list(ftype.values)}
            elif ftype.lo is not None:
                entry: dict[str, Any] = {"min": ftype.lo, "max": ftype.hi}
                if ftype.step is not None:
                    entry["step"] = ftype.step
                out[fname] = entry
            else:
                self.fail(
                    at,
                    f"action {fname}",
                    "needs a range (number<lo .. hi>) or values (number<0, 1>)",
                )
        return out

    def scalar(self, ftype: InkType, at: tuple[int, int], what: str) -> None:
        if isinstance(ftype, StructType):
            self.fail(at, what, "a nested structure is not supported (states are flat numbers)")
        if isinstance(ftype, OtherType):
            self.fail(at, what, f"{ftype.what} is not supported (states are numbers)")

    # -- goals -----------------------------------------------------------------------------

    def goals(self, block: Any, state: StructType | None, state_name: str) -> dict[str, Any]:
        param = block.children[0]
        scope: dict[str, Any] = {self.name(param.children[0]): _StateRef(state, state_name)}
        out: dict[str, Any] = {}
        for objective in block.children[1:]:
            kind_node, name_node, weight, value, target, within = objective.children
            target = _unwrap(target)
            kind = str(kind_node.children[0])
            gname = self.name(name_node)
            construct = f"{kind} {gname}"
            goal: dict[str, Any] = {}
            if not (
                _is_tree(target, "call")
                and _is_tree(target.children[0], "member")
                and _is_tree(target.children[0].children[0], "ref")
                and self.name(target.children[0].children[0].children[0]) == "Goal"
            ):
                self.fail(target, construct, "expected Goal.Range/RangeAbove/RangeBelow(...)")
            gfun = str(target.children[0].children[1])
            args = list(target.children[1].children) if target.children[1] is not None else []
            expected = {"Range": 2, "RangeAbove": 1, "RangeBelow": 1, "Sphere": 2}
            if gfun not in expected:
                self.fail(target, f"Goal.{gfun}", "not a goal range simgym knows")
            if len(args) != expected[gfun]:
                self.fail(target, f"Goal.{gfun}", f"takes {expected[gfun]} argument(s)")
            if _is_tree(_unwrap(value), "array"):
                self.fail(value, construct, "a vector objective is not supported")
            goal[kind] = self.emit(self.expr(value, scope), value, construct)
            # Bounds are numbers; avoid/drive/reach also take expressions over states (a
            # target that moves), evaluated every step.
            moving = kind in ("avoid", "drive", "reach")
            bounds = [self.bound(a, scope, f"Goal.{gfun}", moving) for a in args]
            if gfun == "Sphere":  # a scalar's sphere: the range centre ± radius
                centre, radius = bounds
                if isinstance(centre, str) or isinstance(radius, str):
                    bounds = [
                        ast.unparse(ast.parse(f"({centre}) {op} ({radius})", mode="eval"))
                        for op in "-+"
                    ]
                else:
                    bounds = [centre - radius, centre + radius]
            if gfun in ("Range", "Sphere"):
                if all(not isinstance(b, str) for b in bounds) and bounds[1] < bounds[0]:
                    self.fail(target, f"Goal.{gfun}", f"high end {bounds[1]} below {bounds[0]}")
                goal["range"] = bounds
            else:
                goal["above" if gfun == "RangeAbove" else "below"] = bounds[0]
            if within is not None:
                if kind not in ("drive", "reach"):
                    self.fail(within, f"{construct} within", "only drive and reach take within")
                goal["within"] = self.number(within, f"{construct} within")
            if weight is not None:
                goal["weight"] = self.number(weight, f"{construct} weight")
            if gname in out:
                self.fail(objective, construct, "a goal of this name is given twice")
            out[gname] = goal
        return out

    def bound(self, node: Any, scope: dict[str, Any], construct: str, moving: bool) -> Any:
        """A goal bound: a number, or (``moving``) an expression text over states."""
        tree = _fold(self.expr(node, scope))
        if isinstance(tree, ast.Constant) and _is_number(tree.value):
            return int(tree.value) if isinstance(tree.value, bool) else tree.value
        if not moving:
            self.fail(node, construct, "minimize/maximize bounds must be constant numbers")
        return self.emit(tree, node, construct)

    # -- lessons ---------------------------------------------------------------------------

    def lessons(
        self,
        nodes: list[Any],
        config: StructType | None,
        curriculum_settings: dict[str, tuple[Any, Any]],
        has_goals: bool,
    ) -> Any:
        if not nodes:
            drawn = self.config_draws(config)
            if drawn:
                self.notes.append(
                    "no lesson: each episode draws the config fields that have a range in "
                    "their type; the others keep the sim's defaults"
                )
            return drawn or None
        lessons: list[dict[str, Any]] = []
        for node in nodes:
            lname = self.name(node.children[0])
            scenario: dict[str, Any] = {}
            settings = dict(curriculum_settings)
            own: dict[str, tuple[Any, Any]] = {}
            for part in node.children[2:]:
                if _is_tree(part, "scenario"):
                    scenario.update(self.scenario(part, config))
                elif _is_tree(part, "training_block"):
                    own.update(self.settings(part))
            settings.update(own)
            lessons.append(
                {"name": lname, "config": scenario, "_settings": settings, "_own": own, "_at": node}
            )
        if len(lessons) == 1:
            self.check_no_threshold(lessons[0])
            return lessons[0]["config"]
        out: list[dict[str, Any]] = []
        for i, lesson in enumerate(lessons):
            entry: dict[str, Any] = {"name": lesson["name"], "config": lesson["config"]}
            if i < len(lessons) - 1:
                entry["advance"] = self.advance(lesson, has_goals)
            else:
                self.check_no_threshold(lesson, last=True)
            out.append(entry)
        return out

    def check_no_threshold(self, lesson: dict[str, Any], last: bool = False) -> None:
        given = [k for k in lesson["_own"] if k.startswith("Lesson")]
        if given:
            why = "the last lesson has no next one" if last else "there is one lesson"
            self.notes.append(f"lesson {lesson['name']}: {', '.join(given)} ignored ({why})")

    def advance(self, lesson: dict[str, Any], has_goals: bool) -> dict[str, Any]:
        settings = lesson["_settings"]
        rule: dict[str, Any] = {}
        for key, (node, value) in settings.items():
            if key == "LessonRewardThreshold":
                rule["reward"] = self.number(value, f"training.{key}")
            elif key == "LessonSuccessThreshold":
                rule["success"] = self.number(value, f"training.{key}")
            elif key == "LessonAssessmentWindow":
                rule["min_episodes"] = self.count((node, value), key)
            elif key not in ("EpisodeIterationLimit",):
                self.fail(node, f"training.{key}", "not a lesson setting simgym knows")
        if "reward" not in rule and "success" not in rule:
            if not has_goals:
                self.fail(
                    lesson["_at"],
                    f"lesson {lesson['name']}",
                    "without goals, moving to the next lesson needs LessonRewardThreshold",
                )
            rule["success"] = DEFAULT_SUCCESS_THRESHOLD
            self.notes.append(
                f"lesson {lesson['name']}: no threshold given; it advances at a goal success "
                f"rate of {DEFAULT_SUCCESS_THRESHOLD}"
            )
        return rule

    def scenario(self, node: Any, config: StructType | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        fields = node.children[0].children if node.children[0] is not None else []
        for f in fields:
            key = self.name(f.children[0])
            value = f.children[1]
            if config is not None and key not in config.fields:
                self.fail(f, f"scenario {key}", "not a field of the simulator's config type")
            value = _unwrap(value)
            if _is_tree(value, "scenario_range"):
                constrained = self.constrain(NumberType(), value.children[1])
                out[key] = _draw(constrained)
            else:
                out[key] = self.number(value, f"scenario {key}")
        return out

    def config_draws(self, config: StructType | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for fname, (ftype, _) in (config.fields if config else {}).items():
            if isinstance(ftype, NumberType) and ftype.bounded:
                out[fname] = _draw(ftype)
        return out


def _type_name(node: Any) -> str:
    if _is_tree(node, "constrained") and _is_tree(node.children[0], "dotted"):
        return ".".join(
            str(n.children[0]).strip("`") for n in node.children[0].children if _is_tree(n)
        )
    return "state"


def _draw(t: NumberType) -> Any:
    """A lesson entry for a number type: a constant, a range (with step) or values."""
    if t.named is not None:
        values = list(t.named.values())
        return values[0] if len(values) == 1 else {"values": values}
    if t.values is not None:
        return t.values[0] if len(t.values) == 1 else {"values": list(t.values)}
    if t.lo == t.hi:
        return t.lo
    entry: dict[str, Any] = {"min": t.lo, "max": t.hi}
    if t.step is not None:
        entry["step"] = t.step
    return entry


def _number_text(text: str) -> int | float:
    if any(c in text for c in ".eE"):
        return float(text)
    return int(text)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float))


# ---- expression clean-up ----------------------------------------------------------------

_UNARY: dict[type, Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Not: operator.not_,
}


class _Folder(ast.NodeTransformer):
    """Bottom-up constant folding of nodes whose operands are all constants."""

    def generic_visit(self, node: ast.AST) -> ast.AST:
        node = super().generic_visit(node)
        if isinstance(node, ast.IfExp) and isinstance(node.test, ast.Constant):
            return node.body if node.test.value else node.orelse
        if isinstance(node, ast.expr) and not isinstance(node, (ast.Constant, ast.Name)):
            if all(
                isinstance(n, (ast.Constant, ast.Load)) or n is node or _is_op(n)
                for n in ast.walk(node)
                if not (isinstance(n, ast.Name) and _is_callee(node, n))
            ):
                try:
                    value = eval(  # our own tree of constants and whitelisted calls
                        compile(ast.fix_missing_locations(ast.Expression(node)), "<fold>", "eval"),
                        {"__builtins__": {}, **_FOLD_FUNCTIONS},
                    )
                except (ArithmeticError, ValueError):
                    return node  # left for run time, as Bonsai would have computed it
                if isinstance(value, (int, float, bool)):
                    return ast.Constant(value)
        return node


def _is_op(node: ast.AST) -> bool:
    return isinstance(node, (ast.operator, ast.unaryop, ast.cmpop, ast.boolop, ast.expr_context))


def _is_callee(root: ast.AST, name: ast.Name) -> bool:
    return any(isinstance(n, ast.Call) and n.func is name for n in ast.walk(root))


def _fold(tree: ast.expr) -> ast.expr:
    folded = _Folder().visit(ast.fix_missing_locations(ast.Expression(tree)))
    return folded.body  # type: ignore[no-any-return]


def _simplify(tree: ast.expr) -> ast.expr:
    """``True if c else False`` -> ``c`` and friends (what flag-style terminals become)."""

    class _S(ast.NodeTransformer):
        def visit_IfExp(self, node: ast.IfExp) -> ast.expr:
            self.generic_visit(node)
            body, orelse = node.body, node.orelse
            if ast.dump(body) == ast.dump(orelse):
                return body
            if _const(body, True) and _const(orelse, False):
                return node.test
            if _const(body, False) and _const(orelse, True):
                return ast.UnaryOp(ast.Not(), node.test)
            if _const(body, True) and _boolish(orelse):
                return ast.BoolOp(ast.Or(), [node.test, orelse])
            if _const(orelse, False) and _boolish(body):
                return ast.BoolOp(ast.And(), [node.test, body])
            return node

        def visit_BoolOp(self, node: ast.BoolOp) -> ast.expr:
            self.generic_visit(node)
            absorbing = isinstance(node.op, ast.Or)  # True absorbs `or`, False absorbs `and`
            if any(_const(v, absorbing) for v in node.values):
                return ast.Constant(absorbing)
            values = [v for v in node.values if not _const(v, not absorbing)]
            if not values:
                return ast.Constant(not absorbing)
            return values[0] if len(values) == 1 else ast.BoolOp(node.op, values)

    return _S().visit(tree)  # type: ignore[no-any-return]


def _const(node: ast.expr, value: bool) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _boolish(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, bool)
    if isinstance(node, (ast.Compare, ast.BoolOp)):
        return True
    return isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)


def _numeric(tree: ast.expr) -> ast.expr:
    """Booleans as the numbers 1/0 (the expression language has numbers only)."""

    class _N(ast.NodeTransformer):
        def visit_Constant(self, node: ast.Constant) -> ast.expr:
            if isinstance(node.value, bool):
                return ast.Constant(int(node.value))
            return node

    return _N().visit(tree)  # type: ignore[no-any-return]


# ---- the entry points -------------------------------------------------------------------


def import_inkling(
    path: str | Path,
    *,
    concept: str | None = None,
    sim: str | None = None,
    name: str | None = None,
) -> Imported:
    """Translate an ``.ink`` file into an env spec and a training spec (dicts).

    Raises:
        InklingError: A syntax error or a construct outside the subset (file:line:col).
        SimgymError: The file cannot be read.
    """
    from gymclient.spec import read_text

    p = Path(path)
    if not p.is_file():
        raise SimgymError(f"{p}: no such file")
    source = str(path)
    tree = parse_inkling(read_text(p), source)
    return _Importer(tree, source).run_import(concept, sim, name)


def dump_yaml(data: dict[str, Any], header: Sequence[str]) -> str:
    """YAML with leaf mappings in flow style (``{min: 0, max: 1}``) under a comment header."""
    import yaml

    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
    return "".join(f"# {line}\n" for line in header) + text


def render(imported: Imported, source: str | Path) -> dict[str, str]:
    """The text of ``spec.yaml`` and ``train.yaml``, by file name."""
    origin = (
        f"Imported from {Path(source).name} (concept {imported.concept}) by simgym import-inkling."
    )
    return {
        "spec.yaml": dump_yaml(
            imported.spec, [origin, "The env spec: docs/spec.md; the mapping: docs/inkling.md."]
        ),
        "train.yaml": dump_yaml(imported.train, [origin, "The training spec: docs/training.md."]),
    }


def write_specs(
    imported: Imported, out: Path, source: str | Path, *, force: bool = False
) -> list[Path]:
    """Write ``spec.yaml`` and ``train.yaml`` into ``out`` and check that both load.

    Raises:
        SimgymError: A file exists (without ``force``), or what was written does not load.
    """
    out.mkdir(parents=True, exist_ok=True)
    texts = render(imported, source)
    paths = [out / name for name in texts]
    if not force:
        for p in paths:
            if p.exists():
                raise SimgymError(f"{p} exists: choose another --out folder, or --force")
    for p, text in zip(paths, texts.values(), strict=True):
        p.write_text(text, encoding="utf-8")
    from gymclient.spec import load_spec
    from launcher.trainspec import load_train_spec

    load_spec(paths[0])
    load_train_spec(paths[1])
    return paths
