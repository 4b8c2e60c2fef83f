"""The stage builders, one per block type: fn(point, index, cin, drop_path_rates) -> (nn.Module, cout).

`drop_path_rates` are this stage's per-block stochastic-depth rates. Each builder's analytic twin is in
dse/count/<family>.py.
"""
from dse.arch import dense, inception, mobile, plain, residual

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
