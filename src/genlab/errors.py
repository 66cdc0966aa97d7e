"""The one exception type users see.

Every error a person can cause (bad input, missing data, a corrupted file) is raised as a
GenlabError carrying what went wrong and what to do about it. The CLI prints it on one or
two lines and exits non-zero, without a traceback; the Python API lets it propagate. A notice
that does not stop the work goes through `warn`.
"""

from __future__ import annotations

import sys


class GenlabError(Exception):
    status = 400  # the HTTP status the server answers it with; the CLI exits 2 for every kind

    def __init__(self, message: str, hint: str | None = None, param: str | None = None):
        self.message = message
        self.hint = hint
        self.param = param  # the request field or CLI option at fault, when there is one
        super().__init__(message if hint is None else f"{message}\nhint: {hint}")


class InvalidInput(GenlabError):
    """A request that is well-formed but asks for something impossible (a missing or doubled field)."""

    status = 422


class InputTooLarge(GenlabError):
    """An input over a size bound (bytes, pixels, files, bars)."""

    status = 413


class UnreadableInput(GenlabError):
    """An upload that is not what it claims (not an image, not MIDI)."""

    status = 415


class TrainingInterrupted(GenlabError):
    """Training stopped on request (Ctrl-C, SIGTERM) after saving a checkpoint."""


class DivergenceError(GenlabError):
    """A non-finite loss, gradient or weight: the run stops with the last good checkpoint intact."""


def warn(message: str) -> None:
    """A notice the user should see but that does not stop the work (stderr, prefixed genlab:)."""
    print(f"genlab: {message}", file=sys.stderr)
