"""The teacher generator: a chat model writes the text of each quality level for real images (UniFilter-style).

Two backends: `OpenAIBackend` posts to any OpenAI-compatible `/v1/chat/completions` endpoint (vLLM, SGLang, TGI,
hosted APIs) with bounded concurrency, timeouts and retries; `TransformersBackend` runs an image-text-to-text model
in process with batched generation. `TeacherGenerator` builds one request per (seed, level) from the prompt
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

import base64
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from mmsieve.training.levels import LEVEL_VALUES, LEVELS, level
from mmsieve.training.records import CaptionSeed, DocumentSeed, TrainingRecord, record_id, to_dataset


_REFUSAL = re.compile(r"^\W*(i'?m sorry|i am sorry|sorry,|i cannot|i can'?t|i can not|i'?m unable|as an ai)", re.I)
_MARKER = re.compile(r"\[IMAGE (\d+)\]")
_MIME = {b"\x89PNG": "image/png", b"GIF8": "image/gif", b"RIFF": "image/webp", b"\xff\xd8": "image/jpeg"}


@dataclass
class ChatRequest:
    """One generation request: a system prompt, a user prompt and the images (encoded bytes) it is about."""

    key: str
    system: str
    prompt: str
    images: list[bytes]

    def __repr__(self) -> str:
        return f"ChatRequest(key={self.key!r}, images={len(self.images)}, prompt={self.prompt!r:.60})"


Reply = tuple[ChatRequest, str | None, str | None]  # (request, text, error): exactly one of text / error is set


class TeacherBackend(Protocol):
    """What `TeacherGenerator` needs from a model: a name and replies to requests, in any order."""

    name: str

    def generate(self, requests: Sequence[ChatRequest]) -> Iterator[Reply]: ...


def reply_error(text: str | None) -> str | None:
    """Why a teacher reply is unusable (None when it is fine): empty, or a refusal.

    Example:
        >>> reply_error("I cannot describe this image."), reply_error("  "), reply_error("A red bus.")
        ("refusal: 'I cannot describe this image.'", 'empty reply', None)
    """
    if not text or not text.strip():
        return "empty reply"
    if _REFUSAL.match(text.strip()):
        return f"refusal: {text.strip()[:80]!r}"
    return None


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


def _mime(data: bytes) -> str:
    return next((mime for magic, mime in _MIME.items() if data.startswith(magic)), "image/jpeg")


# --- backends ----------------------------------------------------------------------------------------------------


class OpenAIBackend:
    """An OpenAI-compatible chat-completions endpoint, called from a bounded thread pool (stdlib HTTP only).

    Each request sends the system prompt, then a user message with the images as base64 data URLs and the level
    prompt. 429, 5xx, timeouts, connection errors and malformed JSON are retried with exponential backoff
    (`backoff * 2**attempt` seconds, or the server's `Retry-After` on 429); other HTTP errors fail at once.

    Args:
        endpoint: the server root, e.g. `"http://localhost:8000"` (a trailing `/v1` is accepted).
        model: the model name the server expects.
        api_key: the bearer token; default `$OPENAI_API_KEY`; never logged or shown in `repr`.
        timeout: seconds per request (socket connect and each read).
        retries: extra attempts after the first.
        concurrency: the most requests in flight at once.

    Example:
        >>> backend = OpenAIBackend("https://api.openai.com", "gpt-4o-mini", concurrency=8)
        >>> backend.name
        'openai:gpt-4o-mini'
    """

    def __init__(
        self,
        endpoint: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        concurrency: int = 16,
        temperature: float = 0.7,
        max_tokens: int = 512,
        backoff: float = 1.0,
    ) -> None:
        if concurrency < 1 or retries < 0:
            raise ValueError(f"concurrency must be >= 1 and retries >= 0, got {concurrency} and {retries}")
        base = endpoint.rstrip("/")
        self.url = base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")
        self.model, self.name = model, f"openai:{model}"
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout, self.retries, self.concurrency, self.backoff = timeout, retries, concurrency, backoff
        self.temperature, self.max_tokens = temperature, max_tokens

    def __repr__(self) -> str:
        return f"OpenAIBackend(url={self.url!r}, model={self.model!r}, concurrency={self.concurrency})"

    def payload(self, request: ChatRequest) -> dict[str, Any]:
        """The JSON body of one chat-completions call."""
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": f"data:{_mime(im)};base64,{base64.b64encode(im).decode()}"}}
            for im in request.images
        ]
        content.append({"type": "text", "text": request.prompt})
        return {
            "model": self.model,
            "messages": [{"role": "system", "content": request.system}, {"role": "user", "content": content}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def generate(self, requests: Sequence[ChatRequest]) -> Iterator[Reply]:
        """Send the requests, at most `concurrency` at a time; yield replies as they complete."""
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="teacher") as pool:
            futures = {pool.submit(self._complete, r): r for r in requests}
            for future in as_completed(futures):
                yield futures[future], *future.result()

    def _complete(self, request: ChatRequest) -> tuple[str | None, str | None]:
        body = json.dumps(self.payload(request)).encode()
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        error, delay = "", 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(delay)
            delay = self.backoff * 2**attempt
            try:
                req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as e:
                error = f"HTTP {e.code}: {e.read()[:200].decode(errors='replace')}"
                if e.code != 429 and e.code < 500:
                    return None, error
                if e.code == 429 and (after := e.headers.get("Retry-After", "")).replace(".", "", 1).isdigit():
                    delay = min(float(after), 60.0)
                continue
            except (TimeoutError, urllib.error.URLError, ConnectionError) as e:
                error = f"timed out after {self.timeout}s" if _is_timeout(e) else f"connection failed: {e}"
                continue
            try:
                content = json.loads(raw)["choices"][0]["message"]["content"]
                if isinstance(content, list):  # some servers return content parts
                    content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
                if not isinstance(content, str | None):
                    raise TypeError(f"content is a {type(content).__name__}")
            except (ValueError, KeyError, IndexError, TypeError) as e:
                error = f"malformed response ({type(e).__name__}): {raw[:120].decode(errors='replace')!r}"
                continue
            return content, None
        return None, f"{error} (after {self.retries + 1} attempts)"


def _is_timeout(e: BaseException) -> bool:
    return isinstance(e, TimeoutError) or isinstance(getattr(e, "reason", None), TimeoutError)


class TransformersBackend:
    """An image-text-to-text model run in process (`AutoModelForImageTextToText` + `AutoProcessor` chat template).

    Requests are generated in batches of `batch_size` with left padding, greedy by default. The model loads on the
    first `generate` call, on `device` (default: this worker's GPU if any, else the CPU).

    Example:
        >>> backend = TransformersBackend("HuggingFaceTB/SmolVLM-256M-Instruct", batch_size=16)
        >>> backend.name
        'transformers:HuggingFaceTB/SmolVLM-256M-Instruct'
    """

    def __init__(
        self,
        model: str | Path,
        *,
        device: str | None = None,
        batch_size: int = 8,
        max_new_tokens: int = 128,
        do_sample: bool = False,
        temperature: float = 0.7,
    ) -> None:
        self.model_path, self.name = str(model), f"transformers:{model}"
        self.device, self.batch_size, self.max_new_tokens = device, batch_size, max_new_tokens
        self.do_sample, self.temperature = do_sample, temperature
        self._model: Any = None
        self._processor: Any = None

    def _load(self) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from mmsieve.models.devices import pick_device, pick_dtype

        device = self.device or pick_device()
        self._processor = AutoProcessor.from_pretrained(self.model_path)
        self._processor.tokenizer.padding_side = "left"  # generation continues right after each prompt
        model = AutoModelForImageTextToText.from_pretrained(self.model_path, dtype=pick_dtype(device))
        self._model = model.to(device).eval()

    def generate(self, requests: Sequence[ChatRequest]) -> Iterator[Reply]:
        """Generate in batches; a request with an undecodable image fails alone."""
        import torch

        from mmsieve.images import decode_image

        if self._model is None:
            self._load()
        ok: list[tuple[ChatRequest, list[Any]]] = []
        for request in requests:
            decoded = [decode_image(im) for im in request.images]
            bad = next((d for d in decoded if not d.ok), None)
            if bad is not None:
                yield request, None, f"{bad.reason}: {bad.detail}"
            else:
                ok.append((request, [d.image for d in decoded]))
        tokenizer = self._processor.tokenizer
        for start in range(0, len(ok), self.batch_size):
            batch = ok[start : start + self.batch_size]
            texts = [self._prompt(request) for request, _ in batch]
            inputs = self._processor(
                images=[images for _, images in batch], text=texts, padding=True, return_tensors="pt"
            ).to(self._model.device)
            sampling = {"do_sample": True, "temperature": self.temperature} if self.do_sample else {"do_sample": False}
            with torch.inference_mode():
                out = self._model.generate(
                    **inputs, max_new_tokens=self.max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling
                )
            replies = tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            for (request, _), reply in zip(batch, replies, strict=True):
                yield request, reply, None

    def _prompt(self, request: ChatRequest) -> str:
        user = [{"type": "image"} for _ in request.images] + [{"type": "text", "text": request.prompt}]
        messages = [
            {"role": "system", "content": [{"type": "text", "text": request.system}]},
            {"role": "user", "content": user},
        ]
        return self._processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


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
        self, backend: TeacherBackend, *, prompts: TeacherPrompts | str | Path | None = None, shard_size: int = 256
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
