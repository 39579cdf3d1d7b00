"""Helpers to prove exported files open: render PDFs, compile LaTeX where TeX is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

HAVE_PDFTOPPM = shutil.which("pdftoppm") is not None
HAVE_PDFLATEX = shutil.which("pdflatex") is not None


def pdf_pages_and_size_in(path: Path) -> tuple[int, float, float]:
    """(pages, width_in, height_in) read by a PDF reader library (pypdf)."""
    pypdf = pytest.importorskip("pypdf")
    reader = pypdf.PdfReader(str(path))
    box = reader.pages[0].mediabox
    return len(reader.pages), float(box.width) / 72.0, float(box.height) / 72.0


def render_png(pdf: Path, dpi: int = 60) -> np.ndarray:
    """The first page rendered by pdftoppm, as an RGB array in [0, 1]."""
    from matplotlib.image import imread

    stem = pdf.with_suffix("")
    subprocess.run(["pdftoppm", "-png", "-r", str(dpi), "-singlefile", str(pdf), str(stem) + "-render"],
                   check=True, capture_output=True, timeout=60)
    return imread(str(stem) + "-render.png")[..., :3]


def check_pdf(path: Path, width_in: float, max_ink: float = 0.5) -> None:
    """The PDF opens, has one page of the given width, and (if pdftoppm exists) renders non-blank."""
    pages, w, h = pdf_pages_and_size_in(path)
    assert pages == 1
    assert w == pytest.approx(width_in, abs=0.02)
    assert 0.3 * width_in < h < 2.0 * width_in
    if HAVE_PDFTOPPM:
        img = render_png(path)
        assert img.shape[1] == pytest.approx(width_in * 60, abs=2)
        ink = (img.mean(-1) < 0.8).mean()
        assert 0.005 < ink < max_ink, ink


def compile_latex(body: str, directory: Path, preamble: str = "") -> Path:
    """pdflatex a small article around ``body`` in ``directory``; returns the PDF (fails on errors)."""
    tex = directory / "doc.tex"
    tex.write_text("\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{lmodern}\n"
                   "\\usepackage{amsmath}\n\\usepackage{pgf}\n\\usepackage{booktabs}\n" + preamble
                   + "\\begin{document}\n" + body + "\n\\end{document}\n")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=directory,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    return directory / "doc.pdf"
