"""AITQE compatibility: its raw evaluation prompt and a tolerant parser of what the model writes back.

AITQE ("Beyond Filtering", `HymanH/AITQE`) reads an image and a caption and answers with a dictionary-like text:
`"Recaption"` (only when the pair is poor, and generated first), `"Overall Score"`, `"Overall Explanation"`, then a
score and an explanation for `Text Quality`, `Image-Text Matching`, `Object Detail`, `Semantic Understanding` and
`Text/Chart Description`. The output is often not valid JSON (the released inference code cuts generation at the
stop string `<Overall>` and appends `}`; quotes go unescaped; the text may stop anywhere), so `parse_aitqe` reads
each field with its own pattern and keeps whatever it finds.

Example:
    >>> out = parse_aitqe('{"Recaption": "A red bus on a street.", "Overall Score": "2<Overall>"}')
    >>> out.recaption, out.overall_score
    ('A red bus on a street.', 2.0)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


AITQE_PROMPT = (
    "Evaluate the caption: {caption}\nif score is low, give a short description of the image.\n"
    "Respond using a dictionary structure."
)
SUB_SCORES = (
    "Text Quality",
    "Image-Text Matching",
    "Object Detail",
    "Semantic Understanding",
    "Text/Chart Description",
)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def aitqe_prompt(caption: str) -> str:
    """The text AITQE reads after the image line (the released `inference.py` prompt, verbatim).

    Example:
        >>> aitqe_prompt("A dog.")
        'Evaluate the caption: A dog.\\nif score is low, give a short description of the image.\\nRespond using a dictionary structure.'
    """
    return AITQE_PROMPT.format(caption=caption)


@dataclass
class AITQEOutput:
    """What could be read from one AITQE answer; every field is None when absent.

    Args:
        recaption: the model's rewritten caption (present only when it judged the pair poor).
        overall_score: the `Overall Score` number.
        overall_explanation: the `Overall Explanation` text.
        scores: sub-score name -> number, for the sub-scores found.
        explanations: sub-score name -> explanation text, for those found.

    Example:
        >>> AITQEOutput(overall_score=3.0).wants_rewrite
        False
    """

    recaption: str | None = None
    overall_score: float | None = None
    overall_explanation: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    explanations: dict[str, str] = field(default_factory=dict)

    @property
    def wants_rewrite(self) -> bool:
        """True when the model wrote a non-empty `Recaption`: AITQE marks the pair for rewriting itself."""
        return bool(self.recaption and self.recaption.strip())

    @property
    def parsed(self) -> bool:
        """True when at least one field was found."""
        return (
            self.recaption is not None
            or self.overall_score is not None
            or self.overall_explanation is not None
            or bool(self.scores)
        )


def _key(name: str) -> str:
    return r"""["']?\s*""" + re.escape(name) + r"""\s*["']?\s*:\s*"""


def _string_value(text: str, name: str) -> str | None:
    """The value of `name` when it is a quoted string; an unterminated string runs to the next key or the end."""
    match = re.search(_key(name), text, re.IGNORECASE)
    if match is None:
        return None
    rest = text[match.end() :]
    if not rest or rest[0] not in "\"'":
        bare = re.match(r"[^,}\n]*", rest)
        return bare.group(0).strip() if bare else None
    quote, body = rest[0], rest[1:]
    # the value ends at a closing quote followed by `,` `}` or a line end (quotes inside the text stay)
    end = re.search(re.escape(quote) + r"\s*(?:,|}|$|\n)", body)
    next_key = re.search(r"""["']\s*,?\s*\n?\s*["'][A-Z][\w/ -]*["']\s*:""", body)
    cut = min(m.start() for m in (end, next_key) if m is not None) if (end or next_key) else len(body)
    return body[:cut].replace('\\"', '"').replace("\\n", "\n").strip()


def _number_value(text: str, name: str) -> float | None:
    value = _string_value(text, name)
    match = _NUMBER.search(value or "")
    return float(match.group(0)) if match else None


def parse_aitqe(text: str | None) -> AITQEOutput:
    """Read AITQE's answer field by field; never raises (unreadable text gives an empty `AITQEOutput`).

    Accepts valid JSON, Python-style single quotes, the `<Overall>` stop-string tail, missing closing braces and
    truncated text. A score is the first number in its value (`"2<Overall>"` reads as 2).

    Example:
        >>> out = parse_aitqe("{'Overall Score': '4', 'Overall Explanation': 'Accurate.', 'Text Quality': 3")
        >>> out.overall_score, out.overall_explanation, out.scores, out.wants_rewrite
        (4.0, 'Accurate.', {'Text Quality': 3.0}, False)
    """
    if not text:
        return AITQEOutput()
    text = text.replace("<Overall>", "")
    out = AITQEOutput(
        recaption=_string_value(text, "Recaption") or None,
        overall_score=_number_value(text, "Overall Score"),
        overall_explanation=_string_value(text, "Overall Explanation"),
    )
    for name in SUB_SCORES:
        score = _number_value(text, f"{name} Score") if re.search(_key(f"{name} Score"), text) else None
        if score is None:
            score = _number_value(text, name)
        if score is not None:
            out.scores[name] = score
        explanation = _string_value(text, f"{name} Explanation")
        if explanation:
            out.explanations[name] = explanation
    return out


__all__ = ["AITQE_PROMPT", "SUB_SCORES", "AITQEOutput", "aitqe_prompt", "parse_aitqe"]
