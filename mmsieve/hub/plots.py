"""The figures of a dataset card: score histograms and the removed-by-reason chart, as deterministic PNG files.

Figures are drawn on a bare Agg canvas (no pyplot state, safe in worker processes) at a fixed size and resolution,
without timestamps, so an unchanged run gives byte-identical files and a re-publish uploads nothing.

Example:
    >>> reason_chart({"image_too_small": 3}, Path("repo/plots/mmsieve_reason.png"))  # doctest: +SKIP
    'plots/mmsieve_reason.png'
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


__all__ = ["reason_chart", "score_histograms"]


def _figure(height: float) -> Any:
    """A bare Agg figure of fixed size and resolution (no pyplot state, same pixels on every run)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100, metadata={"Software": None})


def score_histograms(shards: Sequence[Path], columns: Sequence[str], folder: Path) -> dict[str, str]:
    """A histogram per numeric column of the parquet `shards` (missing and non-finite values left out), written to
    `folder/<column>.png`; returns column -> path relative to the repo (`plots/<column>.png`).

    Example:
        >>> score_histograms([Path("repo/data/train-00000-of-00001.parquet")], ["clip_score"], Path("repo/plots"))  # doctest: +SKIP
        {'clip_score': 'plots/clip_score.png'}
    """
    from matplotlib.ticker import MaxNLocator

    if not shards or not columns:
        return {}
    table = pa.concat_tables([pq.read_table(shard, columns=columns) for shard in shards])
    plots = {}
    for column in columns:
        values = np.array([v for v in table[column].to_pylist() if v is not None], dtype=np.float64)
        values = values[np.isfinite(values)]
        if not len(values):
            continue
        integral = bool(np.all(values == np.round(values))) and values.max() - values.min() <= 100
        if integral:
            bins = np.arange(values.min() - 0.5, values.max() + 1.5)
        else:
            bins = np.linspace(values.min(), values.max(), 31) if values.max() > values.min() else 1
        figure = _figure(3.6)
        axes = figure.subplots()
        axes.hist(values, bins=bins, color="#4c72b0", edgecolor="white", rwidth=0.8 if integral else None)
        if integral:
            axes.set_xlim(values.min() - 1, values.max() + 1)
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_title(f"{column} (n={len(values)}, mean={values.mean():.3g}, median={np.median(values):.3g})")
        axes.set_xlabel(column)
        axes.set_ylabel("kept rows")
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", column)
        _save(figure, folder / f"{name}.png")
        plots[column] = f"plots/{name}.png"
    return plots


def reason_chart(removed_by_reason: Mapping[str, int], path: Path) -> str:
    """A horizontal bar chart of removed rows by reason, the most frequent on top; returns `plots/<file name>`.

    Example:
        >>> reason_chart({"image_too_small": 3, "text_empty": 1}, Path("repo/plots/mmsieve_reason.png"))  # doctest: +SKIP
        'plots/mmsieve_reason.png'
    """
    from matplotlib.ticker import MaxNLocator

    reasons = sorted(removed_by_reason.items(), key=lambda kv: (-kv[1], kv[0]))
    figure = _figure(max(2.4, 0.4 * len(reasons) + 1.2))
    axes = figure.subplots()
    labels, counts = [r for r, _ in reasons][::-1], [c for _, c in reasons][::-1]
    bars = axes.barh(labels, counts, height=0.6, color="#c44e52")
    axes.bar_label(bars, padding=3)
    axes.margins(x=0.12)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("removed rows")
    axes.set_title(f"Removed rows by reason (total {sum(counts)})")
    _save(figure, path)
    return f"plots/{path.name}"
