"""Design spaces: the Space model (dse.space.model) and its file parser (dse.space.parse), over dse.point."""
from dse.errors import Infeasible
from dse.point import Head, Point, Stage, Stem

__all__ = ["Head", "Point", "Stage", "Stem", "load", "Space", "names", "spaces_dir", "Param", "Infeasible"]
LAZY = {"load": "parse", "names": "parse", "spaces_dir": "parse", "Space": "model",
        "Param": "model"}


def __getattr__(name):
    if name == "Infeasible":
        return Infeasible
    if name in LAZY:
        from importlib import import_module

        return getattr(import_module(f"dse.space.{LAZY[name]}"), name)
    raise AttributeError(name)
