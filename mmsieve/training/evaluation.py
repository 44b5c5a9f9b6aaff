"""Evaluation of a UniFilter-style quality classifier from its scores: metrics overall and per kind, and a report.

Running the model is not done here (the UniFilter scorer adds `unifilter_score` to a dataset); these functions
take the raw scores and the true levels:

    >>> results = evaluate_predictions(ds["unifilter_score"], ds["label"], kinds=ds["kind"])  # doctest: +SKIP
    >>> write_report(results, "eval/")  # doctest: +SKIP
    {'eval_results': PosixPath('eval/eval_results.json'), 'confusion_matrix': PosixPath('eval/confusion_matrix.png')}

The metrics are an `evaluate` module shipped next to this file (`quality_metric/`), loadable offline.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmsieve.sample import KINDS
from mmsieve.training.levels import LEVELS, Level
from mmsieve.training.quality_metric.quality_metric import NUM_LEVELS, class_from_score


QUALITY_METRIC_PATH = Path(__file__).parent / "quality_metric"
METRIC_KEYS = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "mae", "spearman", "confusion_matrix")
LevelRow = tuple[int, str, str]  # (level, name, definition)

__all__ = [
    "QUALITY_METRIC_PATH",
    "class_from_score",
    "evaluate_predictions",
    "level_rows",
    "load_quality_metric",
    "write_report",
]


@functools.cache
def load_quality_metric():
    """The `quality_metric` evaluate module, loaded once from its folder (works with `HF_HUB_OFFLINE=1`)."""
    import evaluate

    return evaluate.load(str(QUALITY_METRIC_PATH), keep_in_memory=True)


def evaluate_predictions(
    scores: Sequence[float | None],
    labels: Sequence[int],
    kinds: Sequence[str] | None = None,
    classes: Sequence[int | None] | None = None,
) -> dict[str, Any]:
    """Quality metrics of raw scores against true levels, overall and for each kind of sample present.

    Args:
        scores: the raw regression outputs (e.g. the `unifilter_score` column). `None` or NaN means the sample
            could not be scored (the scorer skipped it); such samples are left out and counted as `num_unscored`.
        labels: the true quality levels, 0-3.
        kinds: optional sample kinds (`caption`, `interleaved`, `conversation`, ...), one per score.
        classes: the predicted levels when the model has a classification head (its argmax, the scorer's
            `unifilter_class`); by default the class is `round(clamp(score, 0, 3))`, as for the regression head.

    Returns:
        `{"overall": metrics, "per_kind": {kind: metrics}}` where metrics holds `accuracy`, `macro_precision`,
        `macro_recall`, `macro_f1`, `mae`, `spearman` (None when undefined), `confusion_matrix` (4x4, rows = true
        level), `num_samples` and `num_unscored`. `per_kind` is empty without `kinds`.

    Example:
        >>> evaluate_predictions([0.1, 2.7, 1.4], [0, 3, 2], kinds=["caption", "caption", "interleaved"])["overall"]["accuracy"]
        0.6666666666666666
    """
    if len(scores) != len(labels):
        raise ValueError(f"got {len(scores)} scores but {len(labels)} labels; pass one label per score")
    if kinds is not None and len(kinds) != len(scores):
        raise ValueError(f"got {len(scores)} scores but {len(kinds)} kinds; pass one kind per score")
    if classes is not None and len(classes) != len(scores):
        raise ValueError(f"got {len(scores)} scores but {len(classes)} classes; pass one class per score")
    results: dict[str, Any] = {"overall": _metrics(scores, labels, classes), "per_kind": {}}
    if kinds is not None:
        present = set(kinds)
        order = [kind for kind in KINDS if kind in present] + sorted(present - set(KINDS))
        for kind in order:
            rows = [i for i, k in enumerate(kinds) if k == kind]
            picked = [classes[i] for i in rows] if classes is not None else None
            results["per_kind"][kind] = _metrics([scores[i] for i in rows], [labels[i] for i in rows], picked)
    return results


def _metrics(
    scores: Sequence[float | None], labels: Sequence[int], classes: Sequence[int | None] | None = None
) -> dict[str, Any]:
    rows = [i for i, s in enumerate(scores) if s is not None and not math.isnan(s)]
    unscored = len(scores) - len(rows)
    if not rows:
        return {**dict.fromkeys(METRIC_KEYS), "num_samples": 0, "num_unscored": unscored}
    extra = {"predicted_classes": [int(classes[i]) for i in rows]} if classes is not None else {}
    metrics = load_quality_metric().compute(
        predictions=[float(scores[i]) for i in rows], references=[int(labels[i]) for i in rows], **extra
    )
    return {**metrics, "num_unscored": unscored}


def level_rows(levels: Sequence[Level] | None = None) -> list[LevelRow]:
    """The quality levels as `(level, name, definition)` rows, sorted by level (default: `LEVELS`).

    Example:
        >>> level_rows()[3][:2]
        (3, 'good')
    """
    rows = sorted((int(lv.value), lv.name, lv.definition) for lv in (LEVELS if levels is None else levels))
    if [row[0] for row in rows] != list(range(NUM_LEVELS)):
        raise ValueError(f"levels must define each of 0..{NUM_LEVELS - 1} once, got {[row[0] for row in rows]}")
    return rows


def write_report(
    results: dict[str, Any], out_dir: str | Path, *, levels: Sequence[Level] | None = None
) -> dict[str, Path]:
    """Write `eval_results.json` and `confusion_matrix.png` (the overall matrix) into `out_dir`.

    Args:
        results: the output of `evaluate_predictions`.
        out_dir: the folder to write into (created if missing).
        levels: the levels whose names label the axes (default: `LEVELS`).

    Returns:
        `{"eval_results": json path, "confusion_matrix": png path}`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "eval_results.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    names = [f"{level} {name}" for level, name, _ in level_rows(levels)]
    png_path = out_dir / "confusion_matrix.png"
    _plot_confusion_matrix(results["overall"], names, png_path)
    return {"eval_results": json_path, "confusion_matrix": png_path}


def _plot_confusion_matrix(metrics: dict[str, Any], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.array(metrics["confusion_matrix"] or [[0] * NUM_LEVELS] * NUM_LEVELS)
    fig, ax = plt.subplots(figsize=(6, 5), dpi=120)
    image = ax.imshow(counts, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, label="samples")
    ticks = range(NUM_LEVELS)
    ax.set_xticks(ticks, names, rotation=30, ha="right")
    ax.set_yticks(ticks, names)
    ax.set_xlabel("predicted level")
    ax.set_ylabel("true level")
    accuracy = metrics["accuracy"]
    subtitle = f", accuracy {accuracy:.3f}" if accuracy is not None else ""
    ax.set_title(f"Quality levels (n={metrics['num_samples']}{subtitle})")
    dark = counts.max() / 2 if counts.max() else 1
    for true_level in ticks:
        for predicted_level in ticks:
            count = counts[true_level, predicted_level]
            color = "white" if count > dark else "black"
            ax.text(predicted_level, true_level, str(count), ha="center", va="center", color=color)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
