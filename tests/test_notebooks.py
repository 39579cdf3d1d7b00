"""Every notebook (jupytext percent script notebooks/*.py) executes, and its .ipynb pair is in sync.

Each notebook is read with jupytext and run by nbclient in notebooks/ (small settings; all
notebooks together stay under about two minutes on 2 cores).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
TIMEOUT_S = 240


def test_there_are_five_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("script", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_ipynb_pair_matches_the_script(script):
    jupytext = pytest.importorskip("jupytext")
    pair = script.with_suffix(".ipynb")
    assert pair.is_file(), f"{pair.name} missing: run 'jupytext --sync {script.relative_to(ROOT)}'"
    a = [(c.cell_type, c.source.strip()) for c in jupytext.read(script).cells]
    b = [(c.cell_type, c.source.strip()) for c in jupytext.read(pair).cells]
    assert a == b, f"{pair.name} is out of sync with {script.name}: run 'jupytext --sync'"


@pytest.mark.slow
@pytest.mark.parametrize("script", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(script):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    nb = jupytext.read(script)
    t0 = time.perf_counter()
    client = nbclient.NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(script.parent)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    print(f"{script.name}: {time.perf_counter() - t0:.1f} s")
