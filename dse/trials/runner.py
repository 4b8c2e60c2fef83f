"""The study runner: open the storage, create or resume the study, size it, run its trials (here or in a
worker pool) and write the result files after each one. dse.search makes the Job; this module runs it.
"""
from __future__ import annotations

import copy
import dataclasses
import gc
import os
import sys
import time
from collections import Counter
from pathlib import Path

from dse import provenance
from dse.errors import UserError
from dse.record import TrialRecord
from dse.results import files as results
from dse.results import made
from dse.results.files import scored
from dse.results.wandb_log import Loggers
from dse.storage import default_url, open_storage
from dse.trials import claims, owners, signals, sizing
from dse.trials import deadline as pace
from dse.trials import objective as obj
from dse.trials import pool
from dse.trials.job import Job
from dse.trials.sampling import FeasibleStart, startup_count
from dse.trials.screen import Screen, noise_lines, trial_line


def run(job: Job) -> int:
    """Open the storage, create or resume the study, run the remaining trials, write the results; exit code."""
    import optuna

    study = job.study
    if study.pruner == "moasha":
        Promote.check(job)
    results.check_writable(job.run_dir, "run_dir", "give run_dir=DIR where the results can be written",
                           create=False)  # nothing is made before the storage opens
    storage_url = job.storage_url or default_url(job.run_dir)  # explicit, so pool workers share it
    storage = open_storage(storage_url, job.run_dir)
    loggers = Loggers(job.logger, job.run_dir, study.name)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial gets our own one-line summary
    max_epochs = int(getattr(job.recipe, "epochs", 1))
    prune = study.pruner != "none"
    # one study object, so every trial is read from the storage once: its cache serves every later read
    optuna_study = obj.open_study(storage, study, None, obj.make_pruner(study.pruner, max_epochs), study.space)
    done = sum(obj.counted(t) for t in optuna_study.get_trials(deepcopy=False))
    optuna_study.sampler = make_sampler(job, done)
    job = size_trials(job, optuna_study)
    provenance.check_resume(optuna_study, job.settings, study.allow_changes)  # before anything is written
    owners.reap(optuna_study)  # this host's killed trials: FAIL + re-queued now, not after the heartbeat grace
    finished = sum(obj.counted(t) for t in optuna_study.get_trials(deepcopy=False))
    if job.cells is not None:  # ablation grids run every cell; sampler=grid over a space stops at n_trials
        claims.enqueue_once(optuna_study, list(job.cells), study.seeds)  # once, however many workers join
        total = len(job.cells) * study.seeds
        total = total if study.is_grid else min(total, study.n_trials)
        remaining = min(obj.waiting(optuna_study), max(total - finished, 0))
    else:
        total = study.n_trials
        remaining = max(total - finished, 0)
    promote = Promote(job, optuna_study) if study.pruner == "moasha" else None
    if promote is not None and (promote(optuna_study, None) is not None or obj.waiting(optuna_study)):
        # a resumed study's paused chains, or promotions queued by a worker that died before it ran them
        remaining = max(remaining, 1)
    trains = bool(remaining) or (study.is_grid and claims.has_work(optuna_study))
    if trains:  # a run that trains nothing leaves config.yaml (and the study's code record) as they were
        write_config(job)
        made.record_code(optuna_study)
    else:
        print(nothing_to_train(study, finished, total))
    if pool.wanted(job.pool):  # workers=N: N copies of this command on this study, one bar here
        code = pool.run(list(job.argv), job.pool, storage_url, study.name, job.run_dir, total, obj.counted) \
            if trains else 0
        out = results.write_all(optuna_study, job.run_dir)
        loggers.summary(out["rows"], out["front"], study.objectives, out["made"])
        _final_line(study.name, job.run_dir, out)
        return code
    signals.install()  # first SIGINT/SIGTERM: the trial ends as 'interrupted' and is re-queued; second: abort

    screen = Screen(optuna_study.get_trials(deepcopy=False), study.timeout, job.started or None)  # timeout's clock
    bar = _bar(total, total - remaining, study.name, job.options.progress and trains, study.timeout)
    objective = obj.Objective(study=study, space=job.space, cells=job.cells, data=job.data, recipe=job.recipe,
                              loggers=loggers, thin=job.thin, prune=prune, progress=bool(job.options.progress),
                              settings=job.settings, deadline=deadline(job),
                              checkpoints=job.run_dir / "checkpoints" / study.name)
    objective = signals.guard(objective)
    stop = [claims.WaitForWork()] if study.is_grid else [obj.StopAt(total, job.cells is not None, promote is not None)]
    stop = ([promote] if promote is not None else []) + stop
    files = Rewrite(job.run_dir, max(job.options.report_every, 1))

    def after(s, trial):
        screen.add(trial)
        note = ""
        if pace.out_of_time(trial):  # queued for the next run; this one goes on while another trial fits
            fits, why = pace.time_for_another(s.get_trials(deepcopy=False), deadline(job))
            if not fits:
                s.stop()
            note = why if "status" in trial.user_attrs else f"queued again for the next run; {why}"  # failed for good
        bar.write(trial_line(trial, note))
        bar.write(screen.study_line())
        if obj.counted(trial):  # rejected points change no result file
            bar.update(1)
            files.trial(s)

    try:
        if claims.has_work(optuna_study) if study.is_grid else remaining:  # a grid waits for others' cells
            # n_trials=None: StopAt counts trained trials (rejected points are cheap and do not count)
            # claims.optimize: a trial taken from this (slow) worker by another is dropped, and the worker goes on
            claims.optimize(optuna_study, objective, deadline=deadline(job), n_trials=None, timeout=None,
                            catch=(obj.TrialFailed, signals.TrialOutOfTime),
                            callbacks=[collect, after, *stop, signals.StopOnSignal()])
    except signals.TrialInterrupted as stopped:  # the trial in flight: its line, then the study's
        bar.write(str(stopped))
        bar.write(screen.study_line())
    finally:
        bar.close()
        signals.requeue()  # the trials stopped out of time: WAITING now, so the next run trains them first
        owners.reap(optuna_study)  # a trial of this host that died while we ran (e.g. a sibling worker's)
        out = results.write_all(optuna_study, job.run_dir)
        loggers.summary(out["rows"], out["front"], study.objectives, out["made"])
    _final_line(study.name, job.run_dir, out)
    code = signals.exit_code()
    if not code and not any(r.get("status") == "ok" for r in out["rows"]):
        print(f"error: study {study.name}: no trial was trained ({_tally(out['rows'])}); widen the budget "
              "(study.constraints.*) or the time (study.timeout)", file=sys.stderr)
        return 1
    if signals.requested():
        print("interrupted: finished trials are kept in the storage; re-run the command to resume",
              file=sys.stderr)
    return code


