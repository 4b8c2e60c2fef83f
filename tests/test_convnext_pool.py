"""A ConvNeXt stage's `pool` is part of its network: Point.vanishes counts it (the image-size check), so the
family must build it and the count interpreter must see it. Before, dse.families.convnext left it out: a pooled
and an unpooled ConvNeXt point were one network under two ids, and the size check refused image sizes the
built network could take."""
from __future__ import annotations

import pytest
import torch

from dse import zoo
from dse.errors import UserError
from dse.families import net
from dse.graph.count import features
from dse.network import build


def _tiny(size: int, pool: str):
    """convnext_tiny at `size` px with stage 0's pool set (stem: 4 x 4 / 4 patchify; stages 1-3 stride 2)."""
    d = zoo.get("convnext_tiny").replace(image_size=size, num_classes=10).to_dict()
    d["stages"][0]["pool"] = pool
    d.pop("name", None)
    return type(zoo.get("convnext_tiny")).from_dict(d)


def test_a_pooled_convnext_stage_is_another_network_with_another_id():
    plain, pooled = _tiny(64, "none"), _tiny(64, "max2")
    assert plain.id != pooled.id
    assert repr(net(plain)) != repr(net(pooled))  # one id per graph (tests/test_one_id.py)


def test_the_pool_shrinks_the_counted_and_the_built_feature_map():
    # By hand: 64 px / 4 (patchify stem) = 16, max-pool 2/2 -> 8, three stride-2 downsamplings -> 4, 2, 1.
    point = _tiny(64, "max2")
    assert features(net(point)).h == 1
    model = build(point).eval()
    with torch.no_grad():
        out = model.features(torch.zeros(1, 3, 64, 64))
    assert tuple(out.shape[-2:]) == (1, 1)
    assert features(net(_tiny(64, "none"))).h == 2  # without the pool: 16, 8, 4, 2


def test_the_size_check_and_the_network_agree():
    # At 32 px the pooled net's last downsampling meets a 1 px map (8 -> 4 -> 2 -> 1 -> 0): refused, and the
    # unpooled net (8 -> 4 -> 2 -> 1) is not.
    with pytest.raises(UserError, match="vanishes at stages\\[3\\]"):
        _tiny(32, "max2")
    assert features(net(_tiny(32, "none"))).h == 1
