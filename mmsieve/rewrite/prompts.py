"""The rewriter's default prompts: a minimal fix of the text, grounded in the image, and nothing more.

AITQE's claim is that a rewrite should change the text distribution as little as possible. The prompts below ask
for exactly that: keep every correct fact, named entity, number and the writer's style and language; fix or drop
what the image contradicts; add nothing that is not visible. One template per piece of text the rewriter touches
(a caption, a conversation answer, a document paragraph next to an image); `str.format` placeholders.

Example:
    >>> prompts = RewritePrompts()
    >>> "Caption: A cat." in prompts.caption.format(text="A cat.")
    True
"""

from __future__ import annotations

import re
from dataclasses import dataclass


SYSTEM = (
    "You repair the text of image-text training data. You change as little as possible: you keep every fact the "
    "image supports, every named entity and number, and the writer's style, language and length; you correct or "
    "remove only what the image contradicts; you never add anything that is not visible in the image."
)

RULES = (
    "- keep what is correct, word for word where you can;\n"
    "- correct or remove what the image contradicts (objects, colours, counts, positions, text in the image);\n"
    "- keep names, places and dates unless the image contradicts them;\n"
    "- do not add details that are not visible;\n"
    "- if the text is already accurate and well written, return it unchanged.\n"
)

CAPTION = (
    "Here is an image and its caption.\n\nCaption: {text}\n\nRewrite the caption so that it is accurate for this "
    "image, with the smallest change that works:\n" + RULES + "Reply with the caption only: no quotes, no preamble."
)

ANSWER = (
    "Here is an image, a question about it and an answer.\n\nQuestion: {question}\nAnswer: {text}\n\nRewrite the "
    "answer so that it is correct for this image and answers the question, with the smallest change that works:\n"
    + RULES
    + "Reply with the answer only: no quotes, no preamble."
)

PARAGRAPH = (
    "Here is an image and a paragraph that stands next to it in a web document.\n\nParagraph: {text}\n\nRewrite "
    "the paragraph so that what it says about the image is accurate, with the smallest change that works:\n"
    + RULES
    + "Leave statements that are not about the image as they are. Reply with the paragraph only: no quotes, no "
    "preamble."
)

_PREAMBLE = re.compile(
    r"^\s*(?:here is|here's)?\s*(?:the\s+)?(?:rewritten|corrected|revised|fixed)?\s*"
    r"(?:caption|answer|paragraph)\s*:\s*",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class RewritePrompts:
    """The system prompt and the three templates (`{text}`, and `{question}` for answers).

    Example:
        >>> RewritePrompts(system="Fix captions.").system
        'Fix captions.'
    """

    system: str = SYSTEM
    caption: str = CAPTION
    answer: str = ANSWER
    paragraph: str = PARAGRAPH


def clean_reply(text: str) -> str:
    """A model's rewrite without the wrapping a chat model tends to add: a "Caption:" label, quotes, whitespace.

    Example:
        >>> clean_reply('Rewritten caption: "A red bus parked on a street."')
        'A red bus parked on a street.'
    """
    text = _PREAMBLE.sub("", text.strip(), count=1).strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'“”":
        text = text[1:-1].strip()
    if len(text) > 1 and text[0] == "“" and text[-1] == "”":
        text = text[1:-1].strip()
    return text


__all__ = ["ANSWER", "CAPTION", "PARAGRAPH", "SYSTEM", "RewritePrompts", "clean_reply"]
