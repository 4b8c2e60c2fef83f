"""The one error type for user mistakes: entry points print it as one line and exit 2. Anything else that
reaches the top of a command is dse's own bug: `bug_report` prints its traceback and asks for a report."""
import sys


class UserError(ValueError):
    """Bad input from a user: a one-line message naming the key or value and the valid choices."""


def choose(kind: str, name, table) -> object:
    """Look `name` up in the dict `table`, or raise a UserError listing the valid names."""
    if name in table:
        return table[name]
    raise UserError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(map(str, table)))}")


class Infeasible(UserError):
    """Values that break a space's checks or rules (raised by Space.point; search prunes such trials)."""


BUG_LINE = ("error: this is a bug in dse, not a mistake in your input; please report it with the command and the "
            "traceback above")


def bug_report(kind, value, tb) -> None:
    """sys.excepthook of the `python -m dse.<command>` processes: the traceback, then one line asking for a report."""
    sys.__excepthook__(kind, value, tb)
    if not issubclass(kind, (KeyboardInterrupt, BrokenPipeError)):
        print(BUG_LINE, file=sys.stderr)
