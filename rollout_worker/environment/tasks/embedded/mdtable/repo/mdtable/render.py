"""render_table(): aligned GitHub-flavoured Markdown tables."""

_RULES = {"left": (":", "-"), "right": ("-", ":"), "center": (":", ":"), None: ("-", "-")}


def _cell(value):
    if value is None:
        return ""
    return str(value).replace("\r\n", " ").replace("\n", " ")


def render_table(headers, rows, align=None):
    """Render ``headers`` and ``rows`` (sequences of values) as a Markdown table string.

    ``align`` is an optional list of "left", "right", "center" or None per column.
    """
    header_cells = [str(h) for h in headers]
    body = [[_cell(value) for value in row] for row in rows]
    for number, row in enumerate(body, start=1):
        if len(row) != len(header_cells):
            raise ValueError(f"row {number} has {len(row)} cells, expected {len(header_cells)}")
    align = list(align) if align is not None else [None] * len(header_cells)
    if len(align) != len(header_cells):
        raise ValueError("align must have one entry per column")
    widths = [max(3, *(len(row[i]) for row in [header_cells, *body])) for i in range(len(header_cells))]

    def line(cells):
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + " |"

    rules = []
    for width, how in zip(widths, align):
        first, last = _RULES[how]
        rules.append(first + "-" * (width - 2) + last)
    return "\n".join([line(header_cells), "| " + " | ".join(rules) + " |", *(line(row) for row in body)])
