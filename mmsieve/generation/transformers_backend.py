"""`TransformersBackend`: an image-text-to-text model run in process, batched, with its processor's chat template.

Example:
    >>> backend = TransformersBackend("HuggingFaceTB/SmolVLM-256M-Instruct", batch_size=16)
    >>> replies = list(backend.generate([ChatRequest("k", "", "Describe the image.", [jpeg])]))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mmsieve.generation.requests import ChatRequest, Reply


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
