"""The judges' prompts and the parsers of their answers: FineVision's four 1-5 axes and MLM-Filter's four 0-100 metrics.

FineVision rated every conversation turn on four axes with Qwen3-32B (text axes) and Qwen2.5-VL-32B (the image
axis); its prompts are not published, so the wording of `FINEVISION_AXES` is ours, written to the axis definitions
of the FineVision blog. MLM-Filter's prompts are reproduced exactly (`Victorwz/MLM_Filter`,
`mlm_filter_scoring_datacomp_batch_inference_v2.py`) so that its scores stay comparable with published thresholds
(image_text_matching >= 66 and object_detail_fulfillment >= 20 on DataComp; semantic_understanding >= 85 in
Open-Qwen2VL).

Example:
    >>> parse_rating("4\\nThe answer is well formatted."), parse_mlm_score("87\\nThe caption matches.")
    (4, 87)
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Axis:
    """One FineVision rating axis.

    Args:
        name: the column prefix: `{name}_ratings` (one per turn) and `{name}_min`.
        template: the prompt, with `{question}` and, for axes that read it, `{answer}`.
        needs_image: True when the judge must see the image (a VLM judge); False for a text judge.

    Example:
        >>> FINEVISION_AXES[3].name, FINEVISION_AXES[3].needs_image
        ('image_correspondence', True)
    """

    name: str
    template: str
    needs_image: bool


_ANSWER_FORMAT = (
    "Reply with the rating on the first line, a single integer from 1 to 5, and one short sentence explaining it on "
    "the second line."
)

FINEVISION_AXES: tuple[Axis, ...] = (
    Axis(
        "formatting",
        "Rate the text formatting quality of the answer below: its language and structure, not whether it is "
        "correct.\n5: clean, fluent, well structured, no artefacts.\n3: understandable but with awkward wording, "
        "stray markup or inconsistent structure.\n1: garbled, broken, truncated or mostly markup.\n\n"
        "Question: {question}\nAnswer: {answer}\n\n" + _ANSWER_FORMAT,
        False,
    ),
    Axis(
        "relevance",
        "Rate how well the answer responds to the question.\n5: it directly and completely answers the question.\n"
        "3: it partly answers it, or answers with much that was not asked.\n1: it does not answer the question.\n\n"
        "Question: {question}\nAnswer: {answer}\n\n" + _ANSWER_FORMAT,
        False,
    ),
    Axis(
        "visual_dependency",
        "Rate how much answering this question depends on seeing an image.\n5: it cannot be answered without "
        "looking at the image.\n3: the image helps, but much can be answered from the text or general knowledge."
        "\n1: it can be answered fully without any image.\n\nQuestion: {question}\n\n" + _ANSWER_FORMAT,
        False,
    ),
    Axis(
        "image_correspondence",
        "Rate how well the image supports answering the question.\n5: the image clearly shows what the question "
        "asks about.\n3: the image is related but unclear or incomplete for this question.\n1: the image has "
        "nothing to do with the question.\n\nQuestion: {question}\n\n" + _ANSWER_FORMAT,
        True,
    ),
)
AXIS_NAMES = tuple(axis.name for axis in FINEVISION_AXES)

CAPTION_QUESTION = "Describe this image."  # a caption is rated as the answer to this question

MLM_FILTER_TEMPLATE = (
    "Text Caption: {caption}\n\n{criteria} A higher score indicates higher level of {aspect}. Ensure that your "
    "scoring is nuanced and uses the entire range from 0 to 100, reflecting the subtle differences. The score should "
    "be given as an integer, with each number between 0 and 100 considered as a potential score, avoiding the "
    "tendency to round to multiples of 5 or 10. Please first output a single line containing the value indicating "
    "the scores. In the subsequent line, please provide a comprehensive explanation of your evaluation, avoiding any "
    "potential bias."
)

MLM_FILTER_CRITERIA = {
    "image_text_matching": (
        "Please evaluate if the provided text caption accurately represents the main features and objects of the "
        "image. The caption doesn't need to detail every aspect of the image, but it should capture its primary "
        "theme. Rate the overall quality of the text caption's match to the image on a scale of 1-100, considering "
        "the criteria mentioned."
    ),
    "object_detail_fulfillment": (
        "Please evaluate the text caption to determine if it provides detailed descriptions of objects that align "
        "with the image. Specifically, assess if the caption sufficiently describes the color, size, position, "
        "shape, material, etc., of the objects. Afterward, rate the caption's overall accuracy in capturing object "
        "details from the image on a scale of 1-100, based on the criteria provided."
    ),
    "caption_text_quality": (
        "Please evaluate the text caption based on the following criteria: Grammatical Correctness, Diversity of "
        "Vocabulary (e.g., the range and uniqueness of words used), Fluency (e.g., smoothness and natural flow of "
        "sentences), Readability, Length, and Structure. Assign an overall quality score on a scale of 1-100."
    ),
    "semantic_understanding": (
        "Evaluate the given text caption in relation to its corresponding image. Your goal is to determine if the "
        "text caption provides additional semantic information that isn't readily apparent just from the image "
        "itself.\n\nFor example:\n\n"
        '1. If the image mentions "a man" but the caption elaborates he is a "homeless man" or a "businessman," then '
        "the caption is enriching the semantic context.\n"
        "2. If the caption introduces concepts like the mathematical tangent function, which require in-depth "
        "knowledge to deduce, it is imparting external semantics.\n"
        "3. Captions revealing specific location addresses, festival details, or other nuanced data not easy to "
        "infer from the image also provide external semantic information.\n"
        "4. Directly identifying specific entities in the image such as buildings, people, bird species, animal "
        "breeds, car models, engines, etc., in the caption introduces additional insights.\n"
        "5. Should the image act as a contextual backdrop and the caption describes elements not explicitly "
        "showcased in the image, it has semantic depth.\n"
        "6. Lastly, if the caption depicts relationships between the subjects in the image, which need commonsense "
        "knowledge to understand, it should be considered semantically rich.\n\n"
        "Please assess and determine the extent of semantic enrichment the caption provides over the image. Rate "
        "the text caption's semantic depth on a scale from 1 to 100."
    ),
}
MLM_FILTER_METRICS = tuple(MLM_FILTER_CRITERIA)

_LABELLED = re.compile(r"\b(?:rating|score)\s*(?:is|of|[:=])?\s*\**\s*(\d{1,3})\b", re.IGNORECASE)
_INTEGER = re.compile(r"(?<!\d)\d{1,3}(?!\d)")  # a whole number: "1000" is not read as 100, nor "2024" as 4


def mlm_filter_prompt(metric: str, caption: str) -> str:
    """MLM-Filter's v2 instruction for one metric, exactly as its scoring script builds it.

    Example:
        >>> mlm_filter_prompt("caption_text_quality", "A dog.").splitlines()[0]
        'Text Caption: A dog.'
    """
    criteria = MLM_FILTER_CRITERIA[metric]
    return MLM_FILTER_TEMPLATE.format(caption=caption, criteria=criteria, aspect=metric.replace("_", " "))


def _read_number(text: str | None, low: int, high: int) -> int | None:
    if not text:
        return None
    first = text.strip().splitlines()[0].strip().strip(",;.*# ") if text.strip() else ""
    if first.isdigit() and low <= int(first) <= high:
        return int(first)
    for pattern in (_LABELLED, _INTEGER):
        for match in pattern.finditer(text):
            value = int(match.group(1) if match.groups() else match.group(0))
            if low <= value <= high:
                return value
        if pattern is _LABELLED and pattern.search(text):
            return None  # a labelled number out of range: do not guess from other digits
    return None


def parse_rating(text: str | None) -> int | None:
    """A judge's 1-5 rating: the first line when it is a number, else `Rating: N` / `Score: N`, else the first
    number from 1 to 5; None when there is none (the caller records the reply as unparseable).

    Example:
        >>> parse_rating("Rating: 3 - fine"), parse_rating("**5**\\nPerfect."), parse_rating("I can't tell.")
        (3, 5, None)
    """
    return _read_number(text, 1, 5)


def parse_mlm_score(text: str | None) -> int | None:
    """An MLM-Filter score: the first line as an integer in [0, 100] (commas and semicolons stripped, as its
    downstream filter does), else the first such number in the text; None when there is none.

    Example:
        >>> parse_mlm_score("66,\\nThe caption..."), parse_mlm_score("Score: 101"), parse_mlm_score("")
        (66, None, None)
    """
    return _read_number(text, 0, 100)


__all__ = [
    "AXIS_NAMES",
    "CAPTION_QUESTION",
    "FINEVISION_AXES",
    "MLM_FILTER_CRITERIA",
    "MLM_FILTER_METRICS",
    "MLM_FILTER_TEMPLATE",
    "Axis",
    "mlm_filter_prompt",
    "parse_mlm_score",
    "parse_rating",
]
