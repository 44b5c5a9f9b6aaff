"""UniFilter quality metric: how well raw 0-3 quality scores match integer quality levels.

An `evaluate` module in the local-module layout (the folder and the script share a name), so it loads
offline from its path:

    >>> import evaluate
    >>> metric = evaluate.load("mmsieve/training/quality_metric")
    >>> metric.compute(predictions=[0.2, 2.6, 3.4], references=[0, 3, 3])["accuracy"]
    1.0

Self-contained on purpose: `evaluate` copies this one file into its modules cache and imports it from there.
"""

from __future__ import annotations

import math
import warnings

import datasets
import evaluate
import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


NUM_LEVELS = 4  # quality levels 0..3

_DESCRIPTION = """\
Scores a UniFilter-style quality classifier. `predictions` are the raw regression outputs (floats, nominally
0-3 but unclamped); `references` are the integer quality levels 0-3. The predicted class is
`round(clamp(score, 0, 3))`, exactly as the official UniFilter `compute_metrics` (Python's `round`: halves go
to the even level, so 0.5 -> 0 and 2.5 -> 2). Class metrics (accuracy, macro precision/recall/F1, confusion
matrix) use that class; `mae` and `spearman` use the raw score.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list` of `float`): raw quality scores, one per sample (finite).
    references (`list` of `int`): true quality levels, each in 0..3.
Returns:
    accuracy (`float`): fraction of samples whose rounded, clamped score equals the level.
    macro_precision / macro_recall / macro_f1 (`float`): unweighted means over the levels present in the
        references or the predicted classes (sklearn's default label set, as the official code), 0 where undefined.
    mae (`float`): mean absolute error of the raw score against the level.
    spearman (`float` or `None`): Spearman rank correlation of raw score and level; `None` when undefined
        (constant scores or constant levels, or fewer than two samples).
    confusion_matrix (`list[list[int]]`): 4x4 counts, rows = true level, columns = predicted level.
    num_samples (`int`): number of samples.
Examples:
    >>> metric = evaluate.load("mmsieve/training/quality_metric")
    >>> result = metric.compute(predictions=[-0.4, 1.2, 2.5, 3.9], references=[0, 1, 3, 3])
    >>> result["accuracy"], result["mae"]
    (0.75, 0.5)
"""

_CITATION = """\
@article{wang2025unifilter,
  title   = {Train a Unified Multimodal Data Quality Classifier with Synthetic Data},
  author  = {Wang, Weizhi and Lin, Rongmei and Li, Shiyang and Lockard, Colin and Sarkhel, Ritesh and
             Lokegaonkar, Sanket and Shang, Jingbo and Yan, Xifeng and Zalmout, Nasser and Li, Xian},
  journal = {arXiv preprint arXiv:2510.15162},
  year    = {2025}
}
"""


def class_from_score(score: float) -> int:
    """The quality level a raw score stands for: `round(clamp(score, 0, 3))` (official UniFilter readout)."""
    return int(round(max(0.0, min(float(score), float(NUM_LEVELS - 1)))))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class QualityMetric(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://arxiv.org/abs/2510.15162", "https://github.com/Victorwz/UniFilter"],
        )

    def _compute(self, predictions, references, predicted_classes=None) -> dict:
        scores = np.asarray(predictions, dtype=np.float64)
        labels = np.asarray(references, dtype=np.int64)
        if scores.size == 0:
            raise ValueError("quality_metric needs at least one prediction")
        if not np.isfinite(scores).all():
            raise ValueError("predictions must be finite numbers (found NaN or inf)")
        if labels.min() < 0 or labels.max() >= NUM_LEVELS:
            raise ValueError(
                f"references must be quality levels 0..{NUM_LEVELS - 1}, got {sorted(set(labels.tolist()))}"
            )
        if predicted_classes is None:  # a regression head: the class is the rounded, clamped score
            classes = np.array([class_from_score(s) for s in scores], dtype=np.int64)
        else:  # a classification head: its argmax (rounding its expected level would pull towards the middle)
            classes = np.asarray(predicted_classes, dtype=np.int64)
            if classes.shape != scores.shape:
                raise ValueError(f"got {classes.size} predicted_classes for {scores.size} predictions")
        precision, recall, f1, _ = precision_recall_fscore_support(labels, classes, average="macro", zero_division=0)
        return {
            "accuracy": float((classes == labels).mean()),
            "macro_precision": float(precision),
            "macro_recall": float(recall),
            "macro_f1": float(f1),
            "mae": float(np.abs(scores - labels).mean()),
            "spearman": _spearman(scores, labels),
            "confusion_matrix": confusion_matrix(labels, classes, labels=list(range(NUM_LEVELS))).tolist(),
            "num_samples": int(scores.size),
        }


def _spearman(scores: np.ndarray, labels: np.ndarray) -> float | None:
    if scores.size < 2 or np.ptp(scores) == 0 or np.ptp(labels) == 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = spearmanr(scores, labels).statistic
    return None if math.isnan(rho) else float(rho)