class Promote:
    """Callback (pruner moasha): after each trial, queue the next paused chain that is due to go on
    (dse.trials.moasha.promote), so the next trial resumes it instead of drawing a new point."""

    def __init__(self, job: Job, optuna_study):
        from dse.trials import dominance, moasha

        settings = job.study.moasha or {}
        self.eta = int(settings.get("eta", moasha.ETA))
        self.ladder = moasha.rungs(int(getattr(job.recipe, "epochs", 1)), int(settings.get("min_rung", moasha.MIN_RUNG)),
                                   self.eta)
        self.keys = dominance.cost_keys(optuna_study, {})
        moasha.same_rung_score(optuna_study, str(settings.get("rung_score", moasha.RUNG_SCORE)))

    @staticmethod
    def check(job: Job) -> None:
        """Refuse what moasha cannot pause and resume (before anything is written)."""
        if str(getattr(job.recipe, "devices", 1)) not in ("1", "auto") or getattr(job.recipe, "strategy", "auto") != "auto":
            raise UserError("study.pruner: moasha pauses and resumes single-process fits; with trainer.devices > 1 "
                            "(DDP) use pruner none or dominance")

    def __call__(self, optuna_study, _trial):
        from dse.trials import moasha

        return moasha.promote(optuna_study, self.ladder, self.keys, self.eta)


FULL_GC_EVERY = 50  # collect() scans every object once in this many trained trials, else only the newer ones


def collect(_study, trial) -> None:
    """Callback: free the memory a trial's fit left in reference cycles (Lightning's trainer, the model, CUDA
    tensors) before the next trial builds its own. A trial that trained nothing (rejected before training, a
    duplicate) built no model, so it is not collected. (Optuna's gc_after_trial collects after every trial.)

    A process that imported torch and Lightning and holds a 10k-trial study in Optuna's cache has ~900k objects
    that live as long as the run; one full collection scans them all (1 s of CPU, bench/data/storage.txt). So a
    full collection ends with gc.freeze(): what survived it is left out of the collections after it, which scan
    only the objects made since (the last trials' models and trainers, the new trials). Every FULL_GC_EVERY-th
    collection is full again (gc.unfreeze() first), so a cycle that died among the older objects is freed then."""
    global _collects
    if TrialRecord.from_trial(trial).untrained:
        return
    full = _collects % FULL_GC_EVERY == 0
    if full:
        gc.unfreeze()
    gc.collect()
    if full:
        gc.freeze()
    _collects += 1


