"""What every command the book ships does with a user error: one line on stderr and exit status 2."""

from __future__ import annotations

import argparse


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a user error is one line on stderr (and exit status 2), not a usage block."""

    def error(self, message: str):
        """Print `prog: error: message (see --help)` and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")
