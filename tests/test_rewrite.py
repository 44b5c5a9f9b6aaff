"""`Rewriter` and its AITQE parser: which rows are rewritten, what is sent, what is recorded, on both surfaces.

Backends: a scripted in-process backend (records every `ChatRequest`), `OpenAIBackend` against a loopback
`ScriptedChatServer` (records every HTTP body), and a tiny random LLaVA run in process.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import pytest

from mmsieve.cli import main
from mmsieve.generation import ChatRequest, OpenAIBackend, TransformersBackend, image_data_url
from mmsieve.generation.loopback import ScriptedChatServer, ScriptedReply, user_text
from mmsieve.rewrite import Rewriter, aitqe_prompt, clean_reply, parse_aitqe
from mmsieve.rewrite.prompts import SYSTEM, RewritePrompts
from mmsieve.runner import run_steps
from mmsieve.sample import ImageRef, Sample, Turn
from mmsieve.steps import SampleScorer


# The `--output_all` example of the AITQE README (hanhuang22/AITQE), verbatim.
README_OUTPUT = (
    '{"Recaption": "A man stands in front of a checklist of customer service questions, including \'Do you take '
    'each customer seriously?\' and \'Do you qualify customers properly?\'", "Overall Score": "2<Overall>", '
    '"Overall Explanation": "The caption is vague and does not accurately describe the image or its content. It '
    'lacks detail and relevance to the checklist shown in the image.", "Text Quality Score": 3, "Text Quality '
    'Explanation": "The caption is grammatically correct but lacks clarity and relevance to the image. It is vague '
    'and does not provide a meaningful description.", "Image-Text Matching Score": 2, "Image-Text Matching '
    'Explanation": "The caption does not accurately describe the image, which features a checklist of customer '
    'service questions. The caption is unrelated to the content of the image.", "Object Detail Score": 2, "Object '
    'Detail Explanation": "The caption does not provide any details about the objects in the image, such as the '
    'checklist or the person in the background.", "Semantic Understanding Score": 2, "Semantic Understanding '
    'Explanation": "The caption fails to convey any understanding of the image\'s context or purpose, which is '
    'about customer service evaluation.", "Text/Chart Description Score": 2, "Text/Chart Description Explanation": '
    '"The caption does not describe the text in the image, which is a checklist of customer service questions."}'
)
README_RECAPTION = (
    "A man stands in front of a checklist of customer service questions, including 'Do you take each customer "
    "seriously?' and 'Do you qualify customers properly?'"
)
CAPTION_LINE = re.compile(r"^(?:Caption|Answer|Paragraph): (.*)$", re.MULTILINE)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


# -- helpers ----------------------------------------------------------------------------------------------------------
def piece_text(prompt: str) -> str:
    """The caption, answer or paragraph a rewriting prompt carries."""
    match = CAPTION_LINE.search(prompt)
    assert match is not None, prompt
    return match.group(1)


def upper(prompt: str) -> str:
    """A deterministic 'rewrite': the text in capitals (an all-caps text comes back unchanged)."""
    return piece_text(prompt).upper()


class ScriptedBackend:
    """An in-process backend: `reply(request)` gives a text or `(None, error)`; requests are recorded."""

    def __init__(self, reply: Callable[[ChatRequest], Any], name: str = "scripted:vlm") -> None:
        self.reply, self.name = reply, name
        self.requests: list[ChatRequest] = []

    def generate(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[ChatRequest, str | None, str | None]]:
        for request in reversed(requests):  # replies may come in any order
            self.requests.append(request)
            out = self.reply(request)
            yield (request, *out) if isinstance(out, tuple) else (request, out, None)


class LengthScorer(SampleScorer):
    """A deterministic stand-in for UniFilter: the score is the text's length / 10."""

    def __init__(self, column: str = "unifilter_score") -> None:
        super().__init__(batch_size=64)
        self.column = column
        self.seen: list[str | None] = []

    def output_features(self) -> dict[str, Any]:
        return {self.column: datasets.Value("float64")}

    def compute(self, samples: list[Sample], prepared: Any = None) -> dict[str, list[Any]]:
        self.seen += [s.text for s in samples]
        return {self.column: [len(s.text or "") / 10 for s in samples]}


def captions(
    photo: bytes, rows: list[tuple[str | None, float | None]], column: str = "unifilter_score"
) -> list[Sample]:
    out = []
    for i, (text, score) in enumerate(rows):
        meta = {} if score is None else {column: score}
        out.append(Sample.caption(str(i), ImageRef(data=photo), text, **meta))
    return out


