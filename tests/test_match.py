"""dse.match: ResNeXt Table 2 widths, the generalised solver, study grids built from it, and user errors."""
import pytest

from dse import match, zoo
from dse.errors import UserError
from dse.results.tables import paper_table


def test_resnext_table2_widths_from_the_paper_data():
    rows = paper_table("resnext_table2")["rows"]
    cards = [r["cardinality"] for r in rows]
    found = match.solve(zoo.get("resnext50_32x4d"), "cardinality", cards, "bottleneck_width", "flops")
    assert [m.width for m in found] == [r["bottleneck_width"] for r in rows]
    assert all(abs(m.rel_error) < 0.03 for m in found)
    assert found[-1].point.cardinality == 32 and found[-1].point.bottleneck_width == 4


def test_block_scope_params_and_flops_agree_and_net_scope_differs():
    ref = zoo.get("resnext50_32x4d")
    by_params = match.solve(ref, "cardinality", [1, 2, 4, 8, 32], "bottleneck_width", "params", scope="block")
    assert [m.width for m in by_params] == [64, 40, 24, 14, 4]
    net = match.solve(ref, "cardinality", [1, 2], "bottleneck_width", "flops", scope="net")
    assert [m.width for m in net] != [64, 40]  # whole-net FLOPs is not the paper's rule


def test_wrn_depth_against_k_at_equal_params():
    ref = zoo.get("wrn_28_10")
    found = match.solve(ref, "depth", [16, 22, 28, 40], "k", "params")
    assert [m.width for m in found][2:] == [10, 8]  # WRN-28-10 itself, then WRN-40-8 (35.7M vs 36.5M)
    assert [m.point.stages[0].depth for m in found] == [2, 3, 4, 6]
    for m in found:
        assert abs(m.params - m.target) / m.target == pytest.approx(abs(m.rel_error))
        assert m.point.stages[0].width == 16 * m.width


def test_absolute_target_and_closest_width():
    ref = zoo.get("wrn_28_10")
    (m,) = match.solve(ref, "depth", [40], "k", "params=8.9M", eps=0.05)
    assert m.width == 4 and m.target == 8.9e6


@pytest.mark.parametrize("args, text", [
    (("wrn_28_10", "depthx", [16], "k", "params"), "unknown sweep 'depthx'; valid: blocks, cardinality, depth"),
    (("wrn_28_10", "depth", [16], "kk", "params"), "unknown free width 'kk'"),
    (("wrn_28_10", "depth", [17], "k", "params"), "depth 6N+4"),
    (("wrn_28_10", "depth", [16], "k", "params=1k"), "infeasible"),
    (("wrn_28_10", "depth", [16], "k", "weight"), "unknown target metric 'weight'"),
])
def test_user_errors(args, text):
    name, *rest = args
    with pytest.raises(UserError, match=pytest.importorskip("re").escape(text)):
        match.solve(zoo.get(name), *rest)


def test_cli_prints_one_line_per_value(capsys):
    rc = match.main(["resnext50_32x4d", "--sweep", "cardinality=1,2,4,8,32", "--free", "bottleneck_width",
                     "--target", "flops"])
    lines = [x for x in capsys.readouterr().out.splitlines() if not x.startswith("#")]
    assert rc == 0 and len(lines) == 5
    assert [int(x.split("bottleneck_width=")[1].split()[0]) for x in lines] == [64, 40, 24, 14, 4]
    assert all("params=" in x and "flops=" in x for x in lines)


def test_cli_user_error_exits_2(capsys):
    assert match.main(["resnext50_32x4d", "--sweep", "cardinality=1", "--free", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown free width 'nope'") and "Traceback" not in err


def test_study_grid_from_match_is_table3():
    from dse import study

    s = study.load("resnext_table3")
    cells = study.cell_points(s, None)
    assert list(cells) == [r["label"] for r in paper_table("resnext_table3")["rows"]]
    for label, point in cells.items():
        c, d = label.split()[-1].rstrip("d").split("x")
        assert (point.cardinality, point.bottleneck_width) == (int(c), int(d))
        assert point.image_size == 224 and point.num_classes == 1000
