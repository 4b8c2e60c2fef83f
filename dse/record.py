"""One trial's record: what dse stores on an Optuna trial (its user attributes), written and read as one type.

A field's name is its stored attribute's name, so studies written by earlier versions of dse read the same.
The trial function builds a trial's record in memory and stores it with `save` (what other processes must see
while the trial runs first, the rest once at the end; `write` underneath stores the outcome last, since
another worker may read `status` as soon as it is set); readers take a whole `TrialRecord.from_trial(trial)`.
An attribute that was never set reads as None.

Outcomes (`status`): ok (trained), rejected (over the budget or infeasible: never trained), duplicate (its
point and seed were already taken), pruned, paused (`pruner: moasha` stopped it at a rung; a later piece may
resume it from its checkpoint), diverged, oom, failed, skipped (a grid cell taken by another worker). No status and a `reason`: the trial was stopped (interrupted, out of time) and queued again.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

UNTRAINED = ("rejected", "duplicate")  # outcomes that cost no training and count toward no result
# A study objective's record field, where the two names differ (error is 1 - val_acc).
OBJECTIVE_FIELDS = {"accuracy": "val_acc", "latency": "latency_ms"}
# The zero-cost scores a trial records in `zerocost` (dse.train.zerocost computes them).
ZEROCOST = ("synflow", "naswot", "grad_norm", "snip")


@dataclass(frozen=True)
class TrialRecord:
    """Every attribute dse stores on a trial, in the order a trial sets them."""

    # what the trial tried
    point: dict | None = None  # Point.to_dict() at the data's geometry
    point_id: str | None = None
    seed: int | None = None  # training seed (a grid cell adds its own seed to the base seed)
    label: str | None = None  # grid cell label (enqueued cells carry it from the start)
    cell: str | None = None  # a grid cell label stored by older studies (read only)
    repeat_of: int | None = None  # a seed-noise repeat (dse.trials.sampling): the trial whose point it trains again
    # what it costs: the point as declared (no torch)
    params: int | None = None
    flops: int | None = None  # multiply-adds
    acts: int | None = None  # activations (output elements of convs, linears and non-global pools)
    rf: int | None = None  # receptive field (px) at the last feature map
    rf_stride: int | None = None
    latency_ms: float | None = None  # measured on the trial's device (objective `latency`)
    latency_device: str | None = None
    settings: dict | None = None  # what it was trained with (dse.provenance)
    # the net actually trained, when a proxy thins it (model.width_scale < 1)
    width_scale: float | None = None
    trained_params: int | None = None
    trained_flops: int | None = None
    # the trained net's zero-cost scores at its initialization: {synflow, naswot, grad_norm, snip, batch, seconds,
    # cpu_seconds} (dse.train.zerocost.measure; a score that is not finite is None)
    zerocost: dict | None = None
    # training
    epochs: int | None = None
    train_seconds: float | None = None
    cpu_seconds: float | None = None
    val_acc: float | None = None  # the mean over seeds, with several
    test_acc: float | None = None
    val_accs: list | None = None  # several seeds: each one's, and the spread
    val_acc_std: float | None = None
    test_accs: list | None = None
    seeds: int | None = None
    history: list | None = None  # per-epoch metrics of the (first) fit
    # pruner moasha (dse.trials.moasha): a point trains in pieces, one trial each, resumed from checkpoints
    rung: int | None = None  # the last epoch this piece trained (the rung it paused at, or the end)
    resume_of: int | None = None  # a later piece: the number of the point's first trial (the chain's root)
    from_rung: int | None = None  # a later piece: the rung (epoch) it resumed from
    checkpoint: str | None = None  # the checkpoint a paused piece wrote, or a later piece resumed from
    promoted_among: list | None = None  # a later piece: the chains recorded at `from_rung` when it was promoted
    # the outcome: set last
    duplicate_of: int | None = None  # the trial number that holds the same point and seed
    detail: str | None = None  # a stopped trial's words (dse.trials.signals)
    reason: str | None = None
    status: str | None = None

    @classmethod
    def from_attrs(cls, attrs) -> "TrialRecord":
        """The record of a mapping of stored attributes (keys dse does not know are left out)."""
        return cls(**{k: attrs[k] for k in NAMES if k in attrs})

    @classmethod
    def from_trial(cls, trial) -> "TrialRecord":
        """The record of an Optuna trial (FrozenTrial or a running Trial)."""
        return cls.from_attrs(trial.user_attrs)

    def to_attrs(self) -> dict:
        """The stored attributes: every field that is set, outcome last."""
        return {k: getattr(self, k) for k in NAMES if getattr(self, k) is not None}

    @property
    def ended(self) -> bool:
        """Did dse record an outcome (a status) for this trial?"""
        return self.status is not None

    @property
    def trained(self) -> bool:
        """Was the point trained to a result (status ok)?"""
        return self.status == "ok"

    @property
    def untrained(self) -> bool:
        """Was the point never trained: refused (over budget, infeasible) or already taken (duplicate)?"""
        return self.status in UNTRAINED

    @property
    def accuracy(self) -> float | None:
        """The validation accuracy of a trained trial (None for any other)."""
        return self.val_acc if self.trained else None

    def objective(self, name: str) -> float | None:
        """The value of study objective `name` (accuracy, error, flops, params, acts, rf, latency)."""
        if name == "error":
            return None if self.val_acc is None else 1.0 - float(self.val_acc)
        value = getattr(self, OBJECTIVE_FIELDS.get(name, name))
        return None if value is None else float(value)


NAMES = tuple(f.name for f in fields(TrialRecord))


def write(trial, **values) -> None:
    """Store the given fields on a running trial, in the record's order (the outcome last); None is stored too."""
    unknown = sorted(set(values) - set(NAMES))
    if unknown:
        raise TypeError(f"unknown trial record field {unknown[0]!r}; valid: {', '.join(NAMES)}")
    for key in NAMES:
        if key in values:
            trial.set_user_attr(key, values[key])


def save(trial, record: TrialRecord, stored: TrialRecord | None = None) -> TrialRecord:
    """Store the fields of `record` that `stored` (what the trial holds already; None: nothing) does not hold
    alike, the outcome last; return `record`, which the trial now holds."""
    before = stored if stored is not None else TrialRecord()
    write(trial, **{k: getattr(record, k) for k in NAMES if getattr(record, k) != getattr(before, k)})
    return record
