"""`OpenAIBackend`: any OpenAI-compatible chat-completions server (vLLM, SGLang, TGI, hosted APIs), stdlib HTTP only.

Example:
    >>> backend = OpenAIBackend("http://localhost:8000", "Qwen/Qwen2.5-VL-7B-Instruct", concurrency=64)
    >>> replies = list(backend.generate([ChatRequest("k", "", "Describe the image.", [jpeg])]))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from mmsieve.generation.requests import ChatRequest, Reply, chat_payload


class OpenAIBackend:
    """An OpenAI-compatible chat-completions endpoint, called from a bounded thread pool (stdlib HTTP only).

    Each request sends the system prompt, then a user message with the images as base64 data URLs and the
    prompt (`chat_payload`). 429, 5xx, timeouts, connection errors and malformed JSON are retried with exponential backoff
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
        """The JSON body of one chat-completions call (`chat_payload` with this backend's settings)."""
        return chat_payload(request, self.model, max_tokens=self.max_tokens, temperature=self.temperature)

    def generate(self, requests: Sequence[ChatRequest]) -> Iterator[Reply]:
        """Send the requests, at most `concurrency` at a time; yield replies as they complete."""
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="generate") as pool:
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
