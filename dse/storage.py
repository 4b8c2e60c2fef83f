"""Optuna storages for dse: SQLite by default, any RDB URL (PostgreSQL for many machines), or a journal file.

Every storage URL that reaches a log, a config dump, an error or W&B goes through `mask` first.
"""
from __future__ import annotations

import random
import re
import time
from pathlib import Path

from dse.errors import UserError

_PASSWORD = re.compile(r"(?P<head>[a-z0-9+.-]+://[^:/@\s]+:)(?P<pw>[^@\s]*)(?P<tail>@)", re.IGNORECASE)


def mask(text: str) -> str:
    """Replace the password of every URL in `text` with ***."""
    return _PASSWORD.sub(lambda m: m.group("head") + "***" + m.group("tail"), str(text))


def hide_in_env(args: list[str]) -> list[str]:
    """The command-line overrides with a password-carrying `storage=URL` moved to env DSE_STORAGE.

    Whatever re-reads sys.argv (W&B's run metadata, Lightning's DDP launcher re-running the command) then
    sees `storage=${oc.env:DSE_STORAGE}`, which still resolves to the URL in this process and its children.
    """
    import os

    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~") == "storage" and mask(value) != value:
            os.environ["DSE_STORAGE"] = value
            arg = f"{key}=${{oc.env:DSE_STORAGE}}"
        out.append(arg)
    return out


def default_url(run_dir: Path) -> str:
    """SQLite file inside the run directory."""
    return f"sqlite:///{Path(run_dir).resolve() / 'study.db'}"


HEARTBEAT_REASON = "worker died (heartbeat)"


