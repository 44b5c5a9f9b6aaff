"""CLIP score: the cosine similarity between an image and its text in a CLIP / SigLIP embedding space.

The DataComp baseline: score every image-text pair with a dual encoder and keep the best-aligned.
The score is the cosine similarity of the L2-normalised embeddings (DataComp's "CLIP score"), not
the model's scaled logit, so it lies in [-1, 1] and thresholds carry across batch sizes: DataComp keeps
pairs with a ViT-B/32 cosine >= 0.25 (or 0.28, or the top 30%); ViT-L/14 scores run lower. SigLIP
cosines sit on a different scale (roughly 0.05-0.2 for matching pairs), so calibrate a threshold per
model, e.g. with a keep fraction. `clip_score` is the column to threshold.

What is compared, by kind:
- caption: the image vs the caption;
- interleaved document: each image vs its nearest text segment in reading order (the first text
  segment after it, else the last one before it); the pair scores are in `clip_scores` and
  aggregated into `clip_score` by `aggregate`: "mean" (default), "min" or "max". For a threshold,
  "any" is "max" (keep when at least one image matches its text) and "all" is "min" (keep when every
  image does);
- conversation: each image vs the user questions of all turns joined by newlines (the answers are
  the model's words, not a description of the image), aggregated the same way.

A sample whose image is missing or fails to decode, or that has no text, gets `clip_score = None` and
`clip_score_error = "<reason code>: <detail>"` (codes from `mmsieve.reasons`) instead of raising.

Example:
    >>> from mmsieve.filters.clip_score import ClipScoreScorer
    >>> scorer = ClipScoreScorer("openai/clip-vit-base-patch32", batch_size=128)
    >>> ds = ds.map(scorer, batched=True, batch_size=512)  # doctest: +SKIP
    >>> ds = ds.filter(lambda s: s is not None and s >= 0.28, input_columns="clip_score")  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsieve import reasons
from mmsieve.filters.score_filter import ModelScoreFilter
from mmsieve.images import DecodePool
from mmsieve.sample import Sample
from mmsieve.schemas import Schema
from mmsieve.steps import Columns, SampleScorer


if TYPE_CHECKING:
    from mmsieve.models.dual_encoder import DualEncoder


SCORE_COLUMN = "clip_score"
PAIR_SCORES_COLUMN = "clip_scores"
ERROR_COLUMN = "clip_score_error"

AGGREGATES = {"mean": np.mean, "min": np.min, "max": np.max, "any": np.max, "all": np.min}

Pair = tuple[int, str]  # (index into Sample.images, the text it is compared with)
Verdict = tuple[str, str]  # (reason code, detail)


def _nearest_text(segments: list[str | int], position: int) -> str | None:
    """The first non-blank text segment after `position`, else the last one before it."""
    after = (s for s in segments[position + 1 :] if isinstance(s, str) and s.strip())
    before = (s for s in reversed(segments[:position]) if isinstance(s, str) and s.strip())
    return next(after, None) or next(before, None)


def image_text_pairs(sample: Sample) -> tuple[list[Pair], Verdict | None]:
    """The (image index, text) pairs a sample is scored on, or why it cannot be scored.

    Example:
        >>> doc = Sample.interleaved("d", [None, None], [0, "Cats.", 1, "Dogs."])
        >>> image_text_pairs(doc)[1]
        ('image_missing', 'image 0 is empty (None)')
        >>> from mmsieve.sample import ImageRef
        >>> doc.images = [ImageRef(data=b"a"), ImageRef(data=b"b")]
        >>> image_text_pairs(doc)[0]
        [(0, 'Cats.'), (1, 'Dogs.')]
    """
    if sample.kind == "caption":
        if not sample.images:
            return [], (reasons.IMAGE_MISSING, "the row has no image")
        if sample.text is None:
            return [], (reasons.TEXT_MISSING, "the caption is None")
        if not sample.text.strip():
            return [], (reasons.TEXT_EMPTY, "the caption is empty")
        pairs = [(0, sample.text)]
    elif sample.kind == "interleaved":
        positions = [p for p, s in enumerate(sample.segments) if isinstance(s, int)]
        if not positions:
            return [], (reasons.IMAGE_MISSING, "the document has no image")
        if not any(isinstance(s, str) for s in sample.segments):
            return [], (reasons.TEXT_MISSING, "the document has no text segment")
        if not any(isinstance(s, str) and s.strip() for s in sample.segments):
            return [], (reasons.TEXT_EMPTY, "every text segment of the document is blank")
        pairs = [(sample.segments[p], _nearest_text(sample.segments, p)) for p in positions]
    else:
        if not sample.images:
            return [], (reasons.IMAGE_MISSING, "the conversation has no image")
        questions = "\n".join(turn.user.strip() for turn in sample.turns if turn.user.strip())
        if not questions:
            return [], (reasons.TEXT_EMPTY, "the conversation has no user question")
        pairs = [(k, questions) for k in range(len(sample.images))]
    for k, _ in pairs:
        if not 0 <= k < len(sample.images):
            return [], (reasons.MALFORMED_ROW, f"segment refers to image {k} of {len(sample.images)}")
        if sample.images[k] is None:
            return [], (reasons.IMAGE_MISSING, f"image {k} is empty (None)")
    return pairs, None


@dataclass
class ClipInputs:
    """A batch prepared on the CPU for `clip_score_columns`: pairs, verdicts and model inputs.

    Args:
        pairs: each sample's (image index, text) pairs ([] when it cannot be scored).
        verdicts: each sample's (reason, detail) when it cannot be scored, else None.
        image_rows: (sample, image index) -> row of the image in the concatenated `pixel_batches`.
        pixel_batches: `DualEncoder.pixel_inputs` of sub-batches of the decoded images.
        text_rows: text -> row in the concatenated `text_batches`.
        text_batches: `DualEncoder.text_inputs` of sub-batches of the distinct texts.
    """

    pairs: list[list[Pair]]
    verdicts: list[Verdict | None]
    image_rows: dict[tuple[int, int], int] = field(default_factory=dict)
    pixel_batches: list[dict[str, Any]] = field(default_factory=list)
    text_rows: dict[str, int] = field(default_factory=dict)
    text_batches: list[dict[str, Any]] = field(default_factory=list)


def prepare_clip_inputs(
    samples: list[Sample], encoder: DualEncoder, *, batch_size: int = 64, pool: DecodePool | None = None
) -> ClipInputs:
    """The CPU half of the core: pair texts with images, decode the images (all at once, in `pool`),
    and build the model inputs in sub-batches of `batch_size` images or texts. Thread-safe."""
    prepared = ClipInputs(pairs=[], verdicts=[])
    for sample in samples:
        sample_pairs, verdict = image_text_pairs(sample)
        prepared.pairs.append(sample_pairs)
        prepared.verdicts.append(verdict)
    pairs, verdicts = prepared.pairs, prepared.verdicts
    # Decode every image a pair needs, once per (sample, image).
    needed = [(i, k) for i, sample_pairs in enumerate(pairs) for k in dict.fromkeys(k for k, _ in sample_pairs)]
    decoded = encoder.decode([samples[i].images[k].data for i, k in needed], pool) if needed else []
    images = []
    for (i, k), result in zip(needed, decoded):
        if verdicts[i] is not None:
            continue
        if not result.ok:
            where = "the image" if samples[i].kind == "caption" else f"image {k}"
            verdicts[i] = (result.reason or reasons.IMAGE_CORRUPT, f"{where}: {result.detail}")
            continue
        prepared.image_rows[(i, k)] = len(images)
        images.append(result.image)
    texts = list(
        dict.fromkeys(t for i, sample_pairs in enumerate(pairs) if verdicts[i] is None for _, t in sample_pairs)
    )
    prepared.text_rows = {text: row for row, text in enumerate(texts)}
    prepared.pixel_batches = [
        encoder.pixel_inputs(images[i : i + batch_size]) for i in range(0, len(images), batch_size)
    ]
    prepared.text_batches = [encoder.text_inputs(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    return prepared


def clip_score_columns(
    samples: list[Sample],
    encoder: DualEncoder,
    *,
    aggregate: str = "mean",
    batch_size: int = 64,
    pool: DecodePool | None = None,
    prepared: ClipInputs | None = None,
) -> Columns:
    """The pure batch core: `clip_score`, `clip_scores` and `clip_score_error` for each sample.

    A pair's score is the cosine of the normalised image and text embeddings, as float32.

    Args:
        samples: samples of any kind.
        encoder: a loaded `mmsieve.models.dual_encoder.DualEncoder`.
        aggregate: how pair scores combine into `clip_score`: "mean", "min", "max" ("all" = "min", "any" = "max").
        batch_size: images (and texts) per forward pass.
        pool: the decoding thread pool (a private one when None).
        prepared: `prepare_clip_inputs(samples, ...)` when already done (e.g. in a prefetch thread).

    Example:
        >>> cols = clip_score_columns([Sample.caption("1", None, "a cat")], encoder)  # doctest: +SKIP
        >>> cols["clip_score"], cols["clip_score_error"]  # doctest: +SKIP
        ([None], ['image_missing: the row has no image'])
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {sorted(AGGREGATES)}, got {aggregate!r}")
    if prepared is None:
        prepared = prepare_clip_inputs(samples, encoder, batch_size=batch_size, pool=pool)
    image_emb = _concat([encoder.embed_images(**inputs).numpy() for inputs in prepared.pixel_batches])
    text_emb = _concat([encoder.embed_tokens(**inputs).numpy() for inputs in prepared.text_batches])
    combine = AGGREGATES[aggregate]
    scores: list[float | None] = []
    pair_scores: list[list[float] | None] = []
    errors: list[str | None] = []
    for i, (sample_pairs, verdict) in enumerate(zip(prepared.pairs, prepared.verdicts)):
        if verdict is not None:
            scores.append(None)
            pair_scores.append(None)
            errors.append(f"{verdict[0]}: {verdict[1]}")
            continue
        rows = [(prepared.image_rows[(i, k)], prepared.text_rows[text]) for k, text in sample_pairs]
        cosines = np.array([image_emb[a] @ text_emb[b] for a, b in rows], np.float32)
        scores.append(float(np.float32(combine(cosines))))
        pair_scores.append([float(c) for c in cosines])
        errors.append(None)
    return {SCORE_COLUMN: scores, PAIR_SCORES_COLUMN: pair_scores, ERROR_COLUMN: errors}


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


