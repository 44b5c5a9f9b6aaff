"""HF rows <-> Sample: round trips for every format, detection, and bad rows that never raise."""

from __future__ import annotations

import io

import pytest
from datasets import Features, Image, List, Sequence, Value
from hypothesis import given, settings
from hypothesis import strategies as st

from mmsieve.documents import document_to_sample, sample_to_document
from mmsieve.sample import ImageRef, ImageSlot, Sample, Turn
from mmsieve.schemas import (
    LLAVA_ROLES_KEY,
    Schema,
    SchemaError,
    detect_schema,
    image_features,
    parse_columns,
    row_to_sample,
    rows_to_samples,
    sample_to_row,
    samples_to_rows,
)


SETTINGS = settings(max_examples=50, derandomize=True, deadline=None)

texts = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
    st.sampled_from(["", "\n\n", "a\n\nb", "é漢🙂", "<image>"]),
)
cells = st.fixed_dictionaries(
    {"bytes": st.none() | st.binary(max_size=12), "path": st.none() | st.just("/nonexistent/x.jpg")}
).filter(lambda c: c["bytes"] is not None or c["path"] is None)  # a path-only cell would be read from disk
extras = st.fixed_dictionaries({"source": texts, "score": st.none() | st.integers() | st.floats(allow_nan=False)})
# user texts full of markers, adjacent newlines and near-misses
marked = st.lists(
    st.sampled_from(["<image>", "<image>\n", "\n", "\n<image>", "a", "é", "<", "image>", "<image"]) | texts, max_size=6
).map("".join)


@st.composite
def rows(draw: st.DrawFn, fmt: str) -> dict:
    row = dict(draw(extras))
    if fmt == "caption":
        row |= {"image": draw(st.none() | cells), "caption": draw(st.none() | texts)}
    elif fmt == "obelics":
        pos = draw(st.lists(st.tuples(cells | st.just("https://x/y.jpg"), st.none()) | st.tuples(st.none(), texts)))
        row |= {"images": [p[0] for p in pos], "texts": [p[1] for p in pos]}
    elif fmt == "finevision":
        turns = st.lists(st.fixed_dictionaries({"assistant": texts, "user": texts}), max_size=3)
        row |= {"images": draw(st.lists(st.none() | cells, max_size=3)), "texts": draw(turns), "relevance_min": 3}
    else:
        n = draw(st.integers(0, 3))
        roles = [
            draw(st.sampled_from(["human", "user"] if i % 2 == 0 else ["gpt", "assistant"])) for i in range(2 * n)
        ]
        values = [draw(marked if i % 2 == 0 else texts) for i in range(2 * n)]
        row |= {
            "image": draw(st.none() | cells),
            "conversations": [{"from": r, "value": v} for r, v in zip(roles, values, strict=True)],
        }
    return row


@pytest.mark.parametrize("fmt", ["caption", "obelics", "finevision", "llava"])
def test_row_round_trip(fmt: str) -> None:
    schema = Schema.for_format(fmt)

    @SETTINGS
    @given(rows(fmt))
    def check(row: dict) -> None:
        sample = row_to_sample(row, schema, "7")
        assert sample.reason is None, sample.detail
        assert sample.kind == schema.kind and set(sample.meta) - {LLAVA_ROLES_KEY} == set(row) - set(
            schema.columns.values()
        )
        assert sample_to_row(sample, schema) == row
        assert sample_to_row(row_to_sample(sample_to_row(sample, schema), schema, "7"), schema) == row
        assert document_to_sample(sample_to_document(sample)) == sample  # rows -> Sample -> Document -> Sample
        if fmt == "llava":
            assert all("<image>" not in t.user for t in sample.turns)

    check()


@SETTINGS
@given(st.lists(rows("finevision"), max_size=4))
def test_batch_round_trip(batch_rows: list[dict]) -> None:
    schema = Schema.for_format("finevision", id_column="id")
    batch_rows = [r | {"id": f"r{i}"} for i, r in enumerate(batch_rows)]
    batch = {k: [r[k] for r in batch_rows] for k in (batch_rows[0] if batch_rows else {})}
    samples = rows_to_samples(batch, schema, [str(i) for i in range(len(batch_rows))])
    assert [s.id for s in samples] == [r["id"] for r in batch_rows]
    assert samples_to_rows(samples, schema) == batch


