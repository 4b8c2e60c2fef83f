"""ShuffleNet V2 through the family seam: named points equal torchvision's shufflenet_v2_x0_5 ... x2_0 in params,
FLOPs and activations at 224 px (torchvision's and the paper's resolution), and compute the same function
(torchvision's weights copied in give its outputs, so split, concat and shuffle order agree); our counts equal our
built module; the space trains a step at Fashion-MNIST size; units check their fields."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import dse.zoo as zoo
from dse.cost import measures
from dse.errors import UserError
from dse.network import build
from dse.space import load

NAMES = ["shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"]
COUNTED = (nn.Conv2d, nn.Linear, nn.MaxPool2d)  # their non-global pools are max-pools; the final mean is no module


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def hooked(model: nn.Module, size: int) -> tuple[int, int, int]:
    """(params, multiply-adds, activations) of one image on the meta device: FlopCounterMode / 2, and output
    elements of every conv, linear and max-pool."""
    acts = []
    hooks = [m.register_forward_hook(lambda m, i, o: acts.append(o.numel())) for m in model.modules()
             if isinstance(m, COUNTED)]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, size, size, device="meta"))
    for h in hooks:
        h.remove()
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2, sum(acts)


@pytest.mark.parametrize("name", NAMES)
def test_named_points_equal_torchvision(name):
    with torch.device("meta"):
        theirs = getattr(torchvision.models, name)().eval()
        ours = build(zoo.get(name)).eval()
    m = measures(zoo.get(name))
    params, flops, acts = hooked(theirs, 224)
    assert m.params == params
    assert abs(m.flops - flops) <= 0.005 * flops  # in fact equal: the same convs and fc
    assert m.acts == acts
    assert (m.params, m.flops, m.acts) == hooked(ours, 224)


def test_published_sizes():
    # torchvision's weight metadata: 1,366,792 / 2,278,604 / 3,503,624 / 7,393,996 params, 0.04 / 0.145 / 0.296 /
    # 0.583 GFLOPS; Ma et al. 2018, Table 5: 41M / 146M / 299M / 591M FLOPs (counted a little differently)
    got = [measures(zoo.get(n)) for n in NAMES]
    assert [g.params for g in got] == [1_366_792, 2_278_604, 3_503_624, 7_393_996]
    assert [round(g.flops / 1e9, 3) for g in got] == [0.040, 0.145, 0.296, 0.583]
    assert all(abs(g.flops - paper) <= 0.015 * paper for g, paper in zip(got, (41e6, 146e6, 299e6, 591e6)))


def test_same_function_as_torchvision():
    """torchvision's x0.5 weights, copied into our module in order, give its outputs (split halves, branch order,
    shuffle); in eval mode at 64 px."""
    torch.manual_seed(0)
    theirs = torchvision.models.shufflenet_v2_x0_5().eval()
    for m in theirs.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, so a swapped channel would show
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    ours = build(zoo.get("shufflenet_v2_x0_5")).eval()
    source, target = list(theirs.state_dict().values()), list(ours.state_dict().values())
    assert [t.shape for t in source] == [t.shape for t in target]
    ours.load_state_dict(dict(zip(ours.state_dict(), source)))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-5, rtol=1e-4)


def test_receptive_field():
    # by hand: stem 3/2 -> 3 px, max-pool 3/2 -> 7; each stage's first unit adds 2 x its input stride, every
    # other unit 2 x the stage's stride: 15 + 3*16 = 63, 79 + 7*32 = 303, 335 + 3*64 = 527; stride 32
    m = measures(zoo.get("shufflenet_v2_x1_0"))
    assert (m.rf, m.rf_stride) == (527, 32)
    # CIFAR (stride-1 stem, no max-pool): 3; 5 + 3*4 = 17; 21 + 7*8 = 77; 85 + 3*16 = 133; stride 8
    m = measures(zoo.get("shufflenet_v2_cifar"))
    assert (m.rf, m.rf_stride) == (133, 8)


def test_space_at_fashion_mnist_size_trains_a_step():
    torch.manual_seed(0)
    point = load("shufflenet").sample(3, image_size=28, in_chans=1)
    model = build(point).train()
    m = measures(point)
    assert sum(p.numel() for p in model.parameters()) == m.params
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)


def test_se_and_kernel_5_count_like_the_built_module():
    point = zoo.get("shufflenet_v2_cifar")
    point = point.replace(attention="se", stages=tuple(replace(s, kernels=(5,), depth=2) for s in point.stages))
    with torch.device("meta"):
        model = build(point, image_size=32).eval()
    params, flops, _ = hooked(model, 32)
    m = measures(point)
    assert (m.params, m.flops) == (params, flops)
    assert sum(type(x).__name__ == "SEModule" for x in model.modules()) == 6


def test_space_gives_the_paper_points_at_imagenet_size():
    space = load("shufflenet").with_geometry(image_size=224, num_classes=1000)
    for mult, name in zip((0.5, 1.0, 1.5, 2.0), NAMES):
        values = {**space.default_values(), "width_mult": mult, "final_conv": 2048 if mult == 2.0 else 1024,
                  "depth_1": 8}
        assert space.point(values).replace(name="") == zoo.get(name).replace(name="")


def test_thinned_points_keep_even_widths():
    point = zoo.get("shufflenet_v2_x1_0").thinned(0.25)  # 116 x 0.25 = 29 -> 30
    assert [s.width for s in point.stages] == [30, 58, 116]
    assert measures(point).params > 0


@pytest.mark.parametrize("change, field", [
    (dict(width=47), "stages[0].width"),
    (dict(kernels=(3, 3)), "stages[0].kernels"),
    (dict(padding="valid"), "stages[0].padding"),
])
def test_bad_stage_fields(change, field):
    point = zoo.get("shufflenet_v2_cifar")
    with pytest.raises(UserError, match=field.replace("[", r"\[").replace("]", r"\]")):  # refused where made
        point.replace(stages=(replace(point.stages[0], **change),) + point.stages[1:])


@pytest.mark.parametrize("change, field", [(dict(attention="cbam"), "attention"), (dict(drop_path=0.1), "drop_path"),
                                           (dict(dropout=0.1), "dropout")])
def test_bad_point_fields(change, field):
    with pytest.raises(UserError, match=f"^{field}:"):
        measures(zoo.get("shufflenet_v2_cifar").replace(**change))
