"""The zygote of tests/fastspawn.py: import the heavy modules once, then fork one child per request.

usage: python tests/zygote.py SOCKET_PATH MODULE...: it imports each MODULE first (`pkg.*`: every module of
pkg). It prints `ready` once it listens, and exits when its stdin closes
(the test process that started it is gone). A request is a length-prefixed JSON object (argv after `-m`,
cwd, env, session, group) with three file descriptors (the child's stdin, stdout, stderr). The answer on the
same connection is the child's pid, then its raw wait status, each on a line.
"""
from __future__ import annotations

import atexit
import importlib
import json
import os
import pkgutil
import runpy
import socket
import struct
import sys
import tempfile
import threading
import traceback
import warnings
import weakref

# Not a place to import from: the children put their own working directory first, as `python -m` does.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]


def _exit_code(code) -> int:
    """The exit status of SystemExit(code), as the interpreter gives it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _child(request: dict, fds: list[int], sockets: list[socket.socket]) -> None:
    """In the forked child: take the caller's files, place and environment, run the module, exit."""
    for s in sockets:
        s.close()
    if request["session"]:
        os.setsid()
    elif request["group"] >= 0:
        os.setpgid(0, request["group"])
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in set(fds):
        if fd > 2:
            os.close(fd)
    # Temp dirs the zygote made at import (wandb's media dir, for one) are every child's: a child's exit must not
    # remove them, as a fresh process would its own. Its other exit handlers, and the child's own, still run.
    for info in list(weakref.finalize._registry.values()):
        info.atexit = False
    atexit._clear()
    for func, args, kwargs in _AT_EXIT:
        if not isinstance(getattr(func, "__self__", None), tempfile.TemporaryDirectory):
            atexit.register(func, *args, **kwargs)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    _as_at_start(request["env"])
    module, args = request["argv"][0], request["argv"][1:]
    sys.path[0:0] = [request["cwd"]]  # `python -m` puts the working directory first
    sys.modules.pop(module, None)  # a fresh `python -m` runs the module only as __main__
    sys.argv = [module, *args]
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = _exit_code(e.code)
    except BaseException:  # noqa: BLE001  (the interpreter prints it and exits 1)
        traceback.print_exc()
        code = 1
    try:
        threading._shutdown()  # as at interpreter exit: wait for non-daemon threads
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _as_at_start(env: dict) -> None:
    """What the interpreter and libgomp read from these variables at start-up, set as they would have: torch's
    thread count (OMP_NUM_THREADS, else MKL_NUM_THREADS, at most the zygote's own default) and PYTHONWARNINGS's
    filters (placed after those the imported modules added, before the interpreter's defaults)."""
    import torch

    threads = env.get("OMP_NUM_THREADS") or env.get("MKL_NUM_THREADS")
    wanted = int(threads) if threads and threads.isdigit() and int(threads) > 0 else _THREADS
    torch.set_num_threads(min(wanted, _THREADS))  # a fresh torch gives no more than its default
    for option in reversed([o for o in env.get("PYTHONWARNINGS", "").split(",") if o]):
        try:
            warnings._setoption(option)  # inserted first; move it to where the interpreter puts it
        except warnings._OptionError:
            continue
        warnings.filters.insert(_defaults_start() - 1, warnings.filters.pop(0))
    warnings._filters_mutated()


def _defaults_start() -> int:
    """Where the interpreter's own filters begin (its first: default::DeprecationWarning:__main__)."""
    for i, (action, _, category, module, _) in enumerate(warnings.filters):
        if action == "default" and category is DeprecationWarning and getattr(module, "pattern", module) == "__main__":
            return i
    return len(warnings.filters)


def _reap(conn: socket.socket, pid: int, live: set) -> None:
    _, status = os.waitpid(pid, 0)
    try:
        conn.sendall(f"{status}\n".encode())
    except OSError:
        pass
    live.discard(conn)
    conn.close()


def _watch_stdin() -> None:
    while sys.stdin.buffer.read(1 << 16):
        pass
    os._exit(0)


_THREADS = 0  # torch's thread count with no OMP_NUM_THREADS, read after the imports
_AT_EXIT: list = []  # what the preloaded modules registered with atexit, in order
_REGISTER = atexit.register


def _recording(register):
    def record(func, *args, **kwargs):
        _AT_EXIT.append((func, args, kwargs))
        return register(func, *args, **kwargs)
    return record


def main(path: str, preload: list[str]) -> None:
    atexit.register = _recording(_REGISTER)
    for name in preload:
        if name.endswith(".*"):  # a package and every module under it
            package = importlib.import_module(name[:-2])
            for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
                importlib.import_module(info.name)
        else:
            importlib.import_module(name)
    atexit.register = _REGISTER
    global _THREADS
    import torch

    _THREADS = torch.get_num_threads()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    threading.Thread(target=_watch_stdin, daemon=True).start()
    print("ready", flush=True)
    live: set = set()
    while True:
        conn, _ = listener.accept()
        data, fds, _, _ = socket.recv_fds(conn, 1 << 22, 3)
        (size,) = struct.unpack("!I", data[:4])
        while len(data) < 4 + size:
            data += conn.recv(1 << 22)
        request = json.loads(data[4:4 + size])
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as e:
            conn.sendall(f"{-e.errno}\n".encode())
            conn.close()
            continue
        if pid == 0:
            _child(request, fds, [listener, conn, *list(live)])
        for fd in fds:
            os.close(fd)
        conn.sendall(f"{pid}\n".encode())
        live.add(conn)
        threading.Thread(target=_reap, args=(conn, pid, live), daemon=True).start()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
