"""Markdown tables of the seven figures, as the lab report's tables."""
from __future__ import annotations

import re
from typing import Any, Sequence

from netspec.runs.stats import summarize
from netspec.runs.records import SUMMARY_FIELDS

_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")
_INLINE = str.maketrans({"\\": "\\\\", "`": "\\`", "[": "\\[", "]": "\\]", "&": "&amp;", "<": "&lt;", ">": "&gt;"})
_BLOCK_START = re.compile(r"^(?:(?=[#>+\-*=~_])|(\d+)(?=[.)]))")
"""What turns a line into a heading, quote, list, rule or fence when it starts it (a number: '1.', '2)')."""


def md_text(value: Any, line_start: bool = False) -> str:
    """A user's string (a sweep label, a description, a folder or backend name, an override) as literal
    markdown text: on one line (a newline would start a heading or end a table row), HTML shown rather than
    run (<img onerror=...>), no code span, link or image it did not mean; `line_start`: it begins a line,
    where '#', '-', '>' or '1.' would make a heading, list or quote of it. Pipes are markdown_table's
    (every cell escapes them), so a label 'a | b' keeps the table's columns."""
    text = _LINE_BREAKS.sub(" ", str(value)).strip().translate(_INLINE)
    return _BLOCK_START.sub(lambda m: (m.group(1) or "") + "\\", text, count=1) if line_start else text


def md_code(value: Any) -> str:
    """A user's name as inline code when code holds it as it is (no backtick, no markup characters, one
    line), else as md_text: a raw '<' even inside code would be a trap for a viewer that renders HTML."""
    text = str(value)
    plain = text and not set("`\\<>&") & set(text) and not _LINE_BREAKS.search(text)
    return f"`{text}`" if plain else md_text(text)


def _cell(value: Any) -> str:
    """A cell of a markdown table: on one line, with its pipes escaped, so it stays one cell."""
    return _LINE_BREAKS.sub(" ", fmt(value)).replace("|", "\\|")


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
    lines = ["| " + " | ".join(map(_cell, header)) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
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
    return summarize(values).text()


def summary_table(columns: dict[str, dict[str, Sequence[float]]]) -> str:
    """metrics_table over seeds: each column maps a figure to its values, one per seed."""
    header = ["result", *columns]
    rows = [[label, *(fmt_values(c.get(key, [])) for c in columns.values())] for key, label in SUMMARY_FIELDS.items()]
    return markdown_table(header, rows)
