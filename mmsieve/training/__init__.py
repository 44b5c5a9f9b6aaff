"""Semi-synthetic training data for quality classifiers: real images, text at four quality levels.

Example:
    >>> records = ContrastiveGenerator(seed=0).easyvqa("train", limit=100)  # doctest: +SKIP
    >>> to_dataset(records).push_to_hub("me/easyvqa-quality")  # doctest: +SKIP
"""

from mmsieve.training.contrastive import ContrastiveGenerator, easyvqa_facts, easyvqa_seeds
from mmsieve.training.levels import LEVEL_VALUES, LEVELS, Level, level
from mmsieve.training.records import (
    CaptionSeed,
    DocumentSeed,
    TrainingRecord,
    record_id,
    row_to_training_sample,
    to_dataset,
    training_features,
)
from mmsieve.training.teacher import (
    ChatRequest,
    OpenAIBackend,
    TeacherGenerator,
    TeacherPrompts,
    TeacherStats,
    TransformersBackend,
    generated_ids,
    load_generated,
    parse_document,
    render_document,
    reply_error,
)


__all__ = [
    "LEVELS",
    "LEVEL_VALUES",
    "CaptionSeed",
    "ChatRequest",
    "ContrastiveGenerator",
    "DocumentSeed",
    "Level",
    "OpenAIBackend",
    "TeacherGenerator",
    "TeacherPrompts",
    "TeacherStats",
    "TrainingRecord",
    "TransformersBackend",
    "easyvqa_facts",
    "easyvqa_seeds",
    "generated_ids",
    "level",
    "load_generated",
    "parse_document",
    "record_id",
    "render_document",
    "reply_error",
    "row_to_training_sample",
    "to_dataset",
    "training_features",
]
