"""dse.trials.moasha.promote and .start on a real SQLite storage: a promotion cut short by a kill is still resumed,
once; a promotion queued twice trains once; a killed resumed piece's retry takes its claim over; a chain whose
checkpoint this process cannot read is left for another worker, and a piece popped where its checkpoint cannot be
read gives the promotion back.

The first test trains for real (dse.search, smoke fidelity: a chain pauses at rung 1 with its checkpoint, and a
live worker resumes it). To make that chain due without a second trained point (whose rank against it no test
can fix), the study gets one hand-made chain beside it that it dominates (same rung accuracy, twice the FLOPs).
The other tests hand-make every paused chain: what they check is which chain promote queues and which piece
trains, not the training."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import optuna
import pytest
from crash_helpers import ROOT, env, ok, search, trials
from test_moasha_loop import ETA, EXTRA

from dse.record import TrialRecord
from dse.storage import _retry_class, open_storage
from dse.trials import claims, moasha

EPOCHS = 2  # one rung (epoch 1): a promoted chain trains epoch 2 and completes
RUN = [e for e in EXTRA if not e.startswith("trainer.max_epochs=")] + [f"trainer.max_epochs={EPOCHS}"]

# A process that promotes, and dies (os._exit) right after the promotion's first write to the storage: a claim
# or a new trial, whichever promote makes first.
KILLED = textwrap.dedent("""
    import os, sys
    import optuna
    from dse.storage import open_storage
    from dse.trials import claims, dominance, moasha

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=sys.argv[2], storage=open_storage(sys.argv[1], "."))

    def dies_after(write):
        def run(*args, **kwargs):
            write(*args, **kwargs)
            os._exit(9)
        return run

    claims.claim = dies_after(claims.claim)
    study._storage.create_new_trial = dies_after(study._storage.create_new_trial)
    moasha.promote(study, moasha.rungs({epochs}, 1, {eta}), dominance.cost_keys(study, {{}}), {eta})
""").format(epochs=EPOCHS, eta=ETA)


def _dominated_chain(study, like) -> None:
    """A finished chain that `like` (a paused first piece) dominates at rung 1: same accuracy, twice its FLOPs."""
    acc = like.system_attrs["dse:rung:1"]
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.PRUNED, system_attrs={"dse:rung:1": acc},
        user_attrs={"point_id": "dominated", "seed": 0, "flops": 2 * like.user_attrs["flops"], "status": "pruned",
                    "reason": "made by the test: ranked below the paused chain at rung 1"}))


def test_a_promotion_cut_short_by_a_kill_is_resumed_once_by_a_live_worker(tmp_path):
    name, run_dir = "mp", tmp_path / "runs" / "mp"
    url = f"sqlite:///{run_dir / 'study.db'}"
    proc = search(run_dir, name, 1, *RUN)  # the first point arrives alone at rung 1, so it pauses there
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: no trial finished training ('paused' only)
    [paused] = trials(url, name)
    assert TrialRecord.from_trial(paused).status == "paused"
    storage = open_storage(url, ".")
    study = optuna.load_study(study_name=name, storage=storage)
    _dominated_chain(study, paused)

    killed = subprocess.run([sys.executable, "-c", KILLED, url, name], cwd=ROOT, env=env(), capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == 9, killed.stderr[-3000:]  # it died inside promote, after one write

    live = search(run_dir, name, 1, *RUN)
    final = trials(url, name)
    pieces = [t for t in final if TrialRecord.from_trial(t).resume_of == paused.number]
    trained = [t for t in pieces if TrialRecord.from_trial(t).status == "ok"]
    assert len(trained) == 1, [(t.number, t.state.name, t.user_attrs.get("status")) for t in pieces]
    ok(live)
    [piece] = trained
    rec, before = TrialRecord.from_trial(piece), TrialRecord.from_trial(paused)
    assert (rec.from_rung, rec.rung) == (1, EPOCHS)
    assert rec.history[:1] == before.history  # epoch 1 restored from the checkpoint, not trained again
    assert [h["epoch"] for h in rec.history] == [1, 2]
    assert all(TrialRecord.from_trial(t).status in ("ok", "duplicate") for t in pieces)
    assert not [t.number for t in final if t.state.name in ("RUNNING", "WAITING")]
    attrs = storage.get_study_system_attrs(study._study_id)
    assert attrs[f"{claims.CLAIM}{moasha.PROMOTE}{paused.number}:1"] == piece._trial_id


@pytest.fixture
def study(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}", tmp_path)
    out = optuna.create_study(storage=storage, study_name="hand", directions=["maximize", "minimize"])
    out.set_user_attr("objectives", ["accuracy", "flops"])
    return out


def _paused(study, tmp_path, point: str, acc: float, flops: int, written: bool = True) -> int:
    """A hand-made paused first piece at rung 1 (its checkpoint file written, or not); its number."""
    path = tmp_path / "checkpoints" / f"{point}-seed0" / "rung-1.ckpt"
    if written:
        path.parent.mkdir(parents=True)
        path.write_bytes(b"not read by promote")
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.PRUNED, system_attrs={"dse:rung:1": acc},
        user_attrs={"point_id": point, "seed": 0, "flops": flops, "status": "paused", "rung": 1,
                    "checkpoint": str(path)}))
    return study.trials[-1].number


def _promote(study):
    return moasha.promote(study, [1], ("flops",), eta=2)


def _pop(study):
    """The next queued trial, popped as a worker's ask pops it (WAITING -> RUNNING)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Heartbeat of storage")  # the test starts no heartbeat thread
        return study.ask()


