"""dse: design-space exploration for convolutional networks.

`dse.build(point)` makes the nn.Module (imports torch and timm); `dse.complexity(point)` counts params
and multiply-add FLOPs analytically (no torch). Both are loaded on first use so that light entry points
(`python -m dse.inspect`) stay fast.
"""

__all__ = ["build", "complexity", "Point"]


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