_collects = 0  # collect() calls that collected, in this process


REWRITE_S = 30.0  # during a run, the result files are rewritten at most this often (and at its end)
REWRITE_TIMES = 20  # ... and at most every this many times the last write's own time: <= 1/20 of the run's time


class Rewrite:
    """The result files during a run: after a counted trial, at most every REWRITE_S seconds, or REWRITE_TIMES x
    the last write's own time if that is longer (at 10k trials one write_all takes 3-30 s: rewriting then costs a
    run at most 5% of its time, not 10% as with 10x); the plots with the first write after each `every` counted
    trials. The run's end rewrites everything (runner.run's finally), so files
    lag the storage only while a run is live, by at most the interval; after a kill -9 `python -m dse.report
    RUN_DIR` (or the next run of the command) rebuilds them from the storage, which holds every trial."""

    def __init__(self, run_dir: Path, every: int, clock=time.monotonic):
        self.run_dir, self.every, self.clock = run_dir, every, clock
        self.next_at = None  # None: the first counted trial writes at once
        self.unplotted = 0

    def trial(self, optuna_study) -> bool:
        """One more counted trial; write the files if it is time; did it write?"""
        self.unplotted += 1
        now = self.clock()
        if self.next_at is not None and now < self.next_at:
            return False
        plots = self.unplotted >= self.every
        results.write_all(optuna_study, self.run_dir, plots=plots)
        took = self.clock() - now
        self.next_at = self.clock() + max(REWRITE_S, REWRITE_TIMES * took)
        if plots:
            self.unplotted = 0
        return True


def nothing_to_train(study, finished: int, total: int) -> str:
    """The line of a run that trains nothing: what the study already holds, and how to train more."""
    more = "raise study.n_trials to train more" if not study.is_grid else "every cell x seed is taken"
    return (f"study {study.name}: nothing to train in this run; the study already has {finished} of {total} "
            f"trials counted ({more}); rewriting its result files from the storage")


def _tally(rows: list[dict]) -> str:
    """'12 proposed: 9 over the budget, 3 repeats' from trials.csv rows."""

    rows = [r for r in rows if r.get("state") != "WAITING"]  # queued again: not a proposal of its own
    n = Counter(r.get("status") or r.get("reason") or "unfinished" for r in rows)
    words = {"rejected": "rejected before training", "duplicate": "repeats",
             "out of time": "stopped at the timeout and queued again"}
    return f"{len(rows)} proposed" + "".join(f", {c} {words.get(k, k)}" for k, c in n.items())


RESERVE_S = 10.0  # of study.timeout: the final reports after the last trial


def deadline(job: Job) -> float | None:
    """time.monotonic() by which the last trial must end (None without a timeout)."""
    if job.study.timeout is None:
        return None
    return (job.started or time.monotonic()) + job.study.timeout - RESERVE_S


def size_trials(job: Job, optuna_study) -> Job:
    """study.trials_per_timeout: measure, then cut data.subset so ~N trials fit (a resume reuses the size);
    returns the job with its data, recipe and settings sized (the same job when nothing changes)."""
    study = job.study
    if not (study.trials_per_timeout and study.timeout) or job.space is None or job.cells is not None:
        return job

    def typed(key):
        return any(a.lstrip("+~").startswith(key + "=") for a in job.argv)

    if typed("data.subset"):
        return job  # the user's own size
    stored = optuna_study.user_attrs.get(provenance.STUDY_KEY)
    if stored is None and optuna_study.get_trials(deepcopy=False):
        return job  # an older study: keep what it was trained with
    batch = val = None
    if stored is not None:
        size, val = ((stored.get("data") or {}).get(k) for k in ("subset", "val_subset"))
        batch = (stored.get("trainer") or {}).get("batch_size")
        why = f"sizing: {size} training samples, as this study was sized when it began"
    else:
        size, val, batch, why = sizing.choose(job.space, job.data, job.recipe, job.thin, study.timeout,
                                              study.trials_per_timeout, job.options.seed,
                                              keep_batch=typed("trainer.batch_size"), keep_val=typed("data.val_subset"))
    if not size:
        return job
    print(why)
    if stored is None:  # a fresh study: the sizing line is part of how its trials were made
        optuna_study.set_user_attr(made.SIZING_KEY, why)
    settings = copy.deepcopy(job.settings)
    settings["data"]["subset"] = int(size)
    if val:  # the validation samples the trials really score (the data may hold fewer than asked)
        settings["data"]["val_subset"] = min(int(val), len(job.data.val))
    recipe = job.recipe
    if batch and int(batch) != recipe.batch_size:
        recipe = dataclasses.replace(recipe, batch_size=int(batch))
        settings["trainer"]["batch_size"] = int(batch)
    data = sizing.with_subset(job.data, int(size), int(val) if val else None)
    text = sized_config(job.config_yaml, settings)
    return dataclasses.replace(job, data=data, recipe=recipe, settings=settings, config_yaml=text)


