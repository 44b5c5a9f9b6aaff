"""Hugging Face rows <-> `Sample`, for the four row layouts mmsieve reads, with column auto-detection.

Formats (row layouts) and the `Sample.kind` each maps to:
  - `caption` (caption): one image column + one text column (COCO, CC3M, DataComp).
  - `obelics` (interleaved): aligned `images`/`texts` lists, exactly one of the two set at each position.
  - `finevision` (conversation): an `images` list + `texts`, a list of `{user, assistant}` dicts.
  - `llava` (conversation): `image` (or an `images` list) + `conversations`, a list of `{from, value}` messages with
    `<image>` markers in the user text (removed from `Turn.user`, recorded as `ImageSlot`s).

Every column a schema does not consume is a passthrough column, kept in `Sample.meta`. The conversions never raise
on bad data: an unusable row becomes `Sample.invalid(...)` with reason `missing_column` or `malformed_row`.

Image cells may be HF `Image(decode=False)` dicts `{"bytes", "path"}`, raw bytes, a path string, a URL string or a
decoded PIL image (re-encoded, in its own format when possible). They come back as `{"bytes", "path"}` dicts (a
URL-only image comes back as its URL string). A path-only cell whose file exists locally is read, so it comes back
with its bytes. LLaVA messages must alternate human/gpt (or user/assistant), starting with the user; role strings
other than human/gpt are kept in `meta[LLAVA_ROLES_KEY]`. System messages and odd message counts are malformed rows.

Example:
    >>> schema = detect_schema(["jpg", "alt", "url"])
    >>> s = row_to_sample({"jpg": {"bytes": b"...", "path": None}, "alt": "A cat", "url": "u"}, schema, "0")
    >>> s.text, s.meta, sample_to_row(s, schema)["alt"]
    ('A cat', {'url': 'u'}, 'A cat')
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmsieve.reasons import MALFORMED_ROW, MISSING_COLUMN
from mmsieve.sample import ImageRef, ImageSlot, Kind, Sample, Turn


FORMATS = ("caption", "obelics", "finevision", "llava")
FORMAT_KIND: dict[str, Kind] = {
    "caption": "caption",
    "obelics": "interleaved",
    "finevision": "conversation",
    "llava": "conversation",
}
DEFAULT_COLUMNS: dict[str, dict[str, str]] = {
    "caption": {"image": "image", "text": "caption"},
    "obelics": {"images": "images", "texts": "texts"},
    "finevision": {"images": "images", "texts": "texts"},
    "llava": {"image": "image", "conversations": "conversations"},
}
# the allowed role sets of each format
ROLES = {f: (frozenset(c),) for f, c in DEFAULT_COLUMNS.items()} | {
    "llava": (frozenset({"image", "conversations"}), frozenset({"images", "conversations"}))
}
IMAGE_NAMES = ("image", "jpg", "jpeg", "png", "img", "webp")
TEXT_NAMES = ("caption", "text", "txt", "alt_text", "alt", "sentence", "description")
IMAGE_MARKER = "<image>"
LLAVA_ROLES_KEY = "mmsieve_llava_roles"  # meta key holding the `from` strings when they are not human/gpt
LLAVA_USER, LLAVA_ASSISTANT = ("human", "user"), ("gpt", "assistant")
_HINT = "pass --kind caption|interleaved|conversation and/or --columns ROLE=COL,... (e.g. image=COL,text=COL)"


class SchemaError(ValueError):
    """The row layout could not be determined or the given columns do not fit it."""


class _Malformed(Exception):
    """Internal: a cell has the wrong structure (becomes a `malformed_row` sample)."""


@dataclass(frozen=True)
class Schema:
    """How one dataset's columns map onto a `Sample`.

    Args:
        format: one of `FORMATS`.
        columns: role -> column name. Roles: caption: image, text; obelics and finevision: images, texts;
            llava: image (or images), conversations.
        id_column: when set, `Sample.id` is read from (and written back to) this column, as a string.

    Example:
        >>> Schema.for_format("caption", text="alt").columns
        {'image': 'image', 'text': 'alt'}
    """

    format: str
    columns: dict[str, str] = field(default_factory=dict)
    id_column: str | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise SchemaError(f"unknown format {self.format!r}: expected one of {FORMATS}")
        if frozenset(self.columns) not in ROLES[self.format]:
            allowed = " or ".join(str(sorted(r)) for r in ROLES[self.format])
            raise SchemaError(f"format {self.format!r} needs the roles {allowed}, got {sorted(self.columns)}")

    @property
    def kind(self) -> Kind:
        """The `Sample.kind` this format maps to."""
        return FORMAT_KIND[self.format]

    def role_columns(self) -> set[str]:
        """The column names this schema consumes (not passthrough), including the id column."""
        return set(self.columns.values()) | ({self.id_column} if self.id_column else set())

    @classmethod
    def for_format(cls, fmt: str, id_column: str | None = None, **overrides: str) -> Schema:
        """The default column names of `fmt`, with `overrides` (role=column).

        Example:
            >>> Schema.for_format("llava", images="imgs").columns
            {'conversations': 'conversations', 'images': 'imgs'}
        """
        if fmt not in FORMATS:
            raise SchemaError(f"unknown format {fmt!r}: expected one of {FORMATS}")
        columns = dict(DEFAULT_COLUMNS[fmt])
        if fmt == "llava" and "images" in overrides:
            columns.pop("image")
        return cls(fmt, columns | overrides, id_column)


def parse_columns(spec: str) -> dict[str, str]:
    """Parse a `ROLE=COL,ROLE=COL` spec (the CLI's --columns).

    Example:
        >>> parse_columns("image=jpg, text=alt")
        {'image': 'jpg', 'text': 'alt'}
    """
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        role, sep, col = (x.strip() for x in part.partition("="))
        if not sep or not role or not col:
            raise SchemaError(f"bad column spec {part!r} in {spec!r}: expected ROLE=COL, e.g. image=jpg,text=alt")
        if role in out:
            raise SchemaError(f"role {role!r} given twice in {spec!r}")
        out[role] = col
    if not out:
        raise SchemaError(f"empty column spec {spec!r}: expected ROLE=COL,... e.g. image=jpg,text=alt")
    return out


# --- detection -------------------------------------------------------------------------------------------------


def _struct_keys(feature: Any) -> set[str] | None:
    """Keys of the struct in a list-of-struct feature (also `Sequence(dict)`, a dict of lists); else None."""
    inner = getattr(feature, "feature", None)
    if isinstance(inner, Mapping):
        return set(inner)
    if isinstance(feature, Mapping) and feature and all(hasattr(v, "feature") for v in feature.values()):
        return set(feature)
    return None


def _is_image(feature: Any) -> bool:
    return type(feature).__name__ == "Image"


def _could_be_image(feature: Any) -> bool:
    """An image column by type, or a column that can hold image cells: `{bytes, path}` structs, bytes, paths."""
    if _is_image(feature) or getattr(feature, "dtype", None) in ("binary", "large_binary", "string", "large_string"):
        return True
    return isinstance(feature, Mapping) and "bytes" in feature


def _is_string(feature: Any) -> bool:
    return getattr(feature, "dtype", None) in ("string", "large_string")


def detect_schema(
    columns_or_features: Sequence[str] | Mapping[str, Any],
    *,
    kind: str = "auto",
    columns: Mapping[str, str] | None = None,
    example_row: Mapping[str, Any] | None = None,
) -> Schema:
    """Work out the row layout from column names or `datasets.Features` (types make detection reliable).

    `kind` is "auto", a kind ("caption", "interleaved", "conversation") or a format name. `columns` (role ->
    column, e.g. from `parse_columns`) overrides detected names; its optional role "id" sets `id_column`.
    `example_row` disambiguates `images`+`texts` (FineVision dicts vs OBELICS strings) when types are unknown.

    Example:
        >>> detect_schema(["image", "conversations", "id"]).format
        'llava'
        >>> detect_schema(["jpg", "json"], kind="caption", columns={"text": "json"}).columns
        {'image': 'jpg', 'text': 'json'}
    """
    typed = isinstance(columns_or_features, Mapping)
    feats: dict[str, Any] = dict(columns_or_features) if typed else dict.fromkeys(columns_or_features)
    names = list(feats)
    given = dict(columns or {})
    id_column = given.pop("id", None)
    for role, col in [*given.items(), *([("id", id_column)] if id_column else [])]:
        if col not in feats:
            raise SchemaError(f"column {col!r} given for role {role!r} is not in the dataset; columns are {names}")
    by_kind = {"caption": ["caption"], "interleaved": ["obelics"], "conversation": ["llava", "finevision"]}
    if kind == "auto":
        candidates = ["llava", "finevision", "obelics", "caption"]
    elif kind in by_kind:
        candidates = by_kind[kind]
    elif kind in FORMATS:
        candidates = [kind]
    else:
        raise SchemaError(f"unknown kind {kind!r}: expected auto, caption, interleaved, conversation or {FORMATS}")
    if "conversations" in given:
        candidates = [c for c in candidates if c == "llava"]
    elif "texts" in given or "images" in given:
        candidates = [c for c in candidates if c != "caption"] or candidates
    elif "text" in given:
        candidates = [c for c in candidates if c == "caption"] or candidates

    def pick(role: str, names_: Sequence[str], pred: Any = None, by_type: bool = False) -> str | None:
        if role in given:
            return given[role]
        free = [n for n in names if n not in given.values()]
        found = [n for n in names_ if n in free and (not typed or pred is None or pred(feats[n]))]
        if not found and typed and by_type and pred is not None:
            found = [n for n in free if pred(feats[n])]
        return found[0] if found else None

    def texts_is(want: str) -> bool | None:  # is the `texts` column FineVision dicts ("dict") or OBELICS strings?
        col = given.get("texts", "texts")
        if typed and feats.get(col) is not None:
            keys = _struct_keys(feats[col])
            return (keys is not None and {"user", "assistant"} <= keys) == (want == "dict")
        if example_row is not None and isinstance(example_row.get(col), list):
            first = next((t for t in example_row[col] if t is not None), None)
            if first is not None:
                return isinstance(first, dict) == (want == "dict")
        if any(n.endswith(("_ratings", "_min")) or n == "source" for n in names):
            return want == "dict"
        return None

    def conv_pred(f: Any) -> bool:
        keys = _struct_keys(f)
        return keys is not None and {"from", "value"} <= keys

    ambiguous = []
    for fmt in candidates:
        if fmt == "llava":
            conv = pick("conversations", ["conversations", "conversation"], conv_pred, by_type=True)
            img_role = "images" if "images" in given or ("image" not in given and "images" in feats) else "image"
            img = pick(
                img_role,
                ["image", "images", *IMAGE_NAMES],
                lambda f: _is_image(f) or _is_image(getattr(f, "feature", None)),
                by_type=True,
            )
            if conv and img:
                if img_role == "image" and typed and _is_image(getattr(feats[img], "feature", None)):
                    img_role = "images"
                return Schema("llava", {img_role: img, "conversations": conv}, id_column)
        elif fmt in ("finevision", "obelics"):
            images, texts = pick("images", ["images"]), pick("texts", ["texts"])
            if images and texts:
                verdict = texts_is("dict" if fmt == "finevision" else "str")
                other = "obelics" if fmt == "finevision" else "finevision"
                if verdict or (verdict is None and other not in candidates):
                    return Schema(fmt, {"images": images, "texts": texts}, id_column)
                if verdict is None:
                    ambiguous.append(fmt)
        else:
            img = pick("image", IMAGE_NAMES, _could_be_image) or pick("image", [], _is_image, by_type=True)
            txt = pick("text", TEXT_NAMES, _is_string)
            if img and txt:
                return Schema("caption", {"image": img, "text": txt}, id_column)
    if ambiguous:
        raise SchemaError(
            f"columns {names} have `images` and `texts` but it is unclear whether `texts` holds OBELICS strings or "
            f"FineVision user/assistant dicts; pass --kind interleaved|conversation (or kind=...)"
        )
    raise SchemaError(
        f"cannot detect the row layout (tried {candidates}) from columns {names}. Looked for: llava "
        f"(image|images + conversations of from/value), finevision (images + texts of user/assistant), obelics "
        f"(images + texts lists), caption (an image column {IMAGE_NAMES} + a text column {TEXT_NAMES}); {_HINT}"
    )


# --- cells -----------------------------------------------------------------------------------------------------


def _read_local(path: str | None) -> bytes | None:
    if not path or "://" in path:
        return None
    try:
        if os.path.isfile(path):
            with open(path, "rb") as f:
                return f.read()
    except OSError:
        pass
    return None


def image_from_cell(cell: Any) -> ImageRef | None:
    """One image cell (HF dict, bytes, path or URL string, PIL image, None) -> `ImageRef` (None for None).

    Example:
        >>> image_from_cell({"bytes": b"png", "path": "a.png"})
        ImageRef(data=3 bytes, path='a.png', url=None)
    """
    if cell is None:
        return None
    if isinstance(cell, Mapping) and set(cell) <= {"bytes", "path"}:
        data, path = cell.get("bytes"), cell.get("path")
        if (data is not None and not isinstance(data, bytes | bytearray)) or not isinstance(path, str | None):
            raise _Malformed(f"image cell has bytes of type {type(data).__name__}, path of type {type(path).__name__}")
        return ImageRef(data=bytes(data) if data is not None else _read_local(path), path=path)
    if isinstance(cell, bytes | bytearray):
        return ImageRef(data=bytes(cell))
    if isinstance(cell, str):
        if cell.startswith(("http://", "https://")):
            return ImageRef(url=cell)
        return ImageRef(data=_read_local(cell), path=cell)
    if hasattr(cell, "save") and hasattr(cell, "mode"):  # a PIL image, decoded by `datasets`
        buf = io.BytesIO()
        try:
            cell.save(buf, format=cell.format or "PNG")
        except (OSError, ValueError, KeyError):
            buf = io.BytesIO()
            cell.save(buf, format="PNG")
        return ImageRef(data=buf.getvalue(), path=getattr(cell, "filename", None) or None)
    raise _Malformed(f"image cell of type {type(cell).__name__} (expected a {{bytes, path}} dict, bytes or a path)")


def image_to_cell(image: ImageRef | None) -> Any:
    """`ImageRef` -> HF Image cell `{"bytes", "path"}` (a URL-only image -> its URL string; None -> None)."""
    if image is None:
        return None
    if image.data is None and image.path is None and image.url is not None:
        return image.url
    return {"bytes": image.data, "path": image.path}


def _as_list(value: Any, column: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise _Malformed(f"column {column!r} holds {type(value).__name__}, expected a list")
    return list(value)


def _split_markers(text: str, turn: int) -> tuple[str, list[ImageSlot]]:
    """Remove `<image>` markers (with an adjacent newline when there is one) and record where they stood."""
    out: list[str] = []
    slots: list[ImageSlot] = []
    pos = last_end = 0
    n = len(IMAGE_MARKER)
    while (i := text.find(IMAGE_MARKER, pos)) >= 0:
        out.append(text[pos:i])
        if text.startswith("\n", i + n):
            marker, end = IMAGE_MARKER + "\n", i + n + 1
        elif i > last_end and text[i - 1] == "\n":
            out[-1] = out[-1][:-1]
            marker, end = "\n" + IMAGE_MARKER, i + n
        else:
            marker, end = IMAGE_MARKER, i + n
        slots.append(ImageSlot(turn, sum(map(len, out)), marker))
        pos = last_end = end
    out.append(text[pos:])
    return "".join(out), slots


def _join_markers(text: str, slots: list[ImageSlot]) -> str:
    pieces, prev = [], 0
    for slot in sorted(slots, key=lambda s: s.offset):  # stable: markers at one offset keep their order
        pieces += [text[prev : slot.offset], slot.marker]
        prev = slot.offset
    return "".join(pieces) + text[prev:]


# --- rows <-> samples ------------------------------------------------------------------------------------------


def _content(row: Mapping[str, Any], schema: Schema, sample: Sample) -> None:
    """Fill `sample`'s content fields from the role columns of `row` (raises `_Malformed`)."""
    c = schema.columns
    if schema.format == "caption":
        image, text = image_from_cell(row[c["image"]]), row[c["text"]]
        if text is not None and not isinstance(text, str):
            raise _Malformed(f"column {c['text']!r} holds {type(text).__name__}, expected a string")
        sample.images, sample.text = ([] if image is None else [image]), text
    elif schema.format == "obelics":
        images, texts = _as_list(row[c["images"]], c["images"]), _as_list(row[c["texts"]], c["texts"])
        if len(images) != len(texts):
            raise _Malformed(f"{c['images']!r} has {len(images)} items but {c['texts']!r} has {len(texts)}")
        for i, (im, tx) in enumerate(zip(images, texts, strict=True)):
            if (im is None) == (tx is None):
                state = "both image and text" if im is not None else "neither image nor text"
                raise _Malformed(f"position {i} has {state} (exactly one must be set)")
            if tx is not None and not isinstance(tx, str):
                raise _Malformed(f"{c['texts']!r}[{i}] holds {type(tx).__name__}, expected a string")
            if im is not None:
                sample.segments.append(len(sample.images))
                sample.images.append(image_from_cell(im))
            else:
                sample.segments.append(tx)
    elif schema.format == "finevision":
        sample.images = [image_from_cell(im) for im in _as_list(row[c["images"]], c["images"])]
        for i, t in enumerate(_as_list(row[c["texts"]], c["texts"])):
            if not isinstance(t, Mapping) or set(t) != {"user", "assistant"}:
                raise _Malformed(f"{c['texts']!r}[{i}] is not a {{user, assistant}} dict: {t!r:.80}")
            if not isinstance(t["user"], str) or not isinstance(t["assistant"], str):
                raise _Malformed(f"{c['texts']!r}[{i}] has a non-string user or assistant")
            sample.turns.append(Turn(t["user"], t["assistant"]))
    else:
        if "images" in c:
            sample.images = [image_from_cell(im) for im in _as_list(row[c["images"]], c["images"])]
        else:
            image = image_from_cell(row[c["image"]])
            sample.images = [] if image is None else [image]
        messages = _as_list(row[c["conversations"]], c["conversations"])
        roles = []
        for i, m in enumerate(messages):
            if not isinstance(m, Mapping) or set(m) != {"from", "value"} or not isinstance(m["value"], str):
                raise _Malformed(f"{c['conversations']!r}[{i}] is not a {{from, value}} message: {m!r:.80}")
            expected = LLAVA_USER if i % 2 == 0 else LLAVA_ASSISTANT
            if m["from"] not in expected:
                raise _Malformed(f"message {i} is from {m['from']!r}; expected {' or '.join(expected)} (alternating)")
            roles.append(m["from"])
        if len(messages) % 2:
            raise _Malformed(f"{len(messages)} messages: the last user message has no answer")
        for k in range(0, len(messages), 2):
            user, slots = _split_markers(messages[k]["value"], k // 2)
            sample.turns.append(Turn(user, messages[k + 1]["value"]))
            sample.image_slots += slots
        if roles != [LLAVA_USER[0], LLAVA_ASSISTANT[0]] * (len(roles) // 2):
            sample.meta[LLAVA_ROLES_KEY] = roles


_UNPARSED = (MISSING_COLUMN, MALFORMED_ROW)


def row_to_sample(row: Mapping[str, Any], schema: Schema, id: str) -> Sample:
    """One row -> `Sample`. Never raises on bad data: it returns `Sample.invalid` with a precise reason.

    Example:
        >>> row_to_sample({"image": None, "caption": "hi"}, Schema.for_format("caption"), "0").images
        []
    """
    meta = {k: v for k, v in row.items() if k not in schema.role_columns()}
    if schema.id_column and row.get(schema.id_column) is not None:
        id = str(row[schema.id_column])
    # An unusable row keeps its raw cells in `meta`, so it is written back (to removed/) exactly as it came.
    raw = {k: v for k, v in row.items() if k != schema.id_column}
    for col in schema.columns.values():
        if col not in row:
            return Sample.invalid(id, schema.kind, MISSING_COLUMN, f"column {col!r} is missing", raw)
    sample = Sample(id=id, kind=schema.kind, meta=meta)
    try:
        _content(row, schema, sample)
    except _Malformed as e:
        return Sample.invalid(id, schema.kind, MALFORMED_ROW, str(e), raw)
    return sample


def sample_to_row(sample: Sample, schema: Schema) -> dict[str, Any]:
    """`Sample` -> row: meta columns, content columns and the id column if any.

    A sample dropped by a filter keeps its content. A row that was never parsed (`missing_column`,
    `malformed_row`) is written back from the raw cells kept in its meta, None where a column was missing.

    Example:
        >>> s = Sample.caption("7", None, "hi", source="x")
        >>> sample_to_row(s, Schema.for_format("caption", id_column="id"))
        {'source': 'x', 'image': None, 'caption': 'hi', 'id': '7'}
    """
    row = {k: v for k, v in sample.meta.items() if k != LLAVA_ROLES_KEY}
    c = schema.columns
    if sample.reason in _UNPARSED:
        for col in c.values():
            row.setdefault(col, None)
    elif schema.format == "caption":
        row[c["image"]] = image_to_cell(sample.images[0]) if sample.images else None
        row[c["text"]] = sample.text
    elif schema.format == "obelics":
        images = [image_to_cell(sample.images[s]) if isinstance(s, int) else None for s in sample.segments]
        row[c["images"]] = images
        row[c["texts"]] = [s if isinstance(s, str) else None for s in sample.segments]
    elif schema.format == "finevision":
        row[c["images"]] = [image_to_cell(im) for im in sample.images]
        row[c["texts"]] = [{"user": t.user, "assistant": t.assistant} for t in sample.turns]
    else:
        if "images" in c:
            row[c["images"]] = [image_to_cell(im) for im in sample.images]
        else:
            row[c["image"]] = image_to_cell(sample.images[0]) if sample.images else None
        roles = sample.meta.get(LLAVA_ROLES_KEY) or []
        if len(roles) != 2 * len(sample.turns):
            roles = [LLAVA_USER[0], LLAVA_ASSISTANT[0]] * len(sample.turns)
        messages = []
        for k, t in enumerate(sample.turns):
            user = _join_markers(t.user, [s for s in sample.image_slots if s.turn == k])
            messages += [{"from": roles[2 * k], "value": user}, {"from": roles[2 * k + 1], "value": t.assistant}]
        row[c["conversations"]] = messages
    if schema.id_column:
        row[schema.id_column] = sample.id
    return row


def rows_to_samples(batch: Mapping[str, list[Any]], schema: Schema, ids: list[str]) -> list[Sample]:
    """A `datasets` batch (dict of lists, as `Dataset.map(batched=True)` passes it) -> samples.

    Example:
        >>> batch = {"image": [None, None], "caption": ["a", "b"]}
        >>> [s.text for s in rows_to_samples(batch, Schema.for_format("caption"), ["0", "1"])]
        ['a', 'b']
    """
    keys = list(batch)
    return [row_to_sample({k: batch[k][i] for k in keys}, schema, id_) for i, id_ in enumerate(ids)]


def samples_to_rows(samples: Sequence[Sample], schema: Schema) -> dict[str, list[Any]]:
    """Samples -> a `datasets` batch; a column absent from some rows is None there.

    Example:
        >>> samples_to_rows([Sample.caption("0", None, "a")], Schema.for_format("caption"))
        {'image': [None], 'caption': ['a']}
    """
    rows = [sample_to_row(s, schema) for s in samples]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return {k: [r.get(k) for r in rows] for k in keys}


def image_features(schema: Schema, *, decode: bool = True) -> dict[str, Any]:
    """The `datasets` feature of each image column: `Image()` or `List(Image())`.

    Use `decode=False` to cast a source so cells stay `{"bytes", "path"}` dicts; the default for writing outputs.

    Example:
        >>> image_features(Schema.for_format("finevision"), decode=False)
        {'images': List(Image(mode=None, decode=False))}
    """
    from datasets import Image, List

    c = schema.columns
    if "image" in c:
        return {c["image"]: Image(decode=decode)}
    return {c["images"]: List(Image(decode=decode))}
