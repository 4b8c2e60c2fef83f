"""dse.space: every shipped space loads and samples deterministically; grids, Optuna suggest, errors."""
from __future__ import annotations

import random
import textwrap

import optuna
import pytest
import yaml

from dse.cost import complexity
from dse.errors import UserError
from dse.space import load, names
from dse.space.expr import Expr
from dse.errors import Infeasible
from dse.space.parse import spaces_dir

SHIPPED = ("anynet", "attention", "densenet", "inception", "mobilenet", "preact_resnet", "resnet", "resnext", "vgg",
           "wrn")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def write(tmp_path, text: str, name: str = "s"):
    """A space file from YAML text."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


WRN = """\
    description: tiny wrn
    base: wrn_16_4
    params:
      depth: {type: choice, values: [10, 16]}
      k: {type: int, low: 1, high: 2}
    derived: {n: (depth - 4) // 6}
    checks:
      - {expr: "(depth - 4) % 6 == 0", message: "depth {depth} is not of the form 6N+4"}
    set:
      stages[*].depth: n
      stages[*].width: 16 * k * 2 ** i
    """


def test_the_ten_spaces_ship_and_load():
    assert set(SHIPPED) <= set(names())
    assert (spaces_dir() / "resnext.yaml").is_file()
    for name in names():
        space = load(name)
        assert space.name == name and space.description and space.params
        assert space.constraints, f"{name} has no constraints"


@pytest.mark.parametrize("name", SHIPPED)
def test_seeded_sampling_is_deterministic_and_feasible(name):
    space = load(name)
    first = [space.sample(seed) for seed in range(5)]
    assert [p.id for p in first] == [space.sample(seed).id for seed in range(5)]
    assert len({p.id for p in first}) > 1
    for point in first:
        assert space.check(point) == []
        assert all(v <= 0 for v in space.violations(point).values())


@pytest.mark.parametrize("name", SHIPPED)
def test_geometry_overrides_reach_the_point(name):
    space = load(name)
    fmnist = space.sample(0, image_size=28, in_chans=1, num_classes=10)
    assert (fmnist.image_size, fmnist.in_chans, fmnist.num_classes) == (28, 1, 10)
    imagenet = space.with_geometry(image_size=224, num_classes=1000).sample(0)
    assert (imagenet.image_size, imagenet.num_classes) == (224, 1000)
    assert complexity(imagenet).flops > complexity(space.sample(0)).flops


def test_image_size_expressions_switch_the_stem():
    space = load("resnet")
    assert space.point().stem.stride == 1
    big = space.point(image_size=224)
    assert (big.stem.kernel, big.stem.stride, big.stem.pool) == (7, 2, "max3")
    assert space.with_geometry(image_size=224).constraints["flops"]["max"] == 2.0e9
    vgg = load("vgg")
    assert vgg.point(image_size=28).stages[4].pool == "none" and vgg.point().stages[4].pool == "max2"


def test_wrn_space_covers_table4_and_block_types():
    space = load("wrn")
    assert space.grid_names() == ["table4", "table2"]
    table4 = {(len(p.stages) and p.stages[0].depth, p.stages[0].width) for p in space.grid("table4")}
    assert (4, 160) in table4 and len(table4) == 10  # WRN-28-10: N = 4, 16 * 10
    params = sorted(complexity(p).params for p in space.grid("table4"))
    assert abs(params[-2] / 36.5e6 - 1) < 0.01  # wrn_28_10 is the second largest
    kernels = {p.stages[0].kernels for p in space.grid("table2")}
    assert kernels == {(1, 3, 1), (3, 1), (1, 3), (3, 1, 1), (3, 3), (3, 1, 3)}
    assert space.params["kernels"].choices() == [[3, 3], [3, 1, 3], [1, 3, 1], [1, 3], [3, 1], [3, 1, 1]]


def test_cartesian_grid_size_and_conditional_params():
    space = load("resnext")
    assert len(space.grid()) == 3 * 5 * 4 * 3
    attention = load("attention")
    values = attention.grid_values()
    # attn_ratio only where attention uses it (eca/none: one cell each), cardinality only for bottlenecks
    per_block = 4 * 3 + 2  # se, cbam, sk, splat x 3 ratios + none + eca
    assert len(values) == per_block * (1 + 4) * 2
    assert all(v["attn_ratio"] is None for v in values if v["attention"] in ("none", "eca"))
    assert all(v["cardinality"] is None for v in values if v["block"] == "basic")


def test_per_stage_params_expand_and_reach_their_stage():
    space = load("anynet")
    assert [n for n in space.params if n.startswith("depth_")] == ["depth_0", "depth_1", "depth_2", "depth_3"]
    assert space.params["width_2"].group == "width" and space.params["width_2"].stage == 2
    point = space.point({"depth_0": 1, "depth_3": 4, "width_0": 24, "width_3": 96, "block": "basic"})
    assert [s.depth for s in point.stages][::3] == [1, 4] and point.stages[3].width == 96


def test_suggest_with_a_real_optuna_trial():
    space = load("attention")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        point = space.suggest(trial, image_size=28, in_chans=1)
        assert point.image_size == 28 and point.attention == trial.params["attention"]
        assert ("attn_ratio" in trial.params) == (trial.params["attention"] not in ("none", "eca"))
        assert space.point(trial.params, image_size=28, in_chans=1) == point  # trial.params rebuild the point
        study.tell(trial, complexity(point).flops)
        seen.add(point.id)
    assert len(seen) > 3
    wrn = load("wrn")
    trial = optuna.create_study().ask()
    point = wrn.suggest(trial)  # list-valued choices are stored as JSON labels
    assert isinstance(trial.params["kernels"], str)
    assert list(point.stages[0].kernels) == wrn.params["kernels"].decode(trial.params["kernels"])


def test_sample_with_values_and_user_constraints():
    space = load("resnext")
    point, values = space.sample_with_values(3)
    assert space.point(values) == point
    tight = space.with_constraints(flops={"max": 2e7})
    assert all(complexity(tight.sample(s)).flops <= 2e7 for s in range(5))
    assert tight.check(space.point({"depth": 29, "width": 128, "cardinality": 16, "bottleneck_width": 8}))


def test_expressions_are_safe():
    assert Expr("max(2, (depth - 4) // 6) if depth > 4 else 0")({"depth": 28}) == 4
    assert Expr("scale([[8, 16]], 0.5)")({}) == [[4, 8]]
    for text in ("__import__('os')", "x.__class__", "[y for y in x]", "lambda: 1", "open('f')"):
        with pytest.raises(UserError):
            Expr(text)({"x": 1})
    with pytest.raises(UserError, match="exponent"):
        Expr("2 ** 100000")({})


@pytest.mark.parametrize("patch, message", [
    ("widht: 3", "unknown key 'widht'; valid: description, base, geometry"),
    ("params: {}", "the space is empty"),
    ("params: {k: {type: integer, low: 1, high: 2}}", "unknown param type 'integer'; valid: int, float, log, choice"),
    ("params: {k: {type: int, low: 3, high: 2}}", "low 3 is above high 2"),
    ("params: {k: {type: choice, values: []}}", "needs a non-empty list of choices"),
    ("params: {k: {type: int, low: 1, high: 2, stepp: 1}}", "unknown key 'stepp' for type int; valid: type, low"),
    ("params: {k: {type: log, low: 0, high: 2}}", "log scale needs low > 0"),
    ("params: {k: {type: int, low: 1, high: 4, step: 2}}", "is not a multiple of step 2"),
    ("set: {\"stages[*].widht\": 3}", "'widht' is not a Stage field; valid: block, depth, width"),
    ("set: {\"stages[7].width\": 3}", "stage 7 does not exist; the base point has 3 stages"),
    ("set: {colour: 3}", "'colour' is not a Point field"),
    ("set: {\"stages[*].width\": 16 * kk}", "unknown name 'kk'"),
    ("set: {\"stages[*].width\": open(k)}", "only plain calls of"),
    ("params: {depth: {type: choice, values: [10, 16, 20]}, k: 1}", "depth 20 is not of the form 6N+4"),
    ("params: {depth: [16], k: {type: choice, values: [1, 2]}}\nset: {\"stages[*].width\": 8 * k - 8}",
     "invalid point (stages[0].width: must be > 0"),
    ("constraints: {flops: {max: 1000}}", "constraints cannot be met"),
    ("constraints: {latency: {max: 1}}", "unknown key 'latency'; valid: flops, params"),
    ("constraints: {flops: {min: 5.0e+9, max: 1.0e+9}}", "min 5e+09 is above max 1e+09"),
    ("base: wrn_99_1", "base: unknown point 'wrn_99_1'; valid:"),
    ("grid: [{depth: 16, kay: 1}]", "unknown param 'kay'"),
    ("grid: [{depth: 16, k: 7}]", "outside [1, 2]"),
    ("params: {k: {type: int, low: 1, high: 2, when: \"depth > 1\"}}", "unknown name 'depth'"),
])
def test_space_file_errors_are_one_line_user_errors(tmp_path, patch, message):
    data = yaml.safe_load(textwrap.dedent(WRN))
    data.update(yaml.safe_load(patch))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(UserError) as info:
        load(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_the_base_file_loads(tmp_path):
    space = load(write(tmp_path, WRN))
    assert len(space.grid()) == 2 and space.params["k"].choices() == [1, 2]
    unchecked = load(write(tmp_path, WRN.replace("[10, 16]", "[12, 16]"), "t"), validate=False)
    with pytest.raises(Infeasible, match="depth 12 is not of the form 6N\\+4"):
        unchecked.point({"depth": 12})


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "description: x\nparams:\n  k: {type: int, low: 1\n")
    with pytest.raises(UserError, match=r"s\.yaml:\d+: malformed YAML"):
        load(path)


def test_unknown_space_name_lists_the_valid_ones():
    with pytest.raises(UserError, match="unknown space 'resnxt'; valid: anynet, attention"):
        load("resnxt")


def test_random_values_stay_in_their_ranges():
    space = load("anynet")
    rng = random.Random(5)
    for _ in range(200):
        values = space.sample_values(rng)
        for name, p in space.params.items():
            v = values[name]
            if v is None:
                continue
            if p.type == "int":
                assert p.low <= v <= p.high and (v - p.low) % (p.step or 1) == 0
            elif p.type == "choice":
                assert v in p.values
