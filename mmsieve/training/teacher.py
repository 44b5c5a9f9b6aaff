"""The teacher generator: a chat model writes the text of each quality level for real images (UniFilter-style).

The backends come from `mmsieve.generation`: `OpenAIBackend` posts to any OpenAI-compatible
`/v1/chat/completions` endpoint (vLLM, SGLang, TGI, hosted APIs) with bounded concurrency, timeouts and retries;
`TransformersBackend` runs an image-text-to-text model in process with batched generation. `TeacherGenerator` builds one request per (seed, level) from the prompt
templates in `mmsieve/training/prompts/`, writes results as parquet shards to an output folder as they arrive, and
skips every (source_id, kind, level) already there, so an interrupted run resumes where it stopped. A row that
fails (HTTP error after retries, malformed response, empty reply, refusal, undecodable image, lost image markers)
is left out and counted with its reason in the stats and in `failures.jsonl`; the next run tries it again.

Example:
    >>> backend = OpenAIBackend("http://localhost:8000", "Qwen/Qwen2.5-VL-7B-Instruct", concurrency=32)
    >>> stats = TeacherGenerator(backend).generate(seeds, output_dir="synth/")  # doctest: +SKIP
    >>> stats.generated, stats.failed  # doctest: +SKIP
    (396, 4)
    >>> load_generated("synth/").push_to_hub("me/quality-levels")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from mmsieve.generation import ChatRequest, GenerationBackend, OpenAIBackend, TransformersBackend, reply_error
from mmsieve.training.levels import LEVEL_VALUES, LEVELS, level
from mmsieve.training.records import CaptionSeed, DocumentSeed, TrainingRecord, record_id, to_dataset


_MARKER = re.compile(r"\[IMAGE (\d+)\]")


# --- prompts -----------------------------------------------------------------------------------------------------


@dataclass
class TeacherPrompts:
    """The system prompt and the per-level templates (`str.format` placeholders) for captions and documents.

    Caption templates take `{definition}` and `{reference}` (the seed's text); interleaved templates take
    `{definition}`, `{document}` (the seed with `[IMAGE k]` markers) and `{n_images}`; the system prompt `{levels}`.

    Example:
        >>> prompts = TeacherPrompts.load()  # the templates shipped with mmsieve
        >>> sorted(prompts.caption)
        [0, 1, 2, 3]
    """

    system: str
    caption: dict[int, str]
    interleaved: dict[int, str]

    @classmethod
    def load(cls, folder: str | Path | None = None) -> TeacherPrompts:
        """Read `system.txt`, `caption_level_{0..3}.txt` and `interleaved_level_{0..3}.txt` from `folder`
        (default: the templates shipped in `mmsieve/training/prompts/`)."""
        root = Path(folder) if folder is not None else resources.files("mmsieve.training").joinpath("prompts")

        def read(name: str) -> str:
            return root.joinpath(name).read_text(encoding="utf-8").strip()

        return cls(
            read("system.txt"),
            {v: read(f"caption_level_{v}.txt") for v in LEVEL_VALUES},
            {v: read(f"interleaved_level_{v}.txt") for v in LEVEL_VALUES},
        )

    def system_prompt(self) -> str:
        levels = "\n".join(f"{lv.value}: {lv.definition}" for lv in reversed(LEVELS))
        return self.system.format(levels=levels)

    def user_prompt(self, seed: CaptionSeed | DocumentSeed, value: int) -> str:
        definition = level(value).definition
        if isinstance(seed, CaptionSeed):
            return self.caption[value].format(definition=definition, reference=seed.text)
        return self.interleaved[value].format(
            definition=definition, document=render_document(seed.segments), n_images=len(seed.images)
        )


def render_document(segments: Sequence[str | int]) -> str:
    """A document as teacher input: text segments, and `[IMAGE k]` (1-based) where image k stands.

    Example:
        >>> render_document(["Intro.", 0, "After."])
        'Intro.\\n\\n[IMAGE 1]\\n\\nAfter.'
    """
    return "\n\n".join(s if isinstance(s, str) else f"[IMAGE {s + 1}]" for s in segments)


def parse_document(text: str, n_images: int) -> list[str | int]:
    """A teacher's rewritten document -> segments; raises ValueError unless each marker appears once, in order.

    Example:
        >>> parse_document("Intro.\\n[IMAGE 1]\\nAfter.", 1)
        ['Intro.', 0, 'After.']
    """
    found = [int(m) for m in _MARKER.findall(text)]
    if found != list(range(1, n_images + 1)):
        raise ValueError(f"expected image markers 1..{n_images} once each in order, found {found}")
    segments: list[str | int] = []
    for k, piece in enumerate(_MARKER.split(text)):
        if k % 2:
            segments.append(int(piece) - 1)
        elif piece.strip():
            segments.append(piece.strip())
    if not any(isinstance(s, str) for s in segments):
        raise ValueError("the rewritten document has no text")
    return segments


# --- the generator -----------------------------------------------------------------------------------------------


@dataclass
class TeacherStats:
    """What one `TeacherGenerator.generate` run did. `failures` maps a row id to its error."""

    requested: int = 0
    skipped: int = 0
    generated: int = 0
    failed: int = 0
    by_level: Counter[int] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)


class TeacherGenerator:
    """Writes four-level training data with a teacher model, resumably, into parquet shards.

    Args:
        backend: an `OpenAIBackend`, a `TransformersBackend`, or anything with `name` and `generate`.
        prompts: a `TeacherPrompts`, a folder of templates, or None for the shipped templates.
        shard_size: requests per round; each round's results are written as one shard (a crash loses one round).

    Example:
        >>> gen = TeacherGenerator(OpenAIBackend("http://localhost:8000", "Qwen/Qwen2.5-VL-7B-Instruct"))
        >>> stats = gen.generate(seeds, levels=(0, 1, 2, 3), output_dir="synth/")  # doctest: +SKIP
    """

    def __init__(
        self, backend: GenerationBackend, *, prompts: TeacherPrompts | str | Path | None = None, shard_size: int = 256
    ) -> None:
        self.backend = backend
        self.prompts = prompts if isinstance(prompts, TeacherPrompts) else TeacherPrompts.load(prompts)
        self.shard_size = shard_size

    def generate(
        self,
        seeds: Sequence[CaptionSeed | DocumentSeed],
        *,
        output_dir: str | Path,
        levels: Sequence[int] = LEVEL_VALUES,
    ) -> TeacherStats:
        """Generate every missing (seed, level) row into `output_dir`; rows already there are not redone."""
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        done = generated_ids(out)
        stats = TeacherStats()
        system = self.prompts.system_prompt()
        pending: list[tuple[ChatRequest, CaptionSeed | DocumentSeed, int]] = []
        queued: set[str] = set()
        for seed in seeds:
            kind = "caption" if isinstance(seed, CaptionSeed) else "interleaved"
            images = [seed.image] if isinstance(seed, CaptionSeed) else seed.images
            for value in levels:
                key = record_id(seed.source_id, kind, level(value).value)
                stats.requested += 1
                if key in done or key in queued:
                    stats.skipped += 1
                    continue
                queued.add(key)
                pending.append((ChatRequest(key, system, self.prompts.user_prompt(seed, value), images), seed, value))
        for start in range(0, len(pending), self.shard_size):
            chunk = {
                request.key: (request, seed, value)
                for request, seed, value in pending[start : start + self.shard_size]
            }
            records = []
            for request, text, error in self.backend.generate([r for r, _, _ in chunk.values()]):
                _, seed, value = chunk[request.key]
                record, error = (None, error) if error else self._record(seed, value, text)
                if record is None:
                    stats.failed += 1
                    stats.failures[request.key] = error or "unknown error"
                else:
                    records.append(record)
                    stats.generated += 1
                    stats.by_level[value] += 1
            _write_shard(out, records)
        with open(out / "failures.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"id": k, "error": e}) + "\n" for k, e in stats.failures.items())
        return stats

    def _record(
        self, seed: CaptionSeed | DocumentSeed, value: int, text: str | None
    ) -> tuple[TrainingRecord | None, str | None]:
        if (error := reply_error(text)) is not None:
            return None, error
        text = _unquote(text or "")
        generator = f"teacher:{self.backend.name}"
        if isinstance(seed, CaptionSeed):
            return TrainingRecord.caption(seed, text, label=value, generator=generator), None
        try:
            segments = parse_document(text, len(seed.images))
        except ValueError as e:
            return None, f"bad document: {e}"
        record = TrainingRecord(
            record_id(seed.source_id, "interleaved", value),
            "interleaved",
            value,
            generator,
            seed.source_id,
            list(seed.images),
            segments,
            seed.text,
        )
        return record, None


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1].strip()
    return text


def _shards(folder: Path) -> list[Path]:
    return sorted(folder.glob("part-*.parquet"))


def _write_shard(folder: Path, records: list[TrainingRecord]) -> None:
    if not records:
        return
    existing = _shards(folder)
    index = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
    path = folder / f"part-{index:05d}.parquet"
    tmp = path.with_suffix(".parquet.tmp")
    to_dataset(records).to_parquet(str(tmp))
    os.replace(tmp, path)  # a shard is either complete or absent


def generated_ids(output_dir: str | Path) -> set[str]:
    """The row ids already written to `output_dir` (the resume keys)."""
    import pyarrow.parquet as pq

    return {
        i for path in _shards(Path(output_dir)) for i in pq.read_table(path, columns=["id"]).column("id").to_pylist()
    }


def load_generated(output_dir: str | Path) -> Any:
    """Everything generated into `output_dir` as one `datasets.Dataset` (the `records` row layout).

    Example:
        >>> ds = load_generated("synth/")  # doctest: +SKIP
    """
    from datasets import Dataset

    from mmsieve.training.records import training_features

    shards = _shards(Path(output_dir))
    if not shards:
        return to_dataset([])
    return Dataset.from_parquet([str(p) for p in shards], features=training_features())


__all__ = [
    "ChatRequest",
    "OpenAIBackend",
    "TeacherGenerator",
    "TeacherPrompts",
    "TeacherStats",
    "TransformersBackend",
    "generated_ids",
    "load_generated",
    "parse_document",
    "render_document",
    "reply_error",
]
