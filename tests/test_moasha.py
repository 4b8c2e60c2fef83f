"""dse.trials.moasha: rungs, non-dominated order with crowding tie-break, asynchronous promotion, all against
hand computations (worked out in the comments), and the same decisions read back from a real SQLite study."""
from __future__ import annotations

import math

import pytest

from dse.errors import UserError
from dse.trials import moasha
from dse.trials.moasha import record

# Nine trials at rung 1, (accuracy, FLOPs). By hand:
#   front 1 = {0, 1, 2, 4, 7}: by cost 7 (.65@1), 2 (.70@2), 0 (.80@5), 1 (.85@8), 4 (.90@9), accuracy rising
#   front 2 = {3, 5, 6}: 3 (.75@6) is dominated by 0, 5 (.60@3) by 2, 6 (.82@9) by 1; none of them by another
#   front 3 = {8}: (.50@4) is dominated by 5 (.60@3)
# Crowding in front 1 (cost range 8, accuracy range .25): ends 7 and 4 infinite;
#   2: (5-1)/8 + (.80-.65)/.25 = 1.10;  0: (8-2)/8 + (.85-.70)/.25 = 1.35;  1: (9-5)/8 + (.90-.80)/.25 = 0.90
# so front 1 ranks 4 (inf, more accurate), 7 (inf), 0, 2, 1; front 2: ends 6 and 5 (6 more accurate), then 3.
NINE = [(0.80, 5), (0.85, 8), (0.70, 2), (0.75, 6), (0.90, 9), (0.60, 3), (0.82, 9), (0.65, 1), (0.50, 4)]


def nine(rung: int = 1):
    return [record(i, rung, a, c) for i, (a, c) in enumerate(NINE)]


def test_rungs_are_geometric_fractions_of_the_budget():
    assert moasha.rungs(4) == [1, 3]
    assert moasha.rungs(4, min_rung=2) == [2]
    assert moasha.rungs(27, 1, 3) == [1, 3, 9]
    assert moasha.rungs(16, 1, 2) == [1, 2, 4, 8]
    assert moasha.rungs(4, min_rung=4) == []
    with pytest.raises(ValueError):
        moasha.rungs(4, 1, 1)


def test_fronts_and_crowding_by_hand():
    recs = nine()
    values = [r.values for r in recs]
    assert moasha.fronts(values) == [[0, 1, 2, 4, 7], [3, 5, 6], [8]]
    dist = moasha.crowding(values, [0, 1, 2, 4, 7])
    assert math.isinf(dist[7]) and math.isinf(dist[4])
    assert dist[2] == pytest.approx(1.10) and dist[0] == pytest.approx(1.35) and dist[1] == pytest.approx(0.90)


def test_nine_trials_three_promoted_in_order():
    assert [r.trial for r in moasha.order(nine())] == [4, 7, 0, 2, 1, 6, 5, 3, 8]
    assert [r.trial for r in moasha.top(nine(), 1)] == [4, 7, 0]  # floor(9 / 3) = 3
    assert [r.trial for r in moasha.top(nine(), 1, eta=2)] == [4, 7, 0, 2]  # floor(9 / 2) = 4
    assert moasha.top(nine(), 3) == []  # nothing recorded at rung 3


def test_asynchronous_arrivals_pause_then_promote():
    # Arrivals in trial order; after each one, goes_on (decided on arrival) and then what a free worker resumes.
    #   0: n=1, top 0 -> pauses.  1: n=2 -> pauses.
    #   2: n=3, top 1 of {0, 1, 2} (all one front; ends 2 and 1 infinite, 1 more accurate) = [1]: 2 pauses, 1 resumed
    #   3: n=4, top 1 still [1] (3 is dominated by 0): pauses, nothing to resume
    #   4: n=5, top 1 = [4] (an end of the front, the most accurate): goes on at once
    #   5: n=6, top 2 = [4, 2] (2 is now the cheap end): 5 pauses, 2 resumed
    #   6: n=7, top 2 = [4, 2]: 6 pauses, nothing to resume
    #   7: n=8, top 2 = [4, 7]: goes on at once
    #   8: n=9, top 3 = [4, 7, 0]: 8 pauses, 0 resumed
    seen, promoted, went_on, resumed = [], set(), [], []
    for rec in nine():
        seen.append(rec)
        if moasha.goes_on(seen, rec.trial, 1):
            promoted.add((rec.trial, 1))
            went_on.append(rec.trial)
        nxt = moasha.next_promotion(seen, [1, 3], promoted)
        while nxt is not None:
            promoted.add((nxt.trial, nxt.rung))
            resumed.append((len(seen) - 1, nxt.trial))
            nxt = moasha.next_promotion(seen, [1, 3], promoted)
    assert went_on == [4, 7]
    assert resumed == [(2, 1), (5, 2), (8, 0)]
    # Five promoted in all, though the final top 3 is {4, 7, 0}: a promotion is never taken back.
    assert {t for t, _ in promoted} == {1, 4, 2, 7, 0}


