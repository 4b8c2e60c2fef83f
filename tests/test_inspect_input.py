"""`python -m dse.inspect` on hostile or unusual input: binary files, bad flags, a closed pipe, best.yaml."""
from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest

from dse import report, zoo
from dse.cost import complexity
from test_inspect import ROOT, inspect

ZOO = ("resnet20", "resnet56", "wrn_16_4")  # FLOPs grow, and so does accuracy below: all three on the front


def one_line_error(run: subprocess.CompletedProcess, message: str) -> None:
    """Exit 2 with a single `error:` line containing `message`."""
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    assert run.stderr.startswith("error: ") and message in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr, run.stderr


@pytest.mark.parametrize("content", [bytes(range(256)) * 4, b"\x00" * 300, b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_binary_file_is_one_line(tmp_path, content):
    path = tmp_path / "point.yaml"
    path.write_bytes(content)
    run = inspect(str(path))
    one_line_error(run, str(path))


@pytest.mark.parametrize("args, message", [
    (["resnet20", "--image-size", "abc"], "--image-size: 'abc' is not an integer"),
    (["resnet20", "--classes", "1.5"], "--classes: '1.5' is not an integer"),
    (["resnet20", "--rank", "x"], "--rank: 'x' is not an integer"),
    (["resnet20", "--nope"], "unrecognized arguments: --nope"),
    ([], "required: point"),
])
def test_bad_arguments_are_one_line_exit_2(args, message):
    one_line_error(inspect(*args), message)


@pytest.mark.parametrize("flag", [[], ["--json"]])
def test_closed_stdout_exits_quietly(flag):
    proc = subprocess.Popen([sys.executable, "-m", "dse.inspect", "resnet50", *flag], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written, as with `| head -1` on a slow start
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and err == "", err


def test_head_of_a_pipe_is_quiet():
    run = subprocess.run("set -o pipefail; for i in 1 2 3 4 5; do "
                         f"{sys.executable} -m dse.inspect resnet50 | head -1 >/dev/null || exit 9; done",
                         shell=True, executable="/bin/bash", capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0 and run.stderr == "", run.stderr


@pytest.fixture(scope="module")
def best(tmp_path_factory):
    """runs/<name>/best.yaml as dse.report writes it, for a tiny real study of three finished trials."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    run_dir.mkdir()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="tiny", directions=["maximize", "minimize"])
    for number, name in enumerate(ZOO):
        point = zoo.get(name)
        params, flops = complexity(point)
        attrs = {"status": "ok", "val_acc": 0.5 + 0.1 * number, "params": params, "flops": flops,
                 "point_id": point.id, "point": point.to_dict()}
        study.add_trial(optuna.trial.create_trial(values=[attrs["val_acc"], flops], user_attrs=attrs))
    front = report.pareto(report.rows(study), report.objectives_of(study))
    report.write_best(run_dir, study, front)
    return run_dir / "best.yaml", [r["name"] for r in front]


def test_best_yaml_inspects_the_most_accurate_by_default_and_says_so(best):
    """Issue 21: the default is the most accurate front point (it was the cheapest, silently)."""
    path, names = best
    assert names == list(ZOO)
    run = inspect(str(path), "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["name"] == names[2]  # accuracy 0.7, the highest
    assert "front point --rank 2 of 3 (the most accurate, 70.00%" in run.stderr
    assert "--cheapest or --rank N (0..2, cheapest first)" in run.stderr
    cheap = inspect(str(path), "--cheapest", "--json")
    assert json.loads(cheap.stdout)["name"] == names[0] and "(the cheapest, 50.00%" in cheap.stderr


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_best_yaml_rank_n_is_the_nth_front_point_and_its_file(best, rank):
    path, names = best
    info = json.loads(inspect(str(path), "--rank", str(rank), "--json").stdout)
    assert info["name"] == names[rank] and info["params"] == complexity(zoo.get(names[rank])).params
    alone = next((path.parent / "best").glob(f"{rank}_*.yaml"))  # best/<rank>_<id>.yaml: the same point
    assert json.loads(inspect(str(alone), "--json").stdout)["id"] == info["id"]


@pytest.mark.parametrize("rank", ["3", "-1"])
def test_best_yaml_bad_rank_names_the_valid_range(best, rank):
    path, _ = best
    one_line_error(inspect(str(path), "--rank", rank), f"--rank: {rank} is out of range; {path} has 3 point(s) "
                                                       "on its front, valid ranks 0..2")


def test_rank_needs_a_best_yaml(tmp_path):
    one_line_error(inspect("resnet20", "--rank", "0"), "only a best.yaml file has ranks")


def test_empty_front_is_one_line(tmp_path):
    path = tmp_path / "best.yaml"
    path.write_text("study: tiny\nfront: []\n")
    one_line_error(inspect(str(path)), "the front is empty")