def column_rows(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(columns)
    return [dict(zip(names, values)) for values in zip(*columns.values())]


def stat_counts(step: Rewriter) -> dict[str, float]:
    return {name: metric.total for name, metric in step.stats.stats.items()}


# -- parse_aitqe / aitqe_prompt / clean_reply -------------------------------------------------------------------------
def test_parse_aitqe_readme_output_all() -> None:
    out = parse_aitqe(README_OUTPUT)
    assert out.recaption == README_RECAPTION
    assert out.overall_score == 2.0
    assert out.overall_explanation == (
        "The caption is vague and does not accurately describe the image or its content. It lacks detail and "
        "relevance to the checklist shown in the image."
    )
    assert out.scores == {
        "Text Quality": 3.0,
        "Image-Text Matching": 2.0,
        "Object Detail": 2.0,
        "Semantic Understanding": 2.0,
        "Text/Chart Description": 2.0,
    }
    assert out.explanations["Semantic Understanding"] == (
        "The caption fails to convey any understanding of the image's context or purpose, which is about customer "
        "service evaluation."
    )
    assert out.explanations["Text/Chart Description"] == (
        "The caption does not describe the text in the image, which is a checklist of customer service questions."
    )
    assert len(out.explanations) == 5
    assert out.parsed and out.wants_rewrite


def test_parse_aitqe_default_stop_string_output() -> None:
    generated = README_OUTPUT[: README_OUTPUT.index("<Overall>") + len("<Overall>")]  # stops after the stop string
    released = generated.strip()[:-1] + "}"  # inference.py: `outputs[:-1] + "}"` -> `..."2<Overall}`
    cut = README_OUTPUT[: README_OUTPUT.index("<Overall>")] + "}"  # a server that cuts the stop string off
    for text in (released, cut):
        out = parse_aitqe(text)
        assert out.recaption == README_RECAPTION, text[-40:]
        assert out.overall_score == 2.0
        assert out.overall_explanation is None and out.scores == {} and out.explanations == {}
        assert out.parsed and out.wants_rewrite
    kept = parse_aitqe('{"Overall Score": "4<Overall}')  # a good pair: no Recaption, generated first
    assert (kept.recaption, kept.overall_score, kept.parsed, kept.wants_rewrite) == (None, 4.0, True, False)


def test_parse_aitqe_tolerates_what_the_model_writes() -> None:
    single = parse_aitqe(
        "{'Recaption': 'A man's dog on the grass.', 'Overall Score': '2', 'Overall Explanation': 'Wrong animal.', "
        "'Text Quality Score': 3, 'Object Detail': 1}"
    )
    assert single.recaption == "A man's dog on the grass."
    assert (single.overall_score, single.overall_explanation) == (2.0, "Wrong animal.")
    assert single.scores == {"Text Quality": 3.0, "Object Detail": 1.0}

    truncated = parse_aitqe(README_OUTPUT[: README_OUTPUT.index("It is vague")])  # cut mid-explanation
    assert truncated.recaption == README_RECAPTION and truncated.overall_score == 2.0
    assert truncated.scores == {"Text Quality": 3.0}
    assert truncated.explanations == {
        "Text Quality": "The caption is grammatically correct but lacks clarity and relevance to the image."
    }

    high = parse_aitqe(
        '{"Overall Score": "4", "Overall Explanation": "Accurate and detailed.", "Text Quality Score": 4, '
        '"Text Quality Explanation": "Fluent."}'
    )
    assert high.recaption is None and not high.wants_rewrite and high.parsed
    assert (high.overall_score, high.scores, high.explanations) == (
        4.0,
        {"Text Quality": 4.0},
        {"Text Quality": "Fluent."},
    )

    inner = parse_aitqe('{"Recaption": "A sign that reads "OPEN" above a door.", "Overall Score": "1<Overall>"}')
    assert (inner.recaption, inner.overall_score) == ('A sign that reads "OPEN" above a door.', 1.0)
    escaped = parse_aitqe('{"Recaption": "A sign reading \\"OPEN\\".", "Overall Score": "2"}')
    assert escaped.recaption == 'A sign reading "OPEN".'
    lines = parse_aitqe('{\n  "Recaption": "Time: 12:30, a clock.",\n  "Overall Score": "3.5"\n}')
    assert (lines.recaption, lines.overall_score) == ("Time: 12:30, a clock.", 3.5)
    empty_recaption = parse_aitqe('{"Recaption": "", "Overall Score": "4"}')
    assert empty_recaption.recaption is None and not empty_recaption.wants_rewrite


@pytest.mark.parametrize("text", [None, "", "   ", "I cannot evaluate this image.", "12345", "{}", "<Overall>"])
def test_parse_aitqe_garbage_gives_an_empty_output(text: str | None) -> None:
    out = parse_aitqe(text)
    assert (out.recaption, out.overall_score, out.overall_explanation, out.scores, out.explanations) == (
        None,
        None,
        None,
        {},
        {},
    )
    assert not out.parsed and not out.wants_rewrite


def test_aitqe_prompt_is_the_released_one() -> None:
    assert aitqe_prompt("Some random text") == (
        "Evaluate the caption: Some random text\nif score is low, give a short description of the image.\n"
        "Respond using a dictionary structure."
    )


@pytest.mark.parametrize(
    ("reply", "cleaned"),
    [
        ('Rewritten caption: "A red bus parked on a street."', "A red bus parked on a street."),
        ("Caption: A cat.", "A cat."),
        ("Here is the corrected answer: Two dogs.", "Two dogs."),
        ("Here's the revised paragraph: Text.", "Text."),
        ('"A cat."', "A cat."),
        ("'A cat'", "A cat"),
        ("\u201cA cat.\u201d", "A cat."),
        ("  A cat.\n", "A cat."),
        ("Answer: It's red.", "It's red."),
        ("A man's hat.", "A man's hat."),
        ('The sign says "stop".', 'The sign says "stop".'),
        ("Caption:", ""),
        ('"', '"'),
    ],
)
def test_clean_reply(reply: str, cleaned: str) -> None:
    assert clean_reply(reply) == cleaned


# -- gating -----------------------------------------------------------------------------------------------------------
def test_gate_with_a_scripted_backend(photos: dict[str, bytes]) -> None:
    backend = ScriptedBackend(lambda r: upper(r.prompt))
    step = Rewriter(backend, threshold=1.5)
    samples = captions(
        photos["clock"],
        [("a cat on a mat", 0.5), ("at the threshold", 1.5), ("a good caption", 2.5), ("no score here", None)],
    )
    samples.append(Sample.caption("4", None, "no image at all", unifilter_score=0.1))
    samples.append(Sample.caption("5", ImageRef(data=photos["clock"]), "ALREADY FINE", unifilter_score=0.2))
    rows = column_rows(step.process(samples))
    assert [s.text for s in samples] == [
        "A CAT ON A MAT",
        "at the threshold",
        "a good caption",
        "no score here",
        "no image at all",
        "ALREADY FINE",
    ]
    assert rows[0] == {
        "original_text": "a cat on a mat",
        "rewritten": True,
        "rewrite_model": "scripted:vlm",
        "rewrite_reason": "unifilter_score 0.500 < 1.5",
    }
    untouched = {"original_text": None, "rewritten": False, "rewrite_model": None}
    assert rows[1] == {**untouched, "rewrite_reason": "above threshold"}  # at the threshold: not below it
    assert rows[2] == {**untouched, "rewrite_reason": "above threshold"}
    assert rows[3] == {**untouched, "rewrite_reason": "no unifilter_score"}
    assert rows[4] == {**untouched, "rewrite_reason": "nothing to rewrite next to an image"}  # never rewritten blind
    assert rows[5] == {**untouched, "rewrite_reason": "the model kept the text"}
    # only the rows below the threshold, with an image, were sent: the system prompt, the caption prompt, the image
    assert sorted(piece_text(r.prompt) for r in backend.requests) == ["ALREADY FINE", "a cat on a mat"]
    request = next(r for r in backend.requests if r.key == "0:0")
    assert request.system == SYSTEM and request.prompt == RewritePrompts().caption.format(text="a cat on a mat")
    assert request.images == [photos["clock"]]
    assert (request.max_tokens, request.must_finish) == (256, True)
    assert Rewriter.report(stat_counts(step)) == {
        "rewrite": {
            "rewritten": 1,
            "outcomes": {
                "above threshold": 2,
                "no unifilter_score": 1,
                "nothing to rewrite next to an image": 1,
                "rewritten": 1,
                "the model kept the text": 1,
            },
        }
    }


def test_gate_reads_any_score_column(photos: dict[str, bytes]) -> None:
    backend = ScriptedBackend(lambda r: upper(r.prompt))
    step = Rewriter(backend, threshold=0.3, score_column="clip_score")
    samples = captions(photos["clock"], [("low clip", 0.1), ("high clip", 0.9)], column="clip_score")
    samples.append(Sample.caption("2", ImageRef(data=photos["clock"]), "unifilter only", unifilter_score=0.0))
    cols = step.process(samples)
    assert cols["rewrite_reason"] == ["clip_score 0.100 < 0.3", "above threshold", "no clip_score"]
    assert [s.text for s in samples] == ["LOW CLIP", "high clip", "unifilter only"]
    assert len(backend.requests) == 1


def test_gate_through_an_openai_server(photos: dict[str, bytes]) -> None:
    with ScriptedChatServer(lambda body: upper(user_text(body))) as server:
        step = Rewriter(OpenAIBackend(server.url, "rewriter-vlm", concurrency=4), threshold=1.5, max_tokens=64)
        samples = captions(
            photos["colorwheel"],
            [("a low one", 0.2), ("a high one", 2.0), ("exactly at", 1.5), ("no score", None), ("another low", 1.49)],
        )
        cols = step.process(samples)
        bodies = [r.body for r in server.requests]
    assert [s.text for s in samples] == ["A LOW ONE", "a high one", "exactly at", "no score", "ANOTHER LOW"]
    assert cols["rewritten"] == [True, False, False, False, True]
    assert cols["rewrite_model"] == ["openai:rewriter-vlm", None, None, None, "openai:rewriter-vlm"]
    assert cols["original_text"] == ["a low one", None, None, None, "another low"]
    assert cols["rewrite_reason"] == [
        "unifilter_score 0.200 < 1.5",
        "above threshold",
        "above threshold",
        "no unifilter_score",
        "unifilter_score 1.490 < 1.5",
    ]
    assert len(bodies) == 2 and sorted(piece_text(user_text(b)) for b in bodies) == ["a low one", "another low"]
    for body in bodies:
        assert body["model"] == "rewriter-vlm" and body["max_tokens"] == 64
        assert body["messages"][0] == {"role": "system", "content": SYSTEM}
        content = body["messages"][1]["content"]
        assert [part["type"] for part in content] == ["image_url", "text"]
        assert content[0]["image_url"]["url"] == image_data_url(photos["colorwheel"])


def test_conversation_answers_rewritten_questions_kept(photos: dict[str, bytes]) -> None:
    backend = ScriptedBackend(lambda r: upper(r.prompt))
    step = Rewriter(backend, threshold=1.5)
    turns = [Turn("What animal is this?", "A cat."), Turn("What colour?", "Grey."), Turn("Sure?", "YES.")]
    low = Sample.conversation("c0", [ImageRef(data=photos["chelsea"])], list(turns), unifilter_score=0.3)
    high = Sample.conversation("c1", [ImageRef(data=photos["chelsea"])], list(turns), unifilter_score=3.0)
    rows = column_rows(step.process([low, high]))
    assert low.turns == [Turn("What animal is this?", "A CAT."), Turn("What colour?", "GREY."), Turn("Sure?", "YES.")]
    assert high.turns == turns
    assert json.loads(rows[0]["original_text"]) == {"0": "A cat.", "1": "Grey."}  # turn 2 came back unchanged
    assert rows[0]["rewritten"] and rows[0]["rewrite_reason"] == "unifilter_score 0.300 < 1.5"
    assert rows[1] == {
        "original_text": None,
        "rewritten": False,
        "rewrite_model": None,
        "rewrite_reason": "above threshold",
    }
    assert sorted(r.key for r in backend.requests) == ["0:0", "0:1", "0:2"]
    first = next(r for r in backend.requests if r.key == "0:0")
    assert first.prompt == RewritePrompts().answer.format(question="What animal is this?", text="A cat.")
    assert first.images == [photos["chelsea"]]


def test_conversation_through_dataset_map(photos: dict[str, bytes]) -> None:
    ds = datasets.Dataset.from_dict(
        {
            "images": [[{"bytes": photos["coins"], "path": "coins.png"}], [{"bytes": photos["moon"], "path": None}]],
            "texts": [
                [{"user": "How many coins?", "assistant": "Some coins."}, {"user": "Old?", "assistant": "yes"}],
                [{"user": "What is it?", "assistant": "The moon."}],
            ],
            "unifilter_score": [0.1, 9.0],
        }
    ).cast_column("images", datasets.List(datasets.Image(decode=False)))
    out = ds.map(Rewriter(ScriptedBackend(lambda r: upper(r.prompt)), threshold=1.5), batched=True)
    assert out["texts"] == [
        [{"user": "How many coins?", "assistant": "SOME COINS."}, {"user": "Old?", "assistant": "YES"}],
        [{"user": "What is it?", "assistant": "The moon."}],
    ]
    assert out["original_text"] == [json.dumps({"0": "Some coins.", "1": "yes"}), None]
    assert out["rewritten"] == [True, False]
    assert out["images"][0][0]["bytes"] == photos["coins"]
    assert out.features["images"] == datasets.List(datasets.Image(decode=False))


def test_interleaved_only_with_rewrite_interleaved(photos: dict[str, bytes]) -> None:
    def document() -> Sample:
        segments: list[str | int] = ["Far intro.", "Just before.", 0, "Just after.", "Far away."]
        return Sample.interleaved("d", [ImageRef(data=photos["rocket"])], segments, unifilter_score=0.1)

    backend = ScriptedBackend(lambda r: upper(r.prompt))
    doc = document()
    cols = Rewriter(backend, threshold=1.5).process([doc])
    assert cols["rewrite_reason"] == ["interleaved documents are not rewritten"] and cols["rewritten"] == [False]
    assert doc.segments == document().segments and backend.requests == []

    doc = document()
    cols = Rewriter(backend, threshold=1.5, rewrite_interleaved=True).process([doc])
    assert doc.segments == ["Far intro.", "JUST BEFORE.", 0, "JUST AFTER.", "Far away."]
    assert json.loads(cols["original_text"][0]) == {"1": "Just before.", "3": "Just after."}
    assert cols["rewritten"] == [True]
    assert sorted(r.key for r in backend.requests) == ["0:1", "0:3"]  # only the segments next to the image
    assert all(r.images == [photos["rocket"]] for r in backend.requests)
    assert backend.requests[0].prompt == RewritePrompts().paragraph.format(text=piece_text(backend.requests[0].prompt))

    step = Rewriter(backend, threshold=1.5, rewrite_interleaved=True)
    first = Sample.interleaved(
        "e", [ImageRef(data=photos["rocket"])], [0, "x", "Text far from it."], unifilter_score=0
    )
    text_only = Sample.interleaved("f", [], ["Only text.", "More text."], unifilter_score=0)
    cols = step.process([first, text_only])
    assert first.segments == [0, "X", "Text far from it."] and text_only.segments == ["Only text.", "More text."]
    assert cols["rewrite_reason"] == ["unifilter_score 0.000 < 1.5", "nothing to rewrite next to an image"]


# -- failures ---------------------------------------------------------------------------------------------------------
def test_failures_become_reasons(photos: dict[str, bytes]) -> None:
    def reply(body: dict[str, Any]) -> str | ScriptedReply:
        text = piece_text(user_text(body))
        return {
            "overloaded": ScriptedReply("overloaded", status=500),
            "malformed": ScriptedReply(body=b'{"choices": ['),
            "too long": ScriptedReply("A long rewrite that never finished", finish_reason="length"),
            "refused": "I'm sorry, I can't help with that.",
            "empty": "   ",
            "null": ScriptedReply(None),
            "bad request": ScriptedReply("no such model", status=400),
        }.get(text, text.upper())

    names = ["overloaded", "malformed", "too long", "refused", "empty", "null", "bad request", "fine"]
    with ScriptedChatServer(reply) as server:
        backend = OpenAIBackend(server.url, "m", retries=1, backoff=0.01, concurrency=8)
        samples = captions(photos["clock"], [(name, 0.5) for name in names])
        cols = Rewriter(backend, threshold=1.5).process(samples)
        sent = [piece_text(user_text(r.body)) for r in server.requests]
    reasons = dict(zip(names, cols["rewrite_reason"]))
    assert reasons["overloaded"] == "generation failed: HTTP 500: " + (
        '{"error": {"message": "overloaded", "type": "scripted_error", "code": 500}} (after 2 attempts)'
    )
    assert reasons["malformed"].startswith("generation failed: malformed response (")
    assert reasons["malformed"].endswith("(after 2 attempts)")
    assert reasons["too long"] == "generation failed: truncated at max_tokens=256"
    assert reasons["refused"] == "unusable reply: refusal: \"I'm sorry, I can't help with that.\""
    assert reasons["empty"] == "unusable reply: empty reply"
    assert reasons["null"] == "generation failed: no content in the reply (finish_reason='stop')"
    assert reasons["bad request"].startswith("generation failed: HTTP 400: ")
    assert reasons["fine"] == "unifilter_score 0.500 < 1.5"
    assert [s.text for s in samples] == [*names[:-1], "FINE"]
    assert cols["rewritten"] == [False] * 7 + [True]
    assert cols["original_text"] == [None] * 7 + ["fine"]
    assert cols["rewrite_model"] == [None] * 7 + ["openai:m"]
    assert sent.count("overloaded") == 2 and sent.count("malformed") == 2  # retried once
    assert sent.count("bad request") == 1 and sent.count("too long") == 1  # not retried


def test_a_reply_cut_at_max_tokens_is_not_used(photos: dict[str, bytes]) -> None:
    with ScriptedChatServer(lambda body: "a rewrite of exactly seven words here") as server:
        step = Rewriter(OpenAIBackend(server.url, "m"), threshold=1.5, max_tokens=4)
        samples = captions(photos["clock"], [("short", 0.1)])
        cols = step.process(samples)
    assert cols["rewrite_reason"] == ["generation failed: truncated at max_tokens=4"]
    assert samples[0].text == "short" and cols["rewritten"] == [False]


def test_one_failed_turn_keeps_the_whole_conversation(photos: dict[str, bytes]) -> None:
    def reply(request: ChatRequest) -> Any:
        text = piece_text(request.prompt)
        return (None, "HTTP 503: busy") if text == "Fails." else text.upper()

    turns = [Turn("Q1?", "Works."), Turn("Q2?", "Fails.")]
    sample = Sample.conversation("c", [ImageRef(data=photos["clock"])], list(turns), unifilter_score=0.0)
    cols = Rewriter(ScriptedBackend(reply), threshold=1.0).process([sample])
    assert cols["rewrite_reason"] == ["generation failed: HTTP 503: busy"]
    assert sample.turns == turns and cols["original_text"] == [None] and cols["rewritten"] == [False]


# -- adaptive mode ----------------------------------------------------------------------------------------------------
def test_adaptive_keeps_only_rewrites_that_score_higher(photos: dict[str, bytes]) -> None:
    # "wxyz" has the length of "abcd": the same score, not a higher one
    rewrites = {"a cat": "a small grey cat on a red sofa", "a dog in the park": "dog", "abcd": "wxyz"}
    backend = ScriptedBackend(lambda r: rewrites.get(piece_text(r.prompt), piece_text(r.prompt)))
    rescorer = LengthScorer()
    step = Rewriter(backend, threshold=1.5, rescorer=rescorer)
    assert step.output_features()["rewrite_score"] == datasets.Value("float64")
    samples = captions(photos["clock"], [("a cat", 0.5), ("a dog in the park", 1.0), ("abcd", 0.4), ("high", 2.0)])
    rows = column_rows(step.process(samples))
    assert [s.text for s in samples] == ["a small grey cat on a red sofa", "a dog in the park", "abcd", "high"]
    assert rows[0] == {
        "original_text": "a cat",
        "rewritten": True,
        "rewrite_model": "scripted:vlm",
        "rewrite_reason": "unifilter_score 0.500 < 1.5",
        "rewrite_score": 3.0,
    }
    assert rows[1] == {
        "original_text": None,
        "rewritten": False,
        "rewrite_model": None,
        "rewrite_reason": "adaptive: unifilter_score 1.000 -> 0.300, kept the original",
        "rewrite_score": 0.3,
    }
    assert rows[2]["rewrite_reason"] == "adaptive: unifilter_score 0.400 -> 0.400, kept the original"
    assert rows[2]["rewritten"] is False and rows[2]["original_text"] is None
    assert rows[3] == {
        "original_text": None,
        "rewritten": False,
        "rewrite_model": None,
        "rewrite_reason": "above threshold",
        "rewrite_score": None,
    }
    # the rescorer saw the rewrites only: the originals' scores came from the score column
    assert sorted(rescorer.seen) == sorted(["a small grey cat on a red sofa", "dog", "wxyz"])
    assert stat_counts(step)["rewrite/adaptive"] == 2


def test_adaptive_rescores_the_originals_in_its_own_column(photos: dict[str, bytes]) -> None:
    rescorer = LengthScorer("length_score")
    backend = ScriptedBackend(lambda r: {"tiny": "a longer caption"}.get(piece_text(r.prompt), "x"))
    step = Rewriter(backend, threshold=1.5, rescorer=rescorer, rescore_column="length_score")
    samples = captions(photos["clock"], [("tiny", 0.1), ("a long original caption", 0.1)])
    cols = step.process(samples)
    assert [s.text for s in samples] == ["a longer caption", "a long original caption"]
    assert cols["rewrite_score"] == [1.6, 0.1]
    assert cols["rewrite_reason"] == [
        "unifilter_score 0.100 < 1.5",
        "adaptive: length_score 2.300 -> 0.100, kept the original",
    ]


# -- AITQE mode -------------------------------------------------------------------------------------------------------
def test_aitqe_mode(photos: dict[str, bytes]) -> None:
    outputs = {
        "Some random text": README_OUTPUT[: README_OUTPUT.index("<Overall>") + len("<Overall")] + "}",
        "A tabby cat on a sofa.": '{"Overall Score": "4<Overall}',
        "noise": "I am not sure.",
    }

    def reply(request: ChatRequest) -> str:
        caption = request.prompt.split("Evaluate the caption: ")[1].split("\nif score is low")[0]
        return outputs[caption]

    backend = ScriptedBackend(reply, name="aitqe:HymanH/AITQE")
    step = Rewriter(backend)  # no threshold: the model decides
    assert step.aitqe and set(step.output_features()) == {
        "original_text",
        "rewritten",
        "rewrite_model",
        "rewrite_reason",
        "aitqe_score",
    }
    samples = captions(
        photos["chelsea"], [("Some random text", None), ("A tabby cat on a sofa.", None), ("noise", 1.0)]
    )
    samples.append(Sample.conversation("c", [ImageRef(data=photos["chelsea"])], [Turn("Q?", "A.")]))
    rows = column_rows(step.process(samples))
    assert samples[0].text == README_RECAPTION and samples[1].text == "A tabby cat on a sofa."
    assert rows[0] == {
        "original_text": "Some random text",
        "rewritten": True,
        "rewrite_model": "aitqe:HymanH/AITQE",
        "rewrite_reason": "AITQE asked for a recaption (overall 2)",
        "aitqe_score": 2.0,
    }
    assert rows[1] == {
        "original_text": None,
        "rewritten": False,
        "rewrite_model": None,
        "rewrite_reason": "AITQE kept the caption",
        "aitqe_score": 4.0,
    }
    assert rows[2]["rewrite_reason"] == "unreadable AITQE output: 'I am not sure.'" and rows[2]["aitqe_score"] is None
    assert rows[3]["rewrite_reason"] == "AITQE rewrites captions only" and rows[3]["rewritten"] is False
    assert len(backend.requests) == 3
    request = next(r for r in backend.requests if r.key == "0:0")
    assert request.prompt == aitqe_prompt("Some random text") and request.system == ""
    assert request.images == [photos["chelsea"]]
    assert (request.max_tokens, request.must_finish) == (None, False)


def test_aitqe_mode_with_a_threshold(photos: dict[str, bytes]) -> None:
    backend = ScriptedBackend(lambda r: '{"Recaption": "A better caption.", "Overall Score": "1"}', name="aitqe:x")
    step = Rewriter(backend, threshold=1.0)
    samples = captions(photos["clock"], [("low", 0.5), ("high", 1.5)])
    cols = step.process(samples)
    assert [s.text for s in samples] == ["A better caption.", "high"]
    assert cols["rewrite_reason"] == ["unifilter_score 0.500 < 1.0 (overall 1)", "above threshold"]
    assert cols["aitqe_score"] == [1.0, None] and len(backend.requests) == 1


def test_without_threshold_a_plain_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="give a threshold"):
        Rewriter(ScriptedBackend(lambda r: ""))


