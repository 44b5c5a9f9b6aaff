"""`OpenAIBackend`: any OpenAI-compatible chat-completions server (vLLM, SGLang, TGI, hosted APIs), stdlib HTTP only.

Example:
    >>> backend = OpenAIBackend("http://localhost:8000", "Qwen/Qwen2.5-VL-7B-Instruct", concurrency=64)
    >>> replies = list(backend.generate([ChatRequest("k", "", "Describe the image.", [jpeg])]))  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from mmsieve.generation.requests import ChatRequest, Reply, chat_payload


logger = logging.getLogger(__name__)

RETRIED_STATUSES = frozenset({408, 409, 429})  # and every 5xx
MAX_RETRY_AFTER = 60.0
# What a kept-alive connection the server has meanwhile closed raises: the request goes again on a new connection.
_STALE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, http.client.RemoteDisconnected)


class OpenAIBackend:
    """An OpenAI-compatible chat-completions endpoint, called from a bounded thread pool (stdlib HTTP only).

    Each request sends the system prompt, then a user message with the images as base64 data URLs and the
    prompt (`chat_payload`). Connections are kept alive and reused (a pool of at most `concurrency`, kept across
    `generate` calls; `close()` closes them); one the server has closed meanwhile is replaced at once. 408, 409, 429,
    5xx, timeouts, connection errors and malformed JSON are retried with exponential backoff (`backoff * 2**attempt`
    seconds, jittered down to half, or the server's `Retry-After`); other HTTP errors fail at once. A reply cut at
    the token limit (`finish_reason == "length"`) is the error `"truncated at max_tokens=N"` when the request
    `must_finish`, else its text. `$http_proxy`/`$https_proxy`/`$no_proxy` apply as in urllib.

    Args:
        endpoint: the server root, e.g. `"http://localhost:8000"` (a trailing `/v1` is accepted).
        model: the model name the server expects.
        api_key: the bearer token; default `$OPENAI_API_KEY`; never logged, shown in `repr` or in an error.
        timeout: seconds per request (socket connect and each read).
        retries: extra attempts after the first.
        concurrency: the most requests in flight at once.
        temperature: sampling temperature sent with every request.
        max_tokens: the generation limit of a request that sets none.
        backoff: seconds before the first retry; doubled at each further one.

    Example:
        >>> backend = OpenAIBackend("https://api.openai.com", "gpt-4o-mini", concurrency=8)
        >>> backend.name, backend.url
        ('openai:gpt-4o-mini', 'https://api.openai.com/v1/chat/completions')
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
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint must be an http:// or https:// URL, got {endpoint!r}")
        self.model, self.name = model, f"openai:{model}"
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout, self.retries, self.concurrency, self.backoff = timeout, retries, concurrency, backoff
        self.temperature, self.max_tokens = temperature, max_tokens
        self._init_pool()

    def _init_pool(self) -> None:
        """The idle connections, and where they go: straight to the server or through the environment's proxy."""
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        parts = urllib.parse.urlsplit(self.url)
        self._scheme, self._host, self._port = parts.scheme, parts.hostname or "", parts.port
        proxy = _proxy(self._scheme, self._host)
        self._proxy = urllib.parse.urlsplit(proxy) if proxy else None
        self._target = self.url if self._proxy and self._scheme == "http" else parts.path  # absolute via a proxy
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._proxy and self._scheme == "http":
            self._headers.update(_proxy_auth(self._proxy))

    def __repr__(self) -> str:
        return f"OpenAIBackend(url={self.url!r}, model={self.model!r}, concurrency={self.concurrency})"

    def __getstate__(self) -> dict[str, Any]:  # picklable (e.g. into worker processes): no sockets, no lock
        return {k: v for k, v in self.__dict__.items() if k not in ("_idle", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_pool()

    def payload(self, request: ChatRequest) -> dict[str, Any]:
        """The JSON body of one chat-completions call (`chat_payload` with this backend's settings).

        Example:
            >>> OpenAIBackend("http://localhost:8000", "m").payload(ChatRequest("k", "", "Hi"))["max_tokens"]
            512
        """
        return chat_payload(request, self.model, max_tokens=self.max_tokens, temperature=self.temperature)

    def generate(self, requests: Sequence[ChatRequest]) -> Iterator[Reply]:
        """Send the requests, at most `concurrency` at a time; yield `(request, text, error)` as they complete.

        A failed request yields its error (after the retries), never an exception. Closing the iterator early
        cancels the requests not yet sent.

        Example:
            >>> replies = OpenAIBackend("http://localhost:8000", "m").generate([ChatRequest("k", "", "Hi")])
            >>> [(request.key, text) for request, text, error in replies]  # doctest: +SKIP
            [('k', 'Hello!')]
        """
        if not requests:
            return
        pool = ThreadPoolExecutor(min(self.concurrency, len(requests)), thread_name_prefix="generate")
        try:
            futures = {pool.submit(self._complete, r): r for r in requests}
            for future in as_completed(futures):
                yield futures[future], *future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """Close the idle kept-alive connections (the next request opens new ones).

        Example:
            >>> OpenAIBackend("http://localhost:8000", "m").close()
        """
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    # ------------------------------------------------------------------------------------------- one request
    def _complete(self, request: ChatRequest) -> tuple[str | None, str | None]:
        try:
            return self._attempts(request)
        except Exception as e:  # a bug or an unforeseen error fails this request only
            return None, self._redact(f"{type(e).__name__}: {e}")

    def _attempts(self, request: ChatRequest) -> tuple[str | None, str | None]:
        body = json.dumps(self.payload(request)).encode()
        error, delay = "", 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                logger.debug("request %r, attempt %d failed: %s", request.key, attempt, error)
                time.sleep(delay)
            delay = self.backoff * 2**attempt * random.uniform(0.5, 1.0)
            try:
                status, headers, raw = self._post(body)
            except TimeoutError:
                error = f"timed out after {self.timeout}s"
                continue
            except (OSError, http.client.HTTPException) as e:
                error = self._redact(f"connection failed: {type(e).__name__}: {e}")
                continue
            if not 200 <= status < 300:
                error = f"HTTP {status}: {self._redact(raw[:4096].decode(errors='replace'))[:200]}"
                if status not in RETRIED_STATUSES and status < 500:
                    if 300 <= status < 400 and headers.get("Location"):
                        error += f" (redirected to {headers['Location']}: use that endpoint)"
                    return None, error
                if (after := _retry_after(headers.get("Retry-After"))) is not None:
                    delay = after
                continue
            try:
                choice = json.loads(raw)["choices"][0]
                content, finish = choice["message"]["content"], choice.get("finish_reason")
                if isinstance(content, list):  # some servers return content parts
                    content = "".join(p.get("text") or "" for p in content if isinstance(p, dict))
                if not isinstance(content, str | None):
                    raise TypeError(f"content is a {type(content).__name__}")
            except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
                snippet = self._redact(raw[:4096].decode(errors="replace"))[:120]
                error = f"malformed response ({type(e).__name__}): {snippet!r}"
                continue
            if finish == "length" and request.must_finish:
                return None, f"truncated at max_tokens={request.max_tokens or self.max_tokens}"
            if content is None:
                return None, f"no content in the reply (finish_reason={finish!r})"
            return content, None
        return None, f"{error} (after {self.retries + 1} attempts)"

    def _post(self, body: bytes) -> tuple[int, Mapping[str, str], bytes]:
        """POST on a pooled connection: (status, headers, body). A reused connection found closed is replaced."""
        while True:
            connection, reused = self._checkout()
            try:
                connection.request("POST", self._target, body, self._request_headers())
                response = connection.getresponse()
                raw = response.read()
            except BaseException as e:
                connection.close()
                if reused and isinstance(e, _STALE):
                    continue
                raise
            if response.will_close:
                connection.close()
            else:
                self._checkin(connection)
            return response.status, response.headers, raw

    # ----------------------------------------------------------------------------------------- connections
    def _checkout(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        if self._proxy is None:
            cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            return cls(self._host, self._port, timeout=self.timeout), False
        cls = http.client.HTTPSConnection if self._proxy.scheme == "https" else http.client.HTTPConnection
        connection = cls(self._proxy.hostname or "", self._proxy.port, timeout=self.timeout)
        if self._scheme == "https":  # a CONNECT tunnel through the proxy
            connection.set_tunnel(self._host, self._port, headers=_proxy_auth(self._proxy))
        return connection, False

    def _checkin(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self.concurrency:
                self._idle.append(connection)
                return
        connection.close()

    def _request_headers(self) -> dict[str, str]:
        if not self._api_key:
            return self._headers
        return {**self._headers, "Authorization": f"Bearer {self._api_key}"}

    def _redact(self, text: str) -> str:
        """`text` without the API key (a server may echo request headers in an error)."""
        return text.replace(self._api_key, "<api key>") if self._api_key else text


def _proxy(scheme: str, host: str) -> str | None:
    """The proxy URL urllib would use for `scheme://host` (`$http_proxy`, `$https_proxy`, `$no_proxy`), or None."""
    proxy = urllib.request.getproxies().get(scheme)
    return None if not proxy or urllib.request.proxy_bypass(host) else proxy


def _proxy_auth(proxy: urllib.parse.SplitResult) -> dict[str, str]:
    if proxy.username is None:
        return {}
    credentials = f"{urllib.parse.unquote(proxy.username)}:{urllib.parse.unquote(proxy.password or '')}"
    return {"Proxy-Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header (seconds or an HTTP date), at most 60; None if absent or bad."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
