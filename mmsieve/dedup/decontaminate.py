"""`DecontaminationFilter`: drop samples whose image or text matches a benchmark test item.

Images: every image of a sample is embedded with the index's embedder and compared with all benchmark
test images (exact inner product); the sample is contaminated when its best match reaches `threshold`
(default: the index's, 0.95 for SSCD as FineVision; FineVision flags a sample if any of its images
matches). Texts (a check FineVision lacked): every caption, text segment, question and answer is
compared with the benchmarks' questions and answers by word n-grams (`mmsieve.dedup.text_overlap`); a
sample sharing at least `min_ngrams` n-grams with one item is contaminated.

Every sample gets `contamination_similarity` (its best image similarity to any benchmark image, so a
stricter or looser cut can be chosen later) and, when contaminated, `contaminated_with`
(`benchmark/item_id`) and `contamination_kind` (`image` or `text`). Dropped rows carry reason
`contaminated`. The per-benchmark counts go to `stats.json` under `contamination`.

Example:
    >>> step = DecontaminationFilter("bench_index")  # doctest: +SKIP
    >>> ds = ds.map(step, batched=True, batch_size=256)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmsieve.dedup.contamination_index import ContaminationIndex
from mmsieve.dedup.embedders import ImageEmbedder
from mmsieve.dedup.sample_vectors import DecodedBatch, EmbeddingStepMixin, embed_samples
from mmsieve.images import DecodePool
from mmsieve.reasons import CONTAMINATED
from mmsieve.sample import Sample
from mmsieve.schemas import Schema
from mmsieve.steps import Columns, SampleFilter


STAT_PREFIX = "contaminated/"


class DecontaminationFilter(EmbeddingStepMixin, SampleFilter):
    """Drops samples matching a benchmark test item by image similarity or by text n-gram overlap.

    Args:
        index: a contamination index folder or Hub dataset id (see `build_index` / `mmsieve build-index`).
        threshold: image cosine similarity at or above which a sample is contaminated (default: the index's).
        images / text: which checks to run.
        min_ngrams: shared n-grams with one benchmark item that make a text contaminated.
        embedder: override the index's embedder spec (e.g. the same SSCD file at another path).
        batch_size / workers / schema / exclusion_writer: as every step.

    Example:
        >>> DecontaminationFilter("my-org/benchmark-index", threshold=0.9, text=False)  # doctest: +SKIP
    """

    name = "🧪 decontamination"

    def __init__(
        self,
        index: str,
        *,
        threshold: float | None = None,
        images: bool = True,
        text: bool = True,
        min_ngrams: int = 1,
        embedder: str | ImageEmbedder | None = None,
        batch_size: int = 64,
        workers: int | None = None,
        schema: Schema | None = None,
        exclusion_writer: Any = None,
    ):
        if not images and not text:
            raise ValueError("DecontaminationFilter needs images=True or text=True")
        super().__init__(batch_size=batch_size, schema=schema, exclusion_writer=exclusion_writer)
        self.index_location, self.threshold = str(index), threshold
        self.check_images, self.check_text, self.min_ngrams = images, text, min_ngrams
        self.embedder_override, self.workers = embedder, workers
        self._index: ContaminationIndex | None = None
        self._embedder: ImageEmbedder | None = None
        self._pool: DecodePool | None = None

    @property
    def index(self) -> ContaminationIndex:
        if self._index is None:
            self._index = ContaminationIndex.load(self.index_location)
        return self._index

    @property
    def embedder_spec(self) -> str | ImageEmbedder:  # type: ignore[override]
        return self.embedder_override if self.embedder_override is not None else self.index.embedder

    def prepare(self, samples: list[Sample]) -> DecodedBatch | None:
        return super().prepare(samples) if self.check_images else None

    def compute(self, samples: list[Sample], prepared: Any = None) -> Columns:
        index = self.index
        threshold = self.threshold if self.threshold is not None else index.threshold
        best_sim = np.full(len(samples), np.nan, np.float32)
        best_item = np.full(len(samples), -1, np.int64)
        if self.check_images:
            batch = embed_samples(samples, self.embedder, self.pool, prepared)
            sims, items = index.search_images(batch.vectors)
            order = np.lexsort((-sims, batch.owner))  # per sample, its best match first
            owner = batch.owner[order]
            best = np.ones(len(order), bool)
            best[1:] = owner[1:] != owner[:-1]
            best_sim[owner[best]], best_item[owner[best]] = sims[order][best], items[order][best]
        out: Columns = {name: [] for name in ("keep", "mmsieve_reason", "mmsieve_detail", *self.output_features())}
        for i, sample in enumerate(samples):
            kind = label = detail = None
            if not np.isnan(best_sim[i]) and best_sim[i] >= threshold:
                kind, label = "image", index.label(int(best_item[i]))
                detail = f"image cosine {best_sim[i]:.4f} >= {threshold} with {label}"
            elif self.check_text:
                for text in sample.texts():
                    hit = index.text.match(text)
                    if hit is not None and hit[2] >= self.min_ngrams:
                        kind, label = "text", f"{hit[0]}/{hit[1]}"
                        detail = f"{hit[2]} shared {index.text.n}-word n-grams with {label}"
                        break
            if kind is not None:
                benchmark = index.benchmarks[int(best_item[i])] if kind == "image" else hit[0]
                self.stat_update(f"{STAT_PREFIX}{benchmark}/{kind}")
            out["keep"].append(kind is None)
            out["mmsieve_reason"].append(None if kind is None else CONTAMINATED)
            out["mmsieve_detail"].append(detail)
            out["contaminated_with"].append(label)
            out["contamination_kind"].append(kind)
            out["contamination_similarity"].append(None if np.isnan(best_sim[i]) else float(best_sim[i]))
        return out

    def output_features(self) -> dict[str, Any]:
        from datasets import Value

        return {
            "contaminated_with": Value("string"),
            "contamination_kind": Value("string"),
            "contamination_similarity": Value("float32"),
        }

    def parameters(self) -> dict[str, Any]:
        return {
            "index": self.index_location,
            "threshold": self.threshold,
            "images": self.check_images,
            "text": self.check_text,
            "min_ngrams": self.min_ngrams,
        }

    @staticmethod
    def report(counts: dict[str, float]) -> dict[str, Any]:
        """The per-benchmark contamination table of a run (for `stats.json` and the dataset card).

        Example:
            >>> DecontaminationFilter.report({"contaminated/MME/image": 3.0, "dropped": 3.0})
            {'contamination': {'MME': {'image': 3, 'text': 0, 'total': 3}}}
        """
        table: dict[str, dict[str, int]] = {}
        for key, value in sorted(counts.items()):
            if key.startswith(STAT_PREFIX):
                benchmark, kind = key[len(STAT_PREFIX) :].rsplit("/", 1)
                row = table.setdefault(benchmark, {"image": 0, "text": 0, "total": 0})
                row[kind] += int(value)
                row["total"] += int(value)
        return {"contamination": table}

    def _transient_attributes(self) -> tuple[str, ...]:
        return ("_index", "_embedder", "_pool")
