"""Why a card's state file cannot be used: one small hierarchy, rendered as one line.

These are not status words: they stop a card process (or a command that opens a state file)
before the card exists, so they surface as a CLI error, never as an APDU answer. A failed
write during a command is different: it is an OSError, and the applet answers 6581.
"""

from __future__ import annotations


class StateError(Exception):
    """The state file cannot be opened as a card."""


class StateLockedError(StateError):
    """Another process already holds this card (two live copies of one EEPROM)."""


class StateKeyError(StateError):
    """The state is sealed and no key, or the wrong key, was given; or a key was given for
    a state that is not sealed."""


class StateFormatError(StateError):
    """The file is not a card state this code understands."""
