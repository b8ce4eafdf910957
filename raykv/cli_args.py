"""Argument types shared by the ``raykv`` commands: each parses one command-line value and, when it
is wrong, raises :class:`argparse.ArgumentTypeError` with a message that says what was expected and
what was given (argparse prints it with the option's name and exits with status 2)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["int_at_least", "seconds_between"]


def int_at_least(lo: int) -> Callable[[str], int]:
    """An integer no smaller than ``lo``."""

    def parse_int(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer; got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo}; got {value}")
        return value

    return parse_int


def seconds_between(lo: float, hi: float) -> Callable[[str], float]:
    """A number of seconds from ``lo`` to ``hi``, both included."""

    def parse_seconds(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of seconds; got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo:g} and {hi:g} seconds; got {value:g}")
        return value

    return parse_seconds
