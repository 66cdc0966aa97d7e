"""The one exception type users see.

Every error a person can cause (bad input, missing data, a corrupted file) is raised as a
GenlabError carrying what went wrong and what to do about it. The CLI prints it on one or
two lines and exits non-zero, without a traceback; the Python API lets it propagate. A notice
that does not stop the work goes through `warn`.
"""

from __future__ import annotations

import sys


class GenlabError(Exception):
    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\nhint: {hint}")


class TrainingInterrupted(GenlabError):
    """Training stopped on request (Ctrl-C, SIGTERM) after saving a checkpoint."""


class DivergenceError(GenlabError):
    """A non-finite loss, gradient or weight: the run stops with the last good checkpoint intact."""


def warn(message: str) -> None:
    """A notice the user should see but that does not stop the work (stderr, prefixed genlab:)."""
    print(f"genlab: {message}", file=sys.stderr)
