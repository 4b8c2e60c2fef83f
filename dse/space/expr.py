"""A small, safe expression language for space files (never `eval`).

Allowed: numbers, strings, True/False/None, names, lists/tuples, arithmetic (+ - * / // % **, unary -),
comparisons (incl. `in`), `and`/`or`/`not`, `a if c else b`, subscripts `x[i]`, and calls of the
functions in FUNCTIONS. Anything else (attributes, lambdas, comprehensions, other calls) is refused
when the file loads. Hostile text cannot hang or exhaust memory: the source is at most MAX_TEXT characters
and MAX_DEPTH levels deep, every computed int has at most MAX_BITS bits, every string or list at most
MAX_ITEMS characters/items (counted through nested lists), sizes are checked before `*`, `+` and `**`
compute, and `%` formatting of strings is refused.
"""
from __future__ import annotations

import ast
import math
import operator

from dse.errors import Infeasible, UserError
from dse.families.regnet import stage_widths

MAX_TEXT = 2000     # characters of source
MAX_DEPTH = 100     # levels of the syntax tree
MAX_BITS = 256      # bits of any computed int
MAX_ITEMS = 10_000  # characters of a string / items of a list, nested lists included


def scale(value, factor, minimum: int = 1):
    """Multiply every number in a (nested) list by `factor`, rounded, at least `minimum`."""
    if isinstance(value, (list, tuple)):
        return [scale(v, factor, minimum) for v in value]
    return max(minimum, int(round(value * factor)))


def divisible(value, divisor: int = 8, minimum: int | None = None):
    """Round `value` to a multiple of `divisor`, never more than 10% below it (MobileNet's rule)."""
    minimum = minimum or divisor
    out = max(minimum, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * value else out


def _round(value, ndigits=None):
    """`round`, refusing digit counts whose power of ten would be huge."""
    if ndigits is not None and isinstance(ndigits, int) and abs(ndigits) > 400:
        raise ValueError(f"round: ndigits {ndigits} is outside -400..400")
    return round(value) if ndigits is None else round(value, ndigits)


def regnet_stages(w0, wa, wm, depth, group_width, b=1.0, stages=4):
    """[stage widths, stage depths] of RegNet's quantized-linear rule; Infeasible unless it gives `stages` stages."""
    widths, depths = stage_widths(w0, wa, wm, int(depth), int(group_width), b)
    if len(widths) != stages:
        raise Infeasible(f"regnet: w0={w0}, wa={wa:.4g}, wm={wm:.4g}, depth={depth} give {len(widths)} stages; "
                         f"the space keeps {stages}")
    return [widths, depths]


FUNCTIONS = {
    "min": min, "max": max, "round": _round, "int": int, "float": float, "abs": abs, "len": len,
    "ceil": math.ceil, "floor": math.floor, "sqrt": math.sqrt, "log2": math.log2,
    "scale": scale, "divisible": divisible, "list": list, "regnet_stages": regnet_stages,
}

BINARY = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
COMPARE = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}
NODES = (ast.Expression, ast.Constant, ast.Name, ast.Load, ast.List, ast.Tuple, ast.BinOp, ast.UnaryOp,
         ast.BoolOp, ast.And, ast.Or, ast.Compare, ast.IfExp, ast.Subscript, ast.Call, *BINARY, *UNARY,
         *COMPARE)
CONSTANTS = (bool, int, float, str, type(None))


class Expr:
    """A parsed expression: `names` are the variables it reads; call it with an environment dict."""

    def __init__(self, text: str, where: str = "expression"):
        self.text, self.where = text, where
        if len(text) > MAX_TEXT:
            raise UserError(f"{where}: expression is {len(text)} characters long, the limit is {MAX_TEXT}: "
                            f"{text[:40]!r}...")
        self.tree = self._parse(text)
        self.names = set()
        for node in ast.walk(self.tree):
            self._allow(node)
            if isinstance(node, ast.Name) and node.id not in FUNCTIONS:
                self.names.add(node.id)

    def _parse(self, text: str) -> ast.Expression:
        """Parse `text`, refusing syntax errors and trees deeper than MAX_DEPTH."""
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise UserError(f"{self.where}: cannot parse {text!r}: {exc.msg}") from None
        except (RecursionError, MemoryError):
            raise UserError(f"{self.where}: {text[:40]!r}... is nested too deeply to parse") from None
        if _depth(tree) > MAX_DEPTH:
            raise UserError(f"{self.where}: {text[:40]!r}... is nested more than {MAX_DEPTH} levels deep")
        return tree

    def _allow(self, node) -> None:
        """Raise a UserError unless `node` is part of the language."""
        where, text = self.where, self.text
        if not isinstance(node, NODES):
            raise UserError(f"{where}: {type(node).__name__} is not allowed in {text!r}; use arithmetic, "
                            f"comparisons, 'a if c else b' and {', '.join(sorted(FUNCTIONS))}")
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS
                                               and not node.keywords):
            raise UserError(f"{where}: only plain calls of {', '.join(sorted(FUNCTIONS))} are allowed in {text!r}")
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, CONSTANTS):
                raise UserError(f"{where}: {type(node.value).__name__} constants are not allowed in {text!r}; "
                                f"use numbers, strings, True, False, None")
            try:
                _bounded(node.value)
            except ValueError as exc:
                raise UserError(f"{where}: {exc} in {text[:80]!r}") from None

    def __call__(self, env: dict):
        """Evaluate with the variables in `env`."""
        try:
            return _eval(self.tree.body, env)
        except UserError:
            raise
        except NameError as exc:
            raise UserError(f"{self.where}: {exc} in {self.text!r}; known: {', '.join(sorted(env))}") from None
        except (ArithmeticError, TypeError, ValueError, IndexError, KeyError, RecursionError, MemoryError) as exc:
            raise UserError(f"{self.where}: {type(exc).__name__} ({_short(exc)}) evaluating {self.text!r}") from None

    def __repr__(self) -> str:
        return f"Expr({self.text!r})"


