"""Named inception points (being written)."""
POINTS = {}
REFERENCES = {}
