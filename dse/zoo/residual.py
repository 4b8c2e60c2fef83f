"""Named residual points (being written)."""
POINTS = {}
REFERENCES = {}
