"""docs/notebooks/first_run.ipynb runs as committed: a graph built with the API, trained tiny, a plot inline."""
from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="executing the notebook needs nbformat (jupyter)")
nbclient = pytest.importorskip("nbclient", reason="executing the notebook needs nbclient (jupyter)")
pytest.importorskip("ipykernel", reason="executing the notebook needs an IPython kernel (ipykernel)")
pytest.importorskip("torch", reason="the notebook trains on torch")

NOTEBOOK = Path(__file__).resolve().parents[2] / "docs" / "notebooks" / "first_run.ipynb"


@pytest.mark.slow  # a kernel start and a 2-epoch tiny run: about 8 s
def test_the_first_run_notebook_executes_and_shows_a_plot_inline(tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()  # raises on a failing cell
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    assert any(o.get("data", {}).get("image/png") for o in outputs)  # the figure, inline
    text = "".join(o.get("text", "") for o in outputs)
    assert "unknown field 'lrr' (did you mean 'lr'?)" in text and "extra_forbidden" in text
    assert list((tmp_path / "runs_notebook" / "first_run" / "torch").glob("*/metrics.json"))  # its run, in its folder
