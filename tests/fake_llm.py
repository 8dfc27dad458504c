"""A small OpenAI- and Anthropic-compatible HTTP server for tests (127.0.0.1, random port).

It runs in a daemon thread (``http.server``), so the real SDK clients
(``openai.AsyncOpenAI``, ``anthropic.AsyncAnthropic``) talk to it over a real
socket from a trio test. It serves:

* ``POST /v1/chat/completions``: a chat completion with usage, or SSE chunks
  ending with a usage chunk when ``stream_options={"include_usage": True}``;
* ``POST /v1/messages``: an anthropic message, or its streaming events
  (``message_start`` ... ``message_delta`` with the output tokens ... ``message_stop``).

A request picks a behaviour with the ``x-fake-mode`` header: ``"500"`` (an
internal server error, with ``retry-after-ms: 1`` so SDK retries are quick),
``"400"`` (a bad request), ``"hang"`` (a stream that sends one chunk and then
waits until the client disconnects, recording when), ``"gated"`` (a stream
that sends each chunk only after the test released the previous one, so
"chunks arrive live" is checked without timing). Everything the server did is
recorded for the test to compare: requests, usage reported, chunk send times,
disconnect times.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeLLM"]

WORDS = ("actors ", "all ", "the ", "way ", "down")


class FakeLLM:
    """The server's state and controls (see the module docstring).

    Attributes:
        requests: ``(path, mode, body)`` of every request, in arrival order.
        reported: ``(input_tokens, output_tokens)`` the server reported, per response.
        sent: ``time.perf_counter()`` of every streamed chunk's send.
        disconnects: ``time.perf_counter()`` when a hanging stream saw the client leave.
        gate: released by the test once per chunk it received (``"gated"`` streams).
        gate_timeouts: how many times a gated stream gave up waiting (0: chunks were live).
    """

    def __init__(self, *, input_tokens: int = 11, words: tuple[str, ...] = WORDS) -> None:
        self.input_tokens = input_tokens
        self.words = words
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self.reported: list[tuple[int, int]] = []
        self.sent: list[float] = []
        self.disconnects: list[float] = []
        self.gate = threading.Semaphore(0)
        self.gate_timeouts = 0
        self.hanging = threading.Event()  # set once a "hang" stream sent its first chunk
        self.disconnected = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeLLM:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def count(self, path: str) -> int:
        """Requests made to ``path`` so far."""
        with self._lock:
            return sum(1 for p, _, _ in self.requests if p == path)

    def _record(self, path: str, mode: str, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append((path, mode, body))


def _handler(fake: FakeLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # the server closes each connection after its response

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            mode = self.headers.get("x-fake-mode", "")
            fake._record(self.path, mode, body)
            anthropic = self.path.endswith("/messages")
            if mode == "500":
                return self._error(500, "api_error", "the fake server is down", anthropic)
            if mode == "400":
                return self._error(400, "invalid_request_error", "bad request", anthropic)
            if body.get("stream"):
                return self._stream(body, mode, anthropic)
            output = len(fake.words)
            with fake._lock:
                fake.reported.append((fake.input_tokens, output))
            text = "".join(fake.words)
            if anthropic:
                return self._json(200, _message(body["model"], text, fake.input_tokens, output))
            return self._json(200, _completion(body["model"], text, fake.input_tokens, output))

        # -- responses -------------------------------------------------------------
        def _json(self, status: int, payload: dict[str, Any], headers: Any = ()) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, kind: str, message: str, anthropic: bool) -> None:
            if anthropic:
                payload: dict[str, Any] = {
                    "type": "error",
                    "error": {"type": kind, "message": message},
                }
            else:
                payload = {"error": {"message": message, "type": kind, "code": None}}
            self._json(status, payload, [("retry-after-ms", "1")])

        def _stream(self, body: dict[str, Any], mode: str, anthropic: bool) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.end_headers()
            model = body["model"]
            words = fake.words
            usage_chunk = bool((body.get("stream_options") or {}).get("include_usage"))
            try:
                if anthropic:
                    self._event(
                        "message_start",
                        {
                            "type": "message_start",
                            "message": {
                                **_message(model, "", fake.input_tokens, 1),
                                "content": [],
                                "stop_reason": None,
                            },
                        },
                    )
                    self._event(
                        "content_block_start",
                        {
                            "type": "content_block_start",
                            "index": 0,
                            "content_block": {"type": "text", "text": ""},
                        },
                    )
                for i, word in enumerate(words):
                    if i and mode == "gated" and not fake.gate.acquire(timeout=10):
                        fake.gate_timeouts += 1
                    if anthropic:
                        self._event(
                            "content_block_delta",
                            {
                                "type": "content_block_delta",
                                "index": 0,
                                "delta": {"type": "text_delta", "text": word},
                            },
                            timed=True,
                        )
                    else:
                        self._data(_chunk(model, {"content": word}), timed=True)
                    if mode == "hang":
                        fake.hanging.set()
                        return self._wait_for_disconnect()
                with fake._lock:
                    fake.reported.append((fake.input_tokens, len(words)))
                if anthropic:
                    self._event("content_block_stop", {"type": "content_block_stop", "index": 0})
                    self._event(
                        "message_delta",
                        {
                            "type": "message_delta",
                            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                            "usage": {"output_tokens": len(words)},
                        },
                    )
                    self._event("message_stop", {"type": "message_stop"})
                else:
                    self._data(_chunk(model, {}, finish="stop"))
                    if usage_chunk:
                        final = _chunk(model, None)
                        final["choices"] = []
                        final["usage"] = _openai_usage(fake.input_tokens, len(words))
                        self._data(final)
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                with fake._lock:
                    fake.disconnects.append(time.perf_counter())
                fake.disconnected.set()

        def _data(self, payload: dict[str, Any], *, timed: bool = False) -> None:
            self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
            self.wfile.flush()
            if timed:
                fake.sent.append(time.perf_counter())

        def _event(self, name: str, payload: dict[str, Any], *, timed: bool = False) -> None:
            self.wfile.write(f"event: {name}\n".encode())
            self._data(payload, timed=timed)

        def _wait_for_disconnect(self) -> None:
            # Hang until the client closes its end: a readable socket that reads b"" has gone.
            sock = self.connection
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                readable, _, _ = select.select([sock], [], [], 0.005)
                if readable:
                    try:
                        data = sock.recv(1, socket.MSG_PEEK)
                    except OSError:
                        data = b""
                    if not data:
                        with fake._lock:
                            fake.disconnects.append(time.perf_counter())
                        fake.disconnected.set()
                        return
                    sock.recv(len(data))

    return Handler


def _openai_usage(inp: int, out: int) -> dict[str, int]:
    return {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out}


def _completion(model: str, text: str, inp: int, out: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": _openai_usage(inp, out),
    }


def _chunk(model: str, delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
    }


def _message(model: str, text: str, inp: int, out: int) -> dict[str, Any]:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": inp, "output_tokens": out},
    }
