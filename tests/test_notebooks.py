"""The notebooks run top to bottom (nbclient, the venv's python3 kernel) on a tiny run's outputs, and are committed without outputs."""

import importlib.util
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
def test_notebook_runs(name, out, tmp_path):
    import nbformat

    # The executor of scripts/render_notebooks.py (which renders docs/notebooks/ from the demo run).
    spec = importlib.util.spec_from_file_location("render_notebooks", NOTEBOOKS.parent / "scripts" / "render_notebooks.py")
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    nbformat.write(nb, tmp_path / name)
    # Kernel "python3" with argv "python ..." is started with this process's interpreter (the venv's).
    nb = render.execute(tmp_path / name, out, timeout=300)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert nb.cells[-1].outputs[0].text.strip() == sys.executable
    if name == "02_figures.ipynb":  # figures are shown inline, the cross-task heatmap among them
        images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert len(images) == 6  # layers, sweep, cross-task matrix, common layers, layer change, budget (Figures shown inline)
