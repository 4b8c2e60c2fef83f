"""dse.record: one type writes and reads a trial's stored attributes, under the names studies on disk use."""
from __future__ import annotations

import dataclasses
import types

import optuna
import pytest

from dse.record import NAMES, TrialRecord, save, write

# The attribute names dse has always stored on a trial: a study written by an earlier dse must still read.
STORED = {"point", "point_id", "seed", "label", "params", "flops", "acts", "rf", "rf_stride", "latency_ms",
          "latency_device", "settings", "width_scale", "trained_params", "trained_flops", "epochs",
          "train_seconds", "cpu_seconds", "val_acc", "test_acc", "val_accs", "val_acc_std", "test_accs", "seeds",
          "history", "duplicate_of", "detail", "reason", "status", "repeat_of", "zerocost",
          "rung", "resume_of", "from_rung", "checkpoint", "promoted_among"}  # pruner moasha's pieces


def test_field_names_are_the_stored_attribute_names():
    assert STORED <= set(NAMES)
    assert set(NAMES) - STORED == {"cell"}  # read only: older grid studies
    assert NAMES[-2:] == ("reason", "status")  # the outcome is written last


def test_round_trip_through_a_stored_trial():
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    write(trial, point={"name": "x"}, point_id="abc", seed=3, params=10, flops=20, acts=30, rf=7, rf_stride=2)
    write(trial, epochs=2, train_seconds=1.5, cpu_seconds=2.5, val_acc=0.9, test_acc=None)
    write(trial, reason="", status="ok")
    study.tell(trial, [0.9, 20.0])
    frozen = study.trials[0]
    record = TrialRecord.from_trial(frozen)
    assert record.point_id == "abc" and record.flops == 20 and record.rf == 7 and record.val_acc == 0.9
    assert record.latency_ms is None and record.test_acc is None and "test_acc" in frozen.user_attrs  # None kept
    assert record.trained and record.ended and not record.untrained and record.accuracy == 0.9
    assert TrialRecord.from_attrs(record.to_attrs()) == record
    assert list(record.to_attrs())[-1] == "status"


def test_write_keeps_the_order_and_refuses_unknown_fields():
    set_ = []

    class Fake:
        def set_user_attr(self, key, value):
            set_.append(key)

    write(Fake(), status="ok", reason="", val_acc=0.5, point_id="p")
    assert set_ == ["point_id", "val_acc", "reason", "status"]
    with pytest.raises(TypeError, match="unknown trial record field 'val_accuracy'"):
        write(Fake(), val_accuracy=0.5)


def test_unknown_attributes_are_left_out_and_missing_ones_read_none():
    record = TrialRecord.from_attrs({"status": "rejected", "reason": "over_budget", "owner": "host:1"})
    assert record.untrained and record.accuracy is None and record.flops is None
    assert record.to_attrs() == {"reason": "over_budget", "status": "rejected"}
    assert not TrialRecord().ended


def test_objective_values_and_new_measures():
    record = TrialRecord(val_acc=0.75, flops=100, params=5, acts=7, rf=35, rf_stride=8, latency_ms=1.25)
    assert [record.objective(o) for o in ("accuracy", "error", "flops", "params", "acts", "rf", "latency")] \
        == [0.75, 0.25, 100.0, 5.0, 7.0, 35.0, 1.25]
    assert TrialRecord().objective("latency") is None and TrialRecord().objective("error") is None


def test_every_measure_a_trial_records_has_a_field():
    """dse.trials.objective stores every field of dse.cost.measures on the trial: a new measure needs a record field."""
    from dse.graph.count import Measures

    assert set(Measures._fields) <= set(NAMES)


def test_save_stores_only_what_the_trial_does_not_hold_yet_outcome_last():
    set_ = []

    class Fake:
        def set_user_attr(self, key, value):
            set_.append((key, value))

    early = save(Fake(), TrialRecord(point_id="p", seed=0, flops=20))
    assert set_ == [("point_id", "p"), ("seed", 0), ("flops", 20)]
    set_.clear()
    save(Fake(), dataclasses.replace(early, val_acc=0.5, reason="", status="ok"), early)
    assert set_ == [("val_acc", 0.5), ("reason", ""), ("status", "ok")]


def test_a_trial_stores_its_point_and_costs_before_training_and_each_field_once():
    """dse.trials.objective builds the record in memory: the point and its costs are stored before the fit
    (other workers read them while it trains: dse.trials.sampling, dse.trials.dominance), the outcome at the end,
    and no field twice. A real Optuna study and the real trial function; only the fit is a constant result."""
    from dse import study as studies
    from dse.space import load
    from dse.train.fit import TrainResult
    from dse.trials import objective as obj

    space = load("resnext")
    study = optuna.create_study(directions=["maximize", "minimize"])
    stored = []  # the key of every user attribute the storage is asked to set
    real = study._storage.set_trial_user_attr
    study._storage.set_trial_user_attr = lambda tid, key, value: (stored.append(key), real(tid, key, value))
    during = {}

    class Constant(obj.Objective):
        def train(self, trial, point, seed, params, flops, *args, **kwargs):
            during.update(study._storage.get_trial(trial._trial_id).user_attrs)
            return TrainResult(0.5, None, 1, 2.0, "ok", "", history=[{"epoch": 1, "val/acc": 0.5}])

    spec = studies.from_dict({"name": "t", "objectives": ["accuracy", "flops"]})
    data = types.SimpleNamespace(**{k: space.geometry[k] for k in ("image_size", "in_chans", "num_classes")})
    objective = Constant(study=spec, space=space, cells=None, data=data, recipe=types.SimpleNamespace(seed=0),
                         loggers=types.SimpleNamespace(trial=lambda *a, **k: None, trial_done=lambda *a, **k: None),
                         progress=False, settings={"data": {"name": "synthetic"}})
    values = space.sample_with_values(3, feasible=True)[1]  # a point inside the space's budget: it trains
    study.enqueue_trial({name: space.params[name].label(v) for name, v in values.items() if name in space.params})
    study.optimize(objective, n_trials=1)
    [trial] = study.trials
    assert trial.user_attrs["status"] == "ok", trial.user_attrs
    assert {"point", "point_id", "seed", "params", "flops", "acts", "rf", "settings"} <= set(during)
    assert "status" not in during and "val_acc" not in during
    assert sorted(stored) == sorted(set(stored)) and stored[-1] == "status"  # each field once, the outcome last
    record = TrialRecord.from_trial(trial)
    assert trial.values == [0.5, float(record.flops)] and record.history == [{"epoch": 1, "val/acc": 0.5}]
