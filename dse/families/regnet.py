"""regnet stages (block 'regnet'): being written."""
from __future__ import annotations

from dse.errors import UserError


def stage(point, index, cin, rates):
    """Not built yet."""
    raise UserError(f"block: 'regnet' is not available yet")
