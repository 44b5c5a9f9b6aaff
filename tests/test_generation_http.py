"""`OpenAIBackend` against `ScriptedChatServer`: payloads, retries, timeouts, truncation, concurrency, secrets."""

from __future__ import annotations

import base64
import json
import logging
import pickle
import socket
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from mmsieve.generation import ChatRequest, OpenAIBackend
from mmsieve.generation.loopback import ScriptedChatServer, ScriptedReply, user_text


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(200, 240))
KEY = "sk-planted-9f3b2c7d"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("no_proxy", "*")  # loopback calls must never go through a proxy
    monkeypatch.setenv("NO_PROXY", "*")


def _backend(server: ScriptedChatServer, **options: Any) -> OpenAIBackend:
    settings = {"api_key": "sk-test", "timeout": 2.0, "retries": 2, "concurrency": 4, "backoff": 0.01, **options}
    return OpenAIBackend(server.url, "scripted-model", **settings)


def _run(backend: OpenAIBackend, requests: list[ChatRequest]) -> dict[str, tuple[str | None, str | None]]:
    replies = {request.key: (text, error) for request, text, error in backend.generate(requests)}
    assert len(replies) == len(requests)
    assert all((text is None) != (error is None) for text, error in replies.values())
    return replies


def _counting(script: Callable[[str, int], str | ScriptedReply]) -> Callable[[dict[str, Any]], Any]:
    """A reply function told the prompt and how many times this prompt came before (thread-safe)."""
    lock, seen = threading.Lock(), Counter[str]()

    def reply(body: dict[str, Any]) -> str | ScriptedReply:
        prompt = user_text(body)
        with lock:
            seen[prompt] += 1
            attempt = seen[prompt]
        return script(prompt, attempt)

    return reply


def test_replies_and_payload() -> None:
    def reply(body: dict[str, Any]) -> str | ScriptedReply:
        prompt = user_text(body)
        return ScriptedReply(f"parts:{prompt}", parts=True) if "PARTS" in prompt else f"echo:{prompt}"

    requests = [
        ChatRequest("a", "You rate captions.", "Rate A", [JPEG, PNG]),
        ChatRequest("b", "", "Rate B", [], max_tokens=7),
        ChatRequest("c", "", "PARTS C", [PNG]),
    ]
    with ScriptedChatServer(reply) as server:
        backend = _backend(server, max_tokens=64, temperature=0.0)
        assert _run(backend, requests) == {
            "a": ("echo:Rate A", None),
            "b": ("echo:Rate B", None),
            "c": ("parts:PARTS C", None),
        }
        recorded = {user_text(r.body): r for r in server.requests}
    assert set(recorded) == {"Rate A", "Rate B", "PARTS C"}
    for r in recorded.values():
        assert r.path == "/v1/chat/completions" and r.headers["Authorization"] == "Bearer sk-test"
        assert r.body["model"] == "scripted-model" and r.body["temperature"] == 0.0
    a, b = recorded["Rate A"].body, recorded["Rate B"].body
    assert a["messages"][0] == {"role": "system", "content": "You rate captions."} and a["max_tokens"] == 64
    urls = [p["image_url"]["url"] for p in a["messages"][1]["content"] if p["type"] == "image_url"]
    assert [u.split(",")[0] for u in urls] == ["data:image/jpeg;base64", "data:image/png;base64"]
    assert [base64.b64decode(u.split(",", 1)[1]) for u in urls] == [JPEG, PNG]
    assert [m["role"] for m in b["messages"]] == ["user"] and b["max_tokens"] == 7  # no system message when ""
    assert b["messages"][0]["content"] == [{"type": "text", "text": "Rate B"}]


