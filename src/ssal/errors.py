"""The one exception type for bad user input (the CLI turns it into one line and exit code 2)."""

from __future__ import annotations

__all__ = ["SSALError"]


class SSALError(ValueError):
    """Invalid input given by a user: a file, a value or a configuration that cannot be used."""
