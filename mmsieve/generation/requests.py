"""The request every generating step sends, and the one interface its backends share.

A step (the teacher, the rewriter, the judge) builds `ChatRequest`s; a `GenerationBackend` answers them with
`(request, text, error)` tuples in any order. `chat_payload` is the OpenAI chat-completions body of a request, the
same one `OpenAIBackend` posts and a datatrove `InferenceRunner` rollout can send.

Example:
    >>> request = ChatRequest("r1", "You rate captions.", "Rate: a red bus.", [open("bus.jpg", "rb").read()])  # doctest: +SKIP
    >>> chat_payload(request, "Qwen/Qwen2.5-VL-7B-Instruct", max_tokens=64)["messages"][1]["content"][0]["type"]  # doctest: +SKIP
    'image_url'
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol


_REFUSAL = re.compile(r"^\W*(i'?m sorry|i am sorry|sorry,|i cannot|i can'?t|i can not|i'?m unable|as an ai)", re.I)
_MIME = {b"\x89PNG": "image/png", b"GIF8": "image/gif", b"RIFF": "image/webp", b"\xff\xd8": "image/jpeg"}


@dataclass
class ChatRequest:
    """One generation request: a system prompt, a user prompt and the images (encoded bytes) it is about.

    Args:
        key: the caller's id for the request; replies come back in any order and carry it.
        system: the system prompt; "" sends none (some chat templates have no system role).
        prompt: the user message's text; the images go before it.
        images: encoded image bytes (JPEG, PNG, ...); empty for a text-only request.
        max_tokens: this request's generation limit; None uses the backend's.
        must_finish: when True, a reply cut off at the token limit is an error ("truncated ..."), not a text. A
            rewrite must finish; a judge's score, read from the first tokens, need not.

    Example:
        >>> ChatRequest("row-7", "", "Rate the caption: a dog.", [], max_tokens=8)
        ChatRequest(key='row-7', images=0, prompt='Rate the caption: a dog.')
    """

    key: str
    system: str
    prompt: str
    images: list[bytes] = field(default_factory=list)
    max_tokens: int | None = None
    must_finish: bool = False

    def __repr__(self) -> str:
        return f"ChatRequest(key={self.key!r}, images={len(self.images)}, prompt={self.prompt!r:.60})"


Reply = tuple[ChatRequest, str | None, str | None]  # (request, text, error): exactly one of text / error is set


class GenerationBackend(Protocol):
    """What every generating step needs from a model: a name and replies to requests, in any order.

    `OpenAIBackend` (any OpenAI-compatible server), `TransformersBackend` (in process) and `AITQEBackend` (the AITQE
    checkpoint, in process) implement it. A request that fails yields `(request, None, error)`, never an exception.
    """

    name: str

    def generate(self, requests: Sequence[ChatRequest]) -> Iterator[Reply]: ...


def reply_error(text: str | None) -> str | None:
    """Why a generated reply is unusable (None when it is fine): empty, or a refusal.

    Example:
        >>> reply_error("I cannot describe this image."), reply_error("  "), reply_error("A red bus.")
        ("refusal: 'I cannot describe this image.'", 'empty reply', None)
    """
    if not text or not text.strip():
        return "empty reply"
    if _REFUSAL.match(text.strip()):
        return f"refusal: {text.strip()[:80]!r}"
    return None


class LoadsLazily:
    """A backend whose model loads on first use: pickling (into datatrove workers, or `Dataset.map`'s fingerprint)
    drops the loaded objects named in `_loaded`, and the copy loads them again when it first generates.

    Example:
        >>> class Backend(LoadsLazily):
        ...     _loaded = ("_model",)
        >>> import pickle; b = Backend(); b._model = lambda: None  # an unpicklable "model"
        >>> pickle.loads(pickle.dumps(b))._model is None
        True
    """

    _loaded: ClassVar[tuple[str, ...]] = ()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in self._loaded:
            state[name] = None
        return state


def image_data_url(data: bytes) -> str:
    """Encoded image bytes as a `data:` URL (the MIME type read from the file's magic bytes; JPEG if unknown).

    Example:
        >>> image_data_url(b"\\x89PNG\\r\\n")[:22]
        'data:image/png;base64,'
    """
    mime = next((mime for magic, mime in _MIME.items() if data.startswith(magic)), "image/jpeg")
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def chat_payload(request: ChatRequest, model: str, *, max_tokens: int, temperature: float) -> dict[str, Any]:
    """The OpenAI chat-completions JSON body of one request: the system message (when set), then one user message
    with the images as base64 data URLs followed by the prompt. `request.max_tokens` overrides `max_tokens`.

    Example:
        >>> body = chat_payload(ChatRequest("k", "", "Hello"), "my-model", max_tokens=16, temperature=0.0)
        >>> body["messages"], body["max_tokens"]
        ([{'role': 'user', 'content': [{'type': 'text', 'text': 'Hello'}]}], 16)
    """
    content: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": image_data_url(im)}} for im in request.images
    ]
    content.append({"type": "text", "text": request.prompt})
    messages: list[dict[str, Any]] = [{"role": "system", "content": request.system}] if request.system else []
    messages.append({"role": "user", "content": content})
    return {
        "model": model,
        "messages": messages,
        "temperature": temperature,
        "max_tokens": request.max_tokens or max_tokens,
    }
