"""Analytic counts for the mobile block family (being written)."""


def stage(point, index, cin, h, w, first_block):
    """Count stage `index` of `point`."""
    raise NotImplementedError("mobile blocks are not counted yet")
