"""Builders for the plain block family (being written)."""


def stage(point, index, cin, rates):
    """Build stage `index` of `point`."""
    raise NotImplementedError("plain blocks are not built yet")