# -- the two surfaces -------------------------------------------------------------------------------------------------
CAPTIONS = ["a photo of a clock", "a colour wheel", "ALREADY CAPITALS", "no score", "a rocket", "coins on a table"]
SCORES = [0.5, 2.5, 1.0, None, 0.2, 1.5]


@pytest.fixture
def caption_parquet(photos: dict[str, bytes], tmp_path: Path) -> Path:
    names = ["clock", "colorwheel", "coins", "moon", "rocket", "coins"]
    ds = datasets.Dataset.from_dict(
        {
            "image": [{"bytes": photos[n], "path": f"{n}.jpg"} for n in names],
            "caption": CAPTIONS,
            "unifilter_score": SCORES,
            "uid": [f"row{i}" for i in range(len(names))],
        }
    ).cast_column("image", datasets.Image(decode=False))
    folder = tmp_path / "source"
    folder.mkdir()
    ds.to_parquet(str(folder / "data.parquet"))
    return folder


EXPECTED_CAPTIONS = [
    "A PHOTO OF A CLOCK",
    "a colour wheel",
    "ALREADY CAPITALS",
    "no score",
    "A ROCKET",
    "coins on a table",
]
EXPECTED_REASONS = [
    "unifilter_score 0.500 < 1.5",
    "above threshold",
    "the model kept the text",
    "no unifilter_score",
    "unifilter_score 0.200 < 1.5",
    "above threshold",
]


