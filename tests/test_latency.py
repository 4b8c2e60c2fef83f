"""Measured latency: a median of timed forward passes on the trial's device, cached in the study by point id."""
from __future__ import annotations

import optuna
import pytest

import dse.zoo as zoo
from dse.train import latency
@pytest.fixture
def point():
    return zoo.get("resnet20")


def test_latency_is_a_median_of_timed_passes(point):
    ms = latency.measure(point, batch=4, warmup=1, repeats=3)
    assert 0 < ms < 10_000


def test_a_bigger_net_takes_longer(point):
    wide = zoo.get("wrn_16_8")  # ~40x the multiply-adds of resnet20 at 32 px
    small, big = (latency.measure(p, batch=8, warmup=1, repeats=5) for p in (point, wide))
    assert big > small


def test_cached_by_point_id_device_batch_and_size(point, monkeypatch):
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    first, hit = latency.cached(study, point, batch=2)
    assert not hit and first > 0
    monkeypatch.setattr(latency, "measure", lambda *a, **k: pytest.fail("measured again"))
    again, hit = latency.cached(study, point, batch=2)
    assert hit and again == first
    key = latency.key(point.id, "cpu", 2, point.image_size)
    assert study._storage.get_study_system_attrs(study._study_id)[key] == first and point.id in key
    monkeypatch.undo()
    other, hit = latency.cached(study, point, batch=4)  # another batch is another measurement
    assert not hit