def sized_config(text: str, settings: dict) -> str:
    """config.yaml's text with the sizes the trials really train with (data.subset, data.val_subset,
    trainer.batch_size), and a first line that says so."""
    import yaml

    cfg = yaml.safe_load(text) or {}
    for group, keys in (("data", ("subset", "val_subset")), ("trainer", ("batch_size",))):
        if isinstance(cfg.get(group), dict):
            cfg[group].update({k: settings[group][k] for k in keys if settings[group].get(k) is not None})
    return ("# data.subset, data.val_subset and trainer.batch_size: as sized by study.trials_per_timeout "
            "(the study's sizing line is in provenance.yaml)\n" + yaml.safe_dump(cfg, sort_keys=False))


def make_sampler(job: Job, done: int):
    """The study's sampler, seeded per worker and per resume, with its start-up trials inside the budget.

    Each pool worker (env DSE_WORKER) of each SLURM array task (env DSE_TASK, dse.trials.slurm) gets its own
    seed, so workers do not propose the same points; a
    resumed study starts from a new seed, so it does not replay its first draws. With a timeout, the last
    points are chosen to fit the time left (dse.trials.sampling).
    """

    worker = int(os.environ.get("DSE_WORKER", "0") or 0) + 1000 * int(os.environ.get("DSE_TASK", "0") or 0)
    seed = job.options.seed + done + 7919 * worker
    inner = obj.make_sampler(job.sampler, seed, job.study.multi)
    if job.cells is not None or job.space is None:
        return inner
    return FeasibleStart(inner, job.space, startup_count(job.sampler), seed, deadline=deadline(job),
                         repeat_after=job.study.noise_after if job.study.seeds == 1 else 0,
                         n_trials=job.study.n_trials)  # one point again with the next seed: the seed noise


def write_config(job: Job) -> None:
    """The run's resolved config as config.yaml; a different earlier one is kept as config.<n>.yaml."""
    job.run_dir.mkdir(parents=True, exist_ok=True)
    path = job.run_dir / "config.yaml"
    text = job.config_yaml
    if path.is_file() and path.read_text() != text:
        n = 1
        while (job.run_dir / f"config.{n}.yaml").exists():
            n += 1
        path.rename(job.run_dir / f"config.{n}.yaml")
    path.write_text(text)


def _bar(total: int, initial: int, name: str, enabled: bool, timeout: float | None = None):
    """The study's progress bar: the study's trained trials of its total (`initial` of them before this run,
    which the label names). With a timeout it shows the time left, not an ETA over n_trials that the timeout
    will cut short."""
    from tqdm.auto import tqdm

    fmt = "{desc}: {n_fmt}/{total_fmt} trained in the study [{elapsed}{postfix}]" if timeout else None
    desc = f"study {name}" + (f" ({initial} before this run)" if initial else "")
    return tqdm(total=total, initial=initial, desc=desc, unit="trial", position=0,
                disable=not enabled, dynamic_ncols=True, bar_format=fmt)


def _final_line(name: str, run_dir: Path, out: dict) -> None:
    """What the run left behind."""

    ok = scored(out["rows"])
    best = max(ok, key=lambda r: r["accuracy"], default=None)
    print(f"study {name}: {len(out['rows'])} trials ({len(ok)} ok), {len(out['front'])} on the Pareto front"
          + (f"; best val accuracy {100 * best['accuracy']:.2f}% at {best['flops'] / 1e6:.2f} MFLOPs"
             if best else ""))
    for line in noise_lines(out["rows"], out["front"]):  # the seed noise, and the front with its ties marked
        print(line)
    print(f"results: {run_dir}/ (trials.csv, pareto.csv, pareto.png, pareto.html, best.yaml)")
