"""The notebooks in notebooks/ run top to bottom on the CPU: any cell that raises fails the
test (nbclient's CellExecutionError names the cell and the error)."""
from __future__ import annotations

import os

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install 'ringloom[test]')")
nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install 'ringloom[test]')")
pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install 'ringloom[test]')")
pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install 'ringloom[test]')")

NOTEBOOKS = os.path.join(os.path.dirname(__file__), os.pardir, "notebooks")


def _notebooks() -> list[str]:
    return sorted(n for n in os.listdir(NOTEBOOKS) if n.endswith(".ipynb")) if os.path.isdir(NOTEBOOKS) else []


def test_quickstart_exists():
    assert "quickstart.ipynb" in _notebooks()


@pytest.mark.parametrize("name", _notebooks())
def test_notebook_runs(name, tmp_path, monkeypatch):
    nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    assert nb.cells, f"{name} has no cells"
    # The notebook's models are tiny: OpenMP threads cost more than they give, and on a shared
    # 2-core machine their spin-waiting made the run 50x slower (255 s vs 5 s).
    if "OMP_NUM_THREADS" not in os.environ:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # The kernel runs in tmp_path: put the ringloom this test imported (installed, or the dev
    # tree) first on its path, so a relative PYTHONPATH cannot pick up another copy.
    import ringloom

    parent = os.path.dirname(os.path.dirname(os.path.abspath(ringloom.__file__)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (parent, os.environ.get("PYTHONPATH", "")) if p))
    client = nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError when a cell fails
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    ran = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in ran), "some cells did not run"
    if name == "quickstart.ipynb":  # the loss plot and the weight pictures were drawn
        images = [o for c in ran for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert len(images) >= 2
