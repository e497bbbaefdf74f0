"""Host-side errors: all under the project's one root, terminal.errors.NettxError."""

from __future__ import annotations

from terminal.errors import NettxError


class AuthorityError(NettxError):
    """The centre refused: not initialised, duplicate identifier, colliding x, bad file."""


class PersonalisationError(NettxError):
    """The card is not blank, or not one of this centre's (wrong card cryptogram)."""
