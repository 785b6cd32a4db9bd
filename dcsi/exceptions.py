"""The one exception hierarchy of dcsi.

Every error dcsi raises on purpose derives from :class:`DcsiError`, so a caller can
catch them all at once; each also derives from the built-in it refines, so code written
against ``ValueError`` or ``ImportError`` keeps working.  The command line turns a
``DcsiError`` into one line on stderr and exit status 1.
"""

from __future__ import annotations

__all__ = [
    "CardSchemaError",
    "DataError",
    "DcsiError",
    "EngineError",
    "InvalidParameterError",
    "MissingDependencyError",
    "WeightsNotFoundError",
]


class DcsiError(Exception):
    """Base class of every error raised by dcsi."""


class InvalidParameterError(DcsiError, ValueError):
    """A parameter has a wrong type or value (the message says the valid range)."""


class DataError(DcsiError, ValueError):
    """The data cannot be used: unreadable image, empty dataset, missing column, ..."""


class CardSchemaError(DcsiError, ValueError):
    """A dataset card fails the JSON Schema or has a newer major ``schema_version``."""


class EngineError(DcsiError, ConnectionError):
    """The distributed engine cannot start or reach its cluster (``--engine ray``)."""


class MissingDependencyError(DcsiError, ImportError):
    """An optional dependency needed for the requested feature is not installed."""


class WeightsNotFoundError(DcsiError, FileNotFoundError):
    """Pretrained weights for a backbone are not available offline."""
