"""mmsieve: Hugging Face-native curation of multimodal training data.

Score, filter, rewrite, deduplicate and decontaminate image-caption pairs, interleaved documents and
visual conversations, as datatrove pipeline steps and as `Dataset.map` functions.

Importing `mmsieve` registers the UniFilter checkpoint types (`llava_qwen`, `llava_qwen3`) with the
transformers Auto classes, so `AutoModelForSequenceClassification.from_pretrained` loads them.

Example:
    >>> import mmsieve
    >>> step = mmsieve.HygieneFilter(min_side=64)
    >>> ds = ds.map(step, batched=True)  # doctest: +SKIP
"""

from mmsieve.documents import document_to_sample, sample_to_document
from mmsieve.filters import (
    ClipScoreFilter,
    ClipScoreScorer,
    HygieneConfig,
    HygieneFilter,
    ScoreFilter,
    UniFilterFilter,
    UniFilterScorer,
    hygiene_checks,
)
from mmsieve.images import DecodedImage, DecodePool, decode_image, probe_image
from mmsieve.models import UniFilterModel  # registers llava_qwen / llava_qwen3 with the transformers Auto classes
from mmsieve.readers import SampleReader
from mmsieve.runner import build_pipeline, run_steps
from mmsieve.sample import KINDS, ImageRef, ImageSlot, Kind, Sample, Turn
from mmsieve.schemas import Schema, SchemaError, detect_schema, row_to_sample, sample_to_row
from mmsieve.steps import SampleFilter, SampleScorer, SampleStep
from mmsieve.writers import SampleWriter


__version__ = "0.1.0"

__all__ = [
    "KINDS",
    "ClipScoreFilter",
    "ClipScoreScorer",
    "DecodePool",
    "DecodedImage",
    "HygieneConfig",
    "HygieneFilter",
    "ImageRef",
    "ImageSlot",
    "Kind",
    "Sample",
    "SampleFilter",
    "SampleReader",
    "SampleScorer",
    "SampleStep",
    "SampleWriter",
    "ScoreFilter",
    "Schema",
    "SchemaError",
    "Turn",
    "UniFilterFilter",
    "UniFilterModel",
    "UniFilterScorer",
    "build_pipeline",
    "decode_image",
    "detect_schema",
    "document_to_sample",
    "hygiene_checks",
    "probe_image",
    "row_to_sample",
    "run_steps",
    "sample_to_document",
    "sample_to_row",
]