def test_dataset_map_and_run_steps_agree(caption_parquet: Path, tmp_path: Path) -> None:
    provenance = ["caption", "original_text", "rewritten", "rewrite_model", "rewrite_reason"]
    with ScriptedChatServer(lambda body: upper(user_text(body))) as server:

        def step() -> Rewriter:  # one per surface: a step's stats add up over its runs
            return Rewriter(OpenAIBackend(server.url, "vlm"), threshold=1.5, batch_size=4)

        source = datasets.load_dataset("parquet", data_dir=str(caption_parquet), split="train")
        source = source.cast_column("image", datasets.Image(decode=False))
        mapped = source.map(step(), batched=True, batch_size=4)
        stats = run_steps(str(caption_parquet), tmp_path / "out", [step()])
        assert len(server.requests) == 2 * 3  # three rows below the threshold, on each surface
    kept = datasets.load_dataset("parquet", data_dir=str(tmp_path / "out" / "kept"), split="train")
    by_uid = {row["uid"]: row for row in kept}
    assert len(kept) == 6 and stats["rows_in"] == 6 == stats["kept"] + stats["removed"] and stats["removed"] == 0
    for i, row in enumerate(mapped):
        assert {k: row[k] for k in provenance} == {k: by_uid[row["uid"]][k] for k in provenance}, i
    assert (
        mapped["caption"] == EXPECTED_CAPTIONS
        and [by_uid[f"row{i}"]["caption"] for i in range(6)] == EXPECTED_CAPTIONS
    )
    assert mapped["rewrite_reason"] == EXPECTED_REASONS
    assert mapped["original_text"] == ["a photo of a clock", None, None, None, "a rocket", None]
    assert mapped["rewrite_model"] == ["openai:vlm", None, None, None, "openai:vlm", None]
    assert mapped["unifilter_score"] == SCORES == kept["unifilter_score"]
    assert mapped.features["image"] == datasets.Image(decode=False)
    assert mapped.features["rewritten"] == datasets.Value("bool") == kept.features["rewritten"]
    assert kept.features["original_text"] == datasets.Value("string") and kept.features["caption"] == datasets.Value(
        "string"
    )
    assert isinstance(kept.features["image"], datasets.Image)
    assert kept.cast_column("image", datasets.Image(decode=False))[0]["image"]["bytes"] == source[0]["image"]["bytes"]
    assert stats["steps"][0]["rewrite"] == {
        "rewritten": 2,
        "outcomes": {"above threshold": 2, "no unifilter_score": 1, "rewritten": 2, "the model kept the text": 1},
    }


