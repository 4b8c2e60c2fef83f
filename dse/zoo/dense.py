"""Named dense points (being written)."""
POINTS = {}
REFERENCES = {}
