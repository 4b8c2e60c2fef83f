"""Per-trial storage cost of Optuna and of dse's own storage work, with studies of 1k, 5k and 10k trials.

usage: python bench/storage.py [--sizes 1000,5000,10000] [--workers 8] [--trials-per-worker 5] [--rounds 5]
                               [--storages sqlite,postgresql,journal] [--configs ...] [--quick]

For each storage (SQLite file, a real PostgreSQL server started here like tests/conftest.py's fixture, a
journal file) the study is prefilled to each size with trials that look like dse's (the params, user attrs
and system attrs a real dse trial writes, one point claim per trial), then `--workers` processes run
`--trials-per-worker` trials each, all at once (a barrier, after each has read the trials new to it), in
`--rounds` rounds in which the configs take turns (one config's trials all run first otherwise, and the load of
a shared machine drifts between configs). Each worker keeps one sampler and one objective per config and size
over its rounds, as a dse run keeps them. A worker
keeps one storage object (dse.storage.open_storage) and its Optuna cache for all configs and sizes, like a
long-lived dse worker; its start-up (open + read every trial) is timed apart (open_s). Unless --bare, each
worker first imports what a training dse worker has imported (torch, Lightning, timm), so neither a first
import nor a gc.collect over fewer objects than a real worker holds lands in a timed trial. Configs:

    optuna/random, optuna/tpe  plain Optuna: a study on the same storage object, an ask / suggest the space's
                               4 params / tell loop (ask/tell never use the heartbeat; the storage writes no
                               dse owner record with its trials): what a user of plain Optuna pays
    dse/random, dse/tpe        dse's path: dse.trials.runner.make_sampler (FeasibleStart around
                               dse/conf/sampler/{random,tpe}.yaml), the real dse.trials.objective.Objective with
                               training replaced by an instant result (so owners.mark, Space.suggest,
                               claims.claim / take_over, every set_user_attr and set_constraint are dse's own),
                               signals.guard, study.optimize with catch, dse.trials.runner.collect (gc after
                               a trial that reached training), dse.search's per-trial lines
                               (dse.trials.screen) and the StopAt and StopOnSignal callbacks

Each trial is timed from Optuna's `_run_trial` to the end of its callbacks, with its pieces timed by wrapping
the functions dse and Optuna call (ask: create the trial + the sampler's relative sampling; stale: Optuna's
fail_stale_trials; hb: the heartbeat thread; mark, suggest, claim, attrs (set_user_attr + set_constraint),
count (analytic params/FLOPs), tell, stopat, gc). dse.search's `after` callback rewrites trials.csv
(dse.results.files.write_all) after a counted trial, at most every dse.trials.runner.REWRITE_S seconds (or
REWRITE_TIMES x its own time); it is timed on its own, in this process, after the workers (write_all without plots, and the
plots), because at 10k trials one call takes seconds. The table's "dse+after" adds its share per trial to
dse/tpe: min(share of trials that count, trial time / interval) x (write_all + plots).

The last line is `ratio: X`: dse's per-trial ms (dse/tpe + after) / plain Optuna's (optuna/tpe), on
PostgreSQL at the largest size (without PostgreSQL: the first storage measured). --quick: tiny sizes, 2
workers, SQLite and journal only (seconds; the smoke test runs it).
"""
from __future__ import annotations

import argparse
import datetime
import glob
import itertools
import json
import os
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STUDY = "bench"
GEOMETRY = {"image_size": 28, "in_chans": 1, "num_classes": 10}  # the default study's data (Fashion-MNIST)
CONFIGS = ("optuna/random", "optuna/tpe", "dse/random", "dse/tpe")
PIECES = ("ask", "suggest", "mark", "claim", "attrs", "count", "tell", "stale", "hb", "after", "stopat", "gc",
          "gc_cpu")
REPORT_EVERY = 5  # dse.search's report_every default: plots are redrawn every 5th counted trial
SETTINGS = {  # what dse.provenance.settings records on every trial of the default study
    "data": {"name": "fashion_mnist", "subset": 20000, "val_subset": None, "val_fraction": 0.1, "image_size": None,
             "augment": False},
    "trainer": {"epochs": 2, "batch_size": 128, "lr": 0.05, "momentum": 0.9, "nesterov": True,
                "weight_decay": 0.0005, "schedule": "onecycle", "milestones": [], "gamma": 0.1, "warmup_epochs": 0.0,
                "label_smoothing": 0.0, "precision": "auto", "limit_batches": None, "channels_last": True,
                "deterministic": False},
    "model": {"width_scale": 1.0, "min_width": 4}, "seed": 0}


# ----------------------------------------------------------------------------------------------------------
# PostgreSQL: a throw-away server on loopback, as tests/conftest.py's `postgres_url` fixture starts one
# ----------------------------------------------------------------------------------------------------------

