"""Hostile and broken files, generated from a seed, fed to every command that reads files (dse.search, dse.inspect,
dse.match, dse.table, dse.calibrate, dse.report, dse.analyze), each in a subprocess under a memory limit: every one
ends with exit 2, exactly one `error:` line on stderr, no traceback, in under 5 s of CPU (30 s of wall time: a
hang) and 500 MB.

The kinds of issue 20 each have cases: "billion laughs" aliases in a space's choices and constraints, a study's
description, a point's name; 10 MB files; invalid UTF-8; deep nesting; huge counts (a stage depth of 10^8,
per_stage 10^8, 10^9 seeds); damaged run directories (corrupt config.yaml, a missing, empty, junk or foreign
study.db, an empty trials.csv); paths of the wrong kind. The cases run two at a time (CI has 2 cores).
DSE_FUZZ_SEED picks another seed. The default run takes the cases that together exercise every kind, command and
mutation (`representative`); `pytest -m sweep` runs the rest; only the collected cases' commands are started.
"""
from __future__ import annotations

import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
import yaml

from dse import zoo
from dse.cost import complexity

ROOT = Path(__file__).resolve().parents[1]
SEED = int(os.environ.get("DSE_FUZZ_SEED", "20"))
PER_KIND = 40  # at least this many files of each kind (space, study, point)
# The bounds held: CPU seconds (user + sys of the child: wall time on a shared 2-core machine measures the
# neighbours too), wall seconds (a hang: the child is killed then), peak RSS; the address-space cap (RLIMIT_AS)
# under which a blow-up fails instead of taking the machine.
CPU_S, WALL_S, RSS_MB, LIMIT_AS = 5.0, 30.0, 500, 2 << 30
SPACE = yaml.safe_load((ROOT / "spaces" / "resnet.yaml").read_text())
STUDY = {"name": "fuzz", "space": "resnet", "n_trials": 2, "description": "a study",
         "objectives": ["accuracy", "flops"]}
TABLE_STUDY = yaml.safe_load((ROOT / "studies" / "wrn_table4.yaml").read_text())
POINT = zoo.get("resnet20").to_dict()
HOLE = "__HOLE__"  # where a hostile YAML fragment goes into a dumped document


