"""LaTeX export: PGF/PDF figures at column and text width, booktabs tables."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure

from fluidserve.errors import InputError, MissingDependencyError
from fluidserve.export import export_figure, export_table, latex_style, table_latex
from fluidserve.export import latex as lx

from .conftest import HAVE_PDFLATEX, check_pdf, compile_latex


def _figure() -> Figure:
    with latex_style():
        fig = Figure(figsize=(6.4, 4.0))
        ax = fig.subplots()
        t = np.linspace(0, 10, 200)
        ax.plot(t, np.sin(t), label=r"$\sin t$")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("mass (requests)")
        ax.set_title("50% load & more_underscores")
        ax.legend()
    return fig


def test_pdf_export_at_both_widths_opens_and_renders(tmp_path):
    paths = export_figure(_figure(), tmp_path / "fig", formats=("pdf",))
    assert [p.name for p in paths] == ["fig_column.pdf", "fig_text.pdf"]
    check_pdf(paths[0], lx.WIDTHS_IN["column"])
    check_pdf(paths[1], lx.WIDTHS_IN["text"])


def test_export_sets_point_sizes_and_restores_the_figure(tmp_path):
    fig = _figure()
    before = tuple(fig.get_size_inches())
    export_figure(fig, tmp_path / "f", widths=(3.0,), formats=("png",))
    assert tuple(fig.get_size_inches()) == before
    ax = fig.axes[0]
    assert ax.xaxis.label.get_fontsize() == lx.FONT_PT["label"]
    assert ax.title.get_fontsize() == lx.FONT_PT["title"]
    assert ax.get_xticklabels()[0].get_fontsize() == lx.FONT_PT["tick"]
    assert (tmp_path / "f_3in.png").is_file()


@pytest.mark.skipif(not HAVE_PDFLATEX, reason=f"PGF needs pdflatex and the LaTeX packages {', '.join(lx.TEX_PACKAGES)} "
                                                f"(Debian: {lx.TEX_DEBIAN})")
def test_pgf_export_compiles_in_a_latex_document(tmp_path):
    paths = export_figure(_figure(), tmp_path / "fig", formats=("pgf",))
    pgf = paths[0].read_text()
    assert pgf.startswith(r"\providecommand{\mathdefault}") and "%% Creator: Matplotlib, PGF backend" in pgf
    assert r"\begin{pgfpicture}" in pgf
    pdf = compile_latex(r"\input{fig_column.pgf}" + "\n\n" + r"\input{fig_text.pgf}", tmp_path,
                        preamble="\\usepackage[margin=0.5in]{geometry}\n")
    check_pdf_pages = pytest.importorskip("pypdf").PdfReader(str(pdf)).pages
    assert len(check_pdf_pages) >= 1
    text = "".join(page.extract_text() for page in check_pdf_pages)
    assert "time (s)" in text


def test_pgf_without_tex_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(lx, "tex_available", lambda: False)
    with pytest.raises(MissingDependencyError, match="PGF export needs pdflatex"):
        export_figure(_figure(), tmp_path / "x", formats=("pgf",))
    with pytest.raises(InputError, match="figure format"):
        export_figure(_figure(), tmp_path / "x", formats=("svgz",))
    with pytest.raises(InputError, match="figure width"):
        export_figure(_figure(), tmp_path / "x", widths=("page",), formats=("png",))


def _structural_check(tex: str) -> None:
    """Balanced braces, one tabular, booktabs rules in order, same number of cells per row."""
    depth = 0
    for ch in re.sub(r"\\[{}]", "", tex):
        depth += ch == "{"
        depth -= ch == "}"
        assert depth >= 0
    assert depth == 0
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    i_top, i_mid, i_bot = tex.index(r"\toprule"), tex.index(r"\midrule"), tex.index(r"\bottomrule")
    assert i_top < i_mid < i_bot
    spec = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", tex).group(1)
    body = tex[i_top + len(r"\toprule"):i_bot].replace(r"\midrule", "")
    rows = [r for r in body.split(r"\\") if r.strip()]
    for row in rows:
        assert len(re.split(r"(?<!\\)&", row)) == len(spec), row


def test_table_is_booktabs_escaped_and_compiles(tmp_path):
    df = pd.DataFrame({"workload.arrival_rate": [100, 200], "mean_e2e_s": [0.4321, np.nan],
                       "policy": ["LIFO & co", "50%_x"], "count": [3.0, 4.0]})
    path = export_table(df, tmp_path / "t.tex", columns={"mean_e2e_s": "mean e2e (s)"}, caption="Sweep_1",
                        label="tab:sweep")
    tex = path.read_text()
    _structural_check(tex)
    assert r"LIFO \& co" in tex and r"50\%\_x" in tex and r"workload.arrival\_rate" in tex
    assert "0.432 " in tex and "--" in tex  # 3 significant digits, NaN as a dash
    assert "& 3 " in tex or "& 3 \\\\" in tex  # integral floats print as integers
    assert r"\caption{Sweep\_1}" in tex and r"\label{tab:sweep}" in tex
    if HAVE_PDFLATEX:
        compile_latex(r"\input{t.tex}", tmp_path)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.floats(-1e6, 1e6), st.just(float("nan"))), st.text(max_size=12)), min_size=1, max_size=6))
def test_any_table_is_structurally_valid_latex(rows):
    df = pd.DataFrame(rows, columns=["value_x", "label#"])
    _structural_check(table_latex(df))


def test_empty_table_is_an_input_error():
    with pytest.raises(InputError, match="empty table"):
        table_latex(pd.DataFrame({"a": []}))


FAKE_PARTIAL_TEX = """#!/bin/sh
cat > /dev/null
echo "! LaTeX Error: File \\`lmodern.sty' not found."
exit 1
"""


def test_partial_tex_install_falls_back_to_pdf_naming_the_package(tmp_path, monkeypatch, caplog):
    """pdflatex present but lmodern missing: PGF export names 'lmodern'; the sweep's export keeps the PDF."""
    import os

    from fluidserve.sweep import outputs

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pdflatex").write_text(FAKE_PARTIAL_TEX)
    (bin_dir / "pdflatex").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(lx, "missing_tex_packages", lambda: [])  # as without kpsewhich
    with pytest.raises(MissingDependencyError, match="LaTeX package 'lmodern' is not installed"):
        export_figure(_figure(), tmp_path / "a", widths=("column",), formats=("pgf",))
    assert not (tmp_path / "a_column.pgf").exists()
    with caplog.at_level("WARNING"):
        paths = outputs._export(_figure(), tmp_path / "b", ["pgf", "pdf"])
    assert sorted(p.name for p in paths) == ["b_column.pdf", "b_text.pdf"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "lmodern" in warnings[0] and "PDF only" in warnings[0]


def test_columns_share_decimals_and_engines_go_in_a_second_header_row():
    df = pd.DataFrame({"rate": [100, 200], "e2e|fluid": [0.4321, 12.5], "e2e|sim": [0.001234, np.nan]})
    tex = table_latex(df, columns={"rate": "arrival rate (req/s)", "e2e|fluid": ("mean E2E (s)", "fluid"),
                                   "e2e|sim": ("mean E2E (s)", "sim")})
    lines = [ln.strip() for ln in tex.splitlines()]
    assert r"arrival rate (req/s) & \multicolumn{2}{c}{mean E2E (s)} \\" in lines
    assert r"& fluid & sim \\" in lines
    # 3 significant digits on the column's largest value, the same decimals for the whole column
    assert r"100 & 0.4 & 0.00123 \\" in lines and r"200 & 12.5 & -- \\" in lines
    tiny = table_latex(pd.DataFrame({"x": [2.5e-5, 3.25e-6]}))
    assert "2.50e-05" in tiny and "3.25e-06" in tiny