def test_llava_markers_are_removed_and_restored_exactly() -> None:
    row = {
        "image": {"bytes": b"x", "path": None},
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is this?"},
            {"from": "gpt", "value": "A cat."},
            {"from": "human", "value": "And this?\n<image>"},
            {"from": "gpt", "value": "A <image> dog."},
            {"from": "human", "value": "a<image>b"},
            {"from": "gpt", "value": ""},
            {"from": "human", "value": "<image>\n<image>\n\n<image>"},
            {"from": "gpt", "value": "two"},
        ],
        "id": "ll/1",
    }
    schema = detect_schema(list(row), columns={"id": "id"})
    s = row_to_sample(row, schema, "0")
    assert s.id == "ll/1" and s.meta == {}
    assert [t.user for t in s.turns] == ["What is this?", "And this?", "ab", ""]
    assert s.turns[1].assistant == "A <image> dog."
    assert s.image_slots == [
        ImageSlot(0, 0, "<image>\n"),
        ImageSlot(1, 9, "\n<image>"),
        ImageSlot(2, 1, "<image>"),
    ] + [
        ImageSlot(3, 0, "<image>\n"),
        ImageSlot(3, 0, "<image>\n"),
        ImageSlot(3, 0, "\n<image>"),
    ]
    assert sample_to_row(s, schema) == row


def test_llava_multi_image_column_and_custom_roles() -> None:
    schema = Schema.for_format("llava", images="images")
    row = {
        "images": [None, {"bytes": b"a", "path": "a.png"}],
        "conversations": [{"from": "user", "value": "q"}, {"from": "gpt", "value": "a"}],
    }
    s = row_to_sample(row, schema, "0")
    assert s.images == [None, ImageRef(data=b"a", path="a.png")] and s.meta[LLAVA_ROLES_KEY] == ["user", "gpt"]
    assert sample_to_row(s, schema) == row


