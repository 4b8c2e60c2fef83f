"""Shared fixtures. `postgres_url`: a real PostgreSQL server on loopback for the session, with a password user.

Needs the Debian `postgresql` package (initdb, pg_ctl, psql). Without it the fixture skips with the reason,
or FAILS when env DSE_REQUIRE_POSTGRES=1 (CI sets it, and .ci/install installs the package). As root the
server runs as the `postgres` system user (initdb refuses root).

Tests marked `gpu` are skipped when torch sees no CUDA GPU ("needs a CUDA GPU: run bench/gpu_check.sh"); with
env DSE_REQUIRE_GPU=1 (bench/gpu_check.sh sets it) the run stops instead of skipping them.

Every `python -m dse.search|report|analyze` a test starts is forked from a zygote that has already imported
torch, Lightning and timm (tests/fastspawn.py); DSE_TEST_SPAWN=fresh starts each one from nothing instead.
"""
from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import fastspawn
import pytest

fastspawn.install()


def _pg_bin() -> Path | None:
    """Folder of initdb/pg_ctl/psql: the newest /usr/lib/postgresql/*/bin (Debian), else where initdb is on PATH."""
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    candidates = [Path(f) for f in reversed(folders)]
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).resolve().parent)
    return next((c for c in candidates if all((c / b).exists() for b in ("initdb", "pg_ctl", "psql"))), None)


