"""Sampled studies train a point once (issue 11): an atomic claim per (point, seed) in the storage.

Before the fix, duplicate detection read only finished trials and every pool worker had the same sampler
seed, so two workers trained the same point at the same time.
"""
from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml

from dse.trials import claims
from dse.storage import open_storage
from search_helpers import env, load_study, ok, search

HERE = Path(__file__).parent
N_KEYS, N_PROCS = 20, 4


def race(url: str, tmp_path: Path, old: int | None = None) -> Counter:
    """N_PROCS processes claim the same N_KEYS keys at the same moment (or, with `old`, take them over from trial
    id `old`, which holds them all); how often each key was won. Each process says `ready` once it has imported
    and opened the storage; when all have, each gets its go line at once."""
    study = optuna.create_study(study_name="race", storage=open_storage(url, tmp_path))
    if old is not None:
        assert all(claims.claim(study, f"k{i}", old) is None for i in range(N_KEYS))
    procs = [subprocess.Popen([sys.executable, str(HERE / "point_claims_worker.py"), url, "race", str(N_KEYS),
                               str(100 + i), *([] if old is None else [str(old)])], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env())
             for i in range(N_PROCS)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.wait(timeout=120)
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs)
    return Counter(k for out in outs for k in out.split())


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_each_key_is_won_by_exactly_one_process(tmp_path, kind):
    url = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else f"journal:{tmp_path / 's.log'}"
    won = race(url, tmp_path)
    assert sorted(won) == sorted(f"k{i}" for i in range(N_KEYS)) and set(won.values()) == {1}


def test_each_key_is_won_by_exactly_one_process_on_postgres(tmp_path, postgres_url):
    won = race(postgres_url, tmp_path)
    assert sorted(won) == sorted(f"k{i}" for i in range(N_KEYS)) and set(won.values()) == {1}


def test_the_loser_learns_the_holder(tmp_path):
    study = optuna.create_study(study_name="h", storage=open_storage(f"sqlite:///{tmp_path / 'h.db'}", tmp_path))
    assert claims.claim(study, "p:0", 7) is None
    assert claims.claim(study, "p:0", 8) == 7
    assert claims.take_over(study, "p:0", 8, 7)
    assert claims.claim(study, "p:0", 9) == 8


def test_two_workers_on_a_sampled_study_never_train_a_point_twice(tmp_path):
    space = tmp_path / "twelve.yaml"  # 12 points: two workers with one seed would collide at once
    space.write_text(yaml.safe_dump({"base": "resnet20", "params": {
        "width": {"type": "choice", "values": [4, 6, 8, 10, 12, 14]},
        "depth": {"type": "choice", "values": [1, 2]}},
        "set": {"stages[*].width": "width * 2 ** i", "stages[*].depth": "depth"}}))
    ok(search(f"space={space}", "sampler=random", "study.n_trials=8", "study.name=w", "workers=2",  # no sizing:
              "trainer.threads=1", "study.trials_per_timeout=null", cwd=tmp_path, timeout=400))  # not its subject
    trials = load_study(tmp_path / "runs/w", "w").trials
    trained = Counter((t.user_attrs["point_id"], t.user_attrs["seed"]) for t in trials
                      if t.user_attrs.get("status") == "ok")
    # n_trials is shared: both workers may finish the trial they hold when the count reaches 8 (docs/cluster.md)
    assert 8 <= sum(trained.values()) <= 9 and max(trained.values()) == 1, trained
    # a point may train again with another seed: the seed-noise repeat (study.noise_after), one per study, or
    # one per worker when both enqueue it in the same instant
    assert sum(len({s for p, s in trained if p == q}) > 1 for q in {p for p, _ in trained}) <= 2, trained
    assert not [t for t in trials if t.state.name == "RUNNING"]
    repeats = [t for t in trials if t.user_attrs.get("status") == "duplicate"]
    assert all(t.state.name == "FAIL" and t.values is None for t in repeats)  # no sampler counts them