def open_storage(url: str | None, run_dir: Path, heartbeat_s: int = 30, grace_s: int = 90, max_retry: int = 2,
                 create: bool = True):
    """Open (and create, unless `create` is False) the study storage with heartbeats; failed-by-heartbeat trials
    are retried. The commands that only read a run (dse.report, dse.table, dse.analyze) pass create=False: a
    missing, empty or foreign file is then a one-line UserError naming it, and nothing is written.

    `url` may be None (SQLite in run_dir), an RDB URL (sqlite://, postgresql://, mysql://) or
    `journal:<path>` for a JournalStorage file on a shared file system (no heartbeats there: a killed
    worker's trial is failed and re-queued only by the next dse process on its own machine, see dse.trials.owners). Env `DSE_HEARTBEAT=interval,grace` (seconds) overrides the timing.
    """
    import warnings

    import optuna

    if not url:
        if create:
            make_folder(Path(run_dir), "run_dir")
        url = default_url(run_dir)
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

        path = url[len("journal:"):]
        check_file(Path(path), "journal", create)
        return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    if "://" not in url:
        raise UserError(f"storage: {mask(url)!r} is not a storage URL; use sqlite:///file.db, "
                        "postgresql://user:pw@host/db or journal:/path/file.log")
    heartbeat_s, grace_s = _timing(heartbeat_s, grace_s)
    given, url = url, _driver(url)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    sqlite = url.startswith("sqlite")
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        check_sqlite(Path(url[len("sqlite:///"):].split("?")[0]), create)
    engine = {"connect_args": {"timeout": 120}} if sqlite else {"pool_pre_ping": True}
    try:
        for attempt in range(6):  # processes that create a fresh storage at once race on its schema
            try:
                return _storage_class()(url, heartbeat_interval=heartbeat_s, grace_period=grace_s,
                                        heartbeat_stale_trial_callback=_retry_class()(max_retry=max_retry),
                                        engine_kwargs=engine)
            except Exception as exc:  # unreachable server, bad driver, bad credentials, schema race
                if attempt == 5 or not _schema_race(exc):
                    msg = mask(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
                    raise UserError(f"storage: cannot open {mask(given)}: {msg}") from None
                time.sleep(0.2 + random.random() * attempt)
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_folder(folder: Path, what: str) -> None:
    """Make `folder` and its parents, or a one-line UserError when a file is in the way."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{what}: cannot make the folder {folder}: {(exc.strerror or type(exc).__name__).lower()}"
                        + (f" ({exc.filename})" if exc.filename and str(exc.filename) != str(folder) else "")) from None


def check_file(path: Path, what: str, create: bool) -> None:
    """A storage file's path: its folder made (when `create`); a UserError when the path is a folder, or
    (not `create`) does not exist."""
    if path.is_dir():
        raise UserError(f"{what}: {path} is a folder, not a file")
    if not create and not path.is_file():
        raise UserError(f"{what}: {path} does not exist (nothing was written)")
    if create:
        make_folder(path.parent, what)


SQLITE_MAGIC = b"SQLite format 3\x00"
OPTUNA_TABLES = ("studies", "trials", "version_info")  # what a storage to read must hold
OPTUNA_ALL = OPTUNA_TABLES + ("study_directions", "study_user_attributes", "study_system_attributes",
                              "trial_user_attributes", "trial_system_attributes", "trial_params", "trial_values",
                              "trial_intermediate_values", "trial_heartbeats", "alembic_version")


def check_sqlite(path: Path, create: bool) -> None:
    """A SQLite storage file: refused in one line when it is a folder, not SQLite, or another program's SQLite
    database (none of Optuna's tables), which dse must not write into; when not `create`, also when it is
    missing, empty or lacks any of Optuna's main tables. A file another dse process is creating passes."""
    import sqlite3
    from contextlib import closing

    check_file(path, "storage", create)
    if not path.is_file() or (create and path.stat().st_size == 0):
        return
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise UserError(f"storage: cannot read {path}: {exc.strerror or exc}") from None
    if not head:
        raise UserError(f"storage: {path} is empty, not an Optuna storage (nothing was written)")
    if head != SQLITE_MAGIC:
        raise UserError(f"storage: {path} is not a SQLite database (an Optuna storage); nothing was written")
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        if create:  # busy or locked by another dse process: Optuna opens it (or says why not) below
            return
        raise UserError(f"storage: {path} is a damaged SQLite database ({exc}); nothing was written") from None
    missing = [t for t in OPTUNA_TABLES if t not in tables]
    foreign = tables and not tables & set(OPTUNA_ALL)
    if foreign or (missing and not create):
        raise UserError(f"storage: {path} is a SQLite database but not an Optuna storage (no table "
                        f"{missing[0]!r}); nothing was written")


def check_run_dir(run_dir: Path) -> None:
    """A run directory about to be resumed: a folder, and its study.db, when there is one, an Optuna storage."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run_dir: {run_dir} is a file, not a folder")
    if (run_dir / "study.db").exists():
        check_sqlite(run_dir / "study.db", create=False)


def _schema_race(exc: Exception) -> bool:
    """Did opening fail because another process was creating the same tables? (SQLite may also say 'disk I/O
    error' to the fourth of four processes that open one new file at once.)"""
    text = str(exc).lower()
    return any(k in text for k in ("unique constraint", "already exists", "duplicate key", "database is locked",
                                   "disk i/o error"))


def _driver(url: str) -> str:
    """Name the PostgreSQL driver that is installed: SQLAlchemy 2.1 reads postgresql:// as psycopg (3)."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return f"postgresql://{rest}"


def _timing(heartbeat_s: int, grace_s: int) -> tuple[int, int]:
    """Heartbeat interval and grace period, from env DSE_HEARTBEAT=interval,grace when set."""
    import os

    text = os.environ.get("DSE_HEARTBEAT", "").strip()
    if not text:
        return heartbeat_s, grace_s
    try:
        interval, grace = (int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"DSE_HEARTBEAT: {text!r} is not 'interval,grace' in whole seconds") from None
    return interval, grace


def _storage_class():
    """RDBStorage whose trial state changes are atomic on SQLite too, and whose heartbeat-stale trials carry user
    attr reason='worker died (heartbeat)', written in the same transaction that fails them."""
    import contextlib
    from datetime import timedelta

    import sqlalchemy
    from optuna.storages import RDBStorage
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    class Storage(RDBStorage):
        """Optuna's RDBStorage with one transaction per state change, which sees the state it changes.

        Optuna reads a trial's state, checks it and writes the new one; on PostgreSQL and MySQL the read locks
        the row (SELECT ... FOR UPDATE), but SQLite ignores FOR UPDATE and Python's sqlite3 begins the
        transaction only at the write, so two processes could both read WAITING and both pop one grid cell, or
        both read RUNNING and both fail a dead worker's trial and queue two retries of it (the cell then trained
        twice). On SQLite the change runs under BEGIN IMMEDIATE: the database's write lock is held from the read.
        """

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._stale: set[int] = set()  # found stale; failed next by set_trial_state_values, if still stale

        def _get_prepared_new_trial(self, study_id: int, template_trial, session):
            """A new RUNNING trial beats from the transaction that makes it (see `set_trial_state_values`)."""
            trial = super()._get_prepared_new_trial(study_id, template_trial, session)
            if self.heartbeat_interval and (template_trial is None or template_trial.state == TrialState.RUNNING):
                session.add(models.TrialHeartbeatModel(trial_id=trial.trial_id))
            return trial

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            stale = super()._get_stale_trial_ids(study_id)
            self._stale.update(stale)
            return stale

        def set_trial_state_values(self, trial_id: int, state: TrialState, values=None) -> bool:
            with self._write_lock() as session:
                if state == TrialState.RUNNING and self.heartbeat_interval:
                    self._first_beat(session, trial_id)
                if state == TrialState.FAIL and trial_id in self._stale:
                    self._stale.discard(trial_id)
                    if not self._still_stale(session, trial_id):  # it beat again, or finished: not taken over
                        return False
                    self._set_trial_attr_without_commit(session, models.TrialUserAttributeModel, trial_id,
                                                        "reason", HEARTBEAT_REASON)
                return super().set_trial_state_values(trial_id, state, values)  # the same session: one commit

        def _first_beat(self, session, trial_id: int) -> None:
            """A popped trial's first heartbeat, in the pop's transaction. Optuna beats only once the trial function
            runs, and never takes a RUNNING trial without a beat for dead: a worker killed between the pop and its
            first beat left its cell RUNNING for good, and the other grid workers waited for it for ever."""
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
            if trial.state != TrialState.WAITING:  # not ours to pop: Optuna's method below says so
                return
            beat = models.TrialHeartbeatModel.where_trial_id(trial_id, session)
            if beat is None:
                session.add(models.TrialHeartbeatModel(trial_id=trial_id))
            else:
                beat.heartbeat = session.execute(sqlalchemy.func.now()).scalar_one()

        def _still_stale(self, session, trial_id: int) -> bool:
            """Is the trial RUNNING with a heartbeat older than the grace period, read under the write lock?"""
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
            beat = models.TrialHeartbeatModel.where_trial_id(trial_id, session)
            if trial.state != TrialState.RUNNING or beat is None:
                return False
            now = session.execute(sqlalchemy.func.now()).scalar().replace(tzinfo=None)
            grace = self.grace_period if self.grace_period is not None else 2 * self.heartbeat_interval
            return now - beat.heartbeat > timedelta(seconds=grace)

        @contextlib.contextmanager
        def _write_lock(self):
            """This thread's session, in a transaction that holds SQLite's write lock from its first read; Optuna's
            own methods called inside it use the same session (scoped per thread) and commit it."""
            session = self.scoped_session()
            try:
                if self.engine.name == "sqlite":
                    session.connection().exec_driver_sql("BEGIN IMMEDIATE")
                yield session
                session.commit()  # when the body returned before Optuna's method committed
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()

    return Storage


def _retry_class():
    """Optuna's retry-on-stale callback, minus the dead trial's outcome attrs on the re-queued copy."""
    import copy

    from optuna.storages import RetryHeartbeatStaleTrialCallback

    class Retry(RetryHeartbeatStaleTrialCallback):
        """Re-queue a heartbeat-stale trial's params as WAITING, without its `status`/`reason`."""

        def __call__(self, study, trial) -> None:
            trial = copy.deepcopy(trial)
            for key in ("status", "reason"):
                trial.user_attrs.pop(key, None)
            super().__call__(study, trial)

    return Retry


def counts(storage, study_name: str) -> dict[str, int]:
    """Number of trials per state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING) in one study."""
    from collections import Counter

    study_id = storage.get_study_id_from_name(study_name)
    return dict(Counter(t.state.name for t in storage.get_all_trials(study_id, deepcopy=False)))
