"""One writer for the tables and charts of ``fegan-compare``, ``fegan-ablate`` and ``fegan-report``.

pandas writes the CSV files and the Markdown tables (``DataFrame.to_markdown``, GitHub pipe format,
cells already formatted by the caller so a number shows as the tool means it); matplotlib draws the
grouped bar charts. Each tool decides what goes in a table, not how a table is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def write_csv(rows: Sequence[dict[str, Any]], path: Path, columns: Sequence[str] | None = None) -> None:
    """Write one row per dict (missing fields empty), columns in ``columns`` order or first-seen order."""
    import pandas as pd  # noqa: PLC0415 - only when a table is written

    pd.DataFrame(list(rows), columns=list(columns) if columns is not None else None).to_csv(path, index=False)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Render a GitHub Markdown table of already formatted cells; a short row is padded with empty cells."""
    import pandas as pd  # noqa: PLC0415

    padded = [list(row) + [""] * (len(header) - len(row)) for row in rows]
    return pd.DataFrame(padded, columns=list(header)).to_markdown(index=False, disable_numparse=True)


def grouped_bars(axis: Any, groups: Sequence[str], series: dict[str, Sequence[float]], title: str) -> None:
    """Bars of every series side by side within each group (e.g. models within categories)."""
    width = 0.8 / max(1, len(series))
    for index, (label, values) in enumerate(series.items()):
        axis.bar([i + index * width for i in range(len(groups))], list(values), width, label=label)
    axis.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], list(groups), fontsize=8)
    axis.set_title(title)


def new_figure(panels: int, size: tuple[float, float] = (4.0, 3.6), sharey: bool = False) -> tuple[Any, list[Any]]:
    """Open a headless matplotlib figure with ``panels`` axes in a row (``sharey``: one y scale for all)."""
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axes = plt.subplots(1, panels, figsize=(size[0] * panels, size[1]), squeeze=False, sharey=sharey)
    return figure, list(axes[0])


def save_figure(figure: Any, path: Path, dpi: int = 120) -> None:
    """Save and close (a tool may draw many figures in one process)."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
