"""dse: design-space exploration for convolutional networks.

`dse.build(point)` makes the nn.Module (imports torch and timm); `dse.complexity(point)` counts params
and multiply-add FLOPs analytically (no torch). Both are loaded on first use so that light entry points
(`python -m dse.inspect`) stay fast.
"""

import sys

__all__ = ["build", "complexity", "Point"]

if sys.argv[:1] == ["-m"]:  # python -m dse.<command> (runpy sets argv[0] to '-m' while it imports the package)
    from dse.errors import bug_report

    sys.excepthook = bug_report


def __getattr__(name):
    if name == "build":
        from dse.network import build

        return build
    if name == "complexity":
        from dse.cost import complexity

        return complexity
    if name == "Point":
        from dse.point import Point

        return Point
    raise AttributeError(name)
