"""A small OpenAI-compatible server on 127.0.0.1 that replays scripted replies.

For the tests and ``doit demo``: it speaks the real protocol (``POST /v1/chat/completions``,
``GET /v1/models``), so patchgate's real ``openai`` client is what talks to it. It records every
request it gets and can misbehave on cue: each scripted step is one answer, in order.

    with FakeLLM() as fake:
        fake.script(Step.reply({...}), Step.status(429, retry_after=0), Step.hang(5))
        ... llm.endpoint: fake.endpoint ...
        fake.requests  # what it was asked

Steps: ``reply`` (a chat completion whose content is the JSON of a dict, or a string as it
is), ``status`` (an HTTP error with an OpenAI-style error body), ``context_error`` (the 400 a
server sends for a prompt longer than its window), ``hang`` (answer nothing for N seconds),
``html`` (a web page), ``big`` (a 200 body of N bytes). With nothing left to replay it answers
HTTP 400 "no scripted reply left". ``python -m patchgate.fakellm SCRIPT.json`` serves a script
of reply objects from the command line (see docs/propose.md).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Step:
    """One scripted answer."""

    kind: str
    content: str = ""
    status_code: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    size: int = 0
    usage: tuple[int, int] = (100, 50)

    @classmethod
    def reply(cls, body: Mapping[str, Any] | str, usage: tuple[int, int] = (100, 50)) -> Step:
        content = body if isinstance(body, str) else json.dumps(body)
        return cls("reply", content=content, usage=usage)

    @classmethod
    def status(cls, code: int, message: str = "injected", retry_after: float | None = None) -> Step:
        headers = () if retry_after is None else (("Retry-After", f"{retry_after:g}"),)
        return cls("status", content=message, status_code=code, headers=headers)

    @classmethod
    def context_error(cls) -> Step:
        return cls(
            "status",
            content="This model's maximum context length is 2048 tokens; the request exceeds it",
            status_code=400,
        )

    @classmethod
    def hang(cls, seconds: float) -> Step:
        return cls("hang", seconds=seconds)

    @classmethod
    def html(cls) -> Step:
        return cls("html", content="<!DOCTYPE html><html><body><h1>Welcome</h1></body></html>")

    @classmethod
    def big(cls, size: int) -> Step:
        return cls("big", size=size)

    @classmethod
    def cut_short(cls) -> Step:
        """Headers promising a body, half of it, then the connection closes."""
        return cls("cut", size=1000)


@dataclass
class FakeLLM:
    """The server; start() binds 127.0.0.1 on a free port, stop() ends it (and any hang)."""

    model: str = "fake-model"
    steps: list[Step] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *steps: Step) -> None:
        """Replace what is left to replay; forget the requests recorded so far."""
        with self._lock:
            self.steps = list(steps)
            self.requests.clear()

    def next_step(self, request: dict[str, Any]) -> Step | None:
        with self._lock:
            self.requests.append(request)
            return self.steps.pop(0) if self.steps else None

    def start(self) -> FakeLLM:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self, seconds: float) -> None:
        self._stopping.wait(seconds)


def completion(model: str, content: str, usage: tuple[int, int]) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-fake-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": usage[0] + usage[1],
        },
    }


def _handler(fake: FakeLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def _send(
            self, code: int, body: bytes, ctype: str, headers: tuple[tuple[str, str], ...] = ()
        ) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers:
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, data: Any, headers: tuple[tuple[str, str], ...] = ()) -> None:
            self._send(code, json.dumps(data).encode(), "application/json", headers)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._json(200, {"object": "list", "data": [{"id": fake.model, "object": "model"}]})
            else:
                self._json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._json(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._json(400, {"error": {"message": "request body is not JSON"}})
                return
            step = fake.next_step(
                {"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
            )
            if step is None:
                self._json(400, {"error": {"message": "fake: no scripted reply left"}})
            elif step.kind == "reply":
                self._json(200, completion(fake.model, step.content, step.usage))
            elif step.kind == "status":
                error = {"message": step.content, "type": "fake", "code": step.status_code}
                self._json(step.status_code, {"error": error}, step.headers)
            elif step.kind == "hang":
                fake.wait(step.seconds)
                self.close_connection = True
            elif step.kind == "html":
                self._send(200, step.content.encode(), "text/html")
            elif step.kind == "big":
                self._send_big(step.size)
            elif step.kind == "cut":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(step.size))
                self.end_headers()
                self.wfile.write(b'{"id": "')
                self.close_connection = True

        def _send_big(self, size: int) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b" " * (1 << 20)
            left = size
            try:
                while left > 0:
                    self.wfile.write(chunk[: min(left, len(chunk))])
                    left -= len(chunk)
            except OSError:  # the client stopped reading: that is the point
                self.close_connection = True

    return Handler


def _steps_of(script: list[Any]) -> Iterator[Step]:
    for item in script:
        yield Step.reply(item)


def main(argv: list[str]) -> int:
    """python -m patchgate.fakellm SCRIPT.json [PORT]: serve its replies until Ctrl-C."""
    if not argv:
        print("usage: python -m patchgate.fakellm SCRIPT.json [PORT]", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as fh:
        script = json.load(fh)
    fake = FakeLLM(port=int(argv[1]) if len(argv) > 1 else 8080)
    fake.steps = list(_steps_of(script))
    fake.start()
    print(f"fake model endpoint: {fake.endpoint} ({len(fake.steps)} scripted replies)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
