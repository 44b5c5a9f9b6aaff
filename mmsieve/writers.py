"""`SampleWriter`: datatrove's ParquetWriter writing rows in the source's own schema, with typed Image columns.

The written parquet carries the Hugging Face `Features` in its metadata, so `load_dataset("parquet")`
and the Hub viewer show an `Image` column. Rows keep their original column names (a FineVision row
stays a FineVision row), followed by the columns the steps added; removed rows also carry
`mmsieve_reason` and `mmsieve_detail`. Strings that cannot be stored as UTF-8 (lone surrogates) are
written with U+FFFD in their place instead of failing the run.

Example:
    >>> kept = SampleWriter("out/kept", schema, features)  # doctest: +SKIP
    >>> removed = SampleWriter("out/removed", schema, features, with_reason=True)  # doctest: +SKIP
"""

from __future__ import annotations

from os import PathLike
from typing import Any

from datatrove.data import Document
from datatrove.pipeline.writers.parquet import ParquetWriter

from mmsieve.documents import document_to_sample
from mmsieve.sample import DETAIL_COLUMN, REASON_COLUMN
from mmsieve.schemas import Schema, image_features, sample_to_row


def clean_text(value: Any) -> Any:
    """Replace lone surrogates (not encodable as UTF-8) with U+FFFD, recursively through lists and dicts.

    Example:
        >>> clean_text({"a": ["ok", "bad\\ud800"]})
        {'a': ['ok', 'bad\ufffd']}
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
    if isinstance(value, list):
        return [clean_text(v) for v in value]
    if isinstance(value, dict):
        return {k: clean_text(v) for k, v in value.items()}
    return value


def output_features(source_features: Any, schema: Schema, step_features: dict[str, Any], with_reason: bool) -> Any:
    """The `datasets.Features` of an output split: the source's columns (images as `Image`), then step columns.

    Example:
        >>> output_features(ds.features, schema, {"clip_score": Value("float32")}, with_reason=True)  # doctest: +SKIP
    """
    from datasets import Features, Value

    features = dict(source_features)
    features.update(image_features(schema))
    for name, feature in step_features.items():
        features.setdefault(name, feature)
    if with_reason:
        features[REASON_COLUMN] = Value("string")
        features[DETAIL_COLUMN] = Value("string")
    return Features(features)


class SampleWriter(ParquetWriter):
    """Writes Sample Documents as parquet rows in `schema`'s layout with explicit, typed `features`.

    Args:
        output_folder: local folder (or any datatrove DataFolder, e.g. `hf://datasets/...`).
        schema: the row schema the samples were read with.
        features: the output `datasets.Features` (see `output_features`).
        with_reason: also write `mmsieve_reason` / `mmsieve_detail` (for removed rows).
        output_filename: datatrove filename template (`${rank}` is the task number).
        max_file_size: parquet shards rotate at this many bytes.
    """

    name = "💾 mmsieve parquet"

    def __init__(
        self,
        output_folder: Any,
        schema: Schema,
        features: Any,
        with_reason: bool = False,
        output_filename: str = "${rank}.parquet",
        max_file_size: int = 512 * 2**20,
        batch_size: int = 256,
    ):
        super().__init__(
            str(output_folder) if isinstance(output_folder, PathLike) else output_folder,
            output_filename=output_filename,
            schema=features.arrow_schema,
            max_file_size=max_file_size,
            batch_size=batch_size,
        )
        self.row_schema = schema
        self.columns = list(features)
        self.with_reason = with_reason
        self.adapter = self.to_row

    def to_row(self, document: Document) -> dict[str, Any]:
        """The output row of one document: every output column, None where the sample has no value."""
        sample = document_to_sample(document)
        row = sample_to_row(sample, self.row_schema)
        if self.with_reason:
            row[REASON_COLUMN] = sample.reason or document.metadata.get("filter_reason")
            row[DETAIL_COLUMN] = sample.detail
        return {name: clean_text(row.get(name)) for name in self.columns}
