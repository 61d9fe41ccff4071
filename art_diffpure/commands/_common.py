"""What the commands share: argparse types and how a stopped command says to resume."""
from __future__ import annotations

import argparse
import sys

__all__ = ["at_least", "stopped"]


def at_least(low: int):
    """An argparse type: an integer >= ``low`` and below 2**32 (checked before any work starts)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        if value >= 2**32:
            raise argparse.ArgumentTypeError(f"{value} is not below 2**32")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def stopped(command: str, stop: BaseException, out: str, what: str = "stopped") -> int:
    """Ctrl-C or SIGTERM (as ``SystemExit``): say how to resume; the conventional exit status (130 / 143)."""
    print(f"{command}: {what}; rerun the same command to resume from what {out} holds", file=sys.stderr)
    return 130 if isinstance(stop, KeyboardInterrupt) else int(getattr(stop, "code", None) or 143)
