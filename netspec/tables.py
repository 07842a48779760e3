"""Markdown tables of the seven figures, as the lab report's tables."""
from __future__ import annotations

from typing import Any, Sequence

from .trainer import SUMMARY_FIELDS


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def plural(count: int, noun: str) -> str:
    """'1 epoch', '2 epochs', '1,000 images'."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def metrics_table(columns: dict[str, dict[str, Any]]) -> str:
    """The seven figures (rows) of one or more runs (columns), as the lab report's tables."""
    header = ["result", *columns]
    rows = [[label, *(m.get(key) for m in columns.values())] for key, label in SUMMARY_FIELDS.items()]
    return markdown_table(header, rows)


def fmt_values(values: Sequence[float]) -> str:
    """A figure over seeds: '-' (no run), the value (one run), 'mean ± std (n)' (several)."""
    if not values:
        return "-"
    if len(values) == 1:
        return fmt(values[0])
    from .stats import summarize
    return summarize(values).text()


def summary_table(columns: dict[str, dict[str, Sequence[float]]]) -> str:
    """metrics_table over seeds: each column maps a figure to its values, one per seed."""
    header = ["result", *columns]
    rows = [[label, *(fmt_values(c.get(key, [])) for c in columns.values())] for key, label in SUMMARY_FIELDS.items()]
    return markdown_table(header, rows)
