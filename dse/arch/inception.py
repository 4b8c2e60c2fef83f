"""Builders for the inception block family (being written)."""


def stage(point, index, cin, rates):
    """Build stage `index` of `point`."""
    raise NotImplementedError("inception blocks are not built yet")