class ClipScoreScorer(SampleScorer):
    """Adds `clip_score` (cosine image-text similarity), `clip_scores` (per pair) and `clip_score_error`.

    Drops nothing: threshold `clip_score` afterwards (DataComp: >= 0.25 or 0.28 for ViT-B/32 cosines).
    Samples that cannot be scored (missing or undecodable image, no text) get None and a reason in
    `clip_score_error`. See the module docstring for how each kind is paired and aggregated.

    The model loads on first use (on the GPU of the datatrove task / `Dataset.map` rank in bf16 if
    any, else CPU fp32) and is dropped when the step is pickled. Decoding and tokenizing (`prepare`)
    run for the next batch in a background thread while the model embeds the current one.

    Args:
        model: a CLIP / SigLIP / SigLIP2 Hub id or local folder (safetensors).
        batch_size: samples per batch, and images or texts per forward pass.
        aggregate: "mean" (default), "min" or "max" over an interleaved document's or conversation's
            pairs; "all" is "min" and "any" is "max".
        device: a torch device; default: the worker's GPU, else CPU.
        workers: image decoding threads (default: up to 8, bounded by the CPU count).
        schema: the row schema for the `Dataset.map` surface (detected from the columns when None).

    Example:
        >>> scorer = ClipScoreScorer("google/siglip-base-patch16-224", aggregate="min")
        >>> ds = ds.map(scorer, batched=True, batch_size=256)  # doctest: +SKIP
    """

    name = "📎 CLIP score"
    _requires_dependencies = ["torch", "transformers"]

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 64,
        aggregate: str = "mean",
        device: Any = None,
        workers: int | None = None,
        schema: Schema | None = None,
    ):
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {sorted(AGGREGATES)}, got {aggregate!r}")
        super().__init__(batch_size=batch_size, schema=schema)
        self.model_name = str(model)
        self.aggregate = aggregate
        self.device = device
        self.workers = workers
        self._encoder: DualEncoder | None = None
        self._pool: DecodePool | None = None

    @property
    def model(self) -> DualEncoder:
        """The dual encoder, loaded on first use."""
        if self._encoder is None:
            from mmsieve.models.dual_encoder import DualEncoder

            self._encoder = DualEncoder.from_pretrained(self.model_name, device=self.device, rank=self.rank)
        return self._encoder

    @property
    def pool(self) -> DecodePool:
        if self._pool is None:
            self._pool = DecodePool(self.workers)
        return self._pool

    def prepare(self, samples: list[Sample]) -> ClipInputs:
        """Decode and tokenize (CPU; runs in a background thread for the next batch during `compute`)."""
        return prepare_clip_inputs(samples, self.model, batch_size=self.batch_size, pool=self.pool)

    def compute(self, samples: list[Sample], prepared: Any = None) -> Columns:
        return clip_score_columns(
            samples,
            self.model,
            aggregate=self.aggregate,
            batch_size=self.batch_size,
            pool=self.pool,
            prepared=prepared,
        )

    def output_features(self) -> dict[str, Any]:
        from datasets import List, Value

        return {
            SCORE_COLUMN: Value("float32"),
            PAIR_SCORES_COLUMN: List(Value("float32")),
            ERROR_COLUMN: Value("string"),
        }

    def parameters(self) -> dict[str, Any]:
        """The settings in force, for stats.json and dataset cards."""
        return {"model": self.model_name, "aggregate": self.aggregate, "score": "cosine"}

    def _transient_attributes(self) -> tuple[str, ...]:
        return ("_encoder", "_pool")


class ClipScoreFilter(ModelScoreFilter):
    """Keeps samples whose CLIP/SigLIP score reaches `threshold`, or the top `keep_fraction` of the run.

    DataComp's CLIP-score filter for ViT-B/32 keeps cosine >= 0.25 or 0.28, or the top 30%; SigLIP
    scores live on another scale, so place its threshold with `keep_fraction` or on your own data.
    Dropped rows carry `low_clip_score`, or the reason they could not be scored.

    Example:
        >>> f = ClipScoreFilter("openai/clip-vit-base-patch32", threshold=0.28)
        >>> f.scorer.model_name
        'openai/clip-vit-base-patch32'
    """

    name = "📎 CLIP score filter"

    scorer_class = ClipScoreScorer
    score_column = SCORE_COLUMN
    score_error_column = ERROR_COLUMN


__all__ = [
    "AGGREGATES",
    "ClipInputs",
    "ClipScoreFilter",
    "ClipScoreScorer",
    "clip_score_columns",
    "image_text_pairs",
    "prepare_clip_inputs",
]