def test_higher_rung_first_and_later_records_count_as_promoted():
    recs = nine(1) + [record(t, 3, a, c) for t, (a, c) in [(4, (0.91, 9)), (7, (0.70, 1)), (0, (0.86, 5))]]
    # Rung 3: {4, 7, 0} all on one front, top floor(3/3) = 1: ends 7 (cheapest) and 4 (most accurate) -> 4.
    assert moasha.next_promotion(recs, [1, 3]) == record(4, 3, 0.91, 9)
    # 4 promoted from rung 3; rung 1's top 3 (4, 7, 0) all have rung-3 records, so nothing is left.
    assert moasha.next_promotion(recs, [1, 3], promoted={(4, 3)}) is None
    # A finished or failed trial is never resumed.
    assert moasha.next_promotion(recs, [1, 3], done={4}) is None


def test_ties_fall_to_accuracy_then_the_earlier_trial():
    same = [record(t, 1, 0.8, 5) for t in (5, 2, 9)]
    assert [r.trial for r in moasha.order(same)] == [2, 5, 9]
    assert moasha.crowding([r.values for r in same], [0, 1, 2]) == {0: math.inf, 1: math.inf, 2: math.inf}
    # Equal cost, different accuracy: the more accurate dominates. Equal accuracy at lower cost: dominates too.
    recs = [record(0, 1, 0.8, 5), record(1, 1, 0.9, 5), record(2, 1, 0.8, 4)]
    assert moasha.fronts([r.values for r in recs]) == [[1, 2], [0]]
    # A trial recorded twice at a rung counts once, with its last record.
    twice = [record(0, 1, 0.5, 5), record(1, 1, 0.6, 5), record(2, 1, 0.7, 5), record(0, 1, 0.9, 5)]
    assert [r.trial for r in moasha.top(twice, 1)] == [0]


def test_under_eta_trials_nothing_is_promoted():
    recs = [record(0, 1, 0.9, 1), record(1, 1, 0.1, 9)]
    assert not moasha.goes_on(recs, 0, 1) and moasha.next_promotion(recs, [1]) is None


def test_records_from_a_real_sqlite_study_give_the_same_order(tmp_path):
    import optuna

    from dse.trials import dominance

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", directions=["maximize", "minimize"])
    for acc, flops in NINE:
        trial = study.ask()
        trial.set_user_attr("flops", flops)
        dominance.record(trial, 1, acc)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    no_cost = study.ask()  # a trial without its cost attribute is left out
    dominance.record(no_cost, 1, 0.99)
    recs = moasha.from_trials(study.get_trials(deepcopy=False), ["flops"])
    assert len(recs) == 9
    assert [r.trial for r in moasha.top(recs, 1)] == [4, 7, 0]


def test_study_keys_are_validated_in_one_line():
    from dse import study as studies

    base = {"name": "s", "objectives": ["accuracy", "flops"]}
    assert studies.from_dict(base).moasha == {"eta": 3, "min_rung": 1, "rung_score": "train_loss"}
    assert studies.from_dict({**base, "moasha": {"eta": 2, "rung_score": "val_acc"}}).moasha == \
        {"eta": 2, "min_rung": 1, "rung_score": "val_acc"}
    for bad, words in [({"eta": 1}, "study.moasha.eta: must be an integer >= 2, got 1"),
                       ({"min_rung": 0}, "study.moasha.min_rung: must be an integer >= 1, got 0"),
                       ({"eta": 2.5}, "study.moasha.eta: must be an integer >= 2, got 2.5"),
                       ({"etaa": 3}, "study.moasha: unknown key 'etaa'; valid: eta, min_rung, rung_score"),
                       ({"rung_score": "val/acc"},
                        "study.moasha.rung_score: must be one of train_loss, val_acc, got 'val/acc'"),
                       ([3], "study.moasha: must be a mapping {eta: 3, min_rung: 1, rung_score: train_loss}")]:
        with pytest.raises(UserError) as err:
            studies.from_dict({**base, "moasha": bad})
        assert str(err.value).startswith(words) and "\n" not in str(err.value), str(err.value)
    assert studies.from_dict({**base, "pruner": "moasha"}).pruner == "moasha"  # in the run loop now


def test_a_study_keeps_the_rung_score_its_rungs_were_ranked_by(tmp_path):
    """A study records its rung score on its first run; a resume with another score is one UserError naming
    study.moasha.rung_score. A study with rungs recorded before the score was kept ranked them by val_acc."""
    import optuna

    from dse.trials import moasha as ms

    url = f"sqlite:///{tmp_path / 's.db'}"
    fresh = optuna.create_study(study_name="fresh", storage=url, directions=["maximize", "minimize"])
    ms.same_rung_score(fresh, "train_loss")
    assert optuna.load_study(study_name="fresh", storage=url).user_attrs[ms.SCORE_KEY] == "train_loss"
    ms.same_rung_score(fresh, "train_loss")  # the same score again: fine
    with pytest.raises(UserError, match=r"^study.moasha.rung_score: study 'fresh' ranked its rungs by train_loss, "
                                        r"not val_acc; give study.moasha=\{rung_score: train_loss\}"):
        ms.same_rung_score(fresh, "val_acc")
    older = optuna.create_study(study_name="older", storage=url, directions=["maximize", "minimize"])
    older.add_trial(optuna.create_trial(state=optuna.trial.TrialState.PRUNED, system_attrs={"dse:rung:1": 0.61}))
    with pytest.raises(UserError, match="ranked its rungs by val_acc, not train_loss"):
        ms.same_rung_score(older, "train_loss")
    ms.same_rung_score(older, "val_acc")
    assert older.user_attrs[ms.SCORE_KEY] == "val_acc"
