"""tests/fastspawn.py: the suite's `python -m dse.search|report|analyze` children are forked from a zygote that
has imported torch, Lightning and timm. A forked child must read as a fresh one: the same output and exit
status, the caller's cwd and environment, a real pid that signals reach, and timeouts as subprocess.run's."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import fastspawn
import pytest
import search_helpers as sh


def _both(args, cwd, env=None):
    """(forked, fresh) CompletedProcess of the same command line; the first forked, the second not."""
    return _both_at_once([(args, env)], cwd)[0]


def _both_at_once(cases, cwd):
    """[(forked, fresh)] for each (args, env) of `cases`, all started at once, then read (the fresh ones each pay
    the imports: side by side, not one after another)."""
    procs = [(args, subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, env={**(env or sh.env()), **extra},
                                     text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE), extra)
             for args, env in cases for extra in ({}, {"DSE_TEST_SPAWN": "fresh"})]
    out = []
    try:
        for args, proc, extra in procs:
            assert proc.via_zygote == (not extra)
            stdout, stderr = proc.communicate(timeout=240)
            out.append(subprocess.CompletedProcess(args, proc.returncode, stdout, stderr))
    finally:
        for _, proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return list(zip(out[::2], out[1::2]))


def test_the_fast_path_fires_only_for_the_heavy_commands():
    assert fastspawn.forkable([sys.executable, "-m", "dse.search", "space=resnext"], {}) == "dse.search"
    assert fastspawn.forkable([sys.executable, "-m", "dse.inspect", "resnet50"], {}) is None  # must show no torch
    assert fastspawn.forkable([sys.executable, "-X", "importtime", "-m", "dse.search"], {}) is None
    assert fastspawn.forkable([sys.executable, "-m", "dse.search"], {"preexec_fn": print}) is None
    assert fastspawn.forkable(["sbatch", "x"], {}) is None
    assert subprocess.Popen is fastspawn.Popen  # conftest installed it


def test_forked_output_and_exit_status_equal_a_fresh_process(tmp_path):
    (tmp_path / "runs").mkdir()
    cases = (["dse.analyze", "--help"], ["dse.search", "space=no_such_space"], ["dse.report", "runs/missing"])
    for args, (forked, fresh) in zip(cases, _both_at_once([(args, None) for args in cases], tmp_path)):
        assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr), args
    assert forked.returncode == 2 and "runs/missing" in forked.stderr  # the relative path read from the cwd


def test_a_forked_child_is_a_real_process_that_signals_reach(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "dse.search", *sh.FAST, "space=resnext", "study.n_trials=50",
                             f"run_dir={tmp_path / 'r'}"], cwd=tmp_path, env=sh.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.via_zygote and proc.poll() is None
    assert os.path.exists(f"/proc/{proc.pid}")
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def test_run_timeout_kills_the_forked_child(tmp_path):
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-m", "dse.search", *sh.FAST, "space=resnext", "study.n_trials=50",
                        f"run_dir={tmp_path / 'r'}"], cwd=tmp_path, env=sh.env(), capture_output=True, timeout=2)
    assert time.monotonic() - start < 60


def test_the_environment_is_the_callers(tmp_path):
    env = {**sh.env(), "DSE_STORAGE": "sqlite:///" + str(tmp_path / "named.db")}
    proc = subprocess.run([sys.executable, "-m", "dse.search", *sh.FAST, "space=resnext", "study.n_trials=1",
                           "storage=${oc.env:DSE_STORAGE}", f"run_dir={tmp_path / 'r'}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "named.db").exists()


def test_a_childs_exit_leaves_what_the_zygote_made_at_import(tmp_path):
    """wandb makes its media temp dir at import, in the zygote: one child's exit removed it, and the next child's
    W&B table failed (FileNotFoundError). A forked child exits (any command: the exit handlers it inherits do not
    depend on what it ran), then a forked run logs its W&B table."""
    first = subprocess.run([sys.executable, "-m", "dse.analyze", "--help"], cwd=tmp_path, env=sh.env(),
                           capture_output=True, text=True, timeout=240)
    assert first.returncode == 0 and "usage:" in first.stdout, first.stderr[-2000:]
    proc = subprocess.run([sys.executable, "-m", "dse.search", *sh.FAST, "space=resnext", "study.n_trials=1",
                           "logger=wandb", f"run_dir={tmp_path / 'b'}"], cwd=tmp_path,
                          env=sh.env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_thread_and_warning_settings_read_at_start_are_the_callers(tmp_path, monkeypatch):
    """OMP_NUM_THREADS and PYTHONWARNINGS are read when an interpreter starts; a forked child sets them as that
    start would have, so one zygote serves callers that differ in them. Checked against a fresh interpreter running
    the same module (a test module in the cwd, forked for this test only)."""
    (tmp_path / "show_start.py").write_text(
        "import torch, warnings\nprint(torch.get_num_threads(), [f[0] for f in warnings.filters[-6:]])\n")
    monkeypatch.setattr(fastspawn, "FORKED", fastspawn.FORKED | {"show_start"})
    seen = set()
    extras = ({"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}, {"OMP_NUM_THREADS": "3"}, {},
              {"MKL_NUM_THREADS": "1"})
    base = {k: v for k, v in sh.env().items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONWARNINGS")}
    for extra, (forked, fresh) in zip(extras, _both_at_once([(["show_start"], {**base, **e}) for e in extras],
                                                            tmp_path)):
        assert forked.returncode == fresh.returncode == 0, forked.stderr + fresh.stderr
        assert forked.stdout == fresh.stdout, extra
        seen.add(fresh.stdout)
    assert len(seen) >= 2  # the settings changed what a fresh interpreter starts with
