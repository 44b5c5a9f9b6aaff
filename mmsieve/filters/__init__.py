"""Filters and scorers: one file per capability, each a pure batch core plus its steps."""

from mmsieve.filters.hygiene import HygieneConfig, HygieneFilter, approx_tokens, hygiene_checks


__all__ = ["HygieneConfig", "HygieneFilter", "approx_tokens", "hygiene_checks"]
