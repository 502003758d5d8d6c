"""A stateful fake GitHub on 127.0.0.1 whose every request and response is checked against
GitHub's own OpenAPI description (``tests/data/gh-subset.json``, cut by
``tests/data/trim_github_openapi.py`` from the npm package ``@octokit/openapi``).

It keeps what patchgate reads and writes: commit statuses (and the combined status), check runs
and their annotations, issues and their comments, pull requests, and branches, which it reads
from a real bare git repository (pushes go there with real git). Tests change CI's state
directly (``add_check_run``, ``add_status``) and script faults (``script``: a status, headers,
a raw body, a delay) for the next matching requests.

Any request or response that does not match the description is recorded in ``problems``; the
fixture fails the test with them. Scripted fault answers and 304s are not checked (they are
the faults under test); everything else is.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

SPEC_PATH = Path(__file__).resolve().parent / "data" / "gh-subset.json"
_spec_cache: dict[str, Any] = {}
_api_cache: dict[str, OpenAPI] = {}


def load_spec() -> dict[str, Any]:
    if "spec" not in _spec_cache:
        spec = json.loads(SPEC_PATH.read_text())
        _allow_null_in_nullable_enums(spec)
        _spec_cache["spec"] = spec
    return _spec_cache["spec"]  # type: ignore[no-any-return]


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


def instance(schema: dict[str, Any], overrides: dict[str, Any] | None = None) -> Any:
    """A minimal value valid for ``schema`` (required properties only), with ``overrides``.

    Real state (ids, states, bodies, shas) goes in through ``overrides``; the filler only
    supplies the many URL and bookkeeping fields GitHub always sends.
    """
    spec = load_spec()
    while "$ref" in schema:
        _, _, sect, name = schema["$ref"].split("/", 3)
        schema = spec["components"][sect][name]
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            value = instance(part)
            if isinstance(value, dict):
                merged.update(value)
        merged.update(overrides or {})
        return merged
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"]
            return instance(options[0], overrides)
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
            out[name] = None if sub.get("nullable") else instance(sub)
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


def user(login: str) -> dict[str, Any]:
    return instance(schema_of("simple-user"), {"login": login, "id": abs(hash(login)) % 10**6})


# --- the fake --------------------------------------------------------------------------------


@dataclass
class Scripted:
    method: str
    path: re.Pattern[str]
    status: int
    body: bytes
    headers: dict[str, str]
    times: int
    delay: float = 0.0


@dataclass
class FakeGitHub:
    owner: str
    name: str
    remote: Path | None = None
    token: str | None = None
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

    # --- state tests set -------------------------------------------------------------------

    def next_id(self) -> int:
        return next(self._ids)

    def add_issue(self, number: int, title: str = "a bug", author: str = "reporter") -> None:
        self.issues[number] = instance(
            schema_of("issue"),
            {
                "number": number,
                "id": self.next_id(),
                "title": title,
                "state": "open",
                "user": user(author),
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
        full = instance(schema_of("pull-request"))
        ref = {
            **full["head"],
            "ref": head,
            "sha": self.branch_sha(head) or "0" * 40,
            "label": f"{self.owner}:{head}",
        }
        return instance(
            schema_of("pull-request"),
            {
                "number": number,
                "id": self.next_id(),
                "title": title,
                "body": body,
                "state": "open",
                "user": user(author),
                "head": {**ref, "repo": full["base"]["repo"], "user": user(self.owner)},
                "base": {
                    **ref,
                    "ref": base,
                    "repo": full["base"]["repo"],
                    "user": user(self.owner),
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

    def add_check_run(
        self,
        sha: str,
        name: str,
        conclusion: str | None,
        status: str = "completed",
        annotations: list[dict[str, Any]] | None = None,
    ) -> int:
        run_id = self.next_id()
        run = instance(
            schema_of("check-run"),
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
                instance(
                    schema_of("check-annotation"),
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
            instance(
                schema_of("issue-comment"),
                {
                    "id": self.next_id(),
                    "body": body,
                    "user": user(author),
                    "performed_via_github_app": None,
                },
            )
        )

    def add_status(self, sha: str, context: str, state: str, target_url: str | None = None) -> None:
        with self._lock:
            self._new_status(sha, {"context": context, "state": state, "target_url": target_url})

    def _new_status(self, sha: str, body: dict[str, Any]) -> dict[str, Any]:
        status = instance(
            schema_of("status"),
            {
                "id": self.next_id(),
                "state": body["state"],
                "context": body.get("context") or "default",
                "description": body.get("description"),
                "target_url": body.get("target_url"),
                "creator": user("patchgate-bot"),
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
        done = subprocess.run(
            (
                "git",
                "--git-dir",
                str(self.remote),
                "rev-parse",
                "-q",
                "--verify",
                f"refs/heads/{branch}",
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip() if done.returncode == 0 else None

    def posted(self, method: str, pattern: str) -> list[dict[str, Any] | None]:
        rx = re.compile(pattern)
        return [body for m, p, body in self.requests if m == method and rx.search(p)]

    # --- the HTTP side ---------------------------------------------------------------------

    def api(self) -> OpenAPI:
        """The validator (loading it costs ~1.5 s: one per test session)."""
        if "api" not in _api_cache:
            spec = dict(load_spec())
            spec["servers"] = [{"url": "/"}]  # any host: the fake's port changes per test
            _api_cache["api"] = OpenAPI.from_dict(spec)
        return _api_cache["api"]

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        response = self.handle(request)
        return response(environ, start_response)

    def handle(self, request: Request) -> Response:
        body = request.get_json(silent=True) if request.data else None
        self.requests.append((request.method, request.path, body))
        for item in self.scripted:
            if item.times > 0 and item.method == request.method and item.path.search(request.path):
                item.times -= 1
                if item.delay:
                    time.sleep(item.delay)
                return Response(
                    item.body,
                    status=item.status,
                    headers=item.headers,
                    content_type="application/json",
                )
        try:
            self.api().validate_request(WerkzeugOpenAPIRequest(request))
        except Exception as exc:
            self.problems.append(f"request {request.method} {request.path}: {exc}")
            return self.json(422, {"message": "Validation Failed", "documentation_url": "x"})
        if (
            self.token is not None
            and request.headers.get("Authorization") != f"Bearer {self.token}"
        ):
            return self.json(401, {"message": "Bad credentials", "documentation_url": "x"})
        with self._lock:
            response = self.route(request, body)
        if response.status_code == 304:
            self.not_modified += 1
            return response
        try:
            self.api().validate_response(
                WerkzeugOpenAPIRequest(request), WerkzeugOpenAPIResponse(response)
            )
        except Exception as exc:
            self.problems.append(f"response {request.method} {request.path}: {exc}")
        return response

    def json(self, status: int, data: Any, request: Request | None = None) -> Response:
        raw = json.dumps(data).encode()
        etag = f'W/"{hashlib.sha256(raw).hexdigest()[:32]}"'
        if request is not None and request.headers.get("If-None-Match") == etag:
            return Response(b"", status=304, headers={"ETag": etag})
        headers = {"ETag": etag} if request is not None else {}
        return Response(raw, status=status, headers=headers, content_type="application/json")

    def not_found(self) -> Response:
        return self.json(404, {"message": "Not Found", "documentation_url": "x"})

    def route(self, request: Request, body: Any) -> Response:
        prefix = f"/repos/{self.owner}/{self.name}"
        path = request.path
        if not path.startswith(prefix):
            return self.not_found()
        tail = path[len(prefix) :]
        m = request.method
        if m == "POST" and (hit := re.fullmatch(r"/statuses/(\w+)", tail)):
            return self.json(201, self._new_status(hit[1], body))
        if m == "GET" and (hit := re.fullmatch(r"/commits/(\w+)/status", tail)):
            return self.json(200, self.combined(hit[1]), request)
        if m == "GET" and (hit := re.fullmatch(r"/commits/(\w+)/check-runs", tail)):
            runs = self.check_runs.get(hit[1], [])
            return self.json(200, {"total_count": len(runs), "check_runs": runs}, request)
        if m == "GET" and (hit := re.fullmatch(r"/check-runs/(\d+)/annotations", tail)):
            if int(hit[1]) not in self.annotations:
                return self.not_found()
            return self.json(200, self.annotations[int(hit[1])], request)
        if m == "GET" and (hit := re.fullmatch(r"/commits/(\w+)/pulls", tail)):
            found = [
                self.simple_pull(n)
                for n, shas in sorted(self.pull_commits.items())
                if any(s.startswith(hit[1]) or hit[1].startswith(s) for s in shas)
            ]
            return self.json(200, found)
        if hit := re.fullmatch(r"/issues/(\d+)/comments", tail):
            number = int(hit[1])
            if number not in self.issues:
                return self.not_found()
            if m == "POST":
                self.add_comment(number, body["body"], "patchgate-bot")
                return self.json(201, self.comments[number][-1])
            page = int(request.args.get("page", 1))
            per = int(request.args.get("per_page", 30))
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
            head = request.args.get("head", "")
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
            branch = instance(
                schema_of("branch-with-protection"),
                {"name": hit[1], "protected": False},
            )
            branch["commit"]["sha"] = sha
            return self.json(200, branch, request)
        return self.not_found()

    def simple_pull(self, number: int) -> dict[str, Any]:
        full = self.pulls[number]
        simple = instance(schema_of("pull-request-simple"))
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
        return instance(
            schema_of("combined-commit-status"),
            {
                "state": state,
                "sha": sha,
                "total_count": len(latest),
                "statuses": [
                    instance(
                        schema_of("simple-commit-status"),
                        {k: v for k, v in s.items() if k not in ("creator", "node_id")},
                    )
                    for s in latest.values()
                ],
            },
        )


@dataclass
class Served:
    fake: FakeGitHub
    thread: threading.Thread
    server: Any


def serve(fake: FakeGitHub) -> Iterator[FakeGitHub]:
    server = make_server("127.0.0.1", 0, fake, threaded=True)
    fake.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        thread.join(timeout=5)


@pytest.fixture(name="github")
def fake_github() -> Iterator[FakeGitHub]:
    """A fake GitHub for repository octo/calc; the test fails on any OpenAPI mismatch."""
    fake = FakeGitHub("octo", "calc")
    yield from serve(fake)
    assert not fake.problems, "\n".join(fake.problems)
