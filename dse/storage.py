"""Optuna storages for dse: SQLite by default, any RDB URL (PostgreSQL for many machines), or a journal file.

Every storage URL that reaches a log, a config dump, an error or W&B goes through `mask` first.
"""
from __future__ import annotations

import re
from pathlib import Path

from dse.errors import UserError

_PASSWORD = re.compile(r"(?P<head>[a-z0-9+.-]+://[^:/@\s]+:)(?P<pw>[^@\s]*)(?P<tail>@)", re.IGNORECASE)


def mask(text: str) -> str:
    """Replace the password of every URL in `text` with ***."""
    return _PASSWORD.sub(lambda m: m.group("head") + "***" + m.group("tail"), str(text))


def default_url(run_dir: Path) -> str:
    """SQLite file inside the run directory."""
    return f"sqlite:///{Path(run_dir).resolve() / 'study.db'}"


def open_storage(url: str | None, run_dir: Path, heartbeat_s: int = 30, grace_s: int = 90, max_retry: int = 2):
    """Open (and create) the study storage with heartbeats; failed-by-heartbeat trials are retried.

    `url` may be None (SQLite in run_dir), an RDB URL (sqlite://, postgresql://, mysql://) or
    `journal:<path>` for a JournalStorage file on a shared file system.
    """
    import warnings

    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    if not url:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        url = default_url(run_dir)
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

        path = url[len("journal:"):]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    if "://" not in url:
        raise UserError(f"storage: {mask(url)!r} is not a storage URL; use sqlite:///file.db, "
                        "postgresql://user:pw@host/db or journal:/path/file.log")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        return RDBStorage(url, heartbeat_interval=heartbeat_s, grace_period=grace_s,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
                          engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else {})
    except Exception as exc:  # unreachable server, bad driver, bad credentials
        msg = mask(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        raise UserError(f"storage: cannot open {mask(url)}: {msg}") from None
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
