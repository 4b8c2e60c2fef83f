"""What dse adds to each trial at scale (bench/storage.py measures it): StopAt judges each finished trial once,
the result files are rewritten at a bounded rate, gc runs only after a trial that trained, and opening a study
reads its trials once. Real SQLite studies throughout; the expected numbers are counted by hand from the
trials each test makes."""
from __future__ import annotations

import gc
import weakref

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from dse.trials import runner
from dse.trials.objective import StopAt

from search_helpers import read_csv, search_here

DIST = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}


def finished(status: str, x: float = 0.5, state=TrialState.COMPLETE):
    """A finished trial as dse leaves it: `status` ok / rejected / duplicate."""
    values = None if state == TrialState.FAIL else [0.8 if status == "ok" else 0.0, 1e6]
    attrs = {"status": status, "point_id": f"p{x}", "flops": 1000000, "params": 5000}
    if status == "ok":
        attrs["val_acc"] = 0.8
    return create_trial(state=state, params={"x": x}, distributions=DIST, values=values, user_attrs=attrs)


@pytest.fixture
def study(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.create_study(study_name="cost", storage=f"sqlite:///{tmp_path / 'study.db'}",
                               directions=["maximize", "minimize"])


def test_stopat_counts_every_worker_and_judges_finished_trials_once(study, tmp_path):
    for status in ("ok", "ok", "rejected", "duplicate"):
        study.add_trial(finished(status))
    study.add_trial(finished("duplicate", state=TrialState.FAIL))
    stop = StopAt(total=4, grid=False)
    assert stop.counts(study) == (2, 3)  # ok x2 counted; rejected + duplicate + failed duplicate not

    # another worker's study object on the same storage: a running trial, then two more finished ones
    other = optuna.load_study(study_name="cost", storage=f"sqlite:///{tmp_path / 'study.db'}")
    running = other.ask()
    running.suggest_float("x", 0.0, 1.0)
    other.add_trial(finished("ok", 0.1))
    assert stop.counts(study) == (3, 3)
    running.set_user_attr("status", "ok")
    other.tell(running, [0.9, 2e6])  # it finishes after StopAt first saw it running
    assert stop.counts(study) == (4, 3)
    assert stop.judged == {t._trial_id for t in study.trials}  # every finished trial, each once


def objective(statuses):
    """A trial function that records the next status of `statuses` (ok: trained) and returns its values."""
    def run(trial):
        trial.suggest_float("x", 0.0, 1.0)
        status = statuses.pop(0)
        trial.set_user_attr("status", status)
        if status == "ok":
            trial.set_user_attr("val_acc", 0.8)
        return [0.8 if status == "ok" else 0.0, 1e6]
    return run


def test_stopat_stops_at_the_total_of_trained_trials(study):
    study.add_trial(finished("ok"))  # trained before this run
    statuses = ["rejected", "ok", "duplicate", "rejected", "ok", "ok", "ok"]
    study.optimize(objective(statuses), n_trials=10, callbacks=[StopAt(total=3, grid=False)])
    assert len(study.trials) == 1 + 5  # the 5th trial of the run is the 3rd trained one of the study
    assert statuses == ["ok", "ok"]


def test_stopat_stops_a_study_of_only_rejected_points(study):
    for _ in range(18):
        study.add_trial(finished("rejected"))
    statuses = ["rejected"] * 10
    study.optimize(objective(statuses), n_trials=10, callbacks=[StopAt(total=1, grid=False)])
    assert len(study.trials) == 21  # stops once more than MAX_REJECTED (20) x 1 were rejected


def test_result_files_are_rewritten_at_a_bounded_rate(study, tmp_path, monkeypatch):
    now = [100.0]
    files = runner.Rewrite(tmp_path / "run", every=2, clock=lambda: now[0])
    study.set_user_attr("objectives", ["accuracy", "flops"])
    study.add_trial(finished("ok", 0.1))
    assert files.trial(study)  # the first counted trial writes at once, without plots (1 of every=2)
    assert len(read_csv(tmp_path / "run" / "trials.csv")) == 1
    assert not (tmp_path / "run" / "pareto.png").exists()
    study.add_trial(finished("ok", 0.2))
    now[0] += runner.REWRITE_S - 1
    assert not files.trial(study)  # within REWRITE_S: the storage has it, the file not yet
    assert len(read_csv(tmp_path / "run" / "trials.csv")) == 1
    study.add_trial(finished("ok", 0.3))
    now[0] += 1
    assert files.trial(study)
    assert len(read_csv(tmp_path / "run" / "trials.csv")) == 3
    assert (tmp_path / "run" / "pareto.png").is_file()  # 2 counted trials since the last plot

    real = runner.results.write_all

    def slow(*args, **kwargs):  # a write that takes 10 s (a 10k-trial study on a slow disk)
        now[0] += 10.0
        return real(*args, **kwargs)

    monkeypatch.setattr(runner.results, "write_all", slow)
    now[0] += runner.REWRITE_S
    assert files.trial(study)
    now[0] += 199.0  # the next write waits 20 x 10 s (at most 1/20 of the run's time), not REWRITE_S
    assert not files.trial(study)
    now[0] += 1.0
    assert files.trial(study)


class Node:
    """An object in a reference cycle: only the cycle collector frees it."""

    def __init__(self):
        self.me = self


@pytest.mark.parametrize("status, freed", [("ok", True), ("failed", True), ("rejected", False),
                                           ("duplicate", False)])
def test_gc_runs_only_after_a_trial_that_reached_training(status, freed):
    was = gc.isenabled()
    gc.disable()  # no automatic collection in between
    try:
        gc.collect()
        node = Node()
        alive = weakref.ref(node)
        del node
        runner.collect(None, finished(status))
        assert (alive() is None) == freed
    finally:
        if was:
            gc.enable()


def test_opening_a_study_reads_each_trial_once(tmp_path, monkeypatch):
    from dse.storage import open_storage

    run = tmp_path / "runs" / "once"
    run.mkdir(parents=True)
    storage = open_storage(None, run)
    made = optuna.create_study(study_name="once", storage=storage, directions=["maximize", "minimize"])
    made.set_user_attr("space", "resnext")
    made.set_user_attr("objectives", ["accuracy", "flops"])
    n = 60
    for i in range(n):
        made.add_trial(finished("ok" if i % 3 else "rejected", x=i / n))
    counted = sum(1 for i in range(n) if i % 3)  # 40
    storage.engine.dispose()

    read = []
    real = optuna.storages.RDBStorage._get_trials

    def spy(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        read.extend(t.number for t in out)
        return out

    monkeypatch.setattr(optuna.storages.RDBStorage, "_get_trials", spy)
    proc = search_here("space=resnext", f"study.n_trials={counted}", "study.name=once", f"run_dir={run}",
                       cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "nothing to train in this run" in proc.stdout
    assert len(read_csv(run / "trials.csv")) == n
    assert sorted(read) == list(range(n)), f"{len(read)} trial reads for {n} trials"


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_record_and_its_constraints_are_stored_in_one_commit(tmp_path, kind):
    from sqlalchemy import event

    from dse.record import TrialRecord, save
    from dse.storage import open_storage
    from dse.trials import objective

    url = f"journal:{tmp_path / 'j.log'}" if kind == "journal" else None
    storage = open_storage(url, tmp_path)
    study = optuna.create_study(study_name="attrs", storage=storage, directions=["maximize", "minimize"])
    record = TrialRecord(point={"name": "a", "depth": [1, 2]}, point_id="a1", seed=0, params=5, flops=7,
                         reason="over_budget", status="rejected")
    over = {"flops.max": 0.25, "params.max": -0.5}

    one_by_one = study.ask()  # the public path: a write per field and per constraint
    for name, value in over.items():
        one_by_one.set_constraint(name, value)
    save(one_by_one, record)

    batched = study.ask()
    commits = []
    engine = getattr(storage, "engine", None)
    if engine is not None:
        event.listen(engine, "commit", lambda conn: commits.append(1))
    objective._save(batched, record, constraints=over)
    if engine is not None:
        assert len(commits) == 1  # 7 fields + 2 constraints: 9 commits one by one
    assert batched.user_attrs == one_by_one.user_attrs == record.to_attrs()  # the running trial's own view
    for t in (one_by_one, batched):
        study.tell(t, [0.0, 7.0])
    a, b = (study._storage.get_trial(t._trial_id) for t in (one_by_one, batched))
    assert a.user_attrs == b.user_attrs == record.to_attrs()
    assert a.constraints == b.constraints == over  # what TPE and NSGA-II read

    finished = study._storage.get_trial(batched._trial_id)  # a finished trial refuses writes, as set_user_attr does
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        objective._write_attrs(optuna.trial.Trial(study, finished._trial_id), {"status": "ok"}, {})
