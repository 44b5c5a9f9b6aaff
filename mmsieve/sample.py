"""The one record type of mmsieve: a caption pair, an interleaved document or a conversation.

A `Sample` keeps its images as encoded bytes (`ImageRef`) until a model batch needs pixels, so
moving samples between readers, steps, workers and writers never decodes an image. Converters to
and from Hugging Face rows live in `mmsieve.schemas`; to and from datatrove Documents in
`mmsieve.documents`.

Example:
    >>> s = Sample.caption("coco/1", ImageRef(data=b"...jpeg bytes..."), "A cat on a sofa.")
    >>> s.kind, s.text, len(s.images)
    ('caption', 'A cat on a sofa.', 1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


Kind = Literal["caption", "interleaved", "conversation"]
KINDS: tuple[Kind, ...] = ("caption", "interleaved", "conversation")

# Columns every step may add. Kept here so readers, writers and steps agree on the names.
REASON_COLUMN = "mmsieve_reason"
DETAIL_COLUMN = "mmsieve_detail"
KEEP_COLUMN = "keep"


@dataclass
class ImageRef:
    """An image as it is stored: encoded file bytes, plus where it came from.

    Args:
        data: the encoded JPEG/PNG/WebP/... bytes; None when only a path or url is known.
        path: a file path (or the original file name from an HF `Image` cell).
        url: the web address the image was fetched from, when known.

    Example:
        >>> ImageRef(data=open("cat.jpg", "rb").read(), path="cat.jpg")  # doctest: +SKIP
    """

    data: bytes | None = None
    path: str | None = None
    url: str | None = None

    def __repr__(self) -> str:  # never dump megabytes of bytes into a log line
        size = "None" if self.data is None else f"{len(self.data)} bytes"
        return f"ImageRef(data={size}, path={self.path!r}, url={self.url!r})"


@dataclass
class Turn:
    """One question-answer turn of a conversation.

    Example:
        >>> Turn(user="What colour is the car?", assistant="Red.")
        Turn(user='What colour is the car?', assistant='Red.')
    """

    user: str
    assistant: str


@dataclass
class ImageSlot:
    """Where an inline image marker (LLaVA's `<image>`) stood in a conversation's source text.

    Markers are removed from `Turn.user` so models and filters see clean text; the slot lets the
    converter put the exact marker back, so the conversion is lossless.

    Args:
        turn: index of the turn whose user text held the marker.
        offset: character offset in the cleaned user text.
        marker: the literal text removed, e.g. `"<image>\\n"`.
    """

    turn: int
    offset: int
    marker: str


@dataclass
class Sample:
    """One training example of any kind, with images kept encoded.

    Exactly one content field is used, by `kind`:
      - `caption`: `text` is the caption, `images` holds zero or one image.
      - `interleaved`: `segments` is the reading order; each item is a text segment (`str`) or an
        index (`int`) into `images`. OBELICS rows map here.
      - `conversation`: `turns` holds the question-answer turns; `images` belong to the whole
        conversation (FineVision, LLaVA). `image_slots` records inline markers of the source.

    Args:
        id: a stable identifier (source id, or `"{task:05d}/{index}"`).
        kind: one of `KINDS`.
        images: the sample's images in reading order; an entry is None when the source cell was empty.
        text: the caption (`caption` kind); None when the source cell was empty.
        segments: the interleaved reading order (`interleaved` kind).
        turns: conversation turns (`conversation` kind).
        image_slots: inline image markers removed from the turns (`conversation` kind, LLaVA source).
        meta: every other column of the source row, carried through untouched, plus columns steps add.
        reason: set when the source row itself is unusable (a missing column, mismatched lists);
            filters drop such a sample with this reason instead of raising.
        detail: a human-readable explanation of `reason`.

    Example:
        >>> doc = Sample.interleaved("obelics/7", [ImageRef(data=b"...")], ["Intro", 0, "More text"])
        >>> doc.texts()
        ['Intro', 'More text']
    """

    id: str
    kind: Kind
    images: list[ImageRef | None] = field(default_factory=list)
    text: str | None = None
    segments: list[str | int] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    image_slots: list[ImageSlot] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    detail: str | None = None

    @classmethod
    def caption(cls, id: str, image: ImageRef | None, text: str | None, **meta: Any) -> Sample:
        """An image-caption pair. `meta` keyword arguments become passthrough columns."""
        return cls(id=id, kind="caption", images=[image] if image is not None else [], text=text, meta=meta)

    @classmethod
    def interleaved(cls, id: str, images: list[ImageRef | None], segments: list[str | int], **meta: Any) -> Sample:
        """An interleaved document: `segments` mixes text (`str`) and indices (`int`) into `images`."""
        return cls(id=id, kind="interleaved", images=list(images), segments=list(segments), meta=meta)

    @classmethod
    def conversation(cls, id: str, images: list[ImageRef | None], turns: list[Turn], **meta: Any) -> Sample:
        """A multi-turn visual conversation over `images`."""
        return cls(id=id, kind="conversation", images=list(images), turns=list(turns), meta=meta)

    @classmethod
    def invalid(cls, id: str, kind: Kind, reason: str, detail: str, meta: dict[str, Any] | None = None) -> Sample:
        """A placeholder for a source row that could not be converted; filters drop it with `reason`."""
        return cls(id=id, kind=kind, meta=dict(meta or {}), reason=reason, detail=detail)

    def texts(self) -> list[str]:
        """Every piece of text in reading order (caption, text segments, then user/assistant turns)."""
        if self.kind == "caption":
            return [] if self.text is None else [self.text]
        if self.kind == "interleaved":
            return [s for s in self.segments if isinstance(s, str)]
        return [t for turn in self.turns for t in (turn.user, turn.assistant)]

    def present_images(self) -> list[ImageRef]:
        """The images that are not None, in reading order."""
        return [im for im in self.images if im is not None]

    def interleaved_images(self) -> list[ImageRef | None]:
        """For `interleaved` samples, the images in the order the segments reference them."""
        return [self.images[s] for s in self.segments if isinstance(s, int)]