class Postgres:
    """initdb + pg_ctl start in a temp folder (as the postgres user when root); `url` while entered."""

    def __init__(self):
        self.root = None
        self.url = None

    @staticmethod
    def binaries() -> Path | None:
        """The newest /usr/lib/postgresql/*/bin, else the folder of initdb on PATH."""
        folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
        candidates = [Path(f) for f in reversed(folders)]
        if shutil.which("initdb"):
            candidates.append(Path(shutil.which("initdb")).resolve().parent)
        return next((c for c in candidates if all((c / b).exists() for b in ("initdb", "pg_ctl", "psql"))), None)

    @staticmethod
    def missing() -> str | None:
        """Why no server can be started here, or None."""
        if Postgres.binaries() is None:
            return "no PostgreSQL server binaries (apt-get install postgresql)"
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            return "psycopg2 is not installed (pip install 'dse[postgres]')"
        return None

    def _run(self, cmd):
        cmd = ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=self.root)
        if done.returncode:
            log = (self.root / "server.log").read_text()[-2000:] if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"PostgreSQL: {Path(cmd[-1] if cmd[0] != 'runuser' else cmd[4]).name} failed: "
                               f"{done.stderr or done.stdout}\n{log}")

    def __enter__(self) -> "Postgres":
        pg = self.binaries()
        self.root = Path(tempfile.mkdtemp(prefix="dse-bench-pg-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        password = "pw" + secrets.token_hex(8)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.pg, data = pg, self.root / "data"
        self._run([str(pg / "initdb"), "-D", str(data), "-U", "admin", "--auth-local=trust",
                   "--auth-host=scram-sha-256", "-E", "UTF8"])
        # default durability (fsync on): what a real server does; only the listening address is ours
        self._run([str(pg / "pg_ctl"), "-D", str(data), "-l", str(self.root / "server.log"), "-w", "-t", "60", "-o",
                   f"-p {port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200", "start"])
        psql = [str(pg / "psql"), "-h", str(self.root), "-p", str(port), "-U", "admin", "-d", "postgres", "-c"]
        self._run(psql + [f"CREATE ROLE dse LOGIN CREATEDB PASSWORD '{password}'"])
        self._run(psql + ["CREATE DATABASE dse OWNER dse"])
        self.url = f"postgresql://dse:{password}@127.0.0.1:{port}/dse"
        return self

    def __exit__(self, *exc) -> None:
        cmd = [str(self.pg / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w", "stop"]
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd,
                       capture_output=True, cwd=self.root)
        shutil.rmtree(self.root, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------
# The space's points, and prefilled trials that look like dse's
# ----------------------------------------------------------------------------------------------------------

def load_space():
    """The resnext space at the default data's geometry, as dse.search.load_space builds it (torch-free)."""
    from dse.search import load_space as load

    return load({"name": "resnext"}, SimpleNamespace(**GEOMETRY))


def dse_study():
    """The dse.study.Study the bench's trials belong to (multi-objective: accuracy up, FLOPs down)."""
    from dse.study import Study

    return Study(name=STUDY, space="resnext", n_trials=10**9, objectives=("accuracy", "flops"))


def space_facts(space) -> list[dict]:
    """Every point of the space: Optuna params and distributions (from Space.suggest), point, counts, bounds."""
    import optuna

    from dse import complexity
    from dse.trials.objective import violations, with_geometry
    from dse.errors import Infeasible

    choice = {name: [p.label(v) for v in p.values] for name, p in space.params.items()}
    out = []
    for combo in itertools.product(*choice.values()):
        fixed = optuna.trial.FixedTrial(dict(zip(choice, combo)))
        try:
            point = with_geometry(space.suggest(fixed), SimpleNamespace(**GEOMETRY))
        except Infeasible:
            continue
        params, flops = complexity(point)
        out.append({"params": dict(fixed.params), "dists": dict(fixed.distributions), "point": point.to_dict(),
                    "point_id": point.id, "n_params": int(params), "flops": int(flops),
                    "over": violations(space, point)})
    return out


def template(fact: dict, number: int, rng: random.Random):
    """A finished trial as dse leaves it: COMPLETE ok (trained) or COMPLETE rejected (over budget)."""
    import optuna
    from optuna.trial import TrialState

    now = datetime.datetime.now()
    attrs = {"point": fact["point"], "point_id": fact["point_id"], "seed": 0, "params": fact["n_params"],
             "flops": fact["flops"], "settings": SETTINGS}
    rejected = any(v > 0 for v in fact["over"].values())
    if rejected:
        attrs.update(status="rejected", reason="over_budget")
        acc = 0.0
    else:
        acc = rng.uniform(0.80, 0.90)
        history = [{"epoch": e, "train/loss": rng.uniform(0.3, 1.0), "lr": 0.05, "seconds": rng.uniform(10, 30),
                    "val/acc": acc - 0.02 * (2 - e), "val/loss": rng.uniform(0.3, 0.6)} for e in (1, 2)]
        attrs.update(epochs=2, train_seconds=rng.uniform(20, 60), val_acc=acc, test_acc=None, history=history,
                     reason="", status="ok")
    system = {f"constraints:{k}": v for k, v in fact["over"].items()}
    system["dse:owner"] = {"host": "bench", "pid": 10000 + number % 8, "time": time.time(), "start": 1,
                           "boot": "bench", "pidns": "pid:[0]", "trial": number + 1}
    trial = optuna.trial.create_trial(state=TrialState.COMPLETE, params=fact["params"], distributions=fact["dists"],
                                      values=[acc, float(fact["flops"])], user_attrs=attrs, system_attrs=system)
    trial.datetime_start, trial.datetime_complete = now - datetime.timedelta(seconds=40), now
    return trial


def claim_key(number: int, fact: dict) -> str:
    """The prefill's claim per trial: one key each, as a study over a space of 10k+ points leaves them.

    (The resnext space has only 180 points; claiming by point would leave 180 claim rows, not 10k.)
    """
    return f"{fact['point_id']}:p{number}"


def prefill_rdb(url: str, facts: list[dict], upto: int, rng: random.Random) -> int:
    """Bulk-insert trials (and one claim row each) until the study holds `upto` trials; how many were added."""
    import optuna
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models
    from sqlalchemy import func, insert, select

    from dse.trials.claims import CLAIM
    from dse.storage import _driver

    storage = optuna.storages.RDBStorage(_driver(url), engine_kwargs={"connect_args": {"timeout": 120}}
                                         if url.startswith("sqlite") else {})
    study_id = storage.get_study_id_from_name(STUDY)
    session = storage.scoped_session()
    try:
        have = session.scalar(select(func.count()).select_from(models.TrialModel).filter_by(study_id=study_id))
        count = max(upto - have, 0)
        if not count:
            return 0
        picks = [rng.choice(facts) for _ in range(count)]
        trials = [template(f, have + i, rng) for i, f in enumerate(picks)]
        ids = list(session.scalars(
            insert(models.TrialModel).returning(models.TrialModel.trial_id, sort_by_parameter_order=True),
            [{"number": have + i, "study_id": study_id, "state": t.state, "datetime_start": t.datetime_start,
              "datetime_complete": t.datetime_complete} for i, t in enumerate(trials)]))
        finite = models.TrialValueModel.TrialValueType.FINITE
        session.execute(insert(models.TrialParamModel), [
            {"trial_id": tid, "param_name": k, "param_value": t.distributions[k].to_internal_repr(v),
             "distribution_json": distribution_to_json(t.distributions[k])}
            for tid, t in zip(ids, trials) for k, v in t.params.items()])
        session.execute(insert(models.TrialValueModel), [
            {"trial_id": tid, "objective": i, "value": v, "value_type": finite}
            for tid, t in zip(ids, trials) for i, v in enumerate(t.values)])
        session.execute(insert(models.TrialUserAttributeModel), [
            {"trial_id": tid, "key": k, "value_json": json.dumps(v)}
            for tid, t in zip(ids, trials) for k, v in t.user_attrs.items()])
        session.execute(insert(models.TrialSystemAttributeModel), [
            {"trial_id": tid, "key": k, "value_json": json.dumps(v)}
            for tid, t in zip(ids, trials) for k, v in t.system_attrs.items()])
        session.execute(insert(models.StudySystemAttributeModel), [
            {"study_id": study_id, "key": CLAIM + claim_key(have + i, f), "value_json": json.dumps(tid)}
            for i, (tid, f) in enumerate(zip(ids, picks))])
        session.commit()
        return count
    finally:
        session.close()
        storage.engine.dispose()


class _Buffered:
    """A journal backend over a journal file: reads the file, keeps new logs in memory until `flush`.

    Prefilling through the file backend costs an fsync per operation (6 ms each here); this writes the
    same lines (json, one per log) in one append.
    """

    def __init__(self, path: Path):
        self.path, self.logs, self.new, self.offset = Path(path), [], [], 0
        self.refresh()

    def refresh(self) -> None:
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        self.logs.extend(json.loads(line) for line in data[:end].splitlines() if line.strip())
        self.offset += end

    def read_logs(self, log_number_from: int):
        return self.logs[log_number_from:]

    def append_logs(self, logs) -> None:
        self.logs.extend(logs)
        self.new.extend(logs)

    def flush(self) -> None:
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in self.new)
        with open(self.path, "ab") as fh:
            fh.write(text.encode())
            fh.flush()
            os.fsync(fh.fileno())
        self.offset += len(text.encode())
        self.new = []


_JOURNALS: dict = {}  # journal path -> (backend, JournalStorage) of this process's prefill


def prefill_journal(path: Path, facts: list[dict], upto: int, rng: random.Random) -> int:
    """Add trials (and one claim marker study each, as dse.trials.claims writes them) until the study holds `upto`."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import BaseJournalBackend

    class Backend(_Buffered, BaseJournalBackend):
        pass

    if path not in _JOURNALS:  # kept across sizes: each replay of the log re-checks every study name (O(n^2))
        backend = Backend(path)
        _JOURNALS[path] = (backend, JournalStorage(backend))
    backend, storage = _JOURNALS[path]
    backend.refresh()  # the lines the workers wrote since
    study_id = storage.get_study_id_from_name(STUDY)
    have = storage.get_n_trials(study_id)
    count = max(upto - have, 0)
    for i in range(count):
        fact = rng.choice(facts)
        tid = storage.create_new_trial(study_id, template_trial=template(fact, have + i, rng))
        marker = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE],
                                          study_name=f"{STUDY}:claim:{claim_key(have + i, fact)}")
        storage.set_study_system_attr(marker, "holder", tid)
    backend.flush()
    return count


# ----------------------------------------------------------------------------------------------------------
# Workers: each runs one config's trials when told, all at once (a barrier), and sends back its timings
# ----------------------------------------------------------------------------------------------------------

_CUR: dict | None = None  # the pieces of the trial being timed in this worker


def _timed(name: str, fn):
    """fn, adding its wall time to piece `name` of the current trial."""
    def wrapper(*args, **kwargs):
        if _CUR is None:
            return fn(*args, **kwargs)
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            _CUR[name] = _CUR.get(name, 0.0) + time.perf_counter() - start
            _CUR[name + "_cpu"] = _CUR.get(name + "_cpu", 0.0) + time.process_time() - cpu
            if name == "attrs":
                _CUR["n_attrs"] = _CUR.get("n_attrs", 0) + 1
    wrapper.__wrapped__ = fn
    return wrapper


def _instrument() -> None:
    """Wrap the functions a dse trial goes through (in this worker process only)."""
    import contextlib
    import gc

    import optuna
    import optuna.study._optimize as opt
    from optuna.trial import Trial

    import dse
    from dse.trials import claims
    from dse.trials import objective
    from dse.trials import owners
    global _CUR
    optuna.storages.fail_stale_trials = _timed("stale", optuna.storages.fail_stale_trials)
    opt._tell_with_warning = _timed("tell", opt._tell_with_warning)
    beat = opt.get_heartbeat_thread

    @contextlib.contextmanager
    def heartbeat(trial_id, storage):
        start = time.perf_counter()
        manager = beat(trial_id, storage)
        manager.__enter__()
        if _CUR is not None:
            _CUR["hb"] = _CUR.get("hb", 0.0) + time.perf_counter() - start
        try:
            yield
        finally:
            start = time.perf_counter()
            manager.__exit__(None, None, None)
            if _CUR is not None:
                _CUR["hb"] = _CUR.get("hb", 0.0) + time.perf_counter() - start

    opt.get_heartbeat_thread = heartbeat
    run_trial = opt._run_trial

    def timed_run_trial(study, func, catch):
        global _CUR
        _CUR = {"t0": time.perf_counter(), "c0": time.process_time()}
        return run_trial(study, func, catch)

    opt._run_trial = timed_run_trial
    opt.gc = SimpleNamespace(collect=_timed("gc", gc.collect))
    owners.mark = _timed("mark", owners.mark)
    claims.claim = _timed("claim", claims.claim)
    claims.take_over = _timed("claim", claims.take_over)
    objective._trial_by_id = _timed("claim", objective._trial_by_id)
    dse.complexity = _timed("count", dse.complexity)
    import dse.cost
    dse.cost.measures = _timed("count", dse.cost.measures)  # what Objective counts with (params, FLOPs, acts, rf)
    Trial.set_user_attr = _timed("attrs", Trial.set_user_attr)
    Trial.set_constraint = _timed("attrs", Trial.set_constraint)
    if hasattr(objective, "_write_attrs"):  # dse's record and constraints in one transaction
        objective._write_attrs = _timed("attrs", objective._write_attrs)
    if claims_unwrap_journal():
        claims._backend = _unwrap_cache  # measure the claim dse means to make (see claims_unwrap_journal)


def _unwrap_cache(storage):
    """The storage under Optuna's cache wrapper, and nothing else (a JournalStorage stays itself)."""
    from optuna.storages._cached_storage import _CachedStorage

    return storage._backend if isinstance(storage, _CachedStorage) else storage


def claims_unwrap_journal() -> bool:
    """Does dse.trials.claims._backend unwrap a JournalStorage to its file backend (so that every claim fails)?

    JournalStorage keeps its file backend in `_backend`, the attribute dse.trials.claims reads to look under
    Optuna's _CachedStorage; claim() then takes the in-memory branch on a JournalFileBackend and raises
    AttributeError, which ends the study. The bench then times the marker-study claim dse means to make.
    """
    from optuna.storages import BaseStorage, JournalStorage
    from optuna.storages.journal import BaseJournalBackend

    from dse.trials import claims
    class Nothing(BaseJournalBackend):  # no file: only the attribute layout matters
        def read_logs(self, log_number_from):
            return []

        def append_logs(self, logs):
            pass

    return not isinstance(claims._backend(JournalStorage(Nothing())), BaseStorage)


def _finish_record(records: list, trial) -> None:
    """The end of a timed trial: its total and CPU time, its pieces, its outcome."""
    global _CUR
    if _CUR is None:
        return
    cur, _CUR = _CUR, None
    rec = {k: v for k, v in cur.items() if k not in ("t0", "c0")}
    rec["total"] = time.perf_counter() - cur["t0"]
    rec["cpu"] = time.process_time() - cur["c0"]
    rec["status"] = trial.user_attrs.get("status", trial.state.name.lower())
    records.append(rec)


def _fake_objective(space, seed: int):
    """dse.trials.objective.Objective whose training returns at once (what is left is dse's storage work)."""
    from dse.trials import objective as obj
    class Instant(obj.Objective):
        """Trains nothing: a result like a 2-epoch fit."""

        def train(self, trial, point, seed, params, flops, first_seed=True):
            rng = random.Random(trial.number)
            acc = rng.uniform(0.80, 0.90)
            history = [{"epoch": e, "train/loss": rng.uniform(0.3, 1.0), "lr": 0.05, "seconds": 20.0,
                        "val/acc": acc, "val/loss": 0.4} for e in (1, 2)]
            return SimpleNamespace(status="ok", reason="", val_acc=acc, test_acc=None, seconds=40.0, epochs=2,
                                   history=history)

    return Instant(study=dse_study(), space=space, cells=None, data=SimpleNamespace(**GEOMETRY),
                   recipe=SimpleNamespace(seed=seed), loggers=None, progress=False, settings=SETTINGS)


def _open(task: dict):
    """dse's storage on the task's URL (dse.storage.open_storage: heartbeats on RDB storages)."""
    import optuna

    from dse.storage import open_storage

    try:
        return open_storage(task["url"], Path(task["run_dir"]))
    finally:
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # as dse.trials.runner.run: no line per failed trial


def _sampler_cfg(name: str):
    import yaml

    from dse.trials.sampling import SamplerConfig

    return SamplerConfig.of(yaml.safe_load((ROOT / "dse" / "conf" / "sampler" / f"{name}.yaml").read_text()))


_OPEN: dict = {}  # (url, plain) -> the storage and study this worker keeps between tasks, like a long-lived worker
_KEPT: dict = {}  # (url, config, size, what) -> a sampler or objective kept over the rounds of one config and size


def _kept(task: dict, what: str, make):
    """The worker's `what` for this task's config and size: made in its first round, kept for the later ones (a
    dse worker keeps its sampler and objective for a whole run)."""
    key = (task["url"], task["config"], task["size"], what)
    if key not in _KEPT:
        _KEPT[key] = make()
    return _KEPT[key]


def _plain_study(task: dict):
    """Plain Optuna's study on the task's storage (opened once per worker: later sizes read only new trials)."""
    import optuna

    key = (task["url"], True)
    if key not in _OPEN:  # the worker's one storage object and its cache (ask/tell never use its heartbeat)
        shared = _dse_study(task)[0]._storage
        _OPEN[key] = (None, optuna.load_study(study_name=STUDY, storage=shared))
    return _OPEN[key][1]


def _run_plain(task: dict, index: int, barrier, space) -> dict:
    """Plain Optuna: ask / suggest the space's 4 params / tell, timed per piece."""
    start = time.perf_counter()
    study = _plain_study(task)
    backend = getattr(study._storage, "_backend", study._storage)
    owner_of = getattr(backend, "owner_of", None)  # dse's owner record with each new trial (dse.trials.owners)
    if owner_of is not None:
        backend.owner_of = None  # not Optuna's: off while plain Optuna's trials run, back on after
    try:
        return _plain_trials(task, index, barrier, study, start)
    finally:
        if owner_of is not None:
            backend.owner_of = owner_of


def _plain_trials(task: dict, index: int, barrier, study, start: float) -> dict:
    """_run_plain's timed loop, on its study."""
    from dse.trials import objective as obj
    study.sampler = _kept(task, "sampler", lambda: obj.make_sampler(_sampler_cfg(task["sampler"]),
                                                                    1000 * task["run"] + index, multi=True))
    choices = {name: list(d.choices) for name, d in task["facts"][0]["dists"].items()}
    flops = {tuple(f["params"].values()): f["flops"] for f in task["facts"]}
    records = []

    def one(timed: bool):
        t0, c0 = time.perf_counter(), time.process_time()
        trial = study.ask()
        t1 = time.perf_counter()
        values = tuple(trial.suggest_categorical(k, v) for k, v in choices.items())
        t2 = time.perf_counter()
        study.tell(trial, [random.random(), float(flops.get(values, 1e6))])
        t3 = time.perf_counter()
        if timed:
            records.append({"ask": t1 - t0, "suggest": t2 - t1, "tell": t3 - t2, "total": t3 - t0,
                            "cpu": time.process_time() - c0, "status": "ok"})

    study.get_trials(deepcopy=False)  # the trials new to this worker into its cache, before the clock starts
    startup = time.perf_counter() - start
    barrier.wait()
    for _ in range(task["trials"]):
        one(True)
    return {"records": records, "startup": startup}


def _dse_study(task: dict):
    """dse's study on the task's storage, opened as dse.trials.runner.run opens it (once per worker)."""
    from dse.trials import objective as obj
    from dse.trials import owners, runner
    key = (task["url"], False)
    if key not in _OPEN:
        storage = _open(task)
        study = dse_study()
        optuna_study = obj.open_study(storage, study, None, obj.make_pruner("none", 1), study.space)
        done = sum(obj.counted(t) for t in optuna_study.get_trials(deepcopy=False))  # as runner.run counts them
        owners.reap(optuna_study)
        optuna_study.ask = _timed("ask", optuna_study.ask)  # _run_trial asks through the study
        _OPEN[key] = (storage, optuna_study, done, obj.StopAt(study.n_trials, grid=False))
    return _OPEN[key][1], _OPEN[key][2]


def _run_dse(task: dict, index: int, barrier, space) -> dict:
    """dse's path: the sampler of dse.trials.runner.make_sampler, then study.optimize as dse.trials.runner.run calls it."""
    from dse.trials import objective as obj
    from dse.trials import runner, signals
    os.environ["DSE_WORKER"] = str(index)  # dse.trials.runner.make_sampler seeds each worker apart
    start = time.perf_counter()
    optuna_study, done = _dse_study(task)
    study = dse_study()
    job = SimpleNamespace(options=SimpleNamespace(seed=task["run"]), sampler=_sampler_cfg(task["sampler"]), study=study,
                          cells=None, space=space)
    optuna_study.sampler = _kept(task, "sampler", lambda: runner.make_sampler(job, done))
    # a fresh claim key per config and size; one objective over its rounds, as one dse run has
    objective = _kept(task, "objective", lambda: signals.guard(_fake_objective(space, seed=1000 + task["run"])))
    records = []
    line = getattr(runner, "_summary_line", None)  # dse.trials.runner.run's per-trial lines, where they live now
    try:
        from dse.trials.screen import Screen, trial_line

        screen = Screen(optuna_study.get_trials(deepcopy=False), None)
    except ImportError:
        screen, trial_line = None, line

    def after(s, trial):  # dse.trials.runner.run's `after`, less report.write_all (timed apart, in the parent)
        if screen is not None:
            screen.add(trial)
            screen.study_line()
        if trial_line is not None:
            trial_line(trial)

    counter = _OPEN[(task["url"], False)][3]  # one StopAt per worker, like one per dse run
    stop = _timed("stopat", counter)
    callbacks = [_timed("gc", runner.collect), _timed("after", after), stop, signals.StopOnSignal(),
                 lambda s, t: _finish_record(records, t)]
    optuna_study.get_trials(deepcopy=False)  # the trials new to this worker into its cache, before the clock
    counter.counts(optuna_study)  # and into StopAt's counts (its first call in a run judges every trial once)
    startup = time.perf_counter() - start
    barrier.wait()
    optuna_study.optimize(objective, n_trials=task["trials"], catch=(obj.TrialFailed,), callbacks=callbacks)
    return {"records": records, "startup": startup}


def _close_all(url: str) -> dict:
    """Close what this worker keeps open on `url`."""
    for key in [k for k in _KEPT if k[0] == url]:
        del _KEPT[key]
    for key in [k for k in _OPEN if k[0] == url]:
        storage = _OPEN.pop(key)[0]
        if storage is not None:
            _close(storage)
    return {"records": [], "startup": 0.0}


def _close(storage) -> None:
    """Give back a storage's database connections."""
    engine = getattr(getattr(storage, "_backend", storage), "engine", None) or getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()


def worker(index: int, barrier, conn, imports: bool = False) -> None:
    """A worker process: run each task it is sent; reply with its timings (or the error)."""
    import traceback
    import warnings

    import optuna

    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    _instrument()
    if imports:  # what a dse worker has imported before its first trial (it trains): not timed in a trial
        training_imports()
    space = load_space()
    space.suggest = _timed("suggest", space.suggest)  # what Objective.suggest calls
    while True:
        task = conn.recv()
        if task is None:
            return
        try:
            if task["config"] == "close":
                conn.send(_close_all(task["url"]))
                continue
            run = _run_plain if task["config"].startswith("optuna/") else _run_dse
            conn.send(run(task, index, barrier, space))
        except Exception:
            try:
                barrier.abort()  # the others are not left waiting
            except Exception:
                pass
            conn.send({"error": traceback.format_exc()[-3000:]})


class Pool:
    """`n` worker processes (spawned: no storage connection is inherited), fed one task at a time."""

    def __init__(self, n: int, imports: bool = False):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.n = n
        self.barrier = ctx.Barrier(n, timeout=900)
        self.conns, self.procs = [], []
        for i in range(n):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=worker, args=(i, self.barrier, theirs, imports), daemon=True)
            proc.start()
            self.conns.append(mine)
            self.procs.append(proc)

    def run(self, task: dict) -> list[dict]:
        """Every worker runs `task` (trials at once); their replies."""
        if task["config"] != "close":
            self.barrier.reset()
        for conn in self.conns:
            conn.send(task)
        replies = [conn.recv() for conn in self.conns]
        errors = [r["error"] for r in replies if "error" in r]
        if errors:
            raise RuntimeError(f"{task['config']} on {task['storage']} at {task['size']}: a worker failed:\n"
                               + errors[0])
        return replies

    def close(self) -> None:
        for conn in self.conns:
            conn.send(None)
        for proc in self.procs:
            proc.join(timeout=30)


# ----------------------------------------------------------------------------------------------------------
# write_all, timed in this process
# ----------------------------------------------------------------------------------------------------------

def training_imports() -> float:
    """Import what a dse worker that trains has imported (torch, Lightning, timm, dse.train.fit); seconds."""
    t = time.perf_counter()
    import lightning.pytorch  # noqa: F401
    import timm  # noqa: F401

    import dse.network  # noqa: F401
    import dse.train.fit  # noqa: F401
    return time.perf_counter() - t


def parent_study(url: str, run_dir: Path):
    """This process's study on `url` (kept across sizes: later sizes read only the new trials)."""
    import optuna

    from dse.storage import open_storage

    run_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.load_study(study_name=STUDY, storage=open_storage(url, run_dir))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return study


def cold_open(url: str, run_dir: Path) -> float:
    """Seconds a new process takes to open the study and read every trial once (dse.trials.runner.run reads them at
    start-up: to count finished trials, in owners.reap, in FeasibleStart's first trial)."""
    t = time.perf_counter()
    study = parent_study(url, run_dir)
    study.get_trials(deepcopy=False)
    seconds = time.perf_counter() - t
    _close(study._storage)
    return seconds


def time_write_all(study, run_dir: Path, reps: int, plots: bool = True) -> dict:
    """ms of dse.results.files.write_all without plots (median of reps) and its parts, and of the plots it adds;
    and of one gc.collect() (what gc_after_trial=True costs) in this process, which holds the study's trials
    in Optuna's cache like a worker does."""
    import gc

    from dse.results import files as report  # the result files dse.search writes after each trial

    study.get_trials(deepcopy=False)  # the new trials into the cache, as a worker that has run trials has them
    out = {}
    t = time.perf_counter()
    trials = study.get_trials(deepcopy=False)
    out["read"] = time.perf_counter() - t
    parts = {"rows": "rows", "pareto": "pareto", "csv": "write_csv"}  # piece -> the function write_all calls
    saved = {attr: getattr(report, attr) for attr in parts.values()}

    def timed(name, fn):
        def run(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                out[name] = out.get(name, 0.0) + time.perf_counter() - t
        return run

    try:  # write_all's own calls, timed from inside one real call
        for name, attr in parts.items():
            setattr(report, attr, timed(name, saved[attr]))
        times = []
        for _ in range(reps):
            for name in parts:
                out[name] = 0.0
            t = time.perf_counter()
            result = report.write_all(study, run_dir, plots=False)
            times.append(time.perf_counter() - t)
    finally:
        for attr, fn in saved.items():
            setattr(report, attr, fn)
    # (with reps > 1 the parts are the last call's: rows, the Pareto front, both CSV files)
    out["write_all"] = statistics.median(times)
    if plots:  # what write_all adds every REPORT_EVERY-th counted trial: the two plots and best.yaml
        title = f"{study.study_name}: bench"
        t = time.perf_counter()
        report.plot_png(run_dir / "pareto.png", result["rows"], result["front"], title)
        report.plot_html(run_dir / "pareto.html", result["rows"], result["front"], title)
        report.write_best(run_dir, study, result["front"])
        out["plots"] = time.perf_counter() - t
    out["trials"] = len(trials)
    times, cpus = [], []
    for _ in range(3):  # with this study's trials in Optuna's cache, and (unless --bare) torch & co imported
        t, c = time.perf_counter(), time.process_time()
        gc.collect()
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    out["gc"], out["gc_cpu"], out["objects"] = statistics.median(times), statistics.median(cpus), len(gc.get_objects())
    return out


# ----------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------

def _create_study(url: str, run_dir: Path) -> None:
    """The empty study, created the way dse creates it."""
    from dse.trials import objective as obj
    from dse.storage import open_storage

    storage = open_storage(url, run_dir)
    study = dse_study()
    obj.open_study(storage, study, None, None, study.space)
    _close(storage)


def rounds(trials: int, n: int) -> list[int]:
    """`trials` per worker split into at most `n` rounds, as even as can be (5, 3 -> [2, 2, 1])."""
    n = max(1, min(n, trials))
    return [trials // n + (i < trials % n) for i in range(n)]


def _ms(values) -> str:
    return f"{1000 * values:.1f}" if values is not None else "-"


def _stats(records: list[dict], key: str, q: float = 0.5):
    vals = sorted(r.get(key, 0.0) for r in records)
    if not vals:
        return None
    if q == 0.5:
        return statistics.median(vals)
    return vals[min(int(q * len(vals)), len(vals) - 1)]  # nearest rank


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000,10000", help="trials in the study before measuring")
    parser.add_argument("--workers", type=int, default=8, help="concurrent worker processes")
    parser.add_argument("--trials-per-worker", type=int, default=5, help="measured trials per worker and config")
    parser.add_argument("--rounds", type=int, default=5, help="the configs take turns, each running its trials in "
                        "this many rounds (so a change of machine load over the run weighs on every config alike)")
    parser.add_argument("--storages", default="sqlite,postgresql,journal")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--write-all-reps", type=int, default=1, help="timed write_all calls per size")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 workers x 2 trials, SQLite + journal")
    parser.add_argument("--dir", default=None, help="where the SQLite and journal files go (default: the "
                        "system's temp folder, on disk; --quick: /dev/shm)")
    parser.add_argument("--bare", action="store_true", help="time gc.collect and the trials without torch/"
                        "Lightning/timm imported in this process and the workers (a real dse worker has them "
                        "imported before its first trial; --quick implies --bare)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.workers, args.trials_per_worker = "10,30", 2, 1
        args.storages, args.write_all_reps, args.bare = "sqlite,journal", 1, True
        if args.dir is None and Path("/dev/shm").is_dir():
            args.dir = "/dev/shm"  # a smoke test of the output: no disk syncs
    args.sizes = sorted(int(s) for s in str(args.sizes).split(","))
    args.storages = [s.strip() for s in args.storages.split(",") if s.strip()]
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [s for s in args.storages if s not in ("sqlite", "postgresql", "journal")]
    bad += [c for c in args.configs if c not in CONFIGS]
    if bad:
        parser.error(f"unknown storage/config {bad[0]!r}")
    return args


def main(argv=None) -> int:
    import warnings

    import optuna

    args = parse_args(argv)
    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    wall = time.perf_counter()
    print(f"storage bench: {args.workers} workers x {args.trials_per_worker} trials per config in "
          f"{len(rounds(args.trials_per_worker, args.rounds))} rounds, sizes "
          f"{','.join(map(str, args.sizes))}, storages {','.join(args.storages)}, {os.cpu_count()} CPUs, "
          f"optuna {optuna.__version__}, load average {os.getloadavg()[0]:.1f}", flush=True)
    space = load_space()
    facts = space_facts(space)
    over = sum(any(v > 0 for v in f["over"].values()) for f in facts)
    if "journal" in args.storages and claims_unwrap_journal():
        print("NOTE journal: dse.trials.claims._backend(JournalStorage) returns its JournalFileBackend, so every dse claim "
              "on a journal raises AttributeError and ends the study; the journal rows below time the marker-study "
              "claim with that unwrapping fixed (only Optuna's _CachedStorage unwrapped)", flush=True)
    print(f"space resnext: {len(facts)} points, {over} over budget (prefilled trials pick points uniformly)",
          flush=True)
    pool = Pool(args.workers, imports=not args.bare)
    if not args.bare:
        print(f"this process imported torch, Lightning, timm, dse.train.fit in {training_imports():.1f} s (for the gc "
              "column of write_all: a training worker's gc.collect)", flush=True)
    results, writes, skipped = [], [], []
    run = 0
    try:
        for kind in args.storages:
            why = Postgres.missing() if kind == "postgresql" else None
            if why:
                print(f"{kind}: skipped ({why})", flush=True)
                skipped.append(kind)
                continue
            if args.dir:
                Path(args.dir).mkdir(parents=True, exist_ok=True)  # --dir may name a folder not made yet
            folder = Path(tempfile.mkdtemp(prefix=f"dse-bench-{kind}-", dir=args.dir))
            server = Postgres() if kind == "postgresql" else None
            url, mine = None, None
            try:
                if server:
                    server.__enter__()
                url = {"sqlite": f"sqlite:///{folder / 'study.db'}", "journal": f"journal:{folder / 'study.log'}",
                       "postgresql": server.url if server else None}[kind]
                _create_study(url, folder)
                rng = random.Random(args.seed)
                for size in args.sizes:
                    t = time.perf_counter()
                    if kind == "journal":
                        added = prefill_journal(folder / "study.log", facts, size, rng)
                    else:
                        added = prefill_rdb(url, facts, size, rng)
                    print(f"{kind} {size}: prefilled {added} trials in {time.perf_counter() - t:.1f} s", flush=True)
                    runs = {}
                    for config in args.configs:
                        run += 1
                        runs[config] = run
                        results.append({"storage": kind, "size": size, "config": config, "records": [],
                                        "startup": 0.0, "seconds": 0.0})
                    mine_now = results[-len(args.configs):]
                    for part in rounds(args.trials_per_worker, args.rounds):  # the configs take turns
                        for config, res in zip(args.configs, mine_now):
                            task = {"config": config, "storage": kind, "size": size, "url": url,
                                    "run_dir": str(folder / "runs"), "sampler": config.split("/")[1],
                                    "trials": part, "run": runs[config], "facts": facts}
                            t = time.perf_counter()
                            replies = pool.run(task)
                            res["records"] += [r for rep in replies for r in rep["records"]]
                            res["startup"] += statistics.median(rep["startup"] for rep in replies)
                            res["seconds"] += time.perf_counter() - t
                    for config, res in zip(args.configs, mine_now):
                        print(f"  {config:<13} median {_ms(_stats(res['records'], 'total'))} ms/trial "
                              f"(start-up {res['startup']:.1f} s, {res['seconds']:.1f} s)", flush=True)
                    t = time.perf_counter()
                    if mine is None:
                        mine = parent_study(url, folder / "report")
                    w = time_write_all(mine, folder / "report", args.write_all_reps, plots=not args.quick)
                    if size == max(args.sizes):
                        w["open"] = cold_open(url, folder / "report")
                    writes.append({"storage": kind, "size": size, **w})
                    print(f"  write_all     {_ms(w['write_all'])} ms ({w['trials']} trials; +{_ms(w.get('plots'))} ms "
                          f"with plots; {time.perf_counter() - t:.1f} s)", flush=True)
            finally:
                if url:
                    pool.run({"config": "close", "url": url, "storage": kind, "size": 0})
                if mine is not None:
                    _close(mine._storage)
                if server:
                    server.__exit__(None, None, None)
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        pool.close()
    ratio = report_tables(results, writes, args, skipped)
    print(f"total bench time {time.perf_counter() - wall:.0f} s, load average now {os.getloadavg()[0]:.1f} "
          f"({os.cpu_count()} CPUs: wall times include waiting for a core; the cpu columns do not)")
    print(f"ratio: {ratio:.2f}" if ratio is not None else "ratio: nan")
    return 0


def report_tables(results: list[dict], writes: list[dict], args, skipped: list[str]):
    """Print the per-piece table and the summary table; returns the ratio of the last line."""
    from dse.trials import runner  # result files are rewritten at most every REWRITE_S / REWRITE_TIMES x write

    REWRITE_S, times = runner.REWRITE_S, getattr(runner, "REWRITE_TIMES", 10)

    print()
    print("per trial, ms (median over all workers' measured trials; pieces are medians too, so they need not sum)")
    head = ["storage", "size", "config", "n", "median", "p90", "cpu"] + list(PIECES) + ["attr#", "dup", "read_s"]
    rows = []
    for r in results:
        recs = r["records"]
        dup = sum(x["status"] == "duplicate" for x in recs)
        row = [r["storage"], str(r["size"]), r["config"], str(len(recs)), _ms(_stats(recs, "total")),
               _ms(_stats(recs, "total", 0.9)), _ms(_stats(recs, "cpu"))]
        for piece in PIECES:
            row.append(_ms(_stats(recs, piece)) if any(piece in x for x in recs) else "-")
        n_attrs = _stats(recs, "n_attrs") if any("n_attrs" in x for x in recs) else None
        row += [f"{n_attrs:.0f}" if n_attrs is not None else "-", f"{dup}/{len(recs)}", f"{r['startup']:.1f}"]
        rows.append(row)
    _print_table(head, rows)
    print()
    print("write_all (dse.search's `after` callback, once per counted trial) and one gc.collect (gc_after_trial), ms, "
          "in this one process, workers idle; open_s: a new process opens the study and reads every trial, s:")
    head = ["storage", "size", "trials", "open_s", "read", "rows", "pareto", "csv", "write_all", "+plots", "gc",
            "gc_cpu", "objects"]
    _print_table(head, [[w["storage"], str(w["size"]), str(w["trials"]), f"{w['open']:.1f}" if "open" in w else "-", _ms(w["read"]), _ms(w["rows"]),
                         _ms(w["pareto"]), _ms(w["csv"]), _ms(w["write_all"]), _ms(w.get("plots")), _ms(w["gc"]),
                         _ms(w["gc_cpu"]), str(w["objects"])] for w in writes])
    print()
    print(f"summary, ms per trial (median wall; cpu: median process CPU); dse+after = dse/tpe + write_all + plots "
          f"per trial: dse.trials.runner.Rewrite writes after a counted trial at most every max({REWRITE_S:.0f} s, "
          f"{times} x write_all), so min(share of trials that count, dse/tpe / that interval) writes per trial")
    head = ["storage", "size", *CONFIGS, "dse+after", "dse/optuna random", "dse+after/optuna tpe", "cpu dse/tpe",
            "cpu optuna/tpe"]
    by = {(r["storage"], r["size"], r["config"]): r for r in results}
    wr = {(w["storage"], w["size"]): w for w in writes}
    rows, ratios = [], {}
    for kind in args.storages:
        for size in args.sizes:
            if (kind, size) not in wr:
                continue
            med = {c: _stats(by[(kind, size, c)]["records"], "total") if (kind, size, c) in by else None
                   for c in CONFIGS}
            full = None
            if med["dse/tpe"] is not None:
                recs = by[(kind, size, "dse/tpe")]["records"]
                share = sum(x["status"] == "ok" for x in recs) / max(len(recs), 1)
                w = wr[(kind, size)]
                interval = max(REWRITE_S, times * (w["write_all"] + w.get("plots", 0.0)))
                full = med["dse/tpe"] + min(share, med["dse/tpe"] / interval) * (w["write_all"] + w.get("plots", 0.0))
            storage_ratio = (med["dse/random"] / med["optuna/random"]
                             if med["dse/random"] and med["optuna/random"] else None)
            full_ratio = full / med["optuna/tpe"] if full and med["optuna/tpe"] else None
            ratios[(kind, size)] = full_ratio
            cpu = {c: _stats(by[(kind, size, c)]["records"], "cpu") if (kind, size, c) in by else None
                   for c in ("dse/tpe", "optuna/tpe")}
            rows.append([kind, str(size), *(_ms(med[c]) for c in CONFIGS), _ms(full),
                         f"{storage_ratio:.2f}" if storage_ratio else "-", f"{full_ratio:.2f}" if full_ratio else "-",
                         _ms(cpu["dse/tpe"]), _ms(cpu["optuna/tpe"])])
    _print_table(head, rows)
    measured = [k for k in ("postgresql", "sqlite", "journal") if k in args.storages and k not in skipped]
    if not measured:
        return None
    kind, size = measured[0], max(args.sizes)
    print(f"ratio below: dse+after / optuna/tpe on {kind} at {size} trials")
    return ratios.get((kind, size))


def _print_table(head: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    print("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    sys.exit(main())
