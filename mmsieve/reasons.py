"""Reason codes: why a row was dropped. One code per precise cause, so counts by reason are useful.

Every removed row carries one of these in `mmsieve_reason` and a human-readable explanation in
`mmsieve_detail`. Steps of later capabilities add their own codes here (`near_duplicate`,
`contaminated`, `low_quality`, ...), so the dataset card can describe every code it counts.

Example:
    >>> describe("image_truncated")
    'the image file ends before its data does (truncated download)'
"""

from __future__ import annotations


# Source rows that cannot be read as a sample.
MISSING_COLUMN = "missing_column"
MALFORMED_ROW = "malformed_row"

# Images.
IMAGE_MISSING = "image_missing"
IMAGE_EMPTY = "image_empty"
IMAGE_UNIDENTIFIED = "image_unidentified"
IMAGE_TRUNCATED = "image_truncated"
IMAGE_CORRUPT = "image_corrupt"
IMAGE_TOO_MANY_PIXELS = "image_too_many_pixels"
IMAGE_TOO_SMALL = "image_too_small"
IMAGE_ASPECT_RATIO = "image_aspect_ratio"

# Text.
TEXT_MISSING = "text_missing"
TEXT_EMPTY = "text_empty"
TEXT_TOO_SHORT = "text_too_short"
TEXT_TOO_LONG = "text_too_long"
TEXT_INVALID_UNICODE = "text_invalid_unicode"

# Structure of interleaved documents and conversations.
TOO_FEW_IMAGES = "too_few_images"
TOO_MANY_IMAGES = "too_many_images"
TOO_FEW_TURNS = "too_few_turns"
TOO_MANY_TURNS = "too_many_turns"

# Deduplication and decontamination.
NEAR_DUPLICATE = "near_duplicate"
CONTAMINATED = "contaminated"

DESCRIPTIONS: dict[str, str] = {
    MISSING_COLUMN: "a column the schema needs is absent from the row",
    MALFORMED_ROW: "the row's structure is inconsistent (mismatched list lengths, wrong types, non-alternating turns)",
    IMAGE_MISSING: "an image cell is empty or points to a file that does not exist",
    IMAGE_EMPTY: "the image bytes are empty",
    IMAGE_UNIDENTIFIED: "the bytes are not an image format Pillow can identify (text, random bytes)",
    IMAGE_TRUNCATED: "the image file ends before its data does (truncated download)",
    IMAGE_CORRUPT: "the image header was read but its data failed to decode",
    IMAGE_TOO_MANY_PIXELS: "the image declares more pixels than the limit (decompression-bomb guard)",
    IMAGE_TOO_SMALL: "the image's shorter side is below the minimum",
    IMAGE_ASPECT_RATIO: "the image is more elongated than the maximum aspect ratio",
    TEXT_MISSING: "the text cell is empty (None)",
    TEXT_EMPTY: "the text is empty or only whitespace",
    TEXT_TOO_SHORT: "the text is shorter than the minimum (characters or approximate tokens)",
    TEXT_TOO_LONG: "the text is longer than the maximum (characters or approximate tokens)",
    TEXT_INVALID_UNICODE: "the text holds lone surrogates and cannot be encoded as UTF-8",
    TOO_FEW_IMAGES: "the document or conversation has fewer images than the minimum",
    TOO_MANY_IMAGES: "the document or conversation has more images than the maximum",
    TOO_FEW_TURNS: "the conversation has fewer turns than the minimum",
    TOO_MANY_TURNS: "the conversation has more turns than the maximum",
    NEAR_DUPLICATE: "an image is a near-copy of an image in a kept sample (same cluster; the cluster's keeper stays)",
    CONTAMINATED: "an image or a text matches a benchmark test item (image similarity or n-gram overlap)",
}


def describe(reason: str) -> str:
    """A one-line description of a reason code (the code itself when it is unknown)."""
    return DESCRIPTIONS.get(reason, reason)
