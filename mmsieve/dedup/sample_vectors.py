"""The images of a batch of samples as unit vectors: the shared core of dedup and decontamination.

Every present image of every sample is decoded (in a thread pool, at the size the embedder wants)
and embedded; `SampleVectors` keeps which sample owns which vector. A sample whose image fails to
decode keeps its other images and records the first failure in `errors`; bad bytes never raise.

`ImageEmbeddingScorer` is the same core as a step: it adds `image_embeddings` (one vector per
decodable image) to every sample, for the `Dataset.map` surface (`mmsieve.dedup.deduplicate`) or for
users who want the vectors themselves.

Example:
    >>> embedder = parse_embedder("phash")  # doctest: +SKIP
    >>> batch = embed_samples(samples, embedder)  # doctest: +SKIP
    >>> batch.vectors.shape, batch.owner  # doctest: +SKIP
    ((3, 64), array([0, 1, 1]))
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmsieve.dedup.embedders import ImageEmbedder, parse_embedder
from mmsieve.images import DecodePool
from mmsieve.sample import Sample
from mmsieve.schemas import Schema
from mmsieve.steps import Columns, SampleScorer


@dataclass
class DecodedBatch:
    """The decoded images of a batch (`prepare`'s result): images, their owner sample, first error per sample.

    Example:
        >>> decode_sample_images(samples, parse_embedder("phash"), DecodePool()).owner  # doctest: +SKIP
        [0, 1, 1]
    """

    images: list[Any]
    owner: list[int]
    errors: list[str | None]


@dataclass
class SampleVectors:
    """Unit vectors of a batch's images: `vectors[k]` belongs to sample `owner[k]` (index in the batch).

    Example:
        >>> embed_samples(samples, parse_embedder("phash")).of(1).shape  # doctest: +SKIP
        (2, 64)
    """

    vectors: np.ndarray  # [m, dim] float32, rows L2-normalised
    owner: np.ndarray  # [m] int64
    errors: list[str | None]  # per sample: "<reason>: image <k>" for the first image that failed, else None

    def of(self, index: int) -> np.ndarray:
        """The vectors of sample `index` ([n_images, dim])."""
        return self.vectors[self.owner == index]


def decode_sample_images(samples: list[Sample], embedder: ImageEmbedder, pool: DecodePool) -> DecodedBatch:
    """Decode every present image of `samples` at the embedder's size (the CPU half; thread-safe).

    Example:
        >>> decoded = decode_sample_images(samples, parse_embedder("dhash"), DecodePool())  # doctest: +SKIP
    """
    refs = [(i, k, ref) for i, s in enumerate(samples) for k, ref in enumerate(s.images) if ref is not None]
    results = embedder.decode([ref.data for _, _, ref in refs], pool)
    images, owner = [], []
    errors: list[str | None] = [None] * len(samples)
    for (i, k, _), result in zip(refs, results):
        if result.ok:
            images.append(result.image)
            owner.append(i)
        elif errors[i] is None:
            errors[i] = f"{result.reason}: image {k}"
    return DecodedBatch(images=images, owner=owner, errors=errors)


def embed_samples(
    samples: list[Sample],
    embedder: ImageEmbedder,
    pool: DecodePool | None = None,
    decoded: DecodedBatch | None = None,
) -> SampleVectors:
    """The unit vectors of every decodable image of `samples` (decodes first unless `decoded` is given).

    Example:
        >>> batch = embed_samples(samples, parse_embedder("phash"))  # doctest: +SKIP
    """
    if decoded is None:
        with DecodePool() if pool is None else contextlib.nullcontext(pool) as own:
            decoded = decode_sample_images(samples, embedder, own)
    vectors = embedder.embed(decoded.images) if decoded.images else np.zeros((0, embedder.dim), np.float32)
    return SampleVectors(np.asarray(vectors, np.float32), np.asarray(decoded.owner, np.int64), decoded.errors)


class EmbeddingStepMixin:
    """The lazy embedder and decoding pool shared by the embedding steps (both pickle without them).

    Example:
        >>> ImageEmbeddingScorer("phash").embedder.dim  # the mixin's lazy embedder
        64
    """

    embedder_spec: str | ImageEmbedder
    workers: int | None
    rank: int | None
    _embedder: ImageEmbedder | None
    _pool: DecodePool | None

    @property
    def embedder(self) -> ImageEmbedder:
        """The image embedder, built on first use on this worker's device."""
        if self._embedder is None:
            spec = self.embedder_spec
            if isinstance(spec, str):
                from mmsieve.models.devices import pick_device

                spec = parse_embedder(spec, device=pick_device(self.rank))
            self._embedder = spec
        return self._embedder

    @property
    def pool(self) -> DecodePool:
        if self._pool is None:
            self._pool = DecodePool(self.workers)
        return self._pool

    def embedder_name(self) -> str:
        spec = self.embedder_spec
        return spec if isinstance(spec, str) else spec.name

    def prepare(self, samples: list[Sample]) -> DecodedBatch:
        """Decode the images (CPU; in a background thread for the next batch while this one embeds)."""
        return decode_sample_images(samples, self.embedder, self.pool)

    def _transient_attributes(self) -> tuple[str, ...]:
        return ("_embedder", "_pool")


class ImageEmbeddingScorer(EmbeddingStepMixin, SampleScorer):
    """Adds `image_embeddings` (one unit vector per decodable image) and `image_embedding_error` to every sample.

    Args:
        embedder: an `ImageEmbedder` or a spec for `parse_embedder` (`sscd:PATH`, `clip:ID`, `phash`, ...).
        batch_size: samples per batch.
        workers: image decoding threads.
        schema: the row schema for the `Dataset.map` surface (detected when None).

    Example:
        >>> ds = ds.map(ImageEmbeddingScorer("phash"), batched=True, with_indices=True)  # doctest: +SKIP
        >>> len(ds[0]["image_embeddings"][0])  # doctest: +SKIP
        64
    """

    name = "🧭 image embeddings"

    def __init__(
        self,
        embedder: str | ImageEmbedder,
        *,
        batch_size: int = 64,
        workers: int | None = None,
        schema: Schema | None = None,
    ):
        super().__init__(batch_size=batch_size, schema=schema)
        self.embedder_spec, self.workers = embedder, workers
        self._embedder: ImageEmbedder | None = None
        self._pool: DecodePool | None = None

    def compute(self, samples: list[Sample], prepared: Any = None) -> Columns:
        batch = embed_samples(samples, self.embedder, self.pool, prepared)
        return {
            "image_embeddings": [batch.of(i).tolist() for i in range(len(samples))],
            "image_embedding_error": batch.errors,
        }

    def output_features(self) -> dict[str, Any]:
        from datasets import List, Value

        return {"image_embeddings": List(List(Value("float32"))), "image_embedding_error": Value("string")}

    def parameters(self) -> dict[str, Any]:
        return {"embedder": self.embedder_name()}