# ----- hostile fragments -----
def laughs(rng: random.Random) -> str:
    """Aliases of aliases ("billion laughs"): fan**levels leaves from a few hundred bytes."""
    fan, levels = rng.randint(6, 10), rng.randint(7, 10)
    parts = [f"&a0 [{', '.join(['lol'] * fan)}]"]
    parts += [f"&a{i} [{', '.join([f'*a{i - 1}'] * fan)}]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


def deep(rng: random.Random) -> str:
    n = rng.choice([70, 500, 5000, 50000])
    return "[" * n + "]" * n


def many(rng: random.Random) -> str:
    """More values than any file may hold (a list under the size limit)."""
    return "[" + ",".join(["1"] * rng.randint(210_000, 400_000)) + "]"


def big_int(rng: random.Random) -> str:
    return "9" * rng.randint(5000, 20000)


FRAGMENTS = {"laughs": laughs, "deep": deep, "many": many, "bigint": big_int,
             "tag": lambda rng: "!!python/object/apply:os.system ['echo pwned']",
             "undefined": lambda rng: "*nowhere", "cycle": lambda rng: "&c [1, *c]",
             "nan": lambda rng: rng.choice([".nan", ".inf", "-.inf"])}


def with_fragment(doc: dict, path: list, fragment: str) -> bytes:
    """The document dumped with the value at `path` replaced by a raw YAML fragment."""
    doc = yaml.safe_load(yaml.safe_dump(doc))
    holder = doc
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = HOLE
    return yaml.safe_dump(doc, sort_keys=False, width=10 ** 9).replace(HOLE, fragment, 1).encode()


def whole_file(rng: random.Random, doc: dict) -> tuple[bytes, str]:
    """A file broken as a whole (10 MB, invalid UTF-8, binary, empty, not a mapping, bad indentation), and which."""
    text = yaml.safe_dump(doc, sort_keys=False).encode()
    kind = rng.choice(["10mb", "utf8", "binary", "empty", "list", "scalar", "nul", "indent"])
    if kind == "10mb":
        return text + b"# " + b"x" * (10 << 20) + b"\n", kind
    if kind == "utf8":
        at = rng.randrange(len(text))
        return text[:at] + rng.choice([b"\xff", b"\xc3(", b"\xe9", b"\xed\xa0\x80"]) + text[at:], kind
    if kind == "binary":
        return rng.randbytes(rng.randint(1, 4096)), kind
    if kind == "nul":
        return b"\x00" * rng.randint(1, 300), kind
    if kind == "indent":
        return text.replace(b"\n", b"\n   ", 3), kind
    return {"empty": b"", "list": b"- a\n- b\n", "scalar": b"just words\n"}[kind], kind


def wrong_type(rng: random.Random) -> str:
    """A value of the wrong type for every spot it is put in (a mapping, a nested list, or a word)."""
    return rng.choice(["{a: 1}", "[1, [2]]", "zzz-not-valid"])


# ----- cases: (id, argv, files {relative path: bytes}, how: the mutations that made it) -----
def hostile(rng: random.Random, i: int, base: str, spots: list, counts: list, typed: list,
            whole: str | None = None) -> tuple[bytes, tuple]:
    """Case i of a kind, in turn: a hostile fragment at a spot, a broken whole file (of `whole`, else `base`), a
    huge count, a value of the wrong type at one of `typed`; and how it was made (its mutation and generator)."""
    pick = i % 4
    if pick == 0:
        spot, name = rng.choice(spots), rng.choice(list(FRAGMENTS))
        return with_fragment(base, spot, FRAGMENTS[name](rng)), ("fragment", f"fragment:{name}")
    if pick == 1:
        body, kind = whole_file(rng, whole or base)
        return body, ("whole", f"whole:{kind}")
    if pick == 2:
        path, value = rng.choice(counts)
        return with_fragment(base, path, value), ("count", f"count:{counts.index((path, value))}")
    spot, value = rng.choice(typed), wrong_type(rng)
    return with_fragment(base, spot, value), ("type", f"type:{value}")


def made(kind: str, how: tuple) -> tuple:
    """A hostile case's features: its kind's mutation, the generator, and a count's spot within its kind."""
    mutation, generator = how
    return (f"{kind}:{mutation}", f"{kind}:{generator}" if mutation == "count" else generator)


def space_cases(rng: random.Random) -> list:
    """Space files through dse.search; `seed=-1` makes a file that happens to be valid stop before training."""
    spots = [["params", "depth", "values"], ["constraints", "flops", "max"], ["description"], ["checks", 0, "expr"],
             ["set", "stages[*].depth"], ["params", "width"], ["derived", "n"]]
    counts = [(["params", "width", "per_stage"], "100000000"), (["params", "depth", "values"], str(list(range(5000)))),
              (["params", "depth"], "{type: int, low: 1, high: 1.0e+300}"), (["set", "stages[*].depth"], "'10**8'"),
              (["set", "stages[*].width"], "100000000"), (["params", "depth", "values"], "[100000000]")]
    out = []
    for i in range(PER_KIND):
        body, how = hostile(rng, i, SPACE, spots, counts, spots[4:])
        out.append((f"space-{i}", ["dse.search", "space={d}/space.yaml", "study=default", "seed=-1"],
                    {"space.yaml": body}, made("space", how)))
    return out


def study_cases(rng: random.Random) -> list:
    """Study files through dse.search, dse.table and dse.calibrate."""
    spots = [["description"], ["name"], ["objectives"], ["n_trials"], ["seeds"], ["grid"], ["constraints"]]
    counts = [(["seeds"], "1000000000"), (["n_trials"], "1000000000000"), (["trials_per_timeout"], "10000000000"),
              (["timeout"], ".nan"), (["grid"], "[" + ", ".join("{label: c%d, point: resnet20}" % j
                                                               for j in range(10_001)) + "]")]
    out = []
    for i in range(PER_KIND):
        pick = i % 4
        command = ["dse.search", "study={d}/study.yaml", "space=resnet", "seed=-1"]
        body, how = hostile(rng, i, STUDY, spots, counts, spots[2:], whole=TABLE_STUDY)
        if pick == 0 and i % 8 == 0:
            command = ["dse.calibrate", "study={d}/study.yaml", "--budget", "trainer.max_epochs=1", "--dry-run"]
        elif pick == 1:
            command = ["dse.table", "{d}/study.yaml", "--runs", "{d}/runs"]
        out.append((f"study-{i}", command, {"study.yaml": body}, made("study", how)))
    return out


def point_cases(rng: random.Random) -> list:
    """Point files (and best.yaml) through dse.inspect and dse.match."""
    spots = [["name"], ["stages"], ["stages", 0, "depth"], ["stages", 1, "kernels"], ["head"], ["act"], ["stem"]]
    counts = [(["stages", 0, "depth"], "100000000"), (["stages", 2, "width"], "1000000000000"),
              (["stages", 0, "kernels"], str([3] * 1000)), (["num_classes"], "10000000000"),
              (["stages"], "[" + ", ".join(["{block: basic, depth: 1, width: 8}"] * 5000) + "]"),
              (["head", "hidden"], str([8] * 100)), (["image_size"], "1000000000")]
    out = []
    for i in range(PER_KIND):
        command = ["dse.inspect", "{d}/point.yaml"] if i % 5 else \
            ["dse.match", "{d}/point.yaml", "--sweep", "depth=14,20", "--free", "k"]
        body, how = hostile(rng, i, POINT, spots, counts, spots[1:])
        out.append((f"point-{i}", command, {"point.yaml": body}, made("point", how)))
    best = {"study": "s", "front": [{"rank": 0, "point": POINT}]}
    for i in range(10):
        name = rng.choice(["laughs", "deep", "many", "cycle"])
        fragment = FRAGMENTS[name](rng)
        body = with_fragment(best, rng.choice([["front"], ["front", 0, "point"], ["study"]]), fragment)
        out.append((f"best-{i}", ["dse.inspect", "{d}/best.yaml"], {"best.yaml": body}, (f"fragment:{name}",)))
    return out


def foreign_db() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        with sqlite3.connect(Path(tmp) / "x.db") as db:
            db.execute("CREATE TABLE users (id INTEGER)")
        return (Path(tmp) / "x.db").read_bytes()


DAMAGE = {  # what is done to a copy of a good run directory
    "config-malformed": {"config.yaml": b"study: {name: [good\n"},
    "config-laughs": {"config.yaml": b"study: " + laughs(random.Random(1)).encode() + b"\n"},
    "config-list": {"config.yaml": b"- 1\n- 2\n"},
    "config-utf8": {"config.yaml": b"study: {name: caf\xe9}\n"},
    "db-missing": {"study.db": None},
    "db-empty": {"study.db": b""},
    "db-junk": {"study.db": b"not a database\n" * 100},
    "db-foreign": {"study.db": "foreign"},
    "db-folder": {"study.db": "folder"},
    "csv-empty-no-db": {"trials.csv": b"", "study.db": None},
}


def run_cases() -> list:
    """Damaged run directories through dse.report, dse.analyze, dse.table and dse.calibrate."""
    out = []
    for name in DAMAGE:
        out.append((f"run-{name}-report", ["dse.report", "{d}/runs/wrn_table4"], {"@run": name}, (name,)))
        out.append((f"run-{name}-analyze", ["dse.analyze", "{d}/runs/wrn_table4"], {"@run": name}, (name,)))
        out.append((f"run-{name}-table", ["dse.table", "wrn_table4", "--runs", "{d}/runs"], {"@run": name},
                    (name,)))
    for name in ("db-junk", "db-foreign", "db-empty"):
        out.append((f"run-{name}-calibrate", ["dse.calibrate", "study={d}/tiny.yaml", "--budget",
                                              "trainer.max_epochs=1", "--dry-run"], {"@budget": name}, (name,)))
    return out


def path_cases() -> list:
    """Paths of the wrong kind on the command line."""
    s = ["dse.search", "space=resnet"]
    cases = [("path-run_dir-file", [*s, "run_dir={d}/afile"], {"afile": b"x"}),
             ("path-sqlite-under-file", [*s, "storage=sqlite:///{d}/afile/sub/study.db"], {"afile": b"x"}),
             ("path-journal-folder", [*s, "storage=journal:{d}/adir"], {"adir/keep": b""}),
             ("path-space-folder", ["dse.search", "space={d}/adir.yaml"], {"adir.yaml/keep": b""}),
             ("path-threads-0", [*s, "trainer.threads=0"], {}),
             ("path-plus-key", [*s, "+foo=bar"], {}),
             ("path-report-file", ["dse.report", "{d}/afile"], {"afile": b"x"}),
             ("path-inspect-folder", ["dse.inspect", "{d}/adir.yaml"], {"adir.yaml/keep": b""})]
    return [(name, argv, files, (name,)) for name, argv, files in cases]  # each wrong path is its own check


CASES = [*space_cases(random.Random(SEED)), *study_cases(random.Random(SEED + 1)),
         *point_cases(random.Random(SEED + 2)), *run_cases(), *path_cases()]


def features(case: tuple) -> set[str]:
    """What a case exercises: its kind, its command, and how it was made (see `made`, the DAMAGE, the path)."""
    name, argv, _, how = case
    return {f"kind:{name.split('-')[0]}", f"command:{argv[0]}", *how}


def representative(cases: list) -> set[str]:
    """The default run's cases: again and again the case that exercises the most things no chosen case does yet
    (the earlier case on a tie), until every kind, command, kind's mutation, fragment generator, whole-file break,
    count at each spot of each kind, wrong type, run damage and wrong path appears at least once. The rest of the
    cases (the same tests, the same checks) run under `-m sweep`."""
    seen, keep, left = set(), set(), set().union(*map(features, cases))
    while left - seen:
        case = max(cases, key=lambda c: len(features(c) - seen))  # max() keeps the first of equals
        keep.add(case[0])
        seen |= features(case)
    return keep


DEFAULT = representative(CASES)


def param(name: str):
    return pytest.param(name, marks=() if name in DEFAULT else pytest.mark.sweep)


# ----- running them -----
def good_run(folder: Path) -> None:
    """A finished run directory of study wrn_table4: a real SQLite storage with three trained trials."""
    folder.mkdir(parents=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="wrn_table4", directions=["maximize", "minimize"],
                                storage=f"sqlite:///{folder / 'study.db'}")
    for number, name in enumerate(("resnet20", "resnet56", "wrn_16_4")):
        point = zoo.get(name)
        params, flops = complexity(point)
        attrs = {"status": "ok", "val_acc": 0.5 + 0.1 * number, "params": params, "flops": flops,
                 "point_id": point.id, "point": point.to_dict()}
        study.add_trial(optuna.trial.create_trial(values=[attrs["val_acc"], flops], user_attrs=attrs))
    (folder / "config.yaml").write_text("study: {name: wrn_table4}\nspace: {name: wrn}\n")


def damage(folder: Path, name: str) -> None:
    for file, body in DAMAGE[name].items():
        path = folder / file
        if path.is_file():
            path.unlink()
        if body == "foreign":
            path.write_bytes(foreign_db())
        elif body == "folder":
            path.mkdir()
        elif body is not None:
            path.write_bytes(body)


def materialize(case: tuple, base: Path, good: Path) -> tuple[Path, list[str]]:
    """The case's files in a folder of its own, and its command line."""
    name, argv, files, _ = case
    d = base / name
    d.mkdir()
    for rel, body in files.items():
        if rel == "@run":
            shutil.copytree(good, d / "runs" / "wrn_table4")
            damage(d / "runs" / "wrn_table4", body)
        elif rel == "@budget":
            (d / "tiny.yaml").write_text(yaml.safe_dump({**TABLE_STUDY, "name": "tiny", "proxy": None}))
            budget = d / "runs" / "calibrate" / "tiny" / "trainer.max_epochs-1"
            shutil.copytree(good, budget)
            damage(budget, body)
        else:
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_bytes(body)
    return d, ["-m", *(a.format(d=d) for a in argv)]


def limit_memory() -> None:
    """preexec_fn: cap the address space, so that a blow-up fails instead of taking the machine."""
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))


