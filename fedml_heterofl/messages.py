"""How every command reports a problem: one line on stderr, no traceback unless asked for.

A problem the user can fix (a bad key, a missing dataset, a folder that is not a run folder) is
:func:`report_error`: ``fedml-heterofl COMMAND: message`` and exit status 2. ``--debug`` (or
``FEDML_HETEROFL_DEBUG=1``, which reaches a grid's worker processes too) shows the traceback first.
Standard library only: every floor's commands use it.
"""
from __future__ import annotations

import os
import sys
import traceback

#: environment variable that shows tracebacks (``--debug`` sets it, for a grid's worker processes too)
DEBUG_ENV = "FEDML_HETEROFL_DEBUG"


def debug() -> bool:
    """Whether tracebacks are shown (``--debug`` or ``FEDML_HETEROFL_DEBUG=1``)."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def one_line(text: str) -> str:
    """``text`` with its lines joined by ``; `` (YAML and torch errors span several lines)."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def describe(problem: object) -> str:
    """``problem`` (an exception or a message) in one line, an exception's notes appended."""
    text = one_line("; ".join([str(problem), *getattr(problem, "__notes__", ())]))
    return text or type(problem).__name__


def report_error(command: str, problem: object) -> int:
    """Print ``problem`` (an exception or a message) as one line on stderr (``fedml-heterofl COMMAND:
    message``, with the exception's notes); returns 2, the exit status of a problem the user can fix.
    With :func:`debug`, an exception's traceback comes first."""
    if debug() and isinstance(problem, BaseException):
        traceback.print_exception(problem)
    print(f"fedml-heterofl {command}: {describe(problem)}", file=sys.stderr)
    return 2
