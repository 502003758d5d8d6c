"""A small stateful fake GitHub on 127.0.0.1, for the tests and ``doit demo``.

It speaks the REST endpoints patchgate uses (``tasks/forge.py``): commit statuses and the
combined status, check runs and their annotations, issues and their comments, pull requests,
and branches, which it reads from a real bare git repository (pushes go there with real git).
Callers change CI's state directly (``add_check_run``, ``add_status``) and script faults
(``script``: a status, headers, a raw body, a delay) for the next matching requests.

    with FakeGitHub("octo", "calc", remote=Path("remote.git")) as fake:
        fake.add_issue(1, "mean() of nothing raises")
        ... forge: {repository: octo/calc, api_url: fake.url} ...
        fake.comments[1]  # what patchgate wrote

Its answers are shaped by GitHub's own OpenAPI description when one is given (``spec``:
``load_spec(PATH)``; the source tree has the endpoints' subset in ``tests/data/gh-subset.json``):
every required field is filled. Without it an answer holds the fields patchgate reads. The
tests (``tests/fakegithub.py``) also validate every request and response against that
description through the ``check_request`` / ``check_response`` hooks; the demo does not need
openapi-core. The server is the standard library's (``http.server``), one thread per request.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from . import git


def load_spec(path: Path) -> dict[str, Any]:
    """GitHub's OpenAPI description (a subset), with null allowed in nullable enums."""
    spec: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    _allow_null_in_nullable_enums(spec)
    return spec


def _allow_null_in_nullable_enums(node: Any) -> None:
    """GitHub's description marks e.g. a check run's ``conclusion`` ``nullable`` with an
    ``enum`` that lacks null; GitHub sends null for a running check, and openapi-core (strict
    about OpenAPI 3.0) refuses it. The one adjustment made to the description: null joins such
    enums."""
    if isinstance(node, dict):
        if node.get("nullable") and isinstance(node.get("enum"), list) and None not in node["enum"]:
            node["enum"].append(None)
        for value in node.values():
            _allow_null_in_nullable_enums(value)
    elif isinstance(node, list):
        for value in node:
            _allow_null_in_nullable_enums(value)


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- schema-shaped objects -----------------------------------------------------------------


def instance(
    spec: Mapping[str, Any] | None,
    schema: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
) -> Any:
    """A minimal value valid for ``schema`` (required properties only), with ``overrides``.

    Real state (ids, states, bodies, shas) goes in through ``overrides``; the filler only
    supplies the many URL and bookkeeping fields GitHub always sends. Without a ``spec``: the
    overrides alone.
    """
    if spec is None:
        return dict(overrides or {})
    while "$ref" in schema:
        _, _, sect, name = schema["$ref"].split("/", 3)
        schema = spec["components"][sect][name]
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            value = instance(spec, part)
            if isinstance(value, dict):
                merged.update(value)
        merged.update(overrides or {})
        return merged
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"]
            return instance(spec, options[0], overrides)
    if overrides is not None and schema.get("type", "object") != "object":
        return overrides
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next(k for k in kind if k != "null")
    if kind == "object":
        out: dict[str, Any] = {}
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name in (overrides or {}):
                continue
            sub = props.get(name, {"type": "string"})
            out[name] = None if sub.get("nullable") else instance(spec, sub)
        out.update(overrides or {})
        return out
    if kind == "array":
        return []
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return False
    fmt = schema.get("format")
    if fmt == "date-time":
        return stamp()
    if fmt == "uri":
        return "https://github.invalid/x"
    if fmt == "email":
        return "x@github.invalid"
    return "x"


