"""Optuna storages for dse: SQLite by default, any RDB URL (PostgreSQL for many machines), a journal file, or
Optuna's gRPC storage proxy in front of one database (`grpc://host:port`, served by `python -m dse.storage serve`).

Every storage URL that reaches a log, a config dump, an error or W&B goes through `mask` first.

    python -m dse.storage serve DATABASE_URL [--host H] [--port P]   # or the URL in env DSE_STORAGE
"""
from __future__ import annotations

import os
import random
import re
import sys
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

    `url` may be None (SQLite in run_dir), an RDB URL (sqlite://, postgresql://, mysql://),
    `journal:<path>` for a JournalStorage file on a shared file system, or `grpc://host:port` for Optuna's gRPC
    proxy (`serve`). Journals and the proxy carry no heartbeats: dse.trials.owners keeps a lease of its own on
    their trials instead. Env `DSE_HEARTBEAT=interval,grace` (seconds) overrides the timing.
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
    if url.startswith("grpc:"):
        return open_proxy(url, check=create)
    if "://" not in url:
        raise UserError(f"storage: {mask(url)!r} is not a storage URL; use sqlite:///file.db, "
                        "postgresql://user:pw@host/db, journal:/path/file.log or grpc://host:port")
    heartbeat_s, grace_s = _timing(heartbeat_s, grace_s)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return open_rdb(url, create, reached={"via": "direct", "at": mask(url)} if create else None,
                    heartbeat_interval=heartbeat_s, grace_period=grace_s,
                    heartbeat_stale_trial_callback=_retry_class()(max_retry=max_retry))


def open_rdb(given: str, create: bool = True, reached: dict | None = None, **heartbeat):
    """An RDB storage (dse's heartbeat-reason subclass) on URL `given`; `heartbeat`: RDBStorage's heartbeat
    arguments (none: no heartbeat, as behind the gRPC proxy, which cannot carry one). `reached`: how this
    process reaches the database ({"via": "direct" or "grpc", "at": where}), recorded on the studies it creates
    (REACHED); a direct one is also checked against the studies it opens (`refuse_mix`). None: neither."""
    import optuna

    url = _driver(given)
    sqlite = url.startswith("sqlite")
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        check_sqlite(Path(url[len("sqlite:///"):].split("?")[0]), create)
    engine = {"connect_args": {"timeout": 120}} if sqlite else {"pool_pre_ping": True}
    try:
        for attempt in range(6):  # processes that create a fresh storage at once race on its schema
            try:
                return _storage_class()(url, engine_kwargs=engine, reached=reached, **heartbeat)
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
    import json
    import uuid
    from datetime import timedelta

    import sqlalchemy
    from optuna.exceptions import DuplicatedStudyError
    from optuna.storages import RDBStorage
    from optuna.storages._base import DEFAULT_STUDY_NAME_PREFIX
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

        def __init__(self, *args, reached: dict | None = None, **kwargs):
            self._reached, self._checked = reached, set()  # how we reach the database; studies found reached so
            super().__init__(*args, **kwargs)
            self._stale: set[int] = set()  # found stale; failed next by set_trial_state_values, if still stale
            self._looked: dict[int, float] = {}  # study id -> time.monotonic() of the last look for stale trials
            # trial id -> {key: value}: system attrs a fresh trial of this process gets in the transaction that
            # makes it (dse.trials.owners sets it to the owner record); None: none
            self.owner_of = None
            self._owned: dict[int, dict] = {}  # trial id -> the attrs just written with it, for Optuna's cache

        def create_new_study(self, directions, study_name: str | None = None) -> int:
            """A new study that records how it is reached (REACHED), in the transaction that makes it: a worker
            that loads it a moment later always finds the record."""
            if self._reached is None:
                return super().create_new_study(directions, study_name)
            name = study_name or f"{DEFAULT_STUDY_NAME_PREFIX}{uuid.uuid4()}"
            try:
                with self._write_lock() as session:
                    study = models.StudyModel(study_name=name, directions=[
                        models.StudyDirectionModel(objective=i, direction=d) for i, d in enumerate(directions)])
                    session.add(study)
                    session.flush()  # gives the study its id
                    study_id = study.study_id
                    session.add(models.StudySystemAttributeModel(study_id=study_id, key=REACHED,
                                                                 value_json=json.dumps(self._reached)))
            except sqlalchemy.exc.IntegrityError:
                raise DuplicatedStudyError(f"study {name!r} already exists") from None
            self._checked.add(name)
            return study_id

        def get_study_id_from_name(self, study_name: str) -> int:
            """The study's id; a direct worker's first look at a study also checks how the study is reached (the
            proxy's server records `grpc` on the studies it makes and checks nothing)."""
            study_id = super().get_study_id_from_name(study_name)
            if self._reached and self._reached["via"] == "direct":
                _check_once(self, study_name, study_id)
            return study_id

        def _get_prepared_new_trial(self, study_id: int, template_trial, session):
            """A new RUNNING trial beats from the transaction that makes it (see `set_trial_state_values`); a fresh
            one also gets `owner_of`'s attrs there (no write of its own)."""
            trial = super()._get_prepared_new_trial(study_id, template_trial, session)
            if self.heartbeat_interval and (template_trial is None or template_trial.state == TrialState.RUNNING):
                session.add(models.TrialHeartbeatModel(trial_id=trial.trial_id))
            if template_trial is None and self.owner_of is not None:
                attrs = self._owned[trial.trial_id] = self.owner_of(trial.trial_id)
                session.add_all([models.TrialSystemAttributeModel(trial_id=trial.trial_id, key=k,
                                                                  value_json=json.dumps(v)) for k, v in attrs.items()])
            return trial

        def _create_new_trial(self, study_id: int, template_trial=None):
            frozen = super()._create_new_trial(study_id, template_trial)
            frozen.system_attrs.update(self._owned.pop(frozen._trial_id, {}))  # Optuna's cache holds them too
            return frozen

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            """Optuna looks before every trial; this looks at most once per heartbeat interval (a trial is stale
            only after the grace period, several intervals without a beat): one query per trial less."""
            now = time.monotonic()
            if now - self._looked.get(study_id, float("-inf")) < (self.heartbeat_interval or 0):
                return []
            self._looked[study_id] = now
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


# ----- Optuna's gRPC storage proxy: one server process in front of the database, many workers through it -----

PROXY_WAIT_S = 10.0  # how long a worker waits for the proxy to answer before it gives up
PROXY_PORT = 13000  # Optuna's default


def parse_proxy(url: str) -> tuple[str, int]:
    """(host, port) of `grpc://host:port`, or a one-line UserError."""
    from urllib.parse import urlsplit

    bad = UserError(f"storage: {mask(url)!r} is not a gRPC proxy address; use grpc://host:port "
                    "(the line that python -m dse.storage serve prints)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise bad from None
    if parts.scheme != "grpc" or not parts.hostname or port is None or parts.username or parts.password \
            or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise bad
    return (f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname), port  # IPv6 in brackets


def open_proxy(url: str, wait_s: float | None = None, check: bool = True):
    """A GrpcStorageProxy on `grpc://host:port` that has answered within `wait_s` (default PROXY_WAIT_S), or a
    one-line UserError. With `check` (a worker, not a reader), its first look at a study refuses one created by a
    direct worker (`refuse_mix`)."""
    import warnings

    import optuna

    host, port = parse_proxy(url)
    try:
        import grpc
    except ImportError:
        raise UserError("storage: grpc:// needs the grpcio package (pip install grpcio)") from None
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    proxy = _proxy_class()(host=host, port=port, check=check)
    where = f"grpc://{host}:{port}"
    wait_s = PROXY_WAIT_S if wait_s is None else wait_s
    try:
        proxy.wait_server_ready(timeout=wait_s)
        proxy.get_study_id_from_name("dse:no-such-study")  # a real call: the server is Optuna's, its database open
    except KeyError:
        return proxy
    except ConnectionError:
        proxy.close()
        raise UserError(f"storage: no gRPC storage proxy answers at {where} (waited {wait_s:g} s); start one "
                        f"with: python -m dse.storage serve DATABASE_URL --port {port}") from None
    except grpc.RpcError as exc:
        proxy.close()
        detail = mask((exc.details() or "").strip().splitlines()[0] if (exc.details() or "").strip() else "")
        raise UserError(f"storage: {where} answers but not as an Optuna storage proxy with an open database "
                        f"({exc.code().name}{': ' + detail if detail else ''})") from None
    return proxy


def _proxy_class():
    """Optuna's gRPC proxy client whose first look at a study checks how the study is reached (`refuse_mix`)."""
    from optuna.storages import GrpcStorageProxy

    class Proxy(GrpcStorageProxy):
        """GrpcStorageProxy that refuses, in one line, a study whose workers reach the database directly."""

        def __init__(self, *, host: str, port: int, check: bool = True):
            self._reached = {"via": "grpc", "at": f"grpc://{host}:{port}"} if check else None
            self._checked: set[str] = set()
            super().__init__(host=host, port=port)

        def create_new_study(self, directions, study_name: str | None = None) -> int:
            study_id = super().create_new_study(directions, study_name)  # the proxy's database records REACHED
            self._checked.add(study_name)
            return study_id

        def get_study_id_from_name(self, study_name: str) -> int:
            study_id = super().get_study_id_from_name(study_name)
            if self._reached:
                _check_once(self, study_name, study_id)
            return study_id

    return Proxy


REACHED = "dse:reached"  # study system attr: how its workers reach the database, {"via": "direct"|"grpc", "at": …}
_VIA = {"direct": "directly", "grpc": "through the gRPC proxy"}


def _check_once(storage, study_name: str, study_id: int) -> None:
    """`refuse_mix` on a worker storage's first look at a study (`storage._reached`: how it reaches the
    database; `storage._checked`: the studies already looked at)."""
    if study_name not in storage._checked:
        refuse_mix(storage.get_study_system_attrs(study_id), study_name, storage._reached)
        storage._checked.add(study_name)


def refuse_mix(attrs: dict, study_name: str, mine: dict) -> None:
    """A UserError when the study (its system attrs `attrs`) was created by a worker that reaches the database
    another way than `mine`: proxy workers claim points with marker studies, direct ones with attribute rows, so a
    mix could train a point twice. A study made before dse recorded this (no REACHED) passes."""
    theirs = attrs.get(REACHED)
    if not isinstance(theirs, dict) or theirs.get("via") not in _VIA or theirs["via"] == mine["via"]:
        return
    raise UserError(f"storage: study {study_name!r} was created by a worker that reaches its database "
                    f"{_VIA[theirs['via']]} ({theirs.get('at')}), and this one joins {_VIA[mine['via']]} "
                    f"({mine['at']}): a study's workers must all join the same way, or they claim points in two "
                    f"places and can train a point twice; use storage={theirs.get('at')} as its workers do, or "
                    "another study.name (nothing was written)")


LOST_EXIT = 75  # sysexits' EX_TEMPFAIL: the storage went away; start it again and re-run the command


def lost_line(exc: BaseException, url: str | None) -> str | None:
    """The one line for a worker whose gRPC proxy `url` stopped answering (`exc` or an exception it arose from
    is gRPC's UNAVAILABLE), else None."""
    grpc = sys.modules.get("grpc")
    if grpc is None or not str(url or "").startswith("grpc:"):
        return None
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        code = getattr(exc, "code", None)
        if isinstance(exc, grpc.RpcError) and callable(code) and code() == grpc.StatusCode.UNAVAILABLE:
            details = getattr(exc, "details", None)
            detail = (details() if callable(details) else "") or ""
            detail = detail.strip().splitlines()[0].rsplit(": ", 1)[-1] if detail.strip() else "no answer"
            return (f"storage: the gRPC storage proxy at {mask(url)} stopped answering ({mask(detail)}), so this "
                    "process stops: finished trials are kept in the database, and a trial it was running is failed "
                    "and queued again by the next dse process on this study (at once on this host, once its lease "
                    "runs out on another); start the proxy again and re-run the command")
        exc = exc.__cause__ or exc.__context__
    return None


def serve(url: str, host: str = "localhost", port: int = PROXY_PORT) -> int:
    """Run Optuna's gRPC proxy for the database `url` until stopped; prints the `storage=grpc://…` line to give
    the workers once it answers. The database is opened without heartbeats: the proxy cannot carry them."""
    import socket
    import threading
    import warnings

    import optuna

    if not url:
        raise UserError("serve: give the database URL (postgresql://user@host/db, sqlite:///file.db), "
                        "or put it in env DSE_STORAGE")
    if url.startswith(("journal:", "grpc:")) or "://" not in url:
        raise UserError(f"serve: {mask(url)!r} is not a database URL; the proxy serves an RDB storage "
                        "(postgresql://, mysql://, sqlite:///), not a journal or another proxy")
    try:
        import grpc  # noqa: F401
    except ImportError:
        raise UserError("serve: the gRPC proxy needs the grpcio package (pip install grpcio)") from None
    _check_port_free(host, port)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    shown = socket.getfqdn() if host in ("0.0.0.0", "::", "[::]", "") else host
    # Optuna's cache in front of the database; the studies made through the proxy record that they are reached so
    storage = optuna.storages.get_storage(open_rdb(url, reached={"via": "grpc", "at": f"grpc://{shown}:{port}"}))
    local = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host in ("::", "[::]") else host)

    def announce():
        while True:  # a busy machine may take long to start the server; it runs until the command ends
            try:
                optuna.storages.GrpcStorageProxy(host=local, port=port).wait_server_ready(timeout=10)
                break
            except ConnectionError:
                continue
        print(f"proxy for {mask(url)} listening on {host}:{port}; workers join with:", flush=True)
        print(f"storage=grpc://{shown}:{port}", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    try:
        optuna.storages.run_grpc_proxy_server(storage, host=host, port=port)
    except RuntimeError as exc:  # grpc could not bind
        raise UserError(f"serve: cannot listen on {host}:{port}: {mask(str(exc))}") from None
    except KeyboardInterrupt:
        print("proxy stopped", flush=True)
        return 130
    return 0


def _check_port_free(host: str, port: int) -> None:
    """A UserError when something already listens on host:port (gRPC itself would share it: SO_REUSEPORT)."""
    import socket

    if not 0 < port < 65536:
        raise UserError(f"serve: --port {port} is not a TCP port (1-65535)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UserError(f"serve: --host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        try:
            s.bind(addr)
        except OSError as exc:
            raise UserError(f"serve: cannot listen on {host}:{port}: {(exc.strerror or str(exc)).lower()}") from None


def main(argv: list[str] | None = None) -> int:
    """`python -m dse.storage serve [URL] [--host H] [--port P]`; a password-carrying URL moves to env
    DSE_STORAGE and the command runs again without it, so `ps` and the process title never show it."""
    import argparse

    command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            raise UserError(f"{message.removeprefix('argument ')} (see python -m dse.storage --help)")

    p = Parser(prog="python -m dse.storage", description="Serve one database to many dse workers through "
               "Optuna's gRPC storage proxy; they join with storage=grpc://host:port.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the proxy in front of a database")
    s.add_argument("url", nargs="?", metavar="DATABASE_URL", help="postgresql://…, mysql://… or sqlite:///… "
                   "(default: env DSE_STORAGE)")
    s.add_argument("--host", default="localhost", help="address to listen on (0.0.0.0: every interface)")
    s.add_argument("--port", type=int, default=PROXY_PORT, help=f"TCP port (default {PROXY_PORT})")
    try:
        args = p.parse_args(argv)
        rest = list(getattr(sys, "orig_argv", [])[1:])  # python's own options, -m dse.storage, the arguments
        if command_line and args.url and mask(args.url) != args.url and args.url in rest:
            rest.remove(args.url)
            os.execve(sys.executable, [sys.executable, *rest], {**os.environ, "DSE_STORAGE": args.url})
        return serve(args.url or os.environ.get("DSE_STORAGE", ""), args.host, args.port)
    except UserError as exc:
        print(f"error: {mask(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
