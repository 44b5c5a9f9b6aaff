"""Text generation for the steps that write or judge: one request type, one backend interface, several backends.

- `OpenAIBackend`: an OpenAI-compatible server (vLLM, SGLang, TGI, hosted APIs), bounded concurrency and retries.
- `TransformersBackend`: an image-text-to-text (or text-only) model in process, batched with left padding.

`open_backend` picks one from what a user types on the command line: `--endpoint URL --model NAME` for a server,
`--model ID_OR_PATH` for in process.

Example:
    >>> backend = open_backend("Qwen/Qwen2.5-VL-7B-Instruct", endpoint="http://localhost:8000", concurrency=64)
    >>> backend.name
    'openai:Qwen/Qwen2.5-VL-7B-Instruct'
"""

from __future__ import annotations

from typing import Any

from mmsieve.generation.aitqe_backend import AITQEBackend
from mmsieve.generation.openai_backend import OpenAIBackend
from mmsieve.generation.requests import (
    ChatRequest,
    GenerationBackend,
    Reply,
    chat_payload,
    image_data_url,
    reply_error,
)
from mmsieve.generation.transformers_backend import TransformersBackend


def open_backend(model: str, *, endpoint: str | None = None, **options: Any) -> GenerationBackend:
    """A server backend when `endpoint` is given, else the model in process; `options` go to its constructor.

    Example:
        >>> open_backend("HuggingFaceTB/SmolVLM-256M-Instruct", batch_size=4).name
        'transformers:HuggingFaceTB/SmolVLM-256M-Instruct'
    """
    if endpoint:
        return OpenAIBackend(endpoint, model, **options)
    return TransformersBackend(model, **options)


__all__ = [
    "AITQEBackend",
    "ChatRequest",
    "GenerationBackend",
    "OpenAIBackend",
    "Reply",
    "TransformersBackend",
    "chat_payload",
    "image_data_url",
    "open_backend",
    "reply_error",
]
