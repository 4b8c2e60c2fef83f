"""Start the suite's `python -m dse.<command>` subprocesses by fork from an interpreter that has already
imported torch, Lightning, timm and dse (a zygote), instead of paying 10-20 s of imports in each.

`tests/conftest.py` puts `Popen` in place of `subprocess.Popen` in every test process. A command line of
the form `[sys.executable, "-m", <one of FORKED>, ...]` (no preexec_fn, no pass_fds) is sent to the zygote of
this test process: the zygote forks, and the child takes the caller's stdin/stdout/stderr, cwd and
environment, sets `sys.argv` as `python -m` would, removes the command's own module from `sys.modules` (as in a
fresh `python -m`, where it runs only as `__main__`) and runs it with runpy. Exit status, signals and
timeouts read as for any child: `returncode` is the exit code or minus the signal, `kill()`/`send_signal()`
reach the real process (`pid`). Everything else (other programs, `-X importtime`, rlimits through
preexec_fn, modules that must show they import no torch) starts fresh, as before.

What differs from a fresh interpreter, on purpose: the modules are already imported (an import-time error in
dse would show in the zygote, whose start fails loudly), and the child's parent is the zygote, not the test.
Variables read at import time (IMPORT_ENV) must match the zygote's; a request that differs gets its own
zygote. `DSE_TEST_SPAWN=fresh`, in the test process's or the child's environment, starts it fresh.
"""
from __future__ import annotations

import json
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

FORKED = {"dse.search", "dse.report", "dse.analyze"}
# What a zygote imports before it forks: every module of dse ("dse.*") and the libraries the commands above
# load, including the ones they load late (migrations, figure back ends, Hydra's plugins).
PRELOAD = ["torch", "torchvision", "lightning.pytorch", "timm", "optuna", "scipy.stats", "dse.*", "alembic.command",
           "alembic.migration", "alembic.script", "alembic.config", "mako.template", "sqlalchemy.dialects.sqlite",
           "sqlalchemy.dialects.postgresql", "matplotlib.pyplot", "matplotlib.backends.backend_agg",
           "matplotlib.backends.backend_pdf", "matplotlib.backends.backend_svg", "PIL.Image", "PIL.PngImagePlugin",
           "plotly.graph_objects", "plotly.io", "narwhals.stable.v1", "submitit", "hydra.compose", "hydra.initialize",
           "hydra._internal.core_plugins.basic_launcher", "hydra._internal.core_plugins.basic_sweeper",
           "hydra._internal.core_plugins.file_config_source", "omegaconf", "antlr4", "cloudpickle",
           "multiprocessing.pool", "webbrowser", "pygments"]
# Read at import, so a zygote serves only requests whose values match its own. Three more are read at import
# but set in the child as the interpreter would have (tests/zygote.py): OMP_NUM_THREADS and MKL_NUM_THREADS (torch's
# thread count) and PYTHONWARNINGS (the warning filters). Every zygote runs with HF_HUB_OFFLINE=1, as dse.search sets.
IMPORT_ENV = ("PYTHONPATH", "PYTHONHASHSEED", "CUDA_VISIBLE_DEVICES", "MPLBACKEND", "MPLCONFIGDIR",
              "PYTHONDONTWRITEBYTECODE", "HOME", "TMPDIR", "XDG_CACHE_HOME", "TORCH_HOME", "HF_HOME")
SET_IN_CHILD = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONWARNINGS")
ZYGOTE = Path(__file__).with_name("zygote.py")
_real_popen = subprocess.Popen
_zygotes: dict[tuple, "_Zygote"] = {}
_lock = threading.Lock()


class _Zygote:
    """One zygote process (started on first use) and the socket it listens on."""

    def __init__(self, env: dict):
        self.dir = tempfile.mkdtemp(prefix="dse-zygote-")
        self.path = os.path.join(self.dir, "s")
        self.proc = _real_popen([sys.executable, str(ZYGOTE), self.path, *PRELOAD], env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        self.ready = False

    def start(self, request: dict, fds: list[int]) -> tuple[socket.socket, int]:
        """Send one command; the connection (its exit status arrives on it) and the child's pid."""
        if not self.ready:  # the imports may still be running: wait for them once
            line = self.proc.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"the test zygote did not start (rc={self.proc.wait()}): {line!r}")
            self.ready = True
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(self.path)
        body = json.dumps(request).encode()
        socket.send_fds(conn, [struct.pack("!I", len(body)) + body], fds)
        pid = int(_read_line(conn))
        if pid < 0:
            conn.close()
            raise OSError(-pid, os.strerror(-pid))
        return conn, pid


