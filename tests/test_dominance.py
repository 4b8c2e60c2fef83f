"""Multi-objective pruning by epsilon-dominance at a rung (dse.trials.dominance): the rule on hand-computed cases,
the rung records in an Optuna storage, the wiring (study file, pruner, train callback), and real
`dse.search` runs where the rule fires (one process, and a two-rank DDP trial on CPU)."""
from __future__ import annotations

import math

import optuna
import pytest

from dse.trials import dominance as dom
from dse.errors import UserError
from search_helpers import load_study, ok, read_csv, search, search_here

optuna.logging.set_verbosity(optuna.logging.ERROR)
COST = {"flops": 10.0, "params": 5.0}


# ----- the rule -----

@pytest.mark.parametrize("other_acc, other_costs, eps, expected", [
    (0.9, {"flops": 8.0, "params": 5.0}, 0.0, True),     # more accurate, cheaper, params equal
    (0.9, {"flops": 12.0, "params": 1.0}, 0.0, False),   # more accurate but more FLOPs
    (0.7, {"flops": 1.0, "params": 1.0}, 0.0, False),    # cheaper but less accurate
    (0.8, {"flops": 10.0, "params": 5.0}, 0.0, True),    # a tie in everything: the later trial goes (eps 0)
    (0.8, {"flops": 10.0, "params": 5.0}, 0.01, False),  # ... but not with a margin
    (0.8, {"flops": 9.0, "params": 4.0}, 0.0, True),     # equal accuracy, strictly cheaper
    (0.9, {"flops": 8.0}, 0.0, False),                   # the other's params are unknown: no proof
    (0.9, {"flops": 8.0, "params": None}, 0.0, False),
    (math.nan, {"flops": 1.0, "params": 1.0}, 0.0, False),
])
def test_dominates_hand_cases(other_acc, other_costs, eps, expected):
    assert dom.dominates(0.8, COST, other_acc, other_costs, eps) is expected


def test_eps_is_a_margin_in_accuracy():
    costs = {"flops": 1.0}
    assert dom.dominates(0.5, costs, 0.75, costs, eps=0.25)       # 0.75 >= 0.5 + 0.25
    assert not dom.dominates(0.5, costs, 0.75, costs, eps=0.375)  # 0.75 < 0.875
    assert not dom.dominates(0.5, {"flops": None}, 0.9, costs)    # this trial's own cost unknown


def test_dominator_warm_up_and_order():
    strong = (3, 0.9, {"flops": 1.0})
    weak = (4, 0.1, {"flops": 1.0})
    assert dom.dominator(0.5, {"flops": 2.0}, [strong], min_trials=2) is None  # too few records at this rung
    assert dom.dominator(0.5, {"flops": 2.0}, [weak, strong], min_trials=2) == strong
    assert dom.dominator(0.95, {"flops": 2.0}, [weak, strong], min_trials=1) is None
    with pytest.raises(ValueError, match="cost objective"):
        dom.dominator(0.5, {}, [strong])


# ----- rung records in a storage -----

def _study(objectives=("accuracy", "flops")):
    study = optuna.create_study(directions=["maximize"] + ["minimize"] * (len(objectives) - 1),
                                pruner=dom.DominancePruner())
    study.set_user_attr("objectives", list(objectives))
    return study


def _trial(study, flops, params):
    trial = study.ask()
    trial.set_user_attr("flops", flops)
    trial.set_user_attr("params", params)
    return trial


def test_check_records_reads_other_trials_and_names_the_dominator():
    study = _study()
    first = _trial(study, flops=100, params=50)
    assert dom.check(first, 1, 0.8) is None  # nobody else at rung 1 yet (warm-up)
    second = _trial(study, flops=200, params=10)  # fewer params, but params is not an objective of this study
    reason = dom.check(second, 1, 0.7)
    assert reason.startswith(f"dominated at epoch 1 by trial {first.number}") and "flops" in reason
    assert dom.check(second, 2, 0.7) is None  # rung 2: first has no record there
    third = _trial(study, flops=50, params=500)  # cheaper than both: never dominated by them
    assert dom.check(third, 1, 0.1) is None
    frozen = {t.number: t for t in study.get_trials(deepcopy=False)}
    assert dom.rung(frozen[second.number]) == {1: 0.7, 2: 0.7}


