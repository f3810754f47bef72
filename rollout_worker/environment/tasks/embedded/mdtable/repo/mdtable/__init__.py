"""mdtable: Markdown tables from Python data."""

from .render import render_table

__all__ = ["render_table"]
__version__ = "0.4.0"