@pytest.mark.parametrize(
    "fmt,row,reason,detail",
    [
        ("caption", {"image": None, "url": "u"}, "missing_column", "column 'caption' is missing"),
        ("caption", {"image": None, "caption": ["a", "b"]}, "malformed_row", "holds list, expected a string"),
        ("caption", {"image": 3, "caption": "a"}, "malformed_row", "image cell of type int"),
        (
            "obelics",
            {"images": [None], "texts": ["a", "b"]},
            "malformed_row",
            "'images' has 1 items but 'texts' has 2",
        ),
        (
            "obelics",
            {"images": [b"x", None], "texts": ["a", None]},
            "malformed_row",
            "position 0 has both image and text",
        ),
        ("obelics", {"images": [None], "texts": [None]}, "malformed_row", "position 0 has neither image nor text"),
        ("obelics", {"images": "x", "texts": []}, "malformed_row", "column 'images' holds str, expected a list"),
        ("obelics", {"images": None, "texts": None}, "malformed_row", "column 'images' holds NoneType"),
        (
            "finevision",
            {"images": [], "texts": [{"user": "q"}]},
            "malformed_row",
            "'texts'[0] is not a {user, assistant}",
        ),
        ("finevision", {"images": [], "texts": [{"user": None, "assistant": "a"}]}, "malformed_row", "non-string"),
        ("llava", {"image": None}, "missing_column", "column 'conversations' is missing"),
        (
            "llava",
            {"image": None, "conversations": [{"from": "gpt", "value": "a"}]},
            "malformed_row",
            "message 0 is from 'gpt'",
        ),
        (
            "llava",
            {"image": None, "conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]},
            "malformed_row",
            "message 1 is from 'human'; expected gpt or assistant",
        ),
        ("llava", {"image": None, "conversations": [{"from": "human", "value": "a"}]}, "malformed_row", "1 messages"),
        (
            "llava",
            {"image": None, "conversations": [{"from": "system", "value": "s"}]},
            "malformed_row",
            "from 'system'",
        ),
    ],
)
def test_bad_rows_give_precise_reasons(fmt: str, row: dict, reason: str, detail: str) -> None:
    schema = Schema.for_format(fmt)
    s = row_to_sample(dict(row, keep_me=1), schema, "9")
    assert (s.reason, s.id, s.kind, s.meta.get("keep_me")) == (reason, "9", schema.kind, 1)
    assert detail in s.detail
    out = sample_to_row(s, schema)  # removed rows are written back exactly as they came, None where missing
    assert out == {**dict.fromkeys(schema.columns.values()), **row, "keep_me": 1}
    assert document_to_sample(sample_to_document(s)) == s


def test_image_cell_variants(tmp_path) -> None:
    from PIL import Image as PILImage

    f = tmp_path / "a.jpg"
    f.write_bytes(b"filebytes")
    schema = Schema.for_format("caption")
    assert row_to_sample({"image": str(f), "caption": "c"}, schema, "0").images == [
        ImageRef(data=b"filebytes", path=str(f))
    ]
    assert (
        row_to_sample({"image": {"bytes": None, "path": str(f)}, "caption": "c"}, schema, "0").images[0].data
        == b"filebytes"
    )
    assert row_to_sample({"image": "missing.jpg", "caption": "c"}, schema, "0").images == [
        ImageRef(path="missing.jpg")
    ]
    assert row_to_sample({"image": b"raw", "caption": "c"}, schema, "0").images == [ImageRef(data=b"raw")]
    buf = io.BytesIO()
    PILImage.new("RGB", (4, 3), "red").save(buf, format="JPEG")
    decoded = PILImage.open(io.BytesIO(buf.getvalue()))
    (ref,) = row_to_sample({"image": decoded, "caption": "c"}, schema, "0").images
    assert ref.data[:2] == b"\xff\xd8" and PILImage.open(io.BytesIO(ref.data)).size == (4, 3)  # re-encoded as JPEG
    (ref,) = row_to_sample({"image": PILImage.new("RGBA", (2, 2)), "caption": "c"}, schema, "0").images
    assert ref.data.startswith(b"\x89PNG")


FEATURES = {
    "caption": Features({"jpg": Image(), "url": Value("string"), "txt": Value("string")}),
    "obelics": Features(
        {"images": List(Value("string")), "texts": List(Value("string")), "metadata": Value("string")}
    ),
    "finevision": Features(
        {
            "images": List(Image()),
            "texts": List({"assistant": Value("string"), "user": Value("string")}),
            "source": Value("string"),
        }
    ),
    "llava": Features(
        {
            "id": Value("string"),
            "image": Image(),
            "conversations": List({"from": Value("string"), "value": Value("string")}),
        }
    ),
}


@pytest.mark.parametrize("fmt", FORMATS := ["caption", "obelics", "finevision", "llava"])
def test_detect_schema_from_features(fmt: str) -> None:
    schema = detect_schema(FEATURES[fmt])
    assert schema.format == fmt
    assert schema.role_columns() <= set(FEATURES[fmt])


def test_detect_schema_details() -> None:
    assert detect_schema(FEATURES["caption"]).columns == {"image": "jpg", "text": "txt"}
    seq = Features({"img": Image(), "turns": Sequence({"from": Value("string"), "value": Value("string")})})
    assert detect_schema(seq).columns == {"image": "img", "conversations": "turns"}
    multi = Features(
        {"images": List(Image()), "conversations": List({"from": Value("string"), "value": Value("string")})}
    )
    assert detect_schema(multi).columns == {"images": "images", "conversations": "conversations"}
    assert detect_schema(["image", "url", "alt_text"]).columns == {"image": "image", "text": "alt_text"}
    assert detect_schema(["png", "caption", "text"]).columns == {"image": "png", "text": "caption"}
    assert detect_schema(["images", "texts", "relevance_ratings", "source"]).format == "finevision"
    assert detect_schema(["images", "texts"], kind="interleaved").format == "obelics"
    assert detect_schema(["images", "texts"], kind="conversation").format == "finevision"
    assert detect_schema(["images", "texts"], example_row={"images": [], "texts": [None, "a"]}).format == "obelics"
    assert (
        detect_schema(["images", "texts"], example_row={"texts": [{"user": "q", "assistant": "a"}]}).format
        == "finevision"
    )
    over = detect_schema(["jpg", "json", "key"], columns=parse_columns("text=json,id=key"))
    assert over == Schema("caption", {"image": "jpg", "text": "json"}, id_column="key")
    assert detect_schema(["a", "b"], kind="caption", columns={"image": "a", "text": "b"}).columns == {
        "image": "a",
        "text": "b",
    }
    assert detect_schema(["image", "caption"], kind="llava", columns={"conversations": "caption"}).format == "llava"


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        (["foo", "bar"], {}, r"cannot detect the row layout .* columns \['foo', 'bar'\].*--columns"),
        (["images", "texts"], {}, "unclear whether `texts`"),
        (["image", "caption"], {"kind": "conversation"}, "tried \\['llava', 'finevision'\\]"),
        (
            ["image", "caption"],
            {"columns": {"text": "nope"}},
            "column 'nope' given for role 'text' is not in the dataset",
        ),
        (["image", "caption"], {"kind": "video"}, "unknown kind 'video'"),
    ],
)
def test_detect_schema_fails_clearly(args: list, kwargs: dict, match: str) -> None:
    with pytest.raises(SchemaError, match=match):
        detect_schema(args, **kwargs)


