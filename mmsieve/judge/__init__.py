"""VLM/LLM-as-judge ratings (FineVision's four axes per turn, MLM-Filter's four metrics) and a filter on them.

Example:
    >>> from mmsieve.generation import OpenAIBackend
    >>> judge = Judge(OpenAIBackend("http://localhost:8000", "Qwen/Qwen2.5-VL-32B-Instruct"))
    >>> ds = ds.map(RatingFilter({"relevance": 3}, judge=judge), batched=True)  # doctest: +SKIP
"""

from mmsieve.judge.judge import METHODS, Judge, judge_columns
from mmsieve.judge.prompts import (
    AXIS_NAMES,
    FINEVISION_AXES,
    MLM_FILTER_METRICS,
    Axis,
    mlm_filter_prompt,
    parse_mlm_score,
    parse_rating,
)
from mmsieve.judge.rating_filter import RatingFilter, rating_column


__all__ = [
    "AXIS_NAMES",
    "FINEVISION_AXES",
    "METHODS",
    "MLM_FILTER_METRICS",
    "Axis",
    "Judge",
    "RatingFilter",
    "judge_columns",
    "mlm_filter_prompt",
    "parse_mlm_score",
    "parse_rating",
    "rating_column",
]
