"""bench/storage.py --quick: tiny studies on SQLite and a journal, 2 workers; the output's tables and last line."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("optuna/random", "optuna/tpe", "dse/random", "dse/tpe")


def test_quick_bench_prints_its_tables_and_the_ratio():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "storage.py"), "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert re.fullmatch(r"ratio: \d+\.\d\d", lines[-1]), lines[-1]
    assert float(lines[-1].split()[1]) > 0

    head = next(i for i, ln in enumerate(lines) if ln.split()[:3] == ["storage", "size", "config"])
    rows = [ln.split() for ln in lines[head + 1:head + 1 + 2 * 2 * len(CONFIGS)]]
    cols = lines[head].split()
    for piece in ("median", "p90", "cpu", "ask", "claim", "attrs", "tell", "stopat", "gc", "dup"):
        assert piece in cols
    assert {(r[0], r[1], r[2]) for r in rows} == {(s, n, c) for s in ("sqlite", "journal") for n in ("10", "30")
                                                  for c in CONFIGS}
    for r in rows:
        assert len(r) == len(cols) and int(r[3]) == 2  # 2 workers x 1 trial
        float(r[cols.index("median")])
        if r[2].startswith("dse/"):  # dse's own pieces were timed
            assert float(r[cols.index("claim")]) >= 0 and r[cols.index("gc")] != "-"
            assert re.fullmatch(r"\d+/2", r[cols.index("dup")])
        else:
            assert r[cols.index("claim")] == "-"

    summary = next(i for i, ln in enumerate(lines) if ln.startswith("summary"))
    cols = lines[summary + 1].split()
    assert cols[:2] == ["storage", "size"] and "dse+after" in cols
    assert [ln.split()[:2] for ln in lines[summary + 2:summary + 6]] == [["sqlite", "10"], ["sqlite", "30"],
                                                                         ["journal", "10"], ["journal", "30"]]
    assert lines[-2].startswith("total bench time") and lines[-3].startswith("ratio below: dse+after / optuna/tpe on")
