"""Where a curated run's data came from: earlier mmsieve runs it read, the original source, and its license.

Multi-stage curation reads one run's `kept/` folder in the next run (`mmsieve dedup` then `mmsieve decontaminate`,
say). A card that showed only the last run would hide what the earlier ones dropped, so the card follows the
chain back: a run whose source is `X/kept` with `X/stats.json` beside it continues at X's source, up to the
original data. That source's license is carried over to the card: a Hub dataset's card metadata, or the
`README.md` of a local copy in the Hub layout.

Example:
    >>> stats = json.loads(Path("clean/stats.json").read_text())  # doctest: +SKIP
    >>> [run["source"] for run in earlier_runs(stats)]  # doctest: +SKIP
    ['deduped/kept']
    >>> original_source(stats), source_license(original_source(stats))  # doctest: +SKIP
    ('org/captions', 'cc-by-4.0')
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any


HUB_DATASET_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
MAX_EARLIER_RUNS = 32  # a chain longer than this is a loop (a run reading its own output)

__all__ = ["earlier_runs", "hub_dataset_id", "original_source", "source_license"]


def _local(source: str) -> Path | None:
    try:
        path = Path(source).expanduser()
        return path if path.exists() else None
    except (OSError, ValueError):
        return None


def _upstream_stats(source: str) -> dict[str, Any] | None:
    """The `stats.json` of the mmsieve run whose `kept/` (or `removed/`) folder `source` is, else None."""
    path = _local(source)
    if path is None or path.name not in ("kept", "removed") or not (path.parent / "stats.json").is_file():
        return None
    try:
        stats = json.loads((path.parent / "stats.json").read_text())
    except (OSError, ValueError):
        return None
    return stats if isinstance(stats, dict) and "rows_in" in stats else None


def earlier_runs(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The stats of the earlier mmsieve runs that produced this run's source, the original source's run first.

    Example:
        >>> earlier_runs({"source": "org/captions", "rows_in": 10})
        []
    """
    runs: list[dict[str, Any]] = []
    source = str(stats.get("source") or "")
    while len(runs) < MAX_EARLIER_RUNS and (upstream := _upstream_stats(source)) is not None:
        runs.append(upstream)
        source = str(upstream.get("source") or "")
    return runs[::-1]


def original_source(stats: Mapping[str, Any]) -> str:
    """The source the first run of the chain read (this run's own source when it read no earlier run's output).

    Example:
        >>> original_source({"source": "org/captions"})
        'org/captions'
    """
    runs = earlier_runs(stats)
    return str((runs[0] if runs else stats).get("source") or "")


def hub_dataset_id(source: str) -> str | None:
    """The Hub dataset id a source names (`org/name`, or an `hf://datasets/org/name[@rev]/...` URL), else None.

    Example:
        >>> hub_dataset_id("org/captions"), hub_dataset_id("hf://datasets/org/caps@v1/data/*.parquet")
        ('org/captions', 'org/caps')
        >>> hub_dataset_id("./local/folder") is None, hub_dataset_id("/data/x/y") is None
        (True, True)
    """
    if source.startswith("hf://datasets/"):
        parts = source[len("hf://datasets/") :].split("/")
        return f"{parts[0]}/{parts[1].partition('@')[0]}" if len(parts) >= 2 and all(parts[:2]) else None
    if HUB_DATASET_ID.match(source) and _local(source) is None:
        return source
    return None


def _card_license(text: str) -> str | None:
    from huggingface_hub import DatasetCard

    try:
        license_ = DatasetCard(text, ignore_metadata_errors=True).data.get("license")
    except Exception:  # a README without (valid) metadata says nothing about the license
        return None
    if isinstance(license_, list):
        license_ = license_[0] if len(license_) == 1 else None
    return str(license_) if license_ else None


def source_license(source: str) -> str | None:
    """The license a source declares: a Hub dataset's card metadata, or a local Hub-layout copy's `README.md`.

    Returns None when it declares none or cannot be read (offline, private without a token): the card then says
    `unknown` rather than guess.

    Example:
        >>> source_license("/nonexistent/folder") is None
        True
    """
    path = _local(source)
    if path is not None:
        folder = path if path.is_dir() else path.parent
        # the repo root of a Hub layout: the folder itself, or above its `data/` folder (`repo/data/train-*.parquet`)
        roots = [folder, *(parent.parent for parent in (folder, folder.parent) if parent.name == "data")]
        readme = next((root / "README.md" for root in roots if (root / "README.md").is_file()), None)
        return _card_license(readme.read_text(encoding="utf-8", errors="replace")) if readme else None
    repo_id = hub_dataset_id(source)
    if repo_id is None:
        return None
    from huggingface_hub import DatasetCard

    try:
        return _card_license(str(DatasetCard.load(repo_id, repo_type="dataset")))
    except Exception:  # offline, missing, gated: unknown
        return None
