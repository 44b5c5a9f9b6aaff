"""`ScoreFilter`: keep samples whose score column reaches a threshold, or the top fraction of a run.

The score comes from the row when it is already there (a column written by an earlier scorer run)
or from the wrapped scorer. A fixed `threshold` filters in one pass. `keep_fraction` needs the
scores of the whole run first, so it takes two passes: score everything, `fit` the threshold at the
quantile, then filter; `run_steps` (and the CLI) do this for you when the filter is the last step.

Dropped rows carry `low_<column>` (e.g. `low_unifilter_score`) or, when the sample could not be
scored at all, the scorer's own reason (e.g. `image_truncated`).

Example:
    >>> from mmsieve.filters import UniFilterScorer  # doctest: +SKIP
    >>> f = ScoreFilter("unifilter_score", threshold=2.0, scorer=UniFilterScorer("weizhiwang/UniFilter-Qwen3-0.6B"))  # doctest: +SKIP
    >>> ds = ds.map(f, batched=True)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, ClassVar

from mmsieve.sample import DETAIL_COLUMN, KEEP_COLUMN, REASON_COLUMN, Sample
from mmsieve.schemas import Schema
from mmsieve.steps import Columns, SampleFilter, SampleScorer


UNSCORED = "unscored"


def top_fraction_threshold(scores: Iterable[float | None], keep_fraction: float) -> float:
    """The score of the last sample inside the top `keep_fraction` (None scores are never kept).

    Example:
        >>> top_fraction_threshold([0.1, 0.9, 0.5, None, 0.7], 0.5)
        0.7
    """
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    scores = list(scores)
    valid = sorted((float(s) for s in scores if s is not None and not math.isnan(s)), reverse=True)
    if not valid:
        raise ValueError("no sample has a score: cannot place a keep-fraction threshold")
    keep = max(1, min(len(valid), round(keep_fraction * len(scores))))
    return valid[keep - 1]


class ScoreFilter(SampleFilter):
    """Keeps samples whose `column` is >= `threshold`; drops the rest with `low_<column>`.

    Args:
        column: the score column (`unifilter_score`, `clip_score`, ...).
        threshold: keep samples scoring at least this.
        keep_fraction: instead of a threshold, keep this top fraction of the whole run (two passes;
            call `fit` with all scores first, or let `run_steps` do it).
        scorer: the step that computes `column` when a row does not carry it yet; its other columns
            are added too.
        reason: the drop reason (default `low_<column>`).
        error_column: the scorer's column explaining why a sample has no score.
    """

    name = "✂️ Score threshold"

    def __init__(
        self,
        column: str,
        threshold: float | None = None,
        keep_fraction: float | None = None,
        scorer: SampleScorer | None = None,
        reason: str | None = None,
        error_column: str | None = None,
        batch_size: int | None = None,
        schema: Schema | None = None,
        exclusion_writer: Any = None,
    ):
        if (threshold is None) == (keep_fraction is None):
            raise ValueError("give exactly one of threshold or keep_fraction")
        if keep_fraction is not None and not 0 < keep_fraction <= 1:
            raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
        batch_size = batch_size or (scorer.batch_size if scorer is not None else 256)
        super().__init__(batch_size=batch_size, schema=schema, exclusion_writer=exclusion_writer)
        self.column, self.threshold, self.keep_fraction = column, threshold, keep_fraction
        self.scorer = scorer
        self.reason = reason or f"low_{column}"
        self.error_column = error_column

    @property
    def needs_fit(self) -> bool:
        """True while a `keep_fraction` filter has no threshold yet (the scoring pass has not run)."""
        return self.threshold is None

    def fit(self, scores: Iterable[float | None]) -> float:
        """Place the threshold so that the top `keep_fraction` of `scores` is kept; returns it."""
        self.threshold = top_fraction_threshold(list(scores), self.keep_fraction or 1.0)
        return self.threshold

    def output_features(self) -> dict[str, Any]:
        return self.scorer.output_features() if self.scorer is not None else {}

    def parameters(self) -> dict[str, Any]:
        params = {"column": self.column, "threshold": self.threshold, "keep_fraction": self.keep_fraction}
        if self.scorer is not None and hasattr(self.scorer, "parameters"):
            params["scorer"] = self.scorer.parameters()
        return params

    def _to_score(self, samples: list[Sample]) -> list[Sample]:
        return [s for s in samples if s.meta.get(self.column) is None]

    def prepare(self, samples: list[Sample]) -> Any:
        todo = self._to_score(samples)
        return self.scorer.prepare(todo) if self.scorer is not None and todo else None

    def compute(self, samples: list[Sample], prepared: Any = None) -> Columns:
        if self.needs_fit:
            raise RuntimeError(
                f"keep_fraction={self.keep_fraction} needs the scores of the whole run: score first, then call "
                f"fit(scores) (run_steps and `mmsieve score --keep-fraction` do both passes)"
            )
        todo = self._to_score(samples)
        computed: Columns = {}
        if todo and self.scorer is not None:
            computed = self.scorer.compute(todo, prepared)
        out: Columns = {name: [s.meta.get(name) for s in samples] for name in self.output_features()}
        position = {id(s): k for k, s in enumerate(todo)}
        for name, values in computed.items():
            out.setdefault(name, [None] * len(samples))
            for i, sample in enumerate(samples):
                if id(sample) in position:
                    out[name][i] = values[position[id(sample)]]
        scores = out.get(self.column) or [s.meta.get(self.column) for s in samples]
        keep, reasons, details = [], [], []
        for i, score in enumerate(scores):
            if score is None or (isinstance(score, float) and math.isnan(score)):
                error = out.get(self.error_column, [None] * len(samples))[i] if self.error_column else None
                code, _, detail = (error or UNSCORED).partition(": ")
                keep.append(False)
                reasons.append(code)
                details.append(detail or f"no {self.column} for this sample")
            elif score >= self.threshold:
                keep.append(True)
                reasons.append(None)
                details.append(None)
            else:
                keep.append(False)
                reasons.append(self.reason)
                details.append(f"{self.column} {score:.4f} < {self.threshold:.4f}")
        return {KEEP_COLUMN: keep, REASON_COLUMN: reasons, DETAIL_COLUMN: details, **out}


class ModelScoreFilter(ScoreFilter):
    """A `ScoreFilter` around one scorer class: `Filter(model, threshold=... | keep_fraction=..., **scorer_options)`.

    Subclasses set `scorer_class`, `score_column` and `score_error_column`.
    """

    scorer_class: ClassVar[type[SampleScorer]]
    score_column: ClassVar[str]
    score_error_column: ClassVar[str]

    def __init__(
        self,
        model: str,
        threshold: float | None = None,
        keep_fraction: float | None = None,
        exclusion_writer: Any = None,
        **scorer_options: Any,
    ):
        super().__init__(
            self.score_column,
            threshold=threshold,
            keep_fraction=keep_fraction,
            scorer=self.scorer_class(model, **scorer_options),
            error_column=self.score_error_column,
            exclusion_writer=exclusion_writer,
        )
