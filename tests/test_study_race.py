"""Simultaneous starts: processes that open the same new study at once (SLURM array tasks, pool workers) all
join one study; before, the one whose create lost the race died with DuplicatedStudyError."""
from __future__ import annotations

import multiprocessing
from pathlib import Path

from dse.study import from_dict
from dse.trials import objective


def _study():
    """The study every process opens."""
    return from_dict({"name": "race", "space": "resnext"})


def test_a_create_that_loses_the_race_joins_the_winners_study(tmp_path, monkeypatch):
    """Forced interleaving: our load finds no study, then another process creates it before our create."""
    import optuna

    from dse.storage import open_storage

    url = f"sqlite:///{tmp_path / 'race.db'}"
    storage = open_storage(url, tmp_path)
    real_load = optuna.load_study
    calls = {"n": 0}

    def load_after_the_other_created(**kwargs):
        calls["n"] += 1
        if calls["n"] == 1:  # the other process wins between our failed load and our create
            optuna.create_study(study_name="race", storage=open_storage(url, tmp_path),
                                directions=["maximize", "minimize"])
            raise KeyError("race")
        return real_load(**kwargs)

    monkeypatch.setattr(optuna, "load_study", load_after_the_other_created)
    study = objective.open_study(storage, _study(), None, None, "resnext")
    assert study.study_name == "race" and calls["n"] == 2
    assert len(optuna.get_all_study_names(storage)) == 1


def _open_at_once(url: str, barrier, out) -> None:
    """A process that opens the study when every other one does."""
    from dse.storage import open_storage

    storage = open_storage(url, Path(url[len("sqlite:///"):]).parent)
    barrier.wait()
    try:
        out.put(objective.open_study(storage, _study(), None, None, "resnext").study_name)
    except Exception as exc:  # the failure this test is about
        out.put(f"{type(exc).__name__}: {exc}")


def test_six_processes_released_at_once_join_one_study(tmp_path):
    ctx = multiprocessing.get_context("fork")
    url = f"sqlite:///{tmp_path / 'race.db'}"
    barrier, out = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_open_at_once, args=(url, barrier, out)) for _ in range(6)]
    for p in procs:
        p.start()
    got = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert got == ["race"] * 6
