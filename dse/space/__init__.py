"""Design spaces: the Point (one architecture) and the Space (a YAML file of parameters over Points)."""
from dse.point import Head, Point, Stage, Stem

__all__ = ["Head", "Point", "Stage", "Stem", "load", "Space", "names", "spaces_dir", "Param", "Infeasible", "parse"]


def __getattr__(name):
    if name in ("load", "Space", "names", "spaces_dir", "Param", "Infeasible", "parse"):
        from dse.space import space

        return getattr(space, name)
    raise AttributeError(name)
