"""Multi-objective asynchronous successive halving (MOASHA): which trials go on at a rung, by non-dominated sorting.

Rungs sit at geometric fractions of the budget: epochs min_rung x eta^k below max_epochs (`rungs`). A trial
that reaches a rung is recorded there (`Record`: trial, rung, objectives, every one minimized, so accuracy is
negated by `record`). The n trials recorded at a rung are ranked (`order`): by non-dominated sorting
(front 1 first), and inside a front by NSGA-II's crowding distance, largest first (the ends of a front are
infinitely far: the most accurate and the cheapest trial always lead), then by the first objective
(accuracy), then by trial id (earlier first). Trials with identical objectives get identical distances, so
ties fall to accuracy and then to the earlier trial.

Asynchronous promotion, as in ASHA (Li et al., MLSys 2020), ranked as in MOASHA (Schmucker et al., 2021): a
trial arriving at a rung goes on at once when it is among the top floor(n / eta) of the n trials recorded
there so far, itself included (`goes_on`); otherwise it pauses. Whenever a worker is free, a paused trial
that has since entered the top floor(n / eta) of its rung and was not promoted from it yet is resumed first
(`next_promotion`: the highest rung first, the best-ranked trial of it), before any new trial is drawn. A
trial promoted once stays promoted even if later arrivals push it out of the top.

Everything here is a pure function of plain records, so the same decisions follow from a list (the tabular
replay in bench/search_efficiency.py) or from a study's storage (`from_trials` reads dse.trials.dominance's
rung attributes `dse:rung:<epoch>` and the trials' cost attributes).
"""
from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from dse.record import TrialRecord
from dse.trials.dominance import rung as rung_attrs

ETA = 3  # keep the top 1/eta at each rung
MIN_RUNG = 1  # first rung, in epochs
RUNG_SCORE = "train_loss"  # what ranks a rung: the epoch's mean training loss, or val_acc (dse.trials.pruning)


SCORE_KEY = "dse:moasha:rung_score"  # study user attribute: what this study's rungs are ranked by


def same_rung_score(optuna_study, score: str) -> None:
    """Refuse to rank a study's rungs by another score than the one its recorded rungs used (a minus training
    loss beside an accuracy would rank nothing); a study's first run records its score. Rungs recorded before
    the score was recorded were ranked by val_acc."""
    from dse.errors import UserError

    old = optuna_study.user_attrs.get(SCORE_KEY)
    if old is None and any(rung_attrs(t) for t in optuna_study.get_trials(deepcopy=False)):
        old = "val_acc"
    if old is not None and old != score:
        raise UserError(f"study.moasha.rung_score: study {optuna_study.study_name!r} ranked its rungs by {old}, "
                        f"not {score}; give study.moasha={{rung_score: {old}}} to resume it, or another study.name")
    if optuna_study.user_attrs.get(SCORE_KEY) is None:
        optuna_study.set_user_attr(SCORE_KEY, score)


@dataclass(frozen=True)
class Record:
    """A trial's objectives at a rung (the epoch it reached); every objective is minimized."""

    trial: int
    rung: int
    values: tuple[float, ...]


def record(trial: int, rung: int, accuracy: float, *costs: float) -> Record:
    """The record of a trial with `accuracy` (maximized) and `costs` (minimized) at `rung`."""
    return Record(int(trial), int(rung), (-float(accuracy), *(float(c) for c in costs)))


def rungs(max_epochs: int, min_rung: int = MIN_RUNG, eta: int = ETA) -> list[int]:
    """The epochs at which a fit of `max_epochs` epochs is ranked: min_rung x eta^k < max_epochs."""
    if eta < 2 or min_rung < 1:
        raise ValueError(f"moasha: eta must be >= 2 and min_rung >= 1, got {eta}, {min_rung}")
    out, epoch = [], int(min_rung)
    while epoch < max_epochs:
        out.append(epoch)
        epoch *= int(eta)
    return out


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """a is no worse than b in every objective and better in one (all minimized)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def fronts(values: Sequence[Sequence[float]]) -> list[list[int]]:
    """Non-dominated sorting: the indices of `values` front by front (front 1 first), each in index order."""
    left, out = list(range(len(values))), []
    while left:
        front = [i for i in left if not any(dominates(values[j], values[i]) for j in left if j != i)]
        out.append(front)
        left = [i for i in left if i not in set(front)]
    return out


def crowding(values: Sequence[Sequence[float]], front: Sequence[int]) -> dict[int, float]:
    """NSGA-II's crowding distance of each index of `front`: per objective, the gap between its neighbours
    along the front over the front's range (the ends: infinite); equal objective vectors share one distance."""
    distinct = sorted({tuple(values[i]) for i in front})
    dist = dict.fromkeys(distinct, 0.0)
    for m in range(len(distinct[0]) if distinct else 0):
        line = sorted(distinct, key=lambda v: v[m])
        span = line[-1][m] - line[0][m]
        dist[line[0]] = dist[line[-1]] = math.inf
        for k in range(1, len(line) - 1):
            if span > 0:
                dist[line[k]] += (line[k + 1][m] - line[k - 1][m]) / span
    return {i: dist[tuple(values[i])] for i in front}


