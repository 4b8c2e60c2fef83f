"""Analytic counts for the plain block family (being written)."""


def stage(point, index, cin, h, w, first_block):
    """Count stage `index` of `point`."""
    raise NotImplementedError("plain blocks are not counted yet")
