"""The notebooks run top to bottom (in a temp dir, on the CPU) and fail the suite on any error.

Outputs are stripped in the repository; the cells assert what their text claims.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_both_notebooks_are_here_and_stripped() -> None:
    assert {p.name for p in NOTEBOOKS} == {"quickstart.ipynb", "fcn_explained.ipynb"}
    for path in NOTEBOOKS:
        cells = nbformat.read(path, as_version=4).cells
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in cells if c.cell_type == "code"), path


# fcn_explained trains three FCNs (about 5 minutes here): a slow test, so the suite stays
# inside its 15 minutes; `-m slow` runs it.
SLOW_NOTEBOOKS = {"fcn_explained"}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", [
    pytest.param(path, marks=pytest.mark.slow) if path.stem in SLOW_NOTEBOOKS else path for path in NOTEBOOKS
], ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGKIT_ROOT", str(tmp_path))
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=540, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    # Each plotting cell rendered its figure.
    assert any(o.get("data", {}).get("image/png") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
