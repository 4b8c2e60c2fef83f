"""Named regnet points: being written."""
from __future__ import annotations

POINTS: dict = {}
REFERENCES: dict = {}
