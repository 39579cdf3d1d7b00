"""Exports for papers: LaTeX figures (PGF/PDF at column and text width), booktabs tables, sweep plots."""

from fluidserve.export.latex import (
    WIDTHS_IN,
    export_figure,
    export_table,
    latex_rc,
    latex_style,
    table_latex,
    tex_available,
)

__all__ = ["WIDTHS_IN", "export_figure", "export_table", "latex_rc", "latex_style", "table_latex", "tex_available"]
