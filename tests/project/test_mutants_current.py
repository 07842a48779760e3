"""The mutation list (tools/mutants.py) stays current: every mutant's text occurs exactly once in its
file, so a change that moves or rewrites mutated code fails here, in the suite, rather than only when
someone runs the hour-long mutation tool."""
from __future__ import annotations

from pathlib import Path

import pytest

from tools.mutants import MUTANTS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: f"{m.file}: {m.description}"[:90])
def test_every_mutant_still_matches_its_code(mutant) -> None:
    path = ROOT / mutant.file
    assert path.is_file(), f"tools/mutants.py names {mutant.file}, which is gone: point the mutant at the code's new home"
    count = path.read_text().count(mutant.old)
    assert count == 1, f"tools/mutants.py: {mutant.description!r}: its text occurs {count} times in {mutant.file}; update it"
    assert mutant.new != mutant.old and mutant.tests