# The command is started by a small fresh Python with posix_spawn, which reports the command's own rusage: a child
# forked from pytest itself would count pytest's resident pages in its peak RSS until it execs.
SPAWN = ("import os, sys; pid = os.posix_spawn(sys.executable, [sys.executable, *sys.argv[1:]], os.environ); "
         "_, status, use = os.wait4(pid, 0); "
         "print(use.ru_maxrss, use.ru_utime + use.ru_stime, file=open(os.environ['DSE_USAGE'], 'w')); "
         "sys.exit(os.waitstatus_to_exitcode(status) % 256)")


def run(d: Path, command: list[str], limit=limit_memory) -> dict:
    """Run `python -m ...` in `d`: its exit status, stderr, wall and CPU seconds and peak RSS in MB."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "WANDB_MODE": "disabled", "DSE_USAGE": str(d / ".usage")}
    with open(d / ".stderr", "w+b") as err:
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", SPAWN, *command], cwd=d, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, env=env, preexec_fn=limit,
                                start_new_session=True)
        try:
            proc.wait(timeout=WALL_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        wall = time.monotonic() - started
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    rss_kb, cpu = (d / ".usage").read_text().split() if (d / ".usage").is_file() else (1e9, 1e9)
    return {"rc": proc.returncode, "stderr": stderr, "wall": wall, "cpu": float(cpu), "rss_mb": float(rss_kb) / 1024}


class Outcomes(dict):
    """Outcomes by case name; a case not run up front (not among the collected tests) runs when first asked for."""

    def __init__(self, base: Path):
        super().__init__()
        self.base = base

    def run_all(self, names: list[str]) -> None:
        """Run these cases two at a time (CI has 2 cores), each in a fresh interpreter, and keep their outcomes."""
        by_name = {case[0]: case for case in CASES}
        jobs = {name: materialize(by_name[name], self.base, self.base / "good") for name in names}
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {name: pool.submit(run, d, command) for name, (d, command) in jobs.items()}
            results = {name: f.result() for name, f in futures.items()}
        for name, (d, _) in jobs.items():
            results[name]["files_after"] = sorted(p.name for p in d.rglob("*") if p.name not in (".stderr", ".usage"))
            results[name]["dir"] = d
        self.update(results)

    def __missing__(self, name: str) -> dict:
        self.run_all([name])
        return self[name]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, request) -> dict:
    """The cases whose tests were collected (the default run's, or with `-m sweep` the rest), run up front."""
    base = tmp_path_factory.mktemp("fuzz")
    good_run(base / "good")
    names = {item.callspec.params["name"] for item in request.session.items
             if getattr(item, "module", None) is request.module and hasattr(item, "callspec")}
    results = Outcomes(base)
    started = time.monotonic()
    results.run_all([case[0] for case in CASES if case[0] in names])
    slowest = sorted(results, key=lambda n: -results[n]["cpu"])[:5]
    print(f"\n{len(results)} of {len(CASES)} fuzz cases in {time.monotonic() - started:.1f} s; most CPU: "
          + ", ".join(f"{n} {results[n]['cpu']:.1f} s ({results[n]['wall']:.1f} s wall)" for n in slowest)
          + f"; largest: {max(r['rss_mb'] for r in results.values()):.0f} MB")
    return results


def test_every_kind_has_enough_cases():
    kinds = [case[0].split("-")[0] for case in CASES]
    assert min(kinds.count(k) for k in ("space", "study", "point")) >= PER_KIND
    commands = {case[1][0] for case in CASES}
    assert commands == {"dse.search", "dse.inspect", "dse.match", "dse.table", "dse.calibrate", "dse.report",
                        "dse.analyze"}


def test_the_default_cases_cover_every_kind_command_and_mutation():
    kept = [case for case in CASES if case[0] in DEFAULT]
    assert set().union(*map(features, kept)) == set().union(*map(features, CASES))
    assert {f"kind:{k}" for k in ("space", "study", "point", "best", "run", "path")} | {
        f"fragment:{f}" for f in FRAGMENTS} | {f"{k}:{m}" for k in ("space", "study", "point")
                                               for m in ("fragment", "whole", "count", "type")} | set(DAMAGE) \
        <= set().union(*map(features, kept))
    assert len(CASES) == 171 and len(kept) < len(CASES) / 2  # README: 171 cases; the rest run under -m sweep


@pytest.mark.parametrize("name", [param(case[0]) for case in CASES])
def test_a_hostile_file_is_one_line_exit_2_fast_and_small(outcomes, name):
    out = outcomes[name]
    lines = out["stderr"].strip().splitlines()
    assert out["rc"] == 2, (out["rc"], out["stderr"][-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), out["stderr"][-2000:]
    assert "Traceback" not in out["stderr"]
    assert out["cpu"] < CPU_S and out["wall"] < WALL_S, f"{out['cpu']:.1f} s CPU, {out['wall']:.1f} s wall: {lines}"
    assert out["rss_mb"] < RSS_MB, f"{out['rss_mb']:.0f} MB: {lines}"


@pytest.mark.parametrize("name", [param(case[0]) for case in CASES if case[0].startswith("run-")])
def test_nothing_is_written_into_a_damaged_run(outcomes, name):
    before = {"runs", "wrn_table4", "study.db", "config.yaml", "trials.csv", "tiny.yaml", "calibrate", "tiny",
              "trainer.max_epochs-1"}
    assert set(outcomes[name]["files_after"]) <= before, outcomes[name]["files_after"]
