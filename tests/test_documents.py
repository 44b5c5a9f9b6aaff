"""Sample <-> datatrove Document: lossless round trips, also through datatrove's Parquet and Jsonl writers/readers."""

from __future__ import annotations

import json
import tempfile

import pytest
from datatrove.data import Document, Media, MediaType
from datatrove.pipeline.readers import JsonlReader, ParquetReader
from datatrove.pipeline.writers import JsonlWriter, ParquetWriter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmsieve.documents import EMPTY_TEXT, LAYOUT_KEY, document_to_sample, sample_to_document
from mmsieve.sample import ImageRef, ImageSlot, Sample, Turn


SETTINGS = settings(max_examples=50, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])

texts = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
    st.sampled_from(["", "\n\n", "a\n\nb", "<image>", "User: x\nAssistant: y", "é漢🙂"]),
)
image_refs = st.builds(
    ImageRef,
    data=st.none() | st.binary(max_size=12),
    path=st.none() | st.text(min_size=1, max_size=8),
    url=st.none() | st.text(min_size=1, max_size=8),  # an empty url reads back as None (documented)
)
meta_keys = st.text(alphabet="abcdefghij_", min_size=1, max_size=6)
meta_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False, allow_infinity=False), texts
)
metas = st.dictionaries(meta_keys, meta_values, max_size=3)
reasons = st.one_of(st.tuples(st.none(), st.none()), st.tuples(st.sampled_from(["malformed_row", "low"]), texts))


@st.composite
def samples(draw: st.DrawFn, kind: str | None = None) -> Sample:
    kind = kind or draw(st.sampled_from(["caption", "interleaved", "conversation"]))
    reason, detail = draw(reasons)
    s = Sample(id=draw(st.text(min_size=1, max_size=8)), kind=kind, meta=draw(metas), reason=reason, detail=detail)
    if kind == "caption":
        s.images = draw(st.lists(image_refs, max_size=1))
        s.text = draw(st.none() | texts)
    elif kind == "interleaved":
        s.images = draw(st.lists(st.none() | image_refs, max_size=3))
        ints = st.integers(0, len(s.images) - 1) if s.images else st.nothing()
        s.segments = draw(st.lists(texts | ints, max_size=6))
    else:
        s.images = draw(st.lists(st.none() | image_refs, max_size=3))
        s.turns = draw(st.lists(st.builds(Turn, texts, texts), max_size=3))
        for k, turn in enumerate(s.turns):
            offsets = draw(st.lists(st.integers(0, len(turn.user)), max_size=2))
            markers = st.sampled_from(["<image>", "<image>\n", "\n<image>"])
            s.image_slots += [ImageSlot(k, o, draw(markers)) for o in sorted(offsets)]
    return s


def _through(writer_cls: type, reader_cls: type, docs: list[Document]) -> list[Document]:
    with tempfile.TemporaryDirectory() as tmp:
        for _ in writer_cls(tmp, save_media_bytes=True).run(iter(docs)):
            pass
        return list(reader_cls(tmp).run())


def _strip_file_path(sample: Sample, original: Sample) -> Sample:
    if "file_path" not in original.meta:
        sample.meta.pop("file_path", None)
    return sample


@SETTINGS
@given(samples())
def test_document_round_trip(sample: Sample) -> None:
    doc = sample_to_document(sample)
    assert doc.text, "datatrove readers skip documents with empty text"
    assert all(m.metadata and m.type == MediaType.IMAGE for m in doc.media)
    assert [m.id for m in doc.media] == [f"{sample.id}/{k}" for k in range(len(sample.images))]
    assert all(0 <= m.metadata["text_offset"] <= len(doc.text) for m in doc.media)
    assert document_to_sample(doc) == sample


