"""Error classes: one per failure class, each carrying what the user needs to fix it.

The CLI turns every `FstoolError` into one line on stderr (never a traceback):
exit code 2 for usage and spec errors, 1 for everything else.
"""
from __future__ import annotations


class FstoolError(Exception):
    """Base of every error the CLI reports as one line.

    `message` says what is wrong; `where` lists the places it happened, outermost first
    (the spec file, then its table and key, or an image and a path inside it). The line
    the user sees is `where[0]: where[1]: ...: message`; callers add context with
    `within()`, never by cutting the string apart.
    """

    exit_code = 1

    def __init__(self, message: str, *, where: str | list[str] | tuple[str, ...] | None = None):
        self.message = message
        if where is None:
            self.where: list[str] = []
        elif isinstance(where, str):
            self.where = [where] if where else []
        else:
            self.where = [w for w in where if w]
        super().__init__(message)

    def __str__(self) -> str:
        return ": ".join([*self.where, self.message])

    def within(self, outer: str) -> "FstoolError":
        """Name an outer place (the spec file, say) unless it is already the outermost one."""
        if outer and (not self.where or self.where[0] != outer):
            self.where.insert(0, outer)
        return self


class SpecError(FstoolError):
    """The spec or the command line is wrong (a key, a value, a size)."""

    exit_code = 2


class UsageError(SpecError):
    """The command line is wrong."""


class InputError(FstoolError):
    """An input (directory, tar, manifest, device table) cannot be used."""


class CapacityError(FstoolError):
    """The content does not fit where it was asked to go."""


class OutputError(FstoolError):
    """The output cannot be written (no space, no permission, a path that must not be replaced)."""


class ImageError(FstoolError):
    """An image being read is malformed or of an unknown format."""


def did_you_mean(word: str, choices) -> str:
    """' (did you mean 'x'?)' for the nearest of choices, or '' (every "unknown X" error)."""
    import difflib
    near = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


_quiet = False


def set_quiet(quiet: bool) -> None:
    """`-q`: warnings are not printed (errors still are)."""
    global _quiet
    _quiet = quiet


def warn(message: str, *, where: str | list[str] | None = None) -> None:
    """One line on stderr for something accepted but changed or ignored (as the Rust fstool
    does for a long label, say); never for something that changes nothing."""
    if _quiet:
        return
    import sys
    parts = [where] if isinstance(where, str) else list(where or [])
    print(": ".join(["fstool: warning", *[p for p in parts if p], message]), file=sys.stderr)
