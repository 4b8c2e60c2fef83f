"""Issue 21: one way to drive every command. Each `python -m dse.<command>` answers --help (exit 0); a command
that reads a finished run works on a read-only run directory with --out DIR; an unwritable place is refused in
one line (exit 2). Real subprocesses on a real SQLite study.

A read-only directory: chmod -w, and, when the tests run as root (who may write there anyway), the command runs
in its own mount namespace with the directory bind-mounted read-only (util-linux `unshare -rm`)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from analysis_helpers import make_study
from search_helpers import FAST, env

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("search", "report", "table", "analyze", "calibrate", "inspect", "match")
REMOUNT = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"'


def command(module: str, *args: str, read_only: Path | None = None, cwd: Path = ROOT, timeout: int = 180):
    """`python -m module args…`, with `read_only` made read-only for the command; captured."""
    cmd = [sys.executable, "-m", module, *map(str, args)]
    if read_only is not None:
        for path in [read_only, *read_only.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
        if os.geteuid() == 0:
            cmd = ["unshare", "-rm", "sh", "-c", REMOUNT, "sh", str(read_only), *cmd]
    try:
        return subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    finally:
        if read_only is not None:
            for path in [read_only, *read_only.rglob("*")]:
                path.chmod(path.stat().st_mode | 0o200)


def one_line(proc, *words: str) -> None:
    """Exit 2 with one `error:` line that holds every word."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    err = proc.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)


def listing(folder: Path) -> dict:
    """{relative path: (size, mtime)} of every file under folder."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished study of 12 stored trials (real SQLite, no training)."""
    folder = tmp_path_factory.mktemp("cmd") / "study_a"
    make_study(folder)
    return folder


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_answers_help(name):
    proc = command(f"dse.{name}", "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout and f"dse.{name}" in proc.stdout and proc.stderr.strip() == "", proc.stderr


def test_report_of_a_read_only_run_writes_elsewhere(run_dir, tmp_path):
    before = listing(run_dir)
    out = tmp_path / "elsewhere"
    proc = command("dse.report", run_dir, "--out", out, read_only=run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("trials.csv", "pareto.csv", "pareto.png", "pareto.html", "best.yaml", "report.html"):
        assert (out / name).stat().st_size > 0, name
    assert listing(run_dir) == before  # nothing written into the run


def test_report_into_a_read_only_run_is_refused_in_one_line(run_dir):
    one_line(command("dse.report", run_dir, read_only=run_dir), str(run_dir), "read-only", "--out DIR")


def test_report_into_a_read_only_out_is_refused_in_one_line(run_dir, tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    one_line(command("dse.report", run_dir, "--out", out, read_only=out), "--out", str(out))


def test_analyze_of_a_read_only_run_writes_elsewhere(run_dir, tmp_path):
    out = tmp_path / "analysis"
    proc = command("dse.analyze", run_dir, "--out", out, read_only=run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "edf.csv").is_file() and not (run_dir / "analysis").exists()
    one_line(command("dse.analyze", run_dir, read_only=run_dir), "analysis", "--out DIR")


def test_search_on_a_read_only_run_dir_is_one_line(tmp_path):
    folder = tmp_path / "ro_run"
    folder.mkdir()
    proc = command("dse.search", *FAST, "space=resnext", "study.n_trials=1", f"run_dir={folder}",
                   read_only=folder, cwd=tmp_path)
    one_line(proc, "run_dir", str(folder), "read-only")
    assert list(folder.iterdir()) == []


def test_report_old_spellings_still_work(run_dir, tmp_path):
    proc = command("dse.report", f"study.name={run_dir.name}", f"run_dir={run_dir}",
                   f"storage=sqlite:///{run_dir / 'study.db'}", "--out", tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "report.html").is_file()
    one_line(command("dse.report", run_dir, "colour=red"), "unknown option 'colour'")


def test_table_takes_the_study_and_flags(tmp_path):
    proc = command("dse.table", "wrn_dropout", "--runs", tmp_path, "--out", tmp_path / "t", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "t" / "table.md").is_file()
    one_line(command("dse.table", "wrn_dropout", "--colour", "red"), "unrecognized arguments: --colour")
