"""The one stage loop (dse.families.common.blocks) hands each block what pycls's AnyStage does: the first block
the stage's input width and stride, every later block the previous block's output at stride 1, and block b the
drop-path rate b. Expected calls are written by hand from that rule."""
from __future__ import annotations

from dse.families.common import blocks, stage
from dse.graph.nodes import Pool, Seq
from dse.point import Point, Stage


def test_first_block_takes_the_stride_and_input_the_rest_repeat():
    point = Point((Stage("basic", 3, 32, 2, pool="max2"),))
    calls = []

    def block(p, index, b, cin, stride, drop_path):
        calls.append((index, b, cin, stride, drop_path))
        return Seq(), cin + 5  # each block widens by 5, so the loop must feed each block its predecessor's width

    nodes, c = blocks(point, 0, 16, [0.0, 0.1, 0.2], block)
    assert calls == [(0, 0, 16, 2, 0.0), (0, 1, 21, 1, 0.1), (0, 2, 26, 1, 0.2)]
    assert (len(nodes), c) == (3, 31)
    made, width = stage(point, 0, 16, [0.0, 0.1, 0.2], block)
    assert made.nodes == (Seq(), Seq(), Seq(), Pool("max", 2, 2, 0)) and width == 31
