"""`RatingFilter`: keep rows whose judge ratings reach per-axis minimums (FineVision `*_min`, MLM-Filter scores).

A name in `min_ratings` is a FineVision axis (`relevance` reads `relevance_min`), an MLM-Filter metric
(`image_text_matching` reads `image_text_matching_score`) or any column. Ratings come from the row when an earlier
judge run wrote them, else from the wrapped `Judge`. A missing rating (the judge could not rate that turn) passes by
default, as in nanoVLM's FineVision loader; `missing="drop"` drops it instead. A dropped row's reason is
`low_<column>` for the first axis below its minimum.

Example:
    >>> f = RatingFilter({"relevance": 3, "formatting": 4})  # doctest: +SKIP
    >>> ds = ds.map(f, batched=True)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from mmsieve.judge.judge import Judge
from mmsieve.judge.prompts import AXIS_NAMES, MLM_FILTER_METRICS
from mmsieve.sample import DETAIL_COLUMN, KEEP_COLUMN, REASON_COLUMN, Sample
from mmsieve.schemas import Schema
from mmsieve.steps import Columns, SampleFilter


def rating_column(name: str) -> str:
    """The column a `min_ratings` name reads.

    Example:
        >>> rating_column("relevance"), rating_column("image_text_matching"), rating_column("clip_score")
        ('relevance_min', 'image_text_matching_score', 'clip_score')
    """
    if name in AXIS_NAMES:
        return f"{name}_min"
    if name in MLM_FILTER_METRICS:
        return f"{name}_score"
    return name


class RatingFilter(SampleFilter):
    """Keeps rows whose every listed rating is at least its minimum.

    Args:
        min_ratings: name -> minimum (inclusive), e.g. `{"relevance": 3}` or `{"image_text_matching": 66,
            "object_detail_fulfillment": 20}` (MLM-Filter's best DataComp setting).
        judge: computes the ratings of rows that do not carry them yet; its columns are added too.
        missing: `"keep"` (default) or `"drop"` a row whose rating is missing.

    Example:
        >>> RatingFilter({"relevance": 3}).columns
        {'relevance_min': 3}
    """

    name = "✂️ Rating threshold"

    def __init__(
        self,
        min_ratings: Mapping[str, float],
        *,
        judge: Judge | None = None,
        missing: Literal["keep", "drop"] = "keep",
        batch_size: int | None = None,
        schema: Schema | None = None,
        exclusion_writer: Any = None,
    ) -> None:
        if not min_ratings:
            raise ValueError("give at least one minimum rating")
        if missing not in ("keep", "drop"):
            raise ValueError(f"missing must be 'keep' or 'drop', got {missing!r}")
        batch_size = batch_size or (judge.batch_size if judge is not None else 256)
        super().__init__(batch_size=batch_size, schema=schema, exclusion_writer=exclusion_writer)
        self.columns = {rating_column(name): value for name, value in min_ratings.items()}
        self.judge, self.missing = judge, missing

    def output_features(self) -> dict[str, Any]:
        return self.judge.output_features() if self.judge is not None else {}

    def parameters(self) -> dict[str, Any]:
        """The settings recorded in `stats.json` and the dataset card."""
        params: dict[str, Any] = {"min_ratings": self.columns, "missing": self.missing}
        if self.judge is not None:
            params["judge"] = self.judge.parameters()
        return params

    def compute(self, samples: list[Sample], prepared: Any = None) -> Columns:
        todo = [i for i, s in enumerate(samples) if any(c not in s.meta for c in self.columns)]
        out: Columns = {name: [s.meta.get(name) for s in samples] for name in self.output_features()}
        if todo and self.judge is not None:
            computed = self.judge.compute([samples[i] for i in todo])
            for name, values in computed.items():
                for i, value in zip(todo, values, strict=True):
                    out[name][i] = value
        keep, reasons, details = [], [], []
        for i, sample in enumerate(samples):
            verdict = None
            for column, minimum in self.columns.items():
                value = out[column][i] if column in out else sample.meta.get(column)
                if value is None:
                    if self.missing == "drop":
                        verdict = (f"no_{column}", f"{column} is missing")
                        break
                elif value < minimum:
                    verdict = (f"low_{column}", f"{column} {value} < {minimum}")
                    break
            keep.append(verdict is None)
            reasons.append(verdict[0] if verdict else None)
            details.append(verdict[1] if verdict else None)
        return {KEEP_COLUMN: keep, REASON_COLUMN: reasons, DETAIL_COLUMN: details, **out}


__all__ = ["RatingFilter", "rating_column"]
