"""Bad input to `python -m dse.search`: one line `error: …` on stderr, exit 2, nothing in any storage."""
from __future__ import annotations

import pytest
import yaml

from search_helpers import search

CASES = {
    "unknown space": (["space=nope"], "unknown space 'nope'; valid:"),
    "unknown study": (["space=resnext", "study=nope"], "unknown study 'nope'; valid:"),
    "unknown data": (["space=resnext", "data=nope"], "unknown data 'nope'; valid:"),
    "unknown sampler": (["space=resnext", "sampler=nope"], "unknown sampler 'nope'; valid: auto, gp, grid, nsga2, random, tpe"),
    "unknown logger": (["space=resnext", "logger=nope"], "unknown logger 'nope'; valid: csv, none, wandb"),
    "malformed override": (["space=resnext", "study.n_trials=[1,"], "error:"),
    "unknown key": (["space=resnext", "nokey=1"], "nokey"),
    "bad n_trials": (["space=resnext", "study.n_trials=0"], "study.n_trials: must be an integer >= 1"),
    "unknown objective": (["space=resnext", "study.objectives=[speed]"], "unknown objective 'speed'"),
    "contradictory objectives": (["space=resnext", "study.objectives=[accuracy,error]"], "exactly one of"),
    "pruning two objectives": (["space=resnext", "study.pruner=median"], "needs a single objective"),
    "no space": (["study.name=x"], "names no space"),
    "unreachable storage": (["space=resnext", "storage=postgresql://dse:s3cret@127.0.0.1:1/dse"],
                            "dse:***@127.0.0.1:1/dse"),
    "missing dataset": (["space=resnext", "data=cifar10", "data.root=/nonexistent/dse-data"], "not found"),
    "width scale above 1": (["space=resnext", "model.width_scale=2"], "model.width_scale: must be in (0, 1]"),
    "augment not a bool": (["space=resnext", "data.augment=maybe"], "data.augment: must be true or false"),
    "seed not an integer": (["space=resnext", "seed=abc"], "seed: must be an integer >= 0, got 'abc'"),
    "max_epochs negative": (["space=resnext", "trainer.max_epochs=-1"],
                            "trainer.max_epochs: must be a positive integer, got -1"),
    "key without its group": (["space=resnext", "n_trials=5"], "unknown key 'n_trials'; did you mean 'study.n_trials'?"),
    "misspelt key": (["space=resnext", "trainer.lrr=0.1"], "did you mean 'trainer.lr'?"),
    "unknown proxy key": (["space=resnext", "+study.proxy={optim.lr: 0.1}"], "study.proxy: unknown key 'optim.lr'"),
    "bad rung score (a dotted override)": (["space=resnext", "study.pruner=moasha", "study.moasha.rung_score=val/acc"],
                                           "study.moasha.rung_score: must be one of train_loss, val_acc, got 'val/acc'"),
}


def _one_line_error(proc, expected: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_one_line_exit_2_no_storage(tmp_path, case):
    args, expected = CASES[case]
    storage = [] if any(a.startswith("storage=") for a in args) else [f"storage=sqlite:///{tmp_path}/study.db"]
    proc = search(*args, *storage, cwd=tmp_path, timeout=120)
    _one_line_error(proc, expected)
    assert not (tmp_path / "study.db").exists()
    assert not (tmp_path / "runs").exists()
    assert "s3cret" not in proc.stderr + proc.stdout


def _space_file(tmp_path, name: str, body: dict):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.mark.parametrize("body, expected", [
    ({"base": "resnet20", "params": {}}, "the space is empty"),
    ({"base": "resnet20", "params": {"depth": {"type": "int", "low": 1, "high": 3}},
      "checks": [{"expr": "depth > 5", "message": "depth {depth} too small"}]}, "checks: depth 1 too small"),
])
def test_empty_or_contradictory_space(tmp_path, body, expected):
    path = _space_file(tmp_path, "bad_space", body)
    proc = search(f"space={path}", f"storage=sqlite:///{tmp_path}/study.db", cwd=tmp_path, timeout=120)
    _one_line_error(proc, expected)
    assert not (tmp_path / "study.db").exists()


def test_study_over_another_space_is_refused(tmp_path):
    study = tmp_path / "mine.yaml"
    study.write_text(yaml.safe_dump({"name": "mine", "space": "wrn"}))
    proc = search("space=resnext", f"study={study}", cwd=tmp_path, timeout=120)
    _one_line_error(proc, "is written for space 'wrn'")