def test_timeouts_retries_and_failures() -> None:
    def script(prompt: str, attempt: int) -> str | ScriptedReply:
        if prompt == "slow once" and attempt == 1 or prompt == "always slow":
            return ScriptedReply("late", delay=0.8)  # past the client's 0.3 s timeout
        if prompt == "500 once" and attempt == 1 or prompt == "always 500":
            return ScriptedReply("overloaded", status=500)
        if prompt == "429 once" and attempt == 1:
            return ScriptedReply("slow down", status=429, headers={"Retry-After": "0"})
        if prompt == "bad request":
            return ScriptedReply("max_tokens is too large", status=400)
        if prompt == "malformed":
            return ScriptedReply(body=b'{"choices": [')
        if prompt == "no choices":
            return ScriptedReply(body=b'{"object": "chat.completion"}')
        return f"ok:{prompt}"

    prompts = ["slow once", "always slow", "500 once", "always 500", "429 once", "bad request", "malformed"]
    prompts += ["no choices", "fine"]
    with ScriptedChatServer(_counting(script)) as server:
        backend = _backend(server, timeout=0.3, retries=2, concurrency=len(prompts))
        replies = _run(backend, [ChatRequest(p, "", p) for p in prompts])
        attempts = Counter(user_text(r.body) for r in server.requests)
    for ok in ("slow once", "500 once", "429 once", "fine"):
        assert replies[ok] == (f"ok:{ok}", None)
    assert replies["always slow"][1] == "timed out after 0.3s (after 3 attempts)"
    assert (
        replies["always 500"][1]
        == 'HTTP 500: {"error": {"message": "overloaded", "type": "scripted_error", "code": 500}} (after 3 attempts)'
    )
    assert (
        replies["bad request"][1].startswith("HTTP 400: ") and "max_tokens is too large" in replies["bad request"][1]
    )
    assert replies["malformed"][1].startswith("malformed response (JSONDecodeError)")
    assert replies["malformed"][1].endswith("(after 3 attempts)")
    assert replies["no choices"][1].startswith("malformed response (KeyError)")
    assert attempts == {
        "slow once": 2,
        "always slow": 3,
        "500 once": 2,
        "always 500": 3,
        "429 once": 2,
        "bad request": 1,  # a client error is not retried
        "malformed": 3,
        "no choices": 3,
        "fine": 1,
    }


def test_truncated_replies() -> None:
    def script(prompt: str, attempt: int) -> str | ScriptedReply:
        if prompt.startswith("cut"):
            return ScriptedReply("a reply the server says it cut", finish_reason="length")
        return "one two three four five six"

    requests = [
        ChatRequest("must", "", "long", max_tokens=3, must_finish=True),
        ChatRequest("may", "", "long", max_tokens=3),
        ChatRequest("fits", "", "long", max_tokens=6, must_finish=True),
        ChatRequest("cut-must", "", "cut 1", must_finish=True),
        ChatRequest("cut-may", "", "cut 2"),
    ]
    with ScriptedChatServer(_counting(script)) as server:
        replies = _run(_backend(server, max_tokens=100), requests)
        assert len(server.requests) == len(requests)  # a truncated reply is not retried
    assert replies == {
        "must": (None, "truncated at max_tokens=3"),
        "may": ("one two three", None),
        "fits": ("one two three four five six", None),
        "cut-must": (None, "truncated at max_tokens=100"),
        "cut-may": ("a reply the server says it cut", None),
    }


def test_concurrency_bound_and_connection_reuse() -> None:
    with ScriptedChatServer(lambda body: "ok", delay=0.02) as server:
        backend = _backend(server, concurrency=4)
        replies = _run(backend, [ChatRequest(str(i), "", f"q{i}") for i in range(40)])
        assert set(replies.values()) == {("ok", None)}
        assert 2 <= server.max_inflight <= 4
        assert len(backend._idle) <= 4  # kept alive for the next call

        server.close_connections()  # as a restart or an idle timeout would: the kept-alive connections are dead
        server.reset()
        replies = _run(backend, [ChatRequest(str(i), "", f"again {i}") for i in range(12)])
        assert set(replies.values()) == {("ok", None)} and len(server.requests) == 12

        copy = pickle.loads(pickle.dumps(backend))  # picklable, without its sockets
        assert _run(copy, [ChatRequest("p", "", "pickled")]) == {"p": ("ok", None)}
        backend.close()
        copy.close()
        assert backend._idle == [] and _run(backend, [ChatRequest("q", "", "after close")]) == {"q": ("ok", None)}


def test_closing_the_iterator_cancels_the_rest() -> None:
    with ScriptedChatServer(lambda body: "ok", delay=0.05) as server:
        replies = _backend(server, concurrency=2).generate([ChatRequest(str(i), "", f"q{i}") for i in range(50)])
        next(replies)
        replies.close()
        assert server.answered <= 6


