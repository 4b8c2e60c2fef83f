"""Analytic counts for the dense block family (being written)."""


def stage(point, index, cin, h, w, first_block):
    """Count stage `index` of `point`."""
    raise NotImplementedError("dense blocks are not counted yet")
