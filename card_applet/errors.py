"""The root of every error nettx raises on purpose.

It lives in the lowest layer so the card side's own errors (the APDU codec's format error)
can stand under it too; terminal/errors.py and host/ derive everything else from it.
"""

from __future__ import annotations


class NettxError(Exception):
    """Root of every error nettx raises on purpose."""