def test_check_compares_every_cost_objective_and_never_prunes_the_last_epoch():
    study = _study(("accuracy", "flops", "params"))
    first = _trial(study, flops=100, params=50)
    dom.check(first, 1, 0.9)
    cheaper_params = _trial(study, flops=200, params=10)
    assert dom.check(cheaper_params, 1, 0.5) is None  # not dominated in params
    worse = _trial(study, flops=200, params=60)
    assert dom.check(worse, 1, 0.5, epochs=1) is None  # the last epoch: recorded, kept
    assert dom.check(worse, 1, 0.5, epochs=4, warmup=0.5) is None  # in the warm-up: first rung is 2
    assert dom.check(worse, 2, 0.5, epochs=4, warmup=0.5) is None  # nobody else recorded rung 2
    assert dom.check(worse, 1, 0.5) is not None
    assert dom.check(_trial(study, flops=200, params=60), 1, 0.5, eps=0.5) is None  # 0.9 < 0.5 + 0.5


def test_first_rung():
    assert [dom.first_rung(e, 0.5) for e in (1, 2, 3, 4, 10)] == [1, 1, 2, 2, 5]
    assert [dom.first_rung(e, 0.0) for e in (1, 4)] == [1, 1] and dom.first_rung(4, 0.75) == 3


def test_cost_keys_without_an_objectives_attribute_compare_every_cost_the_trial_has():
    study = optuna.create_study(directions=["maximize", "minimize"])
    assert dom.cost_keys(study, {"flops": 1, "params": 2, "val_acc": 0.5}) == ("flops", "params")


# ----- wiring -----

def test_study_file_accepts_dominance_for_multi_objective_only():
    from dse import study as studies

    assert studies.from_dict({"name": "s", "pruner": "dominance"}).pruner == "dominance"  # [accuracy, flops]
    with pytest.raises(UserError, match="cost objective"):
        studies.from_dict({"name": "s", "pruner": "dominance", "objectives": ["accuracy"]})
    with pytest.raises(UserError, match="single objective"):
        studies.from_dict({"name": "s", "pruner": "median"})


def test_make_pruner_and_train_pick_the_dominance_callback():
    from dse.trials import pruning
    from dse.trials.objective import make_pruner

    pruner = make_pruner("dominance", 3)
    assert isinstance(pruner, optuna.pruners.NopPruner) and pruner.eps == dom.EPS
    study = _study()
    callback = pruning.callback(study.ask())
    assert type(callback).__name__ == "DominanceCallback" and hasattr(callback, "check_pruned")
    plain = optuna.create_study(directions=["maximize", "minimize"])
    assert pruning.callback(plain.ask()) is None  # multi-objective without pruner: dominance: nothing


# ----- the rule firing in real searches -----

SPACE = {"depth": [11, 20, 29], "cardinality": [1, 2, 4, 8, 16], "bottleneck_width": [2, 4, 8, 16],
         "width": [32, 64, 128]}
CHEAP = {"depth": 11, "cardinality": 1, "bottleneck_width": 2, "width": 32}       # 0.58 MFLOPs, 16k params
STRONG = {"depth": 20, "cardinality": 1, "bottleneck_width": 2, "width": 32}      # 0.71 MFLOPs, 20k params
EXPENSIVE = {"depth": 11, "cardinality": 2, "bottleneck_width": 16, "width": 32}  # 5.9 MFLOPs, 143k params


def _seed_study(run_dir, name: str, epochs: int) -> list[dict]:
    """A stored study with MIN_TRIALS trained trials of STRONG that scored 100% at every rung (no net can do
    better), then EXPENSIVE and CHEAP enqueued: EXPENSIVE costs more of both, so it is dominated at rung 1;
    CHEAP costs fewer FLOPs than every other trial, so nothing can dominate it."""
    from optuna.distributions import CategoricalDistribution

    from dse import complexity

    from dse.train import datasets
    from dse.space.parse import load

    data = datasets.load("synthetic", subset=512, val_subset=256)
    space = load("spaces/resnext.yaml").with_geometry(image_size=int(data.image_size),
                                                      in_chans=int(data.in_chans), num_classes=10)
    counts = {}
    for label, values in (("strong", STRONG), ("expensive", EXPENSIVE), ("cheap", CHEAP)):
        c = complexity(space.point(values))
        counts[label] = {"params": int(c.params), "flops": int(c.flops)}
    assert counts["cheap"]["flops"] < counts["strong"]["flops"] < counts["expensive"]["flops"]
    assert counts["strong"]["params"] < counts["expensive"]["params"]
    run_dir.mkdir(parents=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{run_dir / 'study.db'}",
                                directions=["maximize", "minimize"])
    study.set_user_attr("space", "resnext")
    study.set_user_attr("objectives", ["accuracy", "flops"])
    point = space.point(STRONG)
    for _ in range(dom.MIN_TRIALS):
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE, values=[1.0, counts["strong"]["flops"]], params=STRONG,
            distributions={k: CategoricalDistribution(v) for k, v in SPACE.items()},
            user_attrs={"point": point.to_dict(), "point_id": point.id, "seed": 0, **counts["strong"],
                        "val_acc": 1.0, "epochs": epochs, "status": "ok", "reason": "",
                        "history": [{"epoch": e, "val/acc": 1.0} for e in range(1, epochs + 1)]},
            system_attrs={dom.key(e): 1.0 for e in range(1, epochs + 1)}))
    study.enqueue_trial(EXPENSIVE)
    study.enqueue_trial(CHEAP)
    return counts


