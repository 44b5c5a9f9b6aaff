"""Benchmark of publishing a curated run and of reading a source as a stream, measured in one run.

A run folder is made first: `--rows` caption pairs with real JPEGs (the scikit-image photos, resized and
re-encoded at quality 85, about 20-60 kB each) and a score column, through `HygieneFilter` with `--tasks` tasks.
Then, against the loopback Hub of the tests (a real HTTP server on 127.0.0.1, git-LFS uploads, no Xet):
  a. publishing the kept rows: `mmsieve.hub.publish.push_dataset` (bounded shards, card, histograms, manifest, one
     commit) against the usual way, `load_dataset("parquet", data_dir=kept).push_to_hub(repo)`: the time ratio;
  b. publishing the same run again (ours rebuilds the layout, byte-identical, then finds nothing changed): the time
     of each second publish over its first, and the LFS uploads and commits each made;
  c. reading the kept rows as Sample documents with `SampleReader`: streaming (no preparation) against prepared
     (`load_dataset` converts the parquet files to the arrow cache first), each from a cold cache, local files and
     `hf://` files on the loopback Hub: rows per second, and the ratio streaming / prepared.
The last line printed is one JSON object.

Run:
    python bench/publish.py [--rows 3000] [--tasks 4] [--quick]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path


TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from loopback_hub import LoopbackHub  # noqa: E402 - stdlib only: the Hub must run before the clients import


def make_source(folder: Path, rows: int, seed: int) -> Path:
    """`rows` caption pairs with real JPEGs in 4 parquet shards (the demo's photos, resized, re-encoded)."""
    import numpy as np
    from datasets import Features, Image, Value
    from PIL import Image as PILImage

    from mmsieve.demo.corpus import demo_photos, save_shards

    rng = np.random.default_rng(seed)
    photos = {name: PILImage.open(io.BytesIO(data)).convert("RGB") for name, data in demo_photos().items()}
    names = sorted(photos)
    images, captions = [], []
    for i in range(rows):
        name = names[i % len(names)]
        side = int(rng.integers(160, 320))
        buffer = io.BytesIO()
        photos[name].resize((side, int(side * 0.75))).save(buffer, format="JPEG", quality=85)
        images.append({"bytes": buffer.getvalue(), "path": f"{name}-{i}.jpg"})
        captions.append(f"Photo {i}: {name.replace('_', ' ')} seen at {side} pixels.")
    scores = rng.uniform(0.0, 0.4, rows).round(4).tolist()
    features = Features({"image": Image(), "caption": Value("string"), "clip_score": Value("float32")})
    return save_shards({"image": images, "caption": captions, "clip_score": scores}, features, folder, shards=4)


def timed(fn):  # noqa: ANN001, ANN201 - a tiny helper
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def uploads(hub: LoopbackHub) -> int:
    return sum(method == "PUT" and path.startswith("/_lfs/") for method, path in hub.requests)


def read_rows(source: str, streaming: bool, cache: Path) -> tuple[float, int]:
    """Seconds to read every row of `source` as documents through `SampleReader`, from a cold datasets cache."""
    import datasets.config

    from mmsieve.readers import SampleReader

    datasets.config.HF_DATASETS_CACHE = cache  # cold: nothing prepared yet
    seconds, count = timed(lambda: sum(1 for _ in SampleReader(source, streaming=streaming).run()))
    return seconds, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="300 rows")
    args = parser.parse_args()
    rows = 300 if args.quick else args.rows

    with tempfile.TemporaryDirectory(prefix="mmsieve-bench-publish-") as tmp, LoopbackHub(Path(tmp) / "hub") as hub:
        work = Path(tmp)
        os.environ.update(
            {
                "HF_ENDPOINT": hub.url,
                "HF_HUB_DISABLE_XET": "1",
                "HF_HUB_OFFLINE": "0",
                "HF_DATASETS_OFFLINE": "0",
                "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_TOKEN": "hf_benchTOKEN1234567890abcd",
                "HF_HOME": str(work / "hf_home"),
                "HF_DATASETS_CACHE": str(work / "cache"),
            }
        )
        import datasets

        from mmsieve.filters import HygieneFilter
        from mmsieve.hub.publish import push_dataset
        from mmsieve.runner import run_steps

        datasets.disable_progress_bars()
        source = make_source(work / "source", rows, args.seed)
        run = work / "run"
        stats = run_steps(str(source), run, [HygieneFilter()], tasks=args.tasks, workers=min(2, args.tasks))
        size_mb = sum(p.stat().st_size for p in (run / "kept").glob("*.parquet")) / 2**20
        print(f"run: {stats['rows_in']} rows, {stats['kept']} kept, {size_mb:.1f} MB of kept parquet")

        # a. first publish
        ours_repo, theirs_repo = f"{hub.user}/ours", f"{hub.user}/push-to-hub"
        hub.reset_log()
        ours_first, report = timed(lambda: push_dataset(run, ours_repo))
        ours_uploads = uploads(hub)
        kept = datasets.load_dataset("parquet", data_dir=str(run / "kept"), split="train")
        hub.reset_log()
        theirs_first, _ = timed(lambda: kept.push_to_hub(theirs_repo))
        theirs_uploads = uploads(hub)
        print(
            f"a. publish {stats['kept']} rows: ours {ours_first:.2f} s ({report['files']} files, {ours_uploads} LFS "
            f"uploads, card + plots), push_to_hub {theirs_first:.2f} s ({theirs_uploads} LFS uploads): "
            f"ratio {ours_first / theirs_first:.2f}"
        )
        # b. the same again
        commits_before = len(hub.commits(ours_repo)), len(hub.commits(theirs_repo))
        hub.reset_log()
        ours_again, again = timed(lambda: push_dataset(run, ours_repo))
        ours_again_uploads = uploads(hub)
        hub.reset_log()
        theirs_again, _ = timed(lambda: kept.push_to_hub(theirs_repo))
        theirs_again_uploads = uploads(hub)
        new_commits = (
            len(hub.commits(ours_repo)) - commits_before[0],
            len(hub.commits(theirs_repo)) - commits_before[1],
        )
        print(
            f"b. publish again: ours {ours_again:.2f} s ({ours_again / ours_first:.2f} of the first, {new_commits[0]} "
            f"commits, {ours_again_uploads} uploads, changed={again['changed']}), push_to_hub {theirs_again:.2f} s "
            f"({theirs_again / theirs_first:.2f} of the first, {new_commits[1]} commits, {theirs_again_uploads} uploads)"
        )
        # c. reading as a stream vs prepared, local and on the Hub
        reads = {}
        for name, src in (("local", str(run / "kept")), ("hub", f"hf://datasets/{ours_repo}/data/train-*.parquet")):
            prepared, count = read_rows(src, False, work / f"cache-{name}-prepared")
            streamed, streamed_count = read_rows(src, True, work / f"cache-{name}-streamed")
            assert count == streamed_count == stats["kept"], (count, streamed_count)
            reads[name] = {"prepared_rps": count / prepared, "streamed_rps": count / streamed}
            print(
                f"c. read {count} rows ({name}): prepared {count / prepared:.0f} rows/s, streamed "
                f"{count / streamed:.0f} rows/s: ratio {prepared / streamed:.2f}"
            )
        result = {
            "rows": stats["kept"],
            "kept_mb": round(size_mb, 1),
            "publish_ours_over_push_to_hub": round(ours_first / theirs_first, 3),
            "republish_ours_over_first": round(ours_again / ours_first, 3),
            "republish_push_to_hub_over_first": round(theirs_again / theirs_first, 3),
            "republish_commits": {"ours": new_commits[0], "push_to_hub": new_commits[1]},
            "republish_uploads": {"ours": ours_again_uploads, "push_to_hub": theirs_again_uploads},
            "read_streamed_over_prepared": {
                name: round(r["streamed_rps"] / r["prepared_rps"], 3) for name, r in reads.items()
            },
        }
        print(json.dumps(result))


if __name__ == "__main__":
    main()