def _read_line(conn: socket.socket) -> bytes:
    out = b""
    while not out.endswith(b"\n"):
        chunk = conn.recv(64)
        if not chunk:
            raise ConnectionError("the test zygote closed the connection")
        out += chunk
    return out


def _zygote(env: dict) -> _Zygote:
    """The zygote for this environment's import-time values (started now if there is none)."""
    key = tuple(env.get(k) for k in IMPORT_ENV)
    with _lock:
        z = _zygotes.get(key)
        if z is None or z.proc.poll() is not None:
            base = {k: v for k, v in os.environ.items() if k not in IMPORT_ENV + SET_IN_CHILD}
            base.update({k: v for k, v in zip(IMPORT_ENV, key) if v is not None})
            base["HF_HUB_OFFLINE"] = "1"
            z = _zygotes[key] = _Zygote(base)
        return z


def warm(env: dict | None = None) -> None:
    """Start the zygote for `env` (default: this process's) now, so that its imports overlap the first tests."""
    if os.environ.get("DSE_TEST_SPAWN") != "fresh":
        _zygote(dict(os.environ if env is None else env))


def forkable(args, kwargs: dict) -> str | None:
    """The module to fork for this Popen call, or None to start it fresh."""
    env = kwargs.get("env") or os.environ
    if "fresh" in (os.environ.get("DSE_TEST_SPAWN"), env.get("DSE_TEST_SPAWN")) or isinstance(args, (str, bytes,
                                                                                                os.PathLike)):
        return None
    args = [str(a) for a in args]
    if len(args) < 3 or args[0] != sys.executable or args[1] != "-m" or args[2] not in FORKED:
        return None
    if kwargs.get("shell") or kwargs.get("preexec_fn") or kwargs.get("pass_fds") or kwargs.get("executable"):
        return None
    return args[2]


class Popen(_real_popen):
    """subprocess.Popen whose `python -m dse.<command>` children come from the zygote (see the module doc)."""

    def __init__(self, args, *a, **kw):
        self._module = forkable(args, kw) if not a else None
        self._conn = None
        super().__init__(args, *a, **kw)

    @property
    def via_zygote(self) -> bool:
        return self._conn is not None

    def _execute_child(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env, startupinfo,
                       creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite,
                       restore_signals, gid, gids, uid, umask, start_new_session, process_group):
        if self._module is None or gid is not None or gids is not None or uid is not None or umask >= 0:
            return super()._execute_child(args, executable, preexec_fn, close_fds, pass_fds, cwd, env, startupinfo,
                                          creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite, errread,
                                          errwrite, restore_signals, gid, gids, uid, umask, start_new_session,
                                          process_group)
        env = dict(os.environ if env is None else env)
        fds = [p2cread if p2cread != -1 else 0, c2pwrite if c2pwrite != -1 else 1,
               errwrite if errwrite != -1 else 2]
        request = {"argv": [str(a) for a in args[2:]], "cwd": os.fspath(cwd) if cwd is not None else os.getcwd(),
                   "env": env, "session": bool(start_new_session),
                   "group": -1 if process_group is None else process_group}
        try:
            self._conn, self.pid = _zygote(env).start(request, fds)
        finally:
            for fd, own in ((p2cread, p2cwrite), (c2pwrite, c2pread), (errwrite, errread)):
                if fd != -1 and own != -1:
                    os.close(fd)
        self._child_created = True

    def _status(self, block: bool) -> int | None:
        if not block and not select.select([self._conn], [], [], 0)[0]:
            return None
        status = int(_read_line(self._conn))
        self._conn.close()
        return status

    def _try_wait(self, wait_flags):
        if self._conn is None:
            return super()._try_wait(wait_flags)
        status = self._status(block=not wait_flags & os.WNOHANG)
        return (0, 0) if status is None else (self.pid, status)

    def _internal_poll(self, _deadstate=None, **_ignored):
        if self._conn is None:
            return super()._internal_poll(_deadstate)
        if self.returncode is None and self._waitpid_lock.acquire(False):
            try:
                if self.returncode is None and self._conn.fileno() != -1:
                    status = self._status(block=False)
                    if status is not None:
                        self._handle_exitstatus(status)
            finally:
                self._waitpid_lock.release()
        return self.returncode


def install() -> None:
    """Put Popen in place of subprocess.Popen in this process (subprocess.run and friends use it)."""
    subprocess.Popen = Popen


def close() -> None:
    """Stop this process's zygotes (their running children go on, as any child would)."""
    for z in _zygotes.values():
        if z.proc.poll() is None:
            z.proc.stdin.close()
            z.proc.wait(timeout=30)
    _zygotes.clear()
