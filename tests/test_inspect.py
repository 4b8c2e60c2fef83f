"""`python -m dse.inspect` as a subprocess: JSON fields, a round trip through a YAML file, no torch, errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def inspect(*args: str) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "dse.inspect", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


def test_json_matches_the_published_resnext50_counts():
    run = inspect("resnext50_32x4d", "--json")
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    assert info["params"] == 25_028_904
    assert abs(info["flops"] / 4.23e9 - 1) < 0.005
    assert (info["image_size"], info["num_classes"], info["in_chans"]) == (224, 1000, 3)
    assert info["name"] == "resnext50_32x4d"
    assert [r["part"] for r in info["stages"]] == ["stem", "0", "1", "2", "3", "head"]
    assert sum(r["params"] for r in info["stages"]) == info["params"]
    assert sum(r["flops"] for r in info["stages"]) == info["flops"]
    assert info["stages"][-2]["out"] == [2048, 7, 7]


def test_wrn_28_10_has_the_papers_parameter_count():
    info = json.loads(inspect("wrn_28_10", "--json").stdout)
    assert abs(info["params"] / 36.5e6 - 1) < 0.01


def test_json_point_round_trips_through_an_edited_yaml_file(tmp_path):
    first = json.loads(inspect("wrn_40_2", "--json", "--image-size", "28", "--in-chans", "1").stdout)
    assert (first["image_size"], first["in_chans"]) == (28, 1)
    saved = tmp_path / "point.yaml"
    saved.write_text(yaml.safe_dump(first))  # the whole object: its `point` key is read back
    again = json.loads(inspect(str(saved), "--json").stdout)
    assert (again["params"], again["flops"], again["point"]) == (first["params"], first["flops"], first["point"])
    edited = dict(first["point"], num_classes=100)  # a bare point mapping, edited by hand
    saved.write_text(yaml.safe_dump(edited))
    third = json.loads(inspect(str(saved), "--json").stdout)
    assert third["num_classes"] == 100
    assert third["params"] == first["params"] + 90 * (128 + 1)  # 90 more classes on a 128-wide classifier


def test_text_report_and_geometry_flags():
    run = inspect("resnet20", "--image-size", "64", "--classes", "100")
    assert run.returncode == 0, run.stderr
    assert "64 px" in run.stdout and "100 classes" in run.stdout
    assert "64x16x16" in run.stdout  # last stage output at 64 px


def test_imports_neither_torch_nor_lightning():
    code = ("import sys, runpy; sys.argv = ['dse.inspect', 'resnet50', '--json']\n"
            "try:\n    runpy.run_module('dse.inspect', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'lightning', 'timm', 'optuna') if m in sys.modules]\n"
            "print('HEAVY', heavy, file=sys.stderr)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "HEAVY []" in run.stderr, run.stderr


@pytest.mark.parametrize("args, message", [
    (["no_such_point"], "unknown point 'no_such_point'; valid:"),
    (["wrn_28_10", "--image-size", "0"], "image_size"),
    (["{bad}.yaml"], "does not exist"),
])
def test_errors_are_one_line_with_exit_2(args, message):
    run = inspect(*args)
    assert run.returncode == 2
    assert run.stderr.startswith("error: ") and message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


def test_malformed_and_invalid_point_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [\n  {block: basic\n")
    run = inspect(str(bad))
    assert run.returncode == 2 and "malformed YAML" in run.stderr and f"{bad}:" in run.stderr
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text(yaml.safe_dump({"stages": [{"block": "basik", "depth": 2, "width": 16}]}))
    run = inspect(str(invalid))
    assert run.returncode == 2
    assert "stages[0].block: unknown value 'basik'" in run.stderr and len(run.stderr.splitlines()) == 1
