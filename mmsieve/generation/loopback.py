"""`ScriptedChatServer`: an OpenAI-compatible chat-completions server on 127.0.0.1 whose replies a function writes.

No model and no network: for the tests, `bench/generate.py` and the demo's rewrite stage. A `reply` function gets
each request's JSON body and returns the text, or a `ScriptedReply` for a failure (a status code, a raw body,
`finish_reason="length"`, a slow reply). `delay` seconds per request with at most `max_concurrency` requests
served at once make it behave like a busy inference server: its throughput limit is `max_concurrency / delay`
requests per second. Requests are recorded (`requests`), and the most in flight at once counted (`max_inflight`).

Example:
    >>> from mmsieve.generation import ChatRequest, OpenAIBackend
    >>> with ScriptedChatServer(lambda body: "A red bus.", delay=0.01) as server:
    ...     backend = OpenAIBackend(server.url, "scripted")
    ...     [text for _, text, _ in backend.generate([ChatRequest("k", "", "Describe.")])]
    ['A red bus.']
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


MAX_BODY_BYTES = 256 << 20  # a larger request is refused with 413
CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")


@dataclass(frozen=True)
class ScriptedReply:
    """One scripted answer: a text, or a failure to test a client against.

    Args:
        text: the assistant message's content (None sends `"content": null`); for an error status, its message.
        status: the HTTP status; anything but 200 sends `{"error": {"message": text, ...}}`.
        body: raw response bytes sent as they are (e.g. `b'{"choices": ['`, malformed JSON); overrides the rest.
        finish_reason: e.g. `"length"`; None: `"length"` when the server cut the text at the request's
            `max_tokens` (one token per word), else `"stop"`.
        delay: seconds before answering, in place of the server's `delay`.
        headers: extra response headers, e.g. `{"Retry-After": "1"}`.
        parts: send the content as a list of text parts (as some servers do) instead of a string.

    Example:
        >>> ScriptedReply(status=500, text="overloaded").status, ScriptedReply("A cat.", delay=2.0).delay
        (500, 2.0)
    """

    text: str | None = ""
    status: int = 200
    body: bytes | None = None
    finish_reason: str | None = None
    delay: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    parts: bool = False


@dataclass(frozen=True)
class RecordedRequest:
    """A request the server received: its target as sent (the path, or the whole URL when the server was used as
    an HTTP proxy), headers and JSON body (None when the body was not valid JSON).

    Example:
        >>> RecordedRequest("/v1/chat/completions", {"Authorization": "Bearer sk-1"}, {"model": "m"}).body
        {'model': 'm'}
    """

    path: str
    headers: dict[str, str]
    body: Any


def user_text(body: Mapping[str, Any]) -> str:
    """The text of the last user message of a chat-completions body ("" when there is none): a `reply` helper.

    Example:
        >>> user_text({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]})
        'Hi'
    """
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
            return content if isinstance(content, str) else ""
    return ""


class ScriptedChatServer:
    """An OpenAI-compatible server on 127.0.0.1 (a free port) answering with `reply(body)`; a context manager.

    Serves `POST /v1/chat/completions` (and `/chat/completions`), `GET /v1/models` and `GET /health`, HTTP/1.1 with
    keep-alive, one daemon thread per connection. Answers have the OpenAI shape (`choices[0].message.content`,
    `finish_reason`, `usage` counted in words). A text longer than the request's `max_tokens` words is cut there
    with `finish_reason="length"` (`truncate=False` sends it whole). A bad request gets a JSON error (400, 404,
    411, 413), an exception in `reply` a 500; the server keeps serving either way.

    Args:
        reply: the answer to one request, from its parsed JSON body: a text or a `ScriptedReply`.
        delay: seconds spent on each request once it holds a slot (a `ScriptedReply.delay` overrides it).
        max_concurrency: requests served at once; the others wait for a slot. None: no limit.
        model: the model name `GET /v1/models` lists and answers carry when a request names none.
        truncate: cut replies at the request's `max_tokens` words.

    Example:
        >>> script = lambda body: ScriptedReply(status=500) if "fail" in user_text(body) else "ok"
        >>> with ScriptedChatServer(script, delay=0.2, max_concurrency=64) as server:  # at most 320 requests/s
        ...     server.url.startswith("http://127.0.0.1:"), server.requests
        (True, [])
    """

    def __init__(
        self,
        reply: Callable[[dict[str, Any]], str | ScriptedReply | None],
        delay: float = 0.0,
        max_concurrency: int | None = None,
        *,
        model: str = "scripted",
        truncate: bool = True,
    ) -> None:
        if delay < 0 or (max_concurrency is not None and max_concurrency < 1):
            raise ValueError(f"delay must be >= 0 and max_concurrency >= 1, got {delay} and {max_concurrency}")
        self.reply, self.delay, self.max_concurrency = reply, delay, max_concurrency
        self.model, self.truncate = model, truncate
        self._slots = threading.Semaphore(max_concurrency) if max_concurrency else None
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._inflight = self._max_inflight = self._answered = 0
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> ScriptedChatServer:
        """Bind a free port on 127.0.0.1 and serve from a daemon thread (what `with` does)."""
        if self._httpd is None:
            self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
            self._httpd.owner = self
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="scripted-chat"
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the open connections and free the port."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self.close_connections()
            self._httpd = None

    def __enter__(self) -> ScriptedChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._httpd else "stopped"
        return f"ScriptedChatServer({where}, delay={self.delay}, max_concurrency={self.max_concurrency})"

    @property
    def url(self) -> str:
        """The server root, e.g. `http://127.0.0.1:40123`, to pass as an endpoint."""
        if self._httpd is None:
            raise RuntimeError("the server is not running: use `with ScriptedChatServer(...) as server` or start()")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # ------------------------------------------------------------------------------------------------ counters
    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the requests received so far, in arrival order (bad ones included)."""
        with self._lock:
            return list(self._requests)

    @property
    def max_inflight(self) -> int:
        """The most chat requests in flight at once (received, not yet answered; waiting for a slot included)."""
        return self._max_inflight

    @property
    def answered(self) -> int:
        """How many chat requests got an answer (any status)."""
        return self._answered

    def reset(self) -> None:
        """Forget the recorded requests and counters (the connections stay open)."""
        with self._lock:
            self._requests.clear()
            self._max_inflight, self._answered = self._inflight, 0

    def close_connections(self) -> None:
        """Close every open client connection, as a server restart or an idle timeout would."""
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ------------------------------------------------------------------------------------------------ serving
    def _track(self, sock: socket.socket, open_: bool) -> None:
        with self._lock:
            (self._connections.add if open_ else self._connections.discard)(sock)

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _answer(self, body: dict[str, Any]) -> tuple[int, bytes, Mapping[str, str]]:
        with self._lock:
            self._inflight += 1
            self._max_inflight = max(self._max_inflight, self._inflight)
        try:
            try:
                scripted = self.reply(body)
            except Exception as e:  # a bug in the script is the client's 500, not the server's end
                scripted = ScriptedReply(f"reply function failed: {type(e).__name__}: {e}", status=500)
            if not isinstance(scripted, ScriptedReply):
                scripted = ScriptedReply(scripted)
            delay = self.delay if scripted.delay is None else scripted.delay
            if self._slots is not None:
                with self._slots:
                    time.sleep(delay)
            elif delay:
                time.sleep(delay)
            return scripted.status, self._body(body, scripted), scripted.headers
        finally:
            with self._lock:
                self._inflight -= 1
                self._answered += 1

    def _body(self, request: dict[str, Any], scripted: ScriptedReply) -> bytes:
        if scripted.body is not None:
            return scripted.body
        if scripted.status != 200:
            return _error_body(scripted.status, scripted.text or _phrase(scripted.status), "scripted_error")
        text, finish = scripted.text, scripted.finish_reason
        limit = request.get("max_tokens") or request.get("max_completion_tokens")
        if self.truncate and text and isinstance(limit, int) and limit > 0 and len(words := text.split()) > limit:
            text, finish = " ".join(words[:limit]), finish or "length"
        prompt_tokens = sum(_tokens(m.get("content")) for m in request["messages"] if isinstance(m, dict))
        completion_tokens = len(text.split()) if text else 0
        with self._lock:
            number = self._answered
        return json.dumps(
            {
                "id": f"chatcmpl-scripted-{number}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request.get("model") or self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": [{"type": "text", "text": text}] if scripted.parts else text,
                        },
                        "finish_reason": finish or "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        ).encode()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # 128 clients connecting at once must not overflow the listen backlog (default 5)
    owner: ScriptedChatServer

    def server_bind(self) -> None:  # skip HTTPServer's reverse DNS lookup of the host name
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client may send many requests on one connection
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, True)

    def finish(self) -> None:
        self.server.owner._track(self.connection, False)
        try:
            super().finish()
        except OSError:
            pass

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:  # the client left, or the server closed the connection
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, unknown method) as JSON too."""
        self.close_connection = True
        self.request_version = "HTTP/1.0"  # even for a request line too broken to tell: send the status and headers
        self._send(code, _error_body(code, message or _phrase(code), "invalid_request_error"))

    def do_GET(self) -> None:
        path = _route(self.path)
        owner = self.server.owner
        owner._record(RecordedRequest(self.path, dict(self.headers), None))
        if path in ("/v1/models", "/models"):
            models = {"object": "list", "data": [{"id": owner.model, "object": "model", "owned_by": "mmsieve"}]}
            self._send(200, json.dumps(models).encode())
        elif path == "/health":
            self._send(200, b"{}")
        else:
            self._send(404, _error_body(404, f"no route GET {path}", "not_found_error"))

    def do_POST(self) -> None:
        owner = self.server.owner
        path = _route(self.path)
        body, problem = self._read_json()
        owner._record(RecordedRequest(self.path, dict(self.headers), body))
        if problem is not None:
            self._send(problem[0], _error_body(problem[0], problem[1], "invalid_request_error"))
        elif path not in CHAT_PATHS:
            self._send(404, _error_body(404, f"no route POST {path}", "not_found_error"))
        else:
            status, data, headers = owner._answer(body)
            self._send(status, data, headers)

    def _read_json(self) -> tuple[Any, tuple[int, str] | None]:
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True  # the body's end is unknown: this connection cannot carry another request
            return None, (411, "a Content-Length header is required")
        if not length.strip().isdigit():
            self.close_connection = True
            return None, (400, f"bad Content-Length {length!r}")
        if int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            return None, (413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        raw = self.rfile.read(int(length))
        try:
            body = json.loads(raw)
        except ValueError as e:
            return None, (400, f"the body is not valid JSON: {e}")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            return body, (400, "the body must be a JSON object with a non-empty `messages` list")
        return body, None

    def _send(self, status: int, data: bytes, headers: Mapping[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except OSError:  # the client timed out and left
            self.close_connection = True


def _route(target: str) -> str:
    """The path of a request target, also in absolute form (`http://host/v1/...`, as a client sends to a proxy)."""
    return urllib.parse.urlsplit(target).path.rstrip("/")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"status {status}"


def _error_body(status: int, message: str, kind: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()


def _tokens(content: Any) -> int:
    """Words of a message's text, plus one per image: the `usage` the server reports."""
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):
        return sum(_tokens(p.get("text")) if p.get("type") == "text" else 1 for p in content if isinstance(p, dict))
    return 0
