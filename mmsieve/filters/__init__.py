"""Filters and scorers: one file per capability, each a pure batch core plus its steps."""

from mmsieve.filters.clip_score import ClipScoreFilter, ClipScoreScorer, clip_score_columns
from mmsieve.filters.hygiene import HygieneConfig, HygieneFilter, approx_tokens, hygiene_checks
from mmsieve.filters.score_filter import ScoreFilter, top_fraction_threshold
from mmsieve.filters.unifilter import UniFilterFilter, UniFilterScorer


__all__ = [
    "ClipScoreFilter",
    "ClipScoreScorer",
    "HygieneConfig",
    "HygieneFilter",
    "ScoreFilter",
    "UniFilterFilter",
    "UniFilterScorer",
    "approx_tokens",
    "clip_score_columns",
    "hygiene_checks",
    "top_fraction_threshold",
]
