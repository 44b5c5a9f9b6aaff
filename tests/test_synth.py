"""Semi-synthetic training data: the offline contrastive generator and the teacher generator (loopback server, tiny
in-process VLM). Real images: the scikit-image demo photos and easy-vqa shapes."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from datasets import Image, List

from mmsieve.training import (
    LEVEL_VALUES,
    CaptionSeed,
    ChatRequest,
    ContrastiveGenerator,
    DocumentSeed,
    OpenAIBackend,
    TeacherGenerator,
    TransformersBackend,
    easyvqa_facts,
    load_generated,
    parse_document,
    row_to_training_sample,
    to_dataset,
    training_features,
)
from mmsieve.training.contrastive import EASYVQA_COLORS, EASYVQA_SHAPES, SHAPE_TEMPLATES


@pytest.fixture(scope="module")
def caption_seeds(photos: dict[str, bytes]) -> list[CaptionSeed]:
    from mmsieve.demo.corpus import demo_captions

    return [CaptionSeed(name, photos[name], c["good"]) for name, c in demo_captions().items()]


@pytest.fixture(scope="module")
def document_seeds(caption_seeds: list[CaptionSeed]) -> list[DocumentSeed]:
    docs = []
    for d in range(0, len(caption_seeds) - 2, 3):
        part = caption_seeds[d : d + 3]
        segments: list[str | int] = ["An article with three photos."]
        for k, seed in enumerate(part):
            segments += [k, seed.text]
        docs.append(DocumentSeed(f"doc/{d}", [s.image for s in part], segments))
    return docs


def _facts_in(text: str) -> tuple[set[str], set[str]]:
    words = set(re.findall(r"[a-z]+", text.lower()))
    return words & set(EASYVQA_SHAPES), words & set(EASYVQA_COLORS)


# --- contrastive -------------------------------------------------------------------------------------------------


def test_captions_every_level_with_provenance(caption_seeds: list[CaptionSeed]) -> None:
    records = ContrastiveGenerator(seed=0, per_level=5).captions(caption_seeds)
    assert len(records) == 4 * 5 * len(caption_seeds) == len({r.id for r in records})
    by_source = {s.source_id: s for s in caption_seeds}
    for r in records:
        seed = by_source[r.source_id]
        assert r.kind == "caption" and r.images == [seed.image] and r.original_text == seed.text
        assert r.generator.startswith("contrastive:") and f"::L{r.label}" in r.id
        assert (r.text == seed.text) == (r.label == 3), r
        assert r.text.strip()
    counts = Counter((r.source_id, r.label) for r in records)
    assert set(counts.values()) == {5} and len(counts) == 4 * len(caption_seeds)
    methods = Counter(r.generator.split(":")[1] for r in records)
    assert {"caption_swap", "spam", "keyword_soup", "garbled", "first_clause", "generic_template"} <= set(methods)
    assert {"typos", "color_swap", "object_swap"} & set(methods)
    # level 0 swaps come from another image
    others = {r.source_id: {s.text for s in caption_seeds if s.source_id != r.source_id} for r in records}
    for r in records:
        if r.generator == "contrastive:caption_swap":
            assert r.text in others[r.source_id] and r.text != r.original_text
        if r.label == 2:
            assert len(r.text) < len(r.original_text)


def test_easyvqa_facts_and_levels() -> None:
    facts = easyvqa_facts("test")
    assert len(facts) > 500 and all(s in EASYVQA_SHAPES and c in EASYVQA_COLORS for _, _, s, c in facts)
    assert all(Path(p).is_file() for _, p, _, _ in facts[:5])

    records = ContrastiveGenerator(seed=3).easyvqa("train", limit=80)
    truth = {f"easyvqa/train/{i}": (s, c) for i, _, s, c in easyvqa_facts("train")[:80]}
    assert Counter(r.label for r in records) == dict.fromkeys(LEVEL_VALUES, 80)
    skeletons: dict[int, set[str]] = {1: set(), 3: set()}
    for r in records:
        shape, color = truth[r.source_id]
        shapes, colors = _facts_in(r.text)
        method = r.generator.split(":")[1]
        if r.label == 3:
            assert (shapes, colors) == ({shape}, {color})
        elif r.label == 2:
            assert shapes <= {shape} and colors <= {color}
        elif method in ("color_swap", "shape_swap"):  # exactly one fact wrong, fluent template
            wrong = (shapes != {shape}) + (colors != {color})
            assert wrong == 1 and len(shapes) == len(colors) == 1, r
            assert (method == "color_swap") == (colors != {color})
        elif method == "caption_swap":  # another image's caption: both facts differ
            assert len(shapes) == len(colors) == 1 and shape not in shapes and color not in colors
        if r.label == 3 or method in ("color_swap", "shape_swap"):
            skeleton = re.sub("|".join(EASYVQA_SHAPES + EASYVQA_COLORS), "_", r.text)
            skeletons[r.label].add(skeleton)
    # level 3 and level-1 swaps use the same templates: the label is not readable from the text alone
    assert len(skeletons[3]) == len(SHAPE_TEMPLATES) and skeletons[1] <= skeletons[3]


def test_documents_keep_images_and_change_text(document_seeds: list[DocumentSeed]) -> None:
    records = ContrastiveGenerator(seed=0, per_level=3).documents(document_seeds)
    seeds = {d.source_id: d for d in document_seeds}
    for r in records:
        seed = seeds[r.source_id]
        assert r.kind == "interleaved" and r.images == seed.images
        assert [s for s in r.segments if isinstance(s, int)] == [s for s in seed.segments if isinstance(s, int)]
        assert (r.text == seed.text) == (r.label == 3)
        if r.generator == "contrastive:document_swap":
            other = {t for d in document_seeds if d is not seed for t in d.segments if isinstance(t, str)}
            assert {s for s in r.segments if isinstance(s, str)} <= other
    assert Counter(r.label for r in records) == {v: 3 * len(document_seeds) for v in LEVEL_VALUES}


def test_deterministic_under_seed(caption_seeds: list[CaptionSeed]) -> None:
    a = ContrastiveGenerator(seed=7).captions(caption_seeds)
    assert a == ContrastiveGenerator(seed=7).captions(caption_seeds)
    assert a == sorted(ContrastiveGenerator(seed=7).captions(caption_seeds[::-1]), key=a.index)  # order-free
    assert a != ContrastiveGenerator(seed=8).captions(caption_seeds)
    assert ContrastiveGenerator(seed=1).easyvqa("test", limit=5) == ContrastiveGenerator(seed=1).easyvqa(
        "test", limit=5
    )


def test_to_dataset_and_samples(caption_seeds: list[CaptionSeed], document_seeds: list[DocumentSeed]) -> None:
    gen = ContrastiveGenerator(seed=0)
    records = gen.captions(caption_seeds[:3]) + gen.documents(document_seeds[:1])
    ds = to_dataset(records)
    assert ds.features == training_features() and len(ds) == len(records)
    decoded, _ = row_to_training_sample(ds[0])  # PIL images (the default decoding) convert too
    assert decoded.images[0].data and decoded.text == records[0].text
    raw = ds.cast_column("images", List(Image(decode=False)))  # keep the exact bytes
    for row, record in zip(raw, records, strict=True):
        sample, label = row_to_training_sample(row)
        assert label == record.label and sample.id == record.id and sample.reason is None
        assert sample.kind == record.kind and sample.meta["generator"] == record.generator
        assert [im.data for im in sample.present_images()] == record.images
        if record.kind == "caption":
            assert sample.text == record.text and row["images"][1] is None and row["texts"][0] is None
        else:
            assert sample.segments == record.segments


# --- teacher: loopback OpenAI-compatible server ------------------------------------------------------------------


class _Teacher(BaseHTTPRequestHandler):
    """Scripted replies: the level is read from the prompt; words in the reference text trigger failure modes."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        state = self.server.state  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][1]["content"][-1]["text"]
        with state["lock"]:
            state["requests"].append((self.path, self.headers.get("Authorization"), body))
            state["inflight"] += 1
            state["max_inflight"] = max(state["max_inflight"], state["inflight"])
            trigger = next((t for t in ("SLOW", "FAIL500", "MALFORMED", "REFUSE", "EMPTY") if t in prompt), None)
            attempt = state["attempts"][prompt] = state["attempts"].get(prompt, 0) + 1
        if trigger == "SLOW" and attempt == 1:  # no reply before the client's 1 s timeout
            time.sleep(0.5)  # half the timeout: a wide margin, so a busy machine cannot make the retry overlap
            with state["lock"]:
                state["inflight"] -= 1  # the client is about to give up: its slot is free from now on
            time.sleep(0.7)
            return
        try:
            time.sleep(0.03)
            if trigger == "FAIL500" and attempt == 1:
                return self._send(500, b'{"error": "overloaded"}')
            if trigger == "MALFORMED":
                return self._send(200, b'{"choices": [')
            level = re.search(r"quality level (\d)", prompt).group(1)
            if "[IMAGE 1]" in prompt:
                n = int(re.search(r"has (\d+) images", prompt).group(1))
                text = f"LEVEL{level} intro." + "".join(
                    f"\n[IMAGE {k}]\nLEVEL{level} about {k}." for k in range(1, n + 1)
                )
            else:
                text = {"REFUSE": "I'm sorry, I can't help with that.", "EMPTY": "  "}.get(
                    trigger, f"LEVEL{level} text"
                )
            reply = {"choices": [{"message": {"role": "assistant", "content": text}}]}
            self._send(200, json.dumps(reply).encode())
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass
        finally:
            with state["lock"]:
                state["inflight"] -= 1

    def _send(self, code: int, data: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def teacher_server(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("no_proxy", "*")  # urllib must never route loopback calls through a proxy
    monkeypatch.setenv("NO_PROXY", "*")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Teacher)
    server.daemon_threads = True
    server.state = {"lock": threading.Lock(), "requests": [], "inflight": 0, "max_inflight": 0, "attempts": {}}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_teacher_openai_backend(
    teacher_server: Any, caption_seeds: list[CaptionSeed], document_seeds: list[DocumentSeed], tmp_path: Path
) -> None:
    state = teacher_server.state
    seeds: list[CaptionSeed | DocumentSeed] = list(caption_seeds[:6])
    for trigger in ("SLOW", "FAIL500", "MALFORMED", "REFUSE", "EMPTY"):
        seeds.append(CaptionSeed(f"t/{trigger}", caption_seeds[0].image, f"A {trigger} photo."))
    seeds.append(document_seeds[0])
    endpoint = f"http://127.0.0.1:{teacher_server.server_address[1]}"
    backend = OpenAIBackend(
        endpoint, "tiny-teacher", api_key="sk-test", timeout=1.0, retries=2, concurrency=3, backoff=0.01
    )
    assert "sk-test" not in repr(backend)
    stats = TeacherGenerator(backend, shard_size=16).generate(seeds, output_dir=tmp_path)

    failing = {f"t/{t}::caption::L{v}" for t in ("MALFORMED", "REFUSE", "EMPTY") for v in LEVEL_VALUES}
    assert set(stats.failures) == failing and stats.failed == len(failing)
    assert stats.requested == 4 * len(seeds) and stats.generated == stats.requested - len(failing)
    assert all(stats.failures[f"t/MALFORMED::caption::L{v}"].startswith("malformed response") for v in LEVEL_VALUES)
    assert all("after 3 attempts" in stats.failures[f"t/MALFORMED::caption::L{v}"] for v in LEVEL_VALUES)
    assert all(stats.failures[f"t/REFUSE::caption::L{v}"].startswith("refusal") for v in LEVEL_VALUES)
    assert all(stats.failures[f"t/EMPTY::caption::L{v}"] == "empty reply" for v in LEVEL_VALUES)
    assert len(Path(tmp_path, "failures.jsonl").read_text().splitlines()) == len(failing)
    assert 2 <= state["max_inflight"] <= 3

    ds = load_generated(tmp_path)
    assert len(ds) == stats.generated and len(set(ds["id"])) == len(ds)
    for row in ds:
        assert row["generator"] == "teacher:openai:tiny-teacher"
        assert row["text"].startswith(f"LEVEL{row['label']}")
        if row["kind"] == "interleaved":
            sample, label = row_to_training_sample(row)
            assert sample.segments[1::2] == [0, 1, 2] and len(sample.images) == 3
    assert {r["source_id"] for r in ds} >= {"t/SLOW", "t/FAIL500"}  # timed out / 500 once, then succeeded

    path, auth, body = state["requests"][0]
    assert path == "/v1/chat/completions" and auth == "Bearer sk-test" and body["model"] == "tiny-teacher"
    for _, _, body in state["requests"]:
        system, user = body["messages"]
        assert system["role"] == "system" and "quality" in system["content"]
        assert user["content"][-1]["text"].count("quality level") == 1
        url = user["content"][0]["image_url"]["url"]
        head, data = url.split(",", 1)
        assert head == "data:image/jpeg;base64" and base64.b64decode(data)[:2] == b"\xff\xd8"

    # resume: a second run redoes nothing that succeeded, only retries the failures
    before = len(state["requests"])
    again = TeacherGenerator(backend).generate(seeds, output_dir=tmp_path)
    assert again.generated == 0 and again.skipped == stats.generated and again.failed == len(failing)
    assert len(state["requests"]) - before == 4 * (3 + 1 + 1)  # malformed: 3 attempts; refusal, empty: 1
    assert len(load_generated(tmp_path)) == stats.generated


def test_parse_document_requires_markers() -> None:
    assert parse_document("A.\n[IMAGE 1]\n\n[IMAGE 2] B.", 2) == ["A.", 0, 1, "B."]
    for bad in ("A. [IMAGE 2] [IMAGE 1]", "A. [IMAGE 1]", "[IMAGE 1][IMAGE 2]"):
        with pytest.raises(ValueError):
            parse_document(bad, 2)


# --- teacher: in-process transformers backend --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mmsieve.models.tiny import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("llava"))


def test_transformers_backend(tiny_llava: Path, photos: dict[str, bytes], broken: dict[str, bytes | None]) -> None:
    backend = TransformersBackend(tiny_llava, batch_size=2, max_new_tokens=6)
    requests = [
        ChatRequest("a", "Be brief.", "describe the image", [photos["chelsea"]]),
        ChatRequest("b", "Be brief.", "a cup of coffee", [photos["coffee"]]),
        ChatRequest("c", "Be brief.", "two photos", [photos["rocket"], photos["astronaut"]]),
        ChatRequest("bad", "Be brief.", "broken", [broken["truncated_jpeg"]]),
    ]
    replies = {r.key: (text, error) for r, text, error in backend.generate(requests)}
    assert set(replies) == {"a", "b", "c", "bad"}
    assert all(isinstance(replies[k][0], str) and replies[k][1] is None for k in "abc")
    assert replies["bad"][0] is None and replies["bad"][1].startswith("image_truncated")
    assert backend._processor.tokenizer.padding_side == "left"
