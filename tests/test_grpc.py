"""Many workers, one database, through Optuna's gRPC storage proxy (`python -m dse.storage serve`, storage=grpc://).

Every test runs a real proxy server process (dse.storage serve) on a real SQLite file or the PostgreSQL of
tests/conftest.py; workers are real subprocesses (tests/claims_worker.py: the real claims, owners and signals
code around a trial that only sleeps).
"""
from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest

from dse.errors import UserError
from dse.storage import LOST_EXIT, mask, open_storage
from dse.storage import main as storage_main
from dse.trials import claims, owners
from grid_helpers import ROOT, per_cell, run_pool
from search_helpers import FAST, env, ok, search, search_here
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


SMOKE = ["space=resnext", "sampler=random", "logger=none", "study.timeout=null", "study.trials_per_timeout=null"]


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
    reader = optuna.load_study(study_name="seen", storage=open_storage(fresh_postgres_db, tmp_path, create=False))
    assert [t.state.name for t in reader.trials] == ["COMPLETE", "COMPLETE"]  # written to the database itself
    with pytest.raises(UserError, match="'seen' was created by a worker that reaches its database through the gRPC"):
        optuna.load_study(study_name="seen", storage=open_storage(fresh_postgres_db, tmp_path))  # a worker: refused


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
    assert claims.take_over(study, "k0", 999, holder)
    assert claims.claim(study, "k0", 1000) == 999
    assert not claims.take_over(study, "k0", 1001, holder)  # a second take-over of the same holder loses


def test_lease_beats_and_another_hosts_lapsed_trial_is_reaped(tmp_path, monkeypatch):
    monkeypatch.setenv("DSE_HEARTBEAT", "1,4")
    served = Proxy(f"sqlite:///{tmp_path / 'lease.db'}", tmp_path)
    try:
        study = optuna.create_study(study_name="lease", storage=open_storage(served.url, tmp_path))
        mine = study.ask()
        owners.mark(mine)
        first = study._storage.get_trial(mine._trial_id).system_attrs[owners.KEY]
        assert first["grace"] == 4 and first["host"] == socket.gethostname()
        # the lease beats every second: wait (at most 30 s) for a beat at least 0.9 s after the first
        beat = lambda: study._storage.get_trial(mine._trial_id).system_attrs[owners.KEY]["beat"]  # noqa: E731
        deadline = time.monotonic() + 30
        while beat() <= first["beat"] + 0.9 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert beat() > first["beat"] + 0.9
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
        lease = lambda: [t for t in threading.enumerate() if t.name == f"dse-lease-{mine._trial_id}"]  # noqa: E731
        deadline = time.monotonic() + 30
        while lease() and time.monotonic() < deadline:  # the lease's next beat finds the trial finished and ends
            time.sleep(0.2)
        assert not lease()
    finally:
        served.stop()


def test_search_refuses_a_bad_or_silent_proxy_in_one_line(tmp_path, monkeypatch):
    """In this process, with the wait for a silent proxy at 2 s instead of PROXY_WAIT_S's 10: the wait runs out."""
    import dse.storage

    monkeypatch.setattr(dse.storage, "PROXY_WAIT_S", 2.0)
    port = _free_port()
    proc = search_here("space=resnext", "storage=grpc://127.0.0.1", cwd=tmp_path)
    _one_line_error(proc, "'grpc://127.0.0.1' is not a gRPC proxy address; use grpc://host:port")
    start = time.monotonic()
    proc = search_here("space=resnext", f"storage=grpc://127.0.0.1:{port}", cwd=tmp_path)
    _one_line_error(proc, f"no gRPC storage proxy answers at grpc://127.0.0.1:{port} (waited 2 s)")
    assert time.monotonic() - start >= 2.0  # the wait ran out: nothing answered sooner
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


def test_search_through_the_proxy_and_mixed_workers_refused(fresh_postgres_db, tmp_path):
    """`python -m dse.search workers=2` through a proxy on PostgreSQL trains a smoke study end to end. A worker
    that joins that study directly is refused in one line, exit 2, nothing written (direct workers claim points in
    attribute rows, proxy workers in marker studies: a mix could train a point twice); so is a proxy worker on a
    study a direct worker created."""
    served = Proxy(fresh_postgres_db, tmp_path)
    try:
        run = tmp_path / "run"
        ok(search(*SMOKE, "study.name=e2e", "study.n_trials=3", "workers=2", f"storage={served.url}",
                  f"run_dir={run}", cwd=tmp_path, timeout=400))
        for name in ("trials.csv", "pareto.csv", "best.yaml", "provenance.yaml", "config.yaml"):
            assert (run / name).is_file(), name
        reader = open_storage(fresh_postgres_db, tmp_path, create=False)
        trials = optuna.load_study(study_name="e2e", storage=reader).get_trials(deepcopy=False)
        trained = Counter((t.user_attrs["point_id"], t.user_attrs["seed"]) for t in trials
                          if t.user_attrs.get("status") == "ok")
        assert sum(trained.values()) >= 3 and max(trained.values()) == 1, trained
        # every trial trained (COMPLETE) or refused before training (PRUNED; a repeated point: FAIL 'duplicate')
        assert all(t.state.name in ("COMPLETE", "PRUNED") or t.user_attrs.get("status") == "duplicate"
                   for t in trials), [(t.number, t.state.name, t.user_attrs.get("status")) for t in trials]

        direct = search_here(*SMOKE, "study.name=e2e", "study.n_trials=6", f"storage={fresh_postgres_db}",
                             f"run_dir={tmp_path / 'direct'}", cwd=tmp_path)
        _one_line_error(direct, f"study 'e2e' was created by a worker that reaches its database through the gRPC "
                                f"proxy ({served.url}), and this one joins directly ({mask(fresh_postgres_db)})")
        assert fresh_postgres_db.split(":")[2].split("@")[0] not in direct.stderr  # the password
        assert len(optuna.load_study(study_name="e2e", storage=reader).trials) == len(trials)
        assert not (tmp_path / "direct").exists()

        optuna.create_study(study_name="d", storage=open_storage(fresh_postgres_db, tmp_path))
        proxied = search_here(*SMOKE, "study.name=d", f"storage={served.url}", f"run_dir={tmp_path / 'proxied'}",
                              cwd=tmp_path)
        _one_line_error(proxied, f"study 'd' was created by a worker that reaches its database directly "
                                 f"({mask(fresh_postgres_db)}), and this one joins through the gRPC proxy "
                                 f"({served.url})")
        assert not optuna.load_study(study_name="d", storage=reader).trials and not (tmp_path / "proxied").exists()
    finally:
        served.stop()


