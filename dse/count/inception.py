"""Analytic counts for the inception block family (being written)."""


def stage(point, index, cin, h, w, first_block):
    """Count stage `index` of `point`."""
    raise NotImplementedError("inception blocks are not counted yet")
