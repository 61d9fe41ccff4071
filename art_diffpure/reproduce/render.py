"""Markdown, JSON and figures from plain results (numbers, lists, dicts); no torch here."""
from __future__ import annotations

import json
import os
from typing import Any, Iterable, Sequence

import numpy as np

from art_diffpure._utils import to_jsonable


#: The one JSON conversion of the package (non-finite floats become ``None``): see :mod:`art_diffpure._utils`.
to_plain = to_jsonable


def json_text(results: dict) -> str:
    """``results`` as sorted, indented JSON text (so two identical runs give identical files)."""
    return json.dumps(to_plain(results), indent=1, sort_keys=True) + "\n"


def write_json(path: str, results: dict) -> None:
    """Write ``results`` as :func:`json_text`."""
    with open(path, "w") as handle:
        handle.write(json_text(results))


def fmt(value: Any, digits: int = 3, percent: bool = False) -> str:
    """Format a number (or mean, std pair) for a table; ``None`` becomes a dash."""
    if value is None:
        return "–"
    if isinstance(value, (tuple, list)) and len(value) == 2:
        mean, std = value
        if std is None:  # one seed: no spread to show
            return fmt(mean, digits, percent)
        if percent:
            return f"{100 * mean:.1f}±{100 * std:.1f}%"
        return f"{mean:.{digits}f}±{std:.{digits}f}"
    if percent:
        return f"{100 * float(value):.1f}%"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if value != 0 and (abs(value) < 10 ** -(digits - 1) or abs(value) >= 1e5):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}f}"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; cells are already strings."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def save_figure(fig, out_dir: str, name: str) -> str:
    """Save a matplotlib figure as PNG (fixed metadata, so reruns write identical files) and close it."""
    import matplotlib.pyplot as plt

    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def new_figure(width: float = 5.0, height: float = 3.6):
    """A matplotlib figure and axes with the non-interactive backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def fmt_interval(interval: dict[str, Any] | Sequence[float] | None, percent: bool = False, digits: int = 3,
                 signed: bool = False) -> str:
    """``[low, high]`` of an interval (a ``{"low", "high"}`` dict or a pair); percent: in points, 1 decimal."""
    if interval is None:
        return "–"
    low, high = (interval["low"], interval["high"]) if isinstance(interval, dict) else interval
    if low is None or high is None:
        return "–"
    sign = "+" if signed else ""
    if percent:
        return f"[{100 * low:{sign}.1f}, {100 * high:{sign}.1f}]"
    return f"[{low:{sign}.{digits}f}, {high:{sign}.{digits}f}]"


def fmt_accuracy(summary: dict[str, Any] | None, seeds: bool = True) -> str:
    """
    An accuracy summary (``art_diffpure.evaluations.statistics.SeedSummary.to_dict()``) as ``mean% [95% interval over images]``,
    followed by the seed-to-seed sd when there are several seeds (a different quantity, shown apart).
    """
    if summary is None:
        return "–"
    text = f"{100 * summary['mean']:.1f}% {fmt_interval(summary['interval'], percent=True)}"
    if seeds and summary.get("seed_sd") is not None:
        text += f" (seed sd {100 * summary['seed_sd']:.1f})"
    return text


__all__ = ["fmt", "fmt_accuracy", "fmt_interval", "new_figure", "save_figure", "table", "to_plain", "write_json"]
