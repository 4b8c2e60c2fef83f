"""Named mobile points (being written)."""
POINTS = {}
REFERENCES = {}
