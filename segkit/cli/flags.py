"""Option parsing for the argparse command lines (``segkit-data``, ``segkit-report``)."""

from __future__ import annotations

import argparse
from typing import NoReturn

from segkit.errors import SegkitError


class FlagParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose usage error raises a one-line
    :class:`SegkitError` instead of printing argparse's usage block and exiting.

    Example:
        >>> FlagParser(prog="segkit-x").parse_args(["--nope"])
        Traceback (most recent call last):
        ...
        segkit.errors.SegkitError: unrecognized arguments: --nope; see segkit-x --help
    """

    def error(self, message: str) -> NoReturn:
        raise SegkitError(f"{message}; see {self.prog} --help")