def test_a_copy_popped_before_its_interrupted_source_is_failed_retries_the_point(tmp_path):
    """An interrupted trial queues its WAITING copy (signals._record) before Optuna marks it FAIL. Another worker
    that pops the copy in that moment found the claim held by a RUNNING trial and ended the copy as a duplicate,
    so the point was never retried (a scancel'ed SLURM task's trial, CI 2026-12-07). It now waits for the source
    to end and takes the claim over."""
    import threading

    from dse.trials import signals
    from dse.trials.objective import Objective

    study = optuna.create_study(study_name="s", storage=open_storage(f"sqlite:///{tmp_path / 's.db'}", tmp_path))
    source = study.ask()
    source.suggest_int("x", 0, 9)
    source.set_user_attr("point_id", "p")
    assert claims.claim(study, "p:0", source._trial_id) is None
    study.add_trial(signals._copy(source))  # what _record does, before the trial function raises

    def fail_later():  # Optuna's tell of the raised TrialInterrupted, 1 s later (a slow, loaded worker)
        time.sleep(1.0)
        source.set_user_attr("reason", signals.REASON)
        study.tell(source, state=optuna.trial.TrialState.FAIL)

    teller = threading.Thread(target=fail_later)
    teller.start()
    copy = study.ask()  # another worker pops the copy while the source is still RUNNING
    assert copy.params == source.params and study.trials[source.number].state.name == "RUNNING"
    started = time.monotonic()
    verdict = Objective(study=None, space=None, cells=None, data=None, recipe=None,
                        loggers=None).repeated(copy, "p", 0)
    teller.join()
    assert verdict is None, verdict  # it trains the point
    assert 0.5 < time.monotonic() - started < 30  # after the source ended, not before
    assert claims.claim(study, "p:0", -5) == copy._trial_id  # the claim is the copy's now


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_retries_of_one_dead_holder_take_its_point_over_exactly_once(tmp_path, kind):
    """N_PROCS processes take the same keys over from one holder at the same moment: each key goes to exactly one
    of them. (Before, take_over was a plain write: every retry that had read the dead holder wrote itself as the
    holder and trained the point.)"""
    url = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else f"journal:{tmp_path / 's.log'}"
    won = race(url, tmp_path, old=7)
    assert sorted(won) == sorted(f"k{i}" for i in range(N_KEYS)) and set(won.values()) == {1}, won
    study = optuna.load_study(study_name="race", storage=open_storage(url, tmp_path))
    assert all(100 <= claims.claim(study, f"k{i}", 1) < 100 + N_PROCS for i in range(N_KEYS))


def test_a_take_over_whose_winner_died_before_it_held_the_key_is_taken_over_from_it(tmp_path):
    """The sub-claim '<key>:from:<old>' that makes a take-over atomic would keep the key for good if its winner
    died before writing itself as the holder; `dead` says when that winner is gone, and the key is taken over
    from it in turn. A live winner keeps it."""
    study = optuna.create_study(study_name="s", storage=open_storage(f"sqlite:///{tmp_path / 's.db'}", tmp_path))
    assert claims.claim(study, "p:0", 7) is None
    assert claims.claim(study, "p:0:from:7", 8) is None  # trial 8 won the take-over of 7, then died
    assert claims.claim(study, "p:0", 1) == 7  # ... before it wrote itself as the holder
    assert not claims.take_over(study, "p:0", 9, 7, dead=lambda won: False)  # 8 alive: 9 is a duplicate
    assert claims.take_over(study, "p:0", 9, 7, dead=lambda won: won == 8)  # 8 dead: 9 takes it from 8
    assert claims.claim(study, "p:0", 1) == 9
    assert not claims.take_over(study, "p:0", 10, 7, dead=lambda won: won == 8)  # 9 holds it now (alive)
