"""The stage counters, one per block type: fn(point, index, cin, h, w, first_block) -> Count.

Each counter sits beside its builder in dse/arch/<family>.py under the same family name, and
tests/test_complexity.py holds the two equal for every named point and every space.
"""
from dse.count import dense, inception, mobile, plain, residual

BLOCKS = {
    "plain": plain.stage,
    "basic": residual.stage,
    "bottleneck": residual.stage,
    "preact_basic": residual.stage,
    "preact_bottleneck": residual.stage,
    "dense": dense.stage,
    "inception": inception.stage,
    "dwsep": mobile.stage,
    "inverted": mobile.stage,
}
