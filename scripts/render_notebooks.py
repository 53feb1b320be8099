"""Execute notebooks/*.ipynb on a finished run and write the executed copies (with their outputs) to
docs/notebooks/, where GitHub renders them for a reader.

    python scripts/render_notebooks.py [RUN_DIR]     # RUN_DIR default: store/demo

RUN_DIR needs a finished `nsneurons run recipes/demo.yaml` (and `nsneurons crosstask recipes/demo.yaml`
for the cross-task figures). CI does not run this script; tests/test_notebooks.py executes the same
notebooks through `execute` on a tiny run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
RENDERED = ROOT / "docs" / "notebooks"


def execute(path: Path, run_dir: Path, timeout: int = 600):
    """The notebook at `path` executed top to bottom on `run_dir` (kernel python3, started in notebooks/
    with this checkout first on its path, as in Jupyter); returns the executed nbformat notebook."""
    import nbformat
    from nbclient import NotebookClient

    env = {"NSNEURONS_OUT": str(run_dir), "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return nb


def main(argv: list[str]) -> int:
    import nbformat

    sys.path.insert(0, str(ROOT))
    from nsneurons.runfolder import RunFolder

    run_dir = Path(argv[0] if argv else ROOT / "store" / "demo").resolve()
    if not RunFolder(run_dir).combined("results").exists():
        print(f"error: no finished run in {run_dir}; run `nsneurons run recipes/demo.yaml` first", file=sys.stderr)
        return 2
    RENDERED.mkdir(parents=True, exist_ok=True)
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = execute(path, run_dir)
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
        if errors:
            print(f"error: {path.name}: {errors[0].ename}: {errors[0].evalue}", file=sys.stderr)
            return 1
        nbformat.write(nb, RENDERED / path.name)
        print(f"wrote {RENDERED / path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
