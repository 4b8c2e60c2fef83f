"""Builders for the dense block family (being written)."""


def stage(point, index, cin, rates):
    """Build stage `index` of `point`."""
    raise NotImplementedError("dense blocks are not built yet")
