"""UniFilter input sequences, assembled exactly as the official scoring code does, plus token-budget batching.

Official format (`Victorwz/UniFilter`, `data_scoring/*.py`); there is no prompt and no chat template:

- caption: `"<image>\\n" + caption` (a literal `<image>` in the caption becomes `image`), split on the
  marker, each chunk tokenized without special tokens, an image slot (id -200) between chunks, BOS
  prepended and EOS appended when absent, then truncated to the first 75 ids;
- interleaved document: text segments (a literal `<image>` becomes `<image-placeholder>`) and one
  `<image>` per image, joined with `"\\n\\n"`; images with a 1-pixel side are dropped with their slot;
  documents with more than 10 images or more than 6,000 ids (before image expansion) are skipped
  with a reason (or truncated, when asked);
- conversation (no official format; ours): every image first, then each turn as
  `"User: {question}\\nAssistant: {answer}"`, all joined with `"\\n\\n"`, scored like a document.

Each image slot expands to `num_image_tokens` (144) embeddings; the expanded sequence is cut at the
checkpoint's `tokenizer_model_max_length`, and the score is read at the last kept position.

Example:
    >>> seq = caption_sequence("A cat.", tokenize, bos_id=1, eos_id=2)  # doctest: +SKIP
    >>> seq.ids[:2]  # doctest: +SKIP
    [1, -200]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from mmsieve import reasons
from mmsieve.models.sequences import IMAGE_TOKEN_INDEX
from mmsieve.sample import Sample


IMAGE_MARKER = "<image>"
CAPTION_MAX_IDS = 75
DOCUMENT_MAX_IMAGES = 10
DOCUMENT_MAX_IDS = 6000

Tokenize = Callable[[str], list[int]]
Overflow = Literal["skip", "truncate"]


@dataclass
class ScoringSequence:
    """One sample's pre-expansion ids (image slots are `IMAGE_TOKEN_INDEX`) and the images filling them.

    `images` holds, per slot, the index of the image in `Sample.images`; `reason`/`detail` are set
    when the sample cannot be scored (then `ids` is empty).
    """

    ids: list[int] = field(default_factory=list)
    images: list[int] = field(default_factory=list)
    reason: str | None = None
    detail: str | None = None

    def expanded_length(self, num_image_tokens: int) -> int:
        """Sequence length after each image slot becomes `num_image_tokens` embeddings."""
        return len(self.ids) + len(self.images) * (num_image_tokens - 1)


def _with_slots(text: str, tokenize: Tokenize, bos_id: int | None, eos_id: int | None) -> list[int]:
    """LLaVA's `tokenizer_image_token`: chunks between markers tokenized apart, a slot between chunks; BOS/EOS."""
    ids: list[int] = []
    for k, chunk in enumerate(text.split(IMAGE_MARKER)):
        if k:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(tokenize(chunk) if chunk else [])
    if bos_id is not None and (not ids or ids[0] != bos_id):
        ids.insert(0, bos_id)
    if eos_id is not None and ids[-1] != eos_id:
        ids.append(eos_id)
    return ids


def caption_sequence(
    caption: str, tokenize: Tokenize, bos_id: int | None, eos_id: int | None, max_ids: int = CAPTION_MAX_IDS
) -> ScoringSequence:
    """The official caption input: `[BOS] <image> "\\n"+caption [EOS]`, cut at `max_ids` ids (75)."""
    ids = _with_slots(IMAGE_MARKER + "\n" + caption.replace(IMAGE_MARKER, "image"), tokenize, bos_id, eos_id)
    return ScoringSequence(ids=ids[:max_ids], images=[0])


def document_sequence(
    parts: Sequence[str | int],
    tokenize: Tokenize,
    bos_id: int | None,
    eos_id: int | None,
    *,
    max_images: int = DOCUMENT_MAX_IMAGES,
    max_ids: int = DOCUMENT_MAX_IDS,
    overflow: Overflow = "skip",
) -> ScoringSequence:
    """The official interleaved input from reading-order `parts` (text, or an image index).

    Drop 1-pixel images from `parts` before calling (the official code drops them with their slot).
    """
    images = [p for p in parts if isinstance(p, int)]
    if not images:
        return ScoringSequence(reason=reasons.TOO_FEW_IMAGES, detail="no usable image to score")
    if len(images) > max_images:
        if overflow == "skip":
            return ScoringSequence(
                reason=reasons.TOO_MANY_IMAGES, detail=f"{len(images)} images > {max_images} (UniFilter's limit)"
            )
        last_kept = [k for k, p in enumerate(parts) if isinstance(p, int)][max_images - 1]
        parts = [p for k, p in enumerate(parts) if k <= last_kept or not isinstance(p, int)]
        images = images[:max_images]
    text = "\n\n".join(
        IMAGE_MARKER if isinstance(p, int) else p.replace(IMAGE_MARKER, "<image-placeholder>") for p in parts
    )
    ids = _with_slots(text, tokenize, bos_id, eos_id)
    if len(ids) > max_ids:
        if overflow == "skip":
            return ScoringSequence(
                reason=reasons.TEXT_TOO_LONG,
                detail=f"{len(ids)} ids > {max_ids} before image expansion (UniFilter's limit)",
            )
        ids = ids[:max_ids]
        images = images[: ids.count(IMAGE_TOKEN_INDEX)]
    return ScoringSequence(ids=ids, images=images)


def sample_parts(sample: Sample, usable: Sequence[bool]) -> list[str | int]:
    """Reading-order parts of an interleaved document or a conversation; unusable images are left out.

    Conversations (no official format): images first, then `"User: ...\\nAssistant: ..."` per turn.
    """
    if sample.kind == "interleaved":
        return [p for p in sample.segments if not isinstance(p, int) or usable[p]]
    images: list[str | int] = [k for k in range(len(sample.images)) if usable[k]]
    return images + [f"User: {t.user}\nAssistant: {t.assistant}" for t in sample.turns]


def token_budget_batches(
    lengths: Sequence[int], max_tokens: int, max_items: int | None = None, max_length_ratio: float = 1.25
) -> list[list[int]]:
    """Group item indices into forward passes: padded size (items x longest) within `max_tokens`, and
    no item shorter than the pass's longest by more than `max_length_ratio` (caps padding waste).

    Items are sorted by length (longest first); every index appears exactly once, and an item longer
    than the budget gets a pass of its own. Callers restore the original order. Without the ratio cap,
    a batch mixing captions (~170 tokens) and documents (~600) spent about half its compute on padding.

    Example:
        >>> token_budget_batches([10, 300, 20, 290], max_tokens=600)
        [[1, 3], [2], [0]]
    """
    if max_length_ratio < 1:
        raise ValueError(f"max_length_ratio must be >= 1, got {max_length_ratio}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current:
            longest = lengths[current[0]]
            over_budget = (len(current) + 1) * longest > max_tokens
            too_short = lengths[i] * max_length_ratio < longest
            full = max_items is not None and len(current) >= max_items
            if over_budget or too_short or full:
                batches.append(current)
                current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
