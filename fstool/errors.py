"""Error classes: one per failure class, each carrying what the user needs to fix it.

The CLI turns every `FstoolError` into one line on stderr (never a traceback):
exit code 2 for usage and spec errors, 1 for everything else.
"""
from __future__ import annotations


class FstoolError(Exception):
    """Base of every error the CLI reports as one line."""

    exit_code = 1

    def __init__(self, message: str, *, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class SpecError(FstoolError):
    """The spec or the command line is wrong (a key, a value, a size)."""

    exit_code = 2


class UsageError(SpecError):
    """The command line is wrong."""


class InputError(FstoolError):
    """An input (directory, tar, manifest, device table) cannot be used."""


class CapacityError(FstoolError):
    """The content does not fit where it was asked to go."""


class ImageError(FstoolError):
    """An image being read is malformed or of an unknown format."""
