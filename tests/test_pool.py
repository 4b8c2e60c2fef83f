"""Worker pool planning and exactly-once grids with 4 subprocess workers on SQLite."""
from __future__ import annotations

import pytest

from dse.trials import pool
from dse.trials.claims import cell_of
from dse.errors import UserError
from grid_helpers import per_cell, run_pool

LABELS = [f"c{i}" for i in range(6)]


def test_plan_gpus_one_per_worker_and_auto_uses_all():
    slots = pool.plan("auto", 1, gpus=["0", "1", "2", "3"], cores=16)
    assert [s.gpus for s in slots] == [("0",), ("1",), ("2",), ("3",)]
    assert slots[2].env()["CUDA_VISIBLE_DEVICES"] == "2" and slots[2].threads == 4


def test_plan_devices_per_trial_combines_with_workers():
    slots = pool.plan("auto", 2, gpus=[str(i) for i in range(8)], cores=32)
    assert [s.env()["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0,1", "2,3", "4,5", "6,7"]
    with pytest.raises(UserError, match="needs 10 GPUs"):
        pool.plan(5, 2, gpus=[str(i) for i in range(8)], cores=32)


def test_plan_cpu_splits_cores():
    slots = pool.plan(2, 1, gpus=[], cores=8)
    assert [s.threads for s in slots] == [4, 4] and "CUDA_VISIBLE_DEVICES" not in slots[0].env()
    assert len(pool.plan("auto", 1, gpus=[], cores=8)) == 4
    with pytest.raises(UserError, match="workers"):
        pool.plan("many", 1, gpus=[], cores=8)


def test_visible_gpus_reads_env_without_cuda():
    assert pool.visible_gpus({"CUDA_VISIBLE_DEVICES": "3,5"}) == ["3", "5"]
    assert pool.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []


def test_worker_argv_hides_storage_and_pins_run_dir(tmp_path):
    argv = pool.worker_argv(["study=x", "storage=postgresql://u:secret@h/db", "workers=4"], tmp_path, 2)
    assert "secret" not in " ".join(argv) and "workers=1" in argv
    assert f"run_dir={tmp_path / 'workers' / '2'}" in argv and "study=x" in argv


def _assert_exactly_once(url, name, seeds):
    done, trials = per_cell(url, name)
    expected = {(label, s) for label in LABELS for s in range(seeds)}
    assert set(done) == expected, f"missing cells: {expected - set(done)}"
    assert max(done.values()) == 1, f"duplicates: {[c for c, n in done.items() if n > 1]}"
    return trials


def test_four_workers_grid_exactly_once_after_sigkill(tmp_path):
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    codes = run_pool(url, "g", LABELS, 2, 4, tmp_path, sleep_s=1.0, kill_one=True)
    assert codes[0] == -9 and codes[1:] == [0, 0, 0]
    trials = _assert_exactly_once(url, "g", 2)
    dead = [t for t in trials if t.state.name == "FAIL"]
    assert len(dead) == 1 and dead[0].user_attrs["reason"] == "worker died (heartbeat)"
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == dead[0].number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and cell_of(retry[0]) == cell_of(dead[0])


def test_a_worker_slower_than_the_grace_loses_its_cell_and_goes_on(tmp_path):
    """A live worker paused (SIGSTOP) mid-trial past the heartbeat's grace: another worker takes its cell for
    dead and its retry trains it; the paused worker, resumed, has its COMPLETE refused, drops the result and goes
    on (it exited 1 with 'Cannot tell a FAIL trial' before). Each cell is still trained once."""
    import signal
    import time

    from grid_helpers import start

    url = f"sqlite:///{tmp_path / 'grid.db'}"
    procs = [start(url, "g", LABELS, 2, 2.0, tmp_path / f"w{i}.log", heartbeat="1,3") for i in range(3)]
    try:
        deadline = time.monotonic() + 120
        while "start" not in (tmp_path / "w0.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        procs[0].send_signal(signal.SIGSTOP)
        _wait_taken(url, "g", time.monotonic() + 60)  # 3 s grace, SQLite's whole seconds, a worker's poll
        procs[0].send_signal(signal.SIGCONT)
        codes = [p.wait(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    log = (tmp_path / "w0.log").read_text()
    assert codes == [0, 0, 0], log[-2000:]
    trials = _assert_exactly_once(url, "g", 2)
    taken = [t for t in trials if t.state.name == "FAIL"]
    assert len(taken) == 1 and taken[0].user_attrs["reason"] == "worker died (heartbeat)"
    assert f"trial {taken[0].number}: taken over by another worker" in log


def _wait_taken(url: str, name: str, deadline: float) -> None:
    """Until another worker has failed a trial of the study as dead (the heartbeat's grace passed), polling."""
    import time

    import optuna

    from dse.storage import HEARTBEAT_REASON, open_storage

    storage = open_storage(url, ".")
    study_id = storage.get_study_id_from_name(name)
    while not any(t.user_attrs.get("reason") == HEARTBEAT_REASON
                  for t in storage.get_all_trials(study_id, deepcopy=False, states=(optuna.trial.TrialState.FAIL,))):
        assert time.monotonic() < deadline, "the paused worker's trial was not taken in 60 s"
        time.sleep(0.2)
