"""The demo's rewrite stage: the mechanics of quality-gated, adaptive rewriting, end to end on real files.

A DEMONSTRATION OF THE MECHANICS, not of a rewriting model: there is no VLM on this machine, so the "model" is a
scripted OpenAI-compatible server on 127.0.0.1 (`ScriptedChatServer`) that answers each image with its correct
easy-vqa caption (an oracle standing in for a VLM). Everything else is real: the demo classifier scores unseen shape
captions, the `Rewriter` sends the rows below the threshold over HTTP, rescores each rewrite with the same
classifier (adaptive mode) and keeps it only when the score went up; provenance columns record every decision.

Example:
    >>> stage = run_rewrite_stage(Path("demo_output"), "demo_output/model", records)  # doctest: +SKIP
    >>> stage["rewritten"], stage["reverted_by_adaptive"]  # doctest: +SKIP
    (212, 3)
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import Any

from mmsieve.generation.loopback import ScriptedChatServer, user_text


THRESHOLD = 2.0  # rewrite captions the demo classifier scores below this (its scores run from 0 to 3)
ROWS = 400


def oracle_captions(records: list[Any]) -> dict[str, str]:
    """sha1 of each image's bytes -> its level-3 (correct, well written) caption, from the generated records.

    Example:
        >>> oracle_captions(records)[hashlib.sha1(records[0].images[0]).hexdigest()]  # doctest: +SKIP
        'A blue circle on a white background.'
    """
    return {hashlib.sha1(r.images[0]).hexdigest(): r.text for r in records if r.kind == "caption" and r.label == 3}


def _oracle_reply(captions: dict[str, str]) -> Any:
    def reply(body: dict[str, Any]) -> str:
        for message in body.get("messages", []):
            for part in message.get("content") if isinstance(message.get("content"), list) else []:
                url = (part.get("image_url") or {}).get("url", "") if isinstance(part, dict) else ""
                if url.startswith("data:"):
                    digest = hashlib.sha1(base64.b64decode(url.split(",", 1)[1])).hexdigest()
                    if digest in captions:
                        return captions[digest]
        match = re.search(r"Caption: (.*)", user_text(body))
        return match.group(1) if match else ""  # an image it does not know: the caption back, unchanged

    return reply


def run_rewrite_stage(out: Path, checkpoint: str | Path, records: list[Any], verbose: bool = True) -> dict[str, Any]:
    """Score `ROWS` unseen shape captions with the demo classifier, rewrite those below `THRESHOLD` through the
    scripted server, adaptively; report how many were rewritten, by true level, and the scores before and after."""
    import datasets

    from mmsieve.filters import UniFilterScorer
    from mmsieve.generation import OpenAIBackend
    from mmsieve.rewrite import Rewriter
    from mmsieve.runner import run_steps

    scorer = UniFilterScorer(str(checkpoint))
    with ScriptedChatServer(_oracle_reply(oracle_captions(records))) as server:
        rewriter = Rewriter(
            OpenAIBackend(server.url, "oracle-vlm (scripted demo endpoint)", concurrency=16),
            threshold=THRESHOLD,
            rescorer=scorer,
            batch_size=64,
        )
        source = out / "sources" / "shape_captions"
        stats = run_steps(
            str(source), out / "shape_captions_rewritten", [scorer, rewriter], limit=ROWS, overwrite=True
        )
    rows = datasets.load_dataset("parquet", data_dir=str(out / "shape_captions_rewritten" / "kept"), split="train")
    rows = rows.remove_columns("image")
    rewritten = [r for r in rows if r["rewritten"]]
    reverted = [r for r in rows if (r["rewrite_reason"] or "").startswith("adaptive:")]
    by_level = Counter(r["label"] for r in rows)
    rewritten_by_level = Counter(r["label"] for r in rewritten)
    before = [r["unifilter_score"] for r in rewritten]
    after = [r["rewrite_score"] for r in rewritten]
    stage = {
        "note": "demonstration of the mechanics: the rewriting model is a scripted loopback endpoint (an oracle)",
        "rows": stats["rows_in"],
        "threshold": THRESHOLD,
        "below_threshold": sum(1 for r in rows if (r["unifilter_score"] or 0) < THRESHOLD),
        "rewritten": len(rewritten),
        "reverted_by_adaptive": len(reverted),
        "rewritten_by_true_level": {str(v): f"{rewritten_by_level[v]}/{by_level[v]}" for v in sorted(by_level)},
        "mean_score_before": round(sum(before) / len(before), 3) if before else None,
        "mean_score_after": round(sum(after) / len(after), 3) if after else None,
        "requests": server.answered,
    }
    if verbose:
        print("\n== rewrite (DEMONSTRATION of the mechanics: a scripted loopback endpoint plays the VLM)")
        print(
            f"  {stage['rows']} unseen shape captions scored, {stage['below_threshold']} below {THRESHOLD}: "
            f"{stage['rewritten']} rewritten, {stage['reverted_by_adaptive']} reverted by adaptive mode"
        )
        print(f"  rewritten by true level: {stage['rewritten_by_true_level']}")
        print(
            f"  demo-classifier score of the rewritten rows: {stage['mean_score_before']} -> {stage['mean_score_after']}"
        )
        print(f"  outputs: {out / 'shape_captions_rewritten'}/kept (original_text, rewrite_reason, rewrite_score)")
    return stage


__all__ = ["THRESHOLD", "oracle_captions", "run_rewrite_stage"]
