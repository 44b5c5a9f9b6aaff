"""The demo's last stage: the curated shape captions as a complete Hub dataset repo, written to a local folder
(parquet shards, README card, score plots), and pushed when `--push-to` is given and a token is available.

Example:
    >>> stage = run_publish_stage(Path("demo_output"), push_to=None)  # doctest: +SKIP
    >>> stage["folder"]  # doctest: +SKIP
    'demo_output/hub/shape-captions'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run_publish_stage(
    out: Path, push_to: str | None = None, private: bool = False, verbose: bool = True
) -> dict[str, Any]:
    """Lay out `shape_captions_rewritten` (scored, rewritten, with its removed split) and `captions_decontaminated`
    (with its contamination table) as Hub dataset repos under `out/hub/`; push the first to `push_to`."""
    from mmsieve.hub.dataset_repo import build_dataset_repo

    layouts = {
        "shape-captions": (out / "shape_captions_rewritten", "mmsieve demo: scored and rewritten shape captions"),
        "captions": (out / "captions_decontaminated", "mmsieve demo: deduplicated, decontaminated captions"),
    }
    stage: dict[str, Any] = {"folders": {}}
    for name, (run_dir, title) in layouts.items():
        folder = build_dataset_repo(run_dir, out / "hub" / name, include_removed=True, pretty_name=title)
        stage["folders"][name] = str(folder)
        if verbose:
            files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
            print(f"\n== Hub repo layout of {run_dir.name}: {folder}\n  " + "\n  ".join(files))
    if push_to:
        from huggingface_hub import get_token

        from mmsieve.hub.publish import push_dataset

        if get_token() is None:
            stage["pushed"] = None
            if verbose:
                print(f"  not pushed to {push_to}: no token (set HF_TOKEN or run `hf auth login`)")
            return stage

        stage["pushed"] = push_dataset(
            layouts["shape-captions"][0],
            push_to,
            include_removed=True,
            private=private,
            pretty_name=layouts["shape-captions"][1],
        )
        if verbose:
            print(f"  pushed to {stage['pushed']['url']}")
    return stage


__all__ = ["run_publish_stage"]
