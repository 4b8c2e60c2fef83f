"""study.pruner=moasha in the run loop, on a real SQLite storage: a worker is SIGKILLed after a chain paused,
then two workers finish the study together. Promotions follow dse.trials.moasha's order, each chain's pieces
train consecutive epochs (none twice), the killed worker's paused chain resumes from its checkpoint, and
nothing stays RUNNING."""
from __future__ import annotations

import os
import signal
import subprocess
import time

from crash_helpers import ROOT, command, env, trials
from search_helpers import read_csv

from dse.record import TrialRecord
from dse.trials import moasha

NAME = "ms"
ETA = 2
EPOCHS = 4
LADDER = moasha.rungs(EPOCHS, 1, ETA)  # [1, 2]
EXTRA = ["study.pruner=moasha", f"trainer.max_epochs={EPOCHS}", f"study.moasha={{eta:{ETA},min_rung:1}}",
         "study.noise_after=0", "trainer.threads=1", "study.trials_per_timeout=null"]


def _start(run_dir, log):
    """A worker on the study, its output to `log` (a pipe nobody reads would fill and block it)."""
    with open(log, "w") as out:
        return subprocess.Popen(command(run_dir, NAME, 8, *EXTRA), cwd=ROOT, env=env(), stdout=out,
                                stderr=subprocess.STDOUT, text=True)


def _wait_paused(url: str, proc, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if any(TrialRecord.from_trial(t).status == "paused" for t in trials(url, NAME)):
                return
        except Exception:  # noqa: BLE001 - the storage or the study does not exist yet
            pass
        time.sleep(0.3)
    raise AssertionError(f"no trial paused within {timeout} s (exit {proc.poll()})")


def test_two_workers_promote_in_order_and_resume_a_killed_workers_paused_chain(tmp_path):
    run_dir = tmp_path / "runs" / NAME
    url = f"sqlite:///{run_dir / 'study.db'}"
    first = _start(run_dir, tmp_path / "first.log")
    _wait_paused(url, first)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    before = {t.number: t for t in trials(url, NAME) if TrialRecord.from_trial(t).status == "paused"}
    assert before and all(os.path.isfile(TrialRecord.from_trial(t).checkpoint) for t in before.values())

    workers = [_start(run_dir, tmp_path / f"worker{i}.log") for i in range(2)]
    for i, w in enumerate(workers):
        assert w.wait(timeout=300) == 0, (tmp_path / f"worker{i}.log").read_text()[-3000:]

    final = trials(url, NAME)
    assert not [t.number for t in final if t.state.name in ("RUNNING", "WAITING")]
    records = {t.number: TrialRecord.from_trial(t) for t in final}
    chains: dict[int, list] = {}
    for t in final:
        if records[t.number].point_id is not None and records[t.number].status not in ("duplicate", "rejected"):
            chains.setdefault(moasha.root(t), []).append(t)

    # one chain per point and seed; each chain's pieces train consecutive epochs, none twice
    keys = [(records[c[0].number].point_id, records[c[0].number].seed) for c in chains.values()]
    assert len(keys) == len(set(keys))
    for root, pieces in chains.items():
        done = [p for p in pieces if p.state.name in ("COMPLETE", "PRUNED")]
        done.sort(key=lambda p: p.number)
        start_epoch = 0
        for p in done:
            r = records[p.number]
            assert int(r.from_rung or 0) == start_epoch, (root, [records[q.number] for q in done])
            assert [h["epoch"] for h in r.history] == list(range(1, r.rung + 1))
            start_epoch = r.rung
        assert records[done[-1].number].status in ("ok", "paused")
        if records[done[-1].number].status == "ok":
            assert records[done[-1].number].rung == EPOCHS

    # a piece that resumed a chain starts from its checkpoint: the epochs before it are the paused piece's own
    resumed = [t for t in final if records[t.number].resume_of is not None and t.state.name != "FAIL"]
    assert resumed
    for t in resumed:
        r = records[t.number]
        paused = max((p for p in chains[r.resume_of] if p.number < t.number and records[p.number].rung == r.from_rung
                      and records[p.number].status == "paused"), key=lambda p: p.number)
        assert r.history[:r.from_rung] == records[paused.number].history  # restored, not trained again
        assert r.checkpoint == records[paused.number].checkpoint or r.status == "paused"
    killed_worker_chains = {moasha.root(t) for t in before.values()}
    assert killed_worker_chains & {records[t.number].resume_of for t in resumed}

    # promotions follow the non-dominated order of the chains recorded at that rung when it was made
    cost = ["flops"]
    all_records = moasha.from_trials(final, cost)
    for t in resumed:
        r = records[t.number]
        at = [x for x in moasha.latest(all_records, r.from_rung) if x.trial in set(r.promoted_among)]
        assert r.resume_of in {x.trial for x in moasha.top(at, r.from_rung, ETA)}
    # a promotion is claimed once: one resumed piece per (chain, rung), apart from retries of a killed piece
    pairs = [(records[t.number].resume_of, records[t.number].from_rung) for t in resumed
             if records[t.number].status is not None]
    assert len(pairs) == len(set(pairs))

    rows = read_csv(run_dir / "trials.csv")
    front = read_csv(run_dir / "pareto.csv")
    ok_numbers = {t.number for t in final if records[t.number].status == "ok"}
    assert {int(r["number"]) for r in front} <= ok_numbers
    assert any(r["status"] == "paused" for r in rows)
