"""The `make demo` job: a small real multimodal set, with planted problems, through the pipeline.

The set has all three kinds, each in its own real-world schema:
- captions (COCO style `image` + `caption`): photos that ship inside scikit-image with captions
  written by hand (`captions.json`), plus broken rows;
- interleaved documents (OBELICS `images`/`texts`): short articles mixing those photos and text;
- conversations (FineVision `images` + `texts` of `{user, assistant}`): easy-vqa shape images with
  their questions and answers.

Then dedup (edited copies of the photos planted) and decontamination (easy-vqa test images planted, the
easy-vqa test split as the benchmark), a demo classifier trained, evaluated and used to filter, and quality-gated
rewriting of the captions it scores low (a demonstration of the mechanics: a scripted loopback endpoint plays the
VLM).

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


def run_demo(
    output: str | Path = "demo_output",
    verbose: bool = True,
    train_minutes: float = 3.0,
    train_images: int = 1000,
    push_to: str | None = None,
    private: bool = False,
) -> dict[str, Any]:
    """Build the demo sources under `output/sources`, run the hygiene pipeline on each, train a demo classifier
    (at most `train_minutes`, on `train_images` easy-vqa images), then score, filter and rewrite with it. Ends by
    writing the curated results as Hub dataset repos under `output/hub/` (pushed to `push_to` when given).

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
    from mmsieve.demo.dedup import run_dedup_stage

    report["dedup"] = run_dedup_stage(out, verbose)
    report["scoring"], training = _score_stage(out, verbose, train_minutes, train_images)
    from mmsieve.demo.rewrite import run_rewrite_stage

    report["rewrite"] = run_rewrite_stage(out, training["checkpoint"], training["test_records"], verbose)
    from mmsieve.demo.publish import run_publish_stage

    report["hub"] = run_publish_stage(out, push_to, private, verbose)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


def _score_stage(out: Path, verbose: bool, minutes: float, images: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train the demo classifier (at most 3 minutes), then score every kind's kept rows with it and filter a set of
    unseen shape captions, reporting how many of each true level the filter kept. Returns the report and the
    training result (its checkpoint and unseen test records)."""
    from collections import Counter

    import datasets

    from mmsieve.demo.training import train_demo_model, write_caption_source
    from mmsieve.filters import ScoreFilter, UniFilterScorer
    from mmsieve.runner import run_steps

    training = train_demo_model(out, minutes=minutes, images=images, verbose=verbose)
    checkpoint = training["checkpoint"]
    scoring: dict[str, Any] = {"training": {k: v for k, v in training.items() if k != "test_records"}}
    if verbose:
        print("\n== scoring the demo set with it (a shapes-only demo model: on photos its scores mean nothing)")
    for name in ("captions", "interleaved", "conversations"):
        run_steps(str(out / name / "kept"), out / f"{name}_scored", [UniFilterScorer(checkpoint)], overwrite=True)
        scored = json.loads((out / f"{name}_scored" / "stats.json").read_text())
        scoring[name] = {"rows": scored["rows_in"]}
        if verbose:
            print(f"  {name:<14} {scored['rows_in']:>3} rows scored -> {out / f'{name}_scored'}/kept")
    source = write_caption_source(training["test_records"], out / "sources" / "shape_captions")
    # the classifier has a 4-label head: keep the captions it puts in level 3 (its argmax, `unifilter_class`)
    keep_level3 = ScoreFilter(
        "unifilter_class", threshold=3, scorer=UniFilterScorer(checkpoint), error_column="unifilter_error"
    )
    stats = run_steps(str(source), out / "shape_captions_filtered", [keep_level3], overwrite=True)
    total = Counter(r.label for r in training["test_records"])
    kept_by_level: Counter[int] = Counter()
    if stats["kept"]:  # `datasets` cannot load an empty split
        kept_folder = out / "shape_captions_filtered" / "kept"
        kept_by_level.update(datasets.load_dataset("parquet", data_dir=str(kept_folder), split="train")["label"])
    scoring["filter"] = {
        "rule": "unifilter_class == 3",
        "rows_in": stats["rows_in"],
        "kept": stats["kept"],
        "kept_share_by_true_level": {str(v): round(kept_by_level[v] / total[v], 3) for v in sorted(total)},
    }
    if verbose:
        shares = ", ".join(f"level {v}: {kept_by_level[v]}/{total[v]}" for v in sorted(total))
        print(
            f"  filter unifilter_class == 3 on {stats['rows_in']} unseen shape captions: kept {stats['kept']} ({shares})"
        )
    return scoring, training
