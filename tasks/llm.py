"""The model endpoint: the one module that talks to an OpenAI-compatible chat-completions server.

Everything goes through the official ``openai`` client. Three things are decided here and
nowhere else:

* **Transport errors** (a timeout, a refused connection, HTTP 429 with ``Retry-After``, HTTP
  5xx) are retried with exponential backoff when ``llm.retry_on_transient_errors`` is on, up
  to ``llm.transport_retries`` times. They cost nothing else: no re-ask, no attempt. The
  client's own retries are off (``max_retries=0``) so that this is the only retry loop.
* **The response format**: ``json_schema`` (OpenAI, llama-server), ``json_object_schema``
  (``{"type": "json_object", "schema": …}``, which llama-cpp-python's server wants: it answers
  HTTP 500 to the other form), or ``auto``: ``json_schema`` first, and on a refusal (HTTP
  4xx/5xx that is not a context-length error) the other form, once, for the rest of the run.
* **The reply size**: the body is read in chunks and refused past ``llm.max_reply_bytes``.

Replies are stored by the sha256 of the request sent (``patches/.state/llm/SHA.json``): the
same request on the same base is answered from there and the model is asked nothing. The API
key is read from the environment variable ``llm.api_key_env`` names when the client is made;
it is never logged, stored, or passed on.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import PatchgateError
from .steps import write_json

STAGE = "LLM"
CACHE_DIR = os.path.join("patches", ".state", "llm")
FORMATS = ("json_schema", "json_object_schema", "auto")
# The most a Retry-After header may make us wait, seconds.
MAX_RETRY_AFTER = 60.0
MAX_BACKOFF = 30.0
# Words a server uses when the prompt does not fit its context window (OpenAI, llama.cpp's
# llama-server, llama-cpp-python, vLLM, Ollama).
CONTEXT_WORDS = (
    "context_length_exceeded",
    "context length",
    "context window",
    "context size",
    "maximum context",
    "too many tokens",
    "exceed_context_size",
)


@dataclass(frozen=True)
class LlmSettings:
    """The ``llm:`` section of patchgate.yaml, defaults filled in (config.DEFAULTS["llm"])."""

    endpoint: str
    model: str
    api_key_env: str | None
    timeout: float
    max_retries: int
    max_requeries: int
    retry_on_transient_errors: bool
    transport_retries: int
    backoff_seconds: float
    context_budget: int
    response_format: str
    allow_test_commands: bool
    max_reply_bytes: int
    temperature: float | None

    @classmethod
    def from_config(cls, section: Mapping[str, Any], defaults: Mapping[str, Any]) -> LlmSettings:
        values = {**defaults, **section}
        return cls(
            endpoint=str(values["endpoint"]).rstrip("/"),
            model=str(values["model"]),
            api_key_env=values["api_key_env"],
            timeout=float(values["timeout"]),
            max_retries=int(values["max_retries"]),
            max_requeries=int(values["max_requeries"]),
            retry_on_transient_errors=bool(values["retry_on_transient_errors"]),
            transport_retries=int(values["transport_retries"]),
            backoff_seconds=float(values["backoff_seconds"]),
            context_budget=int(values["context_budget"]),
            response_format=str(values["response_format"]),
            allow_test_commands=bool(values["allow_test_commands"]),
            max_reply_bytes=int(values["max_reply_bytes"]),
            temperature=None if values["temperature"] is None else float(values["temperature"]),
        )

    def identity(self) -> dict[str, Any]:
        """What a reply depends on besides the messages (never the key itself)."""
        return {
            "endpoint": self.endpoint,
            "model": self.model,
            "response_format": self.response_format,
            "temperature": self.temperature,
        }


@dataclass(frozen=True)
class Reply:
    """One chat completion's answer: the message content and what it cost."""

    content: str
    model: str
    prompt_tokens: int | None
    completion_tokens: int | None
    request_sha256: str
    cached: bool
    response_format: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content.encode("utf-8")).hexdigest()


class ContextTooLong(Exception):
    """The server refused the prompt as longer than its context window; str() is its message."""


def api_key(settings: LlmSettings) -> str:
    """The key from the variable ``llm.api_key_env`` names; a placeholder for a local server."""
    if not settings.api_key_env:
        return "not-needed"  # the client insists on some key; local servers ignore it
    value = os.environ.get(settings.api_key_env, "")
    if not value:
        raise PatchgateError(
            "PROPOSE",
            f"llm.api_key_env names {settings.api_key_env}, which is not set; export "
            f"{settings.api_key_env}=<your key> (or set llm.api_key_env: null for a local server)",
        )
    return value


