"""The notebooks run top to bottom (nbclient, the venv's python3 kernel) on a tiny run's outputs, and are committed without outputs."""
import sys
from pathlib import Path

import pytest

from test_crosstask import tiny_crosstask_run

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
NAMES = ["01_slice_scores.ipynb", "02_figures.ipynb"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tiny_crosstask_run(tmp_path_factory)[0]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_without_outputs(name):
    import nbformat

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert all(not c.outputs and c.execution_count is None for c in nb.cells if c.cell_type == "code")


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name, out, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    import os

    monkeypatch.setenv("NSNEURONS_OUT", str(out))  # the kernel inherits this process's environment
    # The kernel starts in notebooks/ (as in Jupyter); the repo root on its path finds this checkout's nsneurons
    # even where the editable install is stale.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(NOTEBOOKS.parent), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    # Kernel "python3" with argv "python ..." is started with this process's interpreter (the venv's).
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert nb.cells[-1].outputs[0].text.strip() == sys.executable
    if name == "02_figures.ipynb":  # figures are shown inline, the cross-task heatmap among them
        images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert len(images) == 6  # layers, sweep, cross-task matrix, common layers, layer change, budget
