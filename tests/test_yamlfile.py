"""dse.yamlfile: every YAML file dse reads is bounded (size, nesting, nodes with aliases expanded) and refused in
one line naming the file, the line and the limit; real files pass untouched."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from dse import yamlfile
from dse.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
REAL = sorted([*ROOT.glob("spaces/*.yaml"), *ROOT.glob("studies/*.yaml"), *ROOT.glob("dse/data/*.yaml"),
               *ROOT.glob("dse/conf/**/*.yaml")])


def laughs(levels: int = 9, fan: int = 9) -> str:
    """The "billion laughs" shape: each anchor is `fan` aliases of the one before (fan**levels leaves)."""
    names = [f"l{i}" for i in range(levels + 1)]
    lines = [f"{names[0]}: &{names[0]} [{', '.join(['lol'] * fan)}]"]
    lines += [f"{b}: &{b} [{', '.join([f'*{a}'] * fan)}]" for a, b in zip(names, names[1:])]
    return "\n".join(lines) + "\n"


def refused(text, match: str) -> str:
    with pytest.raises(UserError, match=match) as info:
        yamlfile.loads(text, "f.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("f.yaml"), message
    return message


@pytest.mark.parametrize("path", REAL, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_file_reads_as_pyyaml_reads_it(path):
    assert yamlfile.read(path) == yaml.safe_load(path.read_text())


def test_limits_are_far_above_the_real_files():
    assert max(p.stat().st_size for p in REAL) * 100 < yamlfile.MAX_BYTES
    assert max(len(list(yaml.parse(p.read_text()))) for p in REAL) * 100 < yamlfile.MAX_NODES


def test_billion_laughs_is_refused_at_once_naming_the_limit():
    started = time.monotonic()
    message = refused(laughs(), "once aliases are expanded")
    assert time.monotonic() - started < 1.0
    assert f"{yamlfile.MAX_NODES:,}" in message and "f.yaml:" in message  # the line of the alias


def test_a_few_aliases_are_fine():
    assert yamlfile.loads("a: &x {b: [1, 2]}\nc: *x\n", "f.yaml") == {"a": {"b": [1, 2]}, "c": {"b": [1, 2]}}


def test_an_alias_inside_its_own_collection_is_refused():
    refused("a: &a [1, *a]\n", "cycle")


@pytest.mark.parametrize("text", ["[" * 5000 + "]" * 5000, "a:\n" + "".join(" " * i + "a:\n" for i in range(1, 100))])
def test_deep_nesting_is_refused_in_one_line(text):
    refused(text, "nested|nesting")


def test_depth_at_the_limit_reads():
    depth = yamlfile.MAX_DEPTH
    assert yamlfile.loads("[" * depth + "]" * depth, "f.yaml") is not None


def test_too_many_values_is_refused():
    refused("[" + ", ".join(["1"] * (yamlfile.MAX_NODES + 1)) + "]", "limit 200,000")


def test_a_file_over_the_size_limit_is_refused_without_reading_it_all(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# " + b"x" * (yamlfile.MAX_BYTES + 10) + b"\n")
    with pytest.raises(UserError, match=f"big.yaml.*limit {yamlfile.MAX_BYTES:,}"):
        yamlfile.read(path)


def test_invalid_utf8_names_the_file_line_and_byte(tmp_path):
    path = tmp_path / "bad.yaml"
    head = b"a: 1\nb: caf"  # 11 bytes, then a Latin-1 e-acute
    path.write_bytes(head + b"\xe9\n")
    with pytest.raises(UserError, match=rf"bad.yaml:2: not UTF-8 text \(byte {len(head)} is 0xe9\)"):
        yamlfile.read(path)


def test_a_byte_order_mark_is_fine():
    assert yamlfile.loads(b"\xef\xbb\xbfa: 1\n", "f.yaml") == {"a": 1}


@pytest.mark.parametrize("text, match", [
    ("a: [1, 2\n", "malformed YAML"),
    ("a: !!python/object/apply:os.system [ls]\n", "malformed YAML.*constructor"),
    ("a: " + "9" * 6000 + "\n", "cannot read a value"),
    ("a: *nowhere\n", "undefined alias"),
    ("a: \x01\n", "malformed YAML"),
])
def test_malformed_and_unsafe_text_is_one_line(text, match):
    refused(text, match)


def test_a_missing_file_and_a_folder_are_named(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        yamlfile.read(tmp_path / "none.yaml", "space file")
    with pytest.raises(UserError, match="is not a file"):
        yamlfile.read(tmp_path, "space file")
