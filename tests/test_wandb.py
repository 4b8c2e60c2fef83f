"""logger=wandb without an API key: offline runs per trial and a summary run holding the trials table;
hypervolume of (error, FLOPs) computed by dse itself."""
from __future__ import annotations

import json

import pytest

from dse.results.wandb_log import hypervolume_2d, hypervolume_curve, wandb_mode
from search_helpers import ok, search


def test_wandb_offline_runs_hold_the_table(tmp_path):
    proc = ok(search("space=resnext", "logger=wandb", "study.n_trials=2", "study.name=x",
                     f"storage=sqlite:///{tmp_path}/w.db", cwd=tmp_path))
    runs = sorted((tmp_path / "runs/x/wandb").glob("offline-run-*"))
    assert len(runs) == 3, runs  # two trials and the summary
    tables = list((tmp_path / "runs/x/wandb").glob("offline-run-*/files/media/table/trials_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert "accuracy" in table["columns"] and "flops" in table["columns"] and len(table["data"]) == 2
    assert all(list(r.glob("*.wandb")) for r in runs)  # the run logs `wandb sync` uploads
    blobs = b"".join(p.read_bytes() for r in runs for p in r.glob("*.wandb"))
    assert b"hypervolume" in blobs and b"point_id" in blobs
    assert all(b"val/acc" in b"".join(p.read_bytes() for p in r.glob("*.wandb")) for r in runs
               if b"trial-" in b"".join(p.read_bytes() for p in r.glob("*.wandb")))  # trials' learning curves
    assert b"w.db" not in blobs  # storage URLs never reach W&B
    assert b"Trained as: data synthetic (" in blobs and b"provenance" in blobs  # issue 21: how it was made
    assert "error" not in proc.stderr.lower()
    said = [ln for ln in proc.stdout.splitlines() if ln.startswith("W&B:")]  # once, with where and how to upload
    assert len(said) == 1 and "offline" in said[0] and f"wandb sync runs/x/wandb/offline-run-*" in said[0]


def test_wandb_mode_without_key(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode("auto") == "online"
    assert wandb_mode("disabled") == "disabled"


def test_hypervolume_2d():
    assert hypervolume_2d([]) == 0.0
    assert hypervolume_2d([(0.5, 0.5)]) == pytest.approx(0.25)
    assert hypervolume_2d([(0.5, 0.5), (0.2, 0.8), (0.6, 0.6)]) == pytest.approx(0.31)  # (0.6,0.6) dominated
    assert hypervolume_2d([(1.5, 0.1)]) == 0.0  # outside the reference box


def test_hypervolume_curve_never_falls():
    rows = [{"number": i, "status": s, "error": e, "flops": f}
            for i, (s, e, f) in enumerate([("ok", 0.3, 10), ("rejected", None, 5), ("ok", 0.2, 20), ("ok", 0.4, 5)])]
    curve = hypervolume_curve(rows)
    assert [n for n, _ in curve] == [0, 1, 2, 3]
    values = [hv for _, hv in curve]
    assert values == sorted(values) and values[0] > 0 and values[1] == values[0]
