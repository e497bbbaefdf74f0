"""Secrets given in the environment (NETTX_PIN, NETTX_PUK, NETTX_NEW_PIN, NETTX_CARD_NUMBER),
moved out of os.environ as soon as the CLI starts, so that no process it starts inherits them:
not a card process or a party server, nor what an imported library runs (pycryptodome runs
`file` on import). No imports but os: host.cli calls take_all() before importing anything else.
"""

from __future__ import annotations

import os

SECRET_ENVS = ("NETTX_PIN", "NETTX_PUK", "NETTX_NEW_PIN", "NETTX_CARD_NUMBER")
_taken: dict[str, str] = {}


def take_all() -> None:
    for name in SECRET_ENVS:
        value = os.environ.pop(name, None)
        if value is not None:
            _taken[name] = value


def take(name: str) -> str | None:
    """The secret in NAME, once: a command run without the CLI's entry (tests) finds it in
    os.environ still."""
    taken, left = _taken.pop(name, None), os.environ.pop(name, None)
    return taken if taken is not None else left


def forget() -> None:
    """Drop what a command did not read (a process that runs several commands: tests)."""
    _taken.clear()
