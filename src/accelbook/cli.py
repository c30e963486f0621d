"""What every command the book ships does with a user error: one line on stderr and exit status 2.

Argument errors come from `OneLineParser` (argparse's, with a pointer to --help); every other mistake
the user can fix (missing data, an absent device, a file that is not what it should be) is raised as a
`UserError` and printed by `run`, in the same `python -m accelbook.<command>: error: ...` form.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable


class UserError(Exception):
    """A mistake the user can fix (data, device, file, option combination): one line, exit status 2."""


class InvalidArgument(UserError, ValueError):
    """A bad value or combination of options; a ValueError to code that calls the library."""


def prog(command: str) -> str:
    """The program name every command prints: `python -m accelbook.<command>`."""
    return f"python -m accelbook.{command}"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a user error is one line on stderr (and exit status 2), not a usage block."""

    def error(self, message: str):
        """Print `prog: error: message (see --help)` and exit 2."""
        self.exit(2, f"{error_line(self.prog, message)} (see --help)\n")


def number(kind: type, least: float, strict: bool = False):
    """An argparse type: a finite `kind` (int or float) at least `least` (greater than it when `strict`)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if not math.isfinite(value) or value < least or (strict and value == least):
            raise argparse.ArgumentTypeError(f"must be a finite number {'>' if strict else '>='} {least:g}, "
                                             f"got {text!r}")
        return value
    return parse


def error_line(name: str, err: BaseException | str) -> str:
    """`name: error: err`, on one line whatever the message holds."""
    return f"{name}: error: {' '.join(str(err).split())}"


def fail(name: str, err: BaseException | str) -> int:
    """Print `name: error: err` as one line on stderr; return the exit status 2."""
    print(error_line(name, err), file=sys.stderr)
    return 2


def run(parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int],
        argv: list[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv), return `body(args)`; a UserError is one line and exit status 2."""
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return body(args)
    except UserError as err:
        return fail(parser.prog, err)
