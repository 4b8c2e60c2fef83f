"""ConvNeXt through the family seam: named points equal torchvision's convnext_tiny/small/base exactly in
params, within 0.5% in FLOPs, and exactly in activations (forward hooks on torchvision's own model); the
CIFAR space builds and trains a step; drop-path and layer scale are where the paper puts them."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import dse.zoo as zoo
from dse.cost import measures
from dse.graph.build import Scale
from dse.network import build
from dse.space import load

NAMES = ["convnext_tiny", "convnext_small", "convnext_base"]


def library(name: str) -> nn.Module:
    """torchvision's model on the meta device (shapes only)."""
    with torch.device("meta"):
        return getattr(torchvision.models, name)().eval()


def hooked(model: nn.Module, size: int) -> tuple[int, int]:
    """(multiply-adds, activations) of one image: FlopCounterMode / 2 and output elements of convs and linears."""
    acts = []
    hooks = [m.register_forward_hook(lambda m, i, o: acts.append(o.numel())) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, size, size, device="meta"))
    for h in hooks:
        h.remove()
    return counter.get_total_flops() // 2, sum(acts)


@pytest.mark.parametrize("name", NAMES)
def test_named_points_equal_torchvision(name):
    ours, theirs = measures(zoo.get(name)), library(name)
    assert ours.params == sum(p.numel() for p in theirs.parameters())
    flops, acts = hooked(theirs, 224)
    assert abs(ours.flops - flops) <= 0.005 * flops
    assert ours.acts == acts


def test_published_sizes():
    # Liu et al. 2022, Table 1/10: ConvNeXt-T 28M params, 4.5G FLOPs; -S 50M, 8.7G; -B 89M, 15.4G
    got = {n: measures(zoo.get(n)) for n in NAMES}
    assert [round(got[n].params / 1e6) for n in NAMES] == [29, 50, 89]
    assert [round(got[n].flops / 1e9, 1) for n in NAMES] == [4.5, 8.7, 15.4]


def test_blocks_carry_layer_scale_and_rising_drop_path():
    model = build(zoo.get("convnext_tiny").replace(image_size=32))
    scales = [m for m in model.modules() if isinstance(m, Scale)]
    assert len(scales) == 18 and all(torch.allclose(s.gamma, torch.full_like(s.gamma, 1e-6)) for s in scales)
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert len(rates) == 17 and rates[-1] == pytest.approx(0.1)  # the first block's rate is 0: no module


def test_cifar_space_trains_a_step():
    torch.manual_seed(0)
    point = load("convnext").sample(3)
    model = build(point, num_classes=10, in_chans=1, image_size=28)
    assert sum(p.numel() for p in model.parameters()) == measures(point, 28, 1, 10).params
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