def latest(records: Iterable[Record], rung: int) -> list[Record]:
    """The records at `rung`, one per trial (the last one given)."""
    out = {r.trial: r for r in records if r.rung == rung}
    return list(out.values())


def order(records: Iterable[Record]) -> list[Record]:
    """Records of one rung, best first: by front, then crowding distance (largest first), then the first
    objective, then trial id."""
    recs = list(records)
    values = [r.values for r in recs]
    out = []
    for front in fronts(values):
        dist = crowding(values, front)
        ranked = sorted(front, key=lambda i, d=dist: (-d[i], recs[i].values[0], recs[i].trial))
        out += [recs[i] for i in ranked]
    return out


def top(records: Iterable[Record], rung: int, eta: int = ETA) -> list[Record]:
    """The top floor(n / eta) of the n trials recorded at `rung`, best first."""
    at = latest(records, rung)
    return order(at)[: len(at) // int(eta)]


def goes_on(records: Iterable[Record], trial: int, rung: int, eta: int = ETA) -> bool:
    """Decided on arrival: is `trial` (its record at `rung` among `records`) in the top floor(n / eta) there?"""
    return any(r.trial == trial for r in top(records, rung, eta))


def next_promotion(records: Iterable[Record], ladder: Sequence[int], promoted: Collection[tuple[int, int]] = (),
                   eta: int = ETA, done: Collection[int] = ()) -> Record | None:
    """The paused trial a free worker resumes first, or None (draw a new trial).

    Over the rungs of `ladder`, highest first: the best-ranked trial in the top floor(n / eta) of the rung that
    was not promoted from it yet. A trial counts as promoted from rung r when (trial, r) is in `promoted` or
    it has a record at a later rung; trials in `done` (finished, failed, or not to be resumed) never are.
    """
    recs = list(records)
    higher = {(r.trial, r.rung) for r in recs}
    for rung in sorted(ladder, reverse=True):
        for rec in top(recs, rung, eta):
            later = any(t == rec.trial and k > rung for t, k in higher)
            if rec.trial not in done and (rec.trial, rung) not in promoted and not later:
                return rec
    return None


# ----- the run loop (study.pruner=moasha): a point trains in pieces, one trial each -----
#
# A piece that is not in the top at a rung pauses: it writes a checkpoint and ends PRUNED with status paused
# (dse.trials.pruning.MoashaCallback). A free worker asks `promote` before it draws a new point: the paused
# chain to resume is queued as a WAITING trial carrying resume_of / from_rung / checkpoint, which the next ask
# pops, and the promotion is then claimed in the storage for that queued piece (dse.trials.claims). The piece
# checks the claim when it starts (`start`), so a worker killed at any step of a promotion loses none and no
# chain is resumed twice from one rung.

PROMOTE = "promote:"  # + "<root>:<rung>": the claim of one promotion
LEFT = "skipped"  # the status of a piece popped where its checkpoint cannot be read: it gives the promotion back


def root(trial) -> int:
    """The number of the first trial of `trial`'s chain (its own number for a first piece)."""
    chain = TrialRecord.from_trial(trial).resume_of
    return int(chain) if chain is not None else trial.number


def from_trials(trials: Iterable, cost_keys: Sequence[str]) -> list[Record]:
    """Records of a study's trials (Optuna FrozenTrials): each rung attribute `dse:rung:<epoch>` with the
    trial's costs (its `flops`, `params`, ... attributes), under its chain's root number (`root`: a trial's own
    number unless it is a later piece of a moasha chain); trials without those costs are left out."""
    out = []
    for t in trials:
        costs = TrialRecord.from_trial(t)
        values = [costs.objective(k) for k in cost_keys]
        if any(v is None for v in values):
            continue
        for epoch, acc in sorted(rung_attrs(t).items()):
            out.append(record(root(t), epoch, acc, *values))
    return out


@dataclass
class Chains:
    """What a study's chains are doing: the paused ones (root -> its last piece), the ones that may not be
    resumed (running, queued or finished), and the promotions made so far ((root, rung) pairs)."""

    paused: dict
    done: set
    promoted: set

    @classmethod
    def of(cls, trials: Iterable) -> "Chains":
        pieces: dict[int, list] = {}
        gave_back = set()  # killed pieces whose retry gave the promotion back (it could not read the checkpoint)
        for t in trials:
            status = TrialRecord.from_trial(t).status
            if status == LEFT:
                gave_back |= _links(t.system_attrs)
            if status not in ("duplicate", LEFT):  # pieces that trained nothing
                pieces.setdefault(root(t), []).append(t)
        paused, done, promoted = {}, set(), set()
        for chain, ts in pieces.items():
            for t in ts:
                rec = TrialRecord.from_trial(t)
                if rec.resume_of is not None and rec.from_rung is not None:
                    promoted.add((chain, int(rec.from_rung)))
            if any(t.state.name in ("RUNNING", "WAITING") for t in ts):
                done.add(chain)
                continue
            last = max(ts, key=lambda t: t.number)
            if last.state.name == "FAIL" and last.number in gave_back:  # paused again where it last paused
                last = max((t for t in ts if TrialRecord.from_trial(t).status == "paused"), key=lambda t: t.number,
                           default=last)
                promoted.discard((chain, TrialRecord.from_trial(last).rung))
            rec = TrialRecord.from_trial(last)
            if last.state.name == "PRUNED" and rec.status == "paused" and rec.checkpoint:
                paused[chain] = last
            elif not (last.state.name == "FAIL" and not rec.ended):  # a killed piece's retry is queued
                done.add(chain)
        return cls(paused, done, promoted)


def promote(study, ladder: Sequence[int], cost_keys: Sequence[str], eta: int = ETA) -> int | None:
    """Queue the next promotion of `study` (an Optuna study), if one is due; the chain's root, or None.

    The resume piece is queued first, then the promotion is claimed for it (`promote:<root>:<rung>`, one
    atomic insert whose holder is the queued piece's trial id). A worker killed between the two leaves a queued
    piece without a claim, which the piece takes when it starts (`start`). Of several workers that queue the
    same chain at once, one claim wins: the others' pieces end as duplicates when they start, and those
    workers look further down. A chain whose checkpoint this process cannot read (no shared file system) is
    left for a worker that can."""
    from dse.trials import claims

    trials = study.get_trials(deepcopy=False)
    chains = Chains.of(trials)
    records = from_trials(trials, cost_keys)
    done = set(chains.done)
    while True:
        best = next_promotion(records, ladder, chains.promoted, eta, done)
        if best is None:
            return None
        piece = chains.paused.get(best.trial)
        rec = None if piece is None else TrialRecord.from_trial(piece)
        if rec is None or rec.rung != best.rung or not readable(rec.checkpoint):
            done.add(best.trial)  # not paused there (failed, a record without a pause), or its file is elsewhere
            continue
        key = f"{PROMOTE}{best.trial}:{best.rung}"
        queued = _queue(study, piece, rec, best.rung, sorted(r.trial for r in latest(records, best.rung)))
        holder = claims.claim(study, key, queued)
        if holder is not None and _claimant(study, holder, best.trial, best.rung) is not False:
            chains.promoted.add((best.trial, best.rung))  # another worker queued it first
            continue
        if holder is not None and not claims.take_over(  # free: held by the paused piece (a claim made before
                study, key, queued, holder,  # promotions were claimed for the queued piece), or given back by a
                lambda won: _claimant(study, won, best.trial, best.rung) is False):  # piece that could not read it
            chains.promoted.add((best.trial, best.rung))  # another worker took it over first: its piece trains
            continue
        return best.trial


def readable(path: str | None) -> bool:
    """Can this process read the checkpoint file at `path`? (Without a shared file system, only the machine that
    wrote it can.)"""
    import os

    return bool(path) and os.path.isfile(path) and os.access(path, os.R_OK)


def _queue(study, piece, rec: TrialRecord, rung: int, among: list[int]) -> int:
    """Create the WAITING piece that resumes `piece`'s chain from `rung` (what study.enqueue_trial makes, with
    the same fixed params and user attributes); its trial id."""
    import optuna

    keep = {k: v for k, v in (("repeat_of", rec.repeat_of), ("seed", rec.seed), ("label", rec.label)) if v is not None}
    fixed = {**piece.system_attrs.get("fixed_params", {}), **piece.params}
    attrs = {**keep, "resume_of": root(piece), "from_rung": rung, "checkpoint": rec.checkpoint,
             "promoted_among": among}
    template = optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING, system_attrs={"fixed_params": fixed},
                                         user_attrs=attrs)
    return study._storage.create_new_trial(study._study_id, template_trial=template)


