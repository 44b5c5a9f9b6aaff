"""`AITQEBackend`: the AITQE caption evaluator / rewriter (`HymanH/AITQE`) in process, batched with left padding.

Each request carries one image and, as `prompt`, the text AITQE reads after the image line
(`mmsieve.models.aitqe.evaluation_prompt(caption)`); the system prompt is ignored (AITQE has none). Generation is
greedy; the default mode stops at the stop string "<Overall>" and post-processes the reply as the official
inference.py does (`text.strip()[:-1] + "}"`), `output_all=True` generates the whole evaluation.

Example:
    >>> backend = AITQEBackend("HymanH/AITQE", batch_size=8)
    >>> backend.name
    'aitqe:HymanH/AITQE'
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

from mmsieve.generation.requests import ChatRequest, LoadsLazily, Reply


_Item = tuple[ChatRequest, Any, list[int], int]  # (request, decoded PIL image, prompt ids, generation limit)


class AITQEBackend(LoadsLazily):
    """The AITQE checkpoint as a `GenerationBackend`: one image + its evaluation prompt in, AITQE's reply out.

    Within one `generate` call requests are grouped by token limit, sorted by prompt length and generated in batches
    of `batch_size` (left padding gives the same greedy text as one at a time). A request with no image or several,
    an undecodable image, a batch the model rejects (retried request by request) or a `must_finish` reply cut at the
    token limit is an error reply of that request alone. The model loads on the first `generate` call.

    Args:
        model: a Hub id (`"HymanH/AITQE"`) or a local checkpoint folder.
        device: where the model runs; None picks one (`pick_device`).
        batch_size: requests per forward pass.
        max_new_tokens: the limit of a request whose `max_tokens` is None (the original's 384).
        output_all: generate the whole evaluation (inference.py `--output_all`) instead of stopping at "<Overall>".

    Example:
        >>> from mmsieve.models.aitqe import evaluation_prompt
        >>> request = ChatRequest("k", "", evaluation_prompt("a red bus"), [jpeg_bytes])  # doctest: +SKIP
        >>> [(r.key, text) for r, text, _ in AITQEBackend("HymanH/AITQE").generate([request])]  # doctest: +SKIP
        [('k', '{"Overall Score": "4<Overall}')]
    """

    _loaded = ("_model",)

    def __init__(
        self,
        model: str | Path,
        *,
        device: str | None = None,
        batch_size: int = 8,
        max_new_tokens: int = 384,
        output_all: bool = False,
    ) -> None:
        self.model_path, self.name = str(model), f"aitqe:{model}"
        self.device, self.batch_size, self.max_new_tokens = device, max(1, batch_size), max_new_tokens
        self.output_all = output_all
        self._model: Any = None

    def _load(self) -> None:
        from mmsieve.models.aitqe import load_aitqe

        self._model = load_aitqe(self.model_path, device=self.device)

    def generate(self, requests: Sequence[ChatRequest]) -> Iterator[Reply]:
        """Answer `requests` in batches, in any order; a request that fails yields an error reply, never raises.

        Example:
            >>> replies = list(AITQEBackend("path/to/aitqe").generate(requests))  # doctest: +SKIP
        """
        from mmsieve.images import decode_image

        if self._model is None:
            self._load()
        ready: list[_Item] = []
        for request in requests:
            if len(request.images) != 1:
                yield request, None, f"AITQE takes exactly one image per request, got {len(request.images)}"
                continue
            decoded = decode_image(request.images[0])
            if not decoded.ok:
                yield request, None, f"{decoded.reason}: {decoded.detail}"
                continue
            ids = self._model.prompt_ids(request.prompt)
            ready.append((request, decoded.image, ids, request.max_tokens or self.max_new_tokens))
        ready.sort(key=lambda item: (item[3], len(item[2])))
        for _, group in groupby(ready, key=lambda item: item[3]):
            items = list(group)
            for start in range(0, len(items), self.batch_size):
                yield from self._batch(items[start : start + self.batch_size])

    def _batch(self, batch: list[_Item]) -> Iterator[Reply]:
        """One batch (same limit); if the model rejects it, each request is retried alone."""
        from mmsieve.models.aitqe import STOP_STRING, postprocess_output

        model = self._model
        try:
            pixels = model.pixel_values([image for _, image, _, _ in batch])
            stops = () if self.output_all else (STOP_STRING,)
            replies = model.generate(
                [ids for _, _, ids, _ in batch], pixels, max_new_tokens=batch[0][3], stop_strings=stops
            )
        except Exception as error:  # noqa: BLE001 - a bad row must not end the step
            if len(batch) > 1:
                for item in batch:
                    yield from self._batch([item])
            else:
                yield batch[0][0], None, f"generation failed: {type(error).__name__}: {error}"
            return
        for (request, _, _, limit), reply in zip(batch, replies, strict=True):
            if request.must_finish and not reply.finished:
                yield request, None, f"truncated at {limit} tokens"
            else:
                text = model.tokenizer.decode(reply.ids, skip_special_tokens=True)
                yield request, postprocess_output(text, self.output_all), None
