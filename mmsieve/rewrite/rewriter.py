"""`Rewriter`: keep the image, fix the text, keep the original: quality-gated caption rewriting (AITQE-style).

Which rows are rewritten:
  - rows scoring below `threshold` on `score_column` (`unifilter_score` by default; any column an earlier step
    wrote), the rest are left untouched;
  - with an AITQE backend, rows the model itself marks for recaption (it writes a `Recaption` only for poor pairs);
    a `threshold` then narrows what is sent to it.

What is rewritten: a caption; each answer of a conversation (its question goes along as context); in interleaved
documents nothing, unless `rewrite_interleaved`, and then only the text segments next to an image. A row without
an image is never rewritten (the model would rewrite blind): `nothing to rewrite next to an image`.

Adaptive mode (`rescorer`): the rewrite is scored with the same scorer and kept only when its score went up;
otherwise the original text stays. Every row gets the provenance columns:

| column | meaning |
|---|---|
| `original_text` | the text before the rewrite (None when not rewritten); for conversations and documents a JSON object: turn or segment index -> original text |
| `rewritten` | True when the row's text was replaced |
| `rewrite_model` | the backend that wrote it (None when not rewritten) |
| `rewrite_reason` | why the row was, or was not, rewritten (`unifilter_score 0.812 < 1.5`, `above threshold`, `generation failed: ...`) |
| `rewrite_score` | adaptive mode: the rewrite's score |
| `aitqe_score` | AITQE mode: the model's `Overall Score` |

Example:
    >>> from mmsieve.generation import OpenAIBackend
    >>> step = Rewriter(OpenAIBackend("http://localhost:8000", "Qwen/Qwen2.5-VL-7B-Instruct"), threshold=1.5)
    >>> ds = ds.map(step, batched=True, batch_size=256)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mmsieve.generation import ChatRequest, GenerationBackend, reply_error
from mmsieve.rewrite.aitqe import aitqe_prompt, parse_aitqe
from mmsieve.rewrite.prompts import RewritePrompts, clean_reply
from mmsieve.sample import Sample, Turn
from mmsieve.schemas import Schema
from mmsieve.steps import Columns, SampleScorer, SampleStep


STAT_PREFIX = "rewrite/"


@dataclass
class _Piece:
    """One piece of text to rewrite: where it sits in its sample, its prompt and its images."""

    sample: int
    index: int  # caption: 0; conversation: the turn; interleaved: the segment
    text: str
    prompt: str
    images: list[bytes]


@dataclass
class _Outcome:
    """What happened to one sample."""

    reason: str
    new: dict[int, str] = field(default_factory=dict)  # piece index -> rewritten text
    failed: str | None = None
    aitqe_score: float | None = None


def _is_aitqe(backend: Any) -> bool:
    return str(getattr(backend, "name", "")).startswith("aitqe:")


class Rewriter(SampleScorer):
    """Rewrites the text of low-quality rows with a generation backend and records where every text came from.

    Args:
        backend: an `OpenAIBackend`, `TransformersBackend` or `AITQEBackend` (see `mmsieve.generation`).
        threshold: rewrite rows whose `score_column` is below this; None sends every row (AITQE decides alone).
        score_column: the column the gate reads; rows without it are left alone (`no <column>`).
        rescorer: adaptive mode: a scorer step (e.g. `UniFilterScorer`) that scores the rewrite; the rewrite is kept
            only when its score beats the original's (read from `score_column`, or scored when absent).
        rescore_column: the rescorer's output column (default `score_column`).
        rewrite_interleaved: also rewrite interleaved documents (the text segments next to an image only).
        prompts: the templates; default `RewritePrompts()` (a minimal fix).
        max_tokens: the longest rewrite; a reply cut at this length is not used.
        aitqe: use AITQE's own prompt and output format; default: when the backend is an `AITQEBackend`.
        batch_size: rows per batch; with a server backend every piece of a batch is in flight at once (up to the
            backend's concurrency), so large batches keep the server busy.

    Example:
        >>> from mmsieve.generation import TransformersBackend
        >>> step = Rewriter(TransformersBackend("Qwen/Qwen2.5-VL-3B-Instruct"), threshold=1.5)
        >>> step.output_features()["rewritten"]
        Value('bool')
    """

    name = "✍️ Rewrite"

    rewrites_content = True

    def __init__(
        self,
        backend: GenerationBackend,
        *,
        threshold: float | None = None,
        score_column: str = "unifilter_score",
        rescorer: SampleStep | None = None,
        rescore_column: str | None = None,
        rewrite_interleaved: bool = False,
        prompts: RewritePrompts | None = None,
        max_tokens: int = 256,
        aitqe: bool | None = None,
        batch_size: int = 64,
        schema: Schema | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, schema=schema)
        self.backend = backend
        self.aitqe = _is_aitqe(backend) if aitqe is None else aitqe
        if threshold is None and not self.aitqe:
            raise ValueError("give a threshold (rows scoring below it are rewritten) or use an AITQE backend")
        self.threshold, self.score_column = threshold, score_column
        self.rescorer, self.rescore_column = rescorer, rescore_column or score_column
        self.rewrite_interleaved = rewrite_interleaved
        self.prompts = prompts or RewritePrompts()
        self.max_tokens = max_tokens

    def output_features(self) -> dict[str, Any]:
        from datasets import Value

        features = {
            "original_text": Value("string"),
            "rewritten": Value("bool"),
            "rewrite_model": Value("string"),
            "rewrite_reason": Value("string"),
        }
        if self.rescorer is not None:
            features["rewrite_score"] = Value("float64")
        if self.aitqe:
            features["aitqe_score"] = Value("float64")
        return features

    def parameters(self) -> dict[str, Any]:
        """The settings recorded in `stats.json` and the dataset card."""
        return {
            "model": self.backend.name,
            "threshold": self.threshold,
            "score_column": self.score_column,
            "adaptive": self.rescorer is not None,
            "aitqe": self.aitqe,
            "rewrite_interleaved": self.rewrite_interleaved,
        }

    @staticmethod
    def report(counts: dict[str, float]) -> dict[str, Any]:
        """How many rows were rewritten, and why the others were not (for `stats.json`).

        Example:
            >>> Rewriter.report({"rewrite/rewritten": 3.0, "rewrite/above threshold": 5.0})
            {'rewrite': {'rewritten': 3, 'outcomes': {'above threshold': 5, 'rewritten': 3}}}
        """
        outcomes = {k[len(STAT_PREFIX) :]: int(v) for k, v in counts.items() if k.startswith(STAT_PREFIX)}
        ranked = dict(sorted(outcomes.items(), key=lambda kv: (-kv[1], kv[0])))
        return {"rewrite": {"rewritten": outcomes.get("rewritten", 0), "outcomes": ranked}}

    # -- which pieces ---------------------------------------------------------------------------------------------
    def _gate(self, sample: Sample) -> str | None:
        """None when the sample goes to the model, else why it does not."""
        if sample.kind == "interleaved" and not self.rewrite_interleaved:
            return "interleaved documents are not rewritten"
        if self.aitqe and sample.kind != "caption":
            return "AITQE rewrites captions only"
        if self.threshold is None:
            return None
        score = sample.meta.get(self.score_column)
        if score is None:
            return f"no {self.score_column}"
        if score >= self.threshold:
            return "above threshold"
        return None

    def _pieces(self, position: int, sample: Sample) -> list[_Piece]:
        images = [im.data for im in sample.present_images() if im.data is not None]
        if sample.kind != "interleaved" and not images:
            return []  # no image to ground the rewrite in: the model would rewrite blind
        if sample.kind == "caption":
            if not sample.text:
                return []
            prompt = aitqe_prompt(sample.text) if self.aitqe else self.prompts.caption.format(text=sample.text)
            return [_Piece(position, 0, sample.text, prompt, images[:1])]
        if sample.kind == "conversation":
            return [
                _Piece(position, k, t.assistant, self.prompts.answer.format(question=t.user, text=t.assistant), images)
                for k, t in enumerate(sample.turns)
                if t.assistant.strip()
            ]
        pieces = []
        segments = sample.segments
        for k, seg in enumerate(segments):
            if not isinstance(seg, str) or not seg.strip():
                continue
            near = segments[max(0, k - 1) : k + 2]  # the segment and its two neighbours
            refs = [sample.images[s] for s in near if isinstance(s, int) and 0 <= s < len(sample.images)]
            data = [ref.data for ref in refs if ref is not None and ref.data is not None]
            if data:
                pieces.append(_Piece(position, k, seg, self.prompts.paragraph.format(text=seg), data))
        return pieces

    # -- the core -------------------------------------------------------------------------------------------------
    def compute(self, samples: list[Sample], prepared: Any = None) -> Columns:
        outcomes: list[_Outcome] = []
        pieces: dict[str, _Piece] = {}
        for i, sample in enumerate(samples):
            skip = self._gate(sample)
            found = [] if skip else self._pieces(i, sample)
            if not skip and not found:
                skip = "nothing to rewrite next to an image"
            outcomes.append(_Outcome(skip or ""))
            for piece in found:
                pieces[f"{i}:{piece.index}"] = piece
        requests = [
            ChatRequest(
                key,
                "" if self.aitqe else self.prompts.system,
                p.prompt,
                p.images,
                max_tokens=None if self.aitqe else self.max_tokens,
                must_finish=not self.aitqe,
            )
            for key, p in pieces.items()
        ]
        for request, text, error in self.backend.generate(requests) if requests else ():
            piece = pieces[request.key]
            self._take(outcomes[piece.sample], piece, text, error)
        rescored = self._adapt(samples, outcomes) if self.rescorer is not None else [None] * len(samples)
        return self._columns(samples, outcomes, rescored)

    def _take(self, outcome: _Outcome, piece: _Piece, text: str | None, error: str | None) -> None:
        if error is not None:
            outcome.failed = outcome.failed or f"generation failed: {error}"
            return
        if self.aitqe:
            parsed = parse_aitqe(text)
            outcome.aitqe_score = parsed.overall_score
            if not parsed.parsed:
                outcome.failed = f"unreadable AITQE output: {(text or '')[:80]!r}"
            elif not parsed.wants_rewrite:
                outcome.reason = "AITQE kept the caption"
            else:
                outcome.new[piece.index] = clean_reply(parsed.recaption or "")
            return
        if (problem := reply_error(text)) is not None:
            outcome.failed = outcome.failed or f"unusable reply: {problem}"
            return
        new = clean_reply(text or "")
        if new and new != piece.text.strip():
            outcome.new[piece.index] = new

    def _adapt(self, samples: list[Sample], outcomes: list[_Outcome]) -> list[float | None]:
        """Score the rewrites (and originals without a score); drop each rewrite that did not raise the score."""
        assert self.rescorer is not None
        todo = [i for i, o in enumerate(outcomes) if o.new and not o.failed]
        scores: list[float | None] = [None] * len(samples)
        if not todo:
            return scores
        rewritten = [_copy(samples[i]) for i in todo]
        for i, copy in zip(todo, rewritten, strict=True):
            _replace(copy, outcomes[i].new)
        new_scores = self.rescorer.process(rewritten)[self.rescore_column]
        old = [samples[i].meta.get(self.score_column) for i in todo]
        if self.rescore_column != self.score_column or any(s is None for s in old):
            old = self.rescorer.process([samples[i] for i in todo])[self.rescore_column]
        for i, before, after in zip(todo, old, new_scores, strict=True):
            scores[i] = after
            if after is None or before is None or after <= before:
                shown = "none" if after is None else f"{after:.3f}"
                was = "none" if before is None else f"{before:.3f}"
                outcomes[i].reason = f"adaptive: {self.rescore_column} {was} -> {shown}, kept the original"
                outcomes[i].new = {}
        return scores

    def _columns(self, samples: list[Sample], outcomes: list[_Outcome], rescored: list[float | None]) -> Columns:
        cols: Columns = {name: [] for name in self.output_features()}
        for sample, outcome, score in zip(samples, outcomes, rescored, strict=True):
            done = bool(outcome.new) and not outcome.failed
            original = _original_text(sample.kind, _replace(sample, outcome.new)) if done else None
            if done:
                reason = self._why(sample, outcome)
            else:
                reason = outcome.failed or outcome.reason or "the model kept the text"
            self.stat_update(STAT_PREFIX + ("rewritten" if done else reason.split(":")[0]))
            cols["original_text"].append(original)
            cols["rewritten"].append(done)
            cols["rewrite_model"].append(self.backend.name if done else None)
            cols["rewrite_reason"].append(reason)
            if "rewrite_score" in cols:
                cols["rewrite_score"].append(score)
            if "aitqe_score" in cols:
                cols["aitqe_score"].append(outcome.aitqe_score)
        return cols

    def _why(self, sample: Sample, outcome: _Outcome) -> str:
        if self.threshold is not None:
            why = f"{self.score_column} {sample.meta[self.score_column]:.3f} < {self.threshold}"
        else:
            why = "AITQE asked for a recaption"
        if self.aitqe and outcome.aitqe_score is not None:
            why += f" (overall {outcome.aitqe_score:g})"
        return why


def _copy(sample: Sample) -> Sample:
    return Sample(
        sample.id,
        sample.kind,
        list(sample.images),
        sample.text,
        list(sample.segments),
        list(sample.turns),
        list(sample.image_slots),
        dict(sample.meta),
    )


def _replace(sample: Sample, new: dict[int, str]) -> dict[int, str]:
    """Put the rewritten pieces into `sample` (in place); return the texts they replaced, by piece index."""
    originals: dict[int, str] = {}
    for index, text in sorted(new.items()):
        if sample.kind == "caption":
            originals[index], sample.text = sample.text or "", text
        elif sample.kind == "conversation":
            turn = sample.turns[index]
            originals[index], sample.turns[index] = turn.assistant, Turn(turn.user, text)
        else:
            originals[index], sample.segments[index] = str(sample.segments[index]), text
    return originals


def _original_text(kind: str, originals: dict[int, str]) -> str | None:
    """The `original_text` cell: the caption itself, or for other kinds a JSON object index -> original text."""
    if not originals:
        return None
    if kind == "caption":
        return originals[0]
    return json.dumps({str(k): v for k, v in originals.items()}, ensure_ascii=False)


__all__ = ["STAT_PREFIX", "Rewriter"]
