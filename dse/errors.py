"""The one error type for user mistakes: entry points print it as one line and exit 2."""


class UserError(ValueError):
    """Bad input from a user: a one-line message naming the key or value and the valid choices."""


def choose(kind: str, name, table) -> object:
    """Look `name` up in the dict `table`, or raise a UserError listing the valid names."""
    if name in table:
        return table[name]
    raise UserError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(map(str, table)))}")


class Infeasible(UserError):
    """Values that break a space's checks or rules (raised by Space.point; search prunes such trials)."""