@pytest.mark.parametrize("writer_cls,reader_cls", [(ParquetWriter, ParquetReader), (JsonlWriter, JsonlReader)])
@pytest.mark.parametrize("kind", ["caption", "interleaved", "conversation"])
def test_datatrove_writer_reader_round_trip(kind: str, writer_cls: type, reader_cls: type) -> None:
    @settings(max_examples=15, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(samples(kind))
    def check(sample: Sample) -> None:
        (doc,) = _through(writer_cls, reader_cls, [sample_to_document(sample)])
        assert _strip_file_path(document_to_sample(doc), sample) == sample

    check()


@pytest.mark.parametrize("writer_cls,reader_cls", [(ParquetWriter, ParquetReader), (JsonlWriter, JsonlReader)])
def test_several_documents_of_one_kind_in_one_file(writer_cls: type, reader_cls: type) -> None:
    img = ImageRef(data=b"\x89PNG..", path="a.png")
    originals = [
        Sample.interleaved("d/0", [img, None], ["Intro", 0, "", 1, "a\n\nb"], source="x", score=1.5),
        Sample.interleaved("d/1", [], [""], source="y", score=None),
        Sample.interleaved("d/2", [ImageRef(data=b"")], [0], source="z", score=2.0),
    ]
    docs = _through(writer_cls, reader_cls, [sample_to_document(s) for s in originals])
    assert [_strip_file_path(document_to_sample(d), s) for d, s in zip(docs, originals, strict=True)] == originals


def test_shapes_of_each_kind() -> None:
    img = ImageRef(data=b"jpg", path="p.jpg", url="http://x/p.jpg")
    doc = sample_to_document(Sample.caption("c", img, "A cat.", source="coco"))
    assert (doc.text, doc.id, doc.metadata["source"], doc.metadata["mmsieve_kind"]) == (
        "A cat.",
        "c",
        "coco",
        "caption",
    )
    (media,) = doc.media
    assert (media.media_bytes, media.path, media.url, media.metadata) == (
        b"jpg",
        "p.jpg",
        "http://x/p.jpg",
        {"index": 0, "text_offset": 0, "missing": False},
    )

    doc = sample_to_document(Sample.interleaved("i", [img, None], ["Intro", 0, "Body", 1]))
    assert doc.text == "Intro\n\nBody"
    assert json.loads(doc.metadata[LAYOUT_KEY]) == [["text", 0, 5], ["image", 0], ["text", 7, 11], ["image", 1]]
    assert [m.metadata["text_offset"] for m in doc.media] == [5, 11]
    assert doc.media[1].metadata["missing"] and doc.media[1].media_bytes is None

    conv = Sample.conversation("v", [img], [Turn("What?", "A dog."), Turn("Colour?", "Red.")])
    conv.image_slots = [ImageSlot(0, 0, "<image>\n")]
    doc = sample_to_document(conv)
    assert doc.text == "User: What?\nAssistant: A dog.\nUser: Colour?\nAssistant: Red.\n"
    assert json.loads(doc.metadata[LAYOUT_KEY])[:2] == [["user", 6, 11], ["assistant", 23, 29]]
    assert doc.media[0].metadata["text_offset"] == 6
    assert json.loads(doc.metadata["mmsieve_image_slots"]) == [[0, 0, "<image>\n"]]


def test_empty_text_placeholder_and_none_caption() -> None:
    for text in ("", None):
        s = Sample.caption("c", ImageRef(data=b"x"), text)
        doc = sample_to_document(s)
        assert doc.text == EMPTY_TEXT
        assert document_to_sample(doc).text == text


def test_reason_and_detail_round_trip_and_reserved_meta() -> None:
    s = Sample.invalid("r", "interleaved", "malformed_row", "position 2 has neither image nor text", {"url": "u"})
    doc = sample_to_document(s)
    assert doc.metadata["mmsieve_reason"] == "malformed_row" and doc.text == EMPTY_TEXT
    assert document_to_sample(doc) == s
    with pytest.raises(ValueError, match="reserved"):
        sample_to_document(Sample.caption("c", None, "t", mmsieve_layout="x"))


def test_step_metadata_comes_back_in_meta_and_none_reserved_keys_are_absent() -> None:
    doc = sample_to_document(Sample.caption("c", None, "t", source="s"))
    doc.metadata |= {"clip_score": 0.3, "mmsieve_reason": None, "mmsieve_image_slots": None}
    back = document_to_sample(doc)
    assert back.meta == {"source": "s", "clip_score": 0.3} and back.reason is None and back.image_slots == []


def test_foreign_document_without_mmsieve_metadata() -> None:
    media = [Media(id="x/0", type=MediaType.IMAGE, url="http://a", media_bytes=b"b", metadata={"w": 1})]
    s = document_to_sample(Document(text="hello", id="x", media=media, metadata={"lang": "en"}))
    assert (s.kind, s.text, s.images, s.meta) == (
        "caption",
        "hello",
        [ImageRef(data=b"b", url="http://a")],
        {"lang": "en"},
    )
