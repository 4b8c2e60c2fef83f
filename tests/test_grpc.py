"""Many workers, one database, through Optuna's gRPC storage proxy (`python -m dse.storage serve`, storage=grpc://).

Every test runs a real proxy server process (dse.storage serve) on a real SQLite file or the PostgreSQL of
tests/conftest.py; workers are real subprocesses (tests/claims_worker.py: the real claims, owners and signals
code around a trial that only sleeps).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest

from dse.storage import main as storage_main
from dse.storage import open_storage
from dse.trials import claims, owners
from grid_helpers import ROOT, per_cell, run_pool
from search_helpers import search
from test_point_claims import N_KEYS, race
from test_search_errors import _one_line_error

LABELS = [f"c{i}" for i in range(6)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy:
    """A `python -m dse.storage serve URL` process on 127.0.0.1; `.url` is the storage=grpc://… it printed."""

    def __init__(self, db_url: str, tmp: Path):
        self.port = _free_port()
        self.log = tmp / f"proxy-{self.port}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("DSE_STORAGE", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "dse.storage", "serve", db_url, "--host", "127.0.0.1",
                                      "--port", str(self.port)], stdout=open(self.log, "w"),
                                     stderr=subprocess.STDOUT, env=env, cwd=tmp)
        deadline = time.monotonic() + 90
        while "storage=grpc://" not in self.text():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.text()
            time.sleep(0.1)
        self.url = next(line for line in self.text().splitlines() if line.startswith("storage=")).split("=", 1)[1]

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(params=["sqlite", "postgres"])
def proxy(request, tmp_path):
    """A proxy in front of a fresh SQLite file or a fresh PostgreSQL database."""
    db = (f"sqlite:///{tmp_path / 'proxied.db'}" if request.param == "sqlite"
          else request.getfixturevalue("fresh_postgres_db"))
    served = Proxy(db, tmp_path)
    yield served
    served.stop()


def test_serve_prints_the_line_to_give_and_hides_the_password(fresh_postgres_db, tmp_path):
    password = fresh_postgres_db.split(":")[2].split("@")[0]
    served = Proxy(fresh_postgres_db, tmp_path)
    try:
        assert served.url == f"grpc://127.0.0.1:{served.port}"
        cmdline = Path(f"/proc/{served.proc.pid}/cmdline").read_bytes()  # the process title `ps` shows
        assert b"serve" in cmdline and password.encode() not in cmdline and b"postgresql" not in cmdline
        assert password not in served.text() and "dse:***@" in served.text()
        study = optuna.create_study(study_name="seen", storage=open_storage(served.url, tmp_path))
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    finally:
        served.stop()
    direct = optuna.load_study(study_name="seen", storage=open_storage(fresh_postgres_db, tmp_path))
    assert [t.state.name for t in direct.trials] == ["COMPLETE", "COMPLETE"]  # written to the database itself


def test_four_workers_through_the_proxy_one_killed(proxy, tmp_path):
    """Worker 0 is SIGKILLed in its first trial; the proxy carries no heartbeat, so the trial's owner record
    (same host: its process is gone) fails it and a live worker trains its cell; every cell x seed once."""
    codes = run_pool(proxy.url, "g", LABELS, 2, 4, tmp_path, sleep_s=1.0, kill_one=True)
    assert codes[0] == -9 and codes[1:] == [0, 0, 0], [(tmp_path / f"w{i}.log").read_text()[-800:] for i in range(4)]
    done, trials = per_cell(proxy.url, "g")
    assert set(done) == {(label, s) for label in LABELS for s in range(2)} and set(done.values()) == {1}, done
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    dead = [t for t in trials if t.state.name == "FAIL"]
    assert len(dead) == 1 and dead[0].user_attrs["reason"] == owners.REASON
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == dead[0].number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == dead[0].params
    started = Counter(tuple(line.split()[2:4]) for i in range(4)
                      for line in (tmp_path / f"w{i}.log").read_text().splitlines() if line.startswith("start "))
    killed = (dead[0].params["cell"], str(dead[0].params["seed"]))
    assert started.pop(killed) == 2 and set(started.values()) == {1}  # the killed cell once more, nothing else


