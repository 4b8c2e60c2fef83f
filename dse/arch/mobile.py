"""Builders for the mobile block family (being written)."""


def stage(point, index, cin, rates):
    """Build stage `index` of `point`."""
    raise NotImplementedError("mobile blocks are not built yet")
