"""argparse value types shared by the `mmsieve` command, its sub-commands and the `hub_scripts/` recipes.

Each turns a bad value into argparse's one-line error (exit code 2) instead of a traceback.

Example:
    >>> parser = argparse.ArgumentParser()
    >>> _ = parser.add_argument("--tasks", type=positive, default=1)
    >>> parser.parse_args(["--tasks", "8"]).tasks
    8
"""

from __future__ import annotations

import argparse


def positive(value: str) -> int:
    """An integer >= 1.

    Example:
        >>> positive("3")
        3
    """
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def non_negative(value: str) -> int:
    """An integer >= 0.

    Example:
        >>> non_negative("0")
        0
    """
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value!r}")
    return number


def positive_or_unlimited(value: str) -> int:
    """An integer >= 1, or -1 for "no limit" (datatrove's `workers=-1`).

    Example:
        >>> positive_or_unlimited("-1"), positive_or_unlimited("4")
        (-1, 4)
    """
    return -1 if value.strip() == "-1" else positive(value)


def fraction(value: str) -> float:
    """A number in (0, 1].

    Example:
        >>> fraction("0.3")
        0.3
    """
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {value!r}") from None
    if not 0 < number <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {value!r}")
    return number


__all__ = ["fraction", "non_negative", "positive", "positive_or_unlimited"]
