"""Peak memory of a run does not grow with its size: hygiene + UniFilter scoring over 10k and over 100k rows.

A source of `--rows` caption pairs is written first: real JPEGs (the scikit-image photos, 40-120 px, quality
85) in parquet shards of 5,000 rows. Then each size runs in a fresh process (`--child`), so each peak is its
own: `mmsieve.runner.run_steps` streams the source (`streaming=True`, `limit=N`) through `HygieneFilter` and a
tiny random UniFilter (`UniFilterScorer`), one task, writing kept/removed parquet, and reports its peak resident
set size (`ru_maxrss`). Streaming, batching and writing keep a bounded window of rows in memory, so the two
peaks should differ by less than 20%. The last line printed is one JSON object:
`{"peak_rss_10k_mb": ..., "peak_rss_100k_mb": ..., ...}`.

Run:
    python bench/memory.py [--rows 100000] [--small 10000] [--quick]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


SHARD_ROWS = 5000


def make_source(folder: Path, rows: int, seed: int = 0) -> Path:
    """`rows` caption pairs with real JPEGs, in parquet shards of `SHARD_ROWS` rows (written shard by shard)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Features, Image, Value
    from PIL import Image as PILImage

    from mmsieve.demo.corpus import demo_photos

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    photos = {name: PILImage.open(io.BytesIO(data)).convert("RGB") for name, data in demo_photos().items()}
    names = sorted(photos)
    # a pool of distinct encodings, cycled: enough variety for the decoder, cheap to write 100k rows
    pool = []
    for i in range(400):
        name, side = names[i % len(names)], int(rng.integers(40, 120))
        buffer = io.BytesIO()
        photos[name].resize((side, max(8, int(side * rng.uniform(0.5, 1.0))))).save(buffer, "JPEG", quality=85)
        pool.append((name, buffer.getvalue()))
    schema = Features({"image": Image(), "caption": Value("string")}).arrow_schema
    for shard, start in enumerate(range(0, rows, SHARD_ROWS)):
        stop = min(rows, start + SHARD_ROWS)
        items = [pool[i % len(pool)] for i in range(start, stop)]
        table = pa.table(
            {
                "image": [{"bytes": data, "path": f"{i}.jpg"} for i, (_, data) in zip(range(start, stop), items)],
                "caption": [
                    f"Photo {i}: {name.replace('_', ' ')}." for i, (name, _) in zip(range(start, stop), items)
                ],
            },
            schema=schema,
        )
        pq.write_table(table, folder / f"train-{shard:05d}.parquet")
    return folder


def child(source: str, rows: int, model: str, output: str) -> None:
    """One run in this process; prints its stats and peak RSS as one JSON line."""
    from mmsieve.filters import HygieneFilter, UniFilterScorer
    from mmsieve.runner import run_steps

    started = time.perf_counter()
    steps = [HygieneFilter(), UniFilterScorer(model, batch_size=64)]
    stats = run_steps(source, output, steps, limit=rows, streaming=True, tasks=1, workers=1)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
    seconds = time.perf_counter() - started
    print(json.dumps({"rows_in": stats["rows_in"], "kept": stats["kept"], "peak_mb": peak_mb, "seconds": seconds}))


def measure(source: Path, rows: int, model: Path, output: Path) -> dict:
    command = [sys.executable, __file__, "--child", str(rows), "--source", str(source), "--model", str(model)]
    result = subprocess.run(
        [*command, "--output", str(output)], capture_output=True, text=True, check=True, env=os.environ.copy()
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="2,000 vs 20,000 rows")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--source", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.source, args.child, args.model, args.output)
        return
    small, large = (2000, 20_000) if args.quick else (args.small, args.rows)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryDirectory(prefix="mmsieve-bench-memory-") as tmp:
        work = Path(tmp)
        os.environ["HF_DATASETS_CACHE"] = str(work / "cache")
        from mmsieve.models.tiny import build_tiny_unifilter

        model = build_tiny_unifilter(work / "model")
        started = time.perf_counter()
        source = make_source(work / "source", large)
        print(f"source: {large} rows in {time.perf_counter() - started:.0f} s")
        results = {}
        for rows in (small, large):
            results[rows] = measure(source, rows, model, work / f"out-{rows}")
            r = results[rows]
            print(
                f"{rows:>7} rows: peak RSS {r['peak_mb']:.0f} MB, {r['rows_in']} in, {r['kept']} kept, "
                f"{r['seconds']:.0f} s ({r['rows_in'] / r['seconds']:.0f} rows/s)"
            )
        growth = results[large]["peak_mb"] / results[small]["peak_mb"] - 1
        print(f"peak RSS grows {100 * growth:+.1f}% for {large // small}x the rows")
        print(
            json.dumps(
                {
                    f"peak_rss_{small // 1000}k_mb": round(results[small]["peak_mb"], 1),
                    f"peak_rss_{large // 1000}k_mb": round(results[large]["peak_mb"], 1),
                    "growth": round(growth, 4),
                    "rows_per_second_large": round(results[large]["rows_in"] / results[large]["seconds"], 1),
                }
            )
        )


if __name__ == "__main__":
    main()
