"""How every command reports a failure: one line on stderr naming the problem, exit 1 for bad
files or data (2 for usage errors, which argparse and the commands report themselves), and
the traceback only with ``--debug`` or for a real bug (an exception no input explains)."""

from __future__ import annotations

import argparse
import functools
import pickle
import sys
from collections.abc import Callable, Sequence

__all__ = ["EXIT_FAILURE", "EXIT_USAGE", "USER_ERRORS", "add_debug_option", "one_line", "reported"]

EXIT_FAILURE = 1
EXIT_USAGE = 2
#: Errors that describe a problem with the inputs (files, data, settings, the disk).
USER_ERRORS = (ValueError, OSError, FloatingPointError, KeyError, pickle.UnpicklingError)
MAX_MESSAGE_CHARS = 2000
DEBUG_FLAG = "--debug"


def one_line(error: BaseException) -> str:
    """The error's message on one line, cut to a readable length."""
    text = " ".join(str(error).split()) or type(error).__name__
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS] + f"... ({len(text)} characters)"
    return text


def add_debug_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(DEBUG_FLAG, action="store_true", help="show the full traceback of an error")


def reported(prog: str) -> Callable:
    """Decorate a command's ``main(argv)``: an input error it lets through becomes one line
    ``prog: message`` on stderr and exit status 1 (re-raised with ``--debug``)."""

    def decorate(main: Callable[[Sequence[str] | None], int]) -> Callable:
        @functools.wraps(main)
        def run(argv: Sequence[str] | None = None) -> int:
            args = sys.argv[1:] if argv is None else list(argv)
            try:
                return main(argv)
            except USER_ERRORS as error:
                if DEBUG_FLAG in args:
                    raise
                print(f"{prog}: {one_line(error)}", file=sys.stderr)
                return EXIT_FAILURE

        return run

    return decorate
