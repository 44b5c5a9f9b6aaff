"""The four quality levels of UniFilter-style training data, as data.

A level is the integer label a quality classifier learns (0 worst, 3 best). The definitions are the single source
for the teacher prompts, the dataset and model cards, and the generators' choice of transforms.

Example:
    >>> LEVELS[2].name, LEVELS[2].definition
    ('generic', 'accurate but brief or generic: true of the image, yet it leaves out what makes this image specific')
    >>> level(3).summary
    'accurate, specific, fluent'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Level:
    """One quality level.

    Args:
        value: the integer label, 0-3.
        name: a short name for tables and generator tags.
        summary: the three-word definition shown in cards.
        definition: the full definition given to a teacher model.
    """

    value: int
    name: str
    summary: str
    definition: str


LEVELS: tuple[Level, ...] = (
    Level(
        0,
        "unrelated",
        "unrelated, spam or garbled",
        "unrelated, spam or garbled: the text does not describe the image at all (it is about something else), or it "
        "is advertising, boilerplate, a list of keywords, or broken text",
    ),
    Level(
        1,
        "flawed",
        "partly wrong or poorly written",
        "partly wrong or poorly written: the text is about the image but states at least one wrong detail (a wrong "
        "object, colour, number or position), or it is right but written badly (typos, broken grammar, missing words)",
    ),
    Level(
        2,
        "generic",
        "accurate but brief or generic",
        "accurate but brief or generic: true of the image, yet it leaves out what makes this image specific",
    ),
    Level(
        3,
        "good",
        "accurate, specific, fluent",
        "accurate, specific, fluent: every stated detail is true of the image, the main content is described "
        "specifically, and the text is well written",
    ),
)
LEVEL_VALUES: tuple[int, ...] = tuple(lv.value for lv in LEVELS)


def level(value: int) -> Level:
    """The `Level` with this integer label; a clear error for anything else.

    Example:
        >>> level(0).name
        'unrelated'
    """
    if value not in LEVEL_VALUES:
        raise ValueError(f"quality level must be one of {LEVEL_VALUES}, got {value!r}")
    return LEVELS[value]