def test_point_claims_hold_through_the_proxy(proxy, tmp_path):
    """4 processes claim the same keys at once through the proxy: each key is won exactly once (the proxy's
    attribute writes overwrite, so dse claims with a marker study whose name the database keeps unique)."""
    won = race(proxy.url, tmp_path)
    assert sorted(won) == sorted(f"k{i}" for i in range(N_KEYS)) and set(won.values()) == {1}, won
    study = optuna.load_study(study_name="race", storage=open_storage(proxy.url, tmp_path))
    holder = claims.claim(study, "k0", 999)
    assert holder is not None and holder != 999
    claims.take_over(study, "k0", 999)
    assert claims.claim(study, "k0", 1000) == 999


def test_lease_beats_and_another_hosts_lapsed_trial_is_reaped(tmp_path, monkeypatch):
    monkeypatch.setenv("DSE_HEARTBEAT", "1,4")
    served = Proxy(f"sqlite:///{tmp_path / 'lease.db'}", tmp_path)
    try:
        study = optuna.create_study(study_name="lease", storage=open_storage(served.url, tmp_path))
        mine = study.ask()
        owners.mark(mine)
        first = study._storage.get_trial(mine._trial_id).system_attrs[owners.KEY]
        assert first["grace"] == 4 and first["host"] == socket.gethostname()
        time.sleep(2.5)
        assert study._storage.get_trial(mine._trial_id).system_attrs[owners.KEY]["beat"] > first["beat"] + 0.9
        elsewhere = {**first, "host": "another-host.example", "pid": 1}
        gone, alive = study.ask(), study.ask()
        study._storage.set_trial_system_attr(gone._trial_id, owners.KEY,
                                             {**elsewhere, "trial": gone._trial_id, "beat": time.time() - 5})
        study._storage.set_trial_system_attr(alive._trial_id, owners.KEY,
                                             {**elsewhere, "trial": alive._trial_id, "beat": time.time()})
        assert owners.reap(study) == 1 and owners.pending(study)  # mine and `alive` still hold their leases
        got = {t.number: t for t in study.get_trials(deepcopy=False)}
        assert got[gone.number].state.name == "FAIL" and got[gone.number].user_attrs["reason"] == owners.LAPSED
        assert got[mine.number].state.name == got[alive.number].state.name == "RUNNING"
        assert [t.system_attrs["failed_trial"] for t in got.values() if t.state.name == "WAITING"] == [gone.number]
        study.tell(mine, 1.0)
        time.sleep(2.5)  # the lease's next beat finds the trial finished and ends
        assert not [t for t in threading.enumerate() if t.name == f"dse-lease-{mine._trial_id}"]
    finally:
        served.stop()


def test_search_refuses_a_bad_or_silent_proxy_in_one_line(tmp_path):
    port = _free_port()
    proc = search("space=resnext", "storage=grpc://127.0.0.1", cwd=tmp_path, timeout=120)
    _one_line_error(proc, "'grpc://127.0.0.1' is not a gRPC proxy address; use grpc://host:port")
    proc = search("space=resnext", f"storage=grpc://127.0.0.1:{port}", cwd=tmp_path, timeout=180)
    _one_line_error(proc, f"no gRPC storage proxy answers at grpc://127.0.0.1:{port}")
    assert not (tmp_path / "runs").exists() and list(tmp_path.iterdir()) == []


def test_serve_refuses_bad_input_in_one_line(tmp_path, capsys):
    cases = [(["serve", f"journal:{tmp_path / 'j.log'}"], "is not a database URL"),
             (["serve", "postgresql://dse:s3cret@127.0.0.1:1/dse", "--port", str(_free_port())],
              "cannot open postgresql://dse:***@127.0.0.1:1/dse"),
             (["serve", f"sqlite:///{tmp_path / 'x.db'}", "--port", "x"], "--port: invalid int value")]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cases.append((["serve", f"sqlite:///{tmp_path / 'x.db'}", "--host", "127.0.0.1", "--port",
                       str(busy.getsockname()[1])], "cannot listen on 127.0.0.1:"))
        for argv, expected in cases:
            assert storage_main(argv) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and err.startswith("error: ") and expected in err, (argv, err)
            assert "s3cret" not in err
    assert not (tmp_path / "x.db").exists() and not (tmp_path / "j.log").exists()
