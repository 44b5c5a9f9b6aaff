"""`Judge`: VLM/LLM-as-judge ratings, FineVision's four axes per conversation turn or MLM-Filter's four metrics.

`method="finevision"` rates every turn 1-5 on formatting, relevance, visual dependency and image-question
correspondence, and stores FineVision's columns: `{axis}_ratings` (one int per turn, None where the judge's answer
could not be read) and `{axis}_min` (the minimum over the turn ratings that were read). A caption is rated as the
answer to "Describe this image.". The three text axes go to `backend` (a text LLM is enough, as FineVision used
Qwen3-32B); the image axis goes to `vision_backend` (a VLM; default `backend`).

`method="mlm_filter"` scores captions 0-100 with MLM-Filter's exact prompts: `image_text_matching_score`,
`object_detail_fulfillment_score`, `caption_text_quality_score`, `semantic_understanding_score`.

Every row also gets `judge_model` and `judge_reason` (None, or what could not be rated and why). A judge answer
that cannot be parsed is a None rating with a reason, never an error.

Example:
    >>> from mmsieve.generation import OpenAIBackend
    >>> judge = Judge(OpenAIBackend("http://localhost:8000", "Qwen/Qwen2.5-VL-32B-Instruct", concurrency=128))
    >>> ds = ds.map(judge, batched=True, batch_size=512)  # doctest: +SKIP
    >>> ds.filter(lambda r: (r["relevance_min"] or 5) >= 3)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mmsieve.generation import ChatRequest, GenerationBackend
from mmsieve.judge.prompts import (
    CAPTION_QUESTION,
    FINEVISION_AXES,
    MLM_FILTER_METRICS,
    mlm_filter_prompt,
    parse_mlm_score,
    parse_rating,
)
from mmsieve.sample import Sample, Turn
from mmsieve.schemas import Schema
from mmsieve.steps import Columns, SampleScorer


Method = Literal["finevision", "mlm_filter"]
METHODS: tuple[Method, ...] = ("finevision", "mlm_filter")


@dataclass
class _Ask:
    """One question to a judge: which sample, which field, which turn."""

    sample: int
    field: str  # an axis or a metric
    turn: int


def judge_columns(method: Method) -> list[str]:
    """The score columns a judge method writes (besides `judge_model` and `judge_reason`).

    Example:
        >>> judge_columns("finevision")[:2]
        ['formatting_ratings', 'formatting_min']
    """
    if method == "finevision":
        return [f"{axis.name}_{suffix}" for axis in FINEVISION_AXES for suffix in ("ratings", "min")]
    return [f"{metric}_score" for metric in MLM_FILTER_METRICS]


class Judge(SampleScorer):
    """Rates samples with a judge model; drops nothing (pair it with `RatingFilter` to cut).

    Args:
        backend: the judge for text axes (and everything when `vision_backend` is None); any `mmsieve.generation`
            backend.
        vision_backend: the VLM for the image axis (FineVision) or for every MLM-Filter metric when given.
        method: `"finevision"` (1-5 per turn, four axes) or `"mlm_filter"` (0-100 per caption, four metrics).
        axes: the FineVision axes to rate (default all four); metrics for MLM-Filter (default all four).
        max_tokens: the judge's answer length; the rating is read from its start (8 for MLM-Filter keeps "100"
            whole, where MLM-Filter's own 2 new tokens would cut it to "10").
        batch_size: rows per batch; every question of a batch is sent at once (bounded by the backend's
            concurrency).

    Example:
        >>> from mmsieve.generation import TransformersBackend
        >>> judge = Judge(TransformersBackend("Qwen/Qwen2.5-VL-3B-Instruct"), method="mlm_filter")
        >>> judge.output_features()["image_text_matching_score"]
        Value('int64')
    """

    name = "⚖️ Judge"

    def __init__(
        self,
        backend: GenerationBackend,
        *,
        vision_backend: GenerationBackend | None = None,
        method: Method = "finevision",
        axes: tuple[str, ...] | None = None,
        max_tokens: int | None = None,
        batch_size: int = 64,
        schema: Schema | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, schema=schema)
        if method not in METHODS:
            raise ValueError(f"unknown judge method {method!r}: expected one of {METHODS}")
        known = [a.name for a in FINEVISION_AXES] if method == "finevision" else list(MLM_FILTER_METRICS)
        chosen = tuple(axes or known)
        if unknown := [a for a in chosen if a not in known]:
            raise ValueError(f"unknown {method} axes {unknown}: expected some of {known}")
        self.backend, self.vision_backend = backend, vision_backend
        self.method, self.axes = method, chosen
        self.max_tokens = max_tokens or (64 if method == "finevision" else 8)

    def output_features(self) -> dict[str, Any]:
        from datasets import List, Value

        features: dict[str, Any] = {}
        for name in self.axes:
            if self.method == "finevision":
                features[f"{name}_ratings"] = List(Value("int64"))
                features[f"{name}_min"] = Value("int64")
            else:
                features[f"{name}_score"] = Value("int64")
        return features | {"judge_model": Value("string"), "judge_reason": Value("string")}

    def parameters(self) -> dict[str, Any]:
        """The settings recorded in `stats.json` and the dataset card."""
        vision = self.vision_backend.name if self.vision_backend is not None else None
        return {"method": self.method, "axes": list(self.axes), "model": self.backend.name, "vision_model": vision}

    def _model_names(self) -> str:
        names = [self.backend.name]
        if self.vision_backend is not None and self.vision_backend.name != self.backend.name:
            names.append(self.vision_backend.name)
        return " + ".join(names)

    # -- questions ------------------------------------------------------------------------------------------------
    def _turns(self, sample: Sample) -> list[Turn] | None:
        if sample.kind == "conversation":
            return sample.turns
        if sample.kind == "caption" and sample.text:
            return [Turn(CAPTION_QUESTION, sample.text)]
        return None

    def _questions(self, i: int, sample: Sample) -> tuple[list[tuple[_Ask, ChatRequest, bool]], list[str]]:
        """The requests for one sample, each with whether it goes to the vision judge; and what cannot be asked."""
        images = [im.data for im in sample.present_images() if im.data is not None]
        asks: list[tuple[_Ask, ChatRequest, bool]] = []
        problems: list[str] = []
        if self.method == "mlm_filter":
            if sample.kind != "caption" or not sample.text:
                return [], ["MLM-Filter rates captions only"]
            if not images:
                return [], ["no image to rate against"]
            for metric in self.axes:
                prompt = mlm_filter_prompt(metric, sample.text)
                request = ChatRequest(f"{i}:{metric}:0", "", prompt, images[:1], max_tokens=self.max_tokens)
                asks.append((_Ask(i, metric, 0), request, True))
            return asks, problems
        turns = self._turns(sample)
        if turns is None:
            return [], ["the judge rates captions and conversations"]
        by_name = {axis.name: axis for axis in FINEVISION_AXES}
        for t, turn in enumerate(turns):
            for name in self.axes:
                axis = by_name[name]
                if axis.needs_image and not images:
                    problems.append(f"turn {t} {name}: no image")
                    continue
                prompt = axis.template.format(question=turn.user or "(none)", answer=turn.assistant)
                shown = images if axis.needs_image else []
                request = ChatRequest(f"{i}:{name}:{t}", "", prompt, shown, max_tokens=self.max_tokens)
                asks.append((_Ask(i, name, t), request, axis.needs_image))
        return asks, problems

    # -- the core -------------------------------------------------------------------------------------------------
    def compute(self, samples: list[Sample], prepared: Any = None) -> Columns:
        asks: dict[str, _Ask] = {}
        text_requests: list[ChatRequest] = []
        vision_requests: list[ChatRequest] = []
        problems: list[list[str]] = []
        n_turns = []
        for i, sample in enumerate(samples):
            found, why = self._questions(i, sample)
            problems.append(why)
            turns = self._turns(sample)
            n_turns.append(len(turns) if turns is not None and self.method == "finevision" else 1)
            for ask, request, vision in found:
                asks[request.key] = ask
                use_vision = vision and self.vision_backend is not None
                (vision_requests if use_vision else text_requests).append(request)
        values: dict[tuple[int, str], list[int | None]] = {
            (i, name): [None] * n_turns[i] for i in range(len(samples)) for name in self.axes
        }
        parse = parse_rating if self.method == "finevision" else parse_mlm_score
        replies = [(self.backend, text_requests), (self.vision_backend, vision_requests)]
        failed: dict[str, str] = {}  # request key -> problem (listed below in request order, not arrival order)
        for backend, requests in replies:
            if backend is None or not requests:
                continue
            for request, text, error in backend.generate(requests):
                ask = asks[request.key]
                where = f"turn {ask.turn} {ask.field}" if self.method == "finevision" else ask.field
                if error is not None:
                    failed[request.key] = f"{where}: {error}"
                    continue
                value = parse(text)
                if value is None:
                    failed[request.key] = f"{where}: unparseable reply {(text or '')[:60]!r}"
                values[(ask.sample, ask.field)][ask.turn] = value
        for key, ask in asks.items():
            if key in failed:
                problems[ask.sample].append(failed[key])
        return self._columns(len(samples), values, problems)

    def _columns(self, n: int, values: dict[tuple[int, str], list[int | None]], problems: list[list[str]]) -> Columns:
        cols: Columns = {name: [] for name in self.output_features()}
        for i in range(n):
            for name in self.axes:
                ratings = values[(i, name)]
                if self.method == "finevision":
                    read = [r for r in ratings if r is not None]
                    cols[f"{name}_ratings"].append(ratings)
                    cols[f"{name}_min"].append(min(read) if read else None)
                else:
                    cols[f"{name}_score"].append(ratings[0])
            cols["judge_model"].append(self._model_names())
            cols["judge_reason"].append("; ".join(sorted(set(problems[i]), key=problems[i].index)) or None)
            if problems[i]:
                self.stat_update("judge_problems")
        return cols


__all__ = ["METHODS", "Judge", "Method", "judge_columns"]
