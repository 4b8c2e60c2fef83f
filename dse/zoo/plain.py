"""Named plain points (being written)."""
POINTS = {}
REFERENCES = {}