def _claimant(study, holder: int, chain: int, rung: int):
    """The trial (FrozenTrial) of id `holder` when it is a piece resuming `chain` from `rung`; False when the
    claim is free to take: its holder is another trial (the paused piece: claims made before the queued piece
    held them) or a piece that gave it back (popped where the checkpoint cannot be read); None when no such
    trial can be read."""
    try:
        other = study._storage.get_trial(holder)
    except (KeyError, ValueError):
        return None
    mine = TrialRecord.from_trial(other)
    return other if (mine.resume_of, mine.from_rung) == (chain, rung) and mine.status != LEFT else False


def start(trial) -> dict | None:
    """Claim the promotion a resumed piece (`resume_of` set) trains, as it starts; None when it trains, else the
    record fields of a piece that trains nothing.

    It trains when it holds the claim or takes it (its enqueuer died before claiming), or when the holder is a
    trial it retries (killed or interrupted: Optuna's retry_history, dse.trials.signals' requeued_from). A
    holder that is another piece of the same promotion, queued by a worker that lost the claim, makes it a
    duplicate. Popped on a machine that cannot read its checkpoint, it gives the promotion back (status
    skipped): the chain is paused again, for a worker that can read the file to promote."""
    from dse.trials import claims

    study, rec = trial.study, TrialRecord.from_trial(trial)
    left = None if readable(rec.checkpoint) else {
        "status": LEFT, "reason": f"checkpoint {rec.checkpoint} cannot be read here (no shared file system?): the "
                                  "chain stays paused for a worker that can read it"}
    key = f"{PROMOTE}{rec.resume_of}:{rec.from_rung}"
    holder = claims.claim(study, key, trial._trial_id)
    if holder is None or holder == trial._trial_id:
        return left
    chain, rung = int(rec.resume_of), int(rec.from_rung)

    def free(trial_id: int) -> bool:  # a claimant this piece may take the promotion from
        other = _claimant(study, trial_id, chain, rung)
        died = other and other.state.name == "FAIL" and not TrialRecord.from_trial(other).ended
        return other is False or bool(died and other.number in _retried(study, trial._trial_id))

    if free(holder):
        if claims.take_over(study, key, trial._trial_id, holder, free):
            return left
        holder = claims.claim(study, key, trial._trial_id) or holder  # another piece took it over first
    other = _claimant(study, holder, chain, rung)
    what = "another trial" if not other else \
        f"trial {other.number} ({TrialRecord.from_trial(other).status or other.state.name.lower()})"
    return {"duplicate_of": other.number if other else None, "status": "duplicate",
            "reason": f"the promotion of chain {rec.resume_of} from rung {rec.from_rung} is held by {what}; not "
                      "trained again"}


def _links(system_attrs: dict) -> set[int]:
    """The numbers of the trials a re-queued copy retries (Optuna's failed_trial and retry_history for a killed
    trial, dse.trials.signals' requeued_from for an interrupted one)."""
    links = {*system_attrs.get("retry_history", []), system_attrs.get("failed_trial"),
             system_attrs.get("dse:requeued_from")}
    return {int(n) for n in links if n is not None}


def _retried(study, trial_id: int, most: int = 50) -> set[int]:
    """The numbers of the trials that trial `trial_id` retries, directly or through earlier retries."""
    storage, out, todo = study._storage, set(), [trial_id]
    while todo and len(out) < most:
        links = _links(storage.get_trial_system_attrs(todo.pop())) - out
        out |= links
        todo += [storage.get_trial_id_from_study_id_trial_number(study._study_id, n) for n in links]
    return out
