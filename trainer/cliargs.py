"""One-line command-line errors, shared by the CLIs (``enroll``, ``trainer.train``, ``trainer.prepare``,
``serving.export``).

argparse reports a malformed command line as a usage paragraph followed by the error; a script
reading stderr wants what every other refusal of these tools prints: one ``error: ...`` line (and
exit status 2). ``--help`` is unchanged: the full help on stdout, exit 0.
"""
from __future__ import annotations

import argparse


def one_line(text) -> str:
    """``text`` with every line break (``\\n``, ``\\r``, U+2028, ...) turned into a space, and the
    undecodable bytes of a command line (surrogate escapes) written as ``\\udcff``, so that any
    stream can print it."""
    return " ".join(str(text).encode("utf-8", "backslashreplace").decode("utf-8").splitlines()).strip()


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose errors are one ``error: ...`` line on stderr, exit 2.
    Subparsers made with ``add_subparsers`` inherit it."""

    def error(self, message):
        self.exit(2, f"error: {one_line(message)}\n")
