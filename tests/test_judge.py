"""`Judge` (FineVision axes per turn, MLM-Filter metrics), its parsers and prompts, `RatingFilter`, `mmsieve judge`.

The judges are loopback `ScriptedChatServer`s answering from a table, so every rating is known in advance; the
recorded request bodies show what each judge was sent.
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
from mmsieve.generation import ChatRequest, OpenAIBackend, image_data_url
from mmsieve.generation.loopback import ScriptedChatServer, ScriptedReply, user_text
from mmsieve.judge import FINEVISION_AXES, Judge, RatingFilter, mlm_filter_prompt, parse_mlm_score, parse_rating
from mmsieve.judge.prompts import MLM_FILTER_CRITERIA
from mmsieve.runner import run_steps
from mmsieve.sample import ImageRef, Sample, Turn


AXES = ("formatting", "relevance", "visual_dependency", "image_correspondence")
AXIS_OPENINGS = {
    "Rate the text formatting quality": "formatting",
    "Rate how well the answer responds": "relevance",
    "Rate how much answering": "visual_dependency",
    "Rate how well the image supports": "image_correspondence",
}
QUESTION = re.compile(r"^Question: (.*)$", re.MULTILINE)
INT_LIST = datasets.List(datasets.Value("int64"))
INT = datasets.Value("int64")

# What the judge answers, by (axis, question); anything else is rated 3.
REPLIES: dict[tuple[str, str], str | ScriptedReply] = {
    ("formatting", "What animal is this?"): "5\nClean and fluent.",
    ("formatting", "What colour is it?"): "4",
    ("formatting", "Where is it lying?"): "**3**\nSome stray markup.",
    ("relevance", "What animal is this?"): "Rating: 4/5 - it answers the question.",
    ("relevance", "What colour is it?"): "2\nPartly.",
    ("relevance", "Where is it lying?"): "I cannot tell from this.",
    ("visual_dependency", "What animal is this?"): "5",
    ("visual_dependency", "What colour is it?"): "5",
    ("visual_dependency", "Where is it lying?"): "Score: 1",
    ("image_correspondence", "What animal is this?"): "3",
    ("image_correspondence", "What colour is it?"): "4",
    ("image_correspondence", "Where is it lying?"): "4",
    ("formatting", "How many coins?"): "Rating: 2/5",
    ("relevance", "How many coins?"): "5",
    ("visual_dependency", "How many coins?"): "9",
    ("image_correspondence", "How many coins?"): ScriptedReply("busy", status=400),
}
CAT_TURNS = [
    Turn("What animal is this?", "A cat."),
    Turn("What colour is it?", "Grey and brown."),
    Turn("Where is it lying?", "On a sofa."),
]
COIN_TURNS = [Turn("How many coins?", "Ten.")]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


def axis_of(prompt: str) -> str:
    return next(axis for opening, axis in AXIS_OPENINGS.items() if prompt.startswith(opening))


def question_of(prompt: str) -> str:
    match = QUESTION.search(prompt)
    assert match is not None, prompt
    return match.group(1)


def finevision_reply(body: dict[str, Any]) -> str | ScriptedReply:
    prompt = user_text(body)
    return REPLIES.get((axis_of(prompt), question_of(prompt)), "3\nAcceptable.")


def has_image(body: dict[str, Any]) -> bool:
    return any(p.get("type") == "image_url" for m in body["messages"] for p in m["content"] if isinstance(p, dict))


class ScriptedBackend:
    """An in-process judge that records what it is asked."""

    def __init__(self, reply: Callable[[ChatRequest], str], name: str = "scripted:judge") -> None:
        self.reply, self.name = reply, name
        self.requests: list[ChatRequest] = []

    def generate(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[ChatRequest, str | None, str | None]]:
        for request in requests:
            self.requests.append(request)
            yield request, self.reply(request), None


def conversations(photos: dict[str, bytes]) -> list[Sample]:
    return [
        Sample.conversation("cat", [ImageRef(data=photos["chelsea"])], list(CAT_TURNS)),
        Sample.conversation("coins", [ImageRef(data=photos["coins"])], list(COIN_TURNS)),
    ]


def finevision_dataset(photos: dict[str, bytes]) -> datasets.Dataset:
    def texts(turns: list[Turn]) -> list[dict[str, str]]:
        return [{"user": t.user, "assistant": t.assistant} for t in turns]

    return datasets.Dataset.from_dict(
        {
            "images": [[{"bytes": photos["chelsea"], "path": "cat.jpg"}], [{"bytes": photos["coins"], "path": None}]],
            "texts": [texts(CAT_TURNS), texts(COIN_TURNS)],
            "source": ["a", "b"],
        }
    ).cast_column("images", datasets.List(datasets.Image(decode=False)))


EXPECTED_RATINGS = {
    "formatting_ratings": [[5, 4, 3], [2]],
    "formatting_min": [3, 2],
    "relevance_ratings": [[4, 2, None], [5]],
    "relevance_min": [2, 5],
    "visual_dependency_ratings": [[5, 5, 1], [None]],
    "visual_dependency_min": [1, None],
    "image_correspondence_ratings": [[3, 4, 4], [None]],
    "image_correspondence_min": [3, None],
}
EXPECTED_REASONS = [
    "turn 2 relevance: unparseable reply 'I cannot tell from this.'",
    "turn 0 visual_dependency: unparseable reply '9'; turn 0 image_correspondence: HTTP 400: "
    '{"error": {"message": "busy", "type": "scripted_error", "code": 400}}',
]


# -- parsers and prompts ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "rating"),
    [
        ("4", 4),
        ("4\nThe answer is well formatted.", 4),
        ("Rating: 4/5", 4),
        ("Rating: 3 - fine", 3),
        ("**5**\nPerfect.", 5),
        ("**Rating:** 2", 2),
        ("Rating: **4**", 4),
        ("Score = 1", 1),
        ("rating is 3", 3),
        ("The answer is great. Rating: 5", 5),
        ("I would rate this a 4 out of 5.", 4),
        ("5/5", 5),
        (" 4.", 4),
        ("## 2", 2),
        ("1\n5", 1),
        ("6", None),  # out of range
        ("0", None),
        ("Rating: 7, though 3 would be fair", None),  # a labelled number out of range: no guessing
        ("100", None),
        ("2024", None),  # digits of a larger number are not a rating
        ("12345", None),
        ("I cannot tell.", None),
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_parse_rating(text: str | None, rating: int | None) -> None:
    assert parse_rating(text) == rating


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("87\nThe caption matches.", 87),
        ("100", 100),  # whole, not "10"
        ("100\nA perfect match.", 100),
        ("0", 0),
        ("66,", 66),
        ("66;\nThe caption...", 66),
        ("**72**", 72),
        ("Score: **72**", 72),
        ("Score: 85/100", 85),
        ("The score is 45.", 45),
        ("101", None),
        ("Score: 101", None),
        ("1000", None),  # not read as 100
        ("12345", None),
        ("no number here", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_mlm_score(text: str | None, score: int | None) -> None:
    assert parse_mlm_score(text) == score


def test_mlm_filter_prompt_is_the_v2_template() -> None:
    assert mlm_filter_prompt("image_text_matching", "A dog on a beach.") == (
        "Text Caption: A dog on a beach.\n\n"
        "Please evaluate if the provided text caption accurately represents the main features and objects of the "
        "image. The caption doesn't need to detail every aspect of the image, but it should capture its primary "
        "theme. Rate the overall quality of the text caption's match to the image on a scale of 1-100, considering "
        "the criteria mentioned. A higher score indicates higher level of image text matching. Ensure that your "
        "scoring is nuanced and uses the entire range from 0 to 100, reflecting the subtle differences. The score "
        "should be given as an integer, with each number between 0 and 100 considered as a potential score, "
        "avoiding the tendency to round to multiples of 5 or 10. Please first output a single line containing the "
        "value indicating the scores. In the subsequent line, please provide a comprehensive explanation of your "
        "evaluation, avoiding any potential bias."
    )
    assert MLM_FILTER_CRITERIA["caption_text_quality"] == (
        "Please evaluate the text caption based on the following criteria: Grammatical Correctness, Diversity of "
        "Vocabulary (e.g., the range and uniqueness of words used), Fluency (e.g., smoothness and natural flow of "
        "sentences), Readability, Length, and Structure. Assign an overall quality score on a scale of 1-100."
    )
    assert MLM_FILTER_CRITERIA["object_detail_fulfillment"] == (
        "Please evaluate the text caption to determine if it provides detailed descriptions of objects that align "
        "with the image. Specifically, assess if the caption sufficiently describes the color, size, position, "
        "shape, material, etc., of the objects. Afterward, rate the caption's overall accuracy in capturing object "
        "details from the image on a scale of 1-100, based on the criteria provided."
    )
    semantic = mlm_filter_prompt("semantic_understanding", "x")
    assert semantic.startswith(
        "Text Caption: x\n\nEvaluate the given text caption in relation to its corresponding image. Your goal is to "
        "determine if the text caption provides additional semantic information that isn't readily apparent just "
        'from the image itself.\n\nFor example:\n\n1. If the image mentions "a man" but the caption elaborates'
    )
    assert (
        "Rate the text caption's semantic depth on a scale from 1 to 100. A higher score indicates higher level "
        in (semantic)
    )
    assert "of semantic understanding. Ensure" in semantic


# -- FineVision -------------------------------------------------------------------------------------------------------
def test_finevision_over_conversations(photos: dict[str, bytes]) -> None:
    with ScriptedChatServer(finevision_reply) as server:
        judge = Judge(OpenAIBackend(server.url, "judge-32b", concurrency=8))
        cols = judge.process(conversations(photos))
        bodies = [r.body for r in server.requests]
    for name, values in EXPECTED_RATINGS.items():
        assert cols[name] == values, name
    assert cols["judge_reason"] == EXPECTED_REASONS
    assert cols["judge_model"] == ["openai:judge-32b"] * 2
    assert len(bodies) == 4 * (3 + 1)  # every axis of every turn
    for body in bodies:
        prompt = user_text(body)
        axis = axis_of(prompt)
        assert has_image(body) == (axis == "image_correspondence"), axis
        assert body["max_tokens"] == 64 and [m["role"] for m in body["messages"]] == ["user"]
    relevance = next(b for b in bodies if axis_of(user_text(b)) == "relevance" and "What colour" in user_text(b))
    assert user_text(relevance) == FINEVISION_AXES[1].template.format(
        question="What colour is it?", answer="Grey and brown."
    )
    image_axis = next(b for b in bodies if axis_of(user_text(b)) == "image_correspondence" and "coins" in user_text(b))
    assert image_axis["messages"][0]["content"][0]["image_url"]["url"] == image_data_url(photos["coins"])
    assert "Ten." not in user_text(image_axis)  # the image axis reads the question only


def test_judge_reason_lists_problems_in_turn_order(photos: dict[str, bytes]) -> None:
    """Problems are listed by turn and axis, whatever order the replies arrive in."""

    def slow_first_turns(body: dict[str, Any]) -> ScriptedReply:
        delay = 0.3 if question_of(user_text(body)) == "Q0?" else 0.0
        return ScriptedReply("no idea", delay=delay)

    turns = [Turn("Q0?", "A0."), Turn("Q1?", "A1.")]
    with ScriptedChatServer(slow_first_turns) as server:
        judge = Judge(OpenAIBackend(server.url, "j", concurrency=8), axes=("formatting", "relevance"))
        cols = judge.process([Sample.conversation("c", [ImageRef(data=photos["clock"])], turns)])
    assert cols["judge_reason"] == [
        "turn 0 formatting: unparseable reply 'no idea'; turn 0 relevance: unparseable reply 'no idea'; "
        "turn 1 formatting: unparseable reply 'no idea'; turn 1 relevance: unparseable reply 'no idea'"
    ]
    assert cols["formatting_ratings"] == [[None, None]] and cols["relevance_min"] == [None]
    assert set(cols) == {
        "formatting_ratings",
        "formatting_min",
        "relevance_ratings",
        "relevance_min",
        "judge_model",
        "judge_reason",
    }


def test_a_vision_judge_gets_only_the_image_axis(photos: dict[str, bytes]) -> None:
    with ScriptedChatServer(finevision_reply) as text_server, ScriptedChatServer(finevision_reply) as vision_server:
        judge = Judge(
            OpenAIBackend(text_server.url, "Qwen3-32B"),
            vision_backend=OpenAIBackend(vision_server.url, "Qwen2.5-VL-32B"),
        )
        cols = judge.process(conversations(photos))
        text_bodies = [r.body for r in text_server.requests]
        vision_bodies = [r.body for r in vision_server.requests]
    assert sorted(axis_of(user_text(b)) for b in vision_bodies) == ["image_correspondence"] * 4
    assert all(has_image(b) and b["model"] == "Qwen2.5-VL-32B" for b in vision_bodies)
    assert sorted({axis_of(user_text(b)) for b in text_bodies}) == ["formatting", "relevance", "visual_dependency"]
    assert len(text_bodies) == 12 and not any(has_image(b) for b in text_bodies)
    for name, values in EXPECTED_RATINGS.items():
        assert cols[name] == values, name
    assert cols["judge_model"] == ["openai:Qwen3-32B + openai:Qwen2.5-VL-32B"] * 2
    assert judge.parameters() == {
        "method": "finevision",
        "axes": list(AXES),
        "model": "openai:Qwen3-32B",
        "vision_model": "openai:Qwen2.5-VL-32B",
    }


def test_captions_are_rated_as_one_turn(photos: dict[str, bytes]) -> None:
    backend = ScriptedBackend(lambda r: {"formatting": "5", "relevance": "4"}.get(axis_of(r.prompt), "2"))
    samples = [
        Sample.caption("0", ImageRef(data=photos["rocket"]), "A rocket on its launch pad."),
        Sample.caption("1", None, "A caption without its image."),
        Sample.interleaved("2", [ImageRef(data=photos["rocket"])], ["Text.", 0]),
        Sample.conversation("3", [ImageRef(data=photos["rocket"])], []),
    ]
    cols = Judge(backend).process(samples)
    assert cols["formatting_ratings"] == [[5], [5], [None], []]
    assert cols["relevance_min"] == [4, 4, None, None]
    assert cols["visual_dependency_ratings"] == [[2], [2], [None], []]
    assert cols["image_correspondence_ratings"] == [[2], [None], [None], []]
    assert cols["image_correspondence_min"] == [2, None, None, None]
    assert cols["judge_reason"] == [
        None,
        "turn 0 image_correspondence: no image",
        "the judge rates captions and conversations",
        None,
    ]
    first = [r for r in backend.requests if r.key.startswith("0:")]
    assert len(first) == 4 and len(backend.requests) == 4 + 3
    formatting = next(r for r in first if r.key == "0:formatting:0")
    assert formatting.prompt == FINEVISION_AXES[0].template.format(
        question="Describe this image.", answer="A rocket on its launch pad."
    )
    assert formatting.images == [] and formatting.system == "" and formatting.max_tokens == 64
    assert next(r for r in first if r.key == "0:image_correspondence:0").images == [photos["rocket"]]


def test_unknown_method_or_axis_is_refused() -> None:
    backend = ScriptedBackend(lambda r: "3")
    with pytest.raises(ValueError, match="unknown judge method"):
        Judge(backend, method="llm_as_judge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown finevision axes \['clarity'\]"):
        Judge(backend, axes=("relevance", "clarity"))
    with pytest.raises(ValueError, match="unknown mlm_filter axes"):
        Judge(backend, method="mlm_filter", axes=("relevance",))


# -- MLM-Filter -------------------------------------------------------------------------------------------------------
def test_mlm_filter_on_captions(photos: dict[str, bytes]) -> None:
    answers = {
        "image_text_matching": "87\nThe caption matches the main objects.",
        "object_detail_fulfillment": "100\nEvery detail.",
        "caption_text_quality": "66,",
        "semantic_understanding": "Score: 101",
    }

    def reply(body: dict[str, Any]) -> str:
        prompt = user_text(body)
        return next(answer for metric, answer in answers.items() if MLM_FILTER_CRITERIA[metric] in prompt)

    samples = [
        Sample.caption("0", ImageRef(data=photos["coffee"]), "A cup of coffee on a saucer."),
        Sample.conversation("1", [ImageRef(data=photos["coffee"])], [Turn("Q?", "A.")]),
        Sample.caption("2", None, "No image here."),
    ]
    with ScriptedChatServer(reply) as server:
        judge = Judge(OpenAIBackend(server.url, "mlm-filter-qwen2.5-1.5b"), method="mlm_filter")
        cols = judge.process(samples)
        bodies = [r.body for r in server.requests]
    assert cols == {
        "image_text_matching_score": [87, None, None],
        "object_detail_fulfillment_score": [100, None, None],
        "caption_text_quality_score": [66, None, None],
        "semantic_understanding_score": [None, None, None],
        "judge_model": ["openai:mlm-filter-qwen2.5-1.5b"] * 3,
        "judge_reason": [
            "semantic_understanding: unparseable reply 'Score: 101'",
            "MLM-Filter rates captions only",
            "no image to rate against",
        ],
    }
    assert sorted(user_text(b) for b in bodies) == sorted(
        mlm_filter_prompt(metric, "A cup of coffee on a saucer.") for metric in answers
    )
    for body in bodies:
        assert body["max_tokens"] == 8 and [m["role"] for m in body["messages"]] == ["user"]
        assert body["messages"][0]["content"][0]["image_url"]["url"] == image_data_url(photos["coffee"])
    assert judge.output_features()["image_text_matching_score"] == INT


# -- storage ----------------------------------------------------------------------------------------------------------
def assert_ratings(table: datasets.Dataset) -> None:
    for name, values in EXPECTED_RATINGS.items():
        assert table[name] == values, name
        assert table.features[name] == (INT_LIST if name.endswith("_ratings") else INT), name
    assert table["judge_reason"] == EXPECTED_REASONS
    assert table["source"] == ["a", "b"]


def test_ratings_round_trip_through_parquet(photos: dict[str, bytes], tmp_path: Path) -> None:
    ds = finevision_dataset(photos)
    (tmp_path / "source").mkdir()
    ds.to_parquet(str(tmp_path / "source" / "data.parquet"))
    with ScriptedChatServer(finevision_reply) as server:
        mapped = ds.map(Judge(OpenAIBackend(server.url, "j")), batched=True, batch_size=2)
        stats = run_steps(str(tmp_path / "source"), tmp_path / "out", [Judge(OpenAIBackend(server.url, "j"))])
        assert len(server.requests) == 2 * 16
    assert_ratings(mapped)
    mapped.to_parquet(str(tmp_path / "mapped.parquet"))
    assert_ratings(datasets.Dataset.from_parquet(str(tmp_path / "mapped.parquet")))
    kept = datasets.load_dataset("parquet", data_dir=str(tmp_path / "out" / "kept"), split="train")
    assert_ratings(kept)
    assert kept["texts"] == ds["texts"]
    assert (stats["rows_in"], stats["kept"], stats["removed"]) == (2, 2, 0)


# -- RatingFilter -----------------------------------------------------------------------------------------------------
def rated(photos: dict[str, bytes]) -> list[Sample]:
    values = [(3, 4), (2, 5), (None, 4), (5, 3), (1, 1)]
    return [
        Sample.conversation(
            str(i),
            [ImageRef(data=photos["clock"])],
            [Turn("Q?", "A.")],
            relevance_min=relevance,
            formatting_min=formatting,
        )
        for i, (relevance, formatting) in enumerate(values)
    ]


def test_rating_filter_on_rows_that_carry_ratings(photos: dict[str, bytes]) -> None:
    backend = ScriptedBackend(lambda r: "1")
    keep_missing = RatingFilter({"relevance": 3, "formatting": 4}, judge=Judge(backend))
    cols = keep_missing.process(rated(photos))
    assert cols["keep"] == [True, False, True, False, False]
    assert cols["mmsieve_reason"] == [None, "low_relevance_min", None, "low_formatting_min", "low_relevance_min"]
    assert cols["mmsieve_detail"] == [None, "relevance_min 2 < 3", None, "formatting_min 3 < 4", "relevance_min 1 < 3"]
    assert cols["relevance_min"] == [3, 2, None, 5, 1]  # carried over, not recomputed
    assert backend.requests == []

    drop_missing = RatingFilter({"relevance": 3, "formatting": 4}, missing="drop")
    cols = drop_missing.process(rated(photos))
    assert cols["keep"] == [True, False, False, False, False]
    assert cols["mmsieve_reason"][2] == "no_relevance_min" and cols["mmsieve_detail"][2] == "relevance_min is missing"
    assert set(cols) == {"keep", "mmsieve_reason", "mmsieve_detail"}

    mlm = RatingFilter({"image_text_matching": 66, "object_detail_fulfillment": 20})
    assert mlm.columns == {"image_text_matching_score": 66, "object_detail_fulfillment_score": 20}
    scored = [
        Sample.caption(str(i), None, "c", image_text_matching_score=itm, object_detail_fulfillment_score=odf)
        for i, (itm, odf) in enumerate([(66, 20), (65, 90), (90, 19)])
    ]
    assert mlm.process(scored)["mmsieve_reason"] == [
        None,
        "low_image_text_matching_score",
        "low_object_detail_fulfillment_score",
    ]


def test_rating_filter_with_a_judge(photos: dict[str, bytes], tmp_path: Path) -> None:
    ds = finevision_dataset(photos)
    with ScriptedChatServer(finevision_reply) as server:
        step = RatingFilter({"relevance": 3}, judge=Judge(OpenAIBackend(server.url, "j")))
        out = ds.map(step, batched=True)
        assert len(server.requests) == 16
        # the judged rows carry their ratings now: filtering them again asks nothing
        again = out.map(RatingFilter({"relevance": 3}, judge=Judge(OpenAIBackend(server.url, "j"))), batched=True)
        assert len(server.requests) == 16
    assert out["keep"] == [False, True] == again["keep"]
    assert out["mmsieve_reason"] == ["low_relevance_min", None] == again["mmsieve_reason"]
    assert out["mmsieve_detail"] == ["relevance_min 2 < 3", None]
    for name, values in EXPECTED_RATINGS.items():
        assert out[name] == values == again[name], name
    assert out.features["relevance_ratings"] == INT_LIST and out.features["keep"] == datasets.Value("bool")


# -- the command ------------------------------------------------------------------------------------------------------
def test_judge_command(photos: dict[str, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = finevision_dataset(photos)
    extra = finevision_dataset(photos).map(lambda r: {"source": "c" if r["source"] == "a" else "d"})
    (tmp_path / "in").mkdir()
    datasets.concatenate_datasets([rows, extra]).to_parquet(str(tmp_path / "in" / "data.parquet"))
    out = tmp_path / "out"
    with ScriptedChatServer(finevision_reply) as server:
        argv = ["judge", "-i", str(tmp_path / "in"), "-o", str(out), "--endpoint", server.url, "--model", "j"]
        assert main([*argv, "--min-rating", "relevance=3", "--min-rating", "formatting=2"]) == 0
        assert len(server.requests) == 2 * 16 and all(r.body["max_tokens"] == 64 for r in server.requests)
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["rows_in"], stats["kept"], stats["removed"]) == (4, 2, 2)
    assert stats["removed_by_reason"] == {"low_relevance_min": 2}
    assert stats["steps"][0]["parameters"]["min_ratings"] == {"relevance_min": 3.0, "formatting_min": 2.0}
    kept = datasets.load_dataset("parquet", data_dir=str(out / "kept"), split="train")
    removed = datasets.load_dataset("parquet", data_dir=str(out / "removed"), split="train")
    assert sorted(kept["source"]) == ["b", "d"] and sorted(removed["source"]) == ["a", "c"]
    assert kept["relevance_ratings"] == [[5], [5]] and kept.features["relevance_ratings"] == INT_LIST
    assert removed["mmsieve_reason"] == ["low_relevance_min"] * 2
    assert removed["relevance_ratings"] == [[4, 2, None]] * 2
    assert "rows in 4, kept 2, removed 2" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra",
    [["--min-rating", "x"], ["--min-rating", "relevance=high"], ["--min-rating", "=3"], ["--method", "gpt"]],
)
def test_judge_command_bad_arguments_exit_2(
    extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "judge",
        "-i",
        str(tmp_path),
        "-o",
        str(tmp_path / "o"),
        "--model",
        "j",
        "--endpoint",
        "http://127.0.0.1:9",
    ]
    with pytest.raises(SystemExit) as exc:
        main([*argv, *extra])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and "error" in err


def test_judge_command_unknown_axis_exits_2(
    photos: dict[str, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in").mkdir()
    finevision_dataset(photos).to_parquet(str(tmp_path / "in" / "data.parquet"))
    capsys.readouterr()  # the progress bars of the line above
    argv = ["judge", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--model", "j"]
    code = main([*argv, "--endpoint", "http://127.0.0.1:9", "--axes", "relevance,clarity"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == (
        "mmsieve judge: error: unknown finevision axes ['clarity']: expected some of "
        "['formatting', 'relevance', 'visual_dependency', 'image_correspondence']"
    )
    assert not (tmp_path / "o").exists()