def _short(exc: BaseException) -> str:
    """An exception's message on one line, at most 200 characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:200] + "..."


def _depth(tree) -> int:
    """Depth of a syntax tree, without recursion."""
    deepest, todo = 0, [(tree, 1)]
    while todo:
        node, depth = todo.pop()
        deepest = max(deepest, depth)
        if depth <= MAX_DEPTH:
            todo.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _size(value, budget: int = MAX_ITEMS) -> int:
    """Characters of a string, items of a list counted through nested lists (stops once past `budget`)."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if not isinstance(value, (list, tuple)):
        return 1
    total = len(value)
    for item in value:
        if total > budget:
            break
        if isinstance(item, (list, tuple, str, bytes)):
            total += _size(item, budget - total)
    return total


def _bounded(value):
    """Return `value`, or raise ValueError if it is a sequence over MAX_ITEMS or holds an int over MAX_BITS."""
    if isinstance(value, (str, bytes, list, tuple)) and _size(value) > MAX_ITEMS:
        raise ValueError(f"a {type(value).__name__} of more than {MAX_ITEMS} items is above the limit")
    _check_bits(value)
    return value


def _check_bits(value) -> None:
    """Raise ValueError if `value` is, or a (nested) list holds, an int of more than MAX_BITS bits."""
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_bits(item)
    elif isinstance(value, int) and value.bit_length() > MAX_BITS:
        raise ValueError(f"an int of {value.bit_length()} bits is above the limit of {MAX_BITS} bits")


def _seq(value) -> bool:
    """Whether `value` is a string or list (things `*` and `+` repeat or join)."""
    return isinstance(value, (str, bytes, list, tuple))


def _precheck(op, left, right) -> None:
    """Refuse a binary operation before computing it when its result would be over the limits."""
    if isinstance(op, ast.Mod) and isinstance(left, (str, bytes)):
        raise ValueError("'%' string formatting is not allowed")
    if isinstance(op, ast.Add) and _seq(left) and _seq(right):
        if _size(left) + _size(right) > MAX_ITEMS:
            raise ValueError(f"joining would make more than {MAX_ITEMS} items")
    if isinstance(op, ast.Mult):
        if _seq(left) or _seq(right):
            seq, times = (left, right) if _seq(left) else (right, left)
            if isinstance(times, int) and _size(seq) * max(times, 0) > MAX_ITEMS:
                raise ValueError(f"repeating would make more than {MAX_ITEMS} items")
        elif isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_BITS + 1:
            raise ValueError(f"the product would be above the limit of {MAX_BITS} bits")
    if isinstance(op, ast.Pow) and isinstance(left, int) and isinstance(right, int) and right > 0:
        if (abs(left).bit_length() - 1) * right > MAX_BITS:
            raise ValueError(f"the result would be above {MAX_BITS} bits (exponent {right} too large)")


def _eval(node, env):
    """Evaluate one node; every computed value is checked by _bounded."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise NameError(f"unknown name {node.id!r}")
        return env[node.id]
    if isinstance(node, (ast.List, ast.Tuple)):
        return _bounded([_eval(e, env) for e in node.elts])
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, env), _eval(node.right, env)
        _precheck(node.op, left, right)
        return _bounded(BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp):
        return _bounded(UNARY[type(node.op)](_eval(node.operand, env)))
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            return all(_eval(v, env) for v in node.values)
        return any(_eval(v, env) for v in node.values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env)
        for op, comp in zip(node.ops, node.comparators):
            right = _eval(comp, env)
            if not COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body, env) if _eval(node.test, env) else _eval(node.orelse, env)
    if isinstance(node, ast.Subscript):
        return _eval(node.value, env)[_eval(node.slice, env)]
    if isinstance(node, ast.Call):
        return _bounded(FUNCTIONS[node.func.id](*[_eval(a, env) for a in node.args]))
    raise TypeError(f"{type(node).__name__} is not allowed")  # unreachable: checked at parse time
