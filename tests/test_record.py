"""dse.record: one type writes and reads a trial's stored attributes, under the names studies on disk use."""
from __future__ import annotations

import optuna
import pytest

from dse.record import NAMES, TrialRecord, write

# The attribute names dse has always stored on a trial: a study written by an earlier dse must still read.
STORED = {"point", "point_id", "seed", "label", "params", "flops", "acts", "rf", "rf_stride", "latency_ms",
          "latency_device", "settings", "width_scale", "trained_params", "trained_flops", "epochs",
          "train_seconds", "cpu_seconds", "val_acc", "test_acc", "val_accs", "val_acc_std", "test_accs", "seeds",
          "history", "duplicate_of", "detail", "reason", "status"}


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
