"""How digitlab writes a value as text, and the aligned plain-text table: one home for both.

Every table, report and sweep label writes a setting or a figure with `value_text`, so a list
of hidden units reads "64 64" everywhere (as `--units 64 64` and `--grid 'units=64 64'` take it),
a float keeps four significant digits unless a column asks for its own format, and a missing
value reads the same in every row of a table.

    from digitlab import text
    text.value_text([64, 64])                    # "64 64"
    text.value_text(0.123456)                    # "0.1235"
    text.value_text(0.98765, ".2f")              # "0.99"
    text.value_text(None, missing="-")           # "-"
    print(text.aligned_table(("run", "lr"), [("a", "0.1"), ("bb", "0.01")]))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def value_text(value, spec: str = "", missing: str = "none") -> str:
    """`value` as text: None as `missing`, lists by spaces ("none" when empty), `spec` as format's
    (floats to 4 significant digits without one), anything else as `str` writes it."""
    if value is None:
        return missing
    if isinstance(value, (list, tuple)):
        return " ".join(value_text(item, spec, missing) for item in value) or "none"
    if spec:
        return format(value, spec)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def aligned_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A plain-text table: each column as wide as its widest cell, two spaces apart, no trailing spaces."""
    lines = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(str(line[column])) for line in lines) for column in range(len(header))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines
    )
