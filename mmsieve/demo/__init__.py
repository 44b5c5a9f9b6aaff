"""The `make demo` job: a small real multimodal set, with planted problems, through the pipeline.

The set has all three kinds, each in its own real-world schema:
- captions (COCO style `image` + `caption`): photos that ship inside scikit-image with captions
  written by hand (`captions.json`), plus broken rows;
- interleaved documents (OBELICS `images`/`texts`): short articles mixing those photos and text;
- conversations (FineVision `images` + `texts` of `{user, assistant}`): easy-vqa shape images with
  their questions and answers.

Example:
    >>> report = run_demo("demo_output")  # doctest: +SKIP
    >>> report["summary"]["captions"]["removed_by_reason"]  # doctest: +SKIP
    {'image_truncated': 1, ...}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmsieve.demo.corpus import build_captions, build_conversations, build_interleaved


def run_demo(output: str | Path = "demo_output", verbose: bool = True) -> dict[str, Any]:
    """Build the demo sources under `output/sources` and run the hygiene pipeline on each.

    Returns a report with the stats of every run and a compact `summary` (rows in, kept, removed
    by reason per source). Results go to `output/<source>/{kept,removed,stats.json}`.
    """
    import datasets

    from mmsieve.filters import HygieneFilter
    from mmsieve.runner import run_steps

    datasets.disable_progress_bars()
    out = Path(output)
    sources = {
        "captions": build_captions(out / "sources" / "captions"),
        "interleaved": build_interleaved(out / "sources" / "interleaved"),
        "conversations": build_conversations(out / "sources" / "conversations"),
    }
    report: dict[str, Any] = {"runs": {}, "summary": {}}
    for name, source in sources.items():
        stats = run_steps(str(source), out / name, [HygieneFilter()], tasks=2, workers=1, overwrite=True)
        report["runs"][name] = stats
        report["summary"][name] = {k: stats[k] for k in ("rows_in", "kept", "removed", "removed_by_reason")}
        if verbose:
            print(f"\n== {name} ({stats['format']} schema, {source})")
            print(f"rows in {stats['rows_in']}  kept {stats['kept']}  removed {stats['removed']}")
            for reason, count in stats["removed_by_reason"].items():
                print(f"  removed {count:>3}  {reason}")
            print(f"  outputs: {out / name}/kept, {out / name}/removed, {out / name}/stats.json")
    report["scoring"] = _score_stage(out, verbose)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


def _score_stage(out: Path, verbose: bool) -> dict[str, Any]:
    """Score every kind's kept rows with UniFilter. No trained checkpoint exists offline yet, so this uses a
    tiny RANDOM checkpoint in the official format: it shows the mechanics, its numbers mean nothing."""
    from mmsieve.filters import UniFilterScorer
    from mmsieve.models.tiny import build_tiny_unifilter
    from mmsieve.runner import run_steps

    checkpoint = build_tiny_unifilter(out / "models" / "tiny-random-unifilter")
    scoring: dict[str, Any] = {"checkpoint": str(checkpoint), "trained": False}
    if verbose:
        print(f"\n== UniFilter scoring with a tiny RANDOM checkpoint ({checkpoint}): mechanics only, scores are noise")
    for name in ("captions", "interleaved", "conversations"):
        stats = run_steps(
            str(out / name / "kept"), out / f"{name}_scored", [UniFilterScorer(str(checkpoint))], overwrite=True
        )
        scored = json.loads((out / f"{name}_scored" / "stats.json").read_text())
        scoring[name] = {"rows": scored["rows_in"], "rows_per_second": stats["rows_per_second"]}
        if verbose:
            print(
                f"  {name:<14} {scored['rows_in']:>3} rows scored -> {out / f'{name}_scored'}/kept (unifilter_score column)"
            )
    return scoring