def test_http_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with ScriptedChatServer(lambda body: "via proxy") as proxy:  # it accepts absolute-form targets, as a proxy does
        monkeypatch.setenv("http_proxy", proxy.url.replace("http://", "http://user:p%40ss@"))
        for name in ("no_proxy", "NO_PROXY"):
            monkeypatch.delenv(name)
        backend = OpenAIBackend("http://upstream.invalid:8000/v1", "m", retries=0)
        assert _run(backend, [ChatRequest("k", "", "hi")]) == {"k": ("via proxy", None)}
        with socket.socket() as sock:  # a port nothing listens on
            sock.bind(("127.0.0.1", 0))
            closed = sock.getsockname()[1]
        monkeypatch.setenv("no_proxy", "127.0.0.1")  # bypassed: straight to the closed port, not via the proxy
        direct = OpenAIBackend(f"http://127.0.0.1:{closed}", "m", retries=0, timeout=1.0)
        assert _run(direct, [ChatRequest("k", "", "hi")])["k"][1].startswith("connection failed: ConnectionRefused")
        (request,) = proxy.requests
    assert request.path == "http://upstream.invalid:8000/v1/chat/completions"
    assert request.headers["Proxy-Authorization"] == "Basic " + base64.b64encode(b"user:p@ss").decode()


def test_api_key_never_shown(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)

    def echo_header(prompt: str, attempt: int) -> ScriptedReply:  # a server that echoes the request's header
        auth = server.requests[-1].headers["Authorization"]
        # "cut": the key straddles the 200th character of the error message, where the body is cut
        return ScriptedReply(("x" * 156 if "cut" in prompt else "") + f"you sent {auth}", status=int(prompt[:3]))

    with ScriptedChatServer(_counting(echo_header)) as server:
        backend = OpenAIBackend(server.url, "m", retries=1, backoff=0.01)
        requests = [ChatRequest(p, "", p) for p in ("401", "403 cut", "503")]
        with caplog.at_level(logging.DEBUG, logger="mmsieve.generation"):
            replies = _run(backend, requests)
        assert all(r.headers["Authorization"] == f"Bearer {KEY}" for r in server.requests)  # it was sent
    for text in (repr(backend), str(backend), *(error for _, error in replies.values()), caplog.text):
        assert KEY[:5] not in text
    assert replies["401"][1].startswith("HTTP 401: ") and "you sent Bearer <api key>" in replies["401"][1]
    assert replies["403 cut"][1].startswith("HTTP 403: ") and "Bearer <api" in replies["403 cut"][1]
    assert replies["503"][1].endswith("(after 2 attempts)") and "<api key>" in replies["503"][1]


def _raw(url: str, data: bytes) -> tuple[int, dict[str, Any]]:
    """Send raw bytes on a new connection; the status and JSON body of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _length(answer):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, body = answer.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


def _length(answer: bytes) -> int:
    head = answer.split(b"\r\n\r\n", 1)[0].decode().lower()
    return next(int(line.split(":")[1]) for line in head.splitlines() if line.startswith("content-length:"))


def test_server_survives_bad_requests() -> None:
    def reply(body: dict[str, Any]) -> str:
        if user_text(body) == "crash":
            raise RuntimeError("a bug in the script")
        return "ok"

    post = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{}"
    with ScriptedChatServer(reply, model="tiny") as server:
        status, body = _raw(server.url, post.format(7, "{bad js").encode())
        assert status == 400 and "not valid JSON" in body["error"]["message"]
        assert _raw(server.url, post.format(2, "[]").encode())[0] == 400  # no messages
        assert _raw(server.url, b"GARBAGE\r\n\r\n")[0] == 400
        assert _raw(server.url, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 411
        assert _raw(server.url, b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 404
        status, models = _raw(server.url, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200 and models["data"][0]["id"] == "tiny"
        replies = _run(_backend(server, retries=0), [ChatRequest("x", "", "crash"), ChatRequest("y", "", "fine")])
        assert replies["x"][1].startswith("HTTP 500: ") and "a bug in the script" in replies["x"][1]
        assert replies["y"] == ("ok", None)
        chat = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
        completion = _raw(server.url, post.format(len(chat), chat).encode())
        assert completion[1]["choices"][0]["finish_reason"] == "stop" and completion[1]["usage"]["prompt_tokens"] == 1
