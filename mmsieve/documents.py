"""`Sample` <-> datatrove `Document`, losslessly, in a shape datatrove's own readers and writers keep intact.

A Document gets:
  - `text`: a readable linearisation. caption: the caption; interleaved: the text segments joined with "\\n\\n";
    conversation: "User: ...\\nAssistant: ...\\n" per turn. An empty linearisation is replaced by `EMPTY_TEXT`
    (datatrove readers skip documents without text); the layout still recovers the exact text.
  - `media`: one `Media(type=MediaType.IMAGE)` per entry of `sample.images`, in order, id `f"{sample.id}/{k}"`, with
    `media_bytes`/`path`/`url` (an absent url is written as "" and read back as None) and `metadata` always
    `{"index": k, "text_offset": o, "missing": bool}`; a None entry is a Media with `missing=True`. `text_offset` is
    where the image sits in `text`: interleaved, the end of the text before it (the end of `text` when the image is
    not referenced); conversation, the position of its `<image>` slot (the i-th slot for the i-th image), else 0.
  - `metadata`: `sample.meta` (flat, same keys; score columns steps add here come back in `Sample.meta`), plus
    `mmsieve_kind`, `mmsieve_layout` (a JSON string, see below), `mmsieve_image_slots` (a JSON string of
    `[turn, offset, marker]` triples, only when there are slots) and `mmsieve_reason`/`mmsieve_detail` (when set).

`mmsieve_layout` is a JSON list of items, each naming a span `[start, end)` of `text`:
  caption `[["text", s, e]]` (`["text", null]` for a None caption); interleaved `["text", s, e]` and `["image", k]`
  (an index into `images`) in reading order; conversation `["user", s, e], ["assistant", s, e]` per turn;
  `[]` for an invalid sample. JSON strings keep the metadata struct simple for ParquetWriter, whose schema is
  inferred from the first document: write one kind per file, or pass an explicit schema. On the way back, reserved
  keys that are None (parquet fills absent struct keys with None) count as absent.

Note: readers add `file_path` to `metadata`, which then appears in `Sample.meta`.

Example:
    >>> doc = sample_to_document(Sample.caption("c/1", ImageRef(data=b"..."), "A dog."))
    >>> doc.text, doc.media[0].id, document_to_sample(doc).text
    ('A dog.', 'c/1/0', 'A dog.')
"""

from __future__ import annotations

import json
from typing import Any

from datatrove.data import Document, Media, MediaType

from mmsieve.sample import DETAIL_COLUMN, REASON_COLUMN, ImageRef, ImageSlot, Sample, Turn


KIND_KEY = "mmsieve_kind"
LAYOUT_KEY = "mmsieve_layout"
SLOTS_KEY = "mmsieve_image_slots"
RESERVED_KEYS = frozenset({KIND_KEY, LAYOUT_KEY, SLOTS_KEY, REASON_COLUMN, DETAIL_COLUMN})
EMPTY_TEXT = "<no text>"
SEGMENT_SEPARATOR = "\n\n"


def _linearise(sample: Sample) -> tuple[str, list[list[Any]], list[int | None]]:
    """The text, the layout, and each image's text offset (None: not placed)."""
    parts: list[str] = []
    layout: list[list[Any]] = []
    offsets: list[int | None] = [None] * len(sample.images)
    pos = 0

    def add(s: str, tag: str | None = None) -> None:
        nonlocal pos
        if tag is not None:
            layout.append([tag, pos, pos + len(s)])
        parts.append(s)
        pos += len(s)

    if sample.kind == "caption":
        if sample.text is None:
            layout.append(["text", None])
        else:
            add(sample.text, "text")
        offsets = [0] * len(sample.images)
    elif sample.kind == "interleaved":
        previous_text = False
        for seg in sample.segments:
            if isinstance(seg, str):
                if previous_text:
                    add(SEGMENT_SEPARATOR)
                add(seg, "text")
                previous_text = True
            else:
                layout.append(["image", seg])
                if 0 <= seg < len(offsets) and offsets[seg] is None:
                    offsets[seg] = pos
    else:
        user_starts = []
        for turn in sample.turns:
            add("User: ")
            user_starts.append(pos)
            add(turn.user, "user")
            add("\nAssistant: ")
            add(turn.assistant, "assistant")
            add("\n")
        for i, slot in enumerate(sample.image_slots[: len(offsets)]):
            if 0 <= slot.turn < len(user_starts):
                offsets[i] = user_starts[slot.turn] + slot.offset
        offsets = [0 if o is None else o for o in offsets]
    return "".join(parts), layout, offsets