def test_a_chain_whose_checkpoint_cannot_be_read_is_left_and_the_next_one_promoted(study, tmp_path):
    # Four chains at rung 1, each dominating the next: the top floor(4 / 2) = 2 are due, best first.
    best = _paused(study, tmp_path, "best", 0.9, 100, written=False)  # written on another machine
    second = _paused(study, tmp_path, "second", 0.8, 200)
    for k, (acc, flops) in enumerate([(0.5, 300), (0.4, 400)]):
        _paused(study, tmp_path, f"low{k}", acc, flops)
    assert moasha.next_promotion(moasha.from_trials(study.trials, ["flops"]), [1], eta=2).trial == best
    unread = study.trials[best]

    assert _promote(study) == second
    [queued] = [t for t in study.trials if t.state.name == "WAITING"]
    assert TrialRecord.from_trial(queued).resume_of == second
    attrs = study._storage.get_study_system_attrs(study._study_id)
    assert not any(k.startswith(f"{claims.CLAIM}{moasha.PROMOTE}{best}:") for k in attrs)  # nothing claimed for it
    after = study.trials[best]  # left as it was: paused, with nothing added
    assert (after.state, after.user_attrs, after.system_attrs) == (unread.state, unread.user_attrs, unread.system_attrs)
    assert _promote(study) is None  # `best` is still unreadable, `second` is queued: nothing else is due
    assert len([t for t in study.trials if t.state.name == "WAITING"]) == 1


def test_a_promotion_queued_twice_trains_once_and_a_killed_pieces_retry_takes_it_over(study, tmp_path):
    chain = _paused(study, tmp_path, "a", 0.9, 100)
    _paused(study, tmp_path, "b", 0.5, 200)
    assert _promote(study) == chain
    assert _promote(study) is None  # queued: no worker queues it again
    # A worker that read the study before that piece existed queues the same promotion (what promote writes
    # before it claims), then loses the claim.
    first = [t for t in study.trials if t.state.name == "WAITING"][0]
    study.enqueue_trial(first.system_attrs["fixed_params"], user_attrs=first.user_attrs)

    winner, loser = _pop(study), _pop(study)
    assert moasha.start(winner) is None  # it holds the claim: it trains
    taken = moasha.start(loser)
    assert taken["status"] == "duplicate" and taken["duplicate_of"] == winner.number

    _ends_untrained(study, loser, taken)
    _killed(study, winner)  # its worker is killed: dse fails its trial and queues a retry
    retry = _pop(study)
    assert moasha.start(retry) is None  # it retries the holder: it takes the claim over and trains
    study.enqueue_trial(first.system_attrs["fixed_params"], user_attrs=first.user_attrs)
    late = _pop(study)  # another copy of the promotion, not a retry of the dead holder
    assert moasha.start(late)["duplicate_of"] == retry.number


def _ends_untrained(study, trial, fields: dict) -> None:
    """End a popped piece as dse.trials.objective ends one that trains nothing: its record fields, then FAIL."""
    for key, value in fields.items():
        study._storage.set_trial_user_attr(trial._trial_id, key, value)
    study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)


def _killed(study, trial) -> None:
    """Fail a popped piece as dse fails a dead worker's trial, and queue its retry (dse.trials.owners.reap)."""
    study._storage.set_trial_user_attr(trial._trial_id, "reason", "worker died (process gone)")
    study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    _retry_class()(max_retry=2)(study, study._storage.get_trial(trial._trial_id))


def test_a_piece_popped_where_its_checkpoint_cannot_be_read_gives_the_promotion_back(study, tmp_path):
    chain = _paused(study, tmp_path, "a", 0.9, 100)
    _paused(study, tmp_path, "b", 0.5, 200)
    ckpt = tmp_path / "checkpoints" / "a-seed0" / "rung-1.ckpt"
    elsewhere = tmp_path / "elsewhere.ckpt"
    assert _promote(study) == chain
    first = _pop(study)
    assert moasha.start(first) is None  # trains; then its worker is killed, and its retry is queued
    _killed(study, first)
    assert _promote(study) is None  # the retry is queued: nothing to promote

    ckpt.rename(elsewhere)  # the retry is popped on a machine that cannot read the checkpoint
    retry = _pop(study)
    left = moasha.start(retry)
    assert left["status"] == moasha.LEFT and str(ckpt) in left["reason"]
    _ends_untrained(study, retry, left)
    assert _promote(study) is None  # nor can this machine promote it
    assert study.trials[chain].user_attrs["status"] == "paused"

    elsewhere.rename(ckpt)  # a machine that can read it promotes the chain again, and its piece trains
    assert _promote(study) == chain
    again = _pop(study)
    assert moasha.start(again) is None
    attrs = study._storage.get_study_system_attrs(study._study_id)
    assert attrs[f"{claims.CLAIM}{moasha.PROMOTE}{chain}:1"] == again._trial_id