def schema_of(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


# --- one request, one answer -------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One HTTP request as the fake saw it (header names lower-case)."""

    method: str
    path: str
    args: Mapping[str, str]
    headers: Mapping[str, str]
    data: bytes

    def json(self) -> Any:
        if not self.data:
            return None
        try:
            return json.loads(self.data)
        except ValueError:
            return None


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass
class Scripted:
    method: str
    path: re.Pattern[str]
    status: int
    body: bytes
    headers: dict[str, str]
    times: int
    delay: float = 0.0


# --- the fake --------------------------------------------------------------------------------


@dataclass
class FakeGitHub:
    owner: str
    name: str
    remote: Path | None = None
    token: str | None = None
    spec: dict[str, Any] | None = None
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    check_runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    annotations: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    pull_commits: dict[int, list[str]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    scripted: list[Scripted] = field(default_factory=list)
    url: str = ""
    not_modified: int = 0

    def __post_init__(self) -> None:
        self._ids = itertools.count(1000)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- serving ---------------------------------------------------------------------------

    def start(self) -> FakeGitHub:
        """Serve on 127.0.0.1, a free port (``url``), from a daemon thread."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- state callers set -----------------------------------------------------------------

    def shape(self, name: str, overrides: Mapping[str, Any] | None = None) -> Any:
        return instance(self.spec, schema_of(name), overrides)

    def user(self, login: str) -> dict[str, Any]:
        found: dict[str, Any] = self.shape(
            "simple-user", {"login": login, "id": abs(hash(login)) % 10**6}
        )
        return found

    def next_id(self) -> int:
        return next(self._ids)

    def add_issue(self, number: int, title: str = "a bug", author: str = "reporter") -> None:
        self.issues[number] = self.shape(
            "issue",
            {
                "number": number,
                "id": self.next_id(),
                "title": title,
                "state": "open",
                "user": self.user(author),
                "labels": [],
                "comments": 0,
                "locked": False,
                "assignee": None,
                "milestone": None,
                "closed_at": None,
            },
        )
        self.comments.setdefault(number, [])

    def add_pull(self, number: int, author: str, commits: list[str], head: str = "fix") -> None:
        self.add_issue(number, f"PR {number}", author)
        self.pulls[number] = self._pull(number, author, head, "main", "a change", "")
        self.pull_commits[number] = list(commits)

    def _pull(
        self, number: int, author: str, head: str, base: str, title: str, body: str
    ) -> dict[str, Any]:
        full = self.shape("pull-request")
        ref = {
            **full.get("head", {}),
            "ref": head,
            "sha": self.branch_sha(head) or "0" * 40,
            "label": f"{self.owner}:{head}",
        }
        repo = full.get("base", {}).get("repo")
        url = f"https://github.invalid/{self.owner}/{self.name}/pull/{number}"
        pull: dict[str, Any] = self.shape(
            "pull-request",
            {
                "number": number,
                "id": self.next_id(),
                "title": title,
                "body": body,
                "state": "open",
                "html_url": url,
                "user": self.user(author),
                "head": {**ref, "repo": repo, "user": self.user(self.owner)},
                "base": {
                    **ref,
                    "ref": base,
                    "repo": repo,
                    "user": self.user(self.owner),
                    "label": f"{self.owner}:{base}",
                },
                "labels": [],
                "locked": False,
                "merged": False,
                "mergeable": None,
                "merged_by": None,
                "assignee": None,
                "milestone": None,
                "auto_merge": None,
                "merge_commit_sha": None,
                "closed_at": None,
                "merged_at": None,
                "author_association": "CONTRIBUTOR",
                "active_lock_reason": None,
            },
        )
        return pull

    def add_check_run(
        self,
        sha: str,
        name: str,
        conclusion: str | None,
        status: str = "completed",
        annotations: list[dict[str, Any]] | None = None,
    ) -> int:
        run_id = self.next_id()
        run = self.shape(
            "check-run",
            {
                "id": run_id,
                "head_sha": sha,
                "name": name,
                "status": status,
                "conclusion": conclusion,
                "details_url": f"https://ci.invalid/{self.owner}/{self.name}/runs/{run_id}",
                "html_url": f"https://github.invalid/{self.owner}/{self.name}/runs/{run_id}",
                "external_id": str(run_id),
                "completed_at": stamp() if status == "completed" else None,
                "started_at": stamp(),
                "check_suite": {"id": 1},
                "pull_requests": [],
                "app": None,
            },
        )
        with self._lock:
            self.check_runs.setdefault(sha, []).append(run)
            self.annotations[run_id] = [
                self.shape(
                    "check-annotation",
                    {
                        "annotation_level": "failure",
                        "start_line": 1,
                        "end_line": 1,
                        "start_column": None,
                        "end_column": None,
                        "raw_details": None,
                        **a,
                    },
                )
                for a in annotations or []
            ]
        return run_id

    def add_comment(self, number: int, body: str, author: str = "someone") -> None:
        self.comments[number].append(
            self.shape(
                "issue-comment",
                {
                    "id": self.next_id(),
                    "body": body,
                    "user": self.user(author),
                    "performed_via_github_app": None,
                },
            )
        )

    def add_status(self, sha: str, context: str, state: str, target_url: str | None = None) -> None:
        with self._lock:
            self._new_status(sha, {"context": context, "state": state, "target_url": target_url})

    def _new_status(self, sha: str, body: Mapping[str, Any]) -> dict[str, Any]:
        status: dict[str, Any] = self.shape(
            "status",
            {
                "id": self.next_id(),
                "state": body["state"],
                "context": body.get("context") or "default",
                "description": body.get("description"),
                "target_url": body.get("target_url"),
                "creator": self.user("patchgate-bot"),
                "created_at": stamp(),
                "updated_at": stamp(),
            },
        )
        self.statuses.setdefault(sha, []).insert(0, status)
        return status

    def script(
        self,
        method: str,
        path: str,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
        delay: float = 0.0,
    ) -> None:
        """The next ``times`` requests METHOD matching regex ``path`` get this answer."""
        raw = body if isinstance(body, bytes) else json.dumps(body or {"message": "x"}).encode()
        self.scripted.append(
            Scripted(method, re.compile(path), status, raw, headers or {}, times, delay)
        )

    def branch_sha(self, branch: str) -> str | None:
        if self.remote is None:
            return None
        return git.commit_of(str(self.remote), f"refs/heads/{branch}")

    def posted(self, method: str, pattern: str) -> list[dict[str, Any] | None]:
        rx = re.compile(pattern)
        return [body for m, p, body in self.requests if m == method and rx.search(p)]

    # --- the HTTP side ---------------------------------------------------------------------

    def check_request(self, call: Call) -> str | None:
        """A problem with this request (the tests validate it against the OpenAPI
        description), or None."""
        return None

    def check_response(self, call: Call, answer: Answer) -> str | None:
        """A problem with this answer, or None (see ``check_request``)."""
        return None

    def handle(self, call: Call) -> Answer:
        body = call.json()
        self.requests.append((call.method, call.path, body if isinstance(body, dict) else None))
        for item in self.scripted:
            if item.times > 0 and item.method == call.method and item.path.search(call.path):
                item.times -= 1
                if item.delay:
                    time.sleep(item.delay)
                return Answer(item.status, item.body, item.headers)
        problem = self.check_request(call)
        if problem:
            self.problems.append(f"request {call.method} {call.path}: {problem}")
            return self.json(422, {"message": "Validation Failed", "documentation_url": "x"})
        if self.token is not None and call.headers.get("authorization") != f"Bearer {self.token}":
            return self.json(401, {"message": "Bad credentials", "documentation_url": "x"})
        with self._lock:
            answer = self.route(call, body)
        if answer.status == 304:
            self.not_modified += 1
            return answer
        problem = self.check_response(call, answer)
        if problem:
            self.problems.append(f"response {call.method} {call.path}: {problem}")
        return answer

    def json(self, status: int, data: Any, call: Call | None = None) -> Answer:
        raw = json.dumps(data).encode()
        etag = f'W/"{hashlib.sha256(raw).hexdigest()[:32]}"'
        if call is not None and call.headers.get("if-none-match") == etag:
            return Answer(304, b"", {"ETag": etag})
        return Answer(status, raw, {"ETag": etag} if call is not None else {})

    def not_found(self) -> Answer:
        return self.json(404, {"message": "Not Found", "documentation_url": "x"})

    def route(self, call: Call, body: Any) -> Answer:
        prefix = f"/repos/{self.owner}/{self.name}"
        path = call.path
        if not path.startswith(prefix):
            return self.not_found()
        tail = path[len(prefix) :]
        m = call.method
        if m == "POST" and (hit := re.fullmatch(r"/statuses/(\w+)", tail)):
            return self.json(201, self._new_status(hit[1], body))
        if m == "GET" and (hit := re.fullmatch(r"/commits/(\w+)/status", tail)):
            return self.json(200, self.combined(hit[1]), call)
        if m == "GET" and (hit := re.fullmatch(r"/commits/(\w+)/check-runs", tail)):
            runs = self.check_runs.get(hit[1], [])
            return self.json(200, {"total_count": len(runs), "check_runs": runs}, call)
        if m == "GET" and (hit := re.fullmatch(r"/check-runs/(\d+)/annotations", tail)):
            if int(hit[1]) not in self.annotations:
                return self.not_found()
            return self.json(200, self.annotations[int(hit[1])], call)
        if m == "GET" and (hit := re.fullmatch(r"/commits/(\w+)/pulls", tail)):
            sha = hit[1]
            found = [
                self.simple_pull(n)
                for n, shas in sorted(self.pull_commits.items())
                if any(s.startswith(sha) or sha.startswith(s) for s in shas if s)
            ]
            return self.json(200, found)
        if hit := re.fullmatch(r"/issues/(\d+)/comments", tail):
            number = int(hit[1])
            if number not in self.issues:
                return self.not_found()
            if m == "POST":
                self.add_comment(number, body["body"], "patchgate-bot")
                return self.json(201, self.comments[number][-1])
            page = int(call.args.get("page", 1))
            per = int(call.args.get("per_page", 30))
            items = self.comments[number][(page - 1) * per : page * per]
            return self.json(200, items)
        if m == "PATCH" and (hit := re.fullmatch(r"/issues/comments/(\d+)", tail)):
            for comments in self.comments.values():
                for comment in comments:
                    if comment["id"] == int(hit[1]):
                        comment["body"] = body["body"]
                        comment["updated_at"] = stamp()
                        return self.json(200, comment)
            return self.not_found()
        if m == "GET" and (hit := re.fullmatch(r"/issues/(\d+)", tail)):
            issue = self.issues.get(int(hit[1]))
            return self.json(200, issue) if issue else self.not_found()
        if m == "GET" and (hit := re.fullmatch(r"/pulls/(\d+)", tail)):
            pull = self.pulls.get(int(hit[1]))
            return self.json(200, pull) if pull else self.not_found()
        if m == "GET" and tail == "/pulls":
            head = call.args.get("head", "")
            found = [
                self.simple_pull(n)
                for n, p in sorted(self.pulls.items())
                if not head or f"{self.owner}:{p['head']['ref']}" == head
            ]
            return self.json(200, found)
        if m == "POST" and tail == "/pulls":
            if self.branch_sha(body["head"]) is None:
                return self.json(
                    422, {"message": "Validation Failed", "documentation_url": "x", "errors": []}
                )
            number = max([*self.issues, 0]) + 1
            self.add_issue(number, body["title"], "patchgate-bot")
            self.pulls[number] = self._pull(
                number,
                "patchgate-bot",
                body["head"],
                body["base"],
                body["title"],
                body.get("body") or "",
            )
            self.pull_commits[number] = [self.branch_sha(body["head"]) or ""]
            return self.json(201, self.pulls[number])
        if m == "PATCH" and (hit := re.fullmatch(r"/pulls/(\d+)", tail)):
            pull = self.pulls.get(int(hit[1]))
            if pull is None:
                return self.not_found()
            for key in ("title", "body", "state"):
                if key in body:
                    pull[key] = body[key]
            return self.json(200, pull)
        if m == "GET" and (hit := re.fullmatch(r"/branches/(.+)", tail)):
            sha = self.branch_sha(hit[1])
            if sha is None:
                return self.not_found()
            branch = self.shape("branch-with-protection", {"name": hit[1], "protected": False})
            branch["commit"] = {**branch.get("commit", {}), "sha": sha}
            return self.json(200, branch, call)
        return self.not_found()

    def simple_pull(self, number: int) -> dict[str, Any]:
        full = self.pulls[number]
        if self.spec is None:
            return dict(full)
        simple = self.shape("pull-request-simple")
        return {k: full[k] for k in simple if k in full}

    def combined(self, sha: str) -> dict[str, Any]:
        latest: dict[str, dict[str, Any]] = {}
        for status in self.statuses.get(sha, []):  # newest first
            latest.setdefault(status["context"], status)
        states = [s["state"] for s in latest.values()]
        if any(s in ("failure", "error") for s in states):
            state = "failure"
        elif not states or "pending" in states:
            state = "pending"
        else:
            state = "success"
        combined: dict[str, Any] = self.shape(
            "combined-commit-status",
            {
                "state": state,
                "sha": sha,
                "total_count": len(latest),
                "statuses": [
                    self.shape(
                        "simple-commit-status",
                        {k: v for k, v in s.items() if k not in ("creator", "node_id")},
                    )
                    for s in latest.values()
                ],
            },
        )
        return combined


def _handler(fake: FakeGitHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            call = Call(
                method=self.command,
                path=parts.path,
                args=dict(parse_qsl(parts.query)),
                headers={k.lower(): v for k, v in self.headers.items()},
                data=raw,
            )
            try:
                answer = fake.handle(call)
            except Exception as exc:  # a bug of the fake: an answer, not a hung client
                fake.problems.append(f"fake: {call.method} {call.path}: {exc!r}")
                answer = Answer(500, json.dumps({"message": f"fake: {exc!r}"}).encode())
            self.send_response(answer.status)
            for key, value in answer.headers.items():
                self.send_header(key, value)
            if answer.status != 304:
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if answer.status != 304:
                self.wfile.write(answer.body)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    return Handler