def sample_to_document(sample: Sample) -> Document:
    """A `Sample` -> a datatrove `Document` (see the module docstring for the shape).

    Raises:
        ValueError: when `sample.meta` holds one of the reserved `mmsieve_*` keys of `RESERVED_KEYS`.

    Example:
        >>> s = Sample.interleaved("d/1", [ImageRef(data=b"...")], ["Intro", 0, "More"])
        >>> sample_to_document(s).text, sample_to_document(s).media[0].metadata
        ('Intro\\n\\nMore', {'index': 0, 'text_offset': 5, 'missing': False})
    """
    clash = RESERVED_KEYS & set(sample.meta)
    if clash:
        raise ValueError(f"sample {sample.id!r}: meta keys {sorted(clash)} are reserved for the Document encoding")
    text, layout, offsets = _linearise(sample)
    media = []
    for k, (image, offset) in enumerate(zip(sample.images, offsets, strict=True)):
        info = {"index": k, "text_offset": len(text) if offset is None else offset, "missing": image is None}
        if image is None:
            media.append(Media(id=f"{sample.id}/{k}", type=MediaType.IMAGE, url="", metadata=info))
        else:
            media.append(
                Media(
                    id=f"{sample.id}/{k}",
                    type=MediaType.IMAGE,
                    url=image.url or "",
                    path=image.path,
                    media_bytes=image.data,
                    metadata=info,
                )
            )
    metadata = dict(sample.meta)
    metadata[KIND_KEY] = sample.kind
    metadata[LAYOUT_KEY] = json.dumps(layout, ensure_ascii=False)
    if sample.image_slots:
        metadata[SLOTS_KEY] = json.dumps([[s.turn, s.offset, s.marker] for s in sample.image_slots])
    if sample.reason is not None:
        metadata[REASON_COLUMN] = sample.reason
    if sample.detail is not None:
        metadata[DETAIL_COLUMN] = sample.detail
    return Document(text=text or EMPTY_TEXT, id=sample.id, media=media, metadata=metadata)


def refresh_document(doc: Document, sample: Sample) -> None:
    """Write a sample's text back into the Document it was read from, after a step rewrote that text.

    The text, the layout and each image's `text_offset` are recomputed; the id, the media bytes and the other
    metadata stay as they are. `doc` must be the Document `sample` came from (`document_to_sample(doc)`).

    Example:
        >>> doc = sample_to_document(Sample.caption("c/1", ImageRef(data=b"..."), "A dgo."))
        >>> sample = document_to_sample(doc)
        >>> sample.text = "A dog."
        >>> refresh_document(doc, sample)
        >>> doc.text, document_to_sample(doc).text
        ('A dog.', 'A dog.')
    """
    text, layout, offsets = _linearise(sample)
    doc.text = text or EMPTY_TEXT
    doc.metadata[LAYOUT_KEY] = json.dumps(layout, ensure_ascii=False)
    for media, offset in zip(doc.media, offsets, strict=True):
        media.metadata = {**(media.metadata or {}), "text_offset": len(text) if offset is None else offset}


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _image(media: Media) -> ImageRef | None:
    if (media.metadata or {}).get("missing"):
        return None
    return ImageRef(data=media.media_bytes, path=media.path, url=media.url or None)


def document_to_sample(doc: Document) -> Sample:
    """A datatrove `Document` (from `sample_to_document`, possibly via a writer and reader) -> `Sample`.

    Tolerates parquet round trips (absent keys as None, lists for JSON). A Document without `mmsieve_kind` (not
    made by mmsieve) becomes a caption sample (one image or none) or an interleaved one (text then images).

    Example:
        >>> s = Sample.conversation("v/1", [], [Turn("Hi?", "Hello.")])
        >>> document_to_sample(sample_to_document(s)) == s
        True
    """
    md = doc.metadata or {}
    meta = {k: v for k, v in md.items() if k not in RESERVED_KEYS}
    media = sorted(doc.media or [], key=lambda m: (m.metadata or {}).get("index") or 0)
    images = [_image(m) for m in media]
    kind = md.get(KIND_KEY)
    if kind is None:
        if len(images) <= 1:
            return Sample(id=doc.id, kind="caption", images=images, text=doc.text, meta=meta)
        return Sample(
            id=doc.id, kind="interleaved", images=images, segments=[doc.text, *range(len(images))], meta=meta
        )
    sample = Sample(id=doc.id, kind=kind, images=images, meta=meta, reason=md.get(REASON_COLUMN))
    sample.detail = md.get(DETAIL_COLUMN)
    text = doc.text
    layout = _json(md.get(LAYOUT_KEY)) or []
    spans = [text[item[1] : item[2]] if item[0] != "image" and item[1] is not None else None for item in layout]
    if kind == "caption":
        sample.text = spans[0] if spans else None
    elif kind == "interleaved":
        sample.segments = [
            int(item[1]) if item[0] == "image" else span for item, span in zip(layout, spans, strict=True)
        ]
    else:
        sample.turns = [Turn(spans[i], spans[i + 1]) for i in range(0, len(spans) - 1, 2)]
    slots = _json(md.get(SLOTS_KEY)) or []
    sample.image_slots = [ImageSlot(int(t), int(o), m) for t, o, m in slots]
    return sample
