"""Builders for the residual block family (being written)."""


def stage(point, index, cin, rates):
    """Build stage `index` of `point`."""
    raise NotImplementedError("residual blocks are not built yet")