def response_format(mode: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    """The ``response_format`` request field in the form ``mode`` names."""
    if mode == "json_object_schema":
        return {"type": "json_object", "schema": dict(schema)}
    return {
        "type": "json_schema",
        "json_schema": {"name": "proposal_reply", "schema": dict(schema)},
    }


def request_sha256(settings: LlmSettings, messages: Sequence[Mapping[str, str]]) -> str:
    """The key a reply is stored under: the request as sent, but the key."""
    body = {**settings.identity(), "messages": list(messages)}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def is_context_error(message: str) -> bool:
    low = message.lower()
    return any(word in low for word in CONTEXT_WORDS)


def retry_after(headers: Mapping[str, str] | None, fallback: float) -> float:
    """Seconds a 429/503 asks us to wait (``Retry-After`` seconds, or ``retry-after-ms``)."""
    if headers is not None:
        for key, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
            raw = headers.get(key)
            if raw is None:
                continue
            try:
                return min(max(float(raw) * scale, 0.0), MAX_RETRY_AFTER)
            except ValueError:
                continue
    return fallback


def _read_capped(chunks: Iterable[bytes], limit: int) -> bytes:
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) > limit:
            raise PatchgateError(
                STAGE,
                f"the endpoint's reply is larger than {limit} bytes (llm.max_reply_bytes); it "
                "was not read: check the server (a runaway generation?) or raise "
                "llm.max_reply_bytes",
            )
    return bytes(data)


# The HTTP layer under the openai client (httpx, or httpx2 in newer clients) raises its own
# errors for what goes wrong while a body streams in, after openai's own error handling.
TRANSPORT_MODULES = ("httpx", "httpx2", "httpcore", "h11", "anyio")


def _read_body(chunks: Iterable[bytes], limit: int, timeout: float) -> bytes | str:
    """The body (at most ``limit`` bytes), or why the transport failed while it came."""
    try:
        return _read_capped(chunks, limit)
    except PatchgateError:
        raise
    except Exception as exc:
        if type(exc).__module__.split(".")[0] not in TRANSPORT_MODULES:
            raise
        if "timeout" in type(exc).__name__.lower():
            return f"no answer within {timeout:g}s (llm.timeout)"
        said = " ".join(str(exc).split())[:120] or type(exc).__name__
        return f"the connection broke while the reply came ({said})"


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return " ".join(str(inner["message"]).split())[:200]
        if isinstance(inner, str):
            return " ".join(inner.split())[:200]
    return " ".join(str(getattr(exc, "message", exc)).split())[:200]


class _Refused(Exception):
    """An HTTP error the auto response format falls back on."""


