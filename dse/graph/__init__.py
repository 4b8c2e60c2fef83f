"""The network as data (nodes) and its interpreters: count (no torch) and build (torch, timm)."""
