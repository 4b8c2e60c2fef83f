"""shufflenet stages (block 'shuffle'): being written."""
from __future__ import annotations

from dse.errors import UserError


def stage(point, index, cin, rates):
    """Not built yet."""
    raise UserError(f"block: 'shuffle' is not available yet")