def test_a_lost_proxy_ends_its_worker_in_one_line(tmp_path):
    """The proxy is SIGKILLed while its worker trains a trial: the worker exits LOST_EXIT (75) with one line naming
    the proxy, no traceback. The trained trial stays in the database; the one in flight, left RUNNING, is failed
    and queued again by the next dse process on this host once a proxy serves the database again."""
    db = tmp_path / "lost.db"
    served = Proxy(f"sqlite:///{db}", tmp_path)
    out, err = tmp_path / "worker.out", tmp_path / "worker.err"
    worker = subprocess.Popen([sys.executable, "-m", "dse.search", *FAST, *SMOKE, "study.name=lost", "study.n_trials=4",
                               f"storage={served.url}", f"run_dir={tmp_path / 'run'}"], cwd=tmp_path,
                              env={**env(), "DSE_TEST_FAULT": "sleep=8:2"},  # the second fit sleeps 8 s
                              stdout=open(out, "w"), stderr=open(err, "w"))

    def states() -> Counter:
        """Trials per state, read from the database file; 'OWNED': RUNNING trials whose owner is recorded."""
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
            got = Counter(state for (state,) in con.execute("SELECT state FROM trials"))
            got["OWNED"] = con.execute("SELECT count(*) FROM trials t JOIN trial_system_attributes a ON "
                                       "a.trial_id = t.trial_id AND a.key = ? WHERE t.state = 'RUNNING'",
                                       (owners.KEY,)).fetchone()[0]
        return got

    try:
        deadline = time.monotonic() + 120
        while not ("[ok]" in out.read_text() and states()["OWNED"]):  # one trained, the next one running
            assert worker.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.2)
        served.proc.kill()
        served.proc.wait(timeout=30)
        assert worker.wait(timeout=120) == LOST_EXIT, err.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        served.stop()
    lines = err.read_text().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: storage: the gRPC storage proxy at {served.url} stopped "
                                                   "answering"), lines
    assert "Traceback" not in out.read_text() + err.read_text()
    left = states()
    assert left["COMPLETE"] >= 1 and left["RUNNING"] == left["OWNED"] == 1, left
    again = Proxy(f"sqlite:///{db}", tmp_path)
    try:
        study = optuna.load_study(study_name="lost", storage=open_storage(again.url, tmp_path))
        assert owners.reap(study) == 1  # its process is gone: failed and queued again at once
        trials = study.get_trials(deepcopy=False)
        dead = [t for t in trials if t.state.name == "FAIL"]
        assert len(dead) == 1 and dead[0].user_attrs["reason"] == owners.REASON
        queued = [t for t in trials if t.state.name == "WAITING"]
        assert len(queued) == 1 and queued[0].system_attrs["failed_trial"] == dead[0].number
        assert [t.state.name for t in trials].count("COMPLETE") == left["COMPLETE"]
    finally:
        again.stop()


SLEEPER = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(143)); time.sleep(120)"


def test_a_lost_proxy_stops_the_pool_and_its_workers(tmp_path, monkeypatch, capsys):
    """workers=2: once the proxy stops answering, the pool prints one line, sends its workers SIGTERM (they cannot
    record a trial any more), waits for them and exits LOST_EXIT; it used to exit with a traceback at once and
    leave its workers training. The workers here are stand-ins (a process that sleeps and exits on SIGTERM): what
    is tested is the pool's loop; a real worker's own exit is the test above."""
    from dse.trials import pool, signals

    served = Proxy(f"sqlite:///{tmp_path / 'pool.db'}", tmp_path)
    optuna.create_study(study_name="s", storage=open_storage(served.url, tmp_path))
    started, real_start = [], pool._start
    monkeypatch.setattr(pool, "worker_argv", lambda argv, run_dir, index: [sys.executable, "-c", SLEEPER])
    monkeypatch.setattr(pool, "_start", lambda *a: started.append(real_start(*a)) or started[-1])
    monkeypatch.setattr(signals, "install", lambda: None)  # the test process keeps its own handlers
    threading.Timer(3.0, served.proc.kill).start()
    try:
        code = pool.run([], pool.PoolConfig(workers=2, progress=False), served.url, "s", tmp_path, total=4,
                        counted=lambda t: t.state.name == "COMPLETE", say=lambda line: None)
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
        served.proc.wait(timeout=30)
    assert code == LOST_EXIT
    assert [p.returncode for p in started] == [143, 143]  # each got SIGTERM, and the pool waited for it
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: storage: the gRPC storage proxy at {served.url} stopped "
                                                   "answering"), lines
