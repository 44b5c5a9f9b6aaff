"""Hygiene filters: the model-free sanity checks every curation run starts with.

Follows FineVision's cleaning (decode every image, drop corrupt ones, bound turn lengths) and
DataComp's basic filter (minimum image size, maximum aspect ratio, caption present). Checks run
cheapest first; a dropped sample carries the first failing check as its reason:

1. structure: image count (interleaved documents, conversations), turn count (conversations);
2. text: present, valid UTF-8, length in characters and approximate tokens;
3. images: present, decodable (fully, in a thread pool), pixel count, shorter side, aspect ratio.

Example:
    >>> from mmsieve.filters import HygieneFilter
    >>> step = HygieneFilter(min_side=64, max_aspect_ratio=3.0)
    >>> ds = ds.map(step, batched=True)  # doctest: +SKIP
    >>> # or in a datatrove pipeline: [reader, step, writer]
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from mmsieve import reasons
from mmsieve.images import DEFAULT_MAX_PIXELS, DecodePool
from mmsieve.sample import DETAIL_COLUMN, KEEP_COLUMN, REASON_COLUMN, Sample
from mmsieve.schemas import Schema
from mmsieve.steps import Columns, SampleFilter


_TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")

# Per-kind defaults where one number does not fit all: a caption is a sentence or two, an
# interleaved web document a page; OBELICS dropped documents with more than 30 images.
_DEFAULT_MAX_CHARS = {"caption": 4_000, "interleaved": 400_000, "conversation": None}
_DEFAULT_MIN_IMAGES = {"caption": 1, "interleaved": 1, "conversation": 0}
_DEFAULT_MAX_IMAGES = {"caption": 1, "interleaved": 30, "conversation": 16}
_DEFAULT_MAX_TOKENS = {"caption": None, "interleaved": None, "conversation": 8_192}


def approx_tokens(text: str) -> int:
    """Approximate token count: words and punctuation marks (close to BPE counts for English prose).

    Example:
        >>> approx_tokens("A red car, parked.")
        6
    """
    return sum(1 for _ in _TOKEN_PATTERN.finditer(text))


@dataclass
class HygieneConfig:
    """Thresholds of the hygiene checks. None means "no bound" (or the per-kind default where noted).

    Args:
        min_side: minimum shorter side of every image, in pixels (after EXIF orientation).
        max_aspect_ratio: maximum longer/shorter side ratio (DataComp: 3).
        max_pixels: decompression-bomb guard; images declaring more pixels are refused unread.
        verify_images: fully decode every image to catch truncated or corrupt files.
        min_chars / max_chars: text length bounds in characters, over the caption or the whole
            document; per turn (question + answer) for conversations. `max_chars=None` uses the
            per-kind default (caption 4,000; interleaved 400,000; conversation none).
        min_tokens / max_tokens: the same in approximate tokens (`approx_tokens`); `max_tokens=None`
            uses the per-kind default (8,192 per conversation turn, as FineVision; none otherwise).
        min_images / max_images: image count bounds; None uses the per-kind default (caption exactly 1,
            interleaved 1-30, conversation 0-16).
        min_turns / max_turns: conversation turn count bounds.
    """

    min_side: int = 32
    max_aspect_ratio: float = 3.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    verify_images: bool = True
    min_chars: int = 1
    max_chars: int | None = None
    min_tokens: int | None = None
    max_tokens: int | None = None
    min_images: int | None = None
    max_images: int | None = None
    min_turns: int = 1
    max_turns: int | None = None

    def __post_init__(self) -> None:
        for name in ("min_side", "max_pixels", "min_chars", "min_turns"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_aspect_ratio < 1:
            raise ValueError(f"max_aspect_ratio must be >= 1, got {self.max_aspect_ratio}")
        for name in ("max_chars", "min_tokens", "max_tokens", "min_images", "max_images", "max_turns"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def bound(self, name: str, kind: str) -> int | None:
        value = getattr(self, name)
        if value is not None:
            return value
        defaults = {
            "max_chars": _DEFAULT_MAX_CHARS,
            "max_tokens": _DEFAULT_MAX_TOKENS,
            "min_images": _DEFAULT_MIN_IMAGES,
            "max_images": _DEFAULT_MAX_IMAGES,
        }
        return defaults.get(name, {}).get(kind)


Verdict = tuple[str, str] | None  # (reason, detail) or None when the check passes


def _check_structure(sample: Sample, cfg: HygieneConfig) -> Verdict:
    images = sample.images
    missing = [k for k, im in enumerate(images) if im is None]
    lo, hi = cfg.bound("min_images", sample.kind), cfg.bound("max_images", sample.kind)
    if lo is not None and len(images) < lo:
        if sample.kind == "caption":
            return reasons.IMAGE_MISSING, "the row has no image"
        return reasons.TOO_FEW_IMAGES, f"{len(images)} images < minimum {lo}"
    if hi is not None and len(images) > hi:
        return reasons.TOO_MANY_IMAGES, f"{len(images)} images > maximum {hi}"
    if missing:
        return reasons.IMAGE_MISSING, f"image {missing[0]} is empty (None)"
    if sample.kind == "conversation":
        if len(sample.turns) < cfg.min_turns:
            return reasons.TOO_FEW_TURNS, f"{len(sample.turns)} turns < minimum {cfg.min_turns}"
        if cfg.max_turns is not None and len(sample.turns) > cfg.max_turns:
            return reasons.TOO_MANY_TURNS, f"{len(sample.turns)} turns > maximum {cfg.max_turns}"
    return None


def _check_length(label: str, text: str, cfg: HygieneConfig, kind: str) -> Verdict:
    if not text.strip():
        return reasons.TEXT_EMPTY, f"{label} is empty"
    max_chars = cfg.bound("max_chars", kind)
    if len(text) < cfg.min_chars:
        return reasons.TEXT_TOO_SHORT, f"{label} has {len(text)} characters < minimum {cfg.min_chars}"
    if max_chars is not None and len(text) > max_chars:
        return reasons.TEXT_TOO_LONG, f"{label} has {len(text)} characters > maximum {max_chars}"
    max_tokens = cfg.bound("max_tokens", kind)
    if cfg.min_tokens is not None or max_tokens is not None:
        tokens = approx_tokens(text)
        if cfg.min_tokens is not None and tokens < cfg.min_tokens:
            return reasons.TEXT_TOO_SHORT, f"{label} has ~{tokens} tokens < minimum {cfg.min_tokens}"
        if max_tokens is not None and tokens > max_tokens:
            return reasons.TEXT_TOO_LONG, f"{label} has ~{tokens} tokens > maximum {max_tokens}"
    return None


def _check_text(sample: Sample, cfg: HygieneConfig) -> Verdict:
    if sample.kind == "caption" and sample.text is None:
        return reasons.TEXT_MISSING, "the caption is None"
    for k, text in enumerate(sample.texts()):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            return reasons.TEXT_INVALID_UNICODE, f"text {k}: {err.reason} at position {err.start}"
    if sample.kind == "conversation":
        for k, turn in enumerate(sample.turns):
            if not turn.user.strip() and not turn.assistant.strip():
                return reasons.TEXT_EMPTY, f"turn {k} is empty"
            verdict = _check_length(f"turn {k}", f"{turn.user}\n{turn.assistant}", cfg, sample.kind)
            if verdict:
                return verdict
        return None
    label = "the caption" if sample.kind == "caption" else "the document text"
    return _check_length(label, "\n\n".join(sample.texts()), cfg, sample.kind)


def hygiene_checks(
    samples: list[Sample], config: HygieneConfig | None = None, pool: DecodePool | None = None
) -> Columns:
    """The pure batch core: `keep`, `mmsieve_reason`, `mmsieve_detail` for each sample.

    Structure and text are checked first; images are decoded only for samples still kept, all the
    batch's images at once in `pool` (a thread pool; a private one is used when None).

    Example:
        >>> cols = hygiene_checks([Sample.caption("1", None, "a cat")])
        >>> cols["keep"], cols["mmsieve_reason"]
        ([False], ['image_missing'])
    """
    cfg = config or HygieneConfig()
    verdicts: list[Verdict] = [_check_structure(s, cfg) or _check_text(s, cfg) for s in samples]
    todo = [(i, k) for i, s in enumerate(samples) if verdicts[i] is None for k in range(len(s.images))]
    if todo:
        own_pool = pool is None
        pool = pool or DecodePool()
        try:
            datas = [samples[i].images[k].data for i, k in todo]
            probes = pool.probe_many(datas, max_pixels=cfg.max_pixels, verify=cfg.verify_images)
        finally:
            if own_pool:
                pool.close()
        for (i, k), probe in zip(todo, probes):
            if verdicts[i] is not None:
                continue
            where = "the image" if samples[i].kind == "caption" else f"image {k}"
            if not probe.ok:
                verdicts[i] = (probe.reason or reasons.IMAGE_CORRUPT, f"{where}: {probe.detail}")
                continue
            short, long = sorted((probe.width or 0, probe.height or 0))
            if short < cfg.min_side:
                verdicts[i] = (
                    reasons.IMAGE_TOO_SMALL,
                    f"{where} is {probe.width}x{probe.height}, shorter side < {cfg.min_side}",
                )
            elif long / short > cfg.max_aspect_ratio:
                verdicts[i] = (
                    reasons.IMAGE_ASPECT_RATIO,
                    f"{where} is {probe.width}x{probe.height}, aspect ratio {long / short:.2f} > {cfg.max_aspect_ratio}",
                )
    return {
        KEEP_COLUMN: [v is None for v in verdicts],
        REASON_COLUMN: [v[0] if v else None for v in verdicts],
        DETAIL_COLUMN: [v[1] if v else None for v in verdicts],
    }


class HygieneFilter(SampleFilter):
    """Keeps samples whose images decode and whose text and structure are sane; drops the rest with a reason.

    Keeps: every image decodes fully, is within `max_pixels`, has a shorter side >= `min_side` and an
    aspect ratio <= `max_aspect_ratio`; the text is present, valid and within the length bounds;
    image and turn counts are within bounds. Drops anything else, with the first failing check as
    `mmsieve_reason` (see `mmsieve.reasons`) and a precise `mmsieve_detail`.

    Args:
        batch_size: samples per batch (the images of a batch are decoded in parallel).
        workers: decoding threads (default: up to 8, bounded by the CPU count).
        schema: the row schema for the `Dataset.map` surface (detected from the columns when None).
        exclusion_writer: a datatrove writer that receives the dropped documents.
        **config: any `HygieneConfig` field (`min_side`, `max_aspect_ratio`, `max_chars`, ...).

    Example:
        >>> from datatrove.executor import LocalPipelineExecutor  # doctest: +SKIP
        >>> LocalPipelineExecutor([reader, HygieneFilter(min_side=64), writer]).run()  # doctest: +SKIP
    """

    name = "🧼 Hygiene"
    _requires_dependencies = [("PIL", "pillow")]

    def __init__(
        self,
        batch_size: int = 64,
        workers: int | None = None,
        schema: Schema | None = None,
        exclusion_writer: Any = None,
        **config: Any,
    ):
        super().__init__(batch_size=batch_size, schema=schema, exclusion_writer=exclusion_writer)
        self.config = HygieneConfig(**config)
        self.workers = workers
        self._pool: DecodePool | None = None

    @property
    def pool(self) -> DecodePool:
        if self._pool is None:
            self._pool = DecodePool(self.workers)
        return self._pool

    def compute(self, samples: list[Sample], prepared: Any = None) -> Columns:
        return hygiene_checks(samples, self.config, self.pool)

    def parameters(self) -> dict[str, Any]:
        """The thresholds in force, for stats.json and dataset cards."""
        return asdict(self.config)

    def _transient_attributes(self) -> tuple[str, ...]:
        return ("_pool",)
