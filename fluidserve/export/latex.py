"""Figures and tables for LaTeX: PGF/PDF at \\columnwidth and \\textwidth, booktabs tables.

* :func:`latex_style` is a context manager with LaTeX-like matplotlib rcParams (serif Computer
  Modern fonts, 8 pt text); build figures inside it for a consistent look.
* :func:`export_figure` saves any Figure at the standard widths (``column`` = 3.0 in, ``text`` =
  6.2 in: they fit a two-column ``article`` page on letter and A4; or a number of inches) as
  ``<stem>_<width>.pgf`` and ``.pdf``. Text sizes
  are set in points, so an ``\\input{...pgf}`` figure matches the document's fonts (the document
  needs ``\\usepackage{pgf}``; the file defines matplotlib's ``\\mathdefault`` itself). Writing PGF
  needs a TeX installation (matplotlib measures text with pdflatex); PDF does not (it then
  uses matplotlib's Computer Modern fonts instead of TeX's).
* :func:`export_table` writes a DataFrame as a booktabs ``tabular`` (``\\toprule``,
  ``\\midrule``, ``\\bottomrule``) through pandas' Styler, with LaTeX-escaped cells.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from fluidserve.errors import InputError, MissingDependencyError

# LaTeX's article class, two columns, 10 pt: \textwidth = paper width - 2 in (6.5 in on letter,
# 6.27 in on A4), \columnsep = 10 pt, so \columnwidth = 3.18 in (letter) / 3.06 in (A4). These
# widths fit both papers (at 3.4 / 7.0 in a figure stuck out of an article's column and page).
WIDTHS_IN = {"column": 3.0, "text": 6.2}
FONT_PT = {"title": 9.0, "label": 8.0, "tick": 7.0, "legend": 7.0}
TEX_SYSTEM = "pdflatex"
PGF_PREAMBLE = "\n".join([r"\usepackage[T1]{fontenc}", r"\usepackage{lmodern}", r"\usepackage{amsmath}"])


#: LaTeX packages the PGF export and the documents including it need (``\usepackage``).
TEX_PACKAGES = ("fontenc", "lmodern", "amsmath", "pgf", "booktabs")
#: the Debian/Ubuntu packages that hold them.
TEX_DEBIAN = "texlive-latex-base texlive-latex-recommended texlive-fonts-recommended texlive-pictures"
_MISSING_FILE = re.compile(r"File [`']([^`']+?)(?:\.sty)?' not found")


def tex_available() -> bool:
    """Whether the TeX binary the PGF backend uses is on PATH."""
    return shutil.which(TEX_SYSTEM) is not None


def missing_tex_packages() -> list[str]:
    """Of :data:`TEX_PACKAGES`, those ``kpsewhich`` cannot find ([] when kpsewhich is absent:
    then a missing package shows up only when PGF export runs, see :func:`export_figure`)."""
    import subprocess

    if shutil.which("kpsewhich") is None:
        return []
    missing = []
    for name in TEX_PACKAGES:
        proc = subprocess.run(["kpsewhich", f"{name}.sty"], capture_output=True, text=True)
        if proc.returncode != 0 or not proc.stdout.strip():
            missing.append(name)
    return missing


def missing_package_in(message: str) -> str | None:
    """The package named by a ``LaTeX Error: File `X.sty' not found`` in TeX's output, if any."""
    m = _MISSING_FILE.search(message)
    return m.group(1) if m else None


def latex_rc() -> dict:
    """matplotlib rcParams for LaTeX-like figures (no TeX needed to use them)."""
    return {
        "font.family": "serif",
        "font.serif": ["cmr10", "Computer Modern Roman", "DejaVu Serif"],
        "mathtext.fontset": "cm",
        "axes.formatter.use_mathtext": True,
        "axes.unicode_minus": False,
        "font.size": FONT_PT["label"],
        "axes.titlesize": FONT_PT["title"],
        "axes.labelsize": FONT_PT["label"],
        "xtick.labelsize": FONT_PT["tick"],
        "ytick.labelsize": FONT_PT["tick"],
        "legend.fontsize": FONT_PT["legend"],
        "lines.linewidth": 1.0,
        "lines.markersize": 3.0,
        "axes.linewidth": 0.6,
        "grid.linewidth": 0.4,
        "pgf.texsystem": TEX_SYSTEM,
        "pgf.rcfonts": False,
        "pgf.preamble": PGF_PREAMBLE,
        "savefig.bbox": "standard",
    }


@contextlib.contextmanager
def latex_style():
    """``with latex_style(): fig = ...`` builds figures with :func:`latex_rc`."""
    import matplotlib

    with matplotlib.rc_context(latex_rc()):
        yield


def width_in(width: str | float) -> float:
    if isinstance(width, str):
        if width not in WIDTHS_IN:
            raise InputError(f"figure width must be one of {', '.join(WIDTHS_IN)} or inches, got {width!r}")
        return WIDTHS_IN[width]
    if not np.isfinite(width) or width <= 0:
        raise InputError(f"figure width must be > 0 inches, got {width!r}")
    return float(width)


def _restyle_text(fig) -> None:
    """Serif fonts at fixed point sizes on every text of the figure (titles, labels, ticks, legends)."""
    from matplotlib.text import Text

    rc = latex_rc()
    for text in fig.findobj(Text):
        text.set_fontfamily(rc["font.family"])
        text.set_fontsize(FONT_PT["label"])
    for ax in fig.axes:
        ax.title.set_fontsize(FONT_PT["title"])
        ax.tick_params(labelsize=FONT_PT["tick"])
        for tick in ax.get_xticklabels() + ax.get_yticklabels():
            tick.set_fontsize(FONT_PT["tick"])
        ax.xaxis.get_offset_text().set_fontsize(FONT_PT["tick"])
        ax.yaxis.get_offset_text().set_fontsize(FONT_PT["tick"])
        legend = ax.get_legend()
        if legend is not None:
            for t in legend.get_texts():
                t.set_fontsize(FONT_PT["legend"])
    if getattr(fig, "_suptitle", None) is not None:
        fig._suptitle.set_fontsize(FONT_PT["title"])


_TEX_SPECIAL = re.compile(r"(?<!\\)([&_#])")


def tex_escape_text(text: str) -> str:
    """Escape ``& _ #`` outside ``$...$`` math (the PGF backend passes text to TeX as is)."""
    parts = re.split(r"(?<!\\)(\$)", text)
    out, math = [], False
    for part in parts:
        if part == "$":
            math = not math
            out.append(part)
        else:
            out.append(part if math else _TEX_SPECIAL.sub(r"\\\1", part))
    return "".join(out)


@contextlib.contextmanager
def _tex_safe_text(fig):
    """Temporarily TeX-escape every text of ``fig`` (for the PGF backend only)."""
    from matplotlib.text import Text

    saved = [(t, t.get_text()) for t in fig.findobj(Text) if t.get_text()]
    try:
        for t, s in saved:
            t.set_text(tex_escape_text(s))
        yield
    finally:
        for t, s in saved:
            t.set_text(s)


def _self_contained_pgf(path: Path) -> None:
    """Define matplotlib's ``\\mathdefault`` (tick labels use it) in the file, if not yet defined."""
    text = path.read_text()
    path.write_text("\\providecommand{\\mathdefault}[1]{#1}%\n" + text)


def export_figure(fig, stem: str | Path, widths: Iterable[str | float] = ("column", "text"),
                  formats: Iterable[str] = ("pgf", "pdf"), aspect: float | None = None) -> list[Path]:
    """Save ``fig`` for LaTeX at each width: ``<stem>_<width>.<fmt>``; returns the paths written.

    Args:
        widths: "column" (3.0 in), "text" (6.2 in) or inches.
        formats: "pgf" (needs pdflatex, else MissingDependencyError), "pdf", "png".
        aspect: height / width; default: the figure's own aspect (at most 0.6 at widths over 5 in).
    """
    import matplotlib

    formats = list(formats)
    bad = [f for f in formats if f not in ("pgf", "pdf", "png")]
    if bad:
        raise InputError(f"figure format must be pgf, pdf or png, got {bad[0]!r}")
    if "pgf" in formats and not tex_available():
        raise MissingDependencyError(
            f"PGF export needs {TEX_SYSTEM} (matplotlib measures text with TeX): install TeX, e.g. Debian's "
            f"{TEX_DEBIAN}, or export formats=('pdf',)"
        )
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    w0, h0 = fig.get_size_inches()
    own = h0 / w0
    out: list[Path] = []
    with matplotlib.rc_context(latex_rc()):
        _restyle_text(fig)
        for width in widths:
            w = width_in(width)
            ratio = aspect if aspect is not None else (own if w < 5 else min(own, 0.6))
            fig.set_size_inches(w, w * ratio)
            if fig.get_layout_engine() is None:
                fig.set_layout_engine("constrained")
            tag = width if isinstance(width, str) else f"{w:g}in"
            for fmt in formats:
                path = stem.parent / f"{stem.name}_{tag}.{fmt}"
                if fmt == "pgf":
                    from matplotlib.backends.backend_pgf import LatexError

                    try:
                        with _tex_safe_text(fig):
                            fig.savefig(path, backend="pgf")
                    except (LatexError, RuntimeError, OSError) as exc:
                        path.unlink(missing_ok=True)
                        package = missing_package_in(str(exc))
                        what = f"the LaTeX package '{package}' is not installed" if package else \
                            f"{TEX_SYSTEM} failed ({' '.join(str(exc).split())[:200]})"
                        raise MissingDependencyError(
                            f"PGF export: {what}; install {TEX_DEBIAN} (it needs {', '.join(TEX_PACKAGES)})"
                        ) from None
                    _self_contained_pgf(path)
                else:
                    fig.savefig(path, format=fmt, dpi=200)
                out.append(path)
    fig.set_size_inches(w0, h0)
    return out


def _escape(text: str) -> str:
    """Escape LaTeX specials in a plain-text cell."""
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(repl.get(c, c) for c in str(text))


def table_latex(df: pd.DataFrame, columns: Mapping[str, str] | None = None, precision: int = 3,
                caption: str | None = None, label: str | None = None) -> str:
    r"""A booktabs ``tabular`` (inside a ``table`` when ``caption`` or ``label`` is given).

    Args:
        columns: column -> header text (plain text, escaped); others keep their (escaped) names.
            A ``(group, sub)`` tuple makes a two-row header: ``group`` spans its columns
            (``\multicolumn``), ``sub`` is written below it (e.g. a metric over its engines).
        precision: significant digits of the largest value of a float column; every value of the
            column gets the same number of decimals, so the column's digits line up (as siunitx's
            fixed rounding does); columns beyond [1e-3, 1e6) use scientific notation with
            ``precision`` digits. Integral floats print as integers.
    """
    if df.empty:
        raise InputError("cannot export an empty table")
    frame = df.copy()
    raw = {c: (columns or {}).get(c, c) for c in frame.columns}
    two_rows = any(isinstance(h, tuple) for h in raw.values())
    headers = {c: tuple(_escape(x) for x in h) if isinstance(h, tuple) else ((_escape(h), "") if two_rows else _escape(h))
               for c, h in raw.items()}
    formatters = {}
    for c in frame.columns:
        col = frame[c]
        if pd.api.types.is_float_dtype(col):
            integral = bool(np.all(np.isnan(col) | (np.mod(col.fillna(0), 1) == 0))) and col.abs().max() < 1e15
            if integral:
                formatters[c] = lambda v: "--" if pd.isna(v) else f"{int(v):d}"
            else:
                formatters[c] = _column_format(col, precision)
        elif pd.api.types.is_integer_dtype(col) or pd.api.types.is_bool_dtype(col):
            formatters[c] = str
        else:
            formatters[c] = lambda v: _escape(v)
    frame.columns = pd.MultiIndex.from_tuples([headers[c] for c in frame.columns]) if two_rows \
        else [headers[c] for c in frame.columns]
    styler = frame.style.hide(axis="index")
    styler = styler.format({headers[c]: f for c, f in formatters.items()})
    align = "".join("r" if pd.api.types.is_numeric_dtype(df[c]) else "l" for c in df.columns)
    kwargs = {"hrules": True, "column_format": align}
    if two_rows:
        kwargs["multicol_align"] = "c"
    if caption is not None or label is not None:
        kwargs.update(caption=_escape(caption) if caption else None, label=label, position_float="centering")
    return styler.to_latex(**kwargs)


def _column_format(col: pd.Series, precision: int):
    """One format for every value of a float column (see :func:`table_latex`)."""
    finite = col[np.isfinite(col)].abs()
    big = float(finite.max()) if len(finite) else 0.0
    if big == 0.0 or 1e-3 <= big < 1e6:
        decimals = max(0, precision - 1 - int(np.floor(np.log10(big)))) if big > 0 else precision - 1
        return lambda v, d=decimals: "--" if pd.isna(v) else f"{v:.{d}f}"
    return lambda v, p=precision: "--" if pd.isna(v) else f"{v:.{p - 1}e}"


def export_table(df: pd.DataFrame, path: str | Path, **kwargs) -> Path:
    """Write :func:`table_latex` to ``path`` (``.tex``); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table_latex(df, **kwargs))
    return path
