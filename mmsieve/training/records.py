"""Seeds in, labelled training rows out: the row layout shared by the contrastive and teacher generators.

A seed is a real image (or document) with a known-good text. A generator turns it into `TrainingRecord`s, one per
quality level (see `mmsieve.training.levels`), and `to_dataset` turns records into a `datasets.Dataset`.

Row layout (one layout for both kinds, OBELICS style, so one classifier data loader reads everything):
  - `id`: `"{source_id}::{kind}::L{label}"` (+ `"::{variant}"` when a seed has several texts per level).
  - `kind`: "caption" or "interleaved".
  - `images` (`List(Image)`) and `texts` (`List(string)`): aligned lists, exactly one of the two set at each position.
    A caption row is the two-position document `images=[image, None]`, `texts=[None, caption]` (image first, as the
    UniFilter caption sequence reads it).
  - `text`: the row's text flattened (the caption, or the text segments joined by a blank line), for reading.
  - `label`: the quality level, 0-3.
  - `generator`: how the text was made, e.g. `"contrastive:color_swap"`, `"teacher:openai:gpt-4o"`.
  - `source_id`: the id of the seed image or document; `original_text`: the seed's known-good text, flattened.
  - `edit`: what the generator changed, in words (e.g. `"color: blue -> red"`), empty when nothing was.

Example:
    >>> seed = CaptionSeed("chelsea", b"...jpeg...", "A tabby cat.")
    >>> rec = TrainingRecord.caption(seed, "A cat.", label=2, generator="contrastive:generic_template")
    >>> rec.id, rec.text
    ('chelsea::caption::L2', 'A cat.')
    >>> sample, label = row_to_training_sample(to_dataset([rec])[0])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mmsieve.sample import Sample
from mmsieve.schemas import Schema, image_from_cell, row_to_sample


RecordKind = Literal["caption", "interleaved"]
SEGMENT_SEPARATOR = "\n\n"  # how UniFilter joins the text segments of an interleaved document


def segments_text(segments: Sequence[str | int]) -> str:
    """The text segments of a reading order joined by a blank line (images, the `int`s, left out).

    Example:
        >>> segments_text(["Intro", 0, "More"])
        'Intro\\n\\nMore'
    """
    return SEGMENT_SEPARATOR.join(s for s in segments if isinstance(s, str))


@dataclass
class CaptionSeed:
    """A real image with an accurate, specific caption (the level-3 text) and optional structured facts.

    Args:
        source_id: a stable id of the image in its source dataset.
        image: the encoded image bytes.
        text: the known-good caption.
        facts: structured facts the caption states, e.g. `{"shape": "circle", "color": "red"}` (easy-vqa).

    Example:
        >>> CaptionSeed("easyvqa/train/0", b"...png...", "A blue rectangle.", {"shape": "rectangle", "color": "blue"})
        ... # doctest: +ELLIPSIS
        CaptionSeed(source_id='easyvqa/train/0', ...)
    """

    source_id: str
    image: bytes
    text: str
    facts: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"CaptionSeed(source_id={self.source_id!r}, image={len(self.image)} bytes, text={self.text!r:.60})"

    @classmethod
    def from_sample(cls, sample: Sample) -> CaptionSeed:
        """A seed from a caption `Sample` (from any source `mmsieve.schemas` reads)."""
        if sample.kind != "caption" or not sample.images or sample.images[0] is None or not sample.text:
            raise ValueError(f"sample {sample.id!r} is not a caption pair with an image and a text")
        if sample.images[0].data is None:
            raise ValueError(f"sample {sample.id!r} has no image bytes (only {sample.images[0]!r})")
        return cls(sample.id, sample.images[0].data, sample.text)


@dataclass
class DocumentSeed:
    """A real interleaved document: `segments` mixes text (`str`) and indices (`int`) into `images` (bytes).

    Example:
        >>> doc = DocumentSeed("obelics/7", [b"...jpeg..."], ["The Moon tonight.", 0, "It was a full moon."])
        >>> doc.text
        'The Moon tonight.\\n\\nIt was a full moon.'
    """

    source_id: str
    images: list[bytes]
    segments: list[str | int]

    def __repr__(self) -> str:
        return f"DocumentSeed(source_id={self.source_id!r}, images={len(self.images)}, segments={len(self.segments)})"

    @property
    def text(self) -> str:
        """The text segments joined by a blank line."""
        return segments_text(self.segments)

    @classmethod
    def from_sample(cls, sample: Sample) -> DocumentSeed:
        """A seed from an interleaved `Sample` (e.g. an OBELICS row); every referenced image needs bytes."""
        if sample.kind != "interleaved":
            raise ValueError(f"sample {sample.id!r} is a {sample.kind}, not an interleaved document")
        images = sample.interleaved_images()
        if any(im is None or im.data is None for im in images):
            raise ValueError(f"sample {sample.id!r} has an image without bytes")
        positions = iter(range(len(images)))  # images renumbered in reading order
        segments = [next(positions) if isinstance(s, int) else s for s in sample.segments]
        return cls(sample.id, [im.data for im in images], segments)  # type: ignore[union-attr]


@dataclass
class TrainingRecord:
    """One labelled training example: real images + a (generated) text at a known quality level.

    `segments` indexes `images` like `Sample.segments`; a caption record is `[0, caption]`.
    """

    id: str
    kind: RecordKind
    label: int
    generator: str
    source_id: str
    images: list[bytes]
    segments: list[str | int]
    original_text: str
    edit: str = ""

    def __repr__(self) -> str:
        return f"TrainingRecord(id={self.id!r}, generator={self.generator!r}, text={self.text!r:.60})"

    @property
    def text(self) -> str:
        """The record's text segments joined by a blank line (the caption for a caption record)."""
        return segments_text(self.segments)

    @classmethod
    def caption(
        cls, seed: CaptionSeed, text: str, *, label: int, generator: str, edit: str = "", variant: int = 0
    ) -> TrainingRecord:
        """A caption record for `seed` with `text` at level `label`."""
        return cls(
            record_id(seed.source_id, "caption", label, variant),
            "caption",
            label,
            generator,
            seed.source_id,
            [seed.image],
            [0, text],
            seed.text,
            edit,
        )

    @classmethod
    def document(
        cls,
        seed: DocumentSeed,
        texts: Sequence[str],
        *,
        label: int,
        generator: str,
        edit: str = "",
        variant: int = 0,
    ) -> TrainingRecord:
        """A document record: `seed`'s images and layout with its text segments replaced by `texts`, in order."""
        n_text = sum(isinstance(s, str) for s in seed.segments)
        if len(texts) != n_text:
            raise ValueError(f"document {seed.source_id!r} has {n_text} text segments, got {len(texts)} texts")
        replacements = iter(texts)
        segments = [s if isinstance(s, int) else next(replacements) for s in seed.segments]
        return cls(
            record_id(seed.source_id, "interleaved", label, variant),
            "interleaved",
            label,
            generator,
            seed.source_id,
            list(seed.images),
            segments,
            seed.text,
            edit,
        )

    def to_row(self) -> dict[str, Any]:
        """The record as a dataset row (image cells are `{"bytes", "path"}` dicts)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "images": [{"bytes": self.images[s], "path": None} if isinstance(s, int) else None for s in self.segments],
            "texts": [s if isinstance(s, str) else None for s in self.segments],
            "text": self.text,
            "label": self.label,
            "generator": self.generator,
            "source_id": self.source_id,
            "original_text": self.original_text,
            "edit": self.edit,
        }


def record_id(source_id: str, kind: str, label: int, variant: int = 0) -> str:
    """The row id, also the resume key of the teacher generator.

    Example:
        >>> record_id("coco/42", "caption", 1), record_id("coco/42", "caption", 1, variant=2)
        ('coco/42::caption::L1', 'coco/42::caption::L1::2')
    """
    return f"{source_id}::{kind}::L{label}" + (f"::{variant}" if variant else "")


def training_features() -> Any:
    """The explicit `datasets.Features` of generated training data (see the module docstring)."""
    from datasets import Features, Image, List, Value

    return Features(
        {
            "id": Value("string"),
            "kind": Value("string"),
            "images": List(Image()),
            "texts": List(Value("string")),
            "text": Value("string"),
            "label": Value("int64"),
            "generator": Value("string"),
            "source_id": Value("string"),
            "original_text": Value("string"),
            "edit": Value("string"),
        }
    )


def to_dataset(records: Sequence[TrainingRecord]) -> Any:
    """Records -> a `datasets.Dataset` with `training_features()`, ready for `push_to_hub`.

    Example:
        >>> ds = to_dataset(ContrastiveGenerator(seed=0).easyvqa("train", limit=2))  # doctest: +SKIP
        >>> ds.features["images"], ds[0]["label"]  # doctest: +SKIP
    """
    from datasets import Dataset

    rows = [r.to_row() for r in records]
    features = training_features()
    return Dataset.from_dict({k: [row[k] for row in rows] for k in features}, features=features)


def row_to_training_sample(row: Mapping[str, Any]) -> tuple[Sample, int]:
    """A generated row -> (`Sample`, label): a caption `Sample` for caption rows, an interleaved one otherwise.

    The other columns (`generator`, `source_id`, `original_text`, `edit`) go to `Sample.meta`.

    Example:
        >>> sample, label = row_to_training_sample(to_dataset(records)[0])  # doctest: +SKIP
        >>> sample.kind, sample.text, label  # doctest: +SKIP
        ('caption', 'A blue rectangle on a plain background.', 3)
    """
    content = {k: row[k] for k in ("id", "images", "texts")}
    sample = row_to_sample(content, Schema.for_format("obelics", id_column="id"), str(row["id"]))
    meta = {k: row[k] for k in ("generator", "source_id", "original_text", "edit") if k in row}
    if row["kind"] == "caption" and sample.reason is None:
        image = image_from_cell(next(im for im in row["images"] if im is not None))
        return Sample.caption(sample.id, image, row["text"], **meta), int(row["label"])
    sample.meta.update(meta)
    return sample, int(row["label"])
