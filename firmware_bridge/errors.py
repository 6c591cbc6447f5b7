"""The project's error root, at its lowest layer so that every package can derive from it.

Every error this project raises on purpose, for a reason a user can act on, is an
:class:`OnboardError`; each class also keeps the builtin base that says what kind of failure it
is (``ValueError`` for bad input, ``RuntimeError`` for a state that cannot go on), so callers
that catch builtins keep working. The command line turns any ``OnboardError`` into one line
(``Error: ...``, exit 1) in one place (``onboard.cli``); anything else is a bug and keeps its
traceback. The bridge's own errors share :class:`BridgeError`.
"""

from __future__ import annotations


class OnboardError(Exception):
    """An error with a message meant for the user: what is wrong and what to do."""


class BridgeError(OnboardError):
    """An error of the serial link, the spool or the downlink."""
