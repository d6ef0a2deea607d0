"""One exception class per kind of failure a user can cause.

Every message is one line that names the bad value and what is allowed. The CLI turns an ``AugmentError``
into a one-line ``Error: ...`` and exit code 1; the HTTP service turns it into a 4xx JSON body. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "AugmentError",
    "InputError",
    "SchemaError",
    "BundleError",
    "OutputExistsError",
    "ClassNameError",
    "MissingExtraError",
]


class AugmentError(Exception):
    """Base class: a problem with what the user gave us, not a bug."""


class InputError(AugmentError):
    """A data file is missing, unreadable, or holds values the codec cannot take."""


class SchemaError(AugmentError):
    """Columns or types do not match what the bundle (or the real data) expects."""


class BundleError(AugmentError):
    """A bundle folder is missing files, fails its checksums, or is of a newer format."""


class OutputExistsError(AugmentError):
    """An output folder exists and neither --overwrite nor --resume was given."""


class ClassNameError(AugmentError):
    """A class name is not one of the bundle's classes."""


class MissingExtraError(AugmentError):
    """A command or call needs an optional part of augment (an extra) that is not installed."""
