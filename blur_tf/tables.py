"""The project's one table writer: fixed-width text tables and atomic CSV files.

`text_table` lays out the text tables of `blur_tf.evaluation.reports` (evaluate launcher) and
`blur_tf.meta.report` (meta_train / main); `write_csv_atomic` writes every CSV file.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence

from blur_tf.files import atomic_write


def text_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    title: Sequence[str] = (),
    align: str = "",
    min_widths: Sequence[int] = (),
    rule: bool = False,
) -> str:
    """Columns of strings padded to their widest cell and joined by two spaces.

    Args:
      header: the column names (first line after `title`).
      rows: one sequence of cell strings per line, as long as `header`.
      title: lines printed above the header.
      align: one character per column, 'l' (pad right) or 'r' (pad left); missing ones are
        'l'. Every column is padded, the last one too.
      min_widths: the least width of each column (missing ones: 0).
      rule: a line of dashes under the header.
    """
    table = [list(header)] + [list(r) for r in rows]
    least = list(min_widths) + [0] * (len(header) - len(min_widths))
    widths = [max([least[i]] + [len(r[i]) for r in table]) for i in range(len(header))]
    align = align.ljust(len(header), "l")

    def line(cells):
        return "  ".join(
            c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, align)
        )

    dashes = [line(["-" * w for w in widths])] if rule else []
    return "\n".join([*title, line(table[0]), *dashes, *[line(r) for r in table[1:]]])


def write_csv_atomic(path: str, rows: Sequence) -> None:
    """Writes rows (dicts with equal keys, or dataclasses of one type) as CSV via a temporary
    file and an atomic rename; the columns are the first row's keys (fields) in order."""
    rows = [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else r for r in rows]
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