def _free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_owner(cmd: list[str]) -> list[str]:
    """Run `cmd` as the postgres system user when we are root."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _missing(reason: str):
    """Skip, or fail when PostgreSQL is required (CI)."""
    if os.environ.get("DSE_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"DSE_REQUIRE_POSTGRES=1 but {reason}", pytrace=False)
    pytest.skip(f"{reason} (apt-get install postgresql; set DSE_REQUIRE_POSTGRES=1 to make this an error)")


@pytest.fixture(scope="session")
def postgres_url():
    """postgresql://dse:<password>@127.0.0.1:<port>/dse on a fresh server; stopped at the end of the session."""
    pg = _pg_bin()
    if pg is None:
        _missing("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _missing("psycopg2 is not installed (pip install psycopg2-binary)")
    root = Path(tempfile.mkdtemp(prefix="dse-pg-"))
    data, port = root / "data", _free_port()
    password = "pw" + secrets.token_hex(8)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")

    def run(cmd):
        done = subprocess.run(_as_owner(cmd), capture_output=True, text=True, cwd=root)
        if done.returncode:
            log = (root / "server.log").read_text()[-2000:] if (root / "server.log").exists() else ""
            pytest.fail(f"PostgreSQL: {Path(cmd[0]).name} failed: {done.stderr or done.stdout}\n{log}", pytrace=False)
    run([str(pg / "initdb"), "-D", str(data), "-U", "admin", "--auth-local=trust",
         "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"])
    run([str(pg / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
         f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", "start"])
    try:
        psql = [str(pg / "psql"), "-h", str(root), "-p", str(port), "-U", "admin", "-d", "postgres", "-c"]
        run(psql + [f"CREATE ROLE dse LOGIN CREATEDB PASSWORD '{password}'"])
        run(psql + ["CREATE DATABASE dse OWNER dse"])
        yield f"postgresql://dse:{password}@127.0.0.1:{port}/dse"
    finally:
        subprocess.run(_as_owner([str(pg / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, cwd=root)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fresh_postgres_db(postgres_url):
    """A new empty database on the session's server (same user and password); its URL."""
    import psycopg2

    name = "t" + secrets.token_hex(6)
    conn = psycopg2.connect(postgres_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    return postgres_url.rsplit("/", 1)[0] + "/" + name


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_configure(config):
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        fastspawn.warm()  # a test process (not xdist's controller): the zygote imports while the first tests run


def pytest_sessionfinish(session, exitstatus):
    fastspawn.close()


def pytest_collection_modifyitems(config, items):
    """Tests that share a module-scoped fixture of their own module run on one xdist worker (group: the module),
    so the fixture (a trained study, 171 fuzzed commands) is built once, not once per worker. Skip `gpu`-marked
    tests without CUDA, with the reason; DSE_REQUIRE_GPU=1 (bench/gpu_check.sh) fails them."""
    for item in items:
        defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
        if not item.get_closest_marker("xdist_group") and any(
                d[-1].scope == "module" and getattr(d[-1].func, "__module__", None) == item.module.__name__
                for d in defs.values()):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    if config.getoption("loadgroup", default=False):
        _name_groups(items)
    marked = [item for item in items if item.get_closest_marker("gpu")]
    if not marked:
        return
    import torch  # only when gpu tests were collected

    if torch.cuda.is_available():
        return
    if os.environ.get("DSE_REQUIRE_GPU") == "1":
        raise pytest.UsageError("DSE_REQUIRE_GPU=1 but torch sees no CUDA GPU")
    skip = pytest.mark.skip(reason="needs a CUDA GPU: run bench/gpu_check.sh")
    for item in marked:
        item.add_marker(skip)


def _name_groups(items) -> None:
    """Append '@<group>' to the node id of each xdist_group test on a pytest-xdist worker, which is how
    --dist loadgroup finds the groups. pytest-xdist 3.8 writes it to item._nodeid, which pytest 9.2 no longer reads
    (a node id is item._id now): no group was kept together, the SLURM tests included."""
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # pytest before 9.2: pytest-xdist names the groups itself
        return
    for item in items:
        names = {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")}
        if names and isinstance(getattr(item, "_id", None), NodeId) and "@" not in item.nodeid.rpartition("]")[2]:
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(sorted(names))}")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module of small forward passes: on a busy 2-core machine, spinning
    OpenMP workers made tiny passes up to 50x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _slurm_missing(reason: str):
    """Skip, or fail when SLURM is required (CI)."""
    if os.environ.get("DSE_REQUIRE_SLURM") == "1":
        pytest.fail(f"DSE_REQUIRE_SLURM=1 but {reason}", pytrace=False)
    pytest.skip(f"{reason} (apt-get install slurm-wlm munge, as root; set DSE_REQUIRE_SLURM=1 to make this an error)")


SLURM_CONF = """ClusterName=dsetest
SlurmctldHost={host}
SlurmUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={host} CPUs=4 RealMemory=8000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _munge_up() -> bool:
    """Does a munged answer on this machine (a credential made and read back)?"""
    made = subprocess.run(["munge", "-n"], capture_output=True)
    return made.returncode == 0 and subprocess.run(["unmunge"], input=made.stdout, capture_output=True).returncode == 0


def _start_munged() -> bool:
    """Start munged as the munge user unless one runs; True when this session started it."""
    if _munge_up():
        return False
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    done = subprocess.run(["runuser", "-u", "munge", "--", "munged"], capture_output=True, text=True)
    if done.returncode or not _munge_up():
        pytest.fail(f"SLURM: munged did not start: {done.stderr.strip()}", pytrace=False)
    return True


def _stop(pid_file: Path) -> None:
    """SIGTERM the daemon whose pid is in `pid_file` (when it is there)."""
    import signal

    try:
        os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
    except (OSError, ValueError, IndexError):
        pass


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real one-node SLURM (munged, slurmctld, slurmd as root, 4 CPUs) for the session: yields its slurm.conf
    path, also exported as SLURM_CONF so sbatch/squeue/scancel in this process and its children use it."""
    import time

    if not all(shutil.which(p) for p in ("slurmctld", "slurmd", "sbatch", "munged")):
        _slurm_missing("SLURM (slurmctld, slurmd, sbatch) or munge is not installed")
    if os.geteuid() != 0:
        _slurm_missing("the one-node SLURM of the tests runs its daemons as root")
    root = Path(tempfile.mkdtemp(prefix="dse-slurm-"))
    (root / "state").mkdir()
    (root / "spool").mkdir()
    conf = root / "slurm.conf"
    conf.write_text(SLURM_CONF.format(host=socket.gethostname(), root=root, ctld_port=_free_port(),
                                      d_port=_free_port()))
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    own_munged = _start_munged()
    try:
        for daemon in ("slurmctld", "slurmd"):
            done = subprocess.run([daemon, "-f", str(conf)], capture_output=True, text=True)
            if done.returncode:
                pytest.fail(f"SLURM: {daemon} failed: {done.stderr.strip()}", pytrace=False)
        deadline = time.monotonic() + 60
        while "idle" not in subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout:
            if time.monotonic() > deadline:
                log = (root / "slurmctld.log").read_text()[-2000:] if (root / "slurmctld.log").exists() else ""
                pytest.fail(f"SLURM: the node did not become idle in 60 s\n{log}", pytrace=False)
            time.sleep(0.5)
        yield conf
    finally:
        subprocess.run(["scancel", "--full", "-u", "root"], capture_output=True)
        deadline = time.monotonic() + 60  # let the jobs end before slurmd goes (its step daemons would stay)
        while time.monotonic() < deadline and subprocess.run(["squeue", "-h"], capture_output=True,
                                                             text=True).stdout.strip():
            time.sleep(1)
        for name in ("slurmd.pid", "slurmctld.pid"):
            _stop(root / name)
        if own_munged:
            _stop(Path("/run/munge/munged.pid"))
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before
        time.sleep(1)
        shutil.rmtree(root, ignore_errors=True)