def _by_params(trials, values):
    return [t for t in trials if t.params == values]


# The fewest epochs with a rung the default warm-up lets the rule prune at, and that rung.
EPOCHS = next(e for e in range(2, 10) if dom.first_rung(e) < e)
RUNG = dom.first_rung(EPOCHS)


def test_search_prunes_a_dominated_trial_and_keeps_its_partial_curve(tmp_path):
    _seed_study(tmp_path / "runs/dom", "dom", epochs=EPOCHS)
    ok(search_here("space=resnext", "study.name=dom", "study.pruner=dominance", f"trainer.max_epochs={EPOCHS}",
                   f"study.n_trials={dom.MIN_TRIALS + 2}", cwd=tmp_path))
    trials = load_study(tmp_path / "runs/dom", "dom").trials
    [expensive] = _by_params(trials, EXPENSIVE)
    assert expensive.state.name == "PRUNED" and expensive.user_attrs["status"] == "pruned"
    assert expensive.user_attrs["reason"].startswith(f"dominated at epoch {RUNG} by trial 0")
    assert expensive.user_attrs["epochs"] == RUNG < EPOCHS  # stopped before the end
    history = expensive.user_attrs["history"]
    assert [h["epoch"] for h in history] == list(range(1, RUNG + 1))  # the partial curve is kept
    assert dom.rung(expensive) == {h["epoch"]: pytest.approx(h["val/acc"]) for h in history}
    [cheap] = _by_params(trials, CHEAP)
    assert cheap.state.name == "COMPLETE" and cheap.user_attrs["status"] == "ok"  # not dominated: trained out
    assert cheap.user_attrs["epochs"] == EPOCHS and set(dom.rung(cheap)) == set(range(1, EPOCHS + 1))
    rows = {int(r["number"]): r for r in read_csv(tmp_path / "runs/dom/trials.csv")}
    assert rows[expensive.number]["status"] == "pruned" and rows[expensive.number]["accuracy"] == ""
    front = {r["point_id"] for r in read_csv(tmp_path / "runs/dom/pareto.csv")}
    assert expensive.user_attrs["point_id"] not in front  # a pruned trial is not a trained result


@pytest.mark.slow
def test_ddp_rank_0_decides_and_the_follower_stops_with_it(tmp_path):
    epochs = EPOCHS + 1  # a follower that did not stop would run on and hang the broadcast
    _seed_study(tmp_path / "runs/ddp_dom", "ddp_dom", epochs=epochs)
    rung = dom.first_rung(epochs)
    proc = ok(search("space=resnext", "study.name=ddp_dom", "study.pruner=dominance",
                     f"study.n_trials={dom.MIN_TRIALS + 1}", "trainer.accelerator=cpu", "trainer.devices=2",
                     "trainer.strategy=ddp", "trainer.threads=1", f"trainer.max_epochs={epochs}",
                     "trainer.limit_batches=2", cwd=tmp_path, timeout=600))
    trials = load_study(tmp_path / "runs/ddp_dom", "ddp_dom").trials
    [expensive] = _by_params(trials, EXPENSIVE)
    assert expensive.state.name == "PRUNED" and expensive.user_attrs["epochs"] == rung, expensive.user_attrs
    assert set(dom.rung(expensive)) == set(range(1, rung + 1))  # rank 0 wrote each rung it reached
    assert len(trials) == dom.MIN_TRIALS + 2  # the follower rank asked for no trial; CHEAP still waits
    assert sum(1 for ln in proc.stdout.splitlines() if ln.startswith("study ddp_dom:")) == 1
