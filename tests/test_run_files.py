"""Damaged run directories and storage files: a missing, empty, junk or foreign study.db, a corrupt config.yaml,
a run_dir that is a file. Readers (create=False) name the file in one line and write nothing; dse.search's own
open (create=True) still makes a fresh storage but never writes into another program's SQLite file."""
from __future__ import annotations

import sqlite3

import optuna
import pytest

from dse.errors import UserError
from dse.rundir import SavedRun
from dse.storage import check_run_dir, open_storage


def listing(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*"))


def foreign(path):
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (id INTEGER)")


@pytest.mark.parametrize("make, match", [
    (lambda p: None, "study.db does not exist"),
    (lambda p: p.write_bytes(b""), "study.db is empty, not an Optuna storage"),
    (lambda p: p.write_bytes(b"not a database\n" * 50), "study.db is not a SQLite database"),
    (foreign, "study.db is a SQLite database but not an Optuna storage \\(no table 'studies'\\)"),
    (lambda p: p.mkdir(), "study.db is a folder, not a file"),
])
def test_a_reader_names_the_damaged_storage_and_writes_nothing(tmp_path, make, match):
    make(tmp_path / "study.db")
    before = listing(tmp_path)
    with pytest.raises(UserError, match=match):
        open_storage(None, tmp_path, create=False)
    assert listing(tmp_path) == before


def test_a_reader_opens_a_real_storage(tmp_path):
    optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")
    storage = open_storage(None, tmp_path, create=False)
    assert [s.study_name for s in storage.get_all_studies()] == ["s"]


def test_search_never_writes_into_another_programs_sqlite_file(tmp_path):
    foreign(tmp_path / "study.db")
    with pytest.raises(UserError, match="not an Optuna storage"):
        open_storage(None, tmp_path)
    with sqlite3.connect(tmp_path / "study.db") as db:
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["users"]


def test_search_makes_a_fresh_storage_in_an_empty_file(tmp_path):
    (tmp_path / "study.db").write_bytes(b"")
    optuna.create_study(study_name="s", storage=open_storage(None, tmp_path))
    assert (tmp_path / "study.db").stat().st_size > 0


@pytest.mark.parametrize("url, match", [
    ("sqlite:///{f}/sub/study.db", "cannot make the folder"),  # a SQLite path under a file
    ("journal:{d}", "is a folder, not a file"),  # a journal path that is a directory
    ("journal:{f}/j.log", "cannot make the folder"),
])
def test_storage_paths_of_the_wrong_kind_are_one_line(tmp_path, url, match):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match=match):
        open_storage(url.format(f=tmp_path / "afile", d=tmp_path), tmp_path / "run")


def test_a_run_dir_that_is_a_file_is_named(tmp_path):
    (tmp_path / "run").write_text("x")
    with pytest.raises(UserError, match="run directory .*run is a file, not a folder"):
        SavedRun.read(tmp_path / "run")
    with pytest.raises(UserError, match="run_dir: .*run is a file"):
        check_run_dir(tmp_path / "run")
    with pytest.raises(UserError, match="cannot make the folder"):
        open_storage(None, tmp_path / "run")


@pytest.mark.parametrize("text, match", [
    ("study: {name: [x\n", "config.yaml:2: malformed YAML"),
    ("- a\n- b\n", "config.yaml: a run's config.yaml must be a mapping of keys, got list"),
    ("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
     + "".join(f"b{i}: &b{i} [{', '.join(['*a' if i == 0 else f'*b{i - 1}'] * 10)}]\n" for i in range(6)),
     "limit 200,000"),
])
def test_a_corrupt_config_yaml_is_named(tmp_path, text, match):
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(UserError, match=match):
        SavedRun.read(tmp_path)


def test_a_table_or_calibration_reads_a_missing_storage_as_damage_only_beside_a_config(tmp_path):
    from dse.results.tables import stored_study

    assert stored_study("s", None, tmp_path / "not_run_yet") is None
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("study: {name: s}\n")
    with pytest.raises(UserError, match="config.yaml is there but study.db is not"):
        stored_study("s", None, tmp_path / "run")
    (tmp_path / "run" / "config.yaml").write_text("study: {name: [s\n")
    with pytest.raises(UserError, match="config.yaml:2: malformed YAML"):  # the line where the parser stops
        stored_study("s", None, tmp_path / "run")