def test_schema_construction_and_parse_columns() -> None:
    assert Schema.for_format("caption", text="alt").role_columns() == {"image", "alt"}
    assert Schema.for_format("caption", id_column="key").role_columns() == {"image", "caption", "key"}
    assert Schema.for_format("llava").kind == "conversation"
    with pytest.raises(SchemaError, match="needs the roles"):
        Schema("caption", {"image": "i"})
    with pytest.raises(SchemaError, match="unknown format"):
        Schema.for_format("webdataset")
    assert parse_columns("image=jpg, text=alt") == {"image": "jpg", "text": "alt"}
    for bad in ("image", "=x", "image=", "", "a=b,a=c"):
        with pytest.raises(SchemaError):
            parse_columns(bad)


def test_image_features() -> None:
    assert image_features(Schema.for_format("caption", image="jpg")) == {"jpg": Image()}
    assert image_features(Schema.for_format("obelics"), decode=False) == {"images": List(Image(decode=False))}
    assert image_features(Schema.for_format("llava", images="imgs")) == {"imgs": List(Image())}


def test_conversation_sample_to_row_to_sample() -> None:
    s = Sample.conversation("c", [ImageRef(data=b"x")], [Turn("Hi", "Yo")], source="s")
    s.image_slots = [ImageSlot(0, 0, "<image>\n")]
    for fmt in ("llava", "finevision"):
        schema = Schema.for_format(fmt, images="images") if fmt == "llava" else Schema.for_format(fmt)
        back = row_to_sample(sample_to_row(s, schema), schema, "c")
        assert back.turns == s.turns and back.images == s.images and back.meta == s.meta
        assert back.image_slots == (s.image_slots if fmt == "llava" else [])


@pytest.mark.parametrize("fmt", ["caption", "finevision", "llava"])
def test_dataset_map_round_trip(fmt: str) -> None:
    from datasets import Dataset
    from PIL import Image as PILImage

    png = io.BytesIO()
    PILImage.new("RGB", (2, 2)).save(png, format="PNG")
    cell = {"bytes": png.getvalue(), "path": "a.png"}
    data = {
        "caption": {"image": [cell, None], "caption": ["a", None]},
        "finevision": {"images": [[cell], []], "texts": [[{"user": "q", "assistant": "a"}], []]},
        "llava": {
            "image": [cell, None],
            "conversations": [[{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}], []],
        },
    }[fmt] | {"source": ["s0", "s1"]}
    schema = Schema.for_format(fmt)
    ds = Dataset.from_dict(data).cast_column(*next(iter(image_features(schema, decode=False).items())))
    assert detect_schema(ds.features) == schema
    out = ds.map(
        lambda b, idx: samples_to_rows(rows_to_samples(b, schema, [str(i) for i in idx]), schema),
        batched=True,
        with_indices=True,
    )
    assert out.to_dict() == ds.to_dict()
