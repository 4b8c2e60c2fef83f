"""A small, safe expression language for space files (never `eval`).

Allowed: numbers, strings, True/False/None, names, lists/tuples, arithmetic (+ - * / // % **, unary -),
comparisons (incl. `in`), `and`/`or`/`not`, `a if c else b`, subscripts `x[i]`, and calls of the
functions in FUNCTIONS. Anything else (attributes, lambdas, comprehensions, other calls) is refused
when the file loads.
"""
from __future__ import annotations

import ast
import math
import operator

from dse.errors import UserError


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


FUNCTIONS = {
    "min": min, "max": max, "round": round, "int": int, "float": float, "abs": abs, "len": len,
    "ceil": math.ceil, "floor": math.floor, "sqrt": math.sqrt, "log2": math.log2,
    "scale": scale, "divisible": divisible, "list": list,
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
MAX_POWER = 64  # refuse x ** y with |y| above this (keeps evaluation cheap)


class Expr:
    """A parsed expression: `names` are the variables it reads; call it with an environment dict."""

    def __init__(self, text: str, where: str = "expression"):
        self.text, self.where = text, where
        try:
            self.tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise UserError(f"{where}: cannot parse {text!r}: {exc.msg}") from None
        self.names = set()
        for node in ast.walk(self.tree):
            if not isinstance(node, NODES):
                raise UserError(f"{where}: {type(node).__name__} is not allowed in {text!r}; use arithmetic, "
                                f"comparisons, 'a if c else b' and {', '.join(sorted(FUNCTIONS))}")
            if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS
                                                   and not node.keywords):
                raise UserError(f"{where}: only plain calls of {', '.join(sorted(FUNCTIONS))} are allowed "
                                f"in {text!r}")
            if isinstance(node, ast.Name) and node.id not in FUNCTIONS:
                self.names.add(node.id)

    def __call__(self, env: dict):
        """Evaluate with the variables in `env`."""
        try:
            return _eval(self.tree.body, env)
        except UserError:
            raise
        except NameError as exc:
            raise UserError(f"{self.where}: {exc} in {self.text!r}; known: {', '.join(sorted(env))}") from None
        except (ArithmeticError, TypeError, ValueError, IndexError, KeyError) as exc:
            raise UserError(f"{self.where}: {type(exc).__name__} ({exc}) evaluating {self.text!r}") from None

    def __repr__(self) -> str:
        return f"Expr({self.text!r})"


def _eval(node, env):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise NameError(f"unknown name {node.id!r}")
        return env[node.id]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_eval(e, env) for e in node.elts]
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, env), _eval(node.right, env)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_POWER:
            raise ValueError(f"exponent {right} is above {MAX_POWER}")
        return BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp):
        return UNARY[type(node.op)](_eval(node.operand, env))
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
        return FUNCTIONS[node.func.id](*[_eval(a, env) for a in node.args])
    raise TypeError(f"{type(node).__name__} is not allowed")  # unreachable: checked at parse time
