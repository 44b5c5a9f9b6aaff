"""The offline generator: labelled text at all four quality levels from real seeds, without a teacher model.

AITQE-style contrastive negatives made by rule: the seed's known-good text is level 3; level 2 shortens it to
something true but generic; level 1 swaps one fact (colour, number, object, spatial word) or damages the language;
level 0 takes text from another seed, spam, keyword soup or garbled text. Every record names its method in
`generator` (`"contrastive:{method}"`) and what changed in `edit`. Output is deterministic under `seed`, and each
seed image's records depend only on `seed`, its id and the pool of seeds (not on list order).

On easy-vqa (one coloured shape per image) levels 3 and 1 use the same fluent templates and differ only in one
fact, so telling them apart needs the image: a text-only model cannot.

Example:
    >>> gen = ContrastiveGenerator(seed=0)
    >>> records = gen.easyvqa("train", limit=10)  # 10 images x 4 levels
    >>> sorted({r.label for r in records}), records[0].generator  # doctest: +SKIP
    ([0, 1, 2, 3], 'contrastive:template')
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from mmsieve.training.levels import LEVEL_VALUES
from mmsieve.training.records import CaptionSeed, DocumentSeed, TrainingRecord


COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray", "teal")
NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve")
OBJECTS = (
    "cat", "dog", "horse", "bird", "cup", "bottle", "car", "bus", "bicycle", "boat", "rocket", "table", "chair",
    "sofa", "man", "woman", "child", "flag", "helmet", "tree", "flower", "house", "building", "clock", "coin", "book",
    "laptop", "phone", "spoon", "plate", "galaxy", "moon", "camera", "saucer", "tower", "eye",
)  # fmt: skip
SPATIAL = {"left": "right", "right": "left", "above": "below", "below": "above", "top": "bottom", "bottom": "top",
           "inside": "outside", "outside": "inside", "front": "back", "back": "front", "under": "on"}  # fmt: skip
EASYVQA_SHAPES = ("circle", "rectangle", "triangle")
EASYVQA_COLORS = ("red", "green", "blue", "yellow", "teal", "brown", "black", "gray")

# Level 3 on easy-vqa; level 1 fills the same templates with one wrong fact, level 0 with another image's facts.
SHAPE_TEMPLATES = (
    "A {color} {shape} on a plain background.",
    "The image shows a single {color} {shape}.",
    "A simple drawing of one {color} {shape}.",
    "There is a {color} {shape} in the picture.",
    "This picture contains a {color} {shape} and nothing else.",
    "A solid {color} {shape}, drawn on a plain background.",
)
GENERIC_SHAPE_TEXTS = (
    "A shape.",
    "A {color} shape.",
    "A {shape}.",
    "A simple drawing of a geometric figure.",
    "An image of a shape.",
    "A {color} figure.",
)
GENERIC_TEXTS = ("A photo.", "An image.", "A picture of something.", "A photograph.")
SPAM = (
    "Click here to buy now! www.example.com",
    "BEST PRICES GUARANTEED!!! Free shipping on all orders, visit shop-deals.example.net today",
    "Subscribe to our newsletter for exclusive offers. Copyright 2024 All rights reserved.",
    "Download the full HD wallpaper pack free at wallpapers.example.org - no sign up needed!!",
    "Cheap {product} for sale, limited time offer, call now 555-0199",
)
SPAM_PRODUCTS = ("watches", "sunglasses", "phone cases", "sneakers", "handbags", "perfume")
SPAM_WORDS = ("free", "download", "hd", "wallpaper", "cheap", "best", "sale", "jpg", "stock", "photo", "2024", "buy")
_STOP = frozenset(
    "a an the of in on at with and or to from by for is are was were its it this that these those his her their "
    "into over under near next beside between while some one two".split()
)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")

Method = Callable[[random.Random, str], tuple[str, str] | None]  # (rng, text) -> (new text, edit) or None


def _match_case(word: str, like: str) -> str:
    return word.capitalize() if like[:1].isupper() else word


def _swap_from(words: Sequence[str] | dict[str, str], kind: str) -> Method:
    """A method replacing one occurrence of a listed word (or its plural) by a different listed word."""
    pattern = re.compile(r"\b(" + "|".join(sorted(words, key=len, reverse=True)) + r")(s?)\b", re.IGNORECASE)

    def swap(rng: random.Random, text: str) -> tuple[str, str] | None:
        hits = list(pattern.finditer(text))
        if not hits:
            return None
        hit = rng.choice(hits)
        old = hit.group(1).lower()
        new = words[old] if isinstance(words, dict) else rng.choice([w for w in words if w != old])
        new_text = text[: hit.start()] + _match_case(new, hit.group(1)) + hit.group(2) + text[hit.end() :]
        return new_text, f"{kind}: {old} -> {new}"

    return swap


def _damage_words(rng: random.Random, text: str, how: str) -> str:
    words = text.split()
    n = max(1, len(words) // 4)
    picks = sorted(rng.sample(range(len(words)), min(n, len(words))))
    for i in reversed(picks):
        w = words[i]
        if how == "typos" and len(w) > 3:
            j = rng.randrange(1, len(w) - 2)
            words[i] = rng.choice([w[:j] + w[j + 1] + w[j] + w[j + 2 :], w[:j] + w[j + 1 :], w[:j] + w[j] + w[j:]])
        elif how == "dropped_words" and len(words) > 2:
            del words[i]
        elif how == "repeated_words":
            words.insert(i, w)
        elif how == "case_mangle":
            words[i] = "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in w)
    return " ".join(words)


def _language(how: str) -> Method:
    def damage(rng: random.Random, text: str) -> tuple[str, str] | None:
        for _ in range(5):  # a few words may be too short to damage
            out = _damage_words(rng, text, how)
            if out != text:
                return out, how.replace("_", " ")
        return None

    return damage


FACT_SWAPS: dict[str, Method] = {
    "color_swap": _swap_from(COLORS, "color"),
    "number_swap": _swap_from(NUMBERS, "number"),
    "object_swap": _swap_from(OBJECTS, "object"),
    "spatial_swap": _swap_from(SPATIAL, "spatial"),
}
LANGUAGE_DAMAGE: dict[str, Method] = {
    m: _language(m) for m in ("typos", "dropped_words", "case_mangle", "repeated_words")
}


def _first_clause(rng: random.Random, text: str) -> tuple[str, str] | None:
    head = re.split(r"[,;:]| with | while | and | in front of | on a | in a ", text, maxsplit=1)[0].strip(" .")
    if len(head.split()) < 2 or len(head) >= len(text.strip(" .")):
        return None
    return head + ".", "kept the first clause"


def _head_noun(rng: random.Random, text: str) -> tuple[str, str] | None:
    nouns = [w.lower() for w in _WORD.findall(text) if w.lower() in OBJECTS]
    if not nouns:
        return None
    template = rng.choice(("An image of a {}.", "A photo of a {}.", "A {}."))
    return template.format(nouns[0]), f"reduced to the head noun {nouns[0]!r}"


def _generic_template(rng: random.Random, text: str) -> tuple[str, str] | None:
    return rng.choice(GENERIC_TEXTS), "replaced by a generic template"


BRIEF: dict[str, Method] = {
    "first_clause": _first_clause,
    "head_noun": _head_noun,
    "generic_template": _generic_template,
}


def _keywords(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text) if w.lower() not in _STOP and len(w) > 2]


class ContrastiveGenerator:
    """Rule-based generator of four-level training data from real seeds (no model, no network).

    Args:
        seed: the random seed; the same seed and inputs give the same records.
        per_level: texts per level per seed (variants get distinct ids).
        levels: which levels to produce.

    Example:
        >>> from mmsieve.demo.corpus import demo_captions, demo_photos
        >>> photos = demo_photos()
        >>> seeds = [CaptionSeed(k, photos[k], c["good"]) for k, c in demo_captions().items()]
        >>> records = ContrastiveGenerator(seed=0).captions(seeds)
        >>> len(records) == 4 * len(seeds)
        True
    """

    def __init__(self, seed: int = 0, *, per_level: int = 1, levels: Sequence[int] = LEVEL_VALUES) -> None:
        if per_level < 1:
            raise ValueError(f"per_level must be >= 1, got {per_level}")
        for value in levels:
            if value not in LEVEL_VALUES:
                raise ValueError(f"levels must be among {LEVEL_VALUES}, got {value!r}")
        self.seed, self.per_level, self.levels = seed, per_level, tuple(levels)

    def _rng(self, source_id: str, variant: int) -> random.Random:
        return random.Random(f"{self.seed}:{source_id}:{variant}")

    # --- caption pairs -------------------------------------------------------------------------------------------

    def captions(self, items: Sequence[CaptionSeed]) -> list[TrainingRecord]:
        """Records at every level for each caption seed (the seed's own text is level 3).

        Level 0 caption swaps take another seed's text, so pass at least two seeds with different texts.
        """
        records = []
        pool = sorted(items, key=lambda o: o.source_id)  # so records do not depend on the order of `items`
        for item in items:
            others = [o.text for o in pool if o.source_id != item.source_id and o.text != item.text]
            for variant in range(self.per_level):
                rng = self._rng(item.source_id, variant)
                for value in self.levels:
                    text, method, edit = self._caption_text(rng, value, item.text, others)
                    records.append(
                        TrainingRecord.caption(
                            item, text, label=value, generator=f"contrastive:{method}", edit=edit, variant=variant
                        )
                    )
        return records

    def _caption_text(self, rng: random.Random, value: int, text: str, others: list[str]) -> tuple[str, str, str]:
        """(text, method, edit) at level `value` derived from the good `text`."""
        if value == 3:
            return text, "original", ""
        if value == 2:
            return self._first_applicable(rng, text, BRIEF)
        if value == 1:
            swaps = {k: m for k, m in FACT_SWAPS.items() if m(random.Random(0), text) is not None}
            if swaps and rng.random() < 0.6:
                return self._first_applicable(rng, text, swaps)
            return self._first_applicable(rng, text, LANGUAGE_DAMAGE)
        return self._unrelated(rng, others)

    @staticmethod
    def _first_applicable(rng: random.Random, text: str, methods: dict[str, Method]) -> tuple[str, str, str]:
        names = list(methods)
        rng.shuffle(names)
        for name in names:
            if (out := methods[name](rng, text)) is not None:
                return out[0], name, out[1]
        raise ValueError(f"no method of {sorted(methods)} applies to {text!r:.80}")

    @staticmethod
    def _unrelated(rng: random.Random, others: list[str], method: str | None = None) -> tuple[str, str, str]:
        """A level-0 text: another seed's text, spam, keyword soup, or garbled text from other seeds.

        `method` forces one of these (`caption_swap`, `keyword_soup` and `garbled` need `others`).
        """
        if method is None:
            method = rng.choice(["spam"] + (["caption_swap", "keyword_soup", "garbled"] if others else []))
        if method == "caption_swap":
            k = rng.randrange(len(others))
            return others[k], method, f"text of another source ({k})"
        if method == "spam":
            return rng.choice(SPAM).format(product=rng.choice(SPAM_PRODUCTS)), method, "advertising boilerplate"
        pool = rng.sample(others, min(2, len(others)))
        if method == "keyword_soup":
            words = list(dict.fromkeys(w for t in pool for w in _keywords(t)))[:8] + rng.sample(SPAM_WORDS, 3)
            rng.shuffle(words)
            return ", ".join(words), method, "keywords of other sources with spam words, shuffled"
        words = " ".join(pool).split()
        rng.shuffle(words)
        cut = " ".join(words)[: rng.randrange(20, 60)]
        garbage = "".join(rng.choice("#@%&*_~|") for _ in range(rng.randrange(3, 9)))
        return cut + garbage, method, "shuffled words of other sources, truncated"

    # --- easy-vqa --------------------------------------------------------------------------------------------------

    def easyvqa(self, split: str = "train", limit: int | None = None) -> list[TrainingRecord]:
        """Records at every level for the easy-vqa images of `split` (the first `limit` images with known facts).

        Level 3: a fluent template with the right shape and colour; level 2: a true but generic text; level 1: the
        same templates with exactly one fact wrong (`color_swap` / `shape_swap`) or the right facts badly written;
        level 0: a fluent caption of another image with both facts different, spam, keyword soup or garbled text.
        """
        seeds = easyvqa_seeds(split, limit)
        records = []
        for item in seeds:
            facts = item.facts
            unlike = [o.facts for o in seeds if all(o.facts[k] != facts[k] for k in ("shape", "color"))]
            for variant in range(self.per_level):
                rng = self._rng(item.source_id, variant)
                for value in self.levels:
                    text, method, edit = self._shape_text(rng, value, facts, unlike)
                    records.append(
                        TrainingRecord.caption(
                            item, text, label=value, generator=f"contrastive:{method}", edit=edit, variant=variant
                        )
                    )
        return records

    def _shape_text(
        self, rng: random.Random, value: int, facts: dict[str, str], unlike: list[dict[str, str]]
    ) -> tuple[str, str, str]:
        template = rng.choice(SHAPE_TEMPLATES)
        if value == 3:
            return template.format(**facts), "template", ""
        if value == 2:
            return rng.choice(GENERIC_SHAPE_TEXTS).format(**facts), "generic_template", ""
        if value == 1:
            method = rng.choice(("color_swap", "shape_swap", "language_damage"))
            if method == "language_damage":
                return self._first_applicable(rng, template.format(**facts), LANGUAGE_DAMAGE)
            key, choices = ("color", EASYVQA_COLORS) if method == "color_swap" else ("shape", EASYVQA_SHAPES)
            wrong = rng.choice([c for c in choices if c != facts[key]])
            return template.format(**(facts | {key: wrong})), method, f"{key}: {facts[key]} -> {wrong}"
        method = rng.choice(("caption_swap", "spam", "keyword_soup", "garbled") if unlike else ("spam",))
        if method == "caption_swap":
            other = rng.choice(unlike)
            edit = f"color: {facts['color']} -> {other['color']}, shape: {facts['shape']} -> {other['shape']}"
            return template.format(**other), method, edit
        others = [template.format(**o) for o in rng.sample(unlike, min(3, len(unlike)))]
        return self._unrelated(rng, others, method)

    # --- interleaved documents -------------------------------------------------------------------------------------

    def documents(self, items: Sequence[DocumentSeed]) -> list[TrainingRecord]:
        """Records at every level for each document; the images and layout are kept, the text changes.

        Level 3: the original; level 2: every text segment shortened to a generic one; level 1: a fact swapped or
        the language damaged in the text segments next to images; level 0: the text of another document or spam.
        """
        records = []
        pool = sorted(items, key=lambda o: o.source_id)
        for item in items:
            texts = [s for s in item.segments if isinstance(s, str)]
            others = [s for o in pool if o.source_id != item.source_id for s in o.segments if isinstance(s, str)]
            for variant in range(self.per_level):
                rng = self._rng(item.source_id, variant)
                for value in self.levels:
                    new, method, edit = self._document_texts(rng, value, item, texts, others)
                    records.append(
                        TrainingRecord.document(
                            item, new, label=value, generator=f"contrastive:{method}", edit=edit, variant=variant
                        )
                    )
        return records

    def _document_texts(
        self, rng: random.Random, value: int, item: DocumentSeed, texts: list[str], others: list[str]
    ) -> tuple[list[str], str, str]:
        if value == 3:
            return texts, "original", ""
        if value == 2:
            return [self._first_applicable(rng, t, BRIEF)[0] for t in texts], "generic", "text segments shortened"
        if value == 0:
            if others and rng.random() < 0.7:
                picked = (
                    rng.sample(others, len(texts)) if len(others) >= len(texts) else rng.choices(others, k=len(texts))
                )
                return picked, "document_swap", "text segments of other documents"
            return [self._unrelated(rng, others, "spam")[0] for _ in texts], "spam", "advertising boilerplate"
        near = _next_to_images(item.segments)
        rng.shuffle(near)
        swaps = {k: m for k, m in FACT_SWAPS.items() if any(m(random.Random(0), texts[i]) for i in near)}
        methods = swaps if swaps and rng.random() < 0.6 else LANGUAGE_DAMAGE
        new, edits, name = list(texts), [], ""
        for i in near[: max(1, len(near) // 2)] if methods is LANGUAGE_DAMAGE else near:
            try:
                new[i], name, edit = self._first_applicable(rng, texts[i], methods)
            except ValueError:
                continue
            edits.append(f"segment {i}: {edit}")
            if methods is not LANGUAGE_DAMAGE:
                break  # one wrong fact is enough for level 1
        if not edits:
            raise ValueError(f"document {item.source_id!r} has no text next to an image to alter")
        return new, name, "; ".join(edits)


def _next_to_images(segments: Sequence[str | int]) -> list[int]:
    """Indices (among the text segments) of the text segments adjacent to an image."""
    out, k = [], -1
    for i, s in enumerate(segments):
        if isinstance(s, str):
            k += 1
            if any(0 <= j < len(segments) and isinstance(segments[j], int) for j in (i - 1, i + 1)):
                out.append(k)
    return out


def easyvqa_facts(split: str = "train") -> list[tuple[int, str, str, str]]:
    """(image_id, image_path, shape, color) of every easy-vqa image of `split` whose facts the Q/A pins down.

    A fact comes from an open question's answer ("what color is the shape?" -> "blue"), a word in an open question
    ("what is the blue shape?" -> blue), or a yes/no question whose answer says the thing is present.

    Example:
        >>> easyvqa_facts("train")[0][2:]  # doctest: +SKIP
        ('rectangle', 'blue')
    """
    import easy_vqa

    if split not in ("train", "test"):
        raise ValueError(f"easy-vqa split must be 'train' or 'test', got {split!r}")
    questions, answers, ids = easy_vqa.get_train_questions() if split == "train" else easy_vqa.get_test_questions()
    paths = easy_vqa.get_train_image_paths() if split == "train" else easy_vqa.get_test_image_paths()
    found: dict[int, dict[str, str]] = {}
    for question, answer, image_id in zip(questions, answers, ids):
        words = question.rstrip("?").split()
        open_answer = answer not in ("yes", "no")
        present = open_answer or (answer == "yes") != ("not" in words or "no" in words)
        mentioned = [w for w in words if w in EASYVQA_SHAPES or w in EASYVQA_COLORS]
        facts = found.setdefault(image_id, {})
        for word in ([answer] if open_answer else []) + (mentioned if present else []):
            facts["shape" if word in EASYVQA_SHAPES else "color"] = word
    return [
        (i, str(paths[i]), found[i]["shape"], found[i]["color"])
        for i in sorted(found)
        if {"shape", "color"} <= set(found[i])
    ]


def easyvqa_seeds(split: str = "train", limit: int | None = None) -> list[CaptionSeed]:
    """easy-vqa images as caption seeds with `facts={"shape", "color"}` and a level-3 text.

    Example:
        >>> easyvqa_seeds("test", limit=1)[0].facts  # doctest: +SKIP
        {'shape': 'circle', 'color': 'teal'}
    """
    rows = easyvqa_facts(split)[:limit]
    seeds = []
    for image_id, path, shape, color in rows:
        text = SHAPE_TEMPLATES[image_id % len(SHAPE_TEMPLATES)].format(shape=shape, color=color)
        seeds.append(
            CaptionSeed(f"easyvqa/{split}/{image_id}", Path(path).read_bytes(), text, {"shape": shape, "color": color})
        )
    return seeds
