"""The layer table of docs/spec-format.md, written from the layer classes (netspec.spec.layers.LAYER_TYPES):
each type, its family module, what it computes (its docstring's first sentence) and every field with
its default and description (the attribute docstrings, which the JSON Schema carries too). A test
(tests/spec/test_layer_tables.py) checks the page holds exactly this table, so no type or field goes undocumented.

    python tools/layer_table.py            # print the table
    python tools/layer_table.py --write    # replace the table in docs/spec-format.md
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic_core import PydanticUndefined

from netspec.io import atomic_write
from netspec.spec.layers import LAYER_TYPES, LayerSpec

PAGE = Path(__file__).resolve().parent.parent / "docs" / "spec-format.md"
BEGIN = "<!-- layer table: written by tools/layer_table.py from the layer classes; do not edit by hand -->"
END = "<!-- end of layer table -->"


def _first_sentence(doc: str | None) -> str:
    text = " ".join((doc or "").split())
    return text.split(". ")[0].rstrip(".") + "."


def _field(name: str, info) -> str:
    default = "" if info.default is PydanticUndefined else f" ({json.dumps(info.default)})"
    return f"`{name}`{default}: {' '.join((info.description or '').split()).rstrip('.')}".rstrip(": ")


def render() -> str:
    """The table, between its markers, as the page holds it."""
    shared = [name for name in LayerSpec.model_fields]
    rows = [BEGIN, "",
            f"Every layer may also carry {'; '.join(_field(n, LayerSpec.model_fields[n]) for n in shared)}.", "",
            "| layer | family | what it computes | fields (default) |", "| --- | --- | --- | --- |"]
    for kind in LAYER_TYPES:
        fields = [_field(n, info) for n, info in kind.model_fields.items() if n not in shared and n != "type"]
        family = f"`layers/{kind.__module__.rsplit('.', 1)[-1]}.py`"
        text = "; ".join(fields).replace("|", "\\|") or "-"
        rows.append(f"| `{kind.__name__}` | {family} | {_first_sentence(kind.__doc__).replace('|', chr(92) + '|')} | {text} |")
    return "\n".join([*rows, "", END])


def page_table(page: str) -> str:
    """The table block the page holds now ('' when it has no markers)."""
    if BEGIN not in page or END not in page:
        return ""
    return page[page.index(BEGIN):page.index(END) + len(END)]


def main(argv: list[str]) -> int:
    if argv != ["--write"]:
        print(render())
        return 0
    page = PAGE.read_text()
    if not page_table(page):
        print(f"{PAGE}: no layer table markers ({BEGIN!r} ... {END!r}); put them where the table goes", file=sys.stderr)
        return 2
    new = page.replace(page_table(page), render())
    atomic_write(PAGE, lambda f: f.write(new.encode()))
    print(f"wrote the layer table of {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
