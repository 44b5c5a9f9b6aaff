"""Comparing two runs' results in tests: their stats without what legitimately differs between equal runs."""

from __future__ import annotations

from typing import Any


VOLATILE = ("seconds", "rows_per_second", "outputs", "versions")  # timings, output paths, library versions


def stable(stats: dict[str, Any], *also: str) -> dict[str, Any]:
    """`stats` (a run's stats.json) without its volatile keys, at the top and in every step; `also` more keys."""
    drop = (*VOLATILE, *also)
    out = {k: v for k, v in stats.items() if k not in drop}
    out["steps"] = [{k: v for k, v in step.items() if k not in drop} for step in stats.get("steps", [])]
    return out
