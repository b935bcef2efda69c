"""examples/explore.ipynb runs from top to bottom on the demo store, in a real Jupyter kernel, without
an error, so the example cannot rot; it is kept without stored outputs, so its diffs stay small."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "explore.ipynb"


def test_the_notebook_is_kept_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "the notebook has no code"
    assert all(not cell.outputs and cell.execution_count is None for cell in code), (
        "clear the notebook's outputs before committing it (Jupyter: Edit > Clear All Outputs)"
    )


@pytest.mark.slow
def test_the_notebook_runs_without_error(built_demo_store, tmp_path, monkeypatch):
    db = tmp_path / "demo.duckdb"
    shutil.copyfile(built_demo_store, db)
    monkeypatch.setenv("POLYROUTE_DB", str(db))  # the kernel inherits it: the notebook opens this store
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": NOTEBOOK.parents[1]}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on the first error
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    charts = [output for output in outputs if "vegaEmbed" in output.get("data", {}).get("text/html", "")]
    texts = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    assert len(charts) == 3, "the divergence curves, the sharing heatmap and the mass chart"
    assert "without the plan:" in texts and "with the plan:" in texts
