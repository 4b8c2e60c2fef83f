"""The 2-objective Pareto front by one sort and sweep equals the front by comparing every pair (brute force here)."""
from __future__ import annotations

import random

import pytest

from dse.results.files import pareto


def _brute(rows: list[dict]) -> set[int]:
    """Numbers of the rows no other row dominates: accuracy >= and FLOPs <=, one of them strictly."""
    done = [r for r in rows if r["status"] == "ok"]
    return {r["number"] for r in done
            if not any(q["accuracy"] >= r["accuracy"] and q["flops"] <= r["flops"]
                       and (q["accuracy"], q["flops"]) != (r["accuracy"], r["flops"]) for q in done)}


def _rows(rng: random.Random, n: int, levels: int | None) -> list[dict]:
    """n rows; with `levels`, accuracy and FLOPs on a coarse grid, so many ties and equal points."""
    out = []
    for i in range(n):
        if levels:
            acc, flops = rng.randrange(levels) / levels, float(rng.randrange(levels))
        else:
            acc, flops = rng.random(), rng.uniform(1e6, 1e9)
        out.append({"number": i, "status": rng.choice(["ok", "ok", "ok", "rejected"]), "accuracy": acc,
                    "flops": flops})
    return out


@pytest.mark.parametrize("levels", [None, 3, 6, 20])
def test_sweep_front_equals_the_brute_force_front(levels):
    rng = random.Random(levels or 0)
    for n in (0, 1, 2, 5, 30, 200):
        for _ in range(20):
            rows = _rows(rng, n, levels)
            front = pareto(rows, ["accuracy", "flops"])
            assert {r["number"] for r in front} == _brute(rows)
            assert [(r["flops"], -r["accuracy"]) for r in front] == sorted((r["flops"], -r["accuracy"]) for r in front)


def test_equal_points_all_stay_and_a_tie_in_one_objective_is_dominated():
    rows = [{"number": 0, "status": "ok", "accuracy": 0.9, "flops": 10.0},
            {"number": 1, "status": "ok", "accuracy": 0.9, "flops": 10.0},  # equal to 0: neither dominates
            {"number": 2, "status": "ok", "accuracy": 0.8, "flops": 10.0},  # same FLOPs, less accurate
            {"number": 3, "status": "ok", "accuracy": 0.9, "flops": 12.0},  # as accurate, more FLOPs
            {"number": 4, "status": "ok", "accuracy": 0.5, "flops": 1.0}]
    assert [r["number"] for r in pareto(rows, ["accuracy", "flops"])] == [4, 0, 1]
