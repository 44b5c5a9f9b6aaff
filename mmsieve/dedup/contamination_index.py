"""A reusable benchmark index for decontamination: test-set image vectors plus question/answer n-grams.

`build_index` reads each benchmark of a list (Hub ids or local folders; `benchmarks.yaml` ships
FineVision's 66 lmms-lab test sets plus MMStar, MathVista and OCRBench, which it missed), embeds every
test image and hashes the n-grams of every question and answer. The index is a folder of plain files
(no pickles) that can be pushed to the Hub as a dataset and pulled by others:

    index.json            embedder, dim, default threshold, n-gram size, per-benchmark counts
    items.parquet         one row per benchmark item: benchmark, item_id
    image_items.npy       the item row of each image vector
    vectors/              `VectorIndex` (unit vectors, exact inner-product search)
    text/                 `NgramIndex`

Example:
    >>> specs = load_benchmarks()  # the shipped list  # doctest: +SKIP
    >>> build_index(specs, parse_embedder("sscd:sscd_disc_mixup.torchscript.pt"), "bench_index")  # doctest: +SKIP
    >>> index = ContaminationIndex.load("bench_index")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmsieve.dedup.embedders import ImageEmbedder
from mmsieve.dedup.text_overlap import DEFAULT_N, NgramIndex
from mmsieve.dedup.vector_index import VectorIndex
from mmsieve.images import DecodePool


FORMAT_VERSION = 1
SHIPPED_BENCHMARKS = Path(__file__).with_name("benchmarks.yaml")
QUESTION_COLUMNS = ("question", "query", "prompt", "instruction", "problem", "hint")
ANSWER_COLUMNS = ("answer", "answers", "gt_answer", "ground_truth", "label", "caption", "captions", "solution")
ID_COLUMNS = ("question_id", "questionId", "qid", "id", "index", "idx", "pid", "sample_id", "image_id")


@dataclass
class BenchmarkSpec:
    """One benchmark test set: where it is and (optionally) which columns hold its images, texts and ids.

    Columns left empty are detected: every `Image` (or list of `Image`) column, the first of the usual
    question / answer / id column names. `image_id_column` embeds an image shared by several questions
    once (FineVision's `--deduplicate --id_column image_id`).

    Example:
        >>> BenchmarkSpec(name="MMStar", repo="Lin-Chen/MMStar", split="val").split
        'val'
    """

    name: str
    repo: str
    split: str = "test"
    config: str | None = None
    image_columns: list[str] = field(default_factory=list)
    text_columns: list[str] = field(default_factory=list)
    id_column: str | None = None
    image_id_column: str | None = None


def load_benchmarks(path: str | Path | None = None, names: Sequence[str] | None = None) -> list[BenchmarkSpec]:
    """The benchmark list of a YAML file (default: the shipped `benchmarks.yaml`), optionally only `names`.

    Example:
        >>> len(load_benchmarks()) >= 69
        True
    """
    import yaml

    source = Path(path) if path is not None else SHIPPED_BENCHMARKS
    entries = yaml.safe_load(source.read_text()) or {}
    entries = entries.get("benchmarks", entries) if isinstance(entries, dict) else entries
    if not isinstance(entries, list):
        raise ValueError(f"{source}: expected a list of benchmarks under `benchmarks:`")
    specs = []
    for entry in entries:
        unknown = set(entry) - set(BenchmarkSpec.__dataclass_fields__)
        if unknown or "name" not in entry or "repo" not in entry:
            raise ValueError(
                f"{source}: bad benchmark entry {entry!r} (needs name and repo; unknown {sorted(unknown)})"
            )
        specs.append(BenchmarkSpec(**entry))
    if names:
        wanted = set(names)
        specs = [s for s in specs if s.name in wanted]
        missing = wanted - {s.name for s in specs}
        if missing:
            raise ValueError(f"unknown benchmarks {sorted(missing)} in {source}")
    return specs


def _holds_images(feature: Any) -> bool:
    """An `Image` feature, or a list of them."""
    from datasets import Image

    if isinstance(feature, Image):
        return True
    inner = feature[0] if isinstance(feature, list) and feature else getattr(feature, "feature", None)
    return inner is not None and _holds_images(inner)


def _columns(spec: BenchmarkSpec, features: Any) -> tuple[list[str], list[str], str | None]:
    images = spec.image_columns or [name for name, f in features.items() if _holds_images(f)]
    texts = (
        spec.text_columns
        or [name for group in (QUESTION_COLUMNS, ANSWER_COLUMNS) for name in group if name in features][:2]
    )
    id_column = spec.id_column or next((c for c in ID_COLUMNS if c in features), None)
    return images, texts, id_column


def _cell_images(cell: Any) -> list[bytes | None]:
    from mmsieve.schemas import image_from_cell

    cells = cell if isinstance(cell, list) else [cell]
    refs = [image_from_cell(c) for c in cells if c is not None]
    return [ref.data if ref is not None else None for ref in refs]


def _texts(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _texts(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _texts(v)


def build_index(
    benchmarks: Sequence[BenchmarkSpec],
    embedder: ImageEmbedder,
    output: str | Path,
    *,
    n: int = DEFAULT_N,
    threshold: float | None = None,
    limit: int | None = None,
    batch_size: int = 256,
    log: Any = None,
) -> dict[str, Any]:
    """Embed the test images and hash the texts of `benchmarks` into an index folder; return its metadata.

    Args:
        benchmarks: the test sets (see `load_benchmarks`).
        embedder: the image embedder (the decontamination filter must use the same one).
        output: the index folder (created).
        n: words per n-gram of the text check.
        threshold: the default image similarity for the filter (default: the embedder's).
        limit: at most this many rows per benchmark (for a quick index).
        batch_size: rows per embedding batch.
        log: a callable receiving one progress line per benchmark (e.g. `print`).

    Example:
        >>> build_index(load_benchmarks(names=["MMStar"]), parse_embedder("phash"), "idx")  # doctest: +SKIP
    """
    from mmsieve.hub.sources import open_source

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    items: list[tuple[str, str]] = []
    texts: list[tuple[str, str, str]] = []
    blocks: list[np.ndarray] = []
    image_items: list[np.ndarray] = []
    report = []
    with DecodePool() as pool:
        for spec in benchmarks:
            started = time.perf_counter()
            ds = open_source(spec.repo, split=spec.split, config=spec.config)
            if limit is not None:
                ds = ds.select(range(min(limit, len(ds))))
            image_columns, text_columns, id_column = _columns(spec, ds.features)
            seen_images: set[Any] = set()
            counts = {"items": 0, "images": 0, "undecodable": 0}
            for start in range(0, len(ds), batch_size):
                rows = ds[start : start + batch_size]
                datas, owners = [], []
                for k in range(len(next(iter(rows.values())))):
                    item_row = len(items)
                    item_id = str(rows[id_column][k]) if id_column else str(start + k)
                    items.append((spec.name, item_id))
                    for column in text_columns:
                        texts.extend((spec.name, item_id, t) for t in _texts(rows[column][k]))
                    if spec.image_id_column:  # an image several questions share is embedded once
                        image_key = rows[spec.image_id_column][k]
                        if image_key in seen_images:
                            continue
                        seen_images.add(image_key)
                    for column in image_columns:
                        for data in _cell_images(rows[column][k]):
                            datas.append(data)
                            owners.append(item_row)
                counts["items"] += len(next(iter(rows.values())))
                vectors, reasons = embedder.embed_bytes(datas, pool)
                ok = np.asarray([r is None for r in reasons], bool)
                blocks.append(np.asarray(vectors, np.float32).reshape(-1, embedder.dim))
                image_items.append(np.asarray(owners, np.int64)[ok] if len(owners) else np.zeros(0, np.int64))
                counts["images"] += int(ok.sum())
                counts["undecodable"] += int((~ok).sum())
            entry = {**asdict(spec), **counts, "seconds": round(time.perf_counter() - started, 2)}
            report.append(entry)
            if log is not None:
                log(f"{spec.name}: {counts['items']} items, {counts['images']} images ({entry['seconds']} s)")
    vectors = np.concatenate(blocks) if blocks else np.zeros((0, embedder.dim), np.float32)
    VectorIndex(vectors).save(out / "vectors")
    np.save(out / "image_items.npy", np.concatenate(image_items) if image_items else np.zeros(0, np.int64))
    NgramIndex.build(texts, n=n).save(out / "text")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"benchmark": [b for b, _ in items], "item_id": [i for _, i in items]}), out / "items.parquet"
    )
    meta = {
        "format": FORMAT_VERSION,
        "embedder": embedder.name,
        "dim": int(embedder.dim),
        "threshold": float(threshold if threshold is not None else embedder.default_threshold),
        "ngram_n": n,
        "items": len(items),
        "images": len(vectors),
        "benchmarks": report,
    }
    (out / "index.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


class ContaminationIndex:
    """A loaded benchmark index: `search_images` and `match_text` say which test item a sample matches.

    Example:
        >>> index = ContaminationIndex.load("bench_index")  # doctest: +SKIP
        >>> sims, items = index.search_images(vectors)  # doctest: +SKIP
    """

    def __init__(self, folder: Path, meta: dict[str, Any]):
        import pyarrow.parquet as pq

        self.folder, self.meta = folder, meta
        table = pq.read_table(folder / "items.parquet")
        self.benchmarks: list[str] = table.column("benchmark").to_pylist()
        self.item_ids: list[str] = table.column("item_id").to_pylist()
        self.vectors = VectorIndex.load(folder / "vectors")
        self.image_items = np.load(folder / "image_items.npy", allow_pickle=False)
        self.text = NgramIndex.load(folder / "text")

    @classmethod
    def load(cls, where: str | Path) -> ContaminationIndex:
        """Load an index folder, or a Hub dataset repo holding one (downloaded once through `mmsieve.hub`)."""
        folder = Path(where).expanduser()
        if not folder.exists():
            from mmsieve.hub.sources import fetch_dataset_files

            folder = fetch_dataset_files(str(where))
        meta_path = folder / "index.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{where}: not a contamination index (no index.json); build one with build-index")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{where}: index format {meta.get('format')!r}, this mmsieve reads {FORMAT_VERSION}")
        return cls(folder, meta)

    @property
    def embedder(self) -> str:
        return self.meta["embedder"]

    @property
    def threshold(self) -> float:
        return float(self.meta["threshold"])

    def label(self, item: int) -> str:
        """`benchmark/item_id` of an item row."""
        return f"{self.benchmarks[item]}/{self.item_ids[item]}"

    def search_images(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(best similarity, item row) of each query vector against the benchmark images."""
        if not len(self.vectors) or not len(vectors):
            return np.full(len(vectors), -1.0, np.float32), np.full(len(vectors), -1, np.int64)
        sims, ids = self.vectors.search(np.asarray(vectors, np.float32), k=1)
        return sims[:, 0], self.image_items[ids[:, 0]]

    def __repr__(self) -> str:
        return (
            f"ContaminationIndex({self.meta['items']} items, {len(self.vectors)} images, embedder={self.embedder!r})"
        )
