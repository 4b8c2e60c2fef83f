"""Storage passwords never reach logs, run directories, W&B files, worker command lines or error messages."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from crash_helpers import ROOT, env, ok, search, trials
from dse.storage import mask


def test_mask_hides_every_password():
    text = "a postgresql+psycopg2://dse:s3cr%40t@db:5432/x and mysql://u:pw@h/db, sqlite:///f.db"
    assert mask(text) == "a postgresql+psycopg2://dse:***@db:5432/x and mysql://u:***@h/db, sqlite:///f.db"
    assert mask("postgresql://dse@h/db") == "postgresql://dse@h/db"


def test_hide_in_env_moves_only_a_password_url(monkeypatch):
    from dse.storage import hide_in_env

    monkeypatch.delenv("DSE_STORAGE", raising=False)
    args = ["space=x", "storage=postgresql://u:pw9@h/db"]
    assert hide_in_env(args) == ["space=x", "storage=${oc.env:DSE_STORAGE}"]
    assert __import__("os").environ["DSE_STORAGE"] == "postgresql://u:pw9@h/db"
    assert hide_in_env(["storage=sqlite:///a.db"]) == ["storage=sqlite:///a.db"]


def _leaks(folder: Path, password: str) -> list[str]:
    """Files under `folder` whose bytes contain the password."""
    return [str(p) for p in folder.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]


def test_unreachable_storage_error_has_no_password(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dse.search", "space=resnext", "fidelity=smoke", "data=synthetic",
                           f"run_dir={tmp_path / 'r'}", "storage=postgresql://dse:hunter2pw@127.0.0.1:9/dse"],
                          cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: storage: cannot open postgresql://dse:***@")
    assert "hunter2pw" not in proc.stdout + proc.stderr and not _leaks(tmp_path, "hunter2pw")


def test_wrong_password_error_is_masked(postgres_url, tmp_path):
    bad = postgres_url.replace("@", "WRONG@", 1)
    wrong = bad.split(":")[2].split("@")[0]
    proc = subprocess.run([sys.executable, "-m", "dse.search", "space=resnext", "fidelity=smoke", "data=synthetic",
                           f"run_dir={tmp_path / 'r'}", f"storage={bad}"], cwd=ROOT, env=env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "password authentication failed" in proc.stderr
    assert wrong not in proc.stdout + proc.stderr and not _leaks(tmp_path, wrong)


@pytest.mark.slow
def test_two_workers_on_postgres_leave_no_password_anywhere(fresh_postgres_db, tmp_path):
    password = fresh_postgres_db.split(":")[2].split("@")[0]
    run_dir = tmp_path / "r"
    # one torch thread per worker (two workers of two threads each spun against each other on 2 cores), and no
    # sizing measurement (study.trials_per_timeout; not what this test is about)
    proc = search(run_dir, "pg_pool", 4, f"storage={fresh_postgres_db}", "workers=2", "logger=wandb",
                  "trainer.threads=1", "study.trials_per_timeout=null", timeout=400)
    ok(proc)
    assert password not in proc.stdout + proc.stderr
    assert not _leaks(run_dir, password), _leaks(run_dir, password)
    assert (run_dir / "trials.csv").is_file() and list(run_dir.rglob("wandb/offline-run-*"))
    got = trials(fresh_postgres_db, "pg_pool")
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in got) >= 4
    assert not [t for t in got if t.state.name == "RUNNING"]
    logs = [(run_dir / "workers" / str(i) / "worker.log").read_text() for i in (0, 1)]
    assert all("trial " in log for log in logs), logs  # both workers ran trials of the one study
