"""dse.space.expr on hostile text: every case is refused fast with a one-line UserError naming where and what."""
from __future__ import annotations

import pytest

from dse.errors import UserError
from dse.space.expr import Expr

# method="thread": a hang inside C (a huge int power) ignores signals; the thread timer still ends the run
fast = pytest.mark.timeout(10, method="thread")

HOSTILE = {
    "(((9**64)**64)**64)**64": "exponent",           # exponents each small, result astronomically large
    "2 ** (2 ** 40)": "exponent",
    "(2 ** 64) ** 3 * (2 ** 64) ** 3": "256 bits",
    "int(1e308)": "256 bits",
    "round(5, -10 ** 9)": "ndigits",                  # round computes 10 ** 1e9 internally
    "'%900000000d' % 1": "formatting",
    "'%s' % 'x'": "formatting",
    "'a' * 10 ** 18": "10000 items",
    "10 ** 18 * [1]": "10000 items",
    "[[0] * 200] * 200": "10000 items",               # each list small, the nested total 40k
    "'a' * 9000 + 'b' * 9000": "10000 items",
    "x * 10 ** 9": "10000 items",                       # a list from the environment
}


@fast
@pytest.mark.parametrize("text, message", HOSTILE.items())
def test_hostile_values_are_refused_before_they_are_computed(text, message):
    with pytest.raises(UserError, match=message) as info:
        Expr(text, "derived.n")({"x": [1, 2, 3]})
    _one_line(info.value, "derived.n")


@fast
@pytest.mark.parametrize("text, message", [
    ("-" * 3000 + "1", "characters long"),            # 3,000 nested operators
    ("1" + " + 1" * 3000, "characters long"),
    ("-" * 500 + "1", "nested more than 100"),
    ("1" + "+1" * 900, "nested more than 100"),
    ("not " * 300 + "x", "nested more than 100"),
    ("9" * 1000, "256 bits"),                         # a huge literal
    ("b'%d' % 1", "bytes constants"),
    ("1j ** 2", "complex constants"),
    ("f'{x}'", "JoinedStr is not allowed"),
    ("1 +", "cannot parse"),
])
def test_hostile_text_is_refused_when_parsed(text, message):
    with pytest.raises(UserError, match=message) as info:
        Expr(text, "derived.n")
    _one_line(info.value, "derived.n")
    assert len(str(info.value)) < 2300


@pytest.mark.parametrize("text, expected", [
    ("2 ** 255", 2 ** 255),
    ("(-1) ** (2 ** 200)", 1),
    ("2 ** -3", 0.125),
    ("2.0 ** 0.5 > 1.41", True),
    ("(depth - 4) % 6 == 0", True),
    ("[kernel, kernel] if block in ['basic', 'preact_basic'] else [kernel]", [3, 3]),
    ("scale([[8, 16]] * 2, 0.5)", [[4, 8], [4, 8]]),
    ("len([0] * 10000)", 10000),
    ("round(2.567, 2)", 2.57),
    ("divisible(37.5)", 40),
    ("'ab' * 3 + 'c'", "abababc"),
])
def test_legit_expressions_still_work(text, expected):
    assert Expr(text)({"depth": 28, "kernel": 3, "block": "basic"}) == expected


def _one_line(error: UserError, where: str) -> None:
    """The message is a single line that names the place."""
    text = str(error)
    assert "\n" not in text and text.startswith(where + ":"), text