class Endpoint:
    """A chat-completions endpoint, with the reply store and the transport retry loop."""

    def __init__(self, settings: LlmSettings, root: str, log: Any) -> None:
        import openai  # ~0.3 s to import: only commands that talk to a model pay it

        self.settings = settings
        self.root = root
        self.log = log  # a callable taking one line
        auto = settings.response_format == "auto"
        self.mode = "json_schema" if auto else settings.response_format
        self.fallback_left = settings.response_format == "auto"
        self.client = openai.OpenAI(
            base_url=settings.endpoint,
            api_key=api_key(settings),
            timeout=settings.timeout,
            max_retries=0,
        )
        self.asked = 0

    def cache_path(self, sha: str) -> str:
        return os.path.join(self.root, CACHE_DIR, f"{sha}.json")

    def complete(self, messages: Sequence[Mapping[str, str]], schema: Mapping[str, Any]) -> Reply:
        """The reply to ``messages``: from the store when this request was answered before."""
        sha = request_sha256(self.settings, messages)
        stored = self._stored(sha)
        if stored is not None:
            return stored
        while True:
            try:
                raw = self._send(messages, schema, refusal_falls_back=self.fallback_left)
                break
            except _Refused as why:
                self.fallback_left = False
                self.mode = "json_object_schema"
                self.log(
                    f"llm: the endpoint refused response_format json_schema ({why}); "
                    "asking again with json_object + schema (set llm.response_format: "
                    "json_object_schema to skip this)"
                )
        reply = self._parse(raw, sha)
        record = {
            "request_sha256": sha,
            "content": reply.content,
            "model": reply.model,
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "response_format": reply.response_format,
            "endpoint": self.settings.endpoint,
        }
        write_json(self.cache_path(sha), record)
        return reply

    def _stored(self, sha: str) -> Reply | None:
        path = self.cache_path(sha)
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            return Reply(
                content=str(data["content"]),
                model=str(data["model"]),
                prompt_tokens=data.get("prompt_tokens"),
                completion_tokens=data.get("completion_tokens"),
                request_sha256=sha,
                cached=True,
                response_format=str(data.get("response_format", self.mode)),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _body(self, messages: Sequence[Mapping[str, str]], schema: Mapping[str, Any]) -> Any:
        extra: dict[str, Any] = {"response_format": response_format(self.mode, schema)}
        if self.settings.temperature is not None:
            extra["temperature"] = self.settings.temperature
        return extra

    def _send(
        self,
        messages: Sequence[Mapping[str, str]],
        schema: Mapping[str, Any],
        refusal_falls_back: bool,
    ) -> bytes:
        """The raw body of a 200 answer; transport errors retried as configured."""
        import openai

        s = self.settings
        tries = 1 + (s.transport_retries if s.retry_on_transient_errors else 0)
        why = ""
        for n in range(tries):
            wait = min(s.backoff_seconds * (2**n), MAX_BACKOFF)
            try:
                self.asked += 1
                with self.client.chat.completions.with_streaming_response.create(
                    model=s.model,
                    messages=list(messages),  # type: ignore[arg-type]
                    extra_body=self._body(messages, schema),
                ) as response:
                    body = _read_body(response.iter_bytes(), s.max_reply_bytes, s.timeout)
                    if isinstance(body, bytes):
                        return body
                    why = body
            except openai.APITimeoutError:
                why = f"no answer within {s.timeout:g}s (llm.timeout)"
            except openai.APIConnectionError as exc:
                cause = exc.__cause__ or exc
                why = f"cannot connect ({' '.join(str(cause).split())[:120]})"
            except openai.APIStatusError as exc:
                message = _server_message(exc)
                code = exc.status_code
                if is_context_error(message):
                    raise ContextTooLong(message) from None
                if refusal_falls_back and code in (400, 422, 500):
                    raise _Refused(f"HTTP {code}: {message}") from None
                if code == 429 or code >= 500:
                    why = f"HTTP {code}: {message}"
                    wait = retry_after(exc.response.headers, wait)
                elif code in (401, 403):
                    raise PatchgateError(
                        STAGE,
                        f"the endpoint {s.endpoint} refused the key (HTTP {code}: {message}); "
                        "check the key in the variable llm.api_key_env names",
                    ) from None
                elif code == 404:
                    raise PatchgateError(
                        STAGE,
                        f"the endpoint {s.endpoint} has no chat completions or no model "
                        f"{s.model!r} (HTTP 404: {message}); check llm.endpoint (it ends in "
                        "/v1) and llm.model",
                    ) from None
                else:
                    raise PatchgateError(
                        STAGE,
                        f"the endpoint {s.endpoint} refused the request (HTTP {code}: "
                        f"{message}); check llm.model and llm.response_format",
                    ) from None
            if n + 1 < tries:
                self.log(f"llm: {why}; retrying in {wait:.1f}s ({n + 1}/{tries - 1})")
                time.sleep(wait)
        retried = f" after {tries} tries" if tries > 1 else ""
        raise PatchgateError(
            STAGE,
            f"the model endpoint {s.endpoint} failed: {why}{retried}; start the server or fix "
            "llm.endpoint, then run the same command again",
        )

    def _parse(self, raw: bytes, sha: str) -> Reply:
        """A chat completion's content; anything else is a one-line LLM error."""
        from openai.types.chat import ChatCompletion
        from pydantic import ValidationError

        start = raw[:60].decode("utf-8", errors="replace").strip()
        try:
            data = json.loads(raw)
        except ValueError:
            kind = "HTML" if start.lower().startswith(("<!doctype", "<html")) else "no JSON"
            raise PatchgateError(
                STAGE,
                f"the endpoint {self.settings.endpoint} answered with {kind}, not a chat "
                f"completion (it starts {start[:40]!r}); llm.endpoint must be the "
                "OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1",
            ) from None
        try:
            completion = ChatCompletion.model_validate(data)
            content = completion.choices[0].message.content
        except (ValidationError, IndexError):
            content = None
            completion = None
        if completion is None or content is None:
            raise PatchgateError(
                STAGE,
                f"the endpoint {self.settings.endpoint} answered with JSON that is not a chat "
                "completion with a message; check that it is OpenAI-compatible "
                "(/v1/chat/completions)",
            )
        usage = completion.usage
        return Reply(
            content=content,
            model=completion.model or self.settings.model,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            request_sha256=sha,
            cached=False,
            response_format=self.mode,
        )