# -- in process -------------------------------------------------------------------------------------------------------
def test_with_a_tiny_llava_in_process(photos: dict[str, bytes], tmp_path: Path) -> None:
    from mmsieve.models.tiny import build_tiny_llava

    path = build_tiny_llava(tmp_path / "llava")
    backend = TransformersBackend(path, batch_size=4, max_new_tokens=8)
    step = Rewriter(backend, threshold=1.5, max_tokens=8)
    originals = {0: "a clock", 2: "another"}
    samples = captions(photos["clock"], [(originals[0], 0.5), ("a good one", 2.0), (originals[2], 0.1)])
    cols = step.process(samples)
    for i, original in originals.items():
        reason = cols["rewrite_reason"][i]
        if cols["rewritten"][i]:
            assert cols["rewrite_model"][i] == f"transformers:{path}" and reason.startswith("unifilter_score ")
            assert cols["original_text"][i] == original and samples[i].text not in ("", original)
        else:
            assert reason.startswith(("generation failed: ", "unusable reply: ", "the model kept the text")), reason
            assert samples[i].text == original and cols["rewrite_model"][i] is None
            assert cols["original_text"][i] is None
    assert cols["rewrite_reason"][1] == "above threshold" and samples[1].text == "a good one"


# -- the command ------------------------------------------------------------------------------------------------------
def test_rewrite_command(caption_parquet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    with ScriptedChatServer(lambda body: upper(user_text(body))) as server:
        argv = ["rewrite", "--input", str(caption_parquet), "--output", str(out), "--endpoint", server.url]
        assert main([*argv, "--model", "vlm", "--threshold", "1.5", "--max-tokens", "32"]) == 0
        assert all(r.body["max_tokens"] == 32 and r.body["temperature"] == 0.0 for r in server.requests)
    kept = datasets.load_dataset("parquet", data_dir=str(out / "kept"), split="train")
    assert kept["caption"] == EXPECTED_CAPTIONS and kept["rewrite_reason"] == EXPECTED_REASONS
    assert kept["rewritten"] == [True, False, False, False, True, False]
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["rows_in"], stats["kept"], stats["removed"]) == (6, 6, 0)
    assert stats["steps"][0]["parameters"] == {
        "model": "openai:vlm",
        "threshold": 1.5,
        "score_column": "unifilter_score",
        "adaptive": False,
        "aitqe": False,
        "rewrite_interleaved": False,
    }
    assert "rows in 6, kept 6" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "mmsieve rewrite: error: give --threshold (rows scoring below it are rewritten) or --aitqe"),
        (
            ["--threshold", "1", "--adaptive"],
            "mmsieve rewrite: error: --adaptive needs --score-model (the scorer that rescores each rewrite)",
        ),
    ],
)
def test_rewrite_command_bad_options_exit_2(
    caption_parquet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    argv = ["rewrite", "-i", str(caption_parquet), "-o", str(tmp_path / "o"), "--model", "m"]
    code = main([*argv, "--endpoint", "http://127.0.0.1:9", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == message
    assert not (tmp_path / "o").exists()
